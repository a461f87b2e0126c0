"""KTO on unpaired thumbs up/down, starting from (and regularised towards) the parent version.

    python -m training kto --db data/tuneloop.db --parent v3-sft
    python -m training kto --config training/configs/kto.yaml
    python -m training kto --dataset_file tests/assets/kto_tiny.jsonl --data_dir /tmp/d   # no store

Rows are prompt/completion/label (thumbs majority + imported labels). The desirable/undesirable weights are set
from the label balance so that weight x count is equal for both sides (TRL recommends a ratio in [1, 4/3]).
The reference is the parent version, as in dpo.py: a frozen copy of the parent's adapter with LoRA, or log-probs
precomputed from the model before its first step with full/freeze; never a second copy of the model.
"""

from dataclasses import dataclass, field

from datasets import DatasetDict
from trl import KTOConfig, KTOTrainer

from feedback_db.models import Snapshot
from training import run_args
from training.stage_data import load_stage_dataset
from training.stage_run import StageRun

DEFAULT_LR = {"lora": 1e-4, "full": 1e-6, "freeze": 1e-5}


@dataclass
class KTORecipeConfig(run_args.PolicyArgs):
    dataset_file: str | None = field(default=None, metadata={"help": "JSONL of prompt/completion/label rows, "
                                                                     "used instead of the store's thumbs."})
    beta: float = field(default=0.1, metadata={"help": "KL strength towards the reference (parent)."})
    loss_type: str = field(default="kto", metadata={"help": "kto | apo_zero_unpaired"})
    num_train_epochs: float = field(default=2.0, metadata={"help": "Epochs over the labelled answers."})
    learning_rate: float | None = field(default=None, metadata={"help": "Default: 1e-4 lora, 1e-6 full, 1e-5 "
                                                                        "freeze."})
    max_length: int = field(default=1024, metadata={"help": "Prompt + answer tokens kept per sequence."})

    WHOLE_BATCH_PER_FORWARD = True  # see run_args.RecipeArgs

    def __post_init__(self):
        super().__post_init__()
        if self.db is None and self.dataset_file is None:
            raise ValueError("Pass --db (the store) or --dataset_file (a JSONL file).")
        if self.beta <= 0:
            raise ValueError(f"--beta must be > 0, got {self.beta}.")
        if self.learning_rate is None:
            self.learning_rate = DEFAULT_LR[self.technique]


def labelled_answers(cfg: KTORecipeConfig, store, snapshot: Snapshot | None) -> DatasetDict:
    """Training rows, plus held-out rows evaluated every --eval_steps (loss, KL, reward margins) when the store has
    some: thumbs and labels on held-out prompts, and held-out preference pairs as one up and one down answer."""
    # rows come grouped by prompt and label; TRL's KL term pairs neighbours (in training and evaluation)
    rows = DatasetDict({split: rows.shuffle(seed=cfg.seed)
                        for split, rows in load_stage_dataset(cfg, store, snapshot, "kto").items()})
    desirable = sum(rows["train"]["label"])
    if not desirable or desirable == len(rows["train"]):
        raise ValueError(f"KTO needs thumbs up and thumbs down; found {desirable} up, "
                         f"{len(rows['train']) - desirable} down.")
    return rows


def main(cfg: KTORecipeConfig) -> str:
    # 1. Processes, store, snapshot, labelled answers: rank 0 reads the store (or the round's build) and writes the
    #    rows, every rank loads that copy
    run = StageRun.begin(cfg, "kto")
    rows = run.materialise(lambda: labelled_answers(cfg, run.store, run.snapshot))
    dataset, heldout = rows["train"], rows.get("heldout")
    desirable = sum(dataset["label"])
    undesirable = len(dataset) - desirable

    # 2. Trainer config, then the policy (ZeRO-3 / FSDP decide how to load it from the config): the parent's
    #    weights, trainable; the parent is also the reference
    args = KTOConfig(
        beta=cfg.beta,
        loss_type=cfg.loss_type,
        desirable_weight=min(1.0, undesirable / desirable),  # weight x count equal on both sides
        undesirable_weight=min(1.0, desirable / undesirable),
        lr_scheduler_type="cosine",
        max_length=cfg.max_length,
        precompute_ref_log_probs=True,  # one reference pass up front, no reference forward in the training steps
        include_num_input_tokens_seen=True,
        **run.trainer_args(heldout is not None),
    )
    model = run.policy()

    # 3. Trainer
    trainer = KTOTrainer(model=model, args=args, train_dataset=dataset, processing_class=run.tokenizer,
                         eval_dataset=heldout, callbacks=run.callbacks(heldout is not None))

    # 4. Train, save (without TRL's frozen "ref" adapter copy; rank 0 writes), register
    result = run.train(trainer)
    run.save(trainer)
    logged = [entry for entry in trainer.state.log_history if "kl" in entry]  # train rows (eval rows: eval_kl)
    metrics = run.metrics(trainer, result, {
        "desirable": desirable,
        "undesirable": undesirable,
        "desirable_weight": args.desirable_weight,
        "undesirable_weight": args.undesirable_weight,
        "final_kl": logged[-1]["kl"] if logged else None,
        **run_args.last_eval(trainer, {"eval_kl": "heldout_kl", "eval_rewards/margins": "heldout_reward_margin"}),
    })
    return run.publish(trainer, metrics, cfg.technique, run.parent_name)
