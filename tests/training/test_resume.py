"""Resume: a round killed with SIGKILL mid-stage continues from its last checkpoint and ends where an uninterrupted
round ends (same step count, same loss trajectory, same adapter within float tolerance)."""

import os
import signal
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerControl, TrainerState

from tests.training.test_round import wait_for
from training.callbacks import StoreProgressCallback
from training.round import RoundConfig
from training.runner import poll_runs, resume_round, start_round

STEPS = 6
SFT_ARGS = {"sft": {"save_steps": 1, "save_total_limit": 2, "seed": 7, "learning_rate": 1e-3}}


def losses(store, run_id: int) -> dict[int, float]:
    """Train loss per step (one row per step: a resumed stage drops the rows it logs again)."""
    rows = [m for m in store.run_metrics(run_id) if "loss" in m.metrics]
    assert len({m.step for m in rows}) == len(rows), [m.step for m in rows]
    return {m.step: m.metrics["loss"] for m in rows}


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_killed_round_resumes_from_checkpoint_and_matches_uninterrupted(store, data_dir: Path):
    request = RoundConfig(db=store.path, stages="sft", max_steps=STEPS, evaluate=False, parent="base",
                          stage_args=SFT_ARGS)
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
    assert list(got) == list(range(1, STEPS + 1))  # once each, in order
    assert got == pytest.approx(expected, rel=1e-4, abs=1e-5)  # steps 4..6 came from the resumed process
    a = load_file(f"{resumed.path}/adapter_model.safetensors")
    b = load_file(f"{reference.path}/adapter_model.safetensors")
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
    assert not (data_dir / "runs" / str(run_id) / "checkpoints" / "sft").exists()


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_resume_keeps_the_finished_stage_and_reruns_only_the_killed_one(store, data_dir: Path):
    """sft,dpo killed during dpo (no checkpoint yet): the resumed round keeps v1-sft (not trained again, its rows
    untouched), trains dpo on it from step 0, and the run's metrics hold one set of rows per stage and step."""
    request = RoundConfig(db=store.path, stages="sft,dpo", max_steps=2, evaluate=False, parent="base",
                          stage_args={"dpo": {"eval_steps": 1}})
    run_id = start_round(store, data_dir, request)
    wait_for(lambda: (r := store.get_run(run_id)).stage == "dpo" and r.versions, timeout_s=600, every_s=0.1)
    os.killpg(store.get_run(run_id).pid, signal.SIGKILL)
    assert wait_for(lambda: poll_runs(store, data_dir), 60) == [run_id]
    (sft_version,) = store.list_versions()
    sft_rows = [(m.id, m.step) for m in store.run_metrics(run_id) if m.stage == "sft"]

    resume_round(store, data_dir, run_id)
    run = wait_for(lambda: (r := store.get_run(run_id)).status in ("succeeded", "failed") and r, 600)
    assert run.status == "succeeded", run.error
    log = (data_dir / "runs" / str(run_id) / "log.txt").read_text()
    assert f"stage sft already done ({sft_version.name})" in log
    assert [v.method for v in store.list_versions()] == ["sft", "dpo"] and run.versions[0] == sft_version.name
    assert store.get_version(run.versions[1]).parent == sft_version.name
    metrics = store.run_metrics(run_id)
    assert [(m.id, m.step) for m in metrics if m.stage == "sft"] == sft_rows  # sft was not trained again
    for key in ("loss", "eval_loss"):
        assert [m.step for m in metrics if m.stage == "dpo" and key in m.metrics] == [1, 2], key


def test_resume_refuses_a_finished_run(store, data_dir: Path):
    run_id = store.create_run(config={}, stages=["sft"], username="admin")
    store.update_run(run_id, status="succeeded")
    with pytest.raises(ValueError, match="only failed, cancelled, interrupted runs can be resumed"):
        resume_round(store, data_dir, run_id)


def test_resumed_stage_keeps_one_row_per_step_and_its_own_values(store):
    """The first attempt logged steps 1..5 and died; its newest checkpoint was step 3. The resumed stage drops the
    rows of steps 4 and 5 (another stage's rows stay) and logs them again; its ETA counts only its own steps."""
    run_id = store.create_run(config={}, stages=["sft", "dpo"], username="admin")
    for step in range(1, 6):
        store.add_run_metrics(run_id, step, "sft", {"loss": 10.0 + step, "step": step})
    store.add_run_metrics(run_id, 5, "dpo", {"loss": 1.0, "step": 5})
    callback = StoreProgressCallback(store, run_id, "sft")
    state = TrainerState(global_step=3, max_steps=6, is_world_process_zero=True)
    callback.on_train_begin(None, state, TrainerControl())
    time.sleep(0.5)
    for step in (4, 5):
        state.global_step = step
        callback.on_log(None, state, TrainerControl(), logs={"loss": 20.0 + step})
    rows = [(m.stage, m.step, m.metrics["loss"]) for m in store.run_metrics(run_id)]
    assert rows == [("sft", 1, 11.0), ("sft", 2, 12.0), ("sft", 3, 13.0), ("dpo", 5, 1.0),
                    ("sft", 4, 24.0), ("sft", 5, 25.0)]
    last = store.run_metrics(run_id)[-1].metrics
    # 2 steps in about `elapsed` seconds, 1 left: about elapsed / 2 (counting all 5 steps would say elapsed / 5)
    assert last["eta_s"] == pytest.approx(last["elapsed_s"] / 2, abs=0.06)
