"""The security review's attacks (issue 13), replayed over real HTTP against one live app (`python app.py`), each
asserted to fail now: forged chat feedback, chat starvation, same-site CSRF, HTML injection in review, login
lockout of others, uploads, unbounded ids, bidi usernames, anonymous OpenAPI; and a viewer's arena vote, which
trains only when an admin includes viewers' chat feedback. The app trusts X-Forwarded-For
from 127.0.0.1 here (`--forwarded-allow-ips`), so one test machine can play many client addresses. The browser
side of CSRF and HTML injection is in tests/e2e/test_browser_attacks.py.
"""

import json
import socket
import sqlite3
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.e2e.live_app import ADMIN, PASSWORD, LiveApp, add_users, make_data_dir
from tests.webapp.test_safe_markdown import PAYLOADS, Checker

EVIL_ORIGINS = ["http://127.0.0.1:9999", "http://localhost:9999", "null", "http://evil.example",
                "http://127.0.0.1.evil.example", "http://127.0.0.1:{port}.evil.example", "http://[::1]:{port}"]


@pytest.fixture(scope="module")
def app(tmp_path_factory, base_model_path):
    data_dir = make_data_dir(tmp_path_factory.mktemp("attacks"), base_model_path)
    add_users(data_dir, {ADMIN: "admin", "rita": "reviewer", "vic": "viewer", "val": "viewer", "ada": "admin",
                     "vera": "viewer", "flo": "viewer", "pat": "viewer", "fay": "viewer",
                     **{f"user{i}": "viewer" for i in range(5)}})
    from feedback_db.store import FeedbackStore

    store = FeedbackStore(data_dir / "tuneloop.db")
    for payload in PAYLOADS:  # hostile prompts and answers, as an import or a model could bring them
        prompt_id = store.add_prompt(f"Prompt \\`{payload}\\` end")
        store.add_response(prompt_id, f"Answer `x` {payload} \\`{payload}\\`", "base")
    store.close()
    # no refill: the 5th chat of a user is refused whatever the machine's speed
    live = LiveApp.start(data_dir, args=("--forwarded-allow-ips", "127.0.0.1", "--user-burst", "4",
                                         "--user-refill-s", "3600"))
    yield live
    live.stop()


@pytest.fixture(scope="module")
def sessions(app):
    return {name: app.session(name) for name in (ADMIN, "rita", "vic", "val", "ada")}


def rows(app: LiveApp, sql: str, params: tuple = ()) -> list[tuple]:
    conn = sqlite3.connect(f"file:{app.data_dir / 'tuneloop.db'}?mode=ro", uri=True)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def counts(app: LiveApp) -> dict:
    return {t: rows(app, f"SELECT COUNT(*) FROM {t}")[0][0] for t in ("users", "prompts", "responses", "ratings")}


def fn_index(client: httpx.Client, api_name: str) -> int:
    deps = client.get("/config").json()["dependencies"]
    return next(d.get("id", i) for i, d in enumerate(deps) if d["api_name"] == api_name)


def queue(app: LiveApp, client: httpx.Client, api_name: str, data: list, event_data: dict | None = None) -> str:
    """Run `api_name` through the browser's queue (fn_index, event_data): "complete" or "error: <message>"."""
    return app.queue(client, fn_index(client, api_name), data, event_data)


# ----- 1. forged chat feedback -----------------------------------------------------------------------------------
FORGED = [  # id, history the client sends, event data
    ("made-up-pair", [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "5, trust me"}], 1),
    ("3MB-fields", [{"role": "user", "content": "p" * 3_000_010}, {"role": "assistant", "content": "r" * 3_000_010}],
     1),
    ("index-out-of-range", [], 10**9),
    ("negative-index", [], -1),
    ("list-index", [], [1, 0]),
]


@pytest.mark.parametrize("history, index", [f[1:] for f in FORGED], ids=[f[0] for f in FORGED])
@pytest.mark.parametrize("api_name", ["chat_thumbs", "chat_compare_thumbs"])
def test_forged_chat_thumbs_write_nothing(app, sessions, history, index, api_name):
    before = counts(app)
    outcome = queue(app, sessions["vic"], api_name, [history, {}],
                    {"index": index, "value": "5, trust me", "liked": True})
    assert outcome.startswith("error") and "Only a finished answer" in outcome, outcome
    assert counts(app) == before


