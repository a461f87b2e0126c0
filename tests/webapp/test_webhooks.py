"""Webhooks against a local HTTP receiver: events from store changes, HMAC-SHA256 signatures, retry with back-off,
no back-fill of events older than the hook, one delivery per event."""

import hashlib
import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from webapp.webhooks import Notifier

SECRET = "s3cret-s3cret-s3cret"


@pytest.fixture()
def receiver():
    """(url, received [(headers, body)], statuses to answer in turn; 200 once they run out)."""
    received, statuses = [], []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((dict(self.headers), body))
            self.send_response(statuses.pop(0) if statuses else 200)
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/hook", received, statuses
    server.shutdown()


def drain(notifier: Notifier, store, deadline_s: float = 10.0) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        notifier.tick()
        if not any(d.status == "pending" for d in store.list_deliveries()):
            return
        time.sleep(0.05)


def test_events_are_signed_delivered_once_and_retried(store, tmp_path, receiver):
    url, received, statuses = receiver
    old = store.create_run({}, ["sft"], "alice")
    store.update_run(old, status="succeeded")  # before the hook: not back-filled
    time.sleep(0.01)
    hook = store.add_webhook(url, SECRET, ["round_finished", "round_failed", "promotion", "gate_verdict"], "alice")
    run = store.create_run({}, ["dpo"], "alice")
    store.update_run(run, status="failed", error="out of memory")
    (tmp_path / "v1").mkdir()
    store.register_version("v1-dpo", None, "dpo", "lora", str(tmp_path / "v1"), "base", {}, {},
                           {"gate_passed": True, "win_rate_vs_active": 0.6})
    store.set_active("v1-dpo", username="gate")
    statuses.append(500)  # the first POST fails and is retried
    notifier = Notifier(store, base_delay_s=0.05)
    drain(notifier, store)
    notifier.tick()  # nothing new: no second delivery of the same events
    deliveries = store.list_deliveries()
    assert sorted(d.event for d in deliveries) == ["gate_verdict", "promotion", "round_failed"]
    assert all(d.status == "delivered" for d in deliveries) and sorted(d.attempts for d in deliveries) == [1, 1, 2]
    assert len(received) == 4
    for headers, body in received:
        expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        assert headers["X-Tuneloop-Signature"] == expected
    events = {json.loads(body)["event"]: json.loads(body) for _, body in received}
    assert events["round_failed"]["data"] == {"run_id": run, "status": "failed", "error": "out of memory"}
    assert events["promotion"]["data"]["version"] == "v1-dpo" and events["gate_verdict"]["data"]["passed"] is True
    assert {d.webhook_id for d in deliveries} == {hook}


def test_a_dead_receiver_is_marked_failed_after_the_last_attempt(store):
    store.add_webhook("http://127.0.0.1:9/nothing-listens", SECRET, ["round_finished"], "alice")
    time.sleep(0.01)
    store.update_run(store.create_run({}, ["sft"], "alice"), status="succeeded")
    drain(Notifier(store, max_attempts=3, base_delay_s=0.01, timeout_s=1), store)
    (delivery,) = store.list_deliveries()
    assert (delivery.status, delivery.attempts) == ("failed", 3) and "Connect" in delivery.last_error


def test_hooks_are_validated(store):
    with pytest.raises(ValueError, match="url must be"):
        store.add_webhook("file:///etc/passwd", SECRET, ["promotion"], "alice")
    with pytest.raises(ValueError, match="at least 16"):
        store.add_webhook("https://example.org/h", "short", ["promotion"], "alice")
    with pytest.raises(ValueError, match="events must be"):
        store.add_webhook("https://example.org/h", SECRET, ["everything"], "alice")


def test_queue_empty_fires_once_each_time_the_pairwise_queue_drains(store, receiver):
    url, received, _ = receiver
    store.add_webhook(url, SECRET, ["queue_empty"], "alice")
    prompt = store.add_prompt("P")
    a, b = store.add_response(prompt, "x", "base"), store.add_response(prompt, "y", "v1")
    notifier = Notifier(store)
    notifier.tick()
    assert received == []  # an item is waiting
    store.add_comparison(a, b, "a", "rita")
    notifier.tick()
    notifier.tick()
    assert [json.loads(body)["event"] for _, body in received] == ["queue_empty"]


def test_admin_tab_adds_lists_and_removes_hooks(demo, store):
    from tests.webapp.conftest import call

    hooks, log, url, secret = call(demo, "webhooks_add", "https://example.org/h", SECRET, ["promotion"], user="alice")
    assert list(hooks.url) == ["https://example.org/h"] and (url, secret) == ("", "")
    assert SECRET not in hooks.to_string()  # the secret is never shown back
    with pytest.raises(Exception, match="Webhook not added: url must be"):
        call(demo, "webhooks_add", "ftp://x", SECRET, ["promotion"], user="alice")
    with pytest.raises(Exception, match="Permission denied"):
        call(demo, "webhooks_list", user="rita")
    hooks, _ = call(demo, "webhooks_remove", int(hooks.id[0]), user="alice")
    assert hooks.empty and store.list_webhooks() == []
