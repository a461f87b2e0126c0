"""Outgoing webhooks: what happened in the store → signed JSON POSTs to the admins' URLs, retried with back-off.

    notifier = Notifier(store)
    stop = notifier.start()          # app.py: a background thread calling tick() every 2 s

`events(store)` reads what happened from the store itself (so events from the training process and from other app
processes count too): finished or failed rounds, gate verdicts, promotions (the activate_version audit entries) and
the pairwise review queue running empty. Each event has a stable key; a hook gets one delivery per key, and only
for events after it was added (no back-fill). A delivery is `POST <url>` with body
`{"event", "key", "at", "data"}` and headers `X-Tuneloop-Event`, `X-Tuneloop-Delivery` and
`X-Tuneloop-Signature: sha256=<hex HMAC-SHA256 of the body with the hook's secret>`; any 2xx counts as delivered,
anything else is retried after 2, 4, 8, 16 s and marked failed after `max_attempts`. Admin › Webhooks shows the log.
"""

import hashlib
import hmac
import json
import logging
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx

from feedback_db.store import FeedbackStore

log = logging.getLogger("tuneloop.webhooks")
QUEUE_PROBE_USER = "\x00webhooks"  # judged nothing, so the queue count is every item still short of judgments


@dataclass(frozen=True)
class Event:
    name: str
    key: str
    at: str  # when it happened (UTC ISO-8601)
    data: dict


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def events(store: FeedbackStore, annotators_per_item: int = 1) -> list[Event]:
    found = []
    for run in store.list_runs(limit=200):
        if run.finished and run.status == "succeeded":
            found.append(Event("round_finished", f"run:{run.id}:succeeded", run.finished,
                               {"run_id": run.id, "stages": run.stages, "versions": run.versions}))
        elif run.finished:
            found.append(Event("round_failed", f"run:{run.id}:{run.status}", run.finished,
                               {"run_id": run.id, "status": run.status, "error": run.error or ""}))
    for version in store.list_versions():
        if "gate_passed" in version.metrics:
            found.append(Event("gate_verdict", f"gate:{version.name}", version.created, {
                "version": version.name, "passed": version.metrics["gate_passed"],
                "win_rate_vs_active": version.metrics.get("win_rate_vs_active"),
                "reason": version.metrics.get("gate_reason", "")}))
    for entry in store.list_audit(limit=200):
        if entry.action == "activate_version":
            data = {**entry.detail, "by": entry.username}
            found.append(Event("promotion", f"audit:{entry.id}", entry.created, data))
    _, waiting = store.queue_progress(QUEUE_PROBE_USER, "pairwise", annotators_per_item)
    if waiting == 0 and store.count("comparisons"):
        # one event each time the queue drains: keyed by the votes that emptied it
        found.append(Event("queue_empty", f"queue_empty:pairwise:{store.count('comparisons')}",
                           datetime.now(UTC).isoformat(), {"mode": "pairwise", "votes": store.count("comparisons")}))
    return found


class Notifier:
    def __init__(self, store: FeedbackStore, annotators_per_item: int = 1, max_attempts: int = 5,
                 base_delay_s: float = 2.0, timeout_s: float = 5.0) -> None:
        self.store, self.annotators_per_item = store, annotators_per_item
        self.max_attempts, self.base_delay_s, self.timeout_s = max_attempts, base_delay_s, timeout_s

    def tick(self) -> int:
        """Queue new events for the hooks that want them, then send what is due; returns deliveries attempted."""
        hooks = self.store.list_webhooks()
        if hooks:
            for event in events(self.store, self.annotators_per_item):
                for hook in hooks:
                    if event.name in hook.events and event.at >= hook.created:
                        payload = {"event": event.name, "key": event.key, "at": event.at, "data": event.data}
                        self.store.enqueue_delivery(hook.id, event.name, event.key, payload)
        secrets = {h.id: h for h in hooks}
        due = self.store.due_deliveries(datetime.now(UTC).isoformat())
        for delivery in due:
            hook = secrets.get(delivery.webhook_id)
            if hook is None:  # removed since: give up on it
                self.store.record_attempt(delivery.id, None, "webhook removed", None, False)
                continue
            self._send(hook.url, hook.secret, delivery)
        return len(due)

    def _send(self, url: str, secret: str, delivery) -> None:
        body = json.dumps(delivery.payload, sort_keys=True).encode()
        headers = {"Content-Type": "application/json", "X-Tuneloop-Event": delivery.event,
                   "X-Tuneloop-Delivery": str(delivery.id), "X-Tuneloop-Signature": signature(secret, body)}
        status, error = None, ""
        try:
            status = httpx.post(url, content=body, headers=headers, timeout=self.timeout_s).status_code
            error = "" if 200 <= status < 300 else f"HTTP {status}"
        except httpx.HTTPError as err:
            error = f"{type(err).__name__}: {err}"
        ok = not error
        attempt = delivery.attempts + 1
        retry = None if ok or attempt >= self.max_attempts else (
            datetime.now(UTC) + timedelta(seconds=self.base_delay_s * 2 ** (attempt - 1))).isoformat()
        self.store.record_attempt(delivery.id, status, error, retry, ok)
        if not ok:
            log.warning("webhook delivery %s to %s: %s (attempt %d)", delivery.id, url, error, attempt)

    def start(self, interval_s: float = 2.0) -> threading.Event:
        stop = threading.Event()

        def loop() -> None:
            while not stop.wait(interval_s):
                try:
                    self.tick()
                except Exception:  # a failed tick must not end notifications; the next one retries
                    log.exception("webhooks")

        threading.Thread(target=loop, name="tuneloop-webhooks", daemon=True).start()
        return stop
