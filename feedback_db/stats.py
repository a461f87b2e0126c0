"""Read-only numbers for the stats tab: feedback per day/mode/reviewer, version win rates, agreement.

`agreement(store, kind)` is re-exported from `feedback_db.agreement`.
"""

from __future__ import annotations

from collections import Counter

from feedback_db.agreement import agreement
from feedback_db.models import Agreement, FeedbackCount, WinRate
from feedback_db.store import FeedbackStore


def feedback_counts(store: FeedbackStore) -> list[FeedbackCount]:
    """Judgments per UTC day, mode (rating | comparison | ranking | correction) and reviewer."""
    return store.feedback_counts()


def win_rates(store: FeedbackStore) -> list[WinRate]:
    """Per model version, how its answers fared in pairwise comparisons against other versions' answers."""
    wins: Counter = Counter()
    losses: Counter = Counter()
    ties: Counter = Counter()
    for c in store.list_comparisons():
        if c.version_a == c.version_b:
            continue
        if c.winner in ("tie", "both_bad"):
            ties[c.version_a] += 1
            ties[c.version_b] += 1
            continue
        winner, loser = (c.version_a, c.version_b) if c.winner == "a" else (c.version_b, c.version_a)
        wins[winner] += 1
        losses[loser] += 1
    versions = sorted(set(wins) | set(losses) | set(ties))
    return [
        WinRate(v, wins[v], losses[v], ties[v], wins[v] / (wins[v] + losses[v]) if wins[v] + losses[v] else None)
        for v in versions
    ]


def head_to_head(store: FeedbackStore, version_a: str, version_b: str) -> WinRate:
    """How `version_a` fared against `version_b` only (e.g. a candidate against the active version)."""
    wins = losses = ties = 0
    for c in store.list_comparisons():
        if {c.version_a, c.version_b} != {version_a, version_b} or version_a == version_b:
            continue
        if c.winner in ("tie", "both_bad"):
            ties += 1
        elif (c.winner == "a") == (c.version_a == version_a):
            wins += 1
        else:
            losses += 1
    return WinRate(version_a, wins, losses, ties, wins / (wins + losses) if wins + losses else None)


def all_agreement(store: FeedbackStore) -> list[Agreement]:
    return [agreement(store, kind) for kind in ("thumbs", "likert", "pairwise")]
