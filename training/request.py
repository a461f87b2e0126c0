"""One answer to generate: plain data and torch-free, so the web app's tabs can ask for answers without importing
torch. `training.generation` decodes it (and re-exports it: `from training.generation import Request` works too)."""

from dataclasses import dataclass


@dataclass(frozen=True)
class Request:
    """One answer to generate. `adapter`: the PEFT adapter the row runs through (None: the model as it is)."""

    messages: list[dict]
    max_new_tokens: int = 128
    temperature: float = 0.0
    top_p: float = 0.95
    seed: int | None = None
    adapter: str | None = None

    def __post_init__(self) -> None:
        if not self.messages:
            raise ValueError("messages is empty: give at least one {'role': 'user', 'content': ...} message.")
        if not 1 <= self.max_new_tokens <= 4096:
            raise ValueError(f"max_new_tokens must be between 1 and 4096, got {self.max_new_tokens}.")
        if not 0.0 <= self.temperature <= 5.0:
            raise ValueError(f"temperature must be between 0 and 5, got {self.temperature}.")
