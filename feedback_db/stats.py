"""Read-only numbers for the stats tab: feedback per day/mode/reviewer and version win rates (agreement between
reviewers is `feedback_db.agreement`)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from feedback_db.consensus import pair_votes
from feedback_db.models import FeedbackCount
from feedback_db.store import FeedbackStore


@dataclass(frozen=True)
class WinRate:
    version: str
    wins: int
    losses: int
    ties: int  # ties and both_bad
    win_rate: float | None  # wins / (wins + losses), None without decisive votes


def feedback_counts(store: FeedbackStore) -> list[FeedbackCount]:
    """Judgments per UTC day, mode (rating | comparison | ranking | correction) and reviewer."""
    return store.feedback_counts()


def _votes(store: FeedbackStore) -> list[tuple[str, str, str | None]]:
    """(version a, version b, winning version or None for tie/both bad): one vote per reviewer per pair of
    answers, their latest (as the consensus code counts them), so repeating a vote does not move a win rate."""
    comparisons = store.list_comparisons()
    version = {}
    for c in comparisons:
        version[c.response_a], version[c.response_b] = c.version_a, c.version_b
    votes = []
    for (low, high), by_user in pair_votes(comparisons, []).items():
        if version[low] == version[high]:
            continue
        for judgment in by_user.values():
            votes.append((version[low], version[high], version[judgment] if isinstance(judgment, int) else None))
    return votes


def win_rates(store: FeedbackStore) -> list[WinRate]:
    """Per model version, how its answers fared in pairwise comparisons against other versions' answers."""
    wins: Counter = Counter()
    losses: Counter = Counter()
    ties: Counter = Counter()
    for version_a, version_b, winner in _votes(store):
        if winner is None:
            ties[version_a] += 1
            ties[version_b] += 1
            continue
        wins[winner] += 1
        losses[version_b if winner == version_a else version_a] += 1
    versions = sorted(set(wins) | set(losses) | set(ties))
    return [
        WinRate(v, wins[v], losses[v], ties[v], wins[v] / (wins[v] + losses[v]) if wins[v] + losses[v] else None)
        for v in versions
    ]
