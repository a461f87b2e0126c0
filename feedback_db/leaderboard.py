"""Leaderboard: Bradley–Terry ratings per model version from every blind A/B vote, with bootstrap intervals.

Votes come from the review queue, the chat arena and the REST API (`comparisons`); a reviewer's latest vote on a
pair of answers is the one that counts (one vote per reviewer per pair), pairs of answers from the same version
say nothing about versions and are left out. Ties and "both bad" count as half a win for each side, as in
FastChat's `elo_analysis.py` (the reference for this page); unlike it we fit with Hunter's (2004) MM iterations in
numpy instead of scikit-learn's logistic regression, which is not in the stack. A weak prior — one virtual tie
between every two versions — keeps a version that never won finite. Ratings use the Elo scale: 1000 on average,
+400 means 10:1 odds of winning.

    board = leaderboard(store)            # board.ratings best first, board.matrix[a][b] = (a's wins, decisive votes)
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from feedback_db.models import Comparison
from feedback_db.store import FeedbackStore

SCALE, BASE, INIT = 400.0, 10.0, 1000.0  # FastChat's Elo-scale constants
PRIOR_TIES = 1.0  # virtual tied games between every two versions
EXPLANATION = (
    "Ratings are Bradley–Terry strengths fitted to every blind A/B vote (review queue, arena and API; one vote per "
    "reviewer per pair of answers; a tie or 'both bad' is half a win each), on the Elo scale where +400 means 10:1 "
    "odds of winning; the 95 % interval comes from refitting on votes resampled with replacement."
)


@dataclass(frozen=True)
class VersionRating:
    version: str
    rating: float
    low: float  # 95 % bootstrap interval
    high: float
    votes: int
    wins: int
    losses: int
    ties: int  # ties and both_bad


@dataclass(frozen=True)
class Leaderboard:
    ratings: list[VersionRating]  # best first
    matrix: dict[str, dict[str, tuple[int, int]]]  # row version -> column version -> (row's wins, decisive votes)
    votes: int  # votes counted after de-duplication


def counted_votes(comparisons: list[Comparison]) -> list[tuple[str, str, float]]:
    """(version a, version b, a's score: 1 win, 0.5 tie/both bad, 0 loss); latest vote per reviewer and pair."""
    latest: dict[tuple[str, int, int], Comparison] = {}
    for c in sorted(comparisons, key=lambda c: c.id):
        if c.version_a != c.version_b:
            latest[(c.username, min(c.response_a, c.response_b), max(c.response_a, c.response_b))] = c
    score = {"a": 1.0, "b": 0.0, "tie": 0.5, "both_bad": 0.5}
    return [(c.version_a, c.version_b, score[c.winner]) for c in latest.values()]


def fit(votes: list[tuple[str, str, float]], versions: list[str], iterations: int = 200) -> np.ndarray:
    """Bradley–Terry ratings (Elo scale) of `versions` by MM: p_i <- W_i / sum_j n_ij / (p_i + p_j)."""
    index = {v: i for i, v in enumerate(versions)}
    n = len(versions)
    wins = np.full((n, n), PRIOR_TIES / 2)  # wins[i, j]: i's (half-)wins over j, prior included
    np.fill_diagonal(wins, 0.0)
    for a, b, s in votes:
        wins[index[a], index[b]] += s
        wins[index[b], index[a]] += 1.0 - s
    games, total_wins = wins + wins.T, wins.sum(axis=1)
    p = np.ones(n)
    for _ in range(iterations):
        new = total_wins / (games / (p[:, None] + p[None, :])).sum(axis=1)
        new /= np.exp(np.log(new).mean())
        if np.abs(new - p).max() < 1e-9:
            p = new
            break
        p = new
    return INIT + SCALE * np.log(p) / np.log(BASE)


def leaderboard(store: FeedbackStore, rounds: int = 200, seed: int = 0) -> Leaderboard:
    votes = counted_votes(store.list_comparisons())
    versions = sorted({v for a, b, _ in votes for v in (a, b)})
    if not votes:
        return Leaderboard([], {}, 0)
    ratings = fit(votes, versions)
    rng = np.random.default_rng(seed)
    samples = np.array([fit([votes[i] for i in rng.integers(0, len(votes), len(votes))], versions)
                        for _ in range(rounds)])
    low, high = np.percentile(samples, [2.5, 97.5], axis=0)
    tally: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])  # wins, losses, ties
    matrix: dict[str, dict[str, list[int]]] = {v: {w: [0, 0] for w in versions if w != v} for v in versions}
    for a, b, s in votes:
        if s == 0.5:
            tally[a][2] += 1
            tally[b][2] += 1
            continue
        winner, loser = (a, b) if s == 1.0 else (b, a)
        tally[winner][0] += 1
        tally[loser][1] += 1
        matrix[winner][loser][0] += 1
        matrix[winner][loser][1] += 1
        matrix[loser][winner][1] += 1
    rows = [VersionRating(v, float(ratings[i]), float(low[i]), float(high[i]), sum(tally[v]), *tally[v])
            for i, v in enumerate(versions)]
    return Leaderboard(sorted(rows, key=lambda r: -r.rating),
                       {v: {w: (x[0], x[1]) for w, x in row.items()} for v, row in matrix.items()}, len(votes))
