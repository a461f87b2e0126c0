"""A subset of the hostile-input cases sent over HTTP to the live app (`python app.py`): the app answers each with
a clear error, stays up, and writes nothing. The full set runs at the handler level in test_hostile_input.py.
"""

import json
import sqlite3

import pytest

from tests.e2e.live_app import LiveApp
from tests.reliability.test_hostile_input import SQLI, XSS

GOOD = json.dumps({"prompt": "What is the capital of France?"})
UPLOADS = [  # id, file name, bytes, kind, message
    ("malformed-jsonl", "bad.jsonl", f'{GOOD}\n{{"prompt": \n'.encode(), "prompts", "line 2: invalid JSON"),
    ("latin-1", "l.jsonl", '{"prompt": "caf\u00e9"}\n'.encode("latin-1"), "prompts", "not UTF-8"),
    ("csv-extra-values", "x.csv", b"prompt\nhello,world\n", "prompts", "more values"),
    ("corrupt-parquet", "c.parquet", b"PAR1" + b"\x00" * 64 + b"PAR1", "prompts", "not a readable Parquet"),
    ("oversized-field", "f.jsonl", json.dumps({"prompt": "x" * 100_001}).encode() + b"\n", "prompts", "limit is"),
    ("half-good-file", "h.jsonl", f'{GOOD}\n{{"prompt": ""}}\n'.encode(), "prompts", "line 2: field 'prompt'"),
]
CALLS = [  # id, user, api name, data, message (None: Gradio's own input validation, no handler ran)
    ("chat-unknown-version", "vic", "chat", ["Hi", [], "v404-nope", 16, 0.0], "does not exist"),
    ("chat-traversal-version", "vic", "chat", ["Hi", [], "../../tuneloop.db", 16, 0.0], "does not exist"),
    ("chat-huge-max-tokens", "vic", "chat", ["Hi", [], "active", 10**9, 0.0], None),
    ("chat-negative-temperature", "vic", "chat", ["Hi", [], "active", 16, -3.0], None),
    ("chat-empty", "vic", "chat", ["", [], "active", 16, 0.0], "Type a message"),
    ("promote-sql", "admin", "versions_promote", [SQLI[0]], "does not exist"),
    ("promote-unknown", "admin", "versions_promote", ["v404-nope"], "does not exist"),
    ("review-rank-garbage", "rita", "review_rank", [SQLI[1]], "No ranking item loaded"),
    ("review-correct-forged-id", "rita", "review_correct", [1, "better"], None),  # not among the dropdown's choices
    ("users-add-short-password", "admin", "users_add", ["eve", "x", "viewer"], "at least 8"),
    ("users-add-bad-role", "admin", "users_add", ["eve", "long-enough-pw", "superuser"], None),
    ("import-unknown-kind", "admin", "data_import", [None, "users", "train"], None),
]


def counts(app: LiveApp) -> dict:
    conn = sqlite3.connect(f"file:{app.data_dir / 'tuneloop.db'}?mode=ro", uri=True)
    tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    result = {t: conn.execute(f'SELECT COUNT(*) FROM "{t}"').fetchone()[0] for t in tables if t != "audit"}
    conn.close()
    return result


@pytest.fixture(scope="module")
def sessions(live_app):
    return {name: live_app.session(name) for name in ("admin", "rita", "vic")}


def assert_up(app: LiveApp, sessions) -> None:
    assert app.alive()
    assert app.call(sessions["vic"], "banner", [])[0] == "complete"


@pytest.mark.parametrize("name, content, kind, match", [u[1:] for u in UPLOADS], ids=[u[0] for u in UPLOADS])
def test_bad_upload_over_http(live_app, sessions, tmp_path, name, content, kind, match):
    path = tmp_path / name
    path.write_bytes(content)
    before = counts(live_app)
    event, message = live_app.call(sessions["admin"], "data_import", [live_app.upload(sessions["admin"], path), kind,
                                                                     "train"])
    assert event == "error" and match in str(message), (event, message)
    assert "Nothing imported" in str(message)
    assert counts(live_app) == before
    assert_up(live_app, sessions)


@pytest.mark.parametrize("user, api_name, data, match", [c[1:] for c in CALLS], ids=[c[0] for c in CALLS])
def test_bad_call_over_http(live_app, sessions, user, api_name, data, match):
    before = counts(live_app)
    event, message = live_app.call(sessions[user], api_name, data)
    assert event == "error", (event, message)
    if match is not None:
        assert match in str(message), message
    assert counts(live_app) == before
    assert_up(live_app, sessions)


def test_html_prompt_over_http_is_stored_verbatim_and_escaped(live_app, sessions, tmp_path):
    path = tmp_path / "xss.jsonl"
    path.write_text("".join(json.dumps({"prompt": x}) + "\n" for x in XSS + SQLI))
    event, _ = live_app.call(sessions["admin"], "data_import", [live_app.upload(sessions["admin"], path), "prompts",
                                                               "train"])
    assert event == "complete"
    conn = sqlite3.connect(f"file:{live_app.data_dir / 'tuneloop.db'}?mode=ro", uri=True)
    stored = {r[0] for r in conn.execute("SELECT text FROM prompts")}
    conn.close()
    assert set(XSS + SQLI) <= stored
    assert_up(live_app, sessions)
