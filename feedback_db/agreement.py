"""Inter-annotator agreement: Cohen's kappa (two reviewers) and Krippendorff's alpha (nominal, any number,
missing judgments allowed), per kind of feedback (thumbs, Likert, pairwise winners)."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from itertools import permutations

from feedback_db.consensus import Votes, likert_votes, majority, pair_votes, thumbs_votes
from feedback_db.models import Snapshot
from feedback_db.store import FeedbackStore


@dataclass(frozen=True)
class Agreement:
    """Inter-annotator agreement on items judged by two or more reviewers."""

    kind: str  # thumbs | likert | pairwise
    method: str  # cohen_kappa | krippendorff_alpha | none
    overall: float | None
    items: int  # items with two or more judgments
    disagreements: int  # of those, items without a strict majority
    per_reviewer: dict[str, float]  # share of a reviewer's shared items where they agree with the majority of others


def cohen_kappa(a: Sequence[Hashable], b: Sequence[Hashable]) -> float | None:
    """Kappa of two reviewers' labels on the same items; None when chance agreement is total (undefined)."""
    if len(a) != len(b):
        raise ValueError("both reviewers need a label for every item")
    if not a:
        return None
    n = len(a)
    observed = sum(x == y for x, y in zip(a, b, strict=True)) / n
    ca, cb = Counter(a), Counter(b)
    expected = sum(ca[label] * cb[label] for label in ca) / n**2
    return None if expected == 1 else (observed - expected) / (1 - expected)


def krippendorff_alpha(units: Sequence[Sequence[Hashable]]) -> float | None:
    """Nominal alpha over units (each the labels it received); units with fewer than two labels are ignored."""
    coincidences: dict[tuple[Hashable, Hashable], float] = defaultdict(float)
    for labels in units:
        if len(labels) < 2:
            continue
        for x, y in permutations(labels, 2):
            coincidences[(x, y)] += 1 / (len(labels) - 1)
    totals: Counter = Counter()
    for (x, _), weight in coincidences.items():
        totals[x] += weight
    n = sum(totals.values())
    observed = sum(w for (x, y), w in coincidences.items() if x != y)
    # sum over label pairs x != y of totals[x] * totals[y], as n² minus the diagonal: linear in the number of labels
    # (pairwise labels are per-item winners, so there are about as many labels as items)
    expected = (n * n - sum(t * t for t in totals.values())) / (n - 1) if n > 1 else 0
    return None if expected == 0 else 1 - observed / expected


def agreement_from_votes(kind: str, votes: Votes) -> Agreement:
    shared = {item: by_user for item, by_user in votes.items() if len(by_user) >= 2}
    reviewers = sorted({u for by_user in shared.values() for u in by_user})
    disagreements = sum(majority(by_user.values()) is None for by_user in shared.values())
    if len(reviewers) == 2:
        both = [by_user for by_user in shared.values() if all(r in by_user for r in reviewers)]
        method = "cohen_kappa"
        overall = cohen_kappa([b[reviewers[0]] for b in both], [b[reviewers[1]] for b in both])
    elif reviewers:
        method, overall = "krippendorff_alpha", krippendorff_alpha([list(b.values()) for b in shared.values()])
    else:
        method, overall = "none", None
    return Agreement(kind, method, overall, len(shared), disagreements, shares_with_majority(shared))


def shares_with_majority(votes: Votes, only: str | None = None) -> dict[str, float]:
    """Each reviewer's (or only `only`'s) share of items where they gave the majority of the other reviewers'
    judgments, over items with two or more judgments and a strict majority among the others."""
    agree: Counter = Counter()
    counted: Counter = Counter()
    for by_user in votes.values():
        if len(by_user) < 2:
            continue
        for user, value in by_user.items():
            if only is not None and user != only:
                continue
            others = majority(v for u, v in by_user.items() if u != user)
            if others is not None:
                counted[user] += 1
                agree[user] += value == others
    return {u: agree[u] / counted[u] for u in sorted(counted)}


def reviewer_agreement(store: FeedbackStore, username: str) -> dict[str, float | None]:
    """One reviewer's agreement with the majority per kind (pairwise, thumbs, likert), equal to
    `agreement(store, kind).per_reviewer.get(username)` but read from the items they judged only, not from every
    judgment in the store: the review tab shows it after each judgment. Thumbs and Likert are tallied in SQL
    (`rating_agreement_counts`: the rows of every co-reviewer's rating never reach Python); pairwise votes from the
    comparisons and rankings on the prompts they compared or ranked."""
    comparisons, rankings = store.pairwise_on_prompts_of(username)
    shares = {"pairwise": shares_with_majority(pair_votes(comparisons, rankings), username).get(username)}
    for kind, (agree, counted) in store.rating_agreement_counts(username).items():
        shares[kind] = agree / counted if counted else None
    return shares


def agreement(store: FeedbackStore, kind: str, snapshot: Snapshot | None = None) -> Agreement:
    """Agreement on `kind` = thumbs | likert | pairwise (comparisons and rankings, winners per pair)."""
    if kind == "thumbs":
        votes = thumbs_votes(store.list_ratings(snapshot))
    elif kind == "likert":
        votes = likert_votes(store.list_ratings(snapshot))
    elif kind == "pairwise":
        votes = pair_votes(store.list_comparisons(snapshot), store.list_rankings(snapshot))
    else:
        raise ValueError(f"kind must be thumbs, likert or pairwise; got {kind!r}")
    return agreement_from_votes(kind, votes)
