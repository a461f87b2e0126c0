"""Reward model: a scalar head on the base model (LoRA + trained `score` head), trained on preference pairs.

    python -m training reward --db data/tuneloop.db
    python -m training reward --config training/configs/reward.yaml
    python -m training reward --dataset_file tests/assets/pairs_tiny.jsonl --data_dir /tmp/d   # no store

Pairs come from comparisons, rankings, corrections and imported pairs (feedback_db.datasets). Pairwise accuracy
(score(chosen) > score(rejected)) is reported on held-out pairs: the store's held-out split, or else a
`--eval_fraction` of the prompts (all their pairs) kept out of training. The version is used by online RL and the
evaluation gate. `--init_from` (a round passes its SFT version) starts from that LoRA policy: its adapter goes on
the classifier and keeps training, so the reward model reads answers with the policy's features; the saved adapter
stays self-contained on the base.
"""

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from datasets import Dataset, DatasetDict
from peft import LoraConfig, get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification, set_seed
from trl import RewardConfig, RewardTrainer

from feedback_db.datasets import split_by_prompt
from feedback_db.models import Snapshot
from training import run_args
from training.distributed import from_main
from training.hardware import pick_dtype
from training.stage_data import load_stage_dataset
from training.stage_run import StageRun
from training.versions import LORA_TARGETS, is_adapter_dir, resolve_parent


@dataclass
class RewardRecipeConfig(run_args.RecipeArgs):
    dataset_file: str | None = field(default=None, metadata={"help": "JSONL of prompt/chosen/rejected rows, used "
                                                                     "instead of the store's preference pairs."})
    init_from: str | None = field(default=None, metadata={"help": "Start from this LoRA policy version (name or "
                                                                  "folder) instead of a fresh LoRA on the base."})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank (fresh adapters only)."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha."})
    num_train_epochs: float = field(default=2.0, metadata={"help": "Epochs over the pairs."})
    learning_rate: float = field(default=2e-4, metadata={"help": "Learning rate (LoRA and score head)."})
    max_length: int = field(default=1024, metadata={"help": "Longer pairs are dropped."})
    eval_fraction: float = field(default=0.2, metadata={"help": "Share of prompts whose pairs are held out for "
                                                                "accuracy when the store has no held-out pairs "
                                                                "(0: none)."})

    def __post_init__(self):
        super().__post_init__()
        if self.db is None and self.dataset_file is None:
            raise ValueError("Pass --db (the store) or --dataset_file (a JSONL file).")
        if not 0 <= self.eval_fraction < 1:
            raise ValueError(f"--eval_fraction must be in [0, 1), got {self.eval_fraction}.")


def pairwise_accuracy(model, tokenizer, pairs: Dataset) -> dict:
    """Share of pairs whose chosen answer scores above the rejected one, and the mean score margin."""
    wins, margins = [], []
    for row in pairs:
        scores = []
        for answer in (row["chosen"], row["rejected"]):
            ids = tokenizer.apply_chat_template(row["prompt"] + answer, return_tensors="pt", return_dict=True)
            with torch.no_grad():
                scores.append(model(input_ids=ids["input_ids"].to(model.device)).logits[0, 0].item())
        wins.append(float(scores[0] > scores[1]))
        margins.append(scores[0] - scores[1])
    return {"accuracy": sum(wins) / len(wins), "margin": sum(margins) / len(margins), "pairs": len(wins)}


def reward_pairs(cfg: RewardRecipeConfig, store, snapshot: Snapshot | None) -> DatasetDict:
    """Training pairs + held-out pairs for the accuracy report (the store's held-out split, or an --eval_fraction)."""
    pairs = load_stage_dataset(cfg, store, snapshot, "reward")
    dataset, heldout = pairs["train"], pairs.get("heldout")
    if len(dataset) == 0:
        raise ValueError("No preference pairs: compare or rank answers in the review tab first.")
    if heldout is None and cfg.eval_fraction > 0 and len({json.dumps(r) for r in dataset["prompt"]}) >= 5:
        dataset, heldout = split_by_prompt(dataset, cfg.eval_fraction, cfg.seed)
    return DatasetDict(train=dataset, **({"heldout": heldout} if heldout is not None else {}))


