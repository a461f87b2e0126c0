"""Training datasets built from the store, in TRL's conversational formats.

- `build_sft_dataset`: `messages` = prompt turns + the assistant answer, from demonstrations, corrections and
  (optionally) responses the reviewers' majority rated good (thumbs up or Likert >= 4).
- `build_preference_dataset`: `prompt` / `chosen` / `rejected` from imported pairs, corrections (corrected text
  chosen over the original), pairwise comparisons and rankings (each ranking is a vote on every pair it orders;
  ties and both_bad dropped) and Likert scores on the same prompt differing by >= `LIKERT_GAP`.
  Viewers' chat thumbs (`viewer_chat`) and arena votes (`viewer_arena`) count only with the snapshot's
  `include_viewer_chat` (an admin's choice per round).
- `build_kto_dataset`: `prompt` / `completion` / `label` from the thumbs majority plus imported unpaired labels.

Every builder reads only prompts of `split` ("train" or "heldout") and, given `snapshot=store.snapshot()`, only
rows that existed when it was taken, so a round can be rebuilt exactly. Rows with an empty answer and exact
duplicates are dropped (and counted: `*_rows` return a `Counter` next to the rows, read by `data_check`).
"""

from __future__ import annotations

import json
import random
import statistics
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import combinations
from typing import TypeVar

from datasets import Dataset, Features, List, Value

from feedback_db.consensus import likert_votes, pair_votes, polarity_votes, thumbs_votes, verdicts
from feedback_db.models import Comparison, DataCheck, Prompt, Rating, Response, Snapshot
from feedback_db.store import FeedbackStore
from feedback_db.vocab import NO_WINNER, SPLITS

T = TypeVar("T")

LIKERT_GAP = 1.0  # consensus Likert scores this far apart make a preference pair
LIKERT_SPREAD = 3  # reviewers' Likert scores of one response this far apart (1 vs 4) = a disagreement

_MESSAGES = List({"role": Value("string"), "content": Value("string")})
SFT_FEATURES = Features({"messages": _MESSAGES})
PREFERENCE_FEATURES = Features({"prompt": _MESSAGES, "chosen": _MESSAGES, "rejected": _MESSAGES})
KTO_FEATURES = Features({"prompt": _MESSAGES, "completion": _MESSAGES, "label": Value("bool")})


@dataclass(frozen=True)
class _Data:
    """The rows of one split as of one snapshot."""

    prompts: dict[int, Prompt]
    responses: dict[int, Response]
    store: FeedbackStore
    snapshot: Snapshot | None

    def prompt_of(self, response_id: int) -> Prompt:
        return self.prompts[self.responses[response_id].prompt_id]


def _load(store: FeedbackStore, snapshot: Snapshot | None, split: str) -> _Data:
    if split not in SPLITS:
        raise ValueError(f"split must be 'train' or 'heldout'; got {split!r}")
    excluded = store.excluded_prompt_ids(snapshot)  # flagged by a reviewer on an excluding criterion
    prompts = {p.id: p for p in store.list_prompts(split=split, snapshot=snapshot) if p.id not in excluded}
    responses = {r.id: r for r in store.list_responses(snapshot=snapshot) if r.prompt_id in prompts}
    return _Data(prompts, responses, store, snapshot)


