"""The real app in a subprocess (`python app.py --data-dir <tmp> --port <free port>`) and a small HTTP client for it.

Used by the browser tests (tests/e2e) and the fault / security tests (tests/reliability):

    app = LiveApp.start(data_dir)            # waits until the login page answers
    admin = app.session("admin")             # an httpx.Client logged in as that user
    event, data = app.call(admin, "data_counts", [])  # ("complete", outputs) | ("error", message) | ("http 401", body)
    app.kill9(); app = LiveApp.start(data_dir)          # crash and restart on the same data dir
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "correct-horse-battery"
ADMIN = "admin"
USERS = {ADMIN: "admin", "rita": "reviewer", "vic": "viewer"}  # created before start-up (TUNELOOP_ADMIN only
# creates an admin in a store without users)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_data_dir(root: Path, base_model_path: str) -> Path:
    """A data dir whose models/ links to the cached converted default model (as tests/conftest.py's data_dir)."""
    models = Path(root) / "models"
    models.mkdir(parents=True, exist_ok=True)
    link = models / "smollm2-135m-instruct"
    if not link.exists():
        link.symlink_to(base_model_path, target_is_directory=True)
    return Path(root)


def add_users(data_dir: Path, users: dict[str, str] = USERS, password: str = PASSWORD) -> None:
    """Create users in the data dir's store (before the app starts)."""
    from feedback_db.store import FeedbackStore

    store = FeedbackStore(Path(data_dir) / "tuneloop.db")
    for username, role in users.items():
        if store.get_user(username) is None:
            store.create_user(username, password, role)
    store.close()


@dataclass
class LiveApp:
    data_dir: Path
    port: int
    process: subprocess.Popen
    log_path: Path
    sessions: dict[int, str] = field(default_factory=dict)  # id(client) -> session_hash (gr.State lives there)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @classmethod
    def start(cls, data_dir: Path, timeout_s: float = 180, extra_env: dict | None = None,
              args: tuple[str, ...] = ()) -> "LiveApp":
        data_dir = Path(data_dir)
        port = free_port()
        log_path = data_dir / f"app-{port}.log"
        env = {**os.environ, "TUNELOOP_ADMIN": f"{ADMIN}:{PASSWORD}", "GRADIO_ANALYTICS_ENABLED": "False",
               "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "TQDM_DISABLE": "1",
               **(extra_env or {})}
        with log_path.open("ab") as out:
            process = subprocess.Popen([sys.executable, "app.py", "--data-dir", str(data_dir), "--port", str(port),
                                        *args],
                                       cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       env=env)
        app = cls(data_dir, port, process, log_path)
        deadline = time.monotonic() + timeout_s
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the app exited with {process.returncode} during start-up:\n{app.log()[-4000:]}")
            try:
                if httpx.get(app.url + "/", timeout=5).status_code == 200:
                    return app
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                app.stop()
                raise TimeoutError(f"the app did not answer within {timeout_s} s:\n{app.log()[-4000:]}")
            time.sleep(0.5)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        if self.alive():
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def kill9(self) -> None:
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def session(self, username: str | None, password: str = PASSWORD) -> httpx.Client:
        """An HTTP client logged in as `username` (None: anonymous), with its own Gradio session (gr.State)."""
        client = httpx.Client(base_url=self.url, timeout=120)
        if username:
            response = client.post("/login", data={"username": username, "password": password})
            assert response.status_code == 200, (username, response.status_code, response.text)
        self.sessions[id(client)] = uuid.uuid4().hex[:11]
        return client

    def call(self, client: httpx.Client, api_name: str, data: list, timeout_s: float = 120) -> tuple[str, object]:
        """POST /gradio_api/call/<name>, then read its event stream: ("complete", outputs) or ("error", message)."""
        body = {"data": data, "session_hash": self.sessions.get(id(client))}
        started = client.post(f"/gradio_api/call/{api_name}", json=body, timeout=timeout_s)
        if started.status_code != 200:
            return f"http {started.status_code}", started.text
        event = ""
        with client.stream("GET", f"/gradio_api/call/{api_name}/{started.json()['event_id']}",
                           timeout=timeout_s) as stream:
            for line in stream.iter_lines():
                if line.startswith("event:"):
                    event = line.split(":", 1)[1].strip()
                elif line.startswith("data:") and event in ("complete", "error"):
                    return event, json.loads(line.split(":", 1)[1])
        return event or "closed", None

    def queue(self, client: httpx.Client, fn_index: int, data: list, event_data: dict | None = None) -> str:
        """Run an event the way the browser does: /queue/join with fn_index (and the event's data), then read the
        session's SSE stream: "complete", "error: <message>", "http <status>" (refused at the door) or "closed"."""
        session_hash = self.sessions[id(client)]
        joined = client.post("/gradio_api/queue/join", json={"data": data, "fn_index": fn_index,
                                                             "session_hash": session_hash, "event_data": event_data,
                                                             "trigger_id": None})
        if joined.status_code != 200:
            return f"http {joined.status_code}"
        with client.stream("GET", f"/gradio_api/queue/data?session_hash={session_hash}") as stream:
            for line in stream.iter_lines():
                if line.startswith("data:"):
                    message = json.loads(line[5:])
                    if message.get("msg") == "process_completed":
                        output = message.get("output") or {}
                        return "complete" if message.get("success") else f"error: {output.get('error')}"
        return "closed"

    def upload(self, client: httpx.Client, path: Path) -> dict:
        """Upload a file as the browser does; returns the FileData an endpoint takes."""
        with Path(path).open("rb") as f:
            response = client.post("/gradio_api/upload", files={"files": (Path(path).name, f)})
        response.raise_for_status()
        (uploaded,) = response.json()
        return {"path": uploaded, "meta": {"_type": "gradio.FileData"}, "orig_name": Path(path).name}