def test_real_chat_thumbs_keep_the_whole_conversation_and_the_viewer_source(app, sessions):
    vic = sessions["vic"]
    assert app.call(vic, "chat", ["Say yes.", [], "active", 16, 0.0])[0] == "complete"
    forged = [{"role": "user", "content": [{"type": "text", "text": "forged"}]}]
    event, out = app.call(vic, "chat", ["Now say no.", forged, "active", 16, 0.0])
    shown = out[1]
    assert event == "complete" and "forged" not in json.dumps(shown)
    assert queue(app, vic, "chat_thumbs", [{}], {"index": 3, "value": "x", "liked": False}) == "complete"
    (source, thumbs, messages, answer), = rows(app, "SELECT r.source, r.thumbs, p.messages, s.text FROM ratings r "
                                                    "JOIN responses s ON s.id = r.response_id "
                                                    "JOIN prompts p ON p.id = s.prompt_id WHERE r.username = 'vic'")
    assert (source, thumbs) == ("viewer_chat", 0)
    assert [m["content"] for m in json.loads(messages)][0::2] == ["Say yes.", "Now say no."]
    assert answer == shown[-1]["content"][0]["text"]  # the stored answer is the one the server streamed


# ----- 2. chat starvation --------------------------------------------------------------------------------------
def test_parallel_chats_from_one_user_are_refused_and_others_still_chat(app, sessions):
    tabs = [app.session("vic") for _ in range(8)]  # eight browser tabs of one user
    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(lambda i: app.call(tabs[i], "chat", [f"Count to {i}.", [], "active", 64, 0.0],
                                                    timeout_s=60), range(8)))
    done = [o for o in outcomes if o[0] == "complete"]
    # refused by the HTTP guard (429, the first chat already running) or, sent at the same instant, by the handler
    refused = [o for o in outcomes if o[0] in ("error", "http 429") and "already have 1 chat" in str(o[1])]
    assert len(done) >= 1 and len(done) + len(refused) == 8 and len(refused) >= 4, outcomes
    assert app.call(sessions["val"], "chat", ["Hi", [], "active", 16, 0.0])[0] == "complete"


def first_text(app: LiveApp, client: httpx.Client, data: list) -> tuple[str, float | None, float]:
    """One chat over HTTP: (last event, perf_counter time of the first streamed answer text or None, of the end)."""
    posted = client.post("/gradio_api/call/chat", json={"data": data, "session_hash": app.sessions[id(client)]})
    if posted.status_code == 429:  # refused by the HTTP guard before Gradio read the body
        return "http 429", None, time.perf_counter()
    assert posted.status_code == 200, posted.text
    event, first = "", None
    with client.stream("GET", f"/gradio_api/call/chat/{posted.json()['event_id']}", timeout=300) as stream:
        for line in stream.iter_lines():
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("data:") and event == "generating" and first is None:
                shown = json.loads(line[5:])[1]
                if shown and shown[-1]["content"] and shown[-1]["content"][0].get("text"):
                    first = time.perf_counter()
            elif line.startswith("data:") and event in ("complete", "error"):
                break
    return event, first, time.perf_counter()


def test_a_flood_of_long_chats_does_not_hold_back_another_users_first_token(app):
    """Finding 2 at a small scale: one viewer fires 8 parallel chats of the longest message allowed (8,000 chars,
    1,024 new tokens): one runs, the rest are refused at once. Another viewer's short chat, sent while the
    flooder's prompt is being prefilled, gets its first token before the flooder does: it used to wait for the
    whole prefill (the engine prefilled one prompt at a time, and the 1,024-token budget was not applied: the
    8,000 chars went in as ~1,600 tokens), seconds on a CPU; then, under the full flood, 25-46 s."""
    long = ("Tell me everything about the history of computing, in detail. " * 130)[:8_000]
    tabs = [app.session("flo") for _ in range(8)]
    with ThreadPoolExecutor(8) as pool:
        flood = [pool.submit(first_text, app, tab, [long, [], "active", 1024, 0.7]) for tab in tabs]
        time.sleep(0.5)  # the running flood chat is prefilling its ~1,000 tokens (16 passes of 64)
        sent = time.perf_counter()
        event, probe_first, _ = first_text(app, app.session("pat"), ["Name a primary colour.", [], "active", 16, 0.0])
        for tab in tabs:  # end the flood: the app cancels its generation
            tab.close()
        outcomes = [f.result() if not f.exception() else ("closed", None, 0.0) for f in flood]
    assert event == "complete" and probe_first is not None
    flood_first = [first for _, first, _ in outcomes if first is not None]
    assert sum(event in ("error", "http 429") for event, _, _ in outcomes) == 7 and len(flood_first) <= 1, outcomes
    # the flooder's first token came after the probe was sent (else the probe raced nothing) and after the probe's
    assert not flood_first or flood_first[0] < sent or probe_first < flood_first[0], (sent, probe_first, flood_first)


