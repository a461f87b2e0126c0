"""Trainer settings every recipe shares: the store and data dir, batches, held-out evaluation, early stopping,
checkpoints, experiment tracking.

`RecipeArgs` declares these fields once; each recipe's config dataclass extends it with its own method's fields
(TrlParser lists both under `python -m training <method> --help`). The rules live here once:

- `--batch_size` rows (pairs, sampled answers) per optimizer step in every recipe; `--per_device_train_batch_size`
  of them go through one forward pass, the rest is gradient accumulation (`RecipeArgs.micro_batch`). The default is
  one row per forward on CPU for SFT, reward and DPO (memory, see training.hardware.micro_batch) and the whole batch
  for KTO and online RL, whose loss needs it in one pass. `--gradient_accumulation_steps` (the flag KTO and online
  RL took before) is accepted: with it, `--batch_size` = per-device size x accumulation steps;

- evaluation on the held-out split every `eval_steps` (a fraction < 1 of the run's steps, or a step count), when
  the recipe has held-out rows; the eval metrics reach the store through StoreProgressCallback like train metrics;
- early stopping (`early_stopping_patience` evaluations without a better eval_loss) keeps a checkpoint at every
  evaluation and publishes the best one (transformers' `load_best_model_at_end`); the choice lands in the metrics;
- checkpoints in `data/runs/<run_id>/checkpoints/<stage>/checkpoint-<step>` (a round can resume from them), every
  `save_steps` steps (auto: 10 % of the run on a GPU) and/or every `save_minutes` minutes (auto on CPU: a run
  shorter than that never writes one), the last `save_total_limit` kept;
- TensorBoard event files in `data/runs/<run_id>/tb/<stage>` (`tensorboard --logdir data/runs`) and MLflow in a
  local file store `data/mlruns` (`mlflow ui --backend-store-uri data/mlruns`; experiment "tuneloop", one MLflow run
  per stage named `<run_id>/<stage>`) when `report_to` names them.
"""

import importlib.util
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import torch
from transformers import (
    EarlyStoppingCallback,
    Trainer,
    TrainerCallback,
    TrainerControl,
    TrainerState,
    TrainingArguments,
)
from transformers.integrations import TensorBoardCallback

from feedback_db.models import Snapshot
from feedback_db.vocab import TECHNIQUES
from training.base_model import DEFAULT_BASE_MODEL
from training.hardware import micro_batch, trainer_precision_kwargs

REPORT_TO = ("none", "tensorboard", "mlflow")
AUTO_GPU_SAVE_FRACTION = 0.1


