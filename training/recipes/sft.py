"""Supervised fine-tuning on demonstrations and corrections (the store's SFT dataset).

    python -m training sft --db data/tuneloop.db --technique lora
    python -m training sft --config training/configs/sft_lora.yaml
    python -m training sft --dataset_file tests/assets/sft_tiny.jsonl --data_dir /tmp/d   # no store

Techniques: `lora` (PEFT adapter, default), `full` (all weights), `freeze` (feature-based: only the top
`--freeze_top_n` decoder blocks, the final norm and an untied LM head train; the input embedding stays frozen).
Speed: padding-free batches (no pad tokens are computed), no gradient checkpointing, fp32 on CPU / bf16 on GPU.
"""

from dataclasses import dataclass, field

from datasets import DatasetDict
from transformers import set_seed
from trl import SFTConfig, SFTTrainer

from feedback_db.models import Snapshot
from training import run_args
from training.base_model import load_tokenizer, resolve_base_model
from training.callbacks import StoreProgressCallback
from training.distributed import from_main, materialise, open_store, start
from training.hardware import trainer_precision_kwargs
from training.stage_data import load_stage_dataset
from training.versions import load_trainable_policy, new_tmp_dir, publish_version, resolve_parent, stage_data_dir

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


def main(cfg: SFTRecipeConfig) -> str:
    # 1. Processes, store, snapshot, data: rank 0 reads the store and writes the rows, every rank loads that copy
    state = start()
    store = open_store(cfg.db)
    snapshot = from_main(lambda: cfg.snapshot or (store.snapshot() if store else None))
    base_model = from_main(lambda: resolve_base_model(cfg.base_model, cfg.data_dir))
    parent_name, parent_dir = from_main(lambda: resolve_parent(store, cfg.parent))
    tokenizer = load_tokenizer(base_model)
    tmp_dir = new_tmp_dir(cfg.data_dir, "sft")
    folder = run_args.run_dir(cfg.data_dir, cfg.run_id, tmp_dir)
    data = materialise(lambda: sft_rows(cfg, store, snapshot, tokenizer), stage_data_dir(tmp_dir))
    dataset, dropped, heldout = data["train"], len(data.get("too_long", [])), data.get("heldout")
    if dropped:
        print(f"[tuneloop] sft: dropped {dropped} rows longer than --max_length {cfg.max_length}")

    # 2. Trainer config, then the model (ZeRO-3 / FSDP decide how to load it from the config): the parent's weights,
    #    made trainable for this technique
    per_device, accumulation = cfg.micro_batch(state.num_processes)
    args = SFTConfig(
        num_train_epochs=cfg.num_train_epochs,
        max_steps=cfg.max_steps,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=0,
        per_device_train_batch_size=per_device,
        gradient_accumulation_steps=accumulation,
        max_length=None,  # padding-free does not truncate; too-long rows were dropped above
        padding_free=True,  # flattened batches with position_ids: no compute spent on pad tokens
        logging_steps=cfg.logging_steps,
        include_num_input_tokens_seen=True,
        **run_args.trainer_kwargs(cfg, "sft", folder, heldout is not None, per_device),
        seed=cfg.seed,
        **trainer_precision_kwargs(),
    )
    set_seed(cfg.seed)  # before the model: a new LoRA's random init is part of the run
    model = load_trainable_policy(base_model, parent_dir, cfg.technique, cfg.lora_r, cfg.lora_alpha,
                                  cfg.freeze_top_n)

    # 3. Trainer
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        eval_dataset=heldout,
        callbacks=[StoreProgressCallback(store, cfg.run_id, "sft"),
                   *run_args.callbacks(cfg, "sft", folder, heldout is not None)],
    )

    # 4. Train, save (every rank takes part, rank 0 writes the weights and the tokenizer), register
    result = trainer.train(resume_from_checkpoint=run_args.resume_checkpoint(folder, "sft"))
    trainer.save_model(str(tmp_dir))
    runtime = result.metrics["train_runtime"]
    metrics = {
        "train_loss": result.training_loss,
        "train_runtime_s": runtime,
        "train_samples": len(dataset),
        "dropped_too_long": dropped,
        "steps": trainer.state.global_step,
        "processes": state.num_processes,
        "tokens_per_s": trainer.state.num_input_tokens_seen / runtime if runtime else None,  # all processes
    }
    metrics.update(run_args.best_choice(trainer))
    name = publish_version(
        store, tmp_dir, method="sft", technique=cfg.technique, parent=parent_name, base_model=base_model,
        config=cfg, data_snapshot=snapshot, metrics=metrics,
    )
    run_args.finish_stage(folder, "sft", cfg.run_id)
    return name
