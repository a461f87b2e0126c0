"""Held-out evaluation, early stopping, TensorBoard files and checkpoints, on the real model with the SFT recipe."""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from training import run_args
from training.recipes.sft import SFTRecipeConfig
from training.recipes.sft import main as sft


def test_sft_evaluates_heldout_stops_early_and_publishes_best(store, data_dir: Path):
    torch.set_num_threads(1)
    for i in range(2):
        prompt_id = store.add_prompt(f"Held-out question {i}: what is 2 + {i}?", split="heldout")
        store.add_demonstration(prompt_id, f"2 + {i} is {2 + i}.")
    run_id = store.create_run(config={}, stages=["sft"], username="admin")
    # lr 0.3 overshoots: eval_loss rises after its first evaluations, so patience 1 stops the run early
    name = sft(SFTRecipeConfig(db=store.path, data_dir=str(data_dir), parent="base", max_steps=8, eval_steps=1,
                               early_stopping_patience=1, learning_rate=0.3, run_id=run_id, seed=0))
    evals = [m for m in store.run_metrics(run_id) if "eval_loss" in m.metrics]
    losses = {m.step: m.metrics["eval_loss"] for m in evals}
    version = store.get_version(name)
    assert version.metrics["steps"] < 8 and len(evals) == version.metrics["steps"]  # stopped early
    best_step = min(losses, key=losses.get)
    assert version.metrics["published_checkpoint_step"] == best_step
    assert version.metrics["best_eval_loss"] == pytest.approx(losses[best_step])
    folder = data_dir / "runs" / str(run_id)
    events = EventAccumulator(str(folder / "tb" / "sft")).Reload()
    assert {"train/loss", "eval/loss"} <= set(events.Tags()["scalars"])
    assert [e.step for e in events.Scalars("eval/loss")] == sorted(losses)
    assert not (folder / "checkpoints" / "sft").exists()  # a published stage keeps no checkpoints
    assert load_file(f"{version.path}/adapter_model.safetensors")


def test_resume_checkpoint_skips_a_half_written_one(tmp_path: Path):
    stage = tmp_path / "checkpoints" / "sft"
    for step, complete in ((2, True), (4, True), (6, False)):
        (stage / f"checkpoint-{step}").mkdir(parents=True)
        if complete:
            (stage / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")
    assert run_args.resume_checkpoint(tmp_path, "sft") == str(stage / "checkpoint-4")
    assert run_args.resume_checkpoint(tmp_path, "dpo") is None


def test_shared_flags_are_checked():
    with pytest.raises(ValueError, match="--early_stopping_patience needs evaluations"):
        SFTRecipeConfig(dataset_file="x.jsonl", eval_steps=0, early_stopping_patience=2)
    with pytest.raises(ValueError, match="--report_to: unknown"):
        SFTRecipeConfig(dataset_file="x.jsonl", report_to="wandb")
