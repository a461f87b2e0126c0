"""What every recipe's `main(cfg)` does around its own TRL trainer, written once: the stage's set-up, the TRL config
fields the recipes set alike, their callbacks, and the tail (train from the newest checkpoint, save, the shared
metrics, publish). A recipe still reads top to bottom; what differs between methods stays in the recipe:

    run = StageRun.begin(cfg, "dpo")          # processes, store, snapshot, base model, parent, tokenizer, folders
    pairs = run.materialise(lambda: preference_pairs(cfg, run.store, run.snapshot))
    args = DPOConfig(beta=cfg.beta, ..., **run.trainer_args(has_eval))
    trainer = DPOTrainer(model=run.policy(), args=args, ..., callbacks=run.callbacks(has_eval))
    result = run.train(trainer)
    run.save(trainer)
    metrics = run.metrics(trainer, result, {"train_pairs": len(pairs["train"]), ...})
    return run.publish(trainer, metrics, cfg.technique, run.parent_name)

Under several processes (training/distributed.py) rank 0 reads the store and every rank follows its answers.
"""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from accelerate import PartialState
from datasets import Dataset, DatasetDict
from peft import PeftModel
from transformers import PreTrainedModel, PreTrainedTokenizerBase, Trainer, TrainerCallback, set_seed
from transformers.trainer_utils import TrainOutput

from feedback_db.models import Snapshot
from feedback_db.store import FeedbackStore
from training import run_args
from training.base_model import load_tokenizer, resolve_base_model
from training.callbacks import StoreProgressCallback
from training.distributed import from_main, materialise, open_store, start
from training.versions import load_trainable_policy, new_tmp_dir, publish_version, resolve_parent, stage_data_dir


@dataclass
class StageRun:
    cfg: run_args.RecipeArgs
    stage: str
    state: PartialState
    store: FeedbackStore | None
    snapshot: Snapshot | None
    base_model: str
    parent_name: str | None  # policy stages: the version they start from (None: the base)
    parent_dir: Path | None
    tokenizer: PreTrainedTokenizerBase
    tmp_dir: Path  # the version being written; renamed into versions/ by publish
    folder: Path  # checkpoints and event files (the round's run folder)

    @classmethod
    def begin(cls, cfg: run_args.RecipeArgs, stage: str) -> "StageRun":
        """Join the processes; rank 0 opens the store and decides snapshot, base model and parent for every rank."""
        state = start()
        store = open_store(cfg.db)
        snapshot = from_main(lambda: cfg.snapshot or (store.snapshot() if store else None))
        base_model = from_main(lambda: resolve_base_model(cfg.base_model, cfg.data_dir))
        parent_name, parent_dir = None, None
        if isinstance(cfg, run_args.PolicyArgs):
            parent_name, parent_dir = from_main(lambda: resolve_parent(store, cfg.parent))
        tokenizer = load_tokenizer(base_model)
        tmp_dir = new_tmp_dir(cfg.data_dir, stage)
        return cls(cfg, stage, state, store, snapshot, base_model, parent_name, parent_dir, tokenizer, tmp_dir,
                   run_args.run_dir(cfg.data_dir, cfg.run_id, tmp_dir))

    def materialise(self, build: Callable[[], Dataset | DatasetDict]) -> Dataset | DatasetDict:
        """Rank 0 builds the stage's rows and writes them beside the output; every rank loads that one copy."""
        return materialise(build, stage_data_dir(self.tmp_dir))

    def trainer_args(self, has_eval: bool) -> dict:
        """The TRL config fields every recipe sets alike (run_args.shared_trainer_args)."""
        return run_args.shared_trainer_args(self.cfg, self.stage, self.folder, has_eval, self.state.num_processes)

    def policy(self) -> PreTrainedModel:
        """The parent's weights, trainable for the technique. Seeded first: a new LoRA's random init is part of the
        run. Call it after building the TRL config (ZeRO-3 / FSDP decide from the config how weights load)."""
        cfg = self.cfg
        set_seed(cfg.seed)
        return load_trainable_policy(self.base_model, self.parent_dir, cfg.technique, cfg.lora_r, cfg.lora_alpha,
                                     cfg.freeze_top_n)

    def callbacks(self, has_eval: bool) -> list[TrainerCallback]:
        """Progress into the store, plus TensorBoard, early stopping and timed checkpoints as configured."""
        return [StoreProgressCallback(self.store, self.cfg.run_id, self.stage),
                *run_args.callbacks(self.cfg, self.stage, self.folder, has_eval)]

    def train(self, trainer: Trainer) -> TrainOutput:
        """Train, from the stage's newest checkpoint when a resumed round left one."""
        return trainer.train(resume_from_checkpoint=run_args.resume_checkpoint(self.folder, self.stage))

    def save(self, trainer: Trainer) -> None:
        """The trained weights into the output folder (every rank takes part, rank 0 writes), without TRL's frozen
        "ref" copy of the parent adapter (DPO, KTO, online RL with LoRA)."""
        if isinstance(trainer.model, PeftModel) and "ref" in trainer.model.peft_config:
            trainer.model.delete_adapter("ref")
        trainer.save_model(str(self.tmp_dir))

    def metrics(self, trainer: Trainer, result: TrainOutput, recipe_metrics: dict) -> dict:
        """The metrics every stage reports around the recipe's own."""
        return {"train_loss": result.training_loss, "train_runtime_s": result.metrics["train_runtime"],
                **recipe_metrics, "steps": trainer.state.global_step, "processes": self.state.num_processes}

    def publish(self, trainer: Trainer, metrics: dict, technique: str, parent: str | None) -> str:
        """Register the saved version with `metrics` and which checkpoint was published, then drop the stage's
        checkpoints. Returns the version name (the folder, without a store)."""
        metrics = {**metrics, **run_args.best_choice(trainer)}
        name = publish_version(self.store, self.tmp_dir, method=self.stage, technique=technique, parent=parent,
                               base_model=self.base_model, config=self.cfg, data_snapshot=self.snapshot,
                               metrics=metrics)
        run_args.finish_stage(self.folder, self.stage, self.cfg.run_id)
        return name
