"""Benchmark 3: hot-swap latency and failed requests, idle and under load.

    python -m bench.hot_swap [--quick] [--swaps 10] [--chats 4] [--gap 2.5]

The app's own pieces in one process: a FeedbackStore, the ModelService and `Services` with its background poller
(`start_poller()`, as app.py starts it: data_version watched every 0.1 s, runs reaped and the spare LoRA slot
prepared every 1 s). One probe thread sends 1-token requests back to back throughout; in the loaded case `--chats`
threads also chat without pause (ModelService.stream, 40 new tokens each). The two cases alternate swap by swap
(the chats pause and drain before an idle swap). Each swap is a round's tail: a new LoRA adapter is saved into
versions/.tmp-*, then (the clock starts after the save) published with `training.versions.publish_version` and
made active with `store.set_active`, as the evaluation gate does. The latency is from the end of the save to the
first token a request gets from the new version (the probe's or a chat's, whichever is first). Every exception in
a chat or probe counts as a failed request. Swaps are `--gap` seconds apart (rounds are minutes apart; the poller
prepares the spare slot in between).
"""

import argparse
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model

from bench.common import base_model_path, data_dir, median, offline, percentile, report, verdict
from feedback_db.store import FeedbackStore
from training import runner as training_runner
from training.base_model import DEFAULT_BASE_MODEL, load_causal_lm
from training.versions import LORA_TARGETS, new_tmp_dir, publish_version
from webapp.auth import Auth
from webapp.services import Services
from webapp.serving.service import ModelService

QUESTION = [{"role": "user", "content": "Tell me something about otters."}]


class Served:
    """Every first token any request got: (monotonic time, version). Appended from several threads."""

    def __init__(self) -> None:
        self.first_tokens: list[tuple[float, str]] = []
        self.failed: list[str] = []
        self.requests = 0
        self.chats_in_flight = 0
        self.lock = threading.Lock()

    def first(self, version: str) -> None:
        with self.lock:
            self.first_tokens.append((time.perf_counter(), version))

    def first_of(self, version: str, after: float) -> float | None:
        with self.lock:
            times = [t for t, v in self.first_tokens if v == version and t >= after]
        return min(times) if times else None


def client(models: ModelService, served: Served, stop: threading.Event, max_new_tokens: int,
           go: threading.Event | None = None) -> None:
    """A chat (while `go` is set) or the probe (always) that sends requests back to back until `stop`; records first
    tokens and failures."""
    chat = int(go is not None)  # counted in chats_in_flight
    while not stop.is_set():
        if go is not None and not go.wait(0.05):
            continue
        with served.lock:
            served.chats_in_flight += chat
        try:
            version = models.active
            tokens = models.stream(QUESTION, version=version, max_new_tokens=max_new_tokens)
            next(tokens)
            served.first(version)
            for _ in tokens:
                pass
            with served.lock:
                served.requests += 1
        except Exception as err:  # noqa: BLE001 - every failure is what this benchmark counts
            with served.lock:
                served.failed.append(f"{type(err).__name__}: {err}")
        finally:
            with served.lock:
                served.chats_in_flight -= chat


def timestamps(models: ModelService) -> dict[str, dict[str, float]]:
    """Wrap this service's load_version/activate to note when each version was loaded and activated."""
    marks: dict[str, dict[str, float]] = {}
    load_version, activate = models.load_version, models.activate

    def timed_load(name: str, path: Path) -> None:
        marks.setdefault(name, {})["load_start"] = time.perf_counter()
        load_version(name, path)
        marks[name]["loaded"] = time.perf_counter()

    def timed_activate(name: str, path: Path | None = None) -> None:
        activate(name, path)
        marks.setdefault(name, {})["active"] = time.perf_counter()

    models.load_version, models.activate = timed_load, timed_activate
    return marks


def new_services(folder: Path) -> Services:
    store = FeedbackStore(folder / "tuneloop.db")
    base = base_model_path()
    return Services(store=store, models=ModelService(base, folder / "versions"), auth=Auth(store),
                    runner=training_runner,
                    data=None, data_dir=folder, base_model=base)


