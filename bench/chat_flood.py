"""Benchmark: one user floods the chat, other users chat; their time to first token (TTFT).

    python -m bench.chat_flood [--flood-s 60] [--threads 8] [--probes 4] [--probe-every-s 5] [--py-spy FILE]

The real app (`python app.py`, default settings) on a free port. First the probe users alone (idle baseline), then
for `--flood-s` seconds one viewer (the flooder, in its own process so its client work does not slow the probes'
clocks) sends, from `--threads` parallel connections (one session each), the longest message allowed (8,000
characters), a history as long as the client can send (the server ignores it and keeps its own, capped),
max_new_tokens 1024 and temperature 0.7, as fast as the app answers (refusals included: "http 429" is refused by
the HTTP guard before the body is read, "refused" by the chat handler). Meanwhile `--probes`
other viewers each send a short question every `--probe-every-s` seconds (staggered; max_new_tokens 16) — each at
the rate its own per-user limit allows (one request per 5 s after a burst of 6), so no probe is refused and the
percentiles are over every probe chat. TTFT is measured like a browser sees it: from the POST to the first
streamed event carrying answer text. Target: probe p99 TTFT < 2 s under the flood. Writes a table to
docs/BENCHMARKS.md; `--py-spy FILE` also records the app's stacks during the flood (py-spy, Chrome trace
format: every sample timed, per thread; open it in ui.perfetto.dev).
"""

import argparse
import json
import multiprocessing
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import httpx

from bench.common import app_data_dir, median, offline, percentile, report, verdict
from bench.write_load import PASSWORD, free_port, start_app, stop_app
from feedback_db.store import FeedbackStore

TARGET_P99_S = 2.0
LONG_MESSAGE = ("Tell me everything about the history of computing, in detail. " * 130)[:8_000]
# in the Chatbot's own message format (string contents fail Gradio's preprocessing before any handler runs)
HUGE_HISTORY = [{"role": r, "content": [{"type": "text", "text": "padding " * 5_000}]}
                for r in ("user", "assistant")] * 4


def login(url: str, username: str) -> httpx.Client:
    client = httpx.Client(base_url=url, timeout=600)
    assert client.post("/login", data={"username": username, "password": PASSWORD}).status_code == 200
    return client


def chat(client: httpx.Client, session: str, message: str, history: list, max_new_tokens: int,
         temperature: float) -> tuple[str, float | None, float]:
    """(outcome, seconds to the first answer text or None, seconds in all). outcome: complete | refused | error."""
    started = time.perf_counter()
    body = {"data": [message, history, "active", max_new_tokens, temperature], "session_hash": session}
    posted = client.post("/gradio_api/call/chat", json=body)
    if posted.status_code != 200:
        return f"http {posted.status_code}", None, time.perf_counter() - started
    first, event = None, ""
    with client.stream("GET", f"/gradio_api/call/chat/{posted.json()['event_id']}") as stream:
        for line in stream.iter_lines():
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("data:"):
                data = json.loads(line[5:])
                if event == "generating" and first is None and data and data[1] and _text(data[1][-1]):
                    first = time.perf_counter() - started
                if event == "error":
                    refused = data and ("already have" in str(data) or "Too many" in str(data))
                    return "refused" if refused else "error", first, time.perf_counter() - started
                if event == "complete":
                    return "complete", first, time.perf_counter() - started
    return "closed", first, time.perf_counter() - started


def _text(message: dict) -> str:
    content = message.get("content")
    if isinstance(content, list):
        return "".join(block.get("text", "") for block in content if isinstance(block, dict))
    return content or ""


def probe(url: str, username: str, seconds: float, every_s: float, offset_s: float, ttfts: list[float],
          outcomes: Counter) -> None:
    client = login(url, username)
    time.sleep(offset_s)
    deadline = time.monotonic() + seconds - offset_s
    while time.monotonic() < deadline:
        started = time.monotonic()
        outcome, first, _ = chat(client, uuid.uuid4().hex[:11], "Name a primary colour.", [], 16, 0.0)
        outcomes[outcome] += 1
        if outcome == "complete" and first is not None:
            ttfts.append(first)
        else:
            print(f"[bench] {username} chat: {outcome}", flush=True)
        time.sleep(max(0.0, every_s - (time.monotonic() - started)))


