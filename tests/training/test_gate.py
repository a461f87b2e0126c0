"""The gate's decisions on constructed judgments: pure functions, no model (training.gate)."""

import random

import pytest

from training.gate import (
    GatePolicy,
    decide,
    decisive_needed,
    human_judgments,
    human_verdict,
    verdict,
    votes_missing,
    wilson_interval,
)

HUMAN = {"eval_on_train": False, "heldout_prompts": 40, "judge_kind": "human", "judge_accuracy": None,
         "method": "dpo", "auto_promote": True}


def outcomes(wins: int, losses: int, ties: int = 0) -> list[str]:
    return ["win"] * wins + ["loss"] * losses + ["tie"] * ties


def test_wilson_interval_matches_the_textbook_values() -> None:
    low, high = wilson_interval(14, 20)  # p = 0.7, n = 20: Wilson 95 % (0.481, 0.855)
    assert (round(low, 3), round(high, 3)) == (0.481, 0.855)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    assert wilson_interval(10, 10)[1] == pytest.approx(1.0)


def test_strong_winner_with_enough_votes_is_promoted() -> None:
    result = decide(outcomes(24, 6, 2), GatePolicy(), **HUMAN)
    assert result.status == "pass" and result.promote and result.lower > 0.5 and not result.refusals
    assert (result.wins, result.losses, result.ties) == (24, 6, 2)


def test_equal_quality_is_not_promoted() -> None:
    result = decide(outcomes(16, 16, 4), GatePolicy(), **HUMAN)
    assert result.status == "fail" and not result.promote and result.more_needed is None
    # a coin-flip judge over 32 prompts: the old rule (win-rate >= 0.5) passed ~60 %; this one ~0 %
    rng = random.Random(0)
    passed = sum(decide([rng.choice(["win", "loss"]) for _ in range(32)], GatePolicy(), **HUMAN).promote
                 for _ in range(1000))
    assert passed / 1000 < 0.05
    # a clearly worse candidate (true win-rate 0.40) practically never passes
    worse = sum(decide(["win" if rng.random() < 0.4 else "loss" for _ in range(32)], GatePolicy(), **HUMAN).promote
                for _ in range(1000))
    assert worse / 1000 < 0.01


def test_identical_answers_are_ties_and_never_pass() -> None:
    result = decide(outcomes(0, 0, 32), GatePolicy(), **HUMAN)
    assert result.status == "inconclusive" and not result.promote and result.win_rate is None
    assert result.more_needed == 20 and "no decisive comparison" in result.reason
    assert human_judgments([[], []], {}) == ["tie", "tie"]  # identical answers were never queued


def test_too_few_decisive_votes_is_inconclusive_with_the_needed_count() -> None:
    result = decide(outcomes(9, 1), GatePolicy(), **HUMAN)
    assert result.status == "inconclusive" and not result.promote
    needed = decisive_needed(0.9, 20)
    assert result.more_needed == needed - 10 == 10 and "10 more decisive comparisons" in result.reason
    # at the same rate, that many more comparisons do pass
    assert decide(outcomes(18, 2), GatePolicy(), **HUMAN).status == "pass"
    # 12 of 20 is not enough: the interval still reaches below 0.5; at 0.6 it would take more comparisons
    close = decide(outcomes(12, 8), GatePolicy(), **HUMAN)
    assert close.status == "inconclusive" and close.more_needed == decisive_needed(0.6, 20) - 20 > 0


def test_train_only_data_is_not_auto_promoted() -> None:
    result = decide(outcomes(30, 2), GatePolicy(), **{**HUMAN, "eval_on_train": True, "heldout_prompts": 0})
    assert result.status == "pass" and not result.promote
    assert "evaluated on training data" in result.refusals[0] and "not auto-promoted" in result.reason


def test_small_heldout_set_is_not_auto_promoted() -> None:
    result = decide(outcomes(30, 2), GatePolicy(), **{**HUMAN, "heldout_prompts": 12})
    assert not result.promote and "held-out set too small: 12 prompts < 20" in result.refusals[0]


def test_automatic_judge_below_the_accuracy_floor_is_not_auto_promoted() -> None:
    trusted = GatePolicy(trust_automatic_judge=True)
    auto = {**HUMAN, "judge_kind": "reward_version"}
    assert not decide(outcomes(30, 2), trusted, **{**auto, "judge_accuracy": 0.55}).promote
    assert "judge accuracy 0.55" in decide(outcomes(30, 2), trusted, **{**auto, "judge_accuracy": 0.55}).reason
    assert not decide(outcomes(30, 2), trusted, **{**auto, "judge_accuracy": None}).promote
    assert decide(outcomes(30, 2), trusted, **{**auto, "judge_accuracy": 0.8}).promote
    # by default an automatic judge never auto-promotes, and online RL never does
    assert not decide(outcomes(30, 2), GatePolicy(), **{**auto, "judge_accuracy": 0.9}).promote
    online = decide(outcomes(30, 2), GatePolicy(), **{**HUMAN, "method": "online_rl"})
    assert not online.promote and "online RL" in online.refusals[0]
    nobody = decide([], GatePolicy(), **{**HUMAN, "judge_kind": None})
    assert not nobody.promote and "no independent judge" in nobody.refusals[0]


def test_accuracy_guard_compares_like_with_like() -> None:
    dropped = decide(outcomes(30, 2), GatePolicy(), **HUMAN, accuracies=(0.55, 0.70))
    assert not dropped.promote and "accuracy dropped: 0.55 < 0.70" in dropped.refusals[0]
    assert decide(outcomes(30, 2), GatePolicy(max_accuracy_drop=0.2), **HUMAN, accuracies=(0.55, 0.70)).promote


def test_auto_promote_off_keeps_a_pass_as_candidate() -> None:
    result = decide(outcomes(30, 2), GatePolicy(), **{**HUMAN, "auto_promote": False})
    assert result.status == "pass" and not result.promote and "promote by hand" in result.reason


def test_human_votes_make_one_judgment_per_item_by_majority() -> None:
    pairs = [[1, 2], [3, 4], [5, 6], [], [7, 8]]  # [candidate response, compared response]
    votes = {(1, 2): {"ann": 1, "bob": 1}, (3, 4): {"ann": 4, "bob": 3}, (5, 6): {"ann": 6, "bob": 6},
             (7, 8): {"ann": "tie"}}
    assert human_judgments(pairs, votes) == ["win", "tie", "loss", "tie", "tie"]
    assert votes_missing(pairs, votes, votes_per_item=2) == 1
    assert human_judgments([[9, 10]], {}) == [None] and votes_missing([[9, 10]], {}, 2) == 2


def test_human_verdict_waits_for_votes_then_decides() -> None:
    pairs = [[2 * i, 2 * i + 1] for i in range(24)]
    gate = {"pairs": pairs, "votes_per_item": 1, "policy": {"min_decisive": 20}, "eval_on_train": False,
            "heldout_prompts": 40, "method": "dpo", "auto_promote": True}
    half = {(a, b): {"ann": a} for a, b in pairs[:12]}
    result, missing = human_verdict(gate, half)
    assert missing == 12 and result.status == "inconclusive"
    full = {**half, **{(a, b): {"ann": a if i % 6 else b} for i, (a, b) in enumerate(pairs[12:])}}
    result, missing = human_verdict(gate, full)
    assert missing == 0 and result.status == "pass" and result.promote and (result.wins, result.losses) == (22, 2)


def test_unknown_judgment_is_an_error() -> None:
    with pytest.raises(ValueError, match="judgments must be one of"):
        verdict(["win", "draw"])