def save_adapter(lora_model, folder: Path, seed: int) -> Path:
    """The round's final save: a LoRA adapter with distinct (random) weights, written to a .tmp- folder."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, param in lora_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.02)
    tmp = new_tmp_dir(folder, "sft")
    lora_model.save_pretrained(tmp)
    return tmp


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="3 swaps per case.")
    parser.add_argument("--swaps", type=int, default=None, help="Swaps per case (default 10: 20 swaps in all).")
    parser.add_argument("--chats", type=int, default=4, help="Concurrent chats in the loaded case.")
    parser.add_argument("--gap", type=float, default=2.5, help="Seconds between one swap being served and the next.")
    parser.add_argument("--timeout", type=float, default=20.0, help="Give up on one swap after this many seconds.")
    args = parser.parse_args()
    offline()
    swaps = args.swaps or (3 if args.quick else 10)
    cases = ["idle", f"{args.chats} chats"]

    folder = Path(tempfile.mkdtemp(prefix="hot-swap-", dir=data_dir()))
    (folder / "models").mkdir()
    (folder / "models" / DEFAULT_BASE_MODEL).symlink_to(Path(base_model_path()).resolve(), target_is_directory=True)
    services = new_services(folder)
    lora_model = get_peft_model(load_causal_lm(base_model_path()),
                                LoraConfig(r=16, lora_alpha=32, target_modules=LORA_TARGETS, task_type="CAUSAL_LM"))
    marks = timestamps(services.models)
    served, stop, chatting = Served(), threading.Event(), threading.Event()
    threads = [threading.Thread(target=client, args=(services.models, served, stop, 40, chatting), daemon=True)
               for _ in range(args.chats)]
    threads.append(threading.Thread(target=client, args=(services.models, served, stop, 1), daemon=True))
    for t in threads:
        t.start()
    poller = services.start_poller()  # app.py's settings

    latencies: dict[str, list[float]] = {case: [] for case in cases}
    phases: dict[str, list[tuple[float, float, float]]] = {case: [] for case in cases}
    publish_s: list[float] = []
    missed = 0
    warmup: float | None = None
    for i in range(-1, swaps * len(cases)):  # swap -1: the first adapter after start wraps the base in PEFT
        case = cases[i % len(cases)]
        if case == "idle":
            chatting.clear()
            while served.chats_in_flight:
                time.sleep(0.01)
        else:
            chatting.set()
        time.sleep(args.gap + 0.037 * (i % 3))  # swaps land at different phases of the 0.1 s watch cycle
        tmp = save_adapter(lora_model, folder, seed=i)
        saved = time.perf_counter()
        name = publish_version(services.store, tmp, method="sft", technique="lora", parent=None,
                               base_model=base_model_path(), config={"bench": True}, data_snapshot=None, metrics={})
        services.store.set_active(name, username="evaluation-gate")
        publish_s.append(time.perf_counter() - saved)
        deadline = saved + args.timeout
        while (first := served.first_of(name, saved)) is None and time.perf_counter() < deadline:
            time.sleep(0.005)
        if first is None:
            missed += 1
            print(f"[bench] swap {i + 1}: {name} not served within {args.timeout} s", flush=True)
            continue
        if i < 0:
            warmup = first - saved
            continue
        latencies[case].append(first - saved)
        m = marks[name]
        phases[case].append((m["load_start"] - saved, m["loaded"] - m["load_start"], first - m["active"]))
        print(f"[bench] swap {i + 1} ({case}): {name} first token after {first - saved:.3f} s (noticed "
              f"{phases[case][-1][0]:.3f}, load {phases[case][-1][1]:.3f}, first token "
              f"{phases[case][-1][2]:.3f})", flush=True)
    poller.set()
    stop.set()
    chatting.set()
    for t in threads:
        t.join(timeout=60)

    rows = []
    for case, values in latencies.items():
        worst = max(values) if values else float("nan")
        noticed, loaded, first = (median([p[k] for p in phases[case]]) for k in range(3))
        rows.append([case, len(values), median(values), percentile(values, 90), worst, noticed, loaded, first,
                     verdict(worst, 1.0, higher_is_better=False)])
    failed = len(served.failed)
    load_average = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    notes = [
        f"Requests served during the swaps: {served.requests}; failed: {failed} (target 0: "
        f"{verdict(failed, 0, higher_is_better=False)}); swaps never served within {args.timeout:g} s: {missed}.",
        f"Publishing (tuneloop.json, rename, register, set_active) took {1000 * median(publish_s):.0f} ms median; "
        "the rest is the poller noticing the change, loading the adapter and the first token.",
        "Not counted: the first swap after start (the first adapter wraps the base model in PEFT): "
        + (f"{warmup:.2f} s." if warmup is not None else "not served in time."),
        "Target <= 1 s is judged on the worst swap of each case. Phases (medians): noticed = save -> the poller "
        "starts loading (its 0.1 s watch, store reads, then its turn of the model lock, at most one forward pass); "
        "load = ModelService.load_version; 1st token = activated -> first token served.",
        f"Load average (1, 5, 15 min) at the end: {load_average}.",
    ]
    if served.failed:
        notes.append(f"First failure: {served.failed[0]}")
    report("Hot-swap: final save -> first token of the new version (bench/hot_swap.py)",
           f"SmolLM2-135M + LoRA r=16 adapters, {swaps} swaps per case at app.py's poller settings, {args.gap:g} s "
           f"apart; idle = 1 probe (1-token requests back to back), loaded = {args.chats} concurrent chats (40 "
           "tokens each) + the probe; every swap a new version (load from disk)",
           ["case", "swaps", "median s", "p90 s", "worst s", "noticed s", "load s", "1st token s", "worst <= 1 s?"],
           rows, notes)
    services.store.close()
    shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
