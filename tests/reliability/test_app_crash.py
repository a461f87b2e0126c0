"""kill -9 of the app while 16 HTTP clients submit ratings (and a training round runs), then a restart.

Every rating whose request was acknowledged (the API's `complete` event reached the client) must be in the store
after the crash; the run left running is marked interrupted at the next start; the store passes integrity_check.
"""

import json
import os
import signal
import sqlite3
import threading
import time

import httpx

from tests.e2e.live_app import LiveApp, add_users, make_data_dir
from tests.reliability.test_faults import integrity, run_row, seed_demonstrations, wait_run
from training.versions import pid_alive

CLIENTS = 16
ITEMS = 900  # single-answer review items: more than the clients can rate before the kill


def seed_items(data_dir, n: int = ITEMS) -> None:
    from feedback_db.store import FeedbackStore

    store = FeedbackStore(data_dir / "tuneloop.db")
    with store.transaction():
        for i in range(n // 3):
            prompt_id = store.add_prompt(f"Crash-test question {i}?")
            for j in range(3):
                store.add_response(prompt_id, f"Answer {j} to question {i}.", "base")
    store.close()


def rater(app: LiveApp, username: str, acknowledged: list, sent: list, stop: threading.Event) -> None:
    """Log in, then rate single answers until the app dies. A rating counts as acknowledged once `complete`."""
    try:
        client = app.session(username)
        assert app.call(client, "review_next", ["single"])[0] == "complete"
        n = 0
        while not stop.is_set():
            comment = f"{username}-{n}"
            sent.append(comment)
            event, data = app.call(client, "review_rate", ["up", "4", comment], timeout_s=30)
            if event != "complete":
                return
            acknowledged.append((username, comment))
            n += 1
    except (httpx.HTTPError, AssertionError):  # the app is gone (or was never reachable for this client)
        return


def test_kill_9_app_under_16_raters_loses_no_acknowledged_rating(tmp_path, base_model_path):
    data_dir = make_data_dir(tmp_path, base_model_path)
    raters = {f"r{i:02d}": "reviewer" for i in range(CLIENTS)}
    add_users(data_dir)
    add_users(data_dir, raters)
    seed_items(data_dir)
    seed_demonstrations(data_dir)
    app = LiveApp.start(data_dir)
    round_pid = None
    try:
        admin = app.session("admin")
        event, out = app.call(admin, "rounds_start", [["sft"], "lora", 4, "base", 500, None, 4, 0.1, False, False])
        assert event == "complete", out
        run_id = out[2]["value"] if isinstance(out[2], dict) else out[2]
        round_pid = wait_run(data_dir, run_id, ("running",), timeout_s=120)["pid"]

        acknowledged, sent, stop = [], [], threading.Event()
        threads = [threading.Thread(target=rater, args=(app, name, acknowledged, sent, stop), daemon=True)
                   for name in raters]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 120
        while len(acknowledged) < 60 and time.monotonic() < deadline:
            time.sleep(0.05)
        app.kill9()  # mid-stream: requests in flight on every client
        stop.set()
        for thread in threads:
            thread.join(60)
        assert len(acknowledged) >= 60, f"only {len(acknowledged)} ratings acknowledged before the kill"
        assert run_row(data_dir, run_id)["status"] == "running"

        restarted = LiveApp.start(data_dir)
        try:
            with sqlite3.connect(f"file:{data_dir / 'tuneloop.db'}?mode=ro", uri=True) as conn:
                stored = set(conn.execute("SELECT username, comment FROM ratings").fetchall())
            lost = [a for a in acknowledged if a not in stored]
            assert lost == [], f"{len(lost)} acknowledged ratings lost: {lost[:5]}"
            assert run_row(data_dir, run_id)["status"] == "interrupted"
            assert integrity(data_dir) == "ok"
            event, counts = restarted.call(restarted.session("admin"), "data_counts", [])
            assert event == "complete"
            assert dict(counts[0]["data"])["ratings"] == len(stored)
            report = {"clients": CLIENTS, "sent": len(sent), "acknowledged": len(acknowledged),
                      "stored": len(stored), "lost": len(lost), "in_flight_at_kill": len(sent) - len(acknowledged),
                      "orphan_round_still_running": pid_alive(round_pid)}
            print("\n" + json.dumps(report))
        finally:
            restarted.stop()
    finally:
        app.stop()
        if round_pid is not None:  # the round runs in its own session: it outlives the killed app
            try:
                os.killpg(round_pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


