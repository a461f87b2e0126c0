"""A training round: the stages the admin picked, chained, in this one process, then the evaluation gate.

    python -m training round --db data/tuneloop.db --stages sft,reward,dpo
    torchrun --nproc_per_node 2 -m training round --db data/tuneloop.db --stages sft,reward,dpo   # 2 processes
    python -m training round --db data/tuneloop.db --stages sft,reward,online_rl --technique lora
    python -m training round --config training/configs/round.yaml
    python -m training round --db data/tuneloop.db --resume 7     # continue a cancelled/interrupted/failed run

Each policy stage (sft, dpo, kto, online_rl) starts from the previous policy stage's version (the first from
`--parent`, default the active version). The reward stage trains a reward model, starting from the round's
previous LoRA policy stage (its SFT adapter) when there is one, else from the base; later online_rl stages use it.
A round whose online_rl stage has no reward model (none trained before it, none in the store) is refused before
the first stage. All stages read the same data snapshot, taken once at the start (by rank 0 when several processes
train: see training/distributed.py).
The evaluation gate (training.evaluate) then judges the final policy version; a model trained in this round never
judges it. Gate flags go in --stage_args under "evaluate", e.g. '{"evaluate": {"judge_model": "v2-reward"}}'.

`RoundConfig` is the one request type: the app builds it, `training.runner.start_round` writes it to
data/runs/<id>/round.yaml and starts `python -m training round --config <that file>`; SIGTERM (cancel) marks the run
cancelled. `RECIPES` maps each stage to its recipe module and config class (`python -m training <stage>` uses it too).
"""

import gc
import importlib
import json
import os
import shutil
import signal
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from feedback_db.datasets import Builds, data_check
from feedback_db.models import Snapshot
from feedback_db.vocab import POLICY_STAGES, STAGES, TECHNIQUES
from training.base_model import DEFAULT_BASE_MODEL
from training.distributed import from_main, open_store, say, start
from training.stage_data import stage_dataset_dir, write_stage_datasets

# stage -> (recipe module, its config dataclass); each module has `main(cfg) -> version name`
RECIPES = {
    "sft": ("training.recipes.sft", "SFTRecipeConfig"),
    "reward": ("training.recipes.reward", "RewardRecipeConfig"),
    "dpo": ("training.recipes.dpo", "DPORecipeConfig"),
    "kto": ("training.recipes.kto", "KTORecipeConfig"),
    "online_rl": ("training.recipes.online_rl", "OnlineRLRecipeConfig"),
}
assert tuple(RECIPES) == STAGES
ROUND_FILE = "round.yaml"  # data/runs/<id>/round.yaml: the round's config (the child reads it with --config)
SNAPSHOT_FILE = "snapshot.json"


class RunCancelled(BaseException):
    """Raised in the main thread by SIGTERM; a BaseException so no `except Exception` in a trainer swallows it."""


