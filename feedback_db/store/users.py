"""Users (scrypt passwords, roles, disabling) and REST API tokens (sha256 of a random token)."""

from __future__ import annotations

import hashlib
import secrets
import sqlite3
import unicodedata

from feedback_db.models import ApiToken, User
from feedback_db.passwords import hash_password, verify_password
from feedback_db.store.base import StoreBase, check, check_choice, now
from feedback_db.vocab import ROLES

_DUMMY_HASH = hash_password("tuneloop-timing-equaliser")
TOKEN_PREFIX = "tl_"
MAX_USERNAME_CHARS = 64


class UsersMixin(StoreBase):
    """Users and their API tokens."""

    # users ---

    def create_user(self, username: str, password: str, role: str) -> User:
        _check_username(username)
        check(bool(password), "password must not be empty")
        check_choice("role", role, ROLES)
        password_hash = hash_password(password)
        try:
            self._insert(
                "users", {"username": username, "password_hash": password_hash, "role": role, "created": now()}
            )
        except sqlite3.IntegrityError:
            raise ValueError(f"user {username!r} already exists") from None
        return self._require_user(username)

    def authenticate(self, username: str, password: str) -> User | None:
        rows = self._query("SELECT password_hash FROM users WHERE username = ?", (username,))
        if not rows:
            verify_password(password, _DUMMY_HASH)  # same work for unknown users: no username probing by timing
            return None
        user = self.get_user(username)
        if not verify_password(password, rows[0]["password_hash"]) or user is None or user.disabled:
            return None
        return user

    def get_user(self, username: str) -> User | None:
        return self._one(_user, "SELECT * FROM users WHERE username = ?", (username,))

    def list_users(self) -> list[User]:
        return [_user(r) for r in self._query("SELECT * FROM users ORDER BY username")]

    def set_role(self, username: str, role: str) -> None:
        check_choice("role", role, ROLES)
        self._require_changed(self._update("UPDATE users SET role = ? WHERE username = ?", (role, username)), username)

    def set_disabled(self, username: str, disabled: bool) -> None:
        changed = self._update("UPDATE users SET disabled = ? WHERE username = ?", (int(disabled), username))
        self._require_changed(changed, username)

    def _require_user(self, username: str) -> User:
        user = self.get_user(username)
        if user is None:
            raise KeyError(f"no user {username!r}")
        return user

    @staticmethod
    def _require_changed(rowcount: int, username: str) -> None:
        if rowcount == 0:
            raise KeyError(f"no user {username!r}")

    # REST API tokens ---

    def create_api_token(self, username: str, label: str = "") -> str:
        """A new API token for `username`, returned once; only its sha256 is stored (32 random bytes need no
        slow hash, and a per-request scrypt would cap the API at a few requests per second)."""
        self._require_user(username)
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        row = {"username": username, "label": label, "prefix": token[:8], "token_hash": _token_hash(token)}
        self._insert("api_tokens", {**row, "created": now()})
        return token

    def user_for_token(self, token: str) -> User | None:
        """The user a valid token belongs to; None for unknown or revoked tokens and disabled users."""
        return self._one(
            _user,
            "SELECT u.* FROM api_tokens t JOIN users u ON u.username = t.username "
            "WHERE t.token_hash = ? AND t.revoked IS NULL AND u.disabled = 0",
            (_token_hash(token),),
        )

    def list_api_tokens(self, username: str | None = None) -> list[ApiToken]:
        where, params = ("username = ?", (username,)) if username is not None else ("1", ())
        rows = self._query(
            f"SELECT id, username, label, prefix, created, revoked FROM api_tokens WHERE {where} ORDER BY id", params
        )
        return [ApiToken(**dict(r)) for r in rows]

    def revoke_api_token(self, token_id: int) -> None:
        """Revoke a token for good (revoking it again keeps the first revocation time)."""
        if self._update("UPDATE api_tokens SET revoked = COALESCE(revoked, ?) WHERE id = ?", (now(), token_id)) == 0:
            raise KeyError(f"no API token {token_id}")


def _check_username(username: str) -> None:
    """Printable names only: control, format (bidi overrides, zero-width) and separator characters would let one
    name pose as another in every list and audit entry."""
    check(bool(username.strip()), "username must not be empty")
    check(len(username) <= MAX_USERNAME_CHARS, f"username must have at most {MAX_USERNAME_CHARS} characters")
    check(username == username.strip(), "username must not start or end with spaces")
    bad = [c for c in username if unicodedata.category(c)[0] in "CZ" and c != " "]
    check(not bad, f"username must not contain control or invisible characters (found U+{ord(bad[0]):04X})"
           if bad else "")


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _user(row: sqlite3.Row) -> User:
    return User(row["id"], row["username"], row["role"], bool(row["disabled"]), row["created"])
