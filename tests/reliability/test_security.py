"""Security over HTTP against the real app: every endpoint enumerated from Gradio's /config and /gradio_api/info,
each admin-only (and reviewer-only) one refused to anonymous, viewer and reviewer sessions, through both the named
API (/gradio_api/call/<name>) and the browser's queue (fn_index); refused calls write nothing. Passwords are stored
only as salted scrypt hashes; no password reaches a log, the audit trail or an export.
"""

import json
import sqlite3
import time

import pytest

from tests.e2e.live_app import ADMIN, PASSWORD, LiveApp
from webapp.auth import ADMINS, EVERYONE, REVIEWERS

CALLERS = {"anonymous": None, "viewer": "vic", "reviewer": "rita", "admin": ADMIN}
CALLER_ROLE = {"anonymous": None, "viewer": "viewer", "reviewer": "reviewer", "admin": "admin"}
WRONG_PASSWORD = "hunter2-wrong-password"


def registry() -> dict[str, tuple[str, ...]]:
    """The app's endpoint → roles registry, from the UI built in-process with fake services (no model)."""
    import tempfile
    from pathlib import Path

    from feedback_db.store import FeedbackStore
    from tests.webapp.conftest import make_services
    from webapp.ui import build_ui

    folder = Path(tempfile.mkdtemp())
    services = make_services(FeedbackStore(folder / "t.db"), folder)
    build_ui(services)
    return dict(services.auth.endpoints)


def table_counts(db) -> dict:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    counts = {t: conn.execute(f'SELECT COUNT(*) FROM "{t}"').fetchone()[0] for t in tables}
    counts["users_state"] = conn.execute("SELECT group_concat(username || role || disabled) FROM users").fetchone()[0]
    counts["active"] = conn.execute("SELECT group_concat(name) FROM model_versions WHERE status = 'active'").fetchone()
    conn.close()
    return counts


def example_inputs(app: LiveApp, client, info: dict, upload) -> list:
    """Inputs that pass Gradio's preprocessing, so a refusal can only come from the handler's role check."""
    values = []
    for param in info["parameters"]:
        if param.get("component") in ("File", "UploadButton"):
            values.append(upload)
        elif param.get("parameter_has_default"):
            values.append(param.get("parameter_default"))
        else:
            values.append(param.get("example_input"))
    return values


@pytest.fixture(scope="module")
def setup(live_app: LiveApp, tmp_path_factory):
    from feedback_db.store import FeedbackStore

    store = FeedbackStore(live_app.data_dir / "tuneloop.db")
    version_dir = live_app.data_dir / "versions" / "v1-sft"
    version_dir.mkdir(parents=True)
    store.register_version(name="v1-sft", parent=None, method="sft", technique="lora", path=str(version_dir),
                           base_model="base", config={}, data_snapshot={}, metrics={})
    prompt_id = store.add_prompt("What is 2+2?")
    store.add_response(prompt_id, "4", "base")
    store.add_response(prompt_id, "four", "v1-sft")
    store.close()
    sessions = {who: live_app.session(name) for who, name in CALLERS.items()}
    upload_file = tmp_path_factory.mktemp("upload") / "prompts.jsonl"
    upload_file.write_text('{"prompt": "uploaded by an attacker"}\n')
    return sessions, live_app.upload(sessions["admin"], upload_file)


def test_every_endpoint_is_enumerated_and_registered(live_app, setup):
    sessions, _ = setup
    config = sessions["viewer"].get("/config").json()
    public = {d["api_name"] for d in config["dependencies"] if d.get("api_visibility", "public") != "private"}
    named = {name.lstrip("/") for name in sessions["viewer"].get("/gradio_api/info").json()["named_endpoints"]}
    roles = registry()
    assert public == named == set(roles), "an event is exposed without a role registration (auth.endpoint)"
    assert all(r in (ADMINS, REVIEWERS, EVERYONE) for r in roles.values())
    private = [d for d in config["dependencies"] if d.get("api_visibility") == "private"]
    # private events are UI-only lambdas (clear, show/hide, refresh choices) or run in the browser only (js, no
    # backend function): no handler with side effects
    assert all(str(d["api_name"]).startswith("lambda") or (d["js"] and d["backend_fn"] is False)
               for d in private), private


def test_role_restricted_endpoints_refuse_lower_roles(live_app, setup):
    sessions, upload = setup
    info = sessions["admin"].get("/gradio_api/info").json()["named_endpoints"]
    roles = registry()
    before = table_counts(live_app.data_dir / "tuneloop.db")
    refused, checked = [], 0
    for api_name, allowed in sorted(roles.items()):
        if allowed == EVERYONE:
            continue
        data = example_inputs(live_app, sessions["admin"], info[f"/{api_name}"], upload)
        for who in ("anonymous", "viewer", "reviewer"):
            if CALLER_ROLE[who] in allowed:
                continue
            event, message = live_app.call(sessions[who], api_name, data)
            checked += 1
            ok = event == "http 401" if who == "anonymous" else (
                event == "error" and "Permission denied" in str(message))
            if not ok:
                refused.append((api_name, who, event, message))
    assert refused == [], refused
    admin_only = sum(r == ADMINS for r in roles.values())
    reviewers = sum(r == REVIEWERS for r in roles.values())
    assert checked == 3 * admin_only + 2 * reviewers and admin_only >= 20 and reviewers >= 9
    assert table_counts(live_app.data_dir / "tuneloop.db") == before, "a refused call wrote to the store"