def test_a_fifth_user_chats_while_four_long_answers_stream(app):
    """Each streaming chat holds a slot of the chat event until its last token; with Gradio's default of 4 per
    event, four users' long answers kept a fifth user's chat queued in Gradio until one of them ended (23 s in the
    flood benchmark). Now the fifth user's first token comes while all four are still streaming."""
    long_runs = [app.session(f"user{i}") for i in range(4)]
    count = ["Count from 1 to 1000, one number per line.", [], "active", 1024, 0.0]
    with ThreadPoolExecutor(4) as pool:
        running = [pool.submit(first_text, app, client, count) for client in long_runs]
        time.sleep(3.0)  # all four are streaming (each far from its 1,024th token)
        event, first, _ = first_text(app, app.session("user4"), ["Name a primary colour.", [], "active", 16, 0.0])
        still_running = [not future.done() for future in running]
        for client in long_runs:
            client.close()
        ended = [f.result() if not f.exception() else ("closed", None, 0.0) for f in running]
    assert event == "complete" and first is not None
    assert all(still_running), ended


# the handler refuses a message over 8,000 chars; a request body over 1 MiB the HTTP guard refuses unread
@pytest.mark.parametrize("message, refused", [("x" * 8_001, "error"), ("y" * 3_000_010, "http 413")])
def test_oversized_chat_message_is_refused(app, sessions, message, refused):
    event, error = app.call(sessions["val"], "chat", [message, [], "active", 16, 0.0])
    assert event == refused and "limit" in str(error)


def test_rate_limit_stops_a_chat_flood(app):
    flooder = app.session("ada")
    outcomes = [app.call(flooder, "chat", ["Hi", [], "active", 16, 0.0]) for _ in range(6)]
    assert [event for event, _ in outcomes[:4]] == ["complete"] * 4
    # refused at the door: the guard peeks at the user's token bucket before Gradio reads the request
    assert all(event == "http 429" and "Too many chat requests" in json.loads(error)["detail"]
               for event, error in outcomes[4:]), outcomes


def raw_post(app: LiveApp, path: str, cookie: str, content_length: int) -> str:
    """A POST's headers only, declaring `content_length` bytes it never sends: the status line of the answer, which
    comes only if the server answered without reading the body."""
    with socket.create_connection(("127.0.0.1", app.port), timeout=30) as conn:
        conn.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{app.port}\r\nCookie: {cookie}\r\n"
                     f"Content-Type: application/json\r\nContent-Length: {content_length}\r\n\r\n".encode())
        return conn.recv(4096).decode(errors="replace").split("\r\n")[0]


