"""REST API tokens in the store: shown once, stored only as a hash, tied to a user, revocable."""

import hashlib
import sqlite3

import pytest


def test_a_token_maps_to_its_user_and_only_its_hash_is_stored(store):
    store.create_user("ann", "pw-ann-123", "reviewer")
    token = store.create_api_token("ann", "ci")
    assert token.startswith("tl_") and len(token) > 40
    assert store.user_for_token(token).username == "ann"
    assert store.user_for_token(token + "x") is None and store.user_for_token("") is None
    conn = sqlite3.connect(store.path)
    (row,) = conn.execute("SELECT * FROM api_tokens").fetchall()
    assert token not in repr(row) and hashlib.sha256(token.encode()).hexdigest() in row
    (listed,) = store.list_api_tokens("ann")
    assert (listed.username, listed.label, listed.prefix, listed.revoked) == ("ann", "ci", token[:8], None)


def test_tokens_are_unique_per_call(store):
    store.create_user("ann", "pw-ann-123", "reviewer")
    first, second = store.create_api_token("ann"), store.create_api_token("ann")
    assert first != second and store.user_for_token(first) == store.user_for_token(second)
    assert len(store.list_api_tokens()) == 2 and store.list_api_tokens("bob") == []


def test_revoked_tokens_and_disabled_users_get_nobody(store):
    store.create_user("ann", "pw-ann-123", "reviewer")
    kept, revoked = store.create_api_token("ann", "kept"), store.create_api_token("ann", "revoked")
    store.revoke_api_token(store.list_api_tokens("ann")[1].id)
    assert store.user_for_token(revoked) is None and store.user_for_token(kept).username == "ann"
    assert store.list_api_tokens("ann")[1].revoked is not None
    store.set_disabled("ann", True)
    assert store.user_for_token(kept) is None
    store.set_disabled("ann", False)
    assert store.user_for_token(kept).username == "ann"


def test_unknown_users_and_tokens_raise_key_error(store):
    with pytest.raises(KeyError, match="no user 'ghost'"):
        store.create_api_token("ghost")
    with pytest.raises(KeyError, match="no API token 42"):
        store.revoke_api_token(42)
