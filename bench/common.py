"""What every benchmark shares: the bench data dir, synthetic data, a matmul peak, step timing and the results file.

Benchmarks compare side by side in one process (or one run), alternating the contenders, and report ratios:
this machine's cores are shared, so absolute numbers drift and ratios are what to read. Each script prints its
table and appends it, dated and with the machine description, to docs/BENCHMARKS.md.
"""

import json
import os
import platform
import random
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import torch

from training.base_model import DEFAULT_BASE_MODEL, resolve_base_model
from training.hardware import describe, trainer_precision_kwargs

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "docs" / "BENCHMARKS.md"
DATA_DIR = ROOT / ".cache" / "bench-data"
TEST_CACHE = ROOT / ".cache" / "test-data"  # the test suite's converted model, reused to skip the 30 s conversion

RESULTS_HEADER = """# Benchmarks

Appended by `make bench` / `python -m bench.run_all [--quick]` (one section per script and run, newest last).
Every comparison runs side by side in one run with alternating repetitions; read the ratios, not the absolute
numbers, when the machine is shared.
"""


def offline() -> None:
    """The benchmarks run offline, like this machine: a hub lookup fails at once instead of hanging."""
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        os.environ.setdefault(name, "1")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("TQDM_DISABLE", "1")


def data_dir() -> Path:
    """`.cache/bench-data`; its model folder links to the test suite's converted model when that exists."""
    model = DATA_DIR / "models" / DEFAULT_BASE_MODEL
    cached = TEST_CACHE / "models" / DEFAULT_BASE_MODEL
    if not model.exists() and (cached / "config.json").is_file():
        model.parent.mkdir(parents=True, exist_ok=True)
        model.symlink_to(cached.resolve(), target_is_directory=True)
    return DATA_DIR


def base_model_path() -> str:
    return resolve_base_model(DEFAULT_BASE_MODEL, data_dir())


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    with open("/proc/cpuinfo") as f:
        names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
    if names:
        cpu = names[0]
    accelerator = describe()
    if torch.cuda.is_available():
        return f"{accelerator}; torch {torch.__version__}"
    return f"{accelerator}; {cpu}, {os.cpu_count()} cores; torch {torch.__version__}"


# ----- synthetic data ----------------------------------------------------------------------------------------
def _words(tokenizer) -> list[str]:
    """Common English words: single-token vocabulary entries that start a word (deterministic)."""
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])
    return [token[1:] for token, _ in vocab[:12000] if token.startswith("Ġ") and token[1:].isalpha()
            and len(token) > 3][:3000]


def _text(rng: random.Random, words: list[str], n: int) -> str:
    sentences, left = [], n
    while left > 0:
        k = min(left, rng.randint(6, 18))
        sentence = " ".join(rng.choice(words) for _ in range(k))
        sentences.append(sentence[0].upper() + sentence[1:] + ".")
        left -= k
    return " ".join(sentences)


def _answer_words(rng: random.Random) -> int:
    """Chat answers: mostly short, some long (log-normal, median ~90 words, clipped to 12..420)."""
    return int(min(420, max(12, rng.lognormvariate(4.5, 0.7))))


def sft_rows(tokenizer, n: int, seed: int = 0) -> list[dict]:
    """Conversational prompt/completion rows of varied length, like a store's demonstrations and corrections."""
    rng, words = random.Random(seed), _words(tokenizer)
    return [{"prompt": [{"role": "user", "content": _text(rng, words, rng.randint(6, 60))}],
             "completion": [{"role": "assistant", "content": _text(rng, words, _answer_words(rng))}]}
            for _ in range(n)]