def test_over_limit_chats_are_refused_before_gradio_reads_them(app, sessions):
    """The flood benchmark's remaining load was ~100 refusals a second, each a 320 KB body that Gradio read, parsed
    and queued before the handler refused it. Now a user with a chat running is answered 429 by the HTTP guard from
    the session cookie alone: through the named API and the browser's queue, with or without a body; a declared
    body over the model-request limit is 413 unread. The user's other events, another user's chat and the user's
    next chat once the first has ended all work."""
    fay_tabs = [app.session("fay") for _ in range(9)]
    streaming, ended = threading.Event(), threading.Event()

    def long_chat() -> str:
        body = {"data": ["Count from 1 to 1000, one number per line.", [], "active", 1024, 0.0],
                "session_hash": app.sessions[id(fay_tabs[0])]}
        posted = fay_tabs[0].post("/gradio_api/call/chat", json=body)
        assert posted.status_code == 200, posted.text
        try:
            with fay_tabs[0].stream("GET", f"/gradio_api/call/chat/{posted.json()['event_id']}") as stream:
                for line in stream.iter_lines():
                    if line.startswith("event:") and "generating" in line:
                        streaming.set()
                    if ended.is_set():
                        return "closed by the test"
        finally:
            streaming.set()
        return "ended early"

    history = [{"role": r, "content": [{"type": "text", "text": "padding " * 5_000}]} for r in ("user", "assistant")]
    flood = {"data": [("Tell me everything. " * 400)[:8_000], history * 4, "active", 1024, 0.7]}  # 320 KB
    with ThreadPoolExecutor(8) as pool:
        running = pool.submit(long_chat)
        assert streaming.wait(60) and not running.done()
        posts = list(pool.map(lambda tab: tab.post("/gradio_api/call/chat", json={
            **flood, "session_hash": app.sessions[id(tab)]}), fay_tabs[1:]))
        joined = fay_tabs[1].post("/gradio_api/queue/join", json={
            **flood, "fn_index": fn_index(fay_tabs[1], "chat"), "session_hash": app.sessions[id(fay_tabs[1])]})
        cookie = "; ".join(f"{k}={v}" for k, v in fay_tabs[2].cookies.items())
        unsent = raw_post(app, "/gradio_api/call/chat", cookie, 300_000)
        too_big = raw_post(app, "/gradio_api/call/chat", cookie, 50_000_000)
        others = [app.call(sessions["val"], "chat", ["Name a primary colour.", [], "active", 16, 0.0])[0],
                  app.call(fay_tabs[3], "banner", [])[0], queue(app, fay_tabs[4], "banner", [])]
        still_streaming = not running.done()
        ended.set()
        fay_tabs[0].close()
        running.exception(60)
    assert [p.status_code for p in posts] == [429] * 8, [p.text for p in posts]
    assert all("already have 1 chat" in p.json()["detail"] for p in [*posts, joined]) and joined.status_code == 429
    assert unsent == "HTTP/1.1 429 Too Many Requests" and too_big == "HTTP/1.1 413 Request Entity Too Large"
    assert others == ["complete"] * 3 and still_streaming
    deadline = time.monotonic() + 60  # closing the stream cancels the long chat; then fay chats again
    while (outcome := app.call(fay_tabs[5], "chat", ["Say yes.", [], "active", 16, 0.0]))[0] == "http 429":
        assert "already have 1 chat" in outcome[1] and time.monotonic() < deadline, outcome
        time.sleep(0.5)
    assert outcome[0] == "complete", outcome


# ----- 3. CSRF ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("origin", EVIL_ORIGINS)
@pytest.mark.parametrize("header", ["origin", "referer"])
@pytest.mark.parametrize("target", ["call/users_add", "queue/join", "upload", "login", "logout", "api/v1/ratings"])
def test_cross_origin_state_changes_are_refused(app, sessions, origin, header, target):
    origin = origin.format(port=app.port)
    if header == "referer" and origin == "null":
        pytest.skip("a Referer is a URL")
    value = origin if header == "origin" else f"{origin}/attack.html"
    path = {"call/users_add": "/gradio_api/call/users_add", "queue/join": "/gradio_api/queue/join",
            "upload": "/gradio_api/upload", "login": "/login", "logout": "/logout",
            "api/v1/ratings": "/api/v1/ratings"}[target]
    before = counts(app)
    response = sessions[ADMIN].post(path, headers={header: value},
                                    json={"data": ["mallory", PASSWORD, "admin"], "fn_index": 0})
    assert response.status_code == 403 and "Cross-origin request refused" in response.text
    assert "access-control-allow-origin" not in response.headers
    assert counts(app) == before


def test_same_origin_requests_and_headers(app, sessions):
    admin = sessions[ADMIN]
    event, _ = app.call(admin, "users_list", [])
    assert event == "complete"
    ok = admin.post("/gradio_api/call/users_list", json={"data": []}, headers={"origin": app.url})
    assert ok.status_code == 200
    preflight = httpx.options(app.url + "/gradio_api/call/users_add", headers={
        "origin": "http://127.0.0.1:9999", "access-control-request-method": "POST"})
    assert preflight.headers.get("access-control-allow-origin") is None
    page = httpx.get(app.url + "/")
    assert page.headers["content-security-policy"] == "frame-ancestors 'self'"
    assert page.headers["x-frame-options"] == "SAMEORIGIN"
    assert httpx.get(app.url + "/logout").status_code == 405  # a GET (an <img>) cannot log anyone out
    cookies = httpx.post(app.url + "/login", data={"username": "rita", "password": PASSWORD}).headers.get_list(
        "set-cookie")
    assert cookies and all("SameSite=Strict" in c and "samesite=none" not in c.lower() for c in cookies)
    user = app.session("rita")
    assert user.post("/logout", headers={"origin": app.url}).status_code == 303
    assert app.call(user, "banner", [])[0] == "http 401"


