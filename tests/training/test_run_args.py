"""Held-out evaluation, early stopping, TensorBoard files and checkpoints, on the real model with the SFT, DPO and
KTO recipes."""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from training import run_args
from training.recipes.dpo import DPORecipeConfig
from training.recipes.dpo import main as dpo
from training.recipes.kto import KTORecipeConfig
from training.recipes.kto import main as kto
from training.recipes.sft import SFTRecipeConfig
from training.recipes.sft import main as sft
from webapp.tabs.admin_rounds import PLOTS, metric_frames


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


def test_report_to_mlflow_logs_train_and_eval_metrics_to_a_local_file_store(store, data_dir: Path, monkeypatch):
    from mlflow.tracking import MlflowClient

    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_ALLOW_FILE_STORE", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_TAGS"):
        monkeypatch.delenv(name, raising=False)  # the recipe sets them in this process: gone again after the test
    torch.set_num_threads(1)
    prompt_id = store.add_prompt("Held-out question: what is 2 + 5?", split="heldout")
    store.add_demonstration(prompt_id, "2 + 5 is 7.")
    run_id = store.create_run(config={}, stages=["sft"], username="admin")
    sft(SFTRecipeConfig(db=store.path, data_dir=str(data_dir), parent="base", max_steps=2, eval_steps=1,
                        report_to="mlflow", run_id=run_id))
    client = MlflowClient(tracking_uri=(data_dir / "mlruns").resolve().as_uri())
    experiment = client.get_experiment_by_name("tuneloop")
    (logged,) = client.search_runs([experiment.experiment_id], f"tags.`tuneloop.run_id` = '{run_id}'")
    assert logged.info.run_name == f"{run_id}/sft" and logged.data.tags["tuneloop.stage"] == "sft"
    assert logged.data.params["learning_rate"] == "0.0002" and logged.info.status == "FINISHED"
    rows = store.run_metrics(run_id)
    for key in ("loss", "eval_loss"):
        history = sorted((m.step, m.value) for m in client.get_metric_history(logged.info.run_id, key))
        expected = [(m.step, m.metrics[key]) for m in rows if key in m.metrics]
        assert [step for step, _ in history] == [step for step, _ in expected] == [1, 2]
        assert [value for _, value in history] == pytest.approx([value for _, value in expected])
    assert not (data_dir / "runs" / str(run_id) / "tb").exists()  # only what report_to names


def plotted(metrics: list, title: str) -> set[str]:
    """The curves Admin › Rounds draws in plot `title` for these run metrics."""
    return set(metric_frames(metrics)[list(PLOTS).index(title)].metric)


def train_evaluating_every_step(store, data_dir: Path, stage: str, main, config_cls) -> tuple:
    """Train `stage` from base for 2 steps, evaluating the held-out rows after each: both evaluations reach the run's
    metrics under that stage. Returns the run id, its metrics, the evaluation rows and the version."""
    torch.set_num_threads(1)
    run_id = store.create_run(config={}, stages=[stage], username="admin")
    name = main(config_cls(db=store.path, data_dir=str(data_dir), parent="base", max_steps=2, eval_steps=1,
                           run_id=run_id))
    metrics = store.run_metrics(run_id)
    evals = [m for m in metrics if "eval_loss" in m.metrics]
    assert [m.step for m in evals] == [1, 2] and all(m.stage == stage for m in evals)
    version = store.get_version(name)
    assert version.metrics["evaluations"] == 2
    return run_id, metrics, evals, version


def test_dpo_evaluates_the_heldout_pairs_during_training(store, data_dir: Path):
    """The store fixture holds 3 preference pairs on held-out prompts: the DPO stage evaluates on them every step,
    the eval rows reach the run's metrics and TensorBoard, and the Rounds tab plots them beside the train curves."""
    run_id, metrics, evals, version = train_evaluating_every_step(store, data_dir, "dpo", dpo, DPORecipeConfig)
    assert all({"eval_rewards/accuracies", "eval_rewards/margins"} <= m.metrics.keys() for m in evals)
    assert all(0 <= m.metrics["eval_rewards/accuracies"] <= 1 for m in evals)
    assert version.metrics["heldout_reward_margin"] == pytest.approx(evals[-1].metrics["eval_rewards/margins"])
    assert version.metrics["heldout_reward_accuracy"] == evals[-1].metrics["eval_rewards/accuracies"]
    assert {"dpo/loss", "dpo/eval_loss"} <= plotted(metrics, "Loss")
    assert {"dpo/rewards/accuracies", "dpo/eval_rewards/accuracies", "dpo/eval_rewards/margins"} <= plotted(
        metrics, "Reward accuracy / margins")
    events = EventAccumulator(str(data_dir / "runs" / str(run_id) / "tb" / "dpo")).Reload()
    assert [e.step for e in events.Scalars("eval/loss")] == [1, 2]
    assert [e.value for e in events.Scalars("eval/loss")] == pytest.approx([m.metrics["eval_loss"] for m in evals])


