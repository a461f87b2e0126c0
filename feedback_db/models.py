"""Plain dataclasses returned by `FeedbackStore`, and `Snapshot`.

Rows come back from SQLite as these frozen values; JSON columns are already decoded into dicts/lists.
Timestamps are UTC ISO-8601 strings (`2026-11-28T03:30:00.123456+00:00`). The values a field may take are
spelt in `feedback_db.vocab`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class Snapshot:
    """What a round trains on: the max id of every table the dataset builders read, taken in one read transaction
    (`FeedbackStore.snapshot()`); every reader given it sees no row past them. A value inside the process; JSON only
    where it crosses one (`to_json` into a recipe or run dir, `to_dict` into a version's provenance)."""

    max_ids: dict[str, int]  # table -> highest id pinned
    feedback_max_id: int  # highest id over the feedback tables (ratings, comparisons, rankings, corrections)
    taken_at: str  # admins' prompt exclusions count as they stood at this time
    include_viewer_chat: bool = False  # whether viewers' chat thumbs and arena votes train (an admin's choice)

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, data: dict) -> Snapshot:
        return cls(dict(data["max_ids"]), data["feedback_max_id"], data["taken_at"],
                   data.get("include_viewer_chat", False))

    @classmethod
    def from_json(cls, text: str) -> Snapshot:
        return cls.from_dict(json.loads(text))


@dataclass(frozen=True)
class User:
    """An account. A disabled user can neither log in nor use an API token."""

    id: int
    username: str  # unique: judgments, tokens and the audit log refer to a user by it
    role: str  # admin | reviewer | viewer
    disabled: bool
    created: str


@dataclass(frozen=True)
class ApiToken:
    """A REST API token as listed; the token itself is shown once at creation and stored only as a hash."""

    id: int
    username: str
    label: str
    prefix: str  # the token's first characters, to tell tokens apart
    created: str
    revoked: str | None  # when it was revoked; None = valid


@dataclass(frozen=True)
class Prompt:
    id: int
    text: str  # the (last) user turn
    source: str
    tags: tuple[str, ...]
    split: str  # train | heldout
    created: str
    messages: list[dict] | None = None  # full conversation before the answer, when imported as one

    def as_messages(self) -> list[dict]:
        """The prompt in TRL conversational form."""
        return self.messages or [{"role": "user", "content": self.text}]


@dataclass(frozen=True)
class Response:
    id: int
    prompt_id: int
    text: str
    model_version: str
    settings: dict
    created: str


@dataclass(frozen=True)
class Demonstration:
    id: int
    prompt_id: int
    completion: str
    source: str
    created: str


@dataclass(frozen=True)
class Rating:
    id: int
    response_id: int
    username: str
    thumbs: int | None  # 1 = up, 0 = down
    likert: int | None  # 1..5
    comment: str
    created: str
    source: str = "review"  # one of vocab.RATING_SOURCES


@dataclass(frozen=True)
class Comparison:
    id: int
    prompt_id: int
    response_a: int
    response_b: int
    version_a: str
    version_b: str
    winner: str  # a | b | tie | both_bad
    username: str
    created: str
    source: str = "review"  # review | arena | api


@dataclass(frozen=True)
class Ranking:
    id: int
    prompt_id: int
    response_ids: list[int]  # best first
    username: str
    created: str


@dataclass(frozen=True)
class Correction:
    id: int
    response_id: int
    text: str
    username: str
    created: str


@dataclass(frozen=True)
class PreferencePair:
    """An imported preference pair (not tied to stored responses)."""

    id: int
    prompt_id: int
    chosen: str
    rejected: str
    source: str
    created: str


@dataclass(frozen=True)
class UnpairedLabel:
    """An imported unpaired thumbs label (KTO data not tied to stored responses)."""

    id: int
    prompt_id: int
    completion: str
    label: bool
    source: str
    created: str


@dataclass(frozen=True)
class Criterion:
    """An optional question of the review form."""

    id: int
    name: str
    description: str
    kind: str  # scale (1–5) | flag (1 yes, 0 no)
    excludes: bool  # a flag answered yes keeps its prompt out of training
    retired: str | None  # when an admin removed it from the form; old answers stay
    created: str


@dataclass(frozen=True)
class CriterionAnswer:
    """One reviewer's answer to one criterion, tied to the judgment (rating, vote, ranking) it came with."""

    id: int
    criterion_id: int
    judgment: str  # ratings | comparisons | rankings
    judgment_id: int
    prompt_id: int
    value: int
    username: str
    created: str


@dataclass(frozen=True)
class Webhook:
    id: int
    url: str
    secret: str  # HMAC-SHA256 key; kept in clear because every delivery is signed with it
    events: list[str]
    username: str
    created: str
    removed: str | None


@dataclass(frozen=True)
class WebhookDelivery:
    id: int
    webhook_id: int
    event: str
    event_key: str  # what happened, stably named (run:3:succeeded, audit:41, ...): one delivery per hook and key
    payload: dict
    status: str  # pending | delivered | failed
    attempts: int
    next_attempt: str
    http_status: int | None
    last_error: str
    created: str
    delivered: str | None


@dataclass(frozen=True)
class ReviewItem:
    """What the review tab shows next: one response (single), two (pairwise) or three or more (ranking)."""

    mode: str
    prompt: Prompt
    responses: list[Response]

    @property
    def response_ids(self) -> list[int]:
        return [r.id for r in self.responses]


@dataclass(frozen=True)
class ModelVersion:
    id: int
    name: str
    parent: str | None
    method: str
    technique: str
    path: str
    base_model: str
    config: dict
    data_snapshot: dict | None  # a Snapshot's dict, or free-form provenance (SDK adapters)
    metrics: dict
    status: str  # candidate | active | archived | rejected
    created: str
    activated: str | None

    @property
    def snapshot(self) -> Snapshot | None:
        """The store snapshot this version was trained on; None when it was not trained from the store."""
        trained_from_store = bool(self.data_snapshot) and "max_ids" in self.data_snapshot
        return Snapshot.from_dict(self.data_snapshot) if trained_from_store else None


@dataclass(frozen=True)
class Run:
    id: int
    config: dict
    stages: list[str]
    username: str
    status: str  # queued | running | succeeded | failed | cancelled | interrupted
    pid: int | None
    stage: str | None
    error: str | None
    log_tail: str
    versions: list[str]
    created: str
    updated: str
    finished: str | None


@dataclass(frozen=True)
class RunMetric:
    id: int
    run_id: int
    step: int
    stage: str
    metrics: dict
    created: str


@dataclass(frozen=True)
class AuditEntry:
    id: int
    username: str
    action: str
    detail: dict
    created: str


@dataclass(frozen=True)
class DataCheck:
    """Whether a training method has enough usable data; `problems` block training, `warnings` do not."""

    ok: bool
    counts: dict[str, int]
    problems: list[str]
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class FeedbackCount:
    day: str  # YYYY-MM-DD (UTC)
    mode: str  # rating | comparison | ranking | correction
    username: str
    count: int


@dataclass(frozen=True)
class GenerationJob:
    """A candidate-generation job (webapp.services runs it; the Data tab shows it)."""

    id: int
    username: str
    mode: str
    versions: list[str]
    total: int
    done: int
    new_tokens: int
    tokens_per_s: float
    eta_s: float | None
    status: str  # queued | running | cancelling | cancelled | done | failed | interrupted
    error: str | None
    created: str
    updated: str

    @property
    def active(self) -> bool:
        return self.status in ("queued", "running", "cancelling")
