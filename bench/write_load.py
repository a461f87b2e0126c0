"""Benchmark 5: feedback write load through the app's HTTP API: ratings/s, p50/p99 latency, rows lost.

    python -m bench.write_load [--quick] [--clients 32] [--seconds 60]

Starts the real app (`python app.py`) on 127.0.0.1 over a fresh data dir seeded with reviewers and enough
single-answer review items for the run, then `--clients` concurrent clients, each logged in as its own reviewer
(POST /login, form username/password -> session cookie), rate for `--seconds`: the client opens its queue once
(`review_next`, mode single), then calls `review_rate` (thumbs up, Likert 4) in a loop through Gradio's API
(POST /gradio_api/call/review_rate, then read its event stream until `complete`). Each rating's latency runs from
the POST to the `complete` event; that handler also returns the reviewer's next item, like the UI's Submit.
Rows lost = ratings acknowledged to a client that are not in the store afterwards (must be 0). The clients run in
this process and share the CPU with the app (loopback only).
"""

import argparse
import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

from bench.common import ROOT, base_model_path, data_dir, median, offline, percentile, report, verdict
from feedback_db.store import FeedbackStore
from training.base_model import DEFAULT_BASE_MODEL

PASSWORD = "bench-password-1"
API = "/gradio_api"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def seed(folder: Path, clients: int, items: int) -> list[str]:
    """A store with `clients` reviewers and `items` prompts with one answer each (single-answer review items)."""
    store = FeedbackStore(folder / "tuneloop.db")
    users = [f"rater{i:02d}" for i in range(clients)]
    for username in users:
        store.create_user(username, PASSWORD, "reviewer")
    for start in range(0, items, 1000):
        with store.transaction():
            for i in range(start, min(items, start + 1000)):
                prompt = store.add_prompt(f"Bench question {i}: what is {i} plus {i}?", source="bench")
                store.add_response(prompt, f"{i} plus {i} is {2 * i}.", "base")
    store.close()
    return users


def store_floor(folder: Path, ratings: int) -> float:
    """Milliseconds of store work per rating, in-process and one thread: what the review_rate handler asks of the
    store (the caller's user, the rating, the next item, the queue progress), without Gradio or HTTP."""
    store = FeedbackStore(folder / "tuneloop.db")
    store.create_user("floor", PASSWORD, "reviewer")
    item = store.next_item("floor", "single")
    started = time.perf_counter()
    for _ in range(ratings):
        store.get_user("floor")
        store.add_rating(item.response_ids[0], "floor", thumbs=1, likert=4)
        item = store.next_item("floor", "single")
        store.queue_progress("floor", "single")
    elapsed = time.perf_counter() - started
    store.close()
    return 1000 * elapsed / ratings


def start_app(folder: Path, port: int, log: Path) -> subprocess.Popen:
    out = log.open("wb")
    process = subprocess.Popen([sys.executable, "app.py", "--data-dir", str(folder), "--port", str(port)], cwd=ROOT,
                               stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                               env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"})
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"The app exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/", timeout=2).status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    process.kill()
    raise RuntimeError(f"The app did not answer on port {port} within 180 s:\n{log.read_text()[-3000:]}")


