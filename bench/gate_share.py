"""Benchmark: the evaluation gate's share of a `reward,dpo` round's wall time, on 200 preference pairs.

    python -m bench.gate_share [--quick] [--steps 10] [--pairs 200] [--heldout 32]

A fresh store (.cache/bench-data/gate-share) with `--pairs` synthetic train pairs and `--heldout` held-out prompts
with pairs; `python -m training round --stages reward,dpo --max_steps <steps> --no_evaluate`, timed; then the gate
alone on the round's DPO version (`python -m training evaluate` with its defaults: 32 held-out prompts, 256 tokens,
judge none: the store has no reviewers), timed. An uncapped round runs 2 epochs of 4 pairs per step (100 steps per
stage on 200 pairs); the projection adds the steps the capped round skipped at each stage's measured training time
per step (its train_runtime minus its evaluations) and the evaluations it skipped (a stage evaluates every 10 % of
its steps: 10 times uncapped, once per step when capped below 10). Target: gate <= 15 % of the round's wall time.
"""

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bench.common import DATA_DIR, base_model_path, offline, preference_rows, report, verdict
from feedback_db import FeedbackStore
from training.base_model import load_tokenizer

EPOCHS = 2.0  # the reward and DPO recipes' default num_train_epochs
EVALS = 10  # a stage evaluates on the held-out pairs every 10 % of its steps (run_args eval_steps=0.1)


def fill(store: FeedbackStore, tokenizer, pairs: int, heldout: int) -> None:
    for i, row in enumerate(preference_rows(tokenizer, pairs + heldout, seed=1)):
        prompt_id = store.add_prompt(row["prompt"][0]["content"], source="bench",
                                     split="heldout" if i >= pairs else "train")
        store.add_preference_pair(prompt_id, row["chosen"][0]["content"], row["rejected"][0]["content"])


def stage_times(store: FeedbackStore, run_id: int) -> dict[str, dict]:
    """Per stage: steps run, steps of an uncapped run, training seconds per step (evaluations excluded)."""
    stages: dict[str, dict] = {}
    for metric in store.run_metrics(run_id):
        stage = stages.setdefault(metric.stage, {"evals": 0.0, "eval_count": 0, "steps": 0, "epoch": None,
                                                 "runtime": None})
        values = metric.metrics
        if "eval_runtime" in values:
            stage["evals"] += values["eval_runtime"]
            stage["eval_count"] += 1
        elif "loss" in values:  # a training step's row
            stage["steps"], stage["epoch"] = metric.step, values["epoch"]
        elif "train_runtime" in values:  # the trainer's summary row: the whole train() call, evaluations included
            stage["runtime"] = values["train_runtime"]
    for stage in stages.values():
        stage["full_steps"] = round(stage["steps"] / stage["epoch"] * EPOCHS)
        stage["step_s"] = (stage["runtime"] - stage["evals"]) / stage["steps"]
        stage["eval_s"] = stage["evals"] / stage["eval_count"]
    return stages


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="3 steps per stage (the projection gets noisier).")
    parser.add_argument("--steps", type=int, default=None, help="Steps per stage of the timed (capped) round "
                                                                "(default 10, quick 3).")
    parser.add_argument("--pairs", type=int, default=200)
    parser.add_argument("--heldout", type=int, default=32)
    args = parser.parse_args()
    offline()
    args.steps = args.steps or (3 if args.quick else 10)
    root = DATA_DIR / "gate-share"
    shutil.rmtree(root, ignore_errors=True)
    (root / "models").mkdir(parents=True)
    model = Path(base_model_path())
    (root / "models" / model.name).symlink_to(model.resolve(), target_is_directory=True)
    store = FeedbackStore(root / "tuneloop.db")
    fill(store, load_tokenizer(str(model)), args.pairs, args.heldout)
    db = str(root / "tuneloop.db")

    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "training", "round", "--db", db, "--stages", "reward,dpo", "--max_steps",
                    str(args.steps), "--no_evaluate", "--report_to", "none"], check=True)
    round_s = time.perf_counter() - started
    run = store.list_runs(1)[0]
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "training", "evaluate", "--db", db, "--version", run.versions[-1]],
                   check=True)
    gate_s = time.perf_counter() - started

    stages = stage_times(store, run.id)
    # the steps the capped round skipped, and its missing evaluations (fewer than 10 when capped below 10 steps)
    full_s = round_s + sum((s["full_steps"] - s["steps"]) * s["step_s"] + (EVALS - s["eval_count"]) * s["eval_s"]
                           for s in stages.values())
    rows = [[f"{name}: training s/step (evaluations excluded)", f"{s['step_s']:.1f}",
             f"{s['steps']} run, {s['full_steps']} uncapped"] for name, s in stages.items()]
    rows += [["round, capped, gate off", f"{round_s:.0f}", ""],
             ["gate (training evaluate, defaults)", f"{gate_s:.0f}", ""],
             ["gate share, capped round", f"{gate_s / (round_s + gate_s):.1%}", ""],
             ["gate share, uncapped round (projected)", f"{gate_s / (full_s + gate_s):.1%}",
              f"<= 15 %: {verdict(gate_s / (full_s + gate_s), 0.15, False)}"]]
    report("Gate share of a reward,dpo round (bench/gate_share.py)",
           f"{args.pairs} train pairs, {args.heldout} held-out prompts with pairs, round capped at {args.steps} "
           "steps per stage, gate with its defaults (judge none)", ["what", "seconds / share", "note"], rows)


if __name__ == "__main__":
    main()