# ----- 4. HTML/CSS injection in review ----------------------------------------------------------------------------
def test_review_shows_hostile_prompts_and_answers_as_text(app, sessions):
    rita, seen, problems = sessions["rita"], 0, []
    for _ in range(len(PAYLOADS)):
        event, out = app.call(rita, "review_next", ["single"])
        assert event == "complete"
        if "Nothing left" in json.dumps(out):
            break
        shown = [v for v in out if isinstance(v, str) and "<p>" in v]
        assert len(shown) >= 2, out  # the prompt and the answer (twice: single and A)
        for html in shown:
            checker = Checker()
            checker.feed(html)
            problems += checker.problems
        seen += 1
        assert app.call(rita, "review_skip", ["single"])[0] == "complete"
    assert seen == len(PAYLOADS) and problems == []


# ----- 5. login lockout ------------------------------------------------------------------------------------------
def login(app: LiveApp, username: str, password: str, address: str) -> int:
    return httpx.post(app.url + "/login", data={"username": username, "password": password},
                      headers={"x-forwarded-for": address}).status_code


def test_spraying_usernames_does_not_lock_out_anyone_else(app, sessions):
    codes = [login(app, f"user-{uuid.uuid4().hex[:8]}", "guess", "10.66.0.1") for _ in range(100)]
    # a few guesses, then the address waits, each wait longer: under load a wait can run out before the next guess,
    # so count (without back-off all 100 would be 400s) instead of asking the last answer to be 429
    assert 5 <= codes.count(400) <= 15 and codes.count(429) >= 80, codes
    assert login(app, "rita", PASSWORD, "10.66.0.2") == 200  # another address
    assert login(app, ADMIN, PASSWORD, "127.0.0.1") == 200  # the admin where they logged in before


def test_guessing_one_account_spares_its_owner_at_a_known_address(app, sessions):
    assert login(app, "val", PASSWORD, "10.77.0.1") == 200  # val's usual address
    for i in range(8):
        login(app, "val", f"guess-{i}", f"10.88.0.{i}")
    assert login(app, "val", PASSWORD, "10.88.1.1") == 429  # a new address waits, even with the right password
    assert login(app, "val", PASSWORD, "10.77.0.1") == 200


# ----- 6. uploads --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("who, status", [(None, 401), ("vic", 403), ("rita", 403), (ADMIN, 200)])
def test_uploads_are_for_admins_only(app, sessions, who, status):
    client = sessions[who] if who else app.session(None)
    response = client.post("/gradio_api/upload", files={"files": ("x.jsonl", b'{"prompt": "hi"}\n')})
    assert response.status_code == status, response.text


def raw_upload(app: LiveApp, cookie: str, headers: str) -> str:
    """An upload request with hand-made headers and no body: the guard must answer before reading it."""
    with socket.create_connection(("127.0.0.1", app.port), timeout=30) as conn:
        conn.sendall(f"POST /gradio_api/upload HTTP/1.1\r\nHost: 127.0.0.1:{app.port}\r\nCookie: {cookie}\r\n"
                     f"{headers}Content-Type: multipart/form-data; boundary=x\r\n\r\n".encode())
        return conn.recv(4096).decode(errors="replace")


@pytest.mark.parametrize("headers, status", [("Content-Length: 5000000000\r\n", "413"),
                                             ("Transfer-Encoding: chunked\r\n", "411")])
def test_huge_or_undeclared_uploads_are_refused_before_reading(app, sessions, headers, status):
    cookie = "; ".join(f"{k}={v}" for k, v in sessions[ADMIN].cookies.items())
    assert raw_upload(app, cookie, headers).split(" ")[1] == status