@dataclass
class RoundConfig:
    db: str = field(metadata={"help": "Path of the store (data/tuneloop.db)."})
    data_dir: str | None = field(default=None, metadata={"help": "Data dir (default: the folder of --db)."})
    stages: str = field(default="sft,reward,dpo", metadata={"help": f"Comma-separated stages from {STAGES}."})
    technique: str = field(default="lora", metadata={"help": "lora | full | freeze, for every policy stage."})
    base_model: str = field(default=DEFAULT_BASE_MODEL, metadata={"help": "Base model name, folder or hub id."})
    parent: str = field(default="active", metadata={"help": "First policy stage starts from: 'active', 'base' or "
                                                            "a version name."})
    reward_model: str | None = field(default=None, metadata={"help": "Reward version for online_rl/evaluation "
                                                                     "when the round has no reward stage "
                                                                     "(default: the newest reward version)."})
    max_steps: int = field(default=-1, metadata={"help": "Cap every stage at this many steps (-1: recipe "
                                                         "defaults)."})
    num_train_epochs: float | None = field(default=None, metadata={"help": "Epochs for every stage (default: "
                                                                           "recipe defaults)."})
    # `dict | str | None` like TrainingArguments' dict fields: the CLI passes a JSON string, YAML and Python a dict
    stage_args: dict | str | None = field(default_factory=dict, metadata={
        "help": 'Per-stage recipe flags as JSON, e.g. \'{"dpo": {"beta": 0.2}}\' (a mapping in --config YAML).'})
    evaluate: bool = field(default=True, metadata={"help": "Run the evaluation gate after the round."})
    auto_promote: bool = field(default=True, metadata={"help": "Let the gate make the new version active when "
                                                               "its verdict passes with no refusal (see "
                                                               "training.gate: never on training data; automatic "
                                                               "judges and online RL need their own gate flags)."})
    report_to: str = field(default="tensorboard", metadata={"help": "Every stage's experiment tracking: none | "
                                                                    "tensorboard | mlflow (comma-separated)."})
    run_id: int | None = field(default=None, metadata={"help": "Existing run row (set by the runner)."})
    username: str = field(default="admin", metadata={"help": "Who started the round (new run rows only)."})
    include_viewer_chat: bool = field(default=False, metadata={"help": "Train on viewers' chat thumbs and arena "
                                                                       "votes too (off: only reviewers' and "
                                                                       "admins' feedback)."})
    resume: int | None = field(default=None, metadata={"help": "Resume this run (cancelled, interrupted or "
                                                               "failed) with its saved round.yaml/snapshot.json; "
                                                               "finished stages are kept, the interrupted one "
                                                               "continues from its newest checkpoint."})

    def __post_init__(self):
        unknown = [s for s in self.stage_list if s not in STAGES]
        if not self.stage_list or unknown:
            raise ValueError(f"--stages: unknown {unknown}; pick from {STAGES}.")
        if self.technique not in TECHNIQUES:
            raise ValueError(f"--technique must be lora, full or freeze, got {self.technique!r}.")
        if isinstance(self.stage_args, str):
            try:
                self.stage_args = json.loads(self.stage_args)
            except json.JSONDecodeError as err:
                raise ValueError(f"--stage_args must be a JSON object: {err}") from None
        self.stage_args = self.stage_args or {}
        if not isinstance(self.stage_args, dict) or not all(isinstance(v, dict) for v in self.stage_args.values()):
            raise ValueError('--stage_args must map stage names to flags, e.g. {"dpo": {"beta": 0.2}}.')
        if self.data_dir is None:
            self.data_dir = str(Path(self.db).resolve().parent)

    @property
    def stage_list(self) -> list[str]:
        return [s.strip() for s in self.stages.split(",") if s.strip()]


def stage_hyperparameters(stages: list[str], technique: str, learning_rate: float | None = None, lora_r: int = 16,
                          freeze_top_n: int = 4, beta: float = 0.1) -> dict[str, dict]:
    """`stage_args` for the admin form's shared hyper-parameters, each given to the stages whose recipe takes it."""
    stage_args: dict[str, dict] = {}
    for stage in stages:
        args = stage_args.setdefault(stage, {})
        if learning_rate:
            args["learning_rate"] = float(learning_rate)
        if technique == "lora" or stage == "reward":
            args["lora_r"] = lora_r
        if technique == "freeze" and stage != "reward":
            args["freeze_top_n"] = freeze_top_n
        if stage in ("dpo", "kto"):
            args["beta"] = beta
    return stage_args


def stage_config(cfg: RoundConfig, stage: str, snapshot: Snapshot, run_id: int, parent: str, reward_model: str | None):
    """The recipe config of one stage: the round's shared settings + that stage's --stage_args."""
    module_name, config_name = RECIPES[stage]
    module = importlib.import_module(module_name)
    values = {"db": cfg.db, "data_dir": cfg.data_dir, "base_model": cfg.base_model, "run_id": run_id,
              "snapshot": snapshot, "dataset_dir": str(stage_dataset_dir(run_folder(cfg, run_id), stage)),
              "max_steps": cfg.max_steps, "report_to": cfg.report_to}
    if cfg.num_train_epochs is not None:
        values["num_train_epochs"] = cfg.num_train_epochs
    if stage in POLICY_STAGES:
        values.update(parent=parent, technique=cfg.technique)
    if stage == "online_rl":
        values["reward_model"] = reward_model
    if stage == "reward" and parent not in (None, "base") and cfg.technique == "lora":
        values["init_from"] = parent
    values.update(cfg.stage_args.get(stage, {}))
    return module, getattr(module, config_name)(**values)


