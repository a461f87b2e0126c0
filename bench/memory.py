"""Benchmark 6b: peak resident memory (RSS) of the app while serving chats and of training runs.

    python -m bench.memory [--quick]

Serving: the real app (`python app.py`) on 127.0.0.1, a logged-in user sends `--chats` concurrent chat requests
(API `chat`, 128 new tokens) twice over; the peak is the app process's VmHWM. Training: `python -m training sft`
and `python -m training dpo` on the benchmarks' synthetic data (LoRA, batch 4, the longest rows first), each in its
own process, peak = that child's ru_maxrss (os.wait4), with the recipes' default micro-batch (training.hardware:
one row per forward pass on CPU) and again with the 4 rows/pairs of a step in one forward pass (the GPU default).
Targets: serving <= 1.5 GB, training <= 4 GB.
"""

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx

from bench.common import (
    ROOT,
    base_model_path,
    data_dir,
    offline,
    preference_rows,
    report,
    sft_rows,
    verdict,
    write_jsonl,
)
from bench.write_load import PASSWORD, call, free_port, start_app, stop_app
from feedback_db.store import FeedbackStore
from training.base_model import DEFAULT_BASE_MODEL, load_tokenizer
from training.hardware import micro_batch

GB = 1024**3
# The whole optimizer batch (4 rows/pairs) in one forward pass: the GPU default, and the CPU default before
# training.hardware.micro_batch made it one row per forward pass
ONE_FORWARD = ("--per_device_train_batch_size", "4")


def vm_hwm(pid: int) -> int:
    """Peak resident set size of a running process, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"No VmHWM for pid {pid}")


async def chat_load(port: int, chats: int, rounds: int) -> int:
    """`chats` concurrent chat requests, `rounds` times; returns how many completed."""
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
        login = await client.post("/login", data={"username": "memory", "password": PASSWORD})
        login.raise_for_status()
        done = 0
        for r in range(rounds):
            results = await asyncio.gather(*(
                call(client, "chat", [f"Tell me a long story about otter number {r * chats + i}.", [], "active",
                                      128, 0.0], f"mem{r}x{i}", timeout=600)
                for i in range(chats)))
            done += sum(ok for ok, _ in results)
        return done


def serving_peak(folder: Path, chats: int, rounds: int) -> tuple[int, int]:
    store = FeedbackStore(folder / "tuneloop.db")
    store.create_user("memory", PASSWORD, "reviewer")
    store.close()
    port = free_port()
    app = start_app(folder, port, folder / "app.log")
    try:
        done = asyncio.run(chat_load(port, chats, rounds))
        return vm_hwm(app.pid), done
    finally:
        stop_app(app)


def training_peak(folder: Path, method: str, dataset_file: Path, steps: int, flags: tuple[str, ...] = ()) -> int:
    """Run one recipe in its own process; return its peak RSS (bytes)."""
    log = (folder / f"{method}.log").open("wb")
    process = subprocess.Popen([sys.executable, "-m", "training", method, "--dataset_file", str(dataset_file),
                                "--data_dir", str(folder), "--parent", "base", "--max_steps", str(steps), *flags],
                               cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                               env={**os.environ, "TQDM_DISABLE": "1"})
    _, status, usage = os.wait4(process.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"training {method} failed:\n{(folder / f'{method}.log').read_text()[-3000:]}")
    return usage.ru_maxrss * 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="Fewer chats and training steps.")
    parser.add_argument("--chats", type=int, default=4)
    args = parser.parse_args()
    offline()
    rounds, steps = (1, 2) if args.quick else (2, 4)

    folder = Path(tempfile.mkdtemp(prefix="memory-", dir=data_dir()))
    (folder / "models").mkdir()
    (folder / "models" / DEFAULT_BASE_MODEL).symlink_to(Path(base_model_path()).resolve(), target_is_directory=True)
    tokenizer = load_tokenizer(base_model_path())
    longest = sorted(sft_rows(tokenizer, 64, seed=3), key=lambda row: -len(row["completion"][0]["content"]))
    pairs = sorted(preference_rows(tokenizer, 64, seed=4), key=lambda row: -len(row["chosen"][0]["content"]))
    sft_file = write_jsonl(longest[: 4 * steps], folder / "sft.jsonl")
    dpo_file = write_jsonl(pairs[: 4 * steps], folder / "pairs.jsonl")

    serving, done = serving_peak(folder, args.chats, rounds)
    sft = training_peak(folder, "sft", sft_file, steps)
    sft_one = training_peak(folder, "sft", sft_file, steps, ONE_FORWARD)
    dpo = training_peak(folder, "dpo", dpo_file, steps)
    dpo_one = training_peak(folder, "dpo", dpo_file, steps, ONE_FORWARD)
    per_device, accumulation = micro_batch(4, None)
    micro = f"{per_device} per forward x {accumulation} accumulated"
    rows = [[f"app serving ({done} chats, {args.chats} concurrent)", serving / GB, "<= 1.5",
             verdict(serving / GB, 1.5, higher_is_better=False)],
            [f"training sft (LoRA, {steps} steps x 4 longest rows, {micro})", sft / GB, "<= 4",
             verdict(sft / GB, 4, higher_is_better=False)],
            [f"training sft, 4 rows in one forward pass (GPU default; CPU before; same {steps} steps)", sft_one / GB,
             "<= 4", verdict(sft_one / GB, 4, higher_is_better=False)],
            [f"training dpo (LoRA, {steps} steps x 4 longest pairs, {micro})", dpo / GB, "<= 4",
             verdict(dpo / GB, 4, higher_is_better=False)],
            [f"training dpo, 4 pairs in one forward pass (GPU default; CPU before; same {steps} steps)", dpo_one / GB,
             "<= 4", verdict(dpo_one / GB, 4, higher_is_better=False)]]
    report("Peak memory (bench/memory.py)",
           "peak RSS (VmHWM / ru_maxrss) of each process; serving fp32, training in training.hardware's precision",
           ["process", "peak RSS GB", "target GB", "met?"], rows)
    shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
