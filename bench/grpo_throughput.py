"""Benchmark: GRPO (online RL) LoRA steps/s of our recipe against a plain TRL GRPOTrainer script, side by side.

    python -m bench.grpo_throughput [--quick] [--steps 4] [--repeats 2]

Contenders, alternated, on the same model, prompts, reward model, LoRA config, KL weight (beta 0.04, our default),
group size (4 answers per prompt), batch (4 answers per step), answer length (32 tokens), seed and steps:
- `ours`: `training.recipes.online_rl.main` as `python -m training round --stages ...online_rl` runs it (no
  gradient checkpointing, `training.hardware`'s precision, rollouts with the LoRA adapter merged).
- `trl-defaults`: what a user writes from TRL's docs: `GRPOTrainer(model, reward_funcs=reward_model,
  args=GRPOConfig(use_cpu=True, ...), peft_config=LoraConfig(...))` with every other GRPOConfig default (bf16=True,
  gradient_checkpointing=True).
- `trl-fp32`: the same script with `bf16=False`.
- `ours, fp32 (no autocast)`: on CPUs with native bf16 (where `training.hardware` trains with bf16 autocast), our
  recipe with autocast off.
The reward model is one reward version (our reward recipe, 2 steps on synthetic pairs; built once and cached in
the bench data dir), loaded the same way for every contender. steps/s counts from the start of the second step to
the end of `train()`; completion tokens/s counts the sampled answer tokens of those steps (sampling decides the
lengths, so both figures are shown). "rollout" is the share of step time spent in TRL's
`_generate_and_score_completions` (sampling, reward scoring, reference log-probs), "sampling" the share in
`_generate` (decoding the answers); the rest is the policy's forward + backward and the optimizer.
"""

import argparse
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from datasets import load_dataset
from peft import LoraConfig
from trl import GRPOConfig, GRPOTrainer

import training.recipes.online_rl as online_rl_recipe
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
    verdict,
    write_jsonl,
)
from training.base_model import load_causal_lm, load_tokenizer
from training.recipes.reward import RewardRecipeConfig
from training.recipes.reward import main as train_reward
from training.versions import LORA_TARGETS, load_reward_model

LORA_R, LORA_ALPHA = 16, 32
BETA, NUM_GENERATIONS, COMPLETION_TOKENS, LEARNING_RATE, SEED = 0.04, 4, 32, 5e-5, 42


@dataclass
class GRPOLog:
    """One `train()`: when each optimizer step started, the answer tokens it sampled, the rollout seconds."""

    starts: list[float] = field(default_factory=list)
    completion_tokens: list[int] = field(default_factory=list)
    rollout_s: list[float] = field(default_factory=list)
    sampling_s: list[float] = field(default_factory=list)
    ended: float = 0.0

    def measured(self, wall: float, warmup: int = 1) -> dict:
        seconds = self.ended - self.starts[warmup]
        steps = len(self.starts) - warmup
        return {"steps_s": steps / seconds, "tokens_s": sum(self.completion_tokens[warmup:]) / seconds,
                "rollout_share": sum(self.rollout_s[warmup:]) / seconds,
                "sampling_share": sum(self.sampling_s[warmup:]) / seconds, "steps": steps, "wall_s": wall,
                "mean_length": sum(self.completion_tokens[warmup:]) / steps / NUM_GENERATIONS}


@contextmanager
def grpo_steps() -> Iterator[list[GRPOLog]]:
    """Record every GRPOTrainer step and rollout of every `train()` inside the block (one GRPOLog per train())."""
    logs: list[GRPOLog] = []
    originals = (GRPOTrainer.training_step, GRPOTrainer._generate_and_score_completions, GRPOTrainer.train,
                 GRPOTrainer._generate)

    def training_step(self, *args, **kwargs):
        logs[-1].starts.append(time.perf_counter())
        return originals[0](self, *args, **kwargs)

    def rollout(self, *args, **kwargs):
        started = time.perf_counter()
        batch = originals[1](self, *args, **kwargs)
        logs[-1].rollout_s.append(time.perf_counter() - started)
        # sampled tokens as TRL counts them (completion_mask is zero on truncated answers when they are masked)
        sampled = self._metrics["train"]["completions/mean_length"][-1] * batch["completion_ids"].shape[0]
        logs[-1].completion_tokens.append(round(sampled))
        return batch

    def sampling(self, *args, **kwargs):
        started = time.perf_counter()
        try:
            return originals[3](self, *args, **kwargs)
        finally:
            logs[-1].sampling_s.append(time.perf_counter() - started)

    def train(self, *args, **kwargs):
        logs.append(GRPOLog())
        try:
            return originals[2](self, *args, **kwargs)
        finally:
            logs[-1].ended = time.perf_counter()

    patched = training_step, rollout, train, sampling
    names = "training_step", "_generate_and_score_completions", "train", "_generate"
    for name, function in zip(names, patched, strict=True):
        setattr(GRPOTrainer, name, function)
    try:
        yield logs
    finally:
        for name, function in zip(names, originals, strict=True):
            setattr(GRPOTrainer, name, function)


def reward_version() -> Path:
    """A reward version trained by our reward recipe (2 steps on synthetic pairs), built once per bench data dir."""
    folder = data_dir() / "grpo-reward"
    if (folder / "adapter_config.json").is_file():
        return folder
    pairs = write_jsonl(preference_rows(load_tokenizer(base_model_path()), 8, seed=3), data_dir() / "grpo_pairs.jsonl")
    with recipe_data_dir("grpo-reward-") as out:
        trained = train_reward(RewardRecipeConfig(dataset_file=str(pairs), data_dir=str(out), max_steps=2,
                                                  eval_fraction=0, report_to="none"))
        shutil.copytree(trained, folder)
    return folder


