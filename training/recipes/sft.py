"""Supervised fine-tuning on demonstrations and corrections (the store's SFT dataset).

    python -m training sft --db data/tuneloop.db --technique lora
    python -m training sft --config training/configs/sft_lora.yaml
    python -m training sft --dataset_file tests/assets/sft_tiny.jsonl --data_dir /tmp/d   # no store

Techniques: `lora` (PEFT adapter, default), `full` (all weights), `freeze` (feature-based: only the top
`--freeze_top_n` decoder blocks, the final norm and an untied LM head train; the input embedding stays frozen).
Speed: padding-free batches (no pad tokens are computed), no gradient checkpointing, fp32 on CPU / bf16 on GPU.
The SDK (training/sdk.py) trains through `sft_args` + `sft_trainer` too, one pass per fine_tune() call.
"""

from dataclasses import dataclass, field
from pathlib import Path

from datasets import Dataset, DatasetDict
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler
from transformers import PreTrainedModel, PreTrainedTokenizerBase, TrainerCallback
from trl import SFTConfig, SFTTrainer

from feedback_db.models import Snapshot
from training import run_args
from training.stage_data import load_stage_dataset
from training.stage_run import StageRun

DEFAULT_LR = {"lora": 2e-4, "full": 1e-5, "freeze": 5e-5}


@dataclass
class SFTRecipeConfig(run_args.PolicyArgs):
    dataset_file: str | None = field(default=None, metadata={"help": "JSONL of prompt/completion or messages rows, "
                                                                     "used instead of the store's SFT dataset."})
    num_train_epochs: float = field(default=3.0, metadata={"help": "Epochs over the SFT dataset."})
    learning_rate: float | None = field(default=None, metadata={"help": "Default: 2e-4 lora, 1e-5 full, 5e-5 "
                                                                        "freeze."})
    max_length: int = field(default=1024, metadata={"help": "Longer rows are dropped (and counted)."})

    def __post_init__(self):
        super().__post_init__()
        if self.db is None and self.dataset_file is None:
            raise ValueError("Pass --db (the store) or --dataset_file (a JSONL file).")
        if self.learning_rate is None:
            self.learning_rate = DEFAULT_LR[self.technique]


def sft_rows(cfg: SFTRecipeConfig, store, snapshot: Snapshot | None, tokenizer) -> DatasetDict:
    """prompt/completion rows (the loss covers only the answer); rows longer than --max_length apart."""
    data = load_stage_dataset(cfg, store, snapshot, "sft")
    splits = sft_rows_split(data["train"], tokenizer, cfg.max_length)
    if "heldout" in data:
        splits["heldout"] = sft_rows_split(data["heldout"], tokenizer, cfg.max_length)["train"]
    return DatasetDict(splits)


def sft_rows_split(dataset, tokenizer, max_length: int) -> dict:
    """{"train": rows that fit, "too_long": the others (only when there are some)}."""
    if "messages" in dataset.column_names:
        dataset = dataset.map(lambda row: {"prompt": row["messages"][:-1], "completion": row["messages"][-1:]},
                              remove_columns=["messages"])
    if len(dataset) == 0:
        raise ValueError("The SFT dataset is empty: import demonstrations or add corrections first.")
    lengths = [len(tokenizer.apply_chat_template(row["prompt"] + row["completion"])["input_ids"]) for row in dataset]
    too_long = [i for i, n in enumerate(lengths) if n > max_length]
    splits = {"train": dataset.select([i for i, n in enumerate(lengths) if n <= max_length])}
    if too_long:  # `datasets` cannot load back an empty split
        splits["too_long"] = dataset.select(too_long)
    return splits


def sft_args(cfg: SFTRecipeConfig, folder: Path, has_eval: bool, processes: int = 1, **overrides) -> SFTConfig:
    """The recipe's SFTConfig; the SDK adds `overrides` (its samples in the given order, no progress bar)."""
    return SFTConfig(**{
        "lr_scheduler_type": "cosine",
        "warmup_steps": 0,
        "max_length": None,  # padding-free does not truncate; too-long rows were dropped by sft_rows
        "padding_free": True,  # flattened batches with position_ids: no compute spent on pad tokens
        "include_num_input_tokens_seen": True,
        **run_args.shared_trainer_args(cfg, "sft", folder, has_eval, processes),
        **overrides,
    })


def sft_trainer(args: SFTConfig, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, dataset: Dataset,
                heldout: Dataset | None = None, callbacks: list[TrainerCallback] | None = None,
                optimizers: tuple[Optimizer | None, LRScheduler | None] = (None, None)) -> SFTTrainer:
    """TRL's SFTTrainer on `dataset`: prompt/completion rows (the recipe), or input_ids/labels rows with -100 on the
    untrained tokens (the SDK, which also brings its own optimizer, kept between its calls)."""
    return SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                      eval_dataset=heldout, callbacks=callbacks, optimizers=optimizers)


def main(cfg: SFTRecipeConfig) -> str:
    # 1. Processes, store, snapshot, data: rank 0 reads the store (or the round's build) and writes the rows, every
    #    rank loads that copy
    run = StageRun.begin(cfg, "sft")
    data = run.materialise(lambda: sft_rows(cfg, run.store, run.snapshot, run.tokenizer))
    dataset, dropped, heldout = data["train"], len(data.get("too_long", [])), data.get("heldout")
    if dropped:
        print(f"[tuneloop] sft: dropped {dropped} rows longer than --max_length {cfg.max_length}")

    # 2. Trainer config, then the model (ZeRO-3 / FSDP decide how to load it from the config): the parent's weights,
    #    made trainable for this technique
    args = sft_args(cfg, run.folder, heldout is not None, run.state.num_processes)
    model = run.policy()

    # 3. Trainer
    trainer = sft_trainer(args, model, run.tokenizer, dataset, heldout, run.callbacks(heldout is not None))

    # 4. Train, save (every rank takes part, rank 0 writes the weights and the tokenizer), register
    result = run.train(trainer)
    run.save(trainer)
    runtime = result.metrics["train_runtime"]
    metrics = run.metrics(trainer, result, {
        "train_samples": len(dataset),
        "dropped_too_long": dropped,
        "tokens_per_s": trainer.state.num_input_tokens_seen / runtime if runtime else None,  # all processes
    })
    return run.publish(trainer, metrics, cfg.technique, run.parent_name)
