"""Benchmark 1: SFT LoRA throughput of our recipe against a plain TRL SFTTrainer script, side by side.

    python -m bench.sft_throughput [--quick] [--steps 5] [--repeats 2]
    python -m bench.sft_throughput --profile          # where one of our steps spends its time (torch.profiler)

Contenders, alternated (ABC CBA ...) on the same model, data, batch size, LoRA config and number of steps:
- `ours`: `training.recipes.sft.main` exactly as the app runs it (padding-free batches, no gradient checkpointing,
  the precision `training.hardware` picks).
- `trl-defaults`: what a user writes from TRL's docs: `SFTTrainer(model, args=SFTConfig(use_cpu=True, ...),
  peft_config=LoraConfig(...))` with every other SFTConfig default (bf16=True, gradient_checkpointing=True, padded
  batches). `use_cpu=True` is needed on a CPU machine: SFTConfig() refuses to start otherwise.
- `trl-fp32`: the same script with `bf16=False` (what a user does when bf16 is slow on their CPU).
- `ours, fp32 (no autocast)` (only on CPUs with native bf16, where `training.hardware` trains with bf16 autocast):
  our recipe with autocast off, to show what the precision choice is worth.
The throughput is trained (non-padding) tokens per second from the second step to the end of `train()`, counted from
the collated batches themselves. MFU = tokens/s x 4N / measured matmul peak: with
LoRA the frozen base weights need no weight gradients, so a token costs 2N (forward) + 2N (input gradients) FLOPs,
N = matmul parameters (attention-score FLOPs, < 3 % here, are left out, so MFU is slightly understated). The peak is
the bf16 one where our recipe trains in bf16 (a GPU, or autocast on a CPU with native bf16), fp32 otherwise. The
ratio column compares with the best plain TRL contender of the run.
"""

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import torch
from datasets import load_dataset
from peft import LoraConfig
from trl import SFTConfig, SFTTrainer

import training.recipes.sft as sft_recipe
from bench.common import (
    alternate,
    base_model_path,
    data_dir,
    matmul_params,
    matmul_peak_gflops,
    median,
    offline,
    recipe_data_dir,
    recipe_vs_trl,
    report,
    sft_rows,
    trainer_steps,
    verdict,
    write_jsonl,
)
from training.base_model import load_causal_lm, load_tokenizer
from training.hardware import trainer_precision_kwargs
from training.versions import LORA_TARGETS

LORA_R, LORA_ALPHA = 16, 32


def run_ours(dataset_file: Path, steps: int, batch: int, bf16: bool | None = None, **hooks) -> dict:
    """Our recipe as the app runs it; `bf16` swaps in the proposed precision (autocast bf16) for this run only.

    `hooks` (before_step, after_train) go to the run's `trainer_steps`; the result's `log` is its StepLog.
    """
    with recipe_data_dir("sft-ours-", bf16) as out, trainer_steps(**hooks) as logs:
        cfg = sft_recipe.SFTRecipeConfig(dataset_file=str(dataset_file), data_dir=str(out), parent="base",
                                         max_steps=steps, batch_size=batch, logging_steps=steps)
        started = time.perf_counter()
        sft_recipe.main(cfg)
        wall = time.perf_counter() - started
    return {"tokens_s": logs[-1].rate("tokens"), "tokens": sum(logs[-1].tokens), "wall_s": wall, "log": logs[-1]}


def run_plain_trl(dataset_file: Path, steps: int, batch: int, bf16: bool) -> dict:
    """A plain TRL script from the docs: defaults everywhere except what the comparison must fix."""
    out = tempfile.mkdtemp(prefix="sft-trl-", dir=data_dir())
    try:
        with trainer_steps() as logs:
            started = time.perf_counter()
            trainer = SFTTrainer(
                model=load_causal_lm(base_model_path(), dtype=torch.float32),
                args=SFTConfig(output_dir=out, use_cpu=not torch.cuda.is_available(), bf16=bf16, max_steps=steps,
                               per_device_train_batch_size=batch, report_to="none"),
                train_dataset=load_dataset("json", data_files=str(dataset_file), split="train"),
                processing_class=load_tokenizer(base_model_path()),
                peft_config=LoraConfig(r=LORA_R, lora_alpha=LORA_ALPHA, lora_dropout=0.0,
                                       target_modules=LORA_TARGETS, task_type="CAUSAL_LM"),
            )
            trainer.train()
            trainer.save_model(out)
            wall = time.perf_counter() - started
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return {"tokens_s": logs[-1].rate("tokens"), "tokens": sum(logs[-1].tokens), "wall_s": wall}