def stop_app(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()


async def call(client: httpx.AsyncClient, api_name: str, data: list, session: str, timeout: float) -> tuple[bool, str]:
    """One Gradio API call through the queue: (succeeded, last event payload)."""
    posted = await client.post(f"{API}/call/{api_name}", json={"data": data, "session_hash": session},
                               timeout=timeout)
    if posted.status_code != 200:
        return False, f"HTTP {posted.status_code}: {posted.text[:200]}"
    event_id = posted.json()["event_id"]
    event = ""
    async with client.stream("GET", f"{API}/call/{api_name}/{event_id}", timeout=timeout) as stream:
        async for line in stream.aiter_lines():
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("data:") and event in ("complete", "error"):
                return event == "complete", line[5:].strip()
    return False, f"stream ended after event {event!r}"


async def open_session(client: httpx.AsyncClient, username: str, timeout: float) -> str:
    """Log in as `username` and open the single-answer queue; returns the Gradio session hash."""
    login = await client.post("/login", data={"username": username, "password": PASSWORD}, timeout=timeout)
    if login.status_code != 200:
        raise RuntimeError(f"login {username}: HTTP {login.status_code} {login.text[:200]}")
    session = uuid.uuid4().hex[:11]
    ok, payload = await call(client, "review_next", ["single"], session, timeout)
    if not ok:
        raise RuntimeError(f"review_next {username}: {payload[:200]}")
    return session


async def rater(client: httpx.AsyncClient, username: str, session: str, deadline: float, timeout: float,
                stats: dict) -> None:
    while time.monotonic() < deadline:
        started = time.perf_counter()
        try:
            ok, payload = await call(client, "review_rate", ["up", "4", ""], session, timeout)
        except httpx.HTTPError as err:
            ok, payload = False, f"{type(err).__name__}: {err}"
        if ok:
            stats["latencies"].append(time.perf_counter() - started)
            stats["acked"][username] = stats["acked"].get(username, 0) + 1
            if "Nothing left" in payload:
                stats["errors"].append(f"{username}: queue empty (seed more items)")
                return
        else:
            stats["failed"] += 1
            stats["errors"].append(f"review_rate {username}: {payload[:200]}")


async def load(port: int, users: list[str], seconds: float, timeout: float) -> dict:
    """Log every client in and open its queue first (not timed), then rate for `seconds`."""
    stats = {"latencies": [], "acked": {}, "failed": 0, "errors": []}
    limits = httpx.Limits(max_connections=4, max_keepalive_connections=4)
    clients = [httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", limits=limits) for _ in users]
    try:
        sessions = await asyncio.gather(*(open_session(c, u, timeout) for c, u in zip(clients, users, strict=True)))
        started = time.monotonic()
        await asyncio.gather(*(rater(c, u, s, started + seconds, timeout, stats)
                               for c, u, s in zip(clients, users, sessions, strict=True)))
        stats["elapsed"] = time.monotonic() - started
    finally:
        await asyncio.gather(*(c.aclose() for c in clients))
    return stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="10 s instead of 60 s.")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=None, help="Load duration (default 60, quick 10).")
    parser.add_argument("--items", type=int, default=None, help="Review items seeded (default 350/s x duration).")
    parser.add_argument("--timeout", type=float, default=30.0, help="Per-request timeout in seconds.")
    args = parser.parse_args()
    offline()
    seconds = args.seconds or (10.0 if args.quick else 60.0)
    items = args.items or int(350 * seconds)

    folder = Path(tempfile.mkdtemp(prefix="write-load-", dir=data_dir()))
    (folder / "models").mkdir()
    (folder / "models" / DEFAULT_BASE_MODEL).symlink_to(Path(base_model_path()).resolve(), target_is_directory=True)
    seeding = time.perf_counter()
    users = seed(folder, args.clients, items)
    print(f"[bench] seeded {items} review items and {len(users)} reviewers in {time.perf_counter() - seeding:.0f} s",
          flush=True)
    floor_ms = store_floor(folder, 100)
    port = free_port()
    app = start_app(folder, port, folder / "app.log")
    try:
        stats = asyncio.run(load(port, users, seconds, args.timeout))
    finally:
        stop_app(app)
    store = FeedbackStore(folder / "tuneloop.db")
    stored = {u: 0 for u in users}
    for rating in store.list_ratings():
        stored[rating.username] = stored.get(rating.username, 0) + 1
    store.close()
    acked = stats["acked"]
    lost = sum(max(0, acked.get(u, 0) - stored[u]) for u in users)
    unacked = sum(max(0, stored[u] - acked.get(u, 0)) for u in users)
    lat = stats["latencies"]
    rate = len(lat) / stats["elapsed"]
    p50, p99 = 1000 * median(lat), 1000 * percentile(lat, 99)
    rows = [["ratings/s", rate, ">= 300", verdict(rate, 300)],
            ["p50 latency ms", p50, "", ""],
            ["p99 latency ms", p99, "< 200", verdict(p99, 200, higher_is_better=False)],
            ["ratings acknowledged", len(lat), "", ""],
            ["requests failed", stats["failed"], "0", verdict(stats["failed"], 0, higher_is_better=False)],
            ["rows lost (acknowledged, not stored)", lost, "0", verdict(lost, 0, higher_is_better=False)],
            ["rows stored but not acknowledged (client timeout)", unacked, "", ""]]
    rows.append(["store work per rating, in-process, 1 thread (ms)", floor_ms, "", ""])
    notes = [f"Store work alone allows at most ~{1000 / floor_ms:.0f} ratings/s per busy core; the rest of each "
             "request's cost is Gradio (queue, event stream, JSON) and HTTP.",
             f"First errors: {json.dumps(stats['errors'][:3])}" if stats["errors"] else "No errors."]
    report("Feedback write load through the HTTP API (bench/write_load.py)",
           f"app.py (Gradio queue, default_concurrency_limit as app.py sets it), {args.clients} clients x "
           f"{seconds:.0f} s, endpoint review_rate, {items} single-answer items seeded, loopback",
           ["metric", "value", "target", "met?"], rows, notes)
    shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
