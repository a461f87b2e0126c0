"""What the chat model said, kept by the server: a thumbs names an answer id, never a text the client sends.

Each finished chat answer is kept under a random id, per user, with the exact messages the model was given and the
version and settings that wrote it. The chat tab's per-session gr.State (held by the server, not the browser)
maps Chatbot positions to these ids; the thumbs handler looks the id up for the logged-in user and stores that
record, so a client can neither invent a conversation nor rate another user's answer.

    answer_id = answers.keep("vic", messages, "Paris.", "v3-dpo", {"max_new_tokens": 64})
    kept = answers.get("vic", answer_id)      # None for unknown ids and other users' answers
    record_thumbs(store, kept, liked=True, username="vic", role="viewer")
"""

import secrets
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from feedback_db.store import FeedbackStore
from feedback_db.vocab import VIEWER
from webapp import limits
from webapp.usage_limits import fit_context

MAX_KEPT_PER_USER = 200  # older answers can no longer be rated (the chat shows far fewer)


@dataclass
class KeptAnswer:
    id: str
    username: str
    messages: list[dict]  # what the model was given (after truncation to its context), oldest first
    answer: str
    version: str
    settings: dict
    response_id: int | None = field(default=None)  # set once stored, so a second thumbs rates the same response


class ChatAnswers:
    def __init__(self, per_user: int = MAX_KEPT_PER_USER) -> None:
        self.per_user = per_user
        self._kept: dict[str, OrderedDict[str, KeptAnswer]] = {}
        self._lock = threading.Lock()

    def keep(self, username: str, messages: list[dict], answer: str, version: str, settings: dict) -> str:
        answer_id = secrets.token_urlsafe(12)
        record = KeptAnswer(answer_id, username, [dict(m) for m in messages], answer, version, dict(settings))
        with self._lock:
            kept = self._kept.setdefault(username, OrderedDict())
            kept[answer_id] = record
            while len(kept) > self.per_user:
                kept.popitem(last=False)
        return answer_id

    def get(self, username: str, answer_id: str) -> KeptAnswer | None:
        with self._lock:
            return self._kept.get(username, {}).get(answer_id)


def chat_input(tokenizer: Any, conversation: list[dict]) -> tuple[list[dict], str | None]:
    """The conversation cut to the model's input budget: (messages, a notice of what was left out)."""
    def count(messages: list[dict]) -> int:  # the token ids, as the engine's prompt_ids reads them
        return len(tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=True)["input_ids"])

    return fit_context(conversation, count)


def record_thumbs(store: FeedbackStore, kept: KeptAnswer, liked: bool, username: str, role: str) -> int:
    """A thumbs on an answer the server kept: store its full conversation as the prompt, the answer as a response
    (once per answer), then the rating. Viewers' ratings get source `viewer_chat` (no training unless an admin
    includes them)."""
    for message in kept.messages:
        limits.check_text("Chat message", message["content"], limits.MAX_HISTORY_CHARS)
    response_id = kept.response_id
    with store.transaction():
        if response_id is None:
            prompt_id = store.add_prompt(kept.messages[-1]["content"], source="chat", messages=kept.messages)
            settings = {**kept.settings, "source": "chat"}
            response_id = store.add_response(prompt_id, kept.answer, kept.version, settings)
        source = "viewer_chat" if role == VIEWER else "chat"
        rating_id = store.add_rating(response_id, username, thumbs=1 if liked else 0, source=source)
    kept.response_id = response_id
    return rating_id
