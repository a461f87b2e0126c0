"""Resume: a round killed with SIGKILL mid-stage continues from its last checkpoint and ends where an uninterrupted
round ends (same step count, same loss trajectory, same adapter within float tolerance)."""

import os
import signal
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.training.test_round import wait_for
from training.runner import RoundRequest, poll_runs, resume_round, start_round

STEPS = 6
SFT_ARGS = {"sft": {"save_steps": 1, "save_total_limit": 2, "seed": 7, "learning_rate": 1e-3}}


def losses(store, run_id: int) -> dict[int, float]:
    """Train loss per step; a resumed run logs the steps after its checkpoint again, the last row counts."""
    return {m.step: m.metrics["loss"] for m in store.run_metrics(run_id) if "loss" in m.metrics}


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_killed_round_resumes_from_checkpoint_and_matches_uninterrupted(store, data_dir: Path):
    request = RoundRequest(stages=["sft"], max_steps=STEPS, evaluate=False, parent="base", stage_args=SFT_ARGS)
    run_id = start_round(store, data_dir, request)
    checkpoint = data_dir / "runs" / str(run_id) / "checkpoints" / "sft" / "checkpoint-3" / "trainer_state.json"
    wait_for(checkpoint.is_file, timeout_s=600, every_s=0.2)
    os.killpg(store.get_run(run_id).pid, signal.SIGKILL)
    assert wait_for(lambda: poll_runs(store, data_dir), 60) == [run_id]
    assert store.get_run(run_id).status == "failed" and store.list_versions() == []

    resume_round(store, data_dir, run_id)
    run = wait_for(lambda: (r := store.get_run(run_id)).status in ("succeeded", "failed") and r, 600)
    assert run.status == "succeeded", run.error
    log = (data_dir / "runs" / str(run_id) / "log.txt").read_text()
    assert "sft: resuming from" in log and "checkpoint-" in log.split("sft: resuming from")[1].split()[0]
    (resumed,) = store.list_versions()
    assert resumed.metrics["steps"] == STEPS

    reference_id = start_round(store, data_dir, request)
    run = wait_for(lambda: (r := store.get_run(reference_id)).status in ("succeeded", "failed") and r, 600)
    assert run.status == "succeeded", run.error
    reference = store.get_version(run.versions[0])
    assert reference.metrics["steps"] == STEPS
    assert resumed.data_snapshot["max_ids"] == reference.data_snapshot["max_ids"]
    got, expected = losses(store, run_id), losses(store, reference_id)
    assert sorted(got) == list(range(1, STEPS + 1))
    assert got == pytest.approx(expected, rel=1e-4, abs=1e-5)  # steps 4..6 came from the resumed process
    a = load_file(f"{resumed.path}/adapter_model.safetensors")
    b = load_file(f"{reference.path}/adapter_model.safetensors")
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
    assert not (data_dir / "runs" / str(run_id) / "checkpoints" / "sft").exists()


def test_resume_refuses_a_finished_run(store, data_dir: Path):
    run_id = store.create_run(config={}, stages=["sft"], username="admin")
    store.update_run(run_id, status="succeeded")
    with pytest.raises(ValueError, match="only failed, cancelled, interrupted runs can be resumed"):
        resume_round(store, data_dir, run_id)
