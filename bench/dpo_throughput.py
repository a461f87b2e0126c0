"""Benchmark 2: DPO LoRA throughput (preference pairs/s) of our recipe against a plain TRL DPOTrainer script.

    python -m bench.dpo_throughput [--quick] [--steps 4] [--batch 2] [--repeats 2]

Contenders, alternated, on the same model, pairs, batch size, LoRA config and steps (2 epochs, our default):
- `ours`: `training.recipes.dpo.main` as the app runs it (reference log-probs precomputed once, the reference is
  the base with the adapter disabled, no gradient checkpointing, `training.hardware`'s precision).
- `trl-defaults`: `DPOTrainer(model, args=DPOConfig(use_cpu=True, ...), peft_config=LoraConfig(...))` with every
  other DPOConfig default (bf16=True, gradient_checkpointing=True, reference forward in every step).
- `trl-fp32`: the same with `bf16=False`.
- `ours, fp32 (no autocast)`: on CPUs with native bf16 (where `training.hardware` trains with bf16 autocast), our
  recipe with autocast off (what the precision choice is worth).
pairs/s = pairs trained / (reference precompute + the whole `train()`), so precomputing is not free: it is paid in
the measured time. Every run reads its own copy of the data file, so TRL's precompute cache never hits.
"""

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import torch
from datasets import load_dataset
from peft import LoraConfig
from trl import DPOConfig, DPOTrainer

import training.recipes.dpo as dpo_recipe
from bench.common import (
    alternate,
    base_model_path,
    data_dir,
    median,
    offline,
    preference_rows,
    recipe_data_dir,
    recipe_vs_trl,
    report,
    trainer_steps,
    verdict,
    write_jsonl,
)
from training.base_model import load_causal_lm, load_tokenizer
from training.versions import LORA_TARGETS

LORA_R, LORA_ALPHA, EPOCHS = 16, 32, 2


class PrecomputeTimer:
    """Times DPOTrainer's reference-log-prob precompute (it runs inside the trainer's constructor)."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def __enter__(self) -> "PrecomputeTimer":
        self.original = DPOTrainer._precompute_ref_logps

        def timed(trainer, *args, **kwargs):
            started = time.perf_counter()
            try:
                return self.original(trainer, *args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - started

        DPOTrainer._precompute_ref_logps = timed
        return self

    def __exit__(self, *exc) -> None:
        DPOTrainer._precompute_ref_logps = self.original


def fresh_copy(rows: list[dict], out: Path) -> Path:
    return write_jsonl(rows, out / "pairs.jsonl")


def measured(logs, precompute_s: float, wall: float) -> dict:
    log = logs[-1]
    pairs = sum(log.rows) // 2  # chosen and rejected are two rows of one batch
    train_s = log.ended - log.starts[0]
    return {"pairs_s": pairs / (train_s + precompute_s), "loop_pairs_s": log.rate("rows", warmup=1) / 2,
            "precompute_s": precompute_s, "pairs": pairs, "wall_s": wall}


def run_ours(rows: list[dict], steps: int, batch: int, bf16: bool | None = None) -> dict:
    with recipe_data_dir("dpo-ours-", bf16) as out, trainer_steps() as logs, PrecomputeTimer() as precompute:
        cfg = dpo_recipe.DPORecipeConfig(dataset_file=str(fresh_copy(rows, out)), data_dir=str(out), parent="base",
                                         max_steps=steps, num_train_epochs=EPOCHS, batch_size=batch,
                                         logging_steps=steps)
        started = time.perf_counter()
        dpo_recipe.main(cfg)
        wall = time.perf_counter() - started
    return measured(logs, precompute.seconds, wall)


def run_plain_trl(rows: list[dict], steps: int, batch: int, bf16: bool) -> dict:
    out = Path(tempfile.mkdtemp(prefix="dpo-trl-", dir=data_dir()))
    try:
        with trainer_steps() as logs, PrecomputeTimer() as precompute:
            started = time.perf_counter()
            trainer = DPOTrainer(
                model=load_causal_lm(base_model_path(), dtype=torch.float32),
                args=DPOConfig(output_dir=str(out), use_cpu=not torch.cuda.is_available(), bf16=bf16,
                               max_steps=steps, per_device_train_batch_size=batch, report_to="none"),
                train_dataset=load_dataset("json", data_files=str(fresh_copy(rows, out)), split="train"),
                processing_class=load_tokenizer(base_model_path()),
                peft_config=LoraConfig(r=LORA_R, lora_alpha=LORA_ALPHA, lora_dropout=0.0,
                                       target_modules=LORA_TARGETS, task_type="CAUSAL_LM"),
            )
            trainer.train()
            trainer.save_model(str(out))
            wall = time.perf_counter() - started
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return measured(logs, precompute.seconds, wall)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="Fewer steps and one repeat (a smoke run).")
    parser.add_argument("--steps", type=int, default=None, help="Optimizer steps per run (default 4, quick 2).")
    parser.add_argument("--batch", type=int, default=2, help="Pairs per step for every contender (ours: 4).")
    parser.add_argument("--repeats", type=int, default=None, help="Runs per contender (default 2, quick 1).")
    parser.add_argument("--skip-trl-defaults", action="store_true", help="Leave out the bf16 + checkpointing run.")
    args = parser.parse_args()
    offline()
    steps = args.steps or (2 if args.quick else 4)
    repeats = args.repeats or (1 if args.quick else 2)
    rows = preference_rows(load_tokenizer(base_model_path()), steps * args.batch // EPOCHS, seed=2)

    results = alternate(recipe_vs_trl(lambda bf16: run_ours(rows, steps, args.batch, bf16),
                                      lambda bf16: run_plain_trl(rows, steps, args.batch, bf16),
                                      args.skip_trl_defaults), repeats)

    rates = {name: median([r["pairs_s"] for r in runs]) for name, runs in results.items()}
    baseline = "trl-fp32" if "trl-fp32" in rates else "trl-defaults"
    table = []
    for name, runs in results.items():
        table.append([name, rates[name], ", ".join(f"{r['pairs_s']:.2f}" for r in runs),
                      median([r["loop_pairs_s"] for r in runs]), median([r["precompute_s"] for r in runs]),
                      runs[0]["pairs"], median([r["wall_s"] for r in runs]), f"{rates[name] / rates[baseline]:.2f}x"])
    best_baseline = max(rates[n] for n in rates if n.startswith("trl"))
    ratio = rates["ours"] / rates[baseline]
    notes = [
        f"Ratio column: against `{baseline}`. ours vs best plain TRL: {rates['ours'] / best_baseline:.2f}x.",
        f"Target >= 1.3x plain TRL: {verdict(ratio, 1.3)} ({ratio:.2f}x).",
        "pairs/s includes the reference precompute; loop pairs/s is the training loop alone from its 2nd step.",
    ]
    report("DPO LoRA throughput (bench/dpo_throughput.py)",
           f"SmolLM2-135M, LoRA r={LORA_R}, {len(rows)} synthetic pairs x {EPOCHS} epochs = {steps} steps x "
           f"{args.batch} pairs, {repeats} alternating repeats, median shown",
           ["contender", "pairs/s", "runs", "loop pairs/s", "precompute s", "pairs", "wall s", "ratio"], table, notes)


if __name__ == "__main__":
    main()
