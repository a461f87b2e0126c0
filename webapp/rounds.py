"""Training rounds as the app runs them (Admin › Rounds, the first-run panel): the admin's form becomes a
`training.round.RoundConfig` here and nowhere else in the app, and the runner starts, cancels, resumes and reaps the
round's process. The tabs reach it as `services.rounds`; the runner is the module training.runner (a fake in the web
tests). The app never runs a training loop itself."""

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from feedback_db.store import FeedbackStore
from training.round import RoundConfig, stage_hyperparameters


class RoundRunner(Protocol):
    """Starts and watches training processes: the module training.runner itself, or a fake in the web tests."""

    def start_round(self, store: FeedbackStore, data_dir: str | Path, cfg: RoundConfig) -> int: ...

    def cancel_run(self, store: FeedbackStore, run_id: int) -> bool: ...  # False: it had already finished

    def resume_round(self, store: FeedbackStore, data_dir: str | Path, run_id: int) -> int: ...

    def poll_runs(self, store: FeedbackStore, data_dir: str | Path) -> list[int]: ...  # dead processes -> failed

    def log_tail(self, data_dir: str | Path, run_id: int) -> str: ...


@dataclass
class Rounds:
    store: FeedbackStore
    runner: RoundRunner
    data_dir: Path
    base_model: str

    def config(self, stages: list[str], technique: str, freeze_top_n: int, parent: str, max_steps: int,
               learning_rate: float | None, lora_r: int, beta: float, evaluate: bool, auto_promote: bool,
               username: str, include_viewer_chat: bool = False, report_to: str = "tensorboard") -> RoundConfig:
        """The admin form → the round's config; hyper-parameters go to the stages that take them."""
        stage_args = stage_hyperparameters(stages, technique, learning_rate, lora_r, freeze_top_n, beta)
        return RoundConfig(db=self.store.path, data_dir=str(Path(self.data_dir).resolve()), stages=",".join(stages),
                           technique=technique, base_model=self.base_model, parent=parent, username=username,
                           max_steps=max_steps, stage_args=stage_args, evaluate=evaluate, auto_promote=auto_promote,
                           include_viewer_chat=include_viewer_chat, report_to=report_to)

    def start(self, cfg: RoundConfig) -> int:
        """Create the run row and start the round in its own process; returns the run id."""
        return self.runner.start_round(self.store, self.data_dir, cfg)

    def cancel(self, run_id: int) -> bool:
        return self.runner.cancel_run(self.store, run_id)

    def resume(self, run_id: int) -> int:
        return self.runner.resume_round(self.store, self.data_dir, run_id)

    def reap(self) -> list[int]:
        """Runs whose process died without a final status -> failed (the poller calls it)."""
        return self.runner.poll_runs(self.store, self.data_dir)

    def log(self, run_id: int) -> str:
        return self.runner.log_tail(self.data_dir, run_id)