def preference_rows(tokenizer, n: int, seed: int = 0) -> list[dict]:
    """Conversational prompt/chosen/rejected rows of varied length, like the store's preference pairs."""
    rng, words = random.Random(seed), _words(tokenizer)
    return [{"prompt": [{"role": "user", "content": _text(rng, words, rng.randint(6, 60))}],
             "chosen": [{"role": "assistant", "content": _text(rng, words, _answer_words(rng) // 2)}],
             "rejected": [{"role": "assistant", "content": _text(rng, words, _answer_words(rng) // 2)}]}
            for _ in range(n)]


def write_jsonl(rows: list[dict], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


# ----- compute ------------------------------------------------------------------------------------------------
def matmul_peak_gflops(dtype: torch.dtype = torch.float32, seconds: float = 3.0) -> float:
    """Best sustained GFLOP/s of square matmuls on this machine's default device (1024..2048 CPU, up to 8192 GPU)."""
    cuda = torch.cuda.is_available()
    best = 0.0
    for n in (2048, 4096, 8192) if cuda else (1024, 1536, 2048):
        a, b = (torch.randn(n, n, dtype=dtype, device="cuda" if cuda else "cpu") for _ in range(2))
        a @ b
        if cuda:
            torch.cuda.synchronize()
        reps, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds / 3:
            a @ b
            reps += 1
            if cuda and reps % 10 == 0:
                torch.cuda.synchronize()
        if cuda:
            torch.cuda.synchronize()
        best = max(best, 2 * n**3 * reps / (time.perf_counter() - started) / 1e9)
    return best


def matmul_params(model) -> int:
    """Parameters that take part in a matmul per token: every Linear (the LM head too), not the embedding lookup."""
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))


@dataclass
class StepLog:
    """What `trainer_steps` recorded: the start time and payload of every micro-step, and when train() ended."""

    starts: list[float] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)  # non-padding tokens per micro-step
    rows: list[int] = field(default_factory=list)  # examples (SFT rows, DPO pairs) per micro-step
    ended: float = 0.0

    def rate(self, per: str, warmup: int = 1) -> float:
        """Steady-state tokens/s or rows/s: from the start of step `warmup` to the end of training."""
        values = self.tokens if per == "tokens" else self.rows
        return sum(values[warmup:]) / (self.ended - self.starts[warmup])


def _count(inputs: dict) -> tuple[int, int]:
    """(non-padding tokens, examples) of one collated batch, padded or padding-free, SFT or DPO."""
    if "attention_mask" in inputs:
        tokens = int(inputs["attention_mask"].sum())
    else:
        tokens = int(inputs["input_ids"].numel())
    if "position_ids" in inputs and "attention_mask" not in inputs:  # padding-free: one row per sequence start
        rows = int((inputs["position_ids"] == 0).sum())
    else:
        rows = int(inputs["input_ids"].shape[0])
    return tokens, rows


@contextmanager
def trainer_steps(before_step: Callable[[StepLog], None] | None = None,
                  after_train: Callable[[StepLog], None] | None = None) -> Iterator[list[StepLog]]:
    """Record every `Trainer.training_step` (TRL's trainers all call it) of every `train()` run inside the block.

    Used to time a recipe from outside, without changing it: one StepLog per `train()` call. `before_step` runs
    after a step's start is recorded, `after_train` before the run's end is (e.g. to start and stop a profiler).
    """
    from transformers import Trainer

    logs: list[StepLog] = []
    original_step, original_train = Trainer.training_step, Trainer.train

    def training_step(self, model, inputs, *args, **kwargs):
        tokens, rows = _count(inputs)
        logs[-1].starts.append(time.perf_counter())
        logs[-1].tokens.append(tokens)
        logs[-1].rows.append(rows)
        if before_step:
            before_step(logs[-1])
        return original_step(self, model, inputs, *args, **kwargs)

    def train(self, *args, **kwargs):
        logs.append(StepLog())
        try:
            return original_train(self, *args, **kwargs)
        finally:
            if after_train:
                after_train(logs[-1])
            logs[-1].ended = time.perf_counter()

    Trainer.training_step, Trainer.train = training_step, train
    try:
        yield logs
    finally:
        Trainer.training_step, Trainer.train = original_step, original_train


@contextmanager
def recipe_data_dir(prefix: str, bf16: bool | None = None) -> Iterator[Path]:
    """A fresh data dir for one run of our recipe (removed afterwards), its default model linked to the converted
    one. `bf16`: the other precision than training.hardware picks, swapped in for this run only (the recipes take
    theirs from training.run_args)."""
    from training import run_args

    out = Path(tempfile.mkdtemp(prefix=prefix, dir=data_dir()))
    (out / "models").mkdir()
    (out / "models" / DEFAULT_BASE_MODEL).symlink_to(Path(base_model_path()).resolve())
    original = run_args.trainer_precision_kwargs
    if bf16 is not None:
        run_args.trainer_precision_kwargs = lambda: {**original(), "bf16": bf16}
    try:
        yield out
    finally:
        run_args.trainer_precision_kwargs = original
        shutil.rmtree(out, ignore_errors=True)


def recipe_vs_trl(ours: Callable[[bool | None], dict], plain_trl: Callable[[bool], dict],
                  skip_trl_defaults: bool) -> dict[str, Callable[[], dict]]:
    """The contenders of a recipe-vs-TRL benchmark: ours (and ours without autocast on a native-bf16 CPU), TRL's
    defaults (bf16 + checkpointing) unless skipped, and TRL in fp32 on CPU."""
    cpu = not torch.cuda.is_available()
    contenders = {"ours": lambda: ours(None)}
    if cpu and trainer_precision_kwargs()["bf16"]:  # the CPU has native bf16: also our recipe without autocast
        contenders["ours, fp32 (no autocast)"] = lambda: ours(False)
    if not skip_trl_defaults:
        contenders["trl-defaults"] = lambda: plain_trl(True)
    if cpu:
        contenders["trl-fp32"] = lambda: plain_trl(False)
    return contenders


def alternate(contenders: dict[str, Callable[[], dict]], repeats: int) -> dict[str, list[dict]]:
    """Run each contender `repeats` times in ABBA order (A B B A A B ...) so slow drifts of the machine cancel."""
    results: dict[str, list[dict]] = {name: [] for name in contenders}
    names = list(contenders)
    for r in range(repeats):
        for name in (names if r % 2 == 0 else names[::-1]):
            print(f"[bench] {name} (repeat {r + 1}/{repeats})", flush=True)
            results[name].append(contenders[name]())
    return results


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))] if ordered else float("nan")


# ----- results ------------------------------------------------------------------------------------------------
def markdown_table(headers: list[str], rows: list[list]) -> str:
    def cell(value) -> str:
        if isinstance(value, float):
            return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
        return str(value)

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def report(title: str, settings: str, headers: list[str], rows: list[list], notes: list[str] = ()) -> str:
    """Print the table and append it, dated and with the machine description, to docs/BENCHMARKS.md."""
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    text = "\n".join([f"## {title} — {stamp}", "", f"Machine: {machine()}  ", f"Settings: {settings}", "",
                      markdown_table(headers, rows), "", *[f"- {note}" for note in notes], ""])
    print("\n" + text, flush=True)
    if not RESULTS.is_file():
        RESULTS.write_text(RESULTS_HEADER)
    with RESULTS.open("a") as f:
        f.write("\n" + text)
    return text


def verdict(value: float, target: float, higher_is_better: bool = True) -> str:
    met = value >= target if higher_is_better else value <= target
    return "yes" if met else "no"


def app_data_dir(prefix: str) -> Path:
    """A fresh data dir under the bench data dir for one app started by a benchmark, its models folder linking every
    converted model of the bench data dir (no copy, no conversion)."""
    folder = data_dir() / f"{prefix}-{uuid.uuid4().hex[:6]}"
    models = folder / "models"
    models.mkdir(parents=True)
    for model in (data_dir() / "models").iterdir():
        (models / model.name).symlink_to(model.resolve(), target_is_directory=True)
    return folder
