"""Direct preference optimisation on preference pairs, starting from (and regularised towards) the parent version.

    python -m training dpo --db data/tuneloop.db --parent v3-sft
    python -m training dpo --config training/configs/dpo.yaml
    python -m training dpo --dataset_file tests/assets/pairs_tiny.jsonl --data_dir /tmp/d   # no store

The reference is the parent version and never a second copy of the model: with LoRA, TRL keeps a frozen copy of
the parent's adapter ("ref"; the base with adapters disabled when the parent is the base); with full/freeze, the
reference log-probs are computed once from the model before its first step. `precompute_ref_log_probs` makes one
reference pass over the data up front, so each training step is a single forward/backward.
"""

from dataclasses import dataclass, field

from datasets import DatasetDict
from trl import DPOConfig, DPOTrainer

from feedback_db.models import Snapshot
from training import run_args
from training.stage_data import load_stage_dataset
from training.stage_run import StageRun

DEFAULT_LR = {"lora": 1e-4, "full": 1e-6, "freeze": 1e-5}


@dataclass
class DPORecipeConfig(run_args.PolicyArgs):
    dataset_file: str | None = field(default=None, metadata={"help": "JSONL of prompt/chosen/rejected rows, used "
                                                                     "instead of the store's preference pairs."})
    beta: float = field(default=0.1, metadata={"help": "KL strength towards the reference (parent)."})
    loss_type: str = field(default="sigmoid", metadata={"help": "DPO loss: sigmoid | ipo | hinge | robust | ..."})
    num_train_epochs: float = field(default=2.0, metadata={"help": "Epochs over the pairs."})
    learning_rate: float | None = field(default=None, metadata={"help": "Default: 1e-4 lora, 1e-6 full, 1e-5 "
                                                                        "freeze."})
    max_length: int = field(default=1024, metadata={"help": "Prompt + answer tokens kept per sequence."})

    def __post_init__(self):
        super().__post_init__()
        if self.db is None and self.dataset_file is None:
            raise ValueError("Pass --db (the store) or --dataset_file (a JSONL file).")
        if self.beta <= 0:
            raise ValueError(f"--beta must be > 0, got {self.beta}.")
        if self.learning_rate is None:
            self.learning_rate = DEFAULT_LR[self.technique]


def preference_pairs(cfg: DPORecipeConfig, store, snapshot: Snapshot | None) -> DatasetDict:
    """Training pairs, plus the store's held-out pairs (evaluated every --eval_steps: loss, reward accuracy and
    margins) when there are some."""
    pairs = load_stage_dataset(cfg, store, snapshot, "dpo")
    if len(pairs["train"]) == 0:
        raise ValueError("No preference pairs: compare or rank answers in the review tab first.")
    return pairs


def main(cfg: DPORecipeConfig) -> str:
    # 1. Processes, store, snapshot, pairs: rank 0 reads the store (or the round's build) and writes the pairs, every
    #    rank loads that copy
    run = StageRun.begin(cfg, "dpo")
    pairs = run.materialise(lambda: preference_pairs(cfg, run.store, run.snapshot))
    dataset, heldout = pairs["train"], pairs.get("heldout")

    # 2. Trainer config, then the policy (ZeRO-3 / FSDP decide how to load it from the config): the parent's
    #    weights, trainable; the parent is also the reference
    args = DPOConfig(
        beta=cfg.beta,
        loss_type=[cfg.loss_type],
        lr_scheduler_type="cosine",
        max_length=cfg.max_length,
        precompute_ref_log_probs=True,  # one reference pass up front, no reference forward in the training steps
        include_num_input_tokens_seen=True,
        **run.trainer_args(heldout is not None),
    )
    model = run.policy()

    # 3. Trainer
    trainer = DPOTrainer(model=model, args=args, train_dataset=dataset, processing_class=run.tokenizer,
                         eval_dataset=heldout, callbacks=run.callbacks(heldout is not None))

    # 4. Train, save (without TRL's frozen "ref" adapter copy; rank 0 writes), register
    result = run.train(trainer)
    run.save(trainer)
    logged = [entry for entry in trainer.state.log_history if "rewards/margins" in entry]
    metrics = run.metrics(trainer, result, {
        "train_pairs": len(dataset),
        "pairs_per_s": len(dataset) * cfg.num_train_epochs / result.metrics["train_runtime"]
        if cfg.max_steps < 0 else None,
        "final_reward_accuracy": logged[-1]["rewards/accuracies"] if logged else None,
        "final_reward_margin": logged[-1]["rewards/margins"] if logged else None,
        **run_args.last_eval(trainer, {"eval_rewards/accuracies": "heldout_reward_accuracy",
                                       "eval_rewards/margins": "heldout_reward_margin"}),
    })
    return run.publish(trainer, metrics, cfg.technique, run.parent_name)