def policy_adapter_on_classifier(model, adapter_dir: Path | None):
    """The policy's LoRA adapter, trainable, on the sequence classifier (same `model.layers` module names), plus a
    trainable `score` head."""
    if adapter_dir is None or not is_adapter_dir(adapter_dir):
        raise ValueError(f"--init_from {adapter_dir}: a reward model starts from a LoRA policy version only.")
    config = LoraConfig.from_pretrained(str(adapter_dir))
    config.task_type, config.modules_to_save, config.inference_mode = "SEQ_CLS", ["score"], False
    model = get_peft_model(model, config)
    weights = load_file(str(Path(adapter_dir) / "adapter_model.safetensors"))
    weights |= {k: v for k, v in get_peft_model_state_dict(model).items() if ".score." in k}  # the new head as is
    missing = set_peft_model_state_dict(model, weights)
    if missing.unexpected_keys:
        raise ValueError(f"--init_from {adapter_dir}: adapter weights do not fit the classifier "
                         f"({missing.unexpected_keys[:3]})")
    return model


def main(cfg: RewardRecipeConfig) -> str:
    # 1. Processes, store, snapshot, pairs: rank 0 reads the store (or the round's build) and writes the pairs, every
    #    rank loads that copy
    run = StageRun.begin(cfg, "reward")
    pairs = run.materialise(lambda: reward_pairs(cfg, run.store, run.snapshot))
    dataset, heldout, tokenizer = pairs["train"], pairs.get("heldout"), run.tokenizer

    # 2. Trainer config, then the model (ZeRO-3 / FSDP decide how to load it from the config): a sequence
    #    classifier on the base, LoRA + a trained score head
    args = RewardConfig(lr_scheduler_type="cosine", max_length=cfg.max_length, include_num_input_tokens_seen=True,
                        **run.trainer_args(heldout is not None))
    set_seed(cfg.seed)  # before the model: a new LoRA's random init is part of the run
    model = AutoModelForSequenceClassification.from_pretrained(run.base_model, num_labels=1, dtype=pick_dtype())
    model.config.get_text_config().pad_token_id = tokenizer.pad_token_id
    peft_config = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=0.0, target_modules=LORA_TARGETS,
                             modules_to_save=["score"], task_type="SEQ_CLS")
    init_name = None
    if cfg.init_from is not None:
        init_name, init_dir = from_main(lambda: resolve_parent(run.store, cfg.init_from))
        model, peft_config = policy_adapter_on_classifier(model, init_dir), None

    # 3. Trainer
    trainer = RewardTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                            peft_config=peft_config, eval_dataset=heldout,
                            callbacks=run.callbacks(heldout is not None))

    # 4. Train, measure held-out accuracy (every rank, same weights), save (rank 0 writes), register
    result = run.train(trainer)
    trainer.model.eval()
    metrics = run.metrics(trainer, result, {
        "train_pairs": len(dataset),
        "train_accuracy": pairwise_accuracy(trainer.model, tokenizer, dataset)["accuracy"],
        "init_from": init_name or "base",
    })
    if heldout is not None:
        evaluation = pairwise_accuracy(trainer.model, tokenizer, heldout)
        metrics.update(heldout_accuracy=evaluation["accuracy"], heldout_margin=evaluation["margin"],
                       heldout_pairs=evaluation["pairs"])
    if run.state.is_main_process:
        print(f"[tuneloop] reward {json.dumps(metrics)}", flush=True)
    if run.store is not None and cfg.run_id is not None:
        run.store.add_run_metrics(cfg.run_id, trainer.state.global_step, "reward", metrics)
    run.save(trainer)
    return run.publish(trainer, metrics, "lora", None)
