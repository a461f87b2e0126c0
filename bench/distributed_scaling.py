"""Multi-process training: the SFT and DPO recipes in 1 process vs 2 processes (`torchrun`, gloo on CPU), same data.

    python -m bench.distributed_scaling [--steps 6] [--repeats 1] [--methods sft,dpo]

Each run is the real CLI (`python -m training <method>` or `torchrun --nproc_per_node 2 -m training <method>`) on
synthetic JSONL rows with the same `--batch_size` (rows or pairs per optimizer step, summed over the processes:
`training.hardware.micro_batch`), so both contenders do the same optimizer steps on the same rows. Runs alternate
(1 2 2 1 ...). Figures come from the published version's metrics (`train_runtime_s`, the trainer's own clock; SFT
`tokens_per_s` counts the tokens of all processes); the wall time includes process start-up and model loading.
On a CPU machine both contenders share the same cores (torchrun gives each process OMP_NUM_THREADS=1), so this
checks the path and its overhead; it is not where data parallelism gains speed.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import (
    ROOT,
    base_model_path,
    data_dir,
    median,
    offline,
    preference_rows,
    report,
    sft_rows,
    write_jsonl,
)
from training.base_model import load_tokenizer

BATCH = 4


def run(method: str, processes: int, dataset: Path, out_dir: Path, steps: int) -> dict:
    """One CLI run; returns the published version's metrics plus the wall time."""
    launcher = [sys.executable, "-m", "training"] if processes == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes), "-m", "training"]
    command = [*launcher, method, "--dataset_file", str(dataset), "--data_dir", str(out_dir), "--parent", "base",
               "--max_steps", str(steps), "--batch_size", str(BATCH), "--max_length", "512"]
    started = time.perf_counter()
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True,
                            env={**os.environ, "TQDM_DISABLE": "1"})
    wall = time.perf_counter() - started
    if result.returncode:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    folder = Path(result.stdout.split()[-1])  # without a store the recipe prints the published folder
    return {**json.loads((folder / "tuneloop.json").read_text())["metrics"], "wall_s": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--methods", default="sft,dpo")
    args = parser.parse_args()
    offline()
    tokenizer = load_tokenizer(base_model_path())
    rows = []
    with tempfile.TemporaryDirectory(prefix="tuneloop-dist-") as tmp:
        out_dir = Path(tmp)
        (out_dir / "models").symlink_to((data_dir() / "models").resolve(), target_is_directory=True)
        files = {"sft": write_jsonl(sft_rows(tokenizer, BATCH * args.steps), out_dir / "sft.jsonl"),
                 "dpo": write_jsonl(preference_rows(tokenizer, BATCH * args.steps), out_dir / "dpo.jsonl")}
        for method in args.methods.split(","):
            runs: dict[int, list[dict]] = {1: [], 2: []}
            for _ in range(args.repeats):
                for processes in (1, 2, 2, 1):
                    runs[processes].append(run(method, processes, files[method], out_dir, args.steps))
            single = median([r["train_runtime_s"] for r in runs[1]])
            for processes, results in runs.items():
                runtime = median([r["train_runtime_s"] for r in results])
                rows_per_s = BATCH * args.steps / runtime
                tokens = median([r["tokens_per_s"] for r in results]) if method == "sft" else None
                rows.append([method, processes, f"{median([r['wall_s'] for r in results]):.1f}", f"{runtime:.1f}",
                             f"{rows_per_s:.2f}", f"{tokens:.0f}" if tokens else "-",
                             f"{tokens / processes:.0f}" if tokens else "-", f"{single / runtime:.2f}x"])
    report("Multi-process training (torchrun, gloo)",
           f"`python -m bench.distributed_scaling --steps {args.steps} --repeats {args.repeats}`; LoRA, "
           f"--batch_size {BATCH} rows/pairs per optimizer step over all processes, {args.steps} steps, base parent",
           ["method", "processes", "wall s (start-up incl.)", "train s", "rows or pairs/s", "tokens/s (all)",
            "tokens/s per process", "speed vs 1 process"], rows,
           ["Both contenders share this machine's cores: on CPU the 2-process run checks the path, it does not add "
            "compute. On a multi-GPU machine each process has its own GPU (`bench/gpu_bench.sh`)."])


if __name__ == "__main__":
    main()
