"""Webhooks and their delivery queue (webapp.webhooks sends them)."""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Sequence

from feedback_db.models import Webhook, WebhookDelivery
from feedback_db.store.base import StoreBase, check, now
from feedback_db.vocab import WEBHOOK_EVENTS


class WebhooksMixin(StoreBase):
    """Webhooks and their deliveries."""

    # webhooks ---

    def add_webhook(self, url: str, secret: str, events: Sequence[str], username: str) -> int:
        check(re.fullmatch(r"https?://[^\s]{1,2000}", url) is not None, f"url must be http(s)://...; got {url!r}")
        check(len(secret) >= 16, "secret must be at least 16 characters")
        check(bool(events) and set(events) <= set(WEBHOOK_EVENTS),
               f"events must be some of {', '.join(WEBHOOK_EVENTS)}; got {list(events)}")
        row = {"url": url, "secret": secret, "events": json.dumps(list(events)), "username": username}
        return self._insert("webhooks", {**row, "created": now()})

    def list_webhooks(self) -> list[Webhook]:
        rows = self._query("SELECT * FROM webhooks WHERE removed IS NULL ORDER BY id")
        return [Webhook(**{**dict(r), "events": json.loads(r["events"])}) for r in rows]

    def remove_webhook(self, webhook_id: int) -> None:
        if self._update("UPDATE webhooks SET removed = ? WHERE id = ? AND removed IS NULL", (now(), webhook_id)) == 0:
            raise KeyError(f"no webhook {webhook_id}")

    def enqueue_delivery(self, webhook_id: int, event: str, event_key: str, payload: dict) -> bool:
        """Queue one delivery; False when this hook already has one for `event_key`."""
        stamp = now()
        with self._db.write() as conn:
            cursor = conn.execute(
                "INSERT OR IGNORE INTO webhook_deliveries (webhook_id, event, event_key, payload, status, "
                "next_attempt, created) VALUES (?, ?, ?, ?, 'pending', ?, ?)",
                (webhook_id, event, event_key, json.dumps(payload), stamp, stamp),
            )
            return cursor.rowcount == 1

    def due_deliveries(self, at: str) -> list[WebhookDelivery]:
        rows = self._query("SELECT * FROM webhook_deliveries WHERE status = 'pending' AND next_attempt <= ? "
                           "ORDER BY id", (at,))
        return [_delivery(r) for r in rows]

    def record_attempt(self, delivery_id: int, http_status: int | None, error: str, next_attempt: str | None,
                       delivered: bool) -> None:
        """One attempt's outcome: delivered, retried at `next_attempt`, or (None) failed for good."""
        status = "delivered" if delivered else ("pending" if next_attempt else "failed")
        self._update(
            "UPDATE webhook_deliveries SET attempts = attempts + 1, status = ?, http_status = ?, last_error = ?, "
            "next_attempt = COALESCE(?, next_attempt), delivered = ? WHERE id = ?",
            (status, http_status, error[:500], next_attempt, now() if delivered else None, delivery_id),
        )

    def list_deliveries(self, limit: int = 100) -> list[WebhookDelivery]:
        rows = self._query("SELECT * FROM webhook_deliveries ORDER BY id DESC LIMIT ?", (limit,))
        return [_delivery(r) for r in rows]


def _delivery(row: sqlite3.Row) -> WebhookDelivery:
    return WebhookDelivery(**{**dict(row), "payload": json.loads(row["payload"])})