def _assistant(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


def _blank(*texts: str) -> bool:
    return any(not t.strip() for t in texts)


def _unique_answers(candidates: list[tuple[Prompt, str, T]], counts: Counter) -> Iterator[tuple[Prompt, str, T]]:
    """(prompt, answer, tag) candidates without blank answers and with each (prompt, answer) once; the dropped ones
    are counted as `empty` / `duplicates` as they come."""
    seen = set()
    for prompt, answer, tag in candidates:
        key = (prompt.id, answer.strip())
        if _blank(answer) or key in seen:
            counts["empty" if _blank(answer) else "duplicates"] += 1
            continue
        seen.add(key)
        yield prompt, answer, tag


def sft_rows(
    store: FeedbackStore, snapshot: Snapshot | None = None, split: str = "train", include_rated: bool = True
) -> tuple[list[dict], Counter]:
    """(rows of {"messages"}, Counter of rows per source and of dropped `empty` / `duplicates`)."""
    data = _load(store, snapshot, split)
    candidates: list[tuple[Prompt, str, str]] = []  # (prompt, answer, source)
    for d in data.store.list_demonstrations(snapshot):
        if d.prompt_id in data.prompts:
            candidates.append((data.prompts[d.prompt_id], d.completion, "demonstrations"))
    corrected = set()
    for c in data.store.list_corrections(snapshot):
        if c.response_id in data.responses:
            corrected.add(c.response_id)
            candidates.append((data.prompt_of(c.response_id), c.text, "corrections"))
    counts: Counter = Counter()
    if include_rated:
        rated = verdicts(_only(polarity_votes(_ratings(data, counts)), data.responses))
        counts["disagreements"] = rated.disagreements
        for response_id, verdict in rated.decided.items():
            if verdict == "good" and response_id not in corrected:
                candidates.append((data.prompt_of(response_id), data.responses[response_id].text, "rated_good"))
    rows = []
    for prompt, answer, source in _unique_answers(candidates, counts):
        counts[source] += 1
        rows.append({"messages": prompt.as_messages() + _assistant(answer)})
    return rows, counts


def preference_rows(
    store: FeedbackStore, snapshot: Snapshot | None = None, split: str = "train"
) -> tuple[list[dict], Counter]:
    """(rows of {"prompt", "chosen", "rejected"}, Counter per source plus `ties`, `disagreements`, dropped)."""
    data = _load(store, snapshot, split)
    counts: Counter = Counter()
    candidates: list[tuple[str, Prompt, str, str]] = []
    for p in data.store.list_preference_pairs(snapshot):
        if p.prompt_id in data.prompts:
            candidates.append(("imported", data.prompts[p.prompt_id], p.chosen, p.rejected))
    for c in data.store.list_corrections(snapshot):
        if c.response_id in data.responses:
            candidates.append(
                ("corrections", data.prompt_of(c.response_id), c.text, data.responses[c.response_id].text)
            )
    comparisons = _comparisons(data, counts)
    compared = {(min(c.response_a, c.response_b), max(c.response_a, c.response_b)) for c in comparisons}
    votes = _only(pair_votes(comparisons, data.store.list_rankings(snapshot)), data.responses, pairs=True)
    judged = verdicts(votes)
    counts["disagreements"] += judged.disagreements
    for (low, high), winner in judged.decided.items():
        if winner in NO_WINNER:
            counts["ties"] += 1
            continue
        loser = high if winner == low else low
        source = "comparisons" if (low, high) in compared else "rankings"
        candidates.append((source, data.prompt_of(winner), data.responses[winner].text, data.responses[loser].text))
    candidates += _likert_pairs(data, counts)
    rows, seen = [], set()
    for source, prompt, chosen, rejected in candidates:
        key = (prompt.id, frozenset((chosen.strip(), rejected.strip())))
        if _blank(chosen, rejected) or chosen.strip() == rejected.strip() or key in seen:
            counts["empty" if _blank(chosen, rejected) else "duplicates"] += 1
            continue
        seen.add(key)
        counts[source] += 1
        rows.append({"prompt": prompt.as_messages(), "chosen": _assistant(chosen), "rejected": _assistant(rejected)})
    return rows, counts


def _likert_pairs(data: _Data, counts: Counter) -> list[tuple[str, Prompt, str, str]]:
    scores: dict[int, float] = {}
    for response_id, by_user in _only(likert_votes(_ratings(data, Counter())), data.responses).items():
        values = list(by_user.values())
        if max(values) - min(values) >= LIKERT_SPREAD:
            counts["disagreements"] += 1
        else:
            scores[response_id] = statistics.median(values)
    by_prompt: dict[int, list[int]] = {}
    for response_id in sorted(scores):
        by_prompt.setdefault(data.responses[response_id].prompt_id, []).append(response_id)
    pairs = []
    for prompt_id, ids in by_prompt.items():
        for a, b in combinations(ids, 2):
            if abs(scores[a] - scores[b]) >= LIKERT_GAP:
                better, worse = (a, b) if scores[a] > scores[b] else (b, a)
                pairs.append(
                    ("likert", data.prompts[prompt_id], data.responses[better].text, data.responses[worse].text)
                )
    return pairs


def kto_rows(
    store: FeedbackStore, snapshot: Snapshot | None = None, split: str = "train"
) -> tuple[list[dict], Counter]:
    """(rows of {"prompt", "completion", "label"}, Counter of `up`, `down`, `disagreements`, dropped)."""
    data = _load(store, snapshot, split)
    counts: Counter = Counter()
    candidates: list[tuple[Prompt, str, bool]] = []
    for label in data.store.list_unpaired_labels(snapshot):
        if label.prompt_id in data.prompts:
            candidates.append((data.prompts[label.prompt_id], label.completion, label.label))
    judged = verdicts(_only(thumbs_votes(_ratings(data, counts)), data.responses))
    counts["disagreements"] = judged.disagreements
    for response_id, up in judged.decided.items():
        candidates.append((data.prompt_of(response_id), data.responses[response_id].text, bool(up)))
    rows = []
    for prompt, completion, label in _unique_answers(candidates, counts):
        counts["up" if label else "down"] += 1
        rows.append({"prompt": prompt.as_messages(), "completion": _assistant(completion), "label": label})
    return rows, counts


def _ratings(data: _Data, counts: Counter) -> list[Rating]:
    """Ratings that may train: viewers' chat thumbs only when the snapshot says an admin included them."""
    ratings = data.store.list_ratings(data.snapshot)
    if data.snapshot and data.snapshot.include_viewer_chat:
        return ratings
    kept = [r for r in ratings if r.source != "viewer_chat"]
    counts["viewer_chat"] += sum(r.source == "viewer_chat" and r.response_id in data.responses for r in ratings)
    return kept


def _comparisons(data: _Data, counts: Counter) -> list[Comparison]:
    """A/B votes that may train: viewers' arena votes only when the snapshot says an admin included viewers' chat
    feedback (the same opt-in as their chat thumbs)."""
    comparisons = data.store.list_comparisons(data.snapshot)
    if data.snapshot and data.snapshot.include_viewer_chat:
        return comparisons
    counts["viewer_arena"] += sum(c.source == "viewer_arena" and c.response_a in data.responses for c in comparisons)
    return [c for c in comparisons if c.source != "viewer_arena"]


def _only(votes: dict, responses: dict[int, Response], pairs: bool = False) -> dict:
    """Votes on responses of the loaded split/snapshot only."""
    if pairs:
        return {k: v for k, v in votes.items() if k[0] in responses and k[1] in responses}
    return {k: v for k, v in votes.items() if k in responses}


def _dataset(rows: list[dict], features: Features) -> Dataset:
    return Dataset.from_dict({name: [row[name] for row in rows] for name in features}, features=features)


def build_sft_dataset(
    store: FeedbackStore, snapshot: Snapshot | None = None, split: str = "train", include_rated: bool = True
) -> Dataset:
    return _dataset(sft_rows(store, snapshot, split, include_rated)[0], SFT_FEATURES)


def build_preference_dataset(store: FeedbackStore, snapshot: Snapshot | None = None, split: str = "train") -> Dataset:
    return _dataset(preference_rows(store, snapshot, split)[0], PREFERENCE_FEATURES)


def build_kto_dataset(store: FeedbackStore, snapshot: Snapshot | None = None, split: str = "train") -> Dataset:
    return _dataset(kto_rows(store, snapshot, split)[0], KTO_FEATURES)


KINDS = {"sft": (sft_rows, SFT_FEATURES), "preferences": (preference_rows, PREFERENCE_FEATURES),
         "kto": (kto_rows, KTO_FEATURES)}  # dataset kind -> (its rows builder, its columns)


class Builds:
    """One snapshot's datasets, each (kind, split) built at most once: a round's data check counts the very rows its
    stages train on, and reward and dpo share one build of the preference pairs (kind: `sft`, `preferences`, `kto`).
    """

    def __init__(self, store: FeedbackStore, snapshot: Snapshot | None = None) -> None:
        self.store, self.snapshot = store, snapshot
        self._built: dict[tuple[str, str], tuple[list[dict], Counter]] = {}

    def rows(self, kind: str, split: str = "train") -> tuple[list[dict], Counter]:
        """(rows, counts) as `sft_rows` / `preference_rows` / `kto_rows` return them, built on first use."""
        if (kind, split) not in self._built:
            self._built[kind, split] = KINDS[kind][0](self.store, self.snapshot, split)
        return self._built[kind, split]

    def dataset(self, kind: str, split: str = "train") -> Dataset:
        return _dataset(self.rows(kind, split)[0], KINDS[kind][1])


def split_by_prompt(dataset: Dataset, fraction: float, seed: int) -> tuple[Dataset, Dataset]:
    """(train, test) with about `fraction` of the distinct prompts in test and every row of a prompt on one side:
    a 5-answer ranking yields pairs that share answers, and those must not sit on both sides."""
    keys = [json.dumps(row["prompt"], sort_keys=True) for row in dataset]
    prompts = sorted(set(keys))
    random.Random(seed).shuffle(prompts)
    test = set(prompts[: max(1, round(len(prompts) * fraction))])
    return (dataset.select([i for i, k in enumerate(keys) if k not in test]),
            dataset.select([i for i, k in enumerate(keys) if k in test]))


def data_check(
    store: FeedbackStore, method: str, snapshot: Snapshot | None = None, builds: Builds | None = None
) -> DataCheck:
    """Whether `method` has enough usable training data, with admin-readable reasons when it has not. `builds`: the
    round's builds of `snapshot` (the check then counts the rows its stages train on, without building them again)."""
    builds = builds or Builds(store, snapshot)
    if method == "sft":
        rows, counts = builds.rows("sft")
        problems = _too_few("SFT", len(rows), "examples (demonstrations, corrections or well-rated answers)", counts)
    elif method in ("reward", "dpo"):
        rows, counts = builds.rows("preferences")
        label = "DPO" if method == "dpo" else "Reward model training"
        problems = _too_few(label, len(rows), "preference pairs", counts)
    elif method == "kto":
        rows, counts = builds.rows("kto")
        problems = _too_few("KTO", len(rows), "labelled answers", counts)
        if not counts["up"] or not counts["down"]:
            problems.append(
                f"KTO needs both thumbs-up and thumbs-down; found {counts['up']} up, {counts['down']} down"
            )
    elif method == "online_rl":
        counts = Counter(prompts=len(store.list_prompts(split="train", snapshot=snapshot)))
        counts["reward_versions"] = sum(v.method == "reward" for v in store.list_versions())
        counts["preference_pairs"] = len(builds.rows("preferences")[0])
        problems = _too_few("Online RL", counts["prompts"], "training prompts", Counter())
        if not counts["reward_versions"] and counts["preference_pairs"] < MIN_EXAMPLES:
            problems.append(
                "Online RL needs a reward model: there is no reward version yet and only "
                f"{counts['preference_pairs']} preference pairs to train one (need {MIN_EXAMPLES})"
            )
    else:
        raise ValueError(f"method must be one of sft, reward, dpo, kto, online_rl; got {method!r}")
    counts = Counter(counts)  # a copy: the build's own counts stay as built
    counts["heldout_prompts"] = len(store.list_prompts(split="heldout", snapshot=snapshot))
    warnings = [f"left out: {counts[k]} {why}" for k, why in _DROPPED.items() if counts[k]]
    if not counts["heldout_prompts"]:
        warnings.append("no held-out prompts: the evaluation gate has nothing to compare the new version on")
    return DataCheck(ok=not problems, counts=dict(counts), problems=problems, warnings=warnings)


MIN_EXAMPLES = 4
_DROPPED = {
    "empty": "rows with an empty text",
    "duplicates": "duplicate rows",
    "ties": "judged pairs were ties or both bad",
    "disagreements": "items without a reviewer majority",
    "viewer_chat": "chat ratings by viewers (include them with the round's 'viewers' chat feedback' option)",
    "viewer_arena": "arena votes by viewers (include them with the round's 'viewers' chat feedback' option)",
}


def _too_few(label: str, found: int, what: str, counts: Counter) -> list[str]:
    if found >= MIN_EXAMPLES:
        return []
    reasons = [f"{counts[k]} {why}" for k, why in _DROPPED.items() if counts[k]]
    suffix = f" ({'; '.join(reasons)})" if reasons else ""
    return [f"{label} needs at least {MIN_EXAMPLES} {what}; found {found}{suffix}"]