def prompt_file(steps: int) -> Path:
    """One prompt per step (4 answers each): every contender trains on the same prompts, in its own order."""
    rows = preference_rows(load_tokenizer(base_model_path()), steps, seed=4)
    return write_jsonl([{"prompt": row["prompt"]} for row in rows], data_dir() / "grpo_prompts.jsonl")


def run_ours(prompts: Path, reward_dir: Path, steps: int, bf16: bool | None = None) -> dict:
    with recipe_data_dir("grpo-ours-", bf16) as out, grpo_steps() as logs:
        cfg = online_rl_recipe.OnlineRLRecipeConfig(
            dataset_file=str(prompts), reward_model=str(reward_dir), data_dir=str(out), parent="base",
            max_steps=steps, batch_size=NUM_GENERATIONS, num_generations=NUM_GENERATIONS, beta=BETA,
            max_completion_length=COMPLETION_TOKENS, learning_rate=LEARNING_RATE, logging_steps=steps, seed=SEED)
        started = time.perf_counter()
        online_rl_recipe.main(cfg)
        wall = time.perf_counter() - started
    return logs[-1].measured(wall)


def run_plain_trl(prompts: Path, reward_dir: Path, steps: int, bf16: bool) -> dict:
    """A plain TRL script from the docs: defaults everywhere except what the comparison must fix."""
    out = tempfile.mkdtemp(prefix="grpo-trl-", dir=data_dir())
    try:
        with grpo_steps() as logs:
            started = time.perf_counter()
            tokenizer = load_tokenizer(base_model_path())
            trainer = GRPOTrainer(
                model=load_causal_lm(base_model_path(), dtype=torch.float32),
                reward_funcs=load_reward_model(base_model_path(), reward_dir, tokenizer),
                args=GRPOConfig(output_dir=out, use_cpu=not torch.cuda.is_available(), bf16=bf16, max_steps=steps,
                                per_device_train_batch_size=NUM_GENERATIONS, num_generations=NUM_GENERATIONS,
                                max_completion_length=COMPLETION_TOKENS, beta=BETA, learning_rate=LEARNING_RATE,
                                seed=SEED, report_to="none"),
                train_dataset=load_dataset("json", data_files=str(prompts), split="train"),
                processing_class=tokenizer,
                peft_config=LoraConfig(r=LORA_R, lora_alpha=LORA_ALPHA, lora_dropout=0.0,
                                       target_modules=LORA_TARGETS, task_type="CAUSAL_LM"),
            )
            trainer.train()
            trainer.save_model(out)
            wall = time.perf_counter() - started
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return logs[-1].measured(wall)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="Fewer steps and one repeat (a smoke run).")
    parser.add_argument("--steps", type=int, default=None, help="Optimizer steps per run (default 5, quick 3).")
    parser.add_argument("--repeats", type=int, default=None, help="Runs per contender (default 2, quick 1).")
    parser.add_argument("--skip-trl-defaults", action="store_true", help="Leave out the bf16 + checkpointing run.")
    args = parser.parse_args()
    offline()
    steps = args.steps or (3 if args.quick else 5)
    repeats = args.repeats or (1 if args.quick else 2)
    reward_dir, prompts = reward_version(), prompt_file(steps)

    results = alternate(recipe_vs_trl(lambda bf16: run_ours(prompts, reward_dir, steps, bf16),
                                      lambda bf16: run_plain_trl(prompts, reward_dir, steps, bf16),
                                      args.skip_trl_defaults), repeats)

    rates = {name: median([r["steps_s"] for r in runs]) for name, runs in results.items()}
    best_plain = max((n for n in rates if n.startswith("trl")), key=rates.get)
    table = []
    for name, runs in results.items():
        table.append([name, rates[name], ", ".join(f"{r['steps_s']:.3f}" for r in runs),
                      median([r["tokens_s"] for r in runs]), median([r["mean_length"] for r in runs]),
                      f"{100 * median([r['sampling_share'] for r in runs]):.0f}%",
                      f"{100 * median([r['rollout_share'] for r in runs]):.0f}%", median([r["wall_s"] for r in runs]),
                      f"{rates[name] / rates[best_plain]:.2f}x"])
    ratio = rates["ours"] / rates[best_plain]
    notes = [
        f"Ratio column: steps/s against the best plain TRL contender, `{best_plain}`.",
        f"Target >= 1.5x plain TRL GRPOTrainer: {verdict(ratio, 1.5)} ({ratio:.2f}x).",
        "tokens/s = sampled answer tokens/s; length = mean sampled answer tokens (cap "
        f"{COMPLETION_TOKENS}); sampling = share of the step spent decoding the answers; rollout = sampling + reward "
        "scores + reference log-probs (the rest: the policy's forward, backward and optimizer step).",
    ]
    report("GRPO (online RL) LoRA throughput (bench/grpo_throughput.py)",
           f"SmolLM2-135M, LoRA r={LORA_R}, beta {BETA}, {steps} steps x 1 prompt x {NUM_GENERATIONS} sampled "
           f"answers of <= {COMPLETION_TOKENS} tokens, reward model = a reward version (LoRA + score head), "
           f"{repeats} alternating repeats, median shown",
           ["contender", "steps/s", "runs", "tokens/s", "length", "sampling", "rollout", "wall s", "ratio"], table,
           notes)


if __name__ == "__main__":
    main()
