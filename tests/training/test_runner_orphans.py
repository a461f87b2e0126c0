"""A round that outlived its app (kill -9 of the app) is stopped at the next start; other processes never are."""

import subprocess
import sys
import time
from pathlib import Path

from feedback_db.store import FeedbackStore
from training.runner import stop_orphaned_runs


def test_stop_orphaned_runs_kills_only_that_runs_training_process(tmp_path) -> None:
    store = FeedbackStore(tmp_path / "tuneloop.db")
    orphan_id = store.create_run(config={}, stages=["sft"], username="admin")
    other_id = store.create_run(config={}, stages=["sft"], username="admin")
    sleep = "import time; time.sleep(120)"
    # `python -c` ignores the arguments after it: a process whose command line looks like that run's round
    orphan = subprocess.Popen([sys.executable, "-c", sleep, "-m", "training", "round", "--run_id", str(orphan_id)],
                              start_new_session=True)
    # a process that reused a run's pid but is something else entirely
    stranger = subprocess.Popen([sys.executable, "-c", sleep], start_new_session=True)
    deadline = time.monotonic() + 10  # until it has exec'd, /proc shows the forking pytest's command line
    while b"sleep" not in Path(f"/proc/{orphan.pid}/cmdline").read_bytes() and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        store.update_run(orphan_id, status="running", pid=orphan.pid)
        store.update_run(other_id, status="running", pid=stranger.pid)
        assert stop_orphaned_runs(store) == [orphan_id]
        assert orphan.wait(timeout=10) == -9
        time.sleep(0.2)
        assert stranger.poll() is None
        assert store.mark_interrupted_runs() == 2
        assert store.get_run(orphan_id).status == "interrupted"
    finally:
        stranger.kill()
        orphan.kill()
