"""Fixtures for the web app: the real store in a temp dir, a fake model service and a fake training runner.

`call(demo, "api_name", *inputs, user="alice")` runs an event's handler directly, as Gradio would, with a
gr.Request carrying the logged-in username (None = anonymous).
"""

import inspect
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import gradio as gr
import pytest

from feedback_db.store import FeedbackStore
from training.round import RoundConfig
from webapp.auth import Auth
from webapp.services import Services
from webapp.serving.errors import BASE, VersionLoadError
from webapp.serving.service import Generation
from webapp.ui import build_ui

PASSWORD = "correct-horse"
USERS = {"alice": "admin", "rita": "reviewer", "vic": "viewer"}


class FakeTokenizer:
    """About four characters a token, plus a few per message for the chat template."""

    def apply_chat_template(self, messages: list[dict], add_generation_prompt: bool = True,
                            return_dict: bool = True) -> dict[str, list[int]]:
        # like transformers 5's tokenizers: a dict (BatchEncoding) of input_ids and attention_mask
        ids = list(range(sum(len(m["content"]) // 4 + 4 for m in messages)))
        return {"input_ids": ids, "attention_mask": [1] * len(ids)}


class FakeModels:
    """ModelService's contract without torch: answers say which version wrote them."""

    def __init__(self) -> None:
        self.tokenizer = FakeTokenizer()
        self.active = BASE
        self.loaded = {BASE}
        self.calls: list[tuple[str, str]] = []
        self.spares_prepared = 0

    def is_loaded(self, name: str) -> bool:
        return name in self.loaded

    def loaded_versions(self) -> list[str]:
        return sorted(self.loaded)

    def load_version(self, name: str, path: Path) -> None:
        if not Path(path).is_dir():
            raise VersionLoadError(f"Version {name!r}: directory {path} does not exist.")
        self.loaded.add(name)

    def activate(self, name: str, path: Path | None = None) -> None:
        if name not in self.loaded and path is not None:
            self.load_version(name, path)
        if name not in self.loaded:
            raise VersionLoadError(f"{name} not loaded")
        self.active = name

    def prepare_spare(self) -> bool:
        self.spares_prepared += 1
        return True

    def stream(self, messages: list[dict], version: str | None = None, **kwargs) -> Iterator[str]:
        version = version or self.active
        self.calls.append((version, messages[-1]["content"]))
        answer = f"[{version}] answer to: {messages[-1]['content']}"
        for i in range(0, len(answer), 8):
            yield answer[: i + 8]

    def generate(self, messages: list[dict], version: str | None = None, **kwargs) -> str:
        return list(self.stream(messages, version, **kwargs))[-1]

    def generate_many(self, requests: list, on_result=None, cancelled=None) -> list:
        results: list = [None] * len(requests)
        for i, request in enumerate(requests):
            text = self.generate(request.messages, request.adapter)
            results[i] = Generation(text, request.adapter or self.active, 5, len(text.split()), 0.01, 0.02)
            if on_result:
                on_result(i, results[i])
            if cancelled and cancelled():
                break
        return results


@dataclass
class FakeRunner:
    started: list = field(default_factory=list)
    cancelled: list = field(default_factory=list)

    def start_round(self, store, data_dir, cfg: RoundConfig) -> int:
        run_id = store.create_run(config=asdict(cfg), stages=cfg.stage_list, username=cfg.username)
        self.started.append(run_id)
        return run_id

    def resume_round(self, store, data_dir, run_id: int) -> int:
        if store.get_run(run_id).status not in ("failed", "cancelled", "interrupted"):
            raise ValueError(f"Run {run_id} is {store.get_run(run_id).status}; it cannot be resumed.")
        store.update_run(run_id, status="succeeded")  # the fake resumed round finishes at once
        return run_id

    def cancel_run(self, store, run_id: int) -> bool:
        self.cancelled.append(run_id)
        store.update_run(run_id, status="cancelled")
        return True

    def poll_runs(self, store, data_dir) -> list[int]:
        return []

    def log_tail(self, data_dir, run_id: int) -> str:
        return "log"


def make_services(store: FeedbackStore, data_dir: Path, models=None) -> Services:
    return Services(
        store=store, models=models or FakeModels(), auth=Auth(store), data_dir=data_dir, base_model="fake-base",
        runner=FakeRunner(),
    )


@pytest.fixture()
def store(tmp_path: Path) -> FeedbackStore:
    store = FeedbackStore(tmp_path / "tuneloop.db")
    for username, role in USERS.items():
        store.create_user(username, PASSWORD, role)
    return store


@pytest.fixture()
def services(store: FeedbackStore, tmp_path: Path) -> Services:
    return make_services(store, tmp_path)


@pytest.fixture()
def demo(services: Services) -> gr.Blocks:
    return build_ui(services)


def handler(demo: gr.Blocks, api_name: str):
    matches = [f.fn for f in demo.fns.values() if f.api_name == api_name]
    assert len(matches) == 1, f"no single event with api_name {api_name!r}"
    return matches[0]


def call(demo: gr.Blocks, api_name: str, *inputs, user: str | None = None):
    """Run a handler as Gradio would; generators are drained and their last value returned."""
    fn = handler(demo, api_name)
    result = fn(*inputs, gr.Request(username=user))
    if inspect.isgenerator(result):
        values = list(result)
        return values[-1] if values else None
    return result
