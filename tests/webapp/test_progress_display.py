"""Candidate-generation jobs read like rounds: a timeline of phases with answers done/total, elapsed, ETA, tokens/s."""

from datetime import UTC, datetime, timedelta

from feedback_db.models import GenerationJob
from webapp.tabs.admin_data import job_status_text

CREATED = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


def job(status: str, done: int, eta_s: float | None = None, updated_s: float = 0, error: str | None = None):
    return GenerationJob(id=3, username="alice", mode="pairwise", versions=["base", "v2-dpo"], total=40, done=done,
                         new_tokens=done * 30, tokens_per_s=24.6 if done else 0.0, eta_s=eta_s, status=status,
                         error=error, created=CREATED.isoformat(),
                         updated=(CREATED + timedelta(seconds=updated_s)).isoformat())


def test_a_running_job_shows_its_phase_progress_elapsed_eta_and_speed():
    text = job_status_text(job("running", 12, eta_s=150.0, updated_s=60), now=CREATED + timedelta(seconds=65))
    assert text.startswith("**Generation job #3** (pairwise, base, v2-dpo): **running**")
    assert ("✅ queued → ⏳ **generating** · 12/40 answers · 1:05 elapsed · ETA 2:30 · 25 tokens/s → "
            "⏸ stored for review") in text


def test_queued_finished_and_failed_jobs():
    assert "⏳ **queued** (0:07) → ⏸ generate 40 answers → ⏸ stored for review" in job_status_text(
        job("queued", 0), now=CREATED + timedelta(seconds=7))
    done = job_status_text(job("done", 40, eta_s=0.0, updated_s=3725), now=CREATED + timedelta(days=1))
    assert "**done**" in done and "✅ generated (40/40 answers · 1:02:05 elapsed · 25 tokens/s) → ✅ stored" in done
    assert "ETA" not in done  # elapsed stops at the job's last update, and a finished job has no ETA
    failed = job_status_text(job("failed", 5, eta_s=80.0, updated_s=20, error="CUDA out of memory"),
                             now=CREATED + timedelta(hours=2))
    assert "**failed**: CUDA out of memory" in failed
    assert "❌ generating (failed · 5/40 answers · 0:20 elapsed · 25 tokens/s; the answers so far are stored)" \
        in failed
