"""webapp/http_guard.py in front of a tiny app: the origins a state-changing request may come from, with and without
`--public-url` (the reverse-proxy set-up in the README)."""

import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from webapp.http_guard import HttpGuard, origin_of
from webapp.server import public_origins


def client(public_url: str | None, host: str = "127.0.0.1", port: int = 7860) -> TestClient:
    app = Starlette(routes=[Route("/act", lambda request: PlainTextResponse("done"), methods=["GET", "POST"])])
    guarded = HttpGuard(app, origins=public_origins(public_url, host, port), upload_role=lambda cookies: None,
                        upload_dir=lambda: None, max_upload_bytes=1, upload_quota_bytes=1)
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
