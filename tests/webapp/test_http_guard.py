"""webapp/http_guard.py in front of a tiny app: the origins a state-changing request may come from, with and without
`--public-url` (the reverse-proxy set-up in the README); over-limit model requests refused before their body is read
(the same against the live app: tests/reliability/test_attacks.py)."""

import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from starlette.applications import Starlette
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from webapp.http_guard import HttpGuard, origin_of
from webapp.server import public_origins
from webapp.usage_limits import UsageLimits


def client(public_url: str | None, host: str = "127.0.0.1", port: int = 7860) -> TestClient:
    app = Starlette(routes=[Route("/act", lambda request: PlainTextResponse("done"), methods=["GET", "POST"])])
    guarded = HttpGuard(app, origins=public_origins(public_url, host, port), upload_role=lambda cookies: None,
                        upload_dir=lambda: None, max_upload_bytes=1, upload_quota_bytes=1,
                        username=lambda cookies: None, usage=UsageLimits(), event_name=lambda fn_index: None,
                        max_model_body_bytes=1, refusal_delay_s=0.0)
    return TestClient(guarded, base_url=f"http://{host}:{port}")


@pytest.mark.parametrize("url, origin", [("https://TL.example.org/", "https://tl.example.org"),
                                         ("https://tl.example.org:443/x", "https://tl.example.org"),
                                         ("http://[::1]:8080", "http://[::1]:8080"), ("ftp://x", None),
                                         ("null", None), ("http://x:99999", None)])
def test_origin_of(url, origin):
    assert origin_of(url) == origin


def test_behind_a_reverse_proxy_only_the_public_url_may_post():
    proxied = client("https://tuneloop.example.org")
    ok = proxied.post("/act", headers={"origin": "https://tuneloop.example.org", "host": "tuneloop.example.org"})
    assert ok.status_code == 200 and ok.headers["x-frame-options"] == "SAMEORIGIN"
    assert proxied.post("/act", headers={"referer": "https://tuneloop.example.org/?__theme=dark"}).status_code == 200
    for origin in ("http://tuneloop.example.org", "https://tuneloop.example.org:8443", "http://127.0.0.1:7860",
                   "https://evil.example", "null"):
        refused = proxied.post("/act", headers={"origin": origin, "host": "127.0.0.1:7860"})
        assert refused.status_code == 403 and "--public-url" in refused.text, origin
    # a Host header naming the attacker's origin does not help: with --public-url only that URL counts
    assert proxied.post("/act", headers={"origin": "https://evil.example", "host": "evil.example"}).status_code == 403
    assert proxied.get("/act", headers={"origin": "https://evil.example"}).status_code == 200  # reads are not guarded


def test_without_a_public_url_the_bind_address_and_the_requests_own_host_may_post():
    local = client(None)
    assert local.post("/act", headers={"origin": "http://127.0.0.1:7860"}).status_code == 200
    assert local.post("/act", headers={"origin": "http://localhost:7860", "host": "localhost:7860"}).status_code == 200
    assert local.post("/act", headers={"origin": "http://127.0.0.1:9999"}).status_code == 403
    assert local.post("/act").status_code == 200  # no Origin/Referer: not a browser, so no victim's cookies


def test_a_bad_public_url_is_refused_at_start():
    with pytest.raises(ValueError, match="--public-url"):
        public_origins("tuneloop.example.org", "127.0.0.1", 7860)


# ----- model requests over a user's limits ---------------------------------------------------------------------
EVENTS = {0: "chat", 1: "review_next"}  # fn_index -> api_name, as Gradio's queue numbers them