@dataclass
class RecipeArgs:
    """The fields every recipe's config shares (declared once; each recipe's config dataclass extends this)."""

    db: str | None = field(default=None, metadata={"help": "Path of the store (data/tuneloop.db). Without it, "
                                                          "--dataset_file is used and nothing is registered."})
    data_dir: str = field(default="data", metadata={"help": "Data dir: versions/ and models/ live here."})
    base_model: str = field(default=DEFAULT_BASE_MODEL, metadata={"help": "Base model: the embedded default, a "
                                                                          "local HF folder or a hub id."})
    max_steps: int = field(default=-1, metadata={"help": "Stop after this many optimizer steps (-1: epochs decide)."})
    batch_size: int = field(default=4, metadata={"help": "Rows (SFT, KTO), pairs (reward, DPO) or sampled answers "
                                                         "(online RL) per optimizer step, over all processes."})
    per_device_train_batch_size: int | None = field(default=None, metadata={"help": "Of those, how many go through "
        "one forward pass; the rest of --batch_size is gradient accumulation. Default: 1 on CPU for SFT, reward and "
        "DPO (memory), the whole batch otherwise."})
    gradient_accumulation_steps: int | None = field(default=None, metadata={"help": "Alternative to --batch_size: "
        "with it, --batch_size = --per_device_train_batch_size x this (per process)."})
    logging_steps: int = field(default=1, metadata={"help": "Write progress to the store every N steps."})
    seed: int = field(default=42, metadata={"help": "Random seed."})
    eval_steps: float = field(default=0.1, metadata={"help": "Evaluate on the held-out split every N steps (< 1: "
                                                             "that fraction of the run; 0: never)."})
    early_stopping_patience: int = field(default=0, metadata={"help": "Stop after N evaluations without a lower "
                                                                      "eval_loss; the best checkpoint is published "
                                                                      "(0: off)."})
    save_steps: float = field(default=-1, metadata={"help": "Checkpoint every N steps (< 1: that fraction of the "
                                                            "run; 0: off; -1: auto, every 10 % on a GPU)."})
    save_minutes: float = field(default=5.0, metadata={"help": "Also checkpoint when this many minutes passed since "
                                                               "the last checkpoint (0: off)."})
    save_total_limit: int = field(default=2, metadata={"help": "Checkpoints kept (the newest, plus the best one with "
                                                               "early stopping)."})
    report_to: str = field(default="tensorboard", metadata={"help": "none | tensorboard | mlflow, comma-separated "
                                                                    "(data/runs/<run_id>/tb, data/mlruns)."})
    run_id: int | None = field(default=None, metadata={"help": "Run row that receives progress (set by a round)."})
    dataset_dir: str | None = field(default=None, metadata={"help": "The stage's dataset as its round built it "
                                                                    "(data/runs/<id>/data/<stage>, set by a round; "
                                                                    "default: built from the store's snapshot)."})
    # `Snapshot | str | None`: a round passes the Snapshot, the command line its JSON
    snapshot: Snapshot | str | None = field(default=None, metadata={"help": "Data snapshot as JSON (a round passes "
                                                                            "it; default: store.snapshot() now)."})

    # KTO pairs mismatched rows of one batch for its KL estimate, GRPO scores a prompt's group in one batch
    WHOLE_BATCH_PER_FORWARD: ClassVar[bool] = False

    def __post_init__(self):
        check_shared_fields(self)

    def micro_batch(self, processes: int = 1) -> tuple[int, int]:
        """(rows per forward pass, gradient accumulation steps) for `--batch_size` over `processes` processes."""
        per_device = self.per_device_train_batch_size
        if self.gradient_accumulation_steps is not None:  # TRL's own pair of flags, taken as given
            return per_device, self.gradient_accumulation_steps
        if per_device is None and self.WHOLE_BATCH_PER_FORWARD:
            per_device = max(1, self.batch_size // processes)
        return micro_batch(self.batch_size, per_device, processes)


@dataclass
class PolicyArgs(RecipeArgs):
    """What the policy recipes (sft, dpo, kto, online_rl) add: the version they start from, which weights train."""

    parent: str = field(default="active", metadata={"help": "Start from: 'active', 'base', a version name or a "
                                                            "version folder (DPO, KTO and online RL also keep it as "
                                                            "the reference)."})
    technique: str = field(default="lora", metadata={"help": "lora | full | freeze"})
    freeze_top_n: int = field(default=4, metadata={"help": "freeze: number of top decoder blocks that train."})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank (new adapters only)."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha (new adapters only)."})

    def __post_init__(self):
        super().__post_init__()
        if self.technique not in TECHNIQUES:
            raise ValueError(f"--technique must be one of {list(TECHNIQUES)}, got {self.technique!r}.")