def probes(url: str, count: int, seconds: float, every_s: float) -> tuple[list[float], Counter]:
    """`count` probe users chatting for `seconds`, each every `every_s`, staggered: (TTFTs, outcome counts)."""
    ttfts: list[float] = []
    outcomes: Counter = Counter()
    threads = [threading.Thread(target=probe, args=(url, f"probe{i}", seconds, every_s, i * every_s / count, ttfts,
                                                    outcomes)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return ttfts, outcomes


def flood_connection(client: httpx.Client, session: str, halt: threading.Event, outcomes: Counter) -> None:
    while not halt.is_set():
        try:
            outcome, _, _ = chat(client, session, LONG_MESSAGE, HUGE_HISTORY, 1024, 0.7)
        except (httpx.HTTPError, RuntimeError) as err:  # closed when the flood ends
            if halt.is_set():
                return
            outcome = f"client error {type(err).__name__}"
        outcomes[outcome] += 1


def flood(url: str, threads: int, stop: threading.Event, results: multiprocessing.Queue) -> None:
    """The flooder's process: `threads` parallel connections (one session each: Gradio's /call/ streams of one
    session_hash running in parallel break each other) until `stop`; puts "ready" on `results` once logged in, then
    its outcome counts."""
    halt = threading.Event()
    outcomes: Counter = Counter()
    clients = [login(url, "flooder") for _ in range(threads)]
    workers = [threading.Thread(target=flood_connection, args=(client, uuid.uuid4().hex[:11], halt, outcomes))
               for client in clients]
    results.put("ready")
    for worker in workers:
        worker.start()
    stop.wait()
    halt.set()
    for client in clients:  # end the streams (the app cancels their generation) instead of waiting minutes
        client.close()
    for worker in workers:
        worker.join(60)
    results.put(dict(outcomes))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--flood-s", type=float, default=60)
    parser.add_argument("--idle-s", type=float, default=20)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--probes", type=int, default=4, help="probe users (each under its own per-user limits)")
    parser.add_argument("--probe-every-s", type=float, default=5.0,
                        help="seconds between one probe user's chats (the app's default refill is 5 s)")
    parser.add_argument("--py-spy", type=Path, help="record the app's stacks during the flood to this file")
    parser.add_argument("--no-report", action="store_true", help="print the figures, leave docs/BENCHMARKS.md")
    args = parser.parse_args()
    offline()
    folder = app_data_dir("chat-flood")
    store = FeedbackStore(folder / "tuneloop.db")
    probe_users = [f"probe{i}" for i in range(args.probes)]
    for name in ("admin", "flooder", *probe_users):
        store.create_user(name, PASSWORD, "admin" if name == "admin" else "viewer")
    store.close()
    port = free_port()
    app = start_app(folder, port, folder / "app.log")
    url = f"http://127.0.0.1:{port}"
    spy = None
    try:
        idle, idle_outcomes = probes(url, args.probes, args.idle_s, args.probe_every_s)
        spawn = multiprocessing.get_context("spawn")  # a process of its own: its client work is not the probes'
        results: multiprocessing.Queue = spawn.Queue()
        stop = spawn.Event()
        flooder = spawn.Process(target=flood, args=(url, args.threads, stop, results))
        flooder.start()
        assert results.get(timeout=180) == "ready"
        if args.py_spy:
            spy = subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record", "--format", "chrometrace",
                                    "--threads", "-r", "50", "-o", str(args.py_spy), "-p", str(app.pid),
                                    "-d", str(int(args.flood_s))])
        time.sleep(1.0)  # the flood is under way before the first probe
        flooded, flood_outcomes = probes(url, args.probes, args.flood_s - 1.0, args.probe_every_s)
        stop.set()
        counts = results.get(timeout=120)
        flooder.join(60)
        if spy is not None:
            spy.wait(60)
    finally:
        stop_app(app)
    p99 = percentile(flooded, 99)
    fmt = lambda c: json.dumps(dict(sorted(c.items())))  # noqa: E731
    rows = [["idle (probes alone)", len(idle), median(idle), percentile(idle, 99), max(idle, default=float("nan")),
             fmt(idle_outcomes), "", ""],
            [f"flood ({args.threads} parallel, 8k chars, 1024 tokens)", len(flooded), median(flooded), p99,
             max(flooded, default=float("nan")), fmt(flood_outcomes), fmt(counts), verdict(p99, TARGET_P99_S, False)]]
    title = "Chat flood: other users' time to first token"
    settings = (f"flood {args.flood_s:.0f} s, {args.threads} parallel requests from one viewer (8,000-char message, "
                f"{len(json.dumps(HUGE_HISTORY)):,}-char client history, max_new_tokens 1024, temperature 0.7); "
                f"{args.probes} probe viewers, each every {args.probe_every_s:g} s (staggered), max_new_tokens 16")
    header = ["phase", "probe chats (n)", "TTFT p50 (s)", "TTFT p99 (s)", "TTFT max (s)", "probe outcomes",
              "flooder outcomes", f"p99 < {TARGET_P99_S:.0f} s"]
    notes = ["`python -m bench.chat_flood`; TTFT from the POST to the first streamed event with answer text.",
             "The flooder is held to 1 chat in flight (+1 side-by-side lane) and 6 requests then 1 per 5 s; its "
             "model input is cut to 1,024 tokens. Each probe user chats at the rate its own limit allows.",
             "Flooder outcomes: `http 429` = refused by the HTTP guard from the session cookie before its body was "
             "read; `refused` = by the chat handler (sent while its limits still allowed it)."]
    if args.no_report:
        print(title, settings, " | ".join(header), *(" | ".join(map(str, row)) for row in rows), sep="\n")
    else:
        report(title, settings, header, rows, notes)
    Path(folder / "result.json").write_text(json.dumps({"idle": idle, "flood": flooded, "outcomes": counts}))
    print(f"[bench] app log and result.json in {folder}")


if __name__ == "__main__":
    main()
