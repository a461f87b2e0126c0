"""Benchmark: a probe user's chat time to first token (TTFT) while a candidate-generation job runs (issue 14).

    python -m bench.job_probe [--quick] [--prompts 200] [--max-new-tokens 128] [--window-s 20] [--no-report]

The real app (`python app.py`, default settings) on a fresh data dir holding `--prompts` train prompts. First the
probe users chat alone (idle baseline). Then the admin starts a generation job the way Admin › Data does: the
`data_generate` event over HTTP (review task "single answer from active", every train prompt, `--max-new-tokens`,
temperature 0.7), and until the job ends the probe users chat in windows of `--window-s` seconds, alternating with
windows of no probe chat. Probe chats run one at a time (the users take turns, each within its own per-user limit:
one chat per 5 s), a short question with max_new_tokens 16, greedy; TTFT is measured like a browser sees it (bench
chat_flood's client: from the POST to the first streamed event carrying answer text). The job's progress (answers
done, new tokens) is read from the store every 0.5 s; its tokens/s is reported over the whole job and separately in
the windows with and without probe chats (the last `max batch` answers, the batch draining, left out), so a job
slowed by the chats shows. Target: probe p99 TTFT < 1 s during the job (the issue's chat target). `--quick`: 40
prompts, 32 new tokens, 10 s windows (about 2 minutes in all).
"""

import argparse
import json
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import httpx

from bench.chat_flood import chat, login
from bench.common import ROOT, app_data_dir, median, offline, percentile, report, verdict
from bench.write_load import PASSWORD, free_port, start_app, stop_app
from feedback_db.store import FeedbackStore
from feedback_db.vocab import SPLITS

TARGET_P99_S = 1.0
ENGINE_BATCH = 16  # webapp.serving.engine's max_batch: the job's last answers decode in a draining batch
QUESTION = "Name a primary colour."