def check_shared_fields(cfg: RecipeArgs) -> None:
    """__post_init__ checks of the shared fields; the messages name the flags. A --snapshot given as JSON (the CLI)
    becomes the Snapshot a round passes in."""
    if isinstance(cfg.snapshot, str):
        cfg.snapshot = Snapshot.from_json(cfg.snapshot)
    if cfg.gradient_accumulation_steps is not None:
        if cfg.per_device_train_batch_size is None or cfg.gradient_accumulation_steps < 1:
            raise ValueError("--gradient_accumulation_steps (>= 1) needs --per_device_train_batch_size.")
        cfg.batch_size = cfg.per_device_train_batch_size * cfg.gradient_accumulation_steps
    else:
        cfg.micro_batch()  # raises with the flags' names
    if cfg.eval_steps < 0:
        raise ValueError(f"--eval_steps must be >= 0 (0: no evaluation), got {cfg.eval_steps}.")
    if cfg.early_stopping_patience < 0:
        raise ValueError(f"--early_stopping_patience must be >= 0 (0: off), got {cfg.early_stopping_patience}.")
    if cfg.early_stopping_patience and not cfg.eval_steps:
        raise ValueError("--early_stopping_patience needs evaluations: set --eval_steps > 0.")
    if cfg.save_steps < 0 and cfg.save_steps != -1:
        raise ValueError(f"--save_steps must be -1 (auto), 0 (off) or > 0, got {cfg.save_steps}.")
    if cfg.save_minutes < 0 or cfg.save_total_limit < 1:
        raise ValueError("--save_minutes must be >= 0 and --save_total_limit >= 1.")
    unknown = [name for name in report_list(cfg.report_to) if name not in REPORT_TO]
    if unknown:
        raise ValueError(f"--report_to: unknown {unknown}; pick from {REPORT_TO} (comma-separated).")
    if "mlflow" in report_list(cfg.report_to) and importlib.util.find_spec("mlflow") is None:
        raise ValueError("--report_to mlflow: the mlflow package is not installed (pip install mlflow-skinny).")


def report_list(report_to: str) -> list[str]:
    return [name.strip() for name in report_to.split(",") if name.strip() and name.strip() != "none"]


def run_dir(data_dir: str | Path, run_id: int | None, tmp_dir: Path) -> Path:
    """Where checkpoints and event files of this stage go: the round's run folder, or beside a standalone output."""
    if run_id is None:
        return tmp_dir.with_name(tmp_dir.name + "-run")
    return Path(data_dir) / "runs" / str(run_id)


def shared_trainer_args(cfg, stage: str, folder: Path, has_eval: bool, processes: int) -> dict:
    """The TRL config fields every recipe (and the SDK) sets alike: length of the run, learning rate, batches,
    logging, evaluation, checkpoints, tracking, seed and precision."""
    per_device, accumulation = cfg.micro_batch(processes)
    return {"num_train_epochs": cfg.num_train_epochs, "max_steps": cfg.max_steps, "learning_rate": cfg.learning_rate,
            "per_device_train_batch_size": per_device, "gradient_accumulation_steps": accumulation,
            "logging_steps": cfg.logging_steps, "seed": cfg.seed,
            **trainer_kwargs(cfg, stage, folder, has_eval, per_device), **trainer_precision_kwargs()}


def trainer_kwargs(cfg, stage: str, folder: Path, has_eval: bool, per_device: int) -> dict:
    """TrainingArguments fields for evaluation, checkpoints and tracking (the recipe adds its own)."""
    save_steps = cfg.save_steps if cfg.save_steps != -1 else (AUTO_GPU_SAVE_FRACTION if torch.cuda.is_available()
                                                             else 0)
    evaluating = has_eval and cfg.eval_steps > 0
    kwargs = {"output_dir": str(folder / "checkpoints" / stage), "save_total_limit": cfg.save_total_limit,
              "save_strategy": "steps" if save_steps else "no", "eval_strategy": "steps" if evaluating else "no",
              "report_to": [name for name in report_list(cfg.report_to) if name != "tensorboard"] or "none"}
    if save_steps:
        kwargs["save_steps"] = save_steps
    if evaluating:
        kwargs.update(eval_steps=cfg.eval_steps, per_device_eval_batch_size=per_device)
    if evaluating and cfg.early_stopping_patience:  # a checkpoint at every evaluation; the best one is published
        kwargs.update(save_strategy="steps", save_steps=cfg.eval_steps, load_best_model_at_end=True,
                      metric_for_best_model="eval_loss", greater_is_better=False)
    if "mlflow" in report_list(cfg.report_to):
        kwargs["run_name"] = f"{folder.name}/{stage}"
        mlflow_env(cfg.data_dir, {"tuneloop.run_id": str(cfg.run_id), "tuneloop.stage": stage})
    return kwargs


_OUR_MLFLOW_URIS: set[str] = set()