def test_kto_evaluates_heldout_rows_during_training(store, data_dir: Path):
    """KTO's held-out rows: thumbs on held-out prompts plus the held-out pairs as one up and one down answer."""
    prompt_id = store.add_prompt("Held-out: name a primary colour.", source="test-kto", split="heldout")
    store.add_unpaired_label(prompt_id, "Red is a primary colour.", True)
    store.add_unpaired_label(prompt_id, "Purple, which is not one.", False)
    _, metrics, evals, version = train_evaluating_every_step(store, data_dir, "kto", kto, KTORecipeConfig)
    assert all({"eval_kl", "eval_rewards/margins"} <= m.metrics.keys() for m in evals)
    assert version.metrics["heldout_kl"] == pytest.approx(evals[-1].metrics["eval_kl"])
    assert {"kto/loss", "kto/eval_loss"} <= plotted(metrics, "Loss")
    assert {"kto/kl", "kto/eval_kl"} <= plotted(metrics, "KL")


def test_kto_heldout_rows_come_from_heldout_labels_and_pairs(store):
    from training.recipes.kto import labelled_answers

    prompt_id = store.add_prompt("Held-out: name a primary colour.", source="test-kto", split="heldout")
    store.add_unpaired_label(prompt_id, "Red is a primary colour.", True)
    cfg = KTORecipeConfig(db=store.path, parent="base")
    rows = labelled_answers(cfg, store, store.snapshot())
    heldout = rows["heldout"]
    assert len(heldout) == 1 + 2 * 3  # the label + 3 held-out pairs, each as a chosen (up) and a rejected (down) row
    assert sum(heldout["label"]) == 1 + 3
    assert "Held-out: name a primary colour." in {row["prompt"][-1]["content"] for row in heldout}
    assert len(rows["train"]) == len(store.list_unpaired_labels()) - 1  # nothing held-out trains


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


@pytest.mark.parametrize("stage", ["sft", "reward", "dpo", "kto", "online_rl"])
def test_every_recipe_takes_the_same_batch_flags(stage: str):
    import importlib

    from trl import TrlParser

    from training.round import RECIPES

    module, config = RECIPES[stage]
    parser = TrlParser(getattr(importlib.import_module(module), config))
    extra = ["--reward_model", "r"] if stage == "online_rl" else []
    (cfg,) = parser.parse_args_and_config(["--dataset_file", "x.jsonl", "--batch_size", "8",
                                           "--per_device_train_batch_size", "4", *extra])
    assert cfg.micro_batch() == (4, 2) and cfg.micro_batch(processes=2) == (4, 1)
    # TRL's own pair of flags (what KTO and online RL took before) still works: --batch_size is their product
    (cfg,) = parser.parse_args_and_config(["--dataset_file", "x.jsonl", "--per_device_train_batch_size", "4",
                                           "--gradient_accumulation_steps", "3", *extra])
    assert cfg.micro_batch() == (4, 3) and cfg.batch_size == 12
    with pytest.raises(ValueError, match="--batch_size 6 must be a multiple of --per_device_train_batch_size 4"):
        parser.parse_args_and_config(["--dataset_file", "x.jsonl", "--batch_size", "6",
                                      "--per_device_train_batch_size", "4", *extra])


def test_kto_and_online_rl_take_the_whole_batch_in_one_forward_by_default():
    from training.recipes.dpo import DPORecipeConfig
    from training.recipes.kto import KTORecipeConfig
    from training.recipes.online_rl import OnlineRLRecipeConfig

    assert KTORecipeConfig(dataset_file="x", batch_size=8).micro_batch() == (8, 1)
    assert OnlineRLRecipeConfig(dataset_file="x", reward_model="r", batch_size=8).micro_batch(processes=2) == (4, 1)
    if not torch.cuda.is_available():
        assert DPORecipeConfig(dataset_file="x", batch_size=8).micro_batch() == (1, 8)  # CPU memory policy