def seed(folder: Path, prompts: int, probes: int) -> None:
    """A fresh store: an admin, `probes` viewers, and `prompts` train and `prompts` held-out prompts (the starter
    prompts, reworded past the first 120 so every text is new)."""
    lines = (ROOT / "feedback_db" / "assets" / "starter_prompts.jsonl").read_text().splitlines()
    texts = [json.loads(line)["prompt"] for line in lines]
    store = FeedbackStore(folder / "tuneloop.db")
    for name in ("admin", *(f"probe{i}" for i in range(probes))):
        store.create_user(name, PASSWORD, "admin" if name == "admin" else "viewer")
    with store.transaction():
        for i in range(2 * prompts):
            text = texts[i % len(texts)]
            for _ in range(i // len(texts)):
                text = f"In two sentences: {text}"
            store.add_prompt(text, source="bench", split=SPLITS[i % 2])
    store.close()


def call(client: httpx.Client, api_name: str, data: list) -> str:
    """One Gradio event through the queue, as the browser sends it; its final payload (raises on an error)."""
    posted = client.post(f"/gradio_api/call/{api_name}", json={"data": data, "session_hash": uuid.uuid4().hex[:11]})
    posted.raise_for_status()
    event = ""
    with client.stream("GET", f"/gradio_api/call/{api_name}/{posted.json()['event_id']}") as stream:
        for line in stream.iter_lines():
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("data:") and event in ("complete", "error"):
                if event == "error":
                    raise RuntimeError(f"{api_name}: {line[5:]}")
                return json.loads(line[5:])[0]
    raise RuntimeError(f"{api_name}: the stream closed without a result")


class Probe:
    """Probe users taking turns, one chat at a time; each user chats at most every `every_s` seconds."""

    def __init__(self, url: str, users: int, every_s: float) -> None:
        self.clients = [login(url, f"probe{i}") for i in range(users)]
        self.gap_s = every_s / users
        self.turn = 0
        self.last = -1e9
        self.timeline: list[tuple[float, float | None]] = []  # (monotonic start, TTFT) of every chat: outliers' times

    def chat_once(self) -> tuple[str, float | None]:
        time.sleep(max(0.0, self.last + self.gap_s - time.monotonic()))
        self.last = time.monotonic()
        client = self.clients[self.turn % len(self.clients)]
        self.turn += 1
        outcome, first, _ = chat(client, uuid.uuid4().hex[:11], QUESTION, [], 16, 0.0)
        self.timeline.append((self.last, first))
        return outcome, first

    def run(self, keep_going, ttfts: list[float], outcomes: Counter) -> None:
        while keep_going():
            outcome, first = self.chat_once()
            outcomes[outcome] += 1
            if outcome == "complete" and first is not None:
                ttfts.append(first)
            else:
                print(f"[bench] probe chat: {outcome}", flush=True)


def watch(store: FeedbackStore, job_id: int, samples: list[tuple[float, int, int]], ended: threading.Event) -> None:
    """(time, answers done, new tokens) every 0.5 s until the job ends."""
    while True:
        job = store.get_generation_job(job_id)
        samples.append((time.monotonic(), job.done, job.new_tokens))
        if len(samples) % 20 == 0:
            print(f"[bench] job {job.status}: {job.done}/{job.total} answers, {job.new_tokens} tokens", flush=True)
        if not job.active:
            ended.set()
            return
        time.sleep(0.5)


def run_job(admin: httpx.Client, store: FeedbackStore, split: str, max_new_tokens: int, probe: Probe | None) -> dict:
    """Start a job over the `split` prompts as the admin does, probe chats (if `probe`) until it ends; its figures."""
    started = time.monotonic()
    status = call(admin, "data_generate", ["single", "base", 3, split, max_new_tokens, 0.7])
    print(f"[bench] {status.splitlines()[0]}", flush=True)
    job = store.latest_generation_job()
    samples: list[tuple[float, int, int]] = []
    ended = threading.Event()
    watcher = threading.Thread(target=watch, args=(store, job.id, samples, ended))
    watcher.start()
    ttfts, outcomes = [], Counter()
    if probe is not None:
        probe.run(lambda: not ended.is_set(), ttfts, outcomes)
    watcher.join()
    job = store.get_generation_job(job.id)
    wall = samples[-1][0] - started
    shown = call(admin, "data_job", [])  # what the admin's Data tab shows at the end
    return {"job": job, "wall": wall, "tokens_per_s": job.new_tokens / wall, "ttfts": ttfts, "outcomes": outcomes,
            "shown": shown.splitlines()[-1], "samples": samples}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="40 prompts, 32 new tokens.")
    parser.add_argument("--prompts", type=int, default=None, help="Prompts per job (default 200).")
    parser.add_argument("--max-new-tokens", type=int, default=None, help="The job's answers (default 128).")
    parser.add_argument("--idle-chats", type=int, default=20, help="Probe chats before the job (idle baseline).")
    parser.add_argument("--probes", type=int, default=4, help="Probe users taking turns (each 1 chat per 5 s).")
    parser.add_argument("--no-report", action="store_true", help="print the figures, leave docs/BENCHMARKS.md")
    args = parser.parse_args()
    args.prompts = args.prompts or (40 if args.quick else 200)
    args.max_new_tokens = args.max_new_tokens or (32 if args.quick else 128)
    offline()
    folder = app_data_dir("job-probe")
    seed(folder, args.prompts, args.probes)
    port = free_port()
    app = start_app(folder, port, folder / "app.log")
    url = f"http://127.0.0.1:{port}"
    try:
        probe = Probe(url, args.probes, 5.0)
        probe.chat_once()  # warm-up: the first chat computes the template prefix's keys and values
        idle, idle_outcomes = [], Counter()
        probe.run(lambda: sum(idle_outcomes.values()) < args.idle_chats, idle, idle_outcomes)
        admin = login(url, "admin")
        store = FeedbackStore(folder / "tuneloop.db")
        probed = run_job(admin, store, "train", args.max_new_tokens, probe)
        alone = run_job(admin, store, "heldout", args.max_new_tokens, None)
        store.close()
    finally:
        stop_app(app)
    (folder / "result.json").write_text(json.dumps({"idle": idle, "during": probed["ttfts"], "samples": {
        "probed": probed["samples"], "alone": alone["samples"]}, "probe_timeline": probe.timeline}))
    fmt = lambda c: json.dumps(dict(sorted(c.items())))  # noqa: E731
    during = probed["ttfts"]
    p99 = percentile(during, 99)
    job_text = lambda r: (f"{r['job'].status}: {r['job'].done}/{r['job'].total} answers, "  # noqa: E731
                          f"{r['job'].new_tokens:,} tokens in {r['wall']:.0f} s")
    rows = [["probe chats alone (idle)", len(idle), median(idle), percentile(idle, 99),
             max(idle, default=float("nan")), fmt(idle_outcomes), "", "", ""],
            ["job (train prompts) + probe chats", len(during), median(during), p99, max(during, default=float("nan")),
             fmt(probed["outcomes"]), job_text(probed), probed["tokens_per_s"], verdict(p99, TARGET_P99_S, False)],
            ["job alone (held-out prompts, same count)", "", "", "", "", "", job_text(alone), alone["tokens_per_s"],
             ""],
            ["job with probe chats / job alone", "", "", "", "", "", "",
             probed["tokens_per_s"] / alone["tokens_per_s"], ""]]
    title = "Chats during a candidate-generation job: probe time to first token (bench/job_probe.py)"
    settings = (f"real app, fresh data dir, {args.prompts} train + {args.prompts} held-out prompts; two jobs started "
                f"by the admin's data_generate event (single answer from base, max_new_tokens {args.max_new_tokens}, "
                f"temperature 0.7), the first with probe chats, the second alone; {args.probes} probe viewers taking "
                "turns, one chat at a time (16 tokens, greedy)")
    header = ["phase", "probe chats (n)", "TTFT p50 (s)", "TTFT p99 (s)", "TTFT max (s)", "probe outcomes",
              "job", "job new tokens/s", f"p99 < {TARGET_P99_S:.0f} s"]
    notes = [f"`python -m bench.job_probe{' --quick' if args.quick else ''}`; TTFT from the POST to the first "
             "streamed event with answer text; job tokens/s = its new tokens over the wall time from the admin's "
             "click to the job's end (from its store row, what Admin › Data shows).",
             f"Data tab at the end of the probed job: {probed['shown']}"]
    if args.no_report:
        print(title, settings, " | ".join(header), *(" | ".join(map(str, row)) for row in rows), *notes, sep="\n")
    else:
        report(title, settings, header, rows, notes)
    print(f"[bench] app log and result.json in {folder}")


if __name__ == "__main__":
    main()
