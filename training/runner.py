"""Start, cancel and watch training rounds from the app. The app never runs a training loop itself.

    run_id = start_round(store, "data", RoundConfig(db=store.path, stages="sft,reward,dpo"))
    cancel_run(store, run_id)          # SIGTERM to the round's process group; it marks itself cancelled
    resume_round(store, "data", run_id)  # a cancelled/interrupted/failed run continues (finished stages kept)
    poll_runs(store, "data")           # the app's poller calls this every second

Each round is `python -m training round --config data/runs/<id>/round.yaml --run_id N` in its own session
(process group), its stdout/stderr in data/runs/<id>/log.txt. `poll_runs` marks a run failed (with the log tail)
when its process is gone but the run never reached a final status (e.g. kill -9, out of memory), and deletes
output folders dead runs left.
"""

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import asdict, replace
from pathlib import Path

from feedback_db.models import Run
from feedback_db.vocab import FINAL_RUN_STATUSES
from training.round import RESUMABLE, RoundConfig, write_round_file
from training.versions import pid_alive, remove_stale_tmp_dirs

ROOT = Path(__file__).resolve().parent.parent
_children: dict[int, subprocess.Popen] = {}  # run id -> process started by this app process (reaped by poll)


def log_path(data_dir: str | Path, run_id: int) -> Path:
    return Path(data_dir) / "runs" / str(run_id) / "log.txt"


def log_tail(data_dir: str | Path, run_id: int, chars: int = 4000) -> str:
    path = log_path(data_dir, run_id)
    if not path.is_file():
        return ""
    with path.open("rb") as f:
        f.seek(max(0, path.stat().st_size - chars))
        return f.read().decode("utf-8", errors="replace")


def start_round(store, data_dir: str | Path, cfg: RoundConfig) -> int:
    """Create the run row, write the config to data/runs/<id>/round.yaml and spawn the round process reading it;
    returns the run id at once."""
    cfg = replace(cfg, db=store.path, data_dir=str(Path(data_dir).resolve()))
    run_id = store.create_run(config=asdict(cfg), stages=cfg.stage_list, username=cfg.username)
    path = write_round_file(cfg, run_id)
    _spawn(store, data_dir, run_id, round_command(path, run_id))
    return run_id


def round_command(config: Path, run_id: int, *extra: str) -> list[str]:
    # --run_id stays on the command line: stop_orphaned_runs recognises a round's process by it
    return [sys.executable, "-m", "training", "round", "--config", str(config), "--run_id", str(run_id), *extra]


def resume_round(store, data_dir: str | Path, run_id: int) -> int:
    """Continue run `run_id` in a new round process (`round --resume`): same run row, config, snapshot and log."""
    run = store.get_run(run_id)
    if run.status not in RESUMABLE:
        raise ValueError(f"Run {run_id} is {run.status}; only {', '.join(RESUMABLE)} runs can be resumed.")
    store.update_run(run_id, status="queued", error="")  # not final: the watcher and the UI wait for the process
    command = [sys.executable, "-m", "training", "round", "--db", store.path, "--data_dir",
               str(Path(data_dir).resolve()), "--run_id", str(run_id), "--resume", str(run_id)]
    _spawn(store, data_dir, run_id, command)
    return run_id


def _spawn(store, data_dir: str | Path, run_id: int, command: list[str]) -> None:
    log = log_path(data_dir, run_id)
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        process = subprocess.Popen(
            command,
            cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1", "TQDM_DISABLE": "1"},
        )
    _children[run_id] = process
    store.update_run(run_id, pid=process.pid)


def cancel_run(store, run_id: int) -> bool:
    """SIGTERM to the run's process group. Returns False when the run had already finished."""
    run = store.get_run(run_id)
    if run.status in FINAL_RUN_STATUSES:
        return False
    if run.pid is None or not _process_running(run_id, run.pid):
        store.update_run(run_id, status="cancelled")
        return True
    os.killpg(run.pid, signal.SIGTERM)
    return True


def poll_runs(store, data_dir: str | Path) -> list[int]:
    """Mark runs whose process died without a final status as failed; returns their ids."""
    failed = []
    for run in store.list_runs():
        if run.status in FINAL_RUN_STATUSES or run.pid is None or _process_running(run.id, run.pid):
            continue
        if store.get_run(run.id).status in FINAL_RUN_STATUSES:  # it finished between the two reads
            continue
        store.update_run(run.id, status="failed", error="The training process exited without a final status "
                         "(killed or out of memory); see the log tail.", log_tail=log_tail(data_dir, run.id))
        failed.append(run.id)
    remove_stale_tmp_dirs(data_dir)
    return failed


def stop_orphaned_runs(store) -> list[int]:
    """At app start: kill rounds a previous app process started that are still training (the app died, e.g. kill -9).

    A round outlives its app (it has its own session); left alone it would finish later and overwrite the
    `interrupted` status, or even auto-promote a version nobody is watching. Only processes whose command line
    is that run's `python -m training round ... --run_id N` are killed, so a reused pid is never hit.
    """
    stopped = []
    for run, cmdline in _live_rounds(store):
        if _contains(cmdline, [b"--run_id", str(run.id).encode()]):
            os.killpg(run.pid, signal.SIGKILL)
            stopped.append(run.id)
    return stopped


def live_cli_runs(store) -> list[int]:
    """At app start: unfinished runs whose process is alive and is a training round for this store (started with
    `python -m training round --db <this store>`, e.g. from a shell). They are not interrupted; poll_runs marks
    them failed if the process dies without a final status."""
    live = []
    for run, cmdline in _live_rounds(store):
        if b"--db" not in cmdline[:-1]:
            continue
        try:
            cwd = Path(os.readlink(f"/proc/{run.pid}/cwd"))
        except OSError:
            continue
        db = cmdline[cmdline.index(b"--db") + 1].decode(errors="replace")
        if (cwd / db).resolve() == Path(store.path).resolve():
            live.append(run.id)
    return live


def _live_rounds(store) -> Iterator[tuple[Run, list[bytes]]]:
    """Unfinished runs whose process is alive and runs `python -m training round`, with its command line."""
    for run in store.list_runs():
        if run.status in FINAL_RUN_STATUSES or run.pid is None or not pid_alive(run.pid):
            continue
        try:
            cmdline = Path(f"/proc/{run.pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if _contains(cmdline, [b"-m", b"training", b"round"]):
            yield run, cmdline


def _contains(items: list[bytes], run: list[bytes]) -> bool:
    return any(items[i:i + len(run)] == run for i in range(len(items)))


def _process_running(run_id: int, pid: int) -> bool:
    """Our own children are reaped through Popen (a dead child stays a zombie until then)."""
    if run_id in _children:
        return _children[run_id].poll() is None
    return pid_alive(pid)
