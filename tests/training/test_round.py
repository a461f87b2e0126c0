"""Rounds end to end: the CLI against a real store file, the runner's cancel and kill handling."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from feedback_db import FeedbackStore
from training.round import RoundConfig
from training.runner import cancel_run, poll_runs, start_round

ROOT = Path(__file__).resolve().parent.parent.parent


def wait_for(predicate, timeout_s: float = 240.0, every_s: float = 0.5):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(every_s)
    raise TimeoutError("condition not reached")


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_cli_round_sft_reward_dpo_registers_lineage(store, data_dir: Path, monkeypatch):
    command = [sys.executable, "-m", "training", "round", "--db", store.path, "--stages", "sft,reward,dpo",
               "--max_steps", "1", "--report_to", "tensorboard,mlflow"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=1700)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    versions = {v.method: v for v in store.list_versions()}
    assert set(versions) == {"sft", "reward", "dpo"}
    assert versions["sft"].parent is None  # started from the base (nothing active yet)
    assert versions["reward"].parent is None  # reward models train on the base
    assert versions["dpo"].parent == versions["sft"].name
    snapshot = versions["sft"].data_snapshot
    assert snapshot["feedback_max_id"] is not None
    assert all(v.data_snapshot == snapshot for v in versions.values())  # one snapshot for the round
    run = store.list_runs()[0]
    assert run.status == "succeeded" and run.versions == [versions[m].name for m in ("sft", "reward", "dpo")]
    stages = {m.stage for m in store.run_metrics(run.id)}
    assert {"sft", "reward", "dpo"} <= stages
    # held-out evaluation in the stages that have held-out rows (3 held-out pairs): reward and DPO
    evaluated = {m.stage for m in store.run_metrics(run.id) if "eval_loss" in m.metrics}
    assert {"reward", "dpo"} <= evaluated
    # --report_to reached every stage: TensorBoard files and one MLflow run per stage in data/mlruns
    assert all((data_dir / "runs" / str(run.id) / "tb" / stage).is_dir() for stage in ("sft", "reward", "dpo"))
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 reads a file store only when allowed
    client = MlflowClient(tracking_uri=(data_dir / "mlruns").resolve().as_uri())
    logged = client.search_runs([client.get_experiment_by_name("tuneloop").experiment_id],
                                f"tags.`tuneloop.run_id` = '{run.id}'")
    assert sorted(r.data.tags["tuneloop.stage"] for r in logged) == ["dpo", "reward", "sft"]
    gate = store.get_version(versions["dpo"].name).metrics["gate"]  # the evaluation gate ran
    # 3 held-out prompts, no reviewers and no independent judge chosen: measured, never promoted
    assert gate["judge"] is None and gate["status"] == "inconclusive" and store.active_version() is None
    assert versions["reward"].metrics["init_from"] == versions["sft"].name  # the reward model starts from SFT
    # DPO continued the SFT adapter (its randomly initialised lora_A is the SFT one, moved by one small step)
    # and trained it (non-zero gradients: every lora_B moved away from the SFT values)
    sft = load_file(f"{versions['sft'].path}/adapter_model.safetensors")
    dpo = load_file(f"{versions['dpo'].path}/adapter_model.safetensors")
    assert sft.keys() == dpo.keys()
    for key in (k for k in sft if "lora_A" in k):
        assert (dpo[key] - sft[key]).norm() < 0.1 * sft[key].norm(), key
    assert all(not torch.equal(dpo[k], sft[k]) for k in sft if "lora_B" in k)
    assert not list((data_dir / "versions").glob(".tmp-*"))


def test_round_config_goes_to_the_child_as_one_yaml_file(tmp_path: Path):
    """The app's RoundConfig, written by the runner, is what the round process parses (stage_args stays a dict)."""
    from trl import TrlParser

    from training.round import write_round_file

    cfg = RoundConfig(db=str(tmp_path / "tuneloop.db"), stages="sft,dpo", max_steps=3,
                      stage_args={"dpo": {"beta": 0.2}, "evaluate": {"gate_prompts": 4}})
    path = write_round_file(cfg, 7)
    assert path == tmp_path / "runs" / "7" / "round.yaml"
    (parsed,) = TrlParser(RoundConfig).parse_args_and_config(["--config", str(path), "--run_id", "7"])
    assert parsed == RoundConfig(**{**cfg.__dict__, "run_id": 7})
    (cli,) = TrlParser(RoundConfig).parse_args_and_config(["--db", cfg.db, "--stage_args", '{"dpo": {"beta": 0.2}}'])
    assert cli.stage_args == {"dpo": {"beta": 0.2}}
    with pytest.raises(ValueError, match="--stage_args must map stage names to flags"):
        RoundConfig(db=cfg.db, stage_args='{"dpo": 0.2}')


