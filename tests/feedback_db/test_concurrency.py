"""Many threads and a second process writing one database file: every write lands, no lock error escapes."""

import subprocess
import sys
import threading
import time
from pathlib import Path

from feedback_db import FeedbackStore

ROOT = Path(__file__).resolve().parents[2]
THREADS, WRITES = 32, 200


def test_32_threads_x_200_mixed_writes(store: FeedbackStore) -> None:
    prompt = store.add_prompt("Q")
    a = store.add_response(prompt, "A", "base")
    b = store.add_response(prompt, "B", "v1-sft")
    run = store.create_run({}, ["sft"], "admin")
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            for i in range(WRITES):
                match i % 5:
                    case 0:
                        store.add_rating(a, f"u{n}", thumbs=i % 2, likert=1 + i % 5)
                    case 1:
                        store.add_comparison(a, b, "a", f"u{n}")
                    case 2:
                        store.add_correction(b, f"fix {n}/{i}", f"u{n}")
                    case 3:
                        store.add_run_metrics(run, n * WRITES + i, "sft", {"loss": 1.0 / (i + 1)})
                    case 4:
                        store.audit(f"u{n}", "write", {"i": i})
        except BaseException as exc:  # collected and re-raised below: a thread's exception would be lost
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]
    tables = ("ratings", "comparisons", "corrections", "run_metrics", "audit")
    assert sum(store.count(t) for t in tables) == THREADS * WRITES == 6400
    assert all(store.count(t) == THREADS * WRITES // 5 for t in tables)


WRITER = """
import sys
from feedback_db import FeedbackStore
store = FeedbackStore(sys.argv[1])
run = int(sys.argv[2])
store.update_run(run, status="running", stage="sft")
for step in range(200):
    store.add_run_metrics(run, step, "sft", {"loss": 2.0 - step / 200})
store.register_version("v1-sft", None, "sft", "lora", "/versions/v1-sft", "base", {}, {}, {"loss": 1.0})
store.update_run(run, status="succeeded", versions=["v1-sft"])
"""


def test_training_process_writes_while_app_reads_and_writes(store: FeedbackStore) -> None:
    run = store.create_run({"stages": "sft"}, ["sft"], "admin")
    child = subprocess.Popen([sys.executable, "-c", WRITER, store.path, str(run)], cwd=ROOT)
    seen = 0
    deadline = time.monotonic() + 60
    while child.poll() is None and time.monotonic() < deadline:
        metrics = store.run_metrics(run, after_id=0)
        assert [m.step for m in metrics] == list(range(len(metrics)))  # a reader never sees a partial write
        seen = max(seen, len(metrics))
        store.audit("admin", "poll", {"seen": seen})  # the app keeps writing too
    assert child.wait(timeout=60) == 0
    assert len(store.run_metrics(run)) == 200
    final = store.get_run(run)
    assert (final.status, final.versions, final.finished is not None) == ("succeeded", ["v1-sft"], True)
    assert store.get_version("v1-sft").metrics == {"loss": 1.0}
