"""From raw feedback rows to one judgment per reviewer per item, and from those to the item's majority.

A reviewer's latest judgment of an item counts (feedback is append-only). An item's verdict is the value more
than half of its reviewers gave; without one it is a disagreement, excluded from training and counted.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from itertools import combinations

from feedback_db.models import Comparison, Ranking, Rating

Votes = dict[Hashable, dict[str, Hashable]]  # item -> reviewer -> judgment


@dataclass(frozen=True)
class Verdicts:
    decided: dict[Hashable, Hashable]  # item -> majority judgment
    disagreements: int  # items with no strict majority


def majority(values: Iterable[Hashable]) -> Hashable | None:
    """The value given by more than half of the votes, else None."""
    counts = Counter(values)
    total = sum(counts.values())
    if not total:
        return None
    value, n = counts.most_common(1)[0]
    return value if 2 * n > total else None


def verdicts(votes: Votes) -> Verdicts:
    decided, disagreements = {}, 0
    for item, by_user in votes.items():
        value = majority(by_user.values())
        if value is None:
            disagreements += 1
        else:
            decided[item] = value
    return Verdicts(decided, disagreements)


def thumbs_votes(ratings: list[Rating]) -> Votes:
    """response id -> reviewer -> True (up) / False (down), from ratings that carry thumbs."""
    votes: Votes = {}
    for r in sorted(ratings, key=lambda r: r.id):
        if r.thumbs is not None:
            votes.setdefault(r.response_id, {})[r.username] = bool(r.thumbs)
    return votes


def likert_votes(ratings: list[Rating]) -> Votes:
    """response id -> reviewer -> 1..5, from ratings that carry a Likert score."""
    votes: Votes = {}
    for r in sorted(ratings, key=lambda r: r.id):
        if r.likert is not None:
            votes.setdefault(r.response_id, {})[r.username] = r.likert
    return votes


def polarity_votes(ratings: list[Rating]) -> Votes:
    """response id -> reviewer -> "good" (thumbs up or Likert >= 4) / "bad" (down or <= 2) / "neutral"."""
    votes: Votes = {}
    for r in sorted(ratings, key=lambda r: r.id):
        good = r.thumbs == 1 or (r.likert is not None and r.likert >= 4)
        bad = r.thumbs == 0 or (r.likert is not None and r.likert <= 2)
        if r.thumbs is not None or r.likert is not None:
            votes.setdefault(r.response_id, {})[r.username] = "neutral" if good == bad else "good" if good else "bad"
    return votes


def pair_votes(comparisons: list[Comparison], rankings: list[Ranking]) -> Votes:
    """(low id, high id) -> reviewer -> winning response id, "tie" or "both_bad".

    A ranking counts as a vote on every pair it orders; comparisons and rankings of the same pair by the same
    reviewer: the later one (by timestamp) counts.
    """
    events: list[tuple[str, str, tuple[int, int], Hashable]] = []
    for c in comparisons:
        pair = (min(c.response_a, c.response_b), max(c.response_a, c.response_b))
        judgment = {"a": c.response_a, "b": c.response_b}.get(c.winner, c.winner)
        events.append((c.created, c.username, pair, judgment))
    for r in rankings:
        for better, worse in combinations(r.response_ids, 2):
            events.append((r.created, r.username, (min(better, worse), max(better, worse)), better))
    votes: Votes = {}
    for _, username, pair, judgment in sorted(events, key=lambda e: e[0]):
        votes.setdefault(pair, {})[username] = judgment
    return votes
