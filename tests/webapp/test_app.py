"""app.py, the composition root: flags, create-user, the first admin from TUNELOOP_ADMIN, start-up recovery."""

import subprocess
import sys
import time
from pathlib import Path

import pytest

from app import build_services, create_user, first_admin, parse_args
from feedback_db.store import FeedbackStore
from tests.webapp.conftest import PASSWORD


def test_defaults_bind_localhost():
    args = parse_args([])
    assert (args.command, args.host, args.port, args.data_dir, args.base_model) == (
        "serve", "127.0.0.1", 7860, Path("data"), "smollm2-135m-instruct")


def test_create_user_from_flags(tmp_path):
    create_user(parse_args(["create-user", "--data-dir", str(tmp_path), "--role", "admin", "--username", "root",
                            "--password", PASSWORD]))
    assert FeedbackStore(tmp_path / "tuneloop.db").authenticate("root", PASSWORD).role == "admin"


@pytest.mark.parametrize("password", ["short", " " * 12, "x" * 1025])
def test_cli_and_tuneloop_admin_apply_the_password_policy(tmp_path, password):
    with pytest.raises(SystemExit, match="User not created: the password"):
        create_user(parse_args(["create-user", "--data-dir", str(tmp_path), "--role", "admin", "--username",
                                "root", "--password", password]))
    store = FeedbackStore(tmp_path / "tuneloop.db")
    first_admin(store, f"boss:{password}")
    assert store.list_users() == []
    with pytest.raises(SystemExit, match="control or invisible"):
        create_user(parse_args(["create-user", "--data-dir", str(tmp_path), "--username", "ro\u202eot",
                                "--password", PASSWORD]))


def test_start_up_creates_first_admin_marks_runs_and_survives_a_broken_active_version(data_dir, monkeypatch):
    store = FeedbackStore(data_dir / "tuneloop.db")
    run_id = store.create_run({}, ["sft"], "someone")
    store.update_run(run_id, status="running")
    # a round started from a shell (`python -m training round --db tuneloop.db`) that is still training
    cli_round = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", "-m", "training", "round",
                                  "--db", "tuneloop.db"], cwd=data_dir)
    deadline = time.monotonic() + 10  # until it has exec'd, /proc shows the forking pytest's command line
    while b"training" not in Path(f"/proc/{cli_round.pid}/cmdline").read_bytes() and time.monotonic() < deadline:
        time.sleep(0.01)
    live_id = store.create_run({}, ["sft"], "shell")
    store.update_run(live_id, status="running", pid=cli_round.pid)
    store.register_version(name="v1-sft", parent=None, method="sft", technique="lora",
                           path=str(data_dir / "versions" / "v1-sft"), base_model="x", config={}, data_snapshot={},
                           metrics={})
    store.set_active("v1-sft")  # its directory does not exist
    monkeypatch.setenv("TUNELOOP_ADMIN", f"boss:{PASSWORD}")
    services = build_services(parse_args(["--data-dir", str(data_dir)]))
    assert services.store.authenticate("boss", PASSWORD).role == "admin"
    assert services.store.get_run(run_id).status == "interrupted"
    assert services.store.get_run(live_id).status == "running"  # a live CLI round is not mislabelled
    cli_round.kill()
    cli_round.wait()
    assert services.models.active == "base"
    assert "v1-sft could not be loaded" in services.banner()
