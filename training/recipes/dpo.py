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
from peft import PeftModel
from transformers import set_seed
from trl import DPOConfig, DPOTrainer

from feedback_db.models import Snapshot
from training import run_args
from training.base_model import load_tokenizer, resolve_base_model
from training.callbacks import StoreProgressCallback
from training.distributed import from_main, materialise, open_store, start
from training.hardware import trainer_precision_kwargs
from training.stage_data import load_stage_dataset
from training.versions import load_trainable_policy, new_tmp_dir, publish_version, resolve_parent, stage_data_dir

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
    # 1. Processes, store, snapshot, pairs: rank 0 reads the store and writes the pairs, every rank loads that copy
    state = start()
    store = open_store(cfg.db)
    snapshot = from_main(lambda: cfg.snapshot or (store.snapshot() if store else None))
    base_model = from_main(lambda: resolve_base_model(cfg.base_model, cfg.data_dir))
    parent_name, parent_dir = from_main(lambda: resolve_parent(store, cfg.parent))
    tokenizer = load_tokenizer(base_model)
    tmp_dir = new_tmp_dir(cfg.data_dir, "dpo")
    folder = run_args.run_dir(cfg.data_dir, cfg.run_id, tmp_dir)
    pairs = materialise(lambda: preference_pairs(cfg, store, snapshot), stage_data_dir(tmp_dir))
    dataset, heldout = pairs["train"], pairs.get("heldout")

    # 2. Trainer config, then the policy (ZeRO-3 / FSDP decide how to load it from the config): the parent's
    #    weights, trainable; the parent is also the reference
    per_device, accumulation = cfg.micro_batch(state.num_processes)
    args = DPOConfig(
        beta=cfg.beta,
        loss_type=[cfg.loss_type],
        num_train_epochs=cfg.num_train_epochs,
        max_steps=cfg.max_steps,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type="cosine",
        per_device_train_batch_size=per_device,
        gradient_accumulation_steps=accumulation,
        max_length=cfg.max_length,
        precompute_ref_log_probs=True,  # one reference pass up front, no reference forward in the training steps
        logging_steps=cfg.logging_steps,
        include_num_input_tokens_seen=True,
        **run_args.trainer_kwargs(cfg, "dpo", folder, heldout is not None, per_device),
        seed=cfg.seed,
        **trainer_precision_kwargs(),
    )
    set_seed(cfg.seed)  # before the model: a new LoRA's random init is part of the run
    model = load_trainable_policy(base_model, parent_dir, cfg.technique, cfg.lora_r, cfg.lora_alpha,
                                  cfg.freeze_top_n)

    # 3. Trainer
    trainer = DPOTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        eval_dataset=heldout,
        callbacks=[StoreProgressCallback(store, cfg.run_id, "dpo"),
                   *run_args.callbacks(cfg, "dpo", folder, heldout is not None)],
    )

    # 4. Train, save (without TRL's frozen "ref" adapter copy; rank 0 writes), register
    result = trainer.train(resume_from_checkpoint=run_args.resume_checkpoint(folder, "dpo"))
    if isinstance(trainer.model, PeftModel) and "ref" in trainer.model.peft_config:
        trainer.model.delete_adapter("ref")
    trainer.save_model(str(tmp_dir))
    logged = [entry for entry in trainer.state.log_history if "rewards/margins" in entry]
    metrics = {
        "train_loss": result.training_loss,
        "train_runtime_s": result.metrics["train_runtime"],
        "train_pairs": len(dataset),
        "steps": trainer.state.global_step,
        "processes": state.num_processes,
        "pairs_per_s": len(dataset) * cfg.num_train_epochs / result.metrics["train_runtime"]
        if cfg.max_steps < 0 else None,
        "final_reward_accuracy": logged[-1]["rewards/accuracies"] if logged else None,
        "final_reward_margin": logged[-1]["rewards/margins"] if logged else None,
        **run_args.last_eval(trainer, {"eval_rewards/accuracies": "heldout_reward_accuracy",
                                       "eval_rewards/margins": "heldout_reward_margin"}),
    }
    metrics.update(run_args.best_choice(trainer))
    name = publish_version(
        store, tmp_dir, method="dpo", technique=cfg.technique, parent=parent_name, base_model=base_model,
        config=cfg, data_snapshot=snapshot, metrics=metrics,
    )
    run_args.finish_stage(folder, "dpo", cfg.run_id)
    return name