def latest_reward_version(store) -> str | None:
    rewards = [v for v in store.list_versions() if v.method == "reward"]
    return rewards[-1].name if rewards else None


def checked_snapshot(store, cfg: RoundConfig) -> tuple[Snapshot, Builds]:
    """One snapshot for every stage and the one build of its datasets; SystemExit naming what is missing when a stage
    lacks data (or a reward model). The check counts the rows the stages will train on."""
    snapshot = store.snapshot(include_viewer_chat=cfg.include_viewer_chat)
    builds = Builds(store, snapshot)
    problems = [problem for stage in cfg.stage_list for problem in data_check(store, stage, snapshot, builds).problems]
    problems += reward_model_problems(cfg, store)
    if problems:
        raise SystemExit("Not enough data for this round:\n" + "\n".join(problems))
    return snapshot, builds


RESUMABLE = ("failed", "cancelled", "interrupted")


def resumed(store, cfg: RoundConfig) -> tuple[RoundConfig, Snapshot, list[str]]:
    """The saved config and snapshot of run `cfg.resume` and the versions its finished stages registered."""
    run = store.get_run(cfg.resume)
    if run.status not in (*RESUMABLE, "queued"):  # queued: training.runner.resume_round started this process
        raise ValueError(f"--resume {cfg.resume}: the run is {run.status}; only {', '.join(RESUMABLE)} runs resume.")
    folder = run_folder(cfg, cfg.resume)
    if not (folder / ROUND_FILE).is_file() or not (folder / SNAPSHOT_FILE).is_file():
        raise ValueError(f"--resume {cfg.resume}: {folder} holds no {ROUND_FILE}/{SNAPSHOT_FILE} (it failed before "
                         "training began, or predates resumable rounds); start a new round.")
    saved = yaml.safe_load((folder / ROUND_FILE).read_text())
    saved.update(db=cfg.db, data_dir=cfg.data_dir, run_id=cfg.resume, resume=cfg.resume)
    snapshot = Snapshot.from_json((folder / SNAPSHOT_FILE).read_text())
    write_stage_datasets(Builds(store, snapshot), RoundConfig(**saved).stage_list, folder)  # those not written yet
    return RoundConfig(**saved), snapshot, list(run.versions)


def write_round_file(cfg: RoundConfig, run_id: int) -> Path:
    """data/runs/<id>/round.yaml: the config a round process reads with --config (and `--resume` reads again)."""
    folder = run_folder(cfg, run_id)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / ROUND_FILE
    path.write_text(yaml.safe_dump({**asdict(cfg), "run_id": run_id, "resume": None}, sort_keys=False))
    return path


def saved_snapshot(store, cfg: RoundConfig, run_id: int) -> Snapshot:
    """A new round's snapshot, written with its config to data/runs/<id>/ so `--resume` reads the same data, and its
    stages' datasets (built once, by the check) to data/runs/<id>/data/<stage>/, where the stages read them."""
    snapshot, builds = checked_snapshot(store, cfg)
    write_round_file(cfg, run_id)
    write_stage_datasets(builds, cfg.stage_list, run_folder(cfg, run_id))
    (run_folder(cfg, run_id) / SNAPSHOT_FILE).write_text(snapshot.to_json())
    return snapshot


def run_folder(cfg: RoundConfig, run_id: int) -> Path:
    return Path(cfg.data_dir) / "runs" / str(run_id)


