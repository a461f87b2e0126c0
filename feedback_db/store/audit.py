"""The data snapshot, the audit log, and whole-table reads (feedback counts, raw exports, row counts)."""

from __future__ import annotations

import json

from feedback_db.connection import retry_locked
from feedback_db.models import AuditEntry, FeedbackCount, Snapshot
from feedback_db.store.base import StoreBase, check, check_choice, now

# tables whose max id a snapshot pins; builders read no row past them
SNAPSHOT_TABLES = (
    "prompts",
    "responses",
    "demonstrations",
    "ratings",
    "comparisons",
    "rankings",
    "corrections",
    "preference_pairs",
    "unpaired_labels",
)
FEEDBACK_TABLES = ("ratings", "comparisons", "rankings", "corrections")
EXPORTABLE_TABLES = (
    *SNAPSHOT_TABLES, "skips", "model_versions", "runs", "run_metrics", "audit", "prompt_split_moves",
    "review_criteria", "criterion_answers", "review_guidelines", "prompt_exclusions", "webhook_deliveries",
)


class AuditMixin(StoreBase):
    """Snapshot, audit log, whole-table reads."""

    # snapshot, audit, stats, export ---

    def snapshot(self, include_viewer_chat: bool = False) -> Snapshot:
        """The max id of every table the dataset builders read, taken in one read transaction, and whether
        viewers' chat thumbs and arena votes count (an admin's choice per round; off by default)."""
        conn = self._db.get()
        union = " UNION ALL ".join(f"SELECT '{t}', COALESCE(MAX(id), 0) FROM {t}" for t in SNAPSHOT_TABLES)
        max_ids = {table: max_id for table, max_id in retry_locked(lambda: conn.execute(union).fetchall())}
        feedback_max_id = max(max_ids[t] for t in FEEDBACK_TABLES)
        return Snapshot(max_ids, feedback_max_id, now(), include_viewer_chat)

    def audit(self, username: str, action: str, detail: dict) -> int:
        row = {"username": username, "action": action, "detail": json.dumps(detail), "created": now()}
        return self._insert("audit", row)

    def list_audit(self, limit: int = 100) -> list[AuditEntry]:
        rows = self._query("SELECT * FROM audit ORDER BY id DESC LIMIT ?", (limit,))
        return [AuditEntry(**{**dict(r), "detail": json.loads(r["detail"])}) for r in rows]

    def feedback_counts(self) -> list[FeedbackCount]:
        """Judgments per UTC day, mode (rating|comparison|ranking|correction) and reviewer."""
        union = " UNION ALL ".join(
            f"SELECT substr(created, 1, 10) AS day, '{t[:-1]}' AS mode, username FROM {t}" for t in FEEDBACK_TABLES
        )
        rows = self._query(
            f"SELECT day, mode, username, COUNT(*) AS count FROM ({union}) GROUP BY day, mode, username "
            "ORDER BY day, mode, username"
        )
        return [FeedbackCount(**dict(r)) for r in rows]

    def table_rows(self, table: str) -> list[dict]:
        """Every row of a table as stored (JSON columns as text), for raw exports. Password hashes never leave."""
        check_choice("table", table, EXPORTABLE_TABLES)
        return [dict(r) for r in self._query(f"SELECT * FROM {table} ORDER BY id")]

    def count(self, table: str) -> int:
        check(table in (*EXPORTABLE_TABLES, "users"), f"unknown table {table!r}")
        return self._query(f"SELECT COUNT(*) FROM {table}")[0][0]
