"""Per-user limits on model work (chat, side-by-side, compare, candidate generation), so that one user cannot
starve the others: at most `max_in_flight` requests per user and lane at a time, and a token bucket per user and
lane (`burst` requests at once, then one every `refill_s` seconds). Refusals are immediate gr.Errors that say
what to wait for; nothing is queued on the model. Events are registered with their lane (`limited`), so the HTTP
guard can refuse an over-limit request before Gradio reads its body (`refusal` peeks without taking anything);
the handler's `slot` checks again.

The conversation's length is bounded too: `fit_context` keeps the newest turns within `MAX_PROMPT_TOKENS` of
model input and says how many older messages it left out.

    gr.on(..., api_name=services.usage.limited(auth.endpoint("chat", *EVERYONE), "chat"))
    with services.usage.slot(user.username, "chat"):
        for text in services.models.stream(messages, ...): ...
"""

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import gradio as gr

MAX_PROMPT_TOKENS = 1_024  # model input per chat request: a longer prefill would hold the shared model for seconds
MAX_HISTORY_CHARS = 24_000  # the conversation the server keeps per chat (older turns are dropped first)


@dataclass
class _Bucket:
    tokens: float
    stamp: float


class UsageLimits:
    def __init__(self, max_in_flight: int = 1, burst: int = 6, refill_s: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_in_flight = max_in_flight
        self.burst = burst
        self.refill_s = refill_s
        self.clock = clock
        self._in_flight: dict[tuple[str, str], int] = {}
        self._buckets: dict[tuple[str, str], _Bucket] = {}
        self._lock = threading.Lock()
        self.lanes: dict[str, str] = {}  # event api_name -> its lane

    def limited(self, api_name: str, lane: str) -> str:
        """Record that event `api_name` runs under `lane`'s limits; returns `api_name` (for `api_name=`)."""
        self.lanes[api_name] = lane
        return api_name

    def refusal(self, username: str, lane: str) -> str | None:
        """Why `username`'s next request in `lane` would be refused now, or None; takes no slot and no token."""
        with self._lock:
            return self._refusal((username, lane), self.clock())

    @contextmanager
    def slot(self, username: str, lane: str) -> Iterator[None]:
        """Hold one of the user's in-flight slots in `lane` for the block; refuse at once when none is free or the
        user's rate is exhausted."""
        key = (username, lane)
        with self._lock:
            now = self.clock()
            refused = self._refusal(key, now)
            if refused:
                raise gr.Error(refused)
            self._buckets[key] = _Bucket(self._tokens(key, now) - 1, now)
            self._in_flight[key] = self._in_flight.get(key, 0) + 1
        try:
            yield
        finally:
            with self._lock:
                self._in_flight[key] -= 1

    def _tokens(self, key: tuple[str, str], now: float) -> float:
        bucket = self._buckets.get(key)
        return self.burst if bucket is None else min(self.burst, bucket.tokens + (now - bucket.stamp) / self.refill_s)

    def _refusal(self, key: tuple[str, str], now: float) -> str | None:
        lane = key[1]
        if self._in_flight.get(key, 0) >= self.max_in_flight:
            return (f"You already have {self.max_in_flight} {lane} request(s) running: wait for the answer (or stop "
                    "it) before sending another.")
        tokens = self._tokens(key, now)
        if tokens < 1:
            return f"Too many {lane} requests: try again in {(1 - tokens) * self.refill_s:.0f} s."
        return None


def cap_history(messages: list[dict], max_chars: int = MAX_HISTORY_CHARS) -> list[dict]:
    """The newest messages whose texts add up to at most `max_chars` (the last one is always kept)."""
    kept, total = [], 0
    for message in reversed(messages):
        total += len(message["content"])
        if kept and total > max_chars:
            break
        kept.append(message)
    return kept[::-1]


def fit_context(messages: list[dict], count_tokens: Callable[[list[dict]], int],
                max_tokens: int = MAX_PROMPT_TOKENS) -> tuple[list[dict], str | None]:
    """(the newest messages that fit `max_tokens` of model input, a notice saying what was left out or None).

    Whole user/assistant turns are dropped from the front; the last user message is always kept, cut to its last
    characters when it alone is over the budget."""
    start = 0
    while start < len(messages) - 1 and count_tokens(messages[start:]) > max_tokens:
        start += 1
    if start and messages[start]["role"] == "assistant" and start < len(messages) - 1:
        start += 1  # the model's input starts with a user turn
    fitted = [dict(m) for m in messages[start:]]
    cut = 0
    while count_tokens(fitted) > max_tokens and len(fitted[-1]["content"]) > 1:
        text = fitted[-1]["content"]
        fitted[-1]["content"] = text[len(text) // 4:]  # cut a quarter at a time; a few tokenizer calls at most
        cut += len(text) // 4
    parts = [f"the {start} oldest message(s) of this chat"] if start else []
    parts += [f"the first {cut:,} characters of your message"] if cut else []
    if not parts:
        return fitted, None
    return fitted, (f"The model reads at most {max_tokens:,} tokens: {' and '.join(parts)} were left out of its "
                    "input. Clear the chat to start afresh.")