def mlflow_env(data_dir: str | Path, tags: dict[str, str]) -> None:
    """What transformers' MLflowCallback reads: a local file store `data_dir/mlruns` (unless the user set their own
    MLFLOW_TRACKING_URI; MLflow 3 needs MLFLOW_ALLOW_FILE_STORE for a file store), experiment "tuneloop", and tags
    naming the run and stage. Set per stage: one process may train for several data dirs (SDK, tests)."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri is None or uri in _OUR_MLFLOW_URIS:
        uri = (Path(data_dir).resolve() / "mlruns").as_uri()
        _OUR_MLFLOW_URIS.add(uri)
        os.environ.update(MLFLOW_TRACKING_URI=uri, MLFLOW_ALLOW_FILE_STORE="true")
    os.environ.setdefault("MLFLOW_EXPERIMENT_NAME", "tuneloop")
    os.environ["MLFLOW_TAGS"] = json.dumps(tags)


def callbacks(cfg, stage: str, folder: Path, has_eval: bool) -> list[TrainerCallback]:
    extra: list[TrainerCallback] = []
    if "tensorboard" in report_list(cfg.report_to):
        from torch.utils.tensorboard import SummaryWriter

        extra.append(TensorBoardCallback(SummaryWriter(log_dir=str(folder / "tb" / stage))))
    if has_eval and cfg.eval_steps > 0 and cfg.early_stopping_patience:
        extra.append(EarlyStoppingCallback(early_stopping_patience=cfg.early_stopping_patience))
    save_minutes = cfg.save_minutes if cfg.save_steps == -1 or cfg.save_minutes else 0
    if save_minutes:
        extra.append(SaveEveryMinutes(save_minutes))
    return extra


def resume_checkpoint(folder: Path, stage: str) -> str | None:
    """The newest complete checkpoint of `stage` in this run folder (None: start the stage from step 0).

    The Trainer writes a checkpoint's files one by one and trainer_state.json last, so a process killed while
    saving leaves a folder without it: that one is skipped (transformers' get_last_checkpoint would pick it)."""
    complete = [path for path in (folder / "checkpoints" / stage).glob("checkpoint-*")
                if (path / "trainer_state.json").is_file() and path.name.split("-")[-1].isdigit()]
    if not complete:
        return None
    newest = str(max(complete, key=lambda path: int(path.name.split("-")[-1])))
    print(f"[tuneloop] {stage}: resuming from {newest}", flush=True)
    return newest


def finish_stage(folder: Path, stage: str, run_id: int | None) -> None:
    """After the stage's version is published its checkpoints are not needed (finished stages are not re-run)."""
    import shutil

    shutil.rmtree(folder / "checkpoints" / stage if run_id is not None else folder, ignore_errors=True)


def best_choice(trainer: Trainer) -> dict:
    """Which checkpoint was published and why (recorded in the version's metrics)."""
    state = trainer.state
    evals = [entry for entry in state.log_history if "eval_loss" in entry]
    choice = {"eval_loss": evals[-1]["eval_loss"] if evals else None, "evaluations": len(evals)}
    if trainer.args.load_best_model_at_end and state.best_model_checkpoint:
        choice.update(published_checkpoint_step=int(Path(state.best_model_checkpoint).name.split("-")[-1]),
                      best_eval_loss=state.best_metric, stopped_at_step=state.global_step,
                      published_by="best eval_loss (early stopping)")
    return choice


def last_eval(trainer: Trainer, names: dict[str, str]) -> dict:
    """The last held-out evaluation's metrics under version-metric names, e.g. {"eval_rewards/margins":
    "heldout_reward_margin"} (none when the stage did not evaluate)."""
    evals = [entry for entry in trainer.state.log_history if "eval_loss" in entry]
    return {name: evals[-1][key] for key, name in names.items() if evals and key in evals[-1]}


class SaveEveryMinutes(TrainerCallback):
    """Ask the Trainer for a checkpoint when `minutes` passed since the last one (a time-based save interval)."""

    def __init__(self, minutes: float):
        self.seconds = minutes * 60
        self.last = time.monotonic()

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        self.last = time.monotonic()

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        if time.monotonic() - self.last >= self.seconds:
            control.should_save = True
            self.last = time.monotonic()
        return control
