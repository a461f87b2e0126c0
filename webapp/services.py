"""The Services bundle handed to `build_ui(services)`: the store, the served models, auth, the generation jobs, the
training rounds.

Built once by app.py (or with fakes by the tests). Holds the operations that touch both the store and the model
service: which versions can be served, promoting (hot-swap + store + audit), deciding human sign-off gates, and the
background poller that follows the store's active version. Candidate generation lives in webapp/jobs.py, rounds in
webapp/rounds.py, version export in webapp/exports.py, the gate's read side in webapp/gates.py.
"""

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from feedback_db.store import FeedbackStore
from webapp import gates
from webapp.auth import Auth
from webapp.chat_answers import ChatAnswers
from webapp.jobs import GenerationJobs
from webapp.rounds import RoundRunner, Rounds
from webapp.serving.errors import BASE, VersionLoadError
from webapp.serving.protocol import Models
from webapp.usage_limits import UsageLimits

log = logging.getLogger("tuneloop.webapp")


@dataclass
class Services:
    store: FeedbackStore
    models: Models  # webapp.serving.service.ModelService
    auth: Auth
    runner: RoundRunner
    data_dir: Path
    base_model: str
    annotators_per_item: int = 1  # reviewers who judge each item (2+ gives the agreement stats something to measure)
    notices: list[str] = field(default_factory=list)  # start-up / hot-swap problems, shown in the banner
    answers: ChatAnswers = field(default_factory=ChatAnswers)  # what the chat model said, for thumbs
    usage: UsageLimits = field(default_factory=UsageLimits)  # per-user in-flight and rate limits on model work
    _failed_version: str | None = None  # a version that failed to load; not retried every poll
    _swap_lock: threading.Lock = field(default_factory=threading.Lock)
    jobs: GenerationJobs = field(init=False)  # candidate generation (webapp/jobs.py)
    rounds: Rounds = field(init=False)  # training rounds (webapp/rounds.py)

    def __post_init__(self) -> None:
        self.jobs = GenerationJobs(self.store, self.models, self.ensure_loaded)
        self.rounds = Rounds(self.store, self.runner, self.data_dir, self.base_model)

    # ----- versions -------------------------------------------------------------------------------------
    def servable_versions(self) -> list[str]:
        """`base` plus every chat-model version (reward models are not servable), newest first."""
        versions = [v for v in self.store.list_versions() if v.method != "reward" and v.status != "rejected"]
        return [BASE, *(v.name for v in sorted(versions, key=lambda v: -v.id))]

    def ensure_loaded(self, name: str) -> None:
        """Load a stored version into the model service if needed; raise VersionLoadError when it is unusable."""
        if not self.models.is_loaded(name):
            self.models.load_version(name, self._servable_path(name))

    def _servable_path(self, name: str) -> Path:
        version = self.store.get_version(name)
        if version is None:
            raise VersionLoadError(f"Version {name!r} does not exist.")
        if version.method == "reward":
            raise VersionLoadError(f"Version {name!r} is a reward model, not a chat model.")
        return Path(version.path)

    def promote(self, name: str, username: str) -> None:
        """Hot-swap `name` in (no restart) and record it as the store's active version."""
        with self._swap_lock:
            self.ensure_loaded(name)
            self.models.activate(name)
            self.store.set_active(None if name == BASE else name, username=username)
            self._failed_version = None
        self.store.audit(username, "promote", {"version": name})

    def sync_active(self) -> bool:
        """Follow the store's active version (set by the evaluation gate, the SDK or another app process).
        Returns whether it swapped."""
        active = self.store.active_version()
        name = active.name if active else BASE
        if name == self.models.active or name == self._failed_version:
            return False
        with self._swap_lock:
            try:  # loading inside activate: one turn of the model lock for both
                self.models.activate(name, None if self.models.is_loaded(name) else self._servable_path(name))
                log.info("Hot-swapped to %s", name)
                return True
            except VersionLoadError as err:
                self._failed_version = name
                message = f"Active version {name} could not be loaded, serving {self.models.active}: {err}"
                log.error(message)
                self.notices.append(message)
                return False

    def banner(self) -> str:
        active = self.store.active_version()
        serving = self.models.active
        detail = f" ({active.method}, {active.technique}, parent {active.parent or 'base'})" if (
            active and active.name == serving) else ""
        lines = [f"**Serving `{serving}`**{detail} · base model `{Path(self.base_model).name}`"]
        lines += [f"⚠️ {notice}" for notice in self.notices[-3:]]
        return "  \n".join(lines)

    def start_poller(self, interval_s: float = 1.0, watch_s: float = 0.1) -> threading.Event:
        """Background thread: hot-swap when the store's active version changes, reap dead training processes.

        Every `watch_s` it reads SQLite's data_version (changes on any other connection's commit) and re-reads the
        active version only then; every `interval_s` it reaps runs and, unless a swap just happened, prepares the
        model service's spare LoRA slot (so that injecting it never delays a new version's first tokens)."""
        stop = threading.Event()

        def loop() -> None:
            seen, next_slow, swapped_at = None, 0.0, 0.0
            while not stop.wait(watch_s):
                try:
                    if (version := self.store.data_version()) != seen:
                        seen = version
                        if self.sync_active():
                            swapped_at = time.monotonic()
                    if time.monotonic() >= next_slow:
                        next_slow = time.monotonic() + interval_s
                        self.rounds.reap()
                        self.check_gates()
                        if time.monotonic() - swapped_at >= interval_s:
                            self.models.prepare_spare()
                except Exception:  # a poll failure must not kill the thread; the next poll retries
                    seen = None
                    log.exception("poller")

        threading.Thread(target=loop, name="tuneloop-poller", daemon=True).start()
        return stop

    # ----- evaluation gate ----------------------------------------------------------------------------------
    def check_gates(self) -> list[str]:
        """Decide every human sign-off gate whose votes are all in; a pass with no refusal is promoted (hot-swap),
        unless the version it was compared with is no longer the active one. Returns the versions decided."""
        waiting = [v for v in self.store.list_versions()
                   if (v.metrics.get("gate") or {}).get("mode") == "human"
                   and v.metrics["gate"]["status"] == "waiting"]
        decided = []
        for version in waiting:
            gate = gates.gate_status(self.store, version.name)
            if gate["missing_votes"]:
                continue
            verdict = dict(gate.pop("verdict"))
            active = self.store.active_version()
            if verdict["promote"] and (active.name if active else BASE) != gate["compared_with"]:
                verdict["promote"] = False
                verdict["reason"] += (f"; not auto-promoted: the active version changed since the gate started (it "
                                      f"compared with {gate['compared_with']}): promote by hand")
            gate.pop("missing_votes")
            final = {**gate, "status": verdict["status"], "verdict": verdict}
            self.store.update_version_metrics(version.name, {"gate": final, "win_rate_vs_active": verdict["win_rate"],
                                                             "promoted": verdict["promote"]})
            if verdict["promote"]:
                self.promote(version.name, "evaluation-gate")
            decided.append(version.name)
        return decided
