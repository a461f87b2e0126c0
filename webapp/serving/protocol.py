"""What the app needs from the served model (`Services.models`): webapp.serving.service.ModelService, or a fake in
the web tests. Torch-free, so the modules that only pass the model around do not import it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from training.request import Request
    from webapp.serving.service import Generation


class Models(Protocol):
    tokenizer: Any  # a transformers tokenizer (apply_chat_template counts a conversation's tokens)

    @property
    def active(self) -> str: ...

    def is_loaded(self, name: str) -> bool: ...

    def load_version(self, name: str, path: Path) -> None: ...

    def activate(self, name: str, path: Path | None = None) -> None: ...

    def prepare_spare(self) -> bool: ...

    def stream(self, messages: list[dict], version: str | None = None, max_new_tokens: int = 256,
               temperature: float = 0.0, top_p: float = 0.95, seed: int | None = None) -> Iterator[str]: ...

    def generate(self, messages: list[dict], version: str | None = None, max_new_tokens: int = 256,
                 temperature: float = 0.0, top_p: float = 0.95, seed: int | None = None) -> str: ...

    def generate_many(self, requests: list[Request], on_result: Callable[[int, Generation], None] | None = None,
                      cancelled: Callable[[], bool] | None = None) -> list[Generation | None]: ...