def started_training(store: FeedbackStore, run_id: int):
    return store.run_metrics(run_id)


def test_cancel_marks_run_cancelled_and_leaves_no_output(store, data_dir: Path):
    run_id = start_round(store, data_dir, RoundConfig(db=store.path, stages="sft", max_steps=200, evaluate=False))
    wait_for(lambda: started_training(store, run_id))
    assert cancel_run(store, run_id)
    run = wait_for(lambda: (r := store.get_run(run_id)).status in ("cancelled", "failed") and r)
    assert run.status == "cancelled"
    wait_for(lambda: poll_runs(store, data_dir) == [] and not list((data_dir / "versions").glob(".tmp-*")), 60)
    assert store.list_versions() == []


def test_killed_run_is_marked_failed_and_cleaned_up(store, data_dir: Path):
    run_id = start_round(store, data_dir, RoundConfig(db=store.path, stages="sft", max_steps=200, evaluate=False))
    wait_for(lambda: started_training(store, run_id))
    assert list((data_dir / "versions").glob(".tmp-*"))  # training writes into a temp dir
    os.killpg(store.get_run(run_id).pid, signal.SIGKILL)
    assert wait_for(lambda: poll_runs(store, data_dir), 60) == [run_id]
    run = store.get_run(run_id)
    assert run.status == "failed" and "exited without a final status" in run.error
    assert "[tuneloop] sft" in run.log_tail  # the log tail shows where it was
    assert store.list_versions() == []
    assert not list((data_dir / "versions").iterdir())  # no partial version, no stale temp dir


def test_round_refuses_when_data_is_missing(data_dir: Path):
    store = FeedbackStore(data_dir / "tuneloop.db")
    command = [sys.executable, "-m", "training", "round", "--db", store.path, "--stages", "sft,dpo"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0 and "Not enough data" in result.stderr
    run = store.list_runs()[0]
    assert run.status == "failed"
    assert "SFT needs at least" in run.error and "DPO needs at least" in run.error
    assert store.list_versions() == []


@pytest.mark.timeout(900)
def test_round_on_flipped_train_only_preferences_is_not_promoted(data_dir: Path):
    """A new user's first round: preferences imported without a held-out split (all train here), flipped."""
    from tests.training.conftest import read_jsonl
    from training.round import main as run_round

    store = FeedbackStore(data_dir / "tuneloop.db")
    for row in read_jsonl("pairs_tiny.jsonl"):
        prompt_id = store.add_prompt(row["prompt"][-1]["content"], split="train")
        store.add_preference_pair(prompt_id, row["rejected"][0]["content"], row["chosen"][0]["content"])
    gate_args = {"evaluate": {"gate_prompts": 4, "max_new_tokens": 16}}
    (name,) = run_round(RoundConfig(db=store.path, stages="dpo", max_steps=2, stage_args=gate_args))
    gate = store.get_version(name).metrics["gate"]
    assert store.active_version() is None and not store.get_version(name).metrics["promoted"]
    assert gate["eval_on_train"] and gate["status"] == "inconclusive"
    assert any("evaluated on training data" in r for r in gate["verdict"]["refusals"])
    report = json.loads((Path(store.get_version(name).path) / "gate_report.json").read_text())
    assert len(report["items"]) == 4 and report["gate"]["seed"] == 0


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_round_builds_the_preference_pairs_once(store, data_dir: Path, monkeypatch):
    """One build per split from the round's check to the reward and DPO trainers: the check counts it, the round
    writes it to data/runs/<id>/data/<stage>/ and both stages train on those files."""
    from datasets import load_from_disk

    import feedback_db.datasets
    from training.round import main as run_round

    builds, real = [], feedback_db.datasets.preference_rows

    def counted(store, snapshot=None, split="train"):
        builds.append(split)
        return real(store, snapshot, split)

    monkeypatch.setattr(feedback_db.datasets, "preference_rows", counted)
    reward, dpo = run_round(RoundConfig(db=store.path, stages="reward,dpo", max_steps=1, evaluate=False))

    assert sorted(builds) == ["heldout", "train"]
    run = store.list_runs()[0]
    for stage, name in (("reward", reward), ("dpo", dpo)):
        pairs = load_from_disk(str(data_dir / "runs" / str(run.id) / "data" / stage))
        assert store.get_version(name).metrics["train_pairs"] == len(pairs["train"]) == len(real(store)[0])
        assert store.get_version(name).config["dataset_dir"] == str(data_dir / "runs" / str(run.id) / "data" / stage)