def test_browser_queue_path_refuses_lower_roles(live_app, setup):
    sessions, upload = setup
    config = sessions["admin"].get("/config").json()
    info = sessions["admin"].get("/gradio_api/info").json()["named_endpoints"]
    roles = registry()
    kinds = {c["id"]: c["type"] for c in config["components"]}
    before = table_counts(live_app.data_dir / "tuneloop.db")
    wrong = []
    for fn_index, dep in enumerate(config["dependencies"]):
        if roles.get(dep["api_name"]) != ADMINS:
            continue
        data = iter(example_inputs(live_app, sessions["admin"], info[f"/{dep['api_name']}"], upload))
        data = [None if kinds[i] == "state" else next(data) for i in dep["inputs"]]  # the browser sends null for State
        for who in ("anonymous", "viewer", "reviewer"):
            outcome = live_app.queue(sessions[who], dep.get("id", fn_index), data)
            if not (outcome == "http 401" if who == "anonymous" else "Permission denied" in outcome):
                wrong.append((dep["api_name"], who, outcome))
    assert wrong == []
    assert table_counts(live_app.data_dir / "tuneloop.db") == before


def test_non_event_routes_need_a_login_and_never_serve_app_files(live_app, setup):
    sessions, _ = setup
    db = live_app.data_dir / "tuneloop.db"
    for path in ("/config", "/gradio_api/info", "/gradio_api/openapi.json", "/gradio_api/queue/status",
                 f"/gradio_api/file={db}", "/gradio_api/file=app.py"):
        assert sessions["anonymous"].get(path).status_code == 401, path
    login_page = sessions["anonymous"].get("/").text  # Gradio inlines only the API's shape here, no data
    assert '"components":[]' in login_page and "What is 2+2?" not in login_page and "rita" not in login_page
    response = sessions["anonymous"].post("/gradio_api/upload", files={"files": ("x.jsonl", b"{}\n")})
    assert response.status_code == 401
    for path in (f"/gradio_api/file={db}", "/gradio_api/file=app.py", f"/gradio_api/file={live_app.log_path}",
                 "/gradio_api/file=../tuneloop.db", "/gradio_api/file=/etc/passwd"):
        assert sessions["viewer"].get(path).status_code in (403, 404), path


def test_passwords_are_salted_slow_hashes_and_never_logged(live_app, setup):
    sessions, _ = setup
    assert live_app.call(sessions["admin"], "users_add", ["mallory", PASSWORD, "viewer"])[0] == "complete"
    with live_app.session(None) as anon:
        assert anon.post("/login", data={"username": "rita", "password": WRONG_PASSWORD}).status_code == 400
        assert anon.post("/login", data={"username": "nobody", "password": WRONG_PASSWORD}).status_code == 400
    db = live_app.data_dir / "tuneloop.db"
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    hashes = dict(conn.execute("SELECT username, password_hash FROM users").fetchall())
    conn.close()
    assert len(set(hashes.values())) == len(hashes), "same password, same hash: no salt"
    for stored in hashes.values():
        scheme, n, r, _, salt, _ = stored.split("$")
        assert scheme == "scrypt" and int(n) >= 2**14 and int(r) >= 8 and len(salt) >= 16
    from feedback_db.passwords import hash_password

    started = time.perf_counter()
    hash_password(PASSWORD)
    assert time.perf_counter() - started > 0.005, "password hashing is not slow"
    time.sleep(1)  # the app's log is unbuffered; let the last lines land
    files = [db, db.with_name("tuneloop.db-wal"), live_app.log_path, *live_app.data_dir.glob("runs/*/log.txt")]
    for path in files:
        if path.is_file():
            raw = path.read_bytes()
            assert PASSWORD.encode() not in raw and WRONG_PASSWORD.encode() not in raw, path
    audit = json.dumps(live_app.call(sessions["admin"], "audit_list", [500])[1])
    assert PASSWORD not in audit and "password_hash" not in audit
    for table in ("audit", "runs"):
        event, (exported,) = live_app.call(sessions["admin"], "data_export", [table])
        assert event == "complete"
        text = open(exported["path"], encoding="utf-8").read()
        assert PASSWORD not in text and "scrypt$" not in text, table


def test_login_failures_are_rate_limited(live_app, setup):
    with live_app.session(None) as anon:
        codes = [anon.post("/login", data={"username": "vic", "password": f"guess-{i}"}).status_code
                 for i in range(12)]
        assert codes[:5] == [400] * 5 and codes[-1] == 429  # back-off after 5 failures (webapp/ratelimit.py)
        # even the right password is refused while the account is locked out
        assert anon.post("/login", data={"username": "vic", "password": PASSWORD}).status_code != 200