def main(cfg: RoundConfig) -> list[str]:
    from training.runner import log_tail

    # Under torchrun/accelerate every rank runs this; rank 0 alone opens the store, takes the snapshot, owns the run
    # row and runs the evaluation gate, and each stage's version name comes back to every rank from its publish.
    state = start()
    store = open_store(cfg.db)
    snapshot, versions = None, []
    if cfg.resume is not None:
        cfg, snapshot, versions = from_main(lambda: resumed(store, cfg))
    stages = cfg.stage_list
    run_id = from_main(lambda: cfg.run_id or store.create_run(config=asdict(cfg), stages=stages,
                                                             username=cfg.username))

    def record(**fields) -> None:
        if store is not None:
            store.update_run(run_id, **fields)

    def on_sigterm(signum, frame):
        raise RunCancelled()

    signal.signal(signal.SIGTERM, on_sigterm)
    record(status="running", pid=os.getpid())
    try:
        # 1. One snapshot for every stage (and every rank); refuse early when data is missing
        try:
            if snapshot is None:
                snapshot = from_main(lambda: saved_snapshot(store, cfg, run_id))
        except SystemExit as refused:
            print(f"[tuneloop] {refused}", flush=True)
            record(status="failed", error=str(refused))
            raise
        say(f"[tuneloop] round {run_id} rank {state.process_index}: snapshot {snapshot.to_json()}")

        # 2. The stages, each starting from the previous policy version
        parent = cfg.parent
        first_policy = True
        reward_model = cfg.reward_model or (None if "reward" in stages else from_main(
            lambda: latest_reward_version(store)))
        for stage, name in zip(stages, versions, strict=False):  # a resumed run keeps its finished stages
            say(f"[tuneloop] round {run_id}: stage {stage} already done ({name})")
            reward_model, parent = (name, parent) if stage == "reward" else (reward_model, name)
            first_policy = first_policy and stage == "reward"
        for stage in stages[len(versions):]:
            say(f"[tuneloop] round {run_id}: stage {stage} (parent {parent})")
            record(stage=stage)
            # the reward stage starts from a policy this round trained, never from the round's --parent
            stage_parent = None if stage == "reward" and first_policy else parent
            module, stage_cfg = stage_config(cfg, stage, snapshot, run_id, stage_parent, reward_model)
            name = module.main(stage_cfg)
            versions.append(name)
            record(versions=versions)
            if stage == "reward":
                reward_model = name
            else:
                parent, first_policy = name, False
            gc.collect()

        # 3. Evaluation gate on the final policy version (rank 0; the other ranks wait)
        if cfg.evaluate and parent not in (cfg.parent, None):
            from training.evaluate import EvaluateConfig
            from training.evaluate import main as evaluate

            record(stage="evaluate")
            gate_args = cfg.stage_args.get("evaluate", {})
            from_main(lambda: evaluate(EvaluateConfig(**{
                "db": cfg.db, "data_dir": cfg.data_dir, "version": parent, "base_model": cfg.base_model,
                "promote": cfg.auto_promote, **gate_args, "exclude_judges": ",".join(versions)})))
        record(status="succeeded", stage="done", versions=versions)
        print(f"[tuneloop] round {run_id} succeeded: {versions}", flush=True)
        return versions
    except RunCancelled:
        print(f"[tuneloop] round {run_id} cancelled", flush=True)
        record(status="cancelled", versions=versions)
        raise SystemExit(143) from None
    except SystemExit:
        raise
    except BaseException as error:
        traceback.print_exc()
        record(status="failed", error=f"{type(error).__name__}: {error}",
               log_tail=log_tail(cfg.data_dir, run_id) or traceback.format_exc()[-4000:], versions=versions)
        raise
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        remove_own_tmp_dirs(cfg.data_dir)


def reward_model_problems(cfg: RoundConfig, store) -> list[str]:
    """An online_rl stage needs a reward model: one trained before it in this round, --reward_model, or one in the
    store. Refused before the first stage rather than after hours of SFT."""
    stages = cfg.stage_list
    if "online_rl" not in stages or ("reward" in stages and stages.index("reward") < stages.index("online_rl")):
        return []
    if cfg.reward_model:
        version = store.get_version(cfg.reward_model)
        if (version and version.method == "reward") or (not version and Path(cfg.reward_model).is_dir()):
            return []
        return [f"--reward_model {cfg.reward_model}: no reward version of that name and no such folder"]
    if latest_reward_version(store):
        return []
    return ["Online RL needs a reward model: this round trains none before online_rl and the store has no reward "
            "version. Put 'reward' before 'online_rl' in the stages, or train one first (python -m training reward)"]


def remove_own_tmp_dirs(data_dir: str) -> None:
    """Outputs this process left unfinished (a failed or cancelled stage)."""
    for path in (Path(data_dir) / "versions").glob(f".tmp-{os.getpid()}-*"):
        shutil.rmtree(path, ignore_errors=True)