def test_disabling_a_user_ends_their_sessions(app, sessions):
    assert app.call(sessions[ADMIN], "users_add", ["dora", PASSWORD, "admin"])[0] == "complete"
    dora = app.session("dora")
    assert dora.post("/gradio_api/upload", files={"files": ("x.jsonl", b"{}\n")}).status_code == 200
    assert app.call(sessions[ADMIN], "users_disable", ["dora"])[0] == "complete"
    assert dora.post("/gradio_api/upload", files={"files": ("x.jsonl", b"{}\n")}).status_code == 401
    assert app.call(dora, "banner", [])[0] == "http 401"


# ----- 7. low findings ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def token(app, sessions):
    event, out = app.call(sessions[ADMIN], "tokens_create", ["rita", "attacks"])
    assert event == "complete"
    return out[0]


@pytest.mark.parametrize("path, body", [
    ("ratings", {"response_id": 10**30, "thumbs": 1}), ("ratings", {"response_id": 2**63, "thumbs": 1}),
    ("ratings", {"response_id": -(10**30), "thumbs": 1}), ("ratings", {"response_id": 0, "thumbs": 1}),
    ("comparisons", {"response_a": 10**30, "response_b": 1, "winner": "a"}),
    ("comparisons", {"response_a": 1, "response_b": 2**64, "winner": "b"}),
])
def test_huge_ids_are_a_clear_4xx(app, token, path, body):
    before = counts(app)
    response = httpx.post(f"{app.url}/api/v1/{path}", json=body, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 422 and response.json()["detail"].split(":")[0] in body
    assert counts(app) == before


@pytest.mark.parametrize("name", ["adm\u202ein", "ad\u200bmin", "admin\u2066", "\ufeffadmin", "ad\u00admin",
                                  "ad\nmin", "ad\x00min", "ad\tmin", "ad\u3000min", "ad\u2028min"])
def test_usernames_with_control_or_invisible_characters_are_refused(app, sessions, name):
    event, error = app.call(sessions[ADMIN], "users_add", [name, PASSWORD, "viewer"])
    assert event == "error" and ("invisible" in str(error) or "spaces" in str(error)), error
    assert rows(app, "SELECT COUNT(*) FROM users WHERE username = ?", (name,))[0][0] == 0


@pytest.mark.parametrize("path", ["/openapi.json", "/docs", "/redoc", "/gradio_api/openapi.json"])
def test_no_anonymous_api_schema(app, path):
    assert httpx.get(app.url + path).status_code in (401, 404)


# ----- 8. viewers' arena votes (last: its battles add review items the review test above counts) -------------------
def arena_vote(app: LiveApp, client: httpx.Client, prompt: str) -> None:
    """One blind battle and an "A is better" vote, as the Arena tab sends them; asked again (up to 3 times) when the
    two sampled answers came out the same (a pair of equal answers trains nothing)."""
    for _ in range(3):
        event, out = app.call(client, "arena_ask", [prompt], timeout_s=180)
        assert event == "complete", out
        if json.dumps(out[1][-1]) != json.dumps(out[2][-1]):
            break
    event, out = app.call(client, "arena_vote_a", [])
    assert event == "complete" and "saved as comparison" in json.dumps(out), out


def test_a_viewers_arena_vote_trains_only_when_an_admin_includes_viewer_chat_feedback(app):
    from feedback_db.datasets import preference_rows
    from feedback_db.store import FeedbackStore
    from training.sdk import Client

    client = Client(app.data_dir)  # a second servable version (an untrained adapter; answers are sampled)
    client.get_base_model().create_model_adapter(name="cand", rank=2)
    client.store.close()
    prompt = "Write two lines about rain on a tin roof."
    arena_vote(app, app.session("vera"), prompt)  # a viewer (a reviewer's vote trains: tests/webapp/test_arena.py)
    assert rows(app, "SELECT username, source FROM comparisons WHERE username = 'vera'") == [("vera", "viewer_arena")]

    store = FeedbackStore(app.data_dir / "tuneloop.db")
    try:
        def dpo_prompts(snapshot: dict) -> tuple[list[str], int]:  # an arena prompt may land in either split
            results = [preference_rows(store, snapshot, split) for split in ("train", "heldout")]
            return [r["prompt"][-1]["content"] for rs, _ in results for r in rs], sum(c["viewer_arena"]
                                                                                      for _, c in results)
        assert dpo_prompts(store.snapshot()) == ([], 1)
        assert dpo_prompts(store.snapshot(include_viewer_chat=True)) == ([prompt], 0)
    finally:
        store.close()
