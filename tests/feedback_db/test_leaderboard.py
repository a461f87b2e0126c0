"""The leaderboard's Bradley–Terry fit: closed-form check, vote de-duplication, intervals and the win matrix."""

import math

from feedback_db import FeedbackStore
from feedback_db.leaderboard import PRIOR_TIES, SCALE, counted_votes, fit, leaderboard


def _battle(store: FeedbackStore, a: str, b: str, winner: str, user: str = "ann", source: str = "arena") -> int:
    p = store.add_prompt(f"{a} vs {b} #{store.count('prompts')}")
    ra, rb = store.add_response(p, "x", a), store.add_response(p, "y", b)
    return store.add_comparison(ra, rb, winner, user, source=source)


def test_two_versions_match_the_closed_form() -> None:
    # for two players BT gives p_a / p_b = wins_a / wins_b (each with the prior's half tie)
    votes = [("v1", "base", 1.0)] * 6 + [("v1", "base", 0.0)] * 2 + [("v1", "base", 0.5)] * 2
    base, v1 = fit(votes, ["base", "v1"])
    expected = SCALE * math.log10((6 + 1 + PRIOR_TIES / 2) / (2 + 1 + PRIOR_TIES / 2))
    assert abs((v1 - base) - expected) < 1e-6
    assert abs((v1 + base) / 2 - 1000) < 1e-6


def test_latest_vote_per_reviewer_and_pair_counts_and_same_version_pairs_are_left_out(store: FeedbackStore) -> None:
    p = store.add_prompt("P")
    a, b, c = store.add_response(p, "a", "v1"), store.add_response(p, "b", "base"), store.add_response(p, "c", "v1")
    store.add_comparison(a, b, "b", "ann")
    store.add_comparison(b, a, "b", "ann")  # ann changed her mind: now a (v1) wins
    store.add_comparison(a, b, "a", "bob", source="arena")
    store.add_comparison(a, c, "a", "ann")  # v1 vs v1
    votes = counted_votes(store.list_comparisons())
    assert sorted(votes) == [("base", "v1", 0.0), ("v1", "base", 1.0)]


def test_leaderboard_ranks_intervals_and_matrix_and_moves_with_votes(store: FeedbackStore) -> None:
    for _ in range(8):
        _battle(store, "v2", "v1", "a")
    _battle(store, "v2", "v1", "b", source="review")
    _battle(store, "v1", "base", "tie")
    board = leaderboard(store, rounds=100)
    assert [r.version for r in board.ratings][0] == "v2" and board.votes == 10
    top = board.ratings[0]
    assert top.low <= top.rating <= top.high and top.high - top.low > 0
    assert (top.wins, top.losses, top.ties, top.votes) == (8, 1, 0, 9)
    assert board.matrix["v2"]["v1"] == (8, 9) and board.matrix["v1"]["v2"] == (1, 9)
    assert board.matrix["v1"]["base"] == (0, 0)  # the tie is not a decisive vote
    before = {r.version: r.rating for r in board.ratings}
    for _ in range(6):
        _battle(store, "base", "v2", "a", user="cat")
    after = {r.version: r.rating for r in leaderboard(store, rounds=20).ratings}
    assert after["base"] > before["base"] and after["v2"] < before["v2"]


def test_no_votes_gives_an_empty_board(store: FeedbackStore) -> None:
    board = leaderboard(store)
    assert board.ratings == [] and board.votes == 0
