"""Training runs (status, metrics per logging step) and candidate-generation jobs."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence

from feedback_db.models import GenerationJob, Run, RunMetric
from feedback_db.store.base import StoreBase, check_choice, now
from feedback_db.vocab import FINAL_RUN_STATUSES, RUN_STATUSES


class RunsMixin(StoreBase):
    """Training runs and generation jobs."""

    # runs ---

    def create_run(self, config: dict, stages: list[str], username: str) -> int:
        row = {"config": json.dumps(config), "stages": json.dumps(list(stages)), "username": username}
        return self._insert("runs", {**row, "status": "queued", "created": now(), "updated": now()})

    def update_run(
        self,
        run_id: int,
        *,
        status: str | None = None,
        pid: int | None = None,
        stage: str | None = None,
        error: str | None = None,
        log_tail: str | None = None,
        versions: list[str] | None = None,
    ) -> None:
        """Set the given fields (None = leave as is); a final status also stamps `finished`."""
        if status is not None:
            check_choice("status", status, RUN_STATUSES)
        fields = {"status": status, "pid": pid, "stage": stage, "error": error, "log_tail": log_tail}
        fields["versions"] = None if versions is None else json.dumps(list(versions))
        changes = {k: v for k, v in fields.items() if v is not None} | {"updated": now()}
        if status in FINAL_RUN_STATUSES:
            changes["finished"] = changes["updated"]
        assignments = ", ".join(f"{k} = ?" for k in changes)
        if self._update(f"UPDATE runs SET {assignments} WHERE id = ?", (*changes.values(), run_id)) == 0:
            raise KeyError(f"no run {run_id}")

    def add_run_metrics(self, run_id: int, step: int, stage: str, metrics: dict) -> int:
        row = {"run_id": run_id, "step": step, "stage": stage, "metrics": json.dumps(metrics), "created": now()}
        return self._insert("run_metrics", row)

    def drop_run_metrics_after(self, run_id: int, stage: str, step: int) -> int:
        """A stage resuming from its checkpoint at `step` logs the later steps again: the rows an earlier attempt
        wrote for them go, so each step keeps one set of rows (the resumed run's). Returns how many went."""
        return self._update("DELETE FROM run_metrics WHERE run_id = ? AND stage = ? AND step > ?",
                            (run_id, stage, step))

    def get_run(self, run_id: int) -> Run:
        rows = self._query("SELECT * FROM runs WHERE id = ?", (run_id,))
        if not rows:
            raise KeyError(f"no run {run_id}")
        return _run(rows[0])

    def list_runs(self, limit: int | None = None) -> list[Run]:
        rows = self._query("SELECT * FROM runs ORDER BY id DESC LIMIT ?", (-1 if limit is None else limit,))
        return [_run(r) for r in rows]

    def run_metrics(self, run_id: int, after_id: int = 0) -> list[RunMetric]:
        """Metrics rows of a run in logging order; `after_id` returns only rows newer than one already seen."""
        rows = self._query("SELECT * FROM run_metrics WHERE run_id = ? AND id > ? ORDER BY id", (run_id, after_id))
        return [RunMetric(**{**dict(r), "metrics": json.loads(r["metrics"])}) for r in rows]

    def mark_interrupted_runs(self, keep: Sequence[int] = ()) -> int:
        """At app start: runs left queued/running by a previous app process become `interrupted`, except `keep`
        (rounds still training in a live process of their own)."""
        stamp = now()
        marks = ", ".join("?" for _ in keep)
        return self._update(
            "UPDATE runs SET status = 'interrupted', updated = ?, finished = ? WHERE status IN ('queued', 'running')"
            f" AND id NOT IN ({marks})",
            (stamp, stamp, *keep),
        )

    # generation jobs ---

    def create_generation_job(self, username: str, mode: str, versions: list[str], total: int) -> int:
        stamp = now()
        return self._insert("generation_jobs", {"username": username, "mode": mode, "versions": json.dumps(versions),
                                                "total": total, "status": "queued", "created": stamp,
                                                "updated": stamp})

    def update_generation_job(self, job_id: int, status: str, done: int = 0, new_tokens: int = 0,
                              tokens_per_s: float = 0.0, eta_s: float | None = None, error: str | None = None) -> None:
        """Progress or the end of a job; a cancel request (`cancelling`) is kept until the job ends."""
        self._update("UPDATE generation_jobs SET status = CASE WHEN status = 'cancelling' AND ? = 'running' "
                     "THEN status ELSE ? END, done = ?, new_tokens = ?, tokens_per_s = ?, eta_s = ?, error = ?, "
                     "updated = ? WHERE id = ?",
                     (status, status, done, new_tokens, tokens_per_s, eta_s, error, now(), job_id))

    def cancel_generation_job(self, job_id: int) -> bool:
        """Ask a queued or running job to stop; False when it has already ended."""
        return self._update("UPDATE generation_jobs SET status = 'cancelling', updated = ? WHERE id = ? AND status "
                            "IN ('queued', 'running')", (now(), job_id)) > 0

    def get_generation_job(self, job_id: int) -> GenerationJob | None:
        return self._one(_generation_job, "SELECT * FROM generation_jobs WHERE id = ?", (job_id,))

    def latest_generation_job(self) -> GenerationJob | None:
        return self._one(_generation_job, "SELECT * FROM generation_jobs ORDER BY id DESC LIMIT 1")

    def mark_interrupted_generation_jobs(self) -> int:
        """At app start: jobs a previous app process left unfinished become `interrupted`."""
        return self._update("UPDATE generation_jobs SET status = 'interrupted', updated = ? WHERE status IN "
                            "('queued', 'running', 'cancelling')", (now(),))


def _run(row: sqlite3.Row) -> Run:
    decoded = {k: json.loads(row[k]) for k in ("config", "stages", "versions")}
    return Run(**{**dict(row), **decoded})


def _generation_job(row: sqlite3.Row) -> GenerationJob:
    return GenerationJob(**{**dict(row), "versions": json.loads(row["versions"])})