CATEGORIES = [  # (category, substrings of aten op names), first match wins
    ("matmul (mm/addmm/bmm)", ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm")),
    ("attention (SDPA fwd+bwd)", ("scaled_dot_product", "flash_attention")),
    ("loss over the vocabulary (log-softmax, NLL, fwd+bwd)", ("log_softmax", "nll_loss", "cross_entropy")),
    ("optimizer (AdamW, grad clip)", ("_foreach", "adam", "norm")),
    ("casts and copies (autocast, contiguous)", ("aten::copy_", "aten::_to_copy", "aten::to", "clone", "contiguous")),
]


def category(name: str) -> str:
    return next((label for label, keys in CATEGORIES if any(k in name for k in keys)), "other element-wise / misc")


def profile_ours(dataset_file: Path, steps: int, batch: int) -> None:
    """torch.profiler over our recipe's steps 2..end (forward, backward and optimizer step), ops grouped by kind."""
    profiler = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])

    def start(log) -> None:
        if len(log.starts) == 2:
            profiler.start()

    def stop(log) -> None:
        if len(log.starts) >= 2:
            profiler.stop()

    result = run_ours(dataset_file, steps, batch, before_step=start, after_train=stop)
    events = [e for e in profiler.key_averages() if e.key.startswith("aten::")]
    total = sum(e.self_cpu_time_total for e in events) or 1
    shares: dict[str, float] = {}
    for event in events:
        shares[category(event.key)] = shares.get(category(event.key), 0) + event.self_cpu_time_total
    wall = result["log"].ended - result["log"].starts[1]
    rows = [[label, f"{100 * t / total:.1f}%", f"{t / 1e6 / (steps - 1):.2f}"]
            for label, t in sorted(shares.items(), key=lambda kv: -kv[1])]
    top = sorted(events, key=lambda e: -e.self_cpu_time_total)[:12]
    notes = [f"profiled steps 2-{steps} ({wall:.1f} s wall, {wall / (steps - 1):.2f} s per step; aten self CPU time "
             f"{total / 1e6:.1f} s summed over the 2 threads' ops); run's tokens/s {result['tokens_s']:.1f}",
             "top ops by self CPU time: " + ", ".join(f"{e.key} {100 * e.self_cpu_time_total / total:.1f}%"
                                                       for e in top)]
    report("SFT LoRA step profile, ours (bench/sft_throughput.py --profile)",
           f"SmolLM2-135M, LoRA r={LORA_R}, {steps} steps x {batch} rows, precision {trainer_precision_kwargs()}",
           ["op kind", "share of aten self CPU time", "s per step"], rows, notes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="Fewer steps and one repeat (a smoke run).")
    parser.add_argument("--steps", type=int, default=None, help="Optimizer steps per run (default 5, quick 3).")
    parser.add_argument("--batch", type=int, default=4, help="Rows per step for every contender (our default).")
    parser.add_argument("--repeats", type=int, default=None, help="Runs per contender (default 2, quick 1).")
    parser.add_argument("--skip-trl-defaults", action="store_true", help="Leave out the bf16 + checkpointing run.")
    parser.add_argument("--profile", action="store_true", help="Only profile our recipe's steps (torch.profiler).")
    args = parser.parse_args()
    offline()
    steps = args.steps or (3 if args.quick else 5)
    repeats = args.repeats or (1 if args.quick else 2)

    tokenizer = load_tokenizer(base_model_path())
    dataset_file = write_jsonl(sft_rows(tokenizer, steps * args.batch, seed=1), data_dir() / "sft_bench.jsonl")
    if args.profile:
        profile_ours(dataset_file, steps, args.batch)
        return
    n_params = matmul_params(load_causal_lm(base_model_path(), dtype=torch.float32))
    # the MFU's peak is the matmul peak of the precision our recipe trains in: bf16 on a GPU and on a CPU with native
    # bf16 (autocast), fp32 otherwise; the fp32 peak is shown beside it on such a CPU
    ours_bf16 = trainer_precision_kwargs()["bf16"]
    peak_dtype = torch.bfloat16 if ours_bf16 else torch.float32
    peak = matmul_peak_gflops(peak_dtype)

    results = alternate(recipe_vs_trl(lambda bf16: run_ours(dataset_file, steps, args.batch, bf16),
                                      lambda bf16: run_plain_trl(dataset_file, steps, args.batch, bf16),
                                      args.skip_trl_defaults), repeats)
    peak = max(peak, matmul_peak_gflops(peak_dtype))

    rates = {name: median([r["tokens_s"] for r in runs]) for name, runs in results.items()}
    best_plain = max((n for n in rates if n.startswith("trl")), key=rates.get)
    flops_per_token = 4 * n_params
    rows = []
    for name, runs in results.items():
        mfu = rates[name] * flops_per_token / (peak * 1e9)
        ratio = rates[name] / rates[best_plain]
        rows.append([name, rates[name], ", ".join(f"{r['tokens_s']:.1f}" for r in runs), runs[0]["tokens"],
                     median([r["wall_s"] for r in runs]), f"{ratio:.2f}x", f"{100 * mfu:.0f}%"])
    ours_ratio = rates["ours"] / rates[best_plain]
    ours_mfu = rates["ours"] * flops_per_token / (peak * 1e9)
    notes = [
        f"Ratio column: against the best plain TRL contender, `{best_plain}`.",
        f"Target >= 1.5x the best plain TRL: {verdict(ours_ratio, 1.5)} ({ours_ratio:.2f}x); target MFU >= 40 % of "
        f"the measured {str(peak_dtype)[6:]} matmul peak: {verdict(ours_mfu, 0.4)} ({100 * ours_mfu:.0f} %).",
        f"{str(peak_dtype)[6:]} matmul peak measured in this run: {peak:.0f} GFLOP/s (best of before/after the runs); "
        f"N = {n_params / 1e6:.1f} M matmul parameters, 4N FLOPs per trained token (LoRA: no base weight grads).",
        "tokens = non-padding tokens per run (identical data order for every contender, so equal counts).",
    ]
    if peak_dtype != torch.float32 and not torch.cuda.is_available():
        fp32_peak = matmul_peak_gflops(torch.float32)
        notes.append(f"fp32 matmul peak measured after the runs: {fp32_peak:.0f} GFLOP/s; against it `ours` is at "
                     f"{100 * rates['ours'] * flops_per_token / (fp32_peak * 1e9):.0f} % MFU.")
    report("SFT LoRA throughput (bench/sft_throughput.py)",
           f"SmolLM2-135M, LoRA r={LORA_R} on {len(LORA_TARGETS)} projections, {steps} steps x {args.batch} rows "
           f"(synthetic chat rows, 12-420 word answers), {repeats} alternating repeats, median shown",
           ["contender", "tokens/s", "runs", "tokens", "wall s", "ratio", "MFU"], rows, notes)


if __name__ == "__main__":
    main()