class Downstream:
    """Stands in for Gradio: records the bodies it read."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    async def __call__(self, scope, receive, send) -> None:
        body, more = b"", True
        while more:
            message = await receive()
            body, more = body + message.get("body", b""), message.get("more_body", False)
        self.bodies.append(body)
        await JSONResponse({"event_id": "e1"})(scope, receive, send)


def model_client(usage: UsageLimits, delay_s: float = 0.0) -> tuple[TestClient, Downstream]:
    downstream = Downstream()
    usage.limited("chat", "chat")
    guarded = HttpGuard(downstream, origins=public_origins(None, "127.0.0.1", 7860), upload_role=lambda c: None,
                        upload_dir=lambda: None, max_upload_bytes=1, upload_quota_bytes=1,
                        username=lambda cookies: {"s-vic": "vic", "s-val": "val"}.get(cookies.get("session")),
                        usage=usage, event_name=EVENTS.get, max_model_body_bytes=10_000, refusal_delay_s=delay_s)
    return TestClient(guarded, base_url="http://127.0.0.1:7860"), downstream


def test_a_user_at_the_in_flight_limit_is_refused_before_the_body_is_read():
    usage = UsageLimits(max_in_flight=1)
    client, downstream = model_client(usage)
    chat = json.dumps({"data": ["hi", [], "active", 16, 0.0]})
    with usage.slot("vic", "chat"):  # vic's first chat is streaming
        for path in ("/gradio_api/call/chat", "/gradio_api/call/v2/chat/", "/gradio_api/run/chat"):
            refused = client.post(path, content=chat, cookies={"session": "s-vic"})
            assert refused.status_code == 429 and "already have 1 chat" in refused.json()["detail"], path
        assert downstream.bodies == []  # nothing reached Gradio
        assert client.post("/gradio_api/call/chat", content=chat, cookies={"session": "s-val"}).status_code == 200
        assert client.post("/gradio_api/call/review_next", content="{}", cookies={"session": "s-vic"}).status_code \
            == 200
        assert client.post("/gradio_api/call/chat", content=chat).status_code == 200  # no session: Gradio's 401
    assert client.post("/gradio_api/call/chat", content=chat, cookies={"session": "s-vic"}).status_code == 200
    assert downstream.bodies[-1] == chat.encode()


def test_a_user_out_of_rate_is_refused_and_no_token_is_taken_by_the_guard():
    usage = UsageLimits(burst=2, refill_s=3600)
    client, _ = model_client(usage)
    for _ in range(2):
        assert client.post("/gradio_api/call/chat", content="{}", cookies={"session": "s-vic"}).status_code == 200
        with usage.slot("vic", "chat"):  # the handler takes the token; the guard only looks
            pass
    refused = client.post("/gradio_api/call/chat", content="{}", cookies={"session": "s-vic"})
    assert refused.status_code == 429 and "Too many chat requests" in refused.json()["detail"]


def test_oversized_or_undeclared_model_requests_are_refused_unread():
    client, downstream = model_client(UsageLimits())
    huge = client.post("/gradio_api/call/chat", content=b"x" * 10_001, cookies={"session": "s-val"})
    assert huge.status_code == 413 and "10,001 bytes" in huge.json()["detail"]
    chunked = client.post("/gradio_api/call/chat", content=iter([b"{}"]), cookies={"session": "s-val"})
    assert chunked.status_code == 411
    assert client.post("/gradio_api/call/review_next", content=b"x" * 10_001).status_code == 200  # not a model event
    assert downstream.bodies == [b"x" * 10_001]


def test_the_browsers_queue_is_read_only_for_a_user_at_a_limit_and_handed_on_intact():
    usage = UsageLimits(max_in_flight=1)
    client, downstream = model_client(usage)
    join = lambda fn_index: json.dumps({"data": ["hi"], "fn_index": fn_index, "session_hash": "abc"})  # noqa: E731
    with usage.slot("vic", "chat"):
        refused = client.post("/gradio_api/queue/join", content=join(0), cookies={"session": "s-vic"})
        assert refused.status_code == 429 and "already have 1 chat" in refused.json()["detail"]
        assert downstream.bodies == []
        for other in (join(1), join(99), join("0"), "not json", "[[[[" * 100_000):  # other events, junk: Gradio's
            assert client.post("/gradio_api/queue/join", content=other, cookies={"session": "s-vic"}).status_code \
                == 200
            assert downstream.bodies[-1] == other.encode()
        assert client.post("/gradio_api/queue/join", content=join(0), cookies={"session": "s-val"}).status_code == 200
    assert client.post("/gradio_api/queue/join", content=join(0), cookies={"session": "s-vic"}).status_code == 200


def test_one_users_refusals_are_answered_one_at_a_time():
    """However many connections a flood uses, one user gets a refusal every `refusal_delay_s`; others are not held."""
    usage = UsageLimits(max_in_flight=1)
    client, _ = model_client(usage, delay_s=0.2)
    with usage.slot("vic", "chat"), ThreadPoolExecutor(5) as pool:
        started = time.perf_counter()
        refused = list(pool.map(lambda _: client.post("/gradio_api/call/chat", content="{}",
                                                      cookies={"session": "s-vic"}).status_code, range(5)))
        took = time.perf_counter() - started
        other = time.perf_counter()
        assert client.post("/gradio_api/call/chat", content="{}", cookies={"session": "s-val"}).status_code == 200
        assert time.perf_counter() - other < 0.2
    assert refused == [429] * 5 and took >= 5 * 0.2
