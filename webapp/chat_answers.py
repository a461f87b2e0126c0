"""What the chat model said, kept by the server: a thumbs names an answer id, never a text the client sends.

Each finished chat answer is kept under a random id, per user, with the exact messages the model was given and the
version and settings that wrote it. The chat tab's per-session gr.State (held by the server, not the browser)
maps Chatbot positions to these ids; the thumbs handler looks the id up for the logged-in user and stores that
record, so a client can neither invent a conversation nor rate another user's answer.

    answer_id = answers.keep("vic", messages, "Paris.", "v3-dpo", {"max_new_tokens": 64})
    kept = answers.get("vic", answer_id)      # None for unknown ids and other users' answers
"""

import secrets
import threading
from collections import OrderedDict
from dataclasses import dataclass, field

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
