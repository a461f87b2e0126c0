"""The evaluation gate's decision rule, as pure functions of the judgments (no model, no store writes).

A judgment is one held-out prompt answered by the candidate and by the version it is compared with, judged
`win`, `loss` or `tie` from the candidate's side (identical answers are ties: an unchanged model cannot pass).
The verdict:
- `pass`: at least `min_decisive` decisive (non-tie) comparisons and the lower bound of the 95 % Wilson interval
  of the candidate's win-rate among them is above 0.5;
- `fail`: at least `min_decisive` decisive comparisons and an observed win-rate of 0.5 or less (more comparisons
  at this rate would never pass);
- `inconclusive`: otherwise, with the number of further decisive comparisons needed at the observed rate.
Auto-promotion needs a `pass` and no refusal (`refusals`: evaluated on training data, held-out set too small, an
automatic judge below the accuracy floor or not trusted, online RL). Used by training.evaluate (automatic judge)
and by the app for human sign-off (webapp.services.check_gates), which read `human_judgments` from the store.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

Z95 = 1.959963984540054
OUTCOMES = ("win", "loss", "tie")


@dataclass(frozen=True)
class GatePolicy:
    """What the gate requires; every field is a flag of training.evaluate."""

    min_decisive: int = 20
    min_heldout_prompts: int = 20
    judge_accuracy_floor: float = 0.6
    trust_automatic_judge: bool = False  # let a pass judged by a model (not humans) auto-promote
    auto_promote_online_rl: bool = False  # let a pass auto-promote an online RL version (reward hacking risk)
    max_accuracy_drop: float = 0.0  # allowed drop of held-out preference accuracy vs the compared version


@dataclass(frozen=True)
class Verdict:
    status: str  # pass | fail | inconclusive
    wins: int
    losses: int
    ties: int
    win_rate: float | None  # wins / decisive; None without decisive comparisons
    lower: float | None  # 95 % Wilson interval of the win-rate
    upper: float | None
    more_needed: int | None  # further decisive comparisons needed at the observed rate; None: would not pass
    refusals: list[str] = field(default_factory=list)  # why auto-promotion is refused
    promote: bool = False  # the gate makes the candidate active
    reason: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


def wilson_interval(wins: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion (wins of n)."""
    if n <= 0:
        return 0.0, 1.0
    p = wins / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def decisive_needed(win_rate: float, min_decisive: int, limit: int = 100_000) -> int | None:
    """The fewest decisive comparisons at which `win_rate` would pass (None: never, at 0.5 or below)."""
    if win_rate <= 0.5:
        return None
    n = min_decisive
    while n <= limit:
        if wilson_interval(math.floor(win_rate * n + 1e-9), n)[0] > 0.5:
            return n
        n += 1
    return None


def verdict(outcomes: list[str], min_decisive: int = 20) -> Verdict:
    """The statistical verdict of the candidate's judgments (before refusals)."""
    unknown = sorted(set(outcomes) - set(OUTCOMES))
    if unknown:
        raise ValueError(f"judgments must be one of {OUTCOMES}; got {unknown}")
    wins, losses, ties = (outcomes.count(o) for o in OUTCOMES)
    decisive = wins + losses
    if not decisive:
        more = max(min_decisive, 1)
        return Verdict("inconclusive", wins, losses, ties, None, None, None, more,
                       reason=f"no decisive comparison ({ties} ties); {more} more needed")
    rate = wins / decisive
    lower, upper = wilson_interval(wins, decisive)
    needed = decisive_needed(rate, min_decisive)
    more = None if needed is None else max(0, needed - decisive)
    interval = f"win-rate {rate:.2f} [{lower:.2f}, {upper:.2f}] over {decisive} decisive ({ties} ties)"
    if decisive >= min_decisive and lower > 0.5:
        return Verdict("pass", wins, losses, ties, rate, lower, upper, 0, reason=f"{interval}: lower bound > 0.5")
    if decisive >= min_decisive and rate <= 0.5:
        return Verdict("fail", wins, losses, ties, rate, lower, upper, None,
                       reason=f"{interval}: not better than the compared version")
    if more is None:
        why = f"{interval}: fewer than {min_decisive} decisive comparisons, and at this rate more would not pass"
    else:
        why = f"{interval}: {more} more decisive comparisons needed at this rate"
    return Verdict("inconclusive", wins, losses, ties, rate, lower, upper, more, reason=why)


def refusals(policy: GatePolicy, *, eval_on_train: bool, heldout_prompts: int, judge_kind: str | None,
             judge_accuracy: float | None, method: str, accuracies: tuple[float, float] | None = None) -> list[str]:
    """Why auto-promotion is refused whatever the win-rate, each with what to do about it. `accuracies`: held-out
    preference accuracy of (candidate, compared version), measured on the same pairs against the same reference."""
    reasons = []
    if eval_on_train:
        reasons.append("evaluated on training data (no held-out prompts): mark prompts held-out (import with "
                       "--split heldout, or let new prompts be held out by --heldout-share) and evaluate again")
    elif heldout_prompts < policy.min_heldout_prompts:
        reasons.append(f"held-out set too small: {heldout_prompts} prompts < {policy.min_heldout_prompts}; add "
                       "held-out prompts")
    if judge_kind is None:
        reasons.append("no independent judge: reviewers vote on the gate's A/B items (human sign-off), or pick a "
                       "frozen earlier reward version / a local HF classifier with --judge_model")
    elif judge_kind != "human":
        if judge_accuracy is None:
            reasons.append("judge accuracy unknown: no held-out preference pairs to measure it on")
        elif judge_accuracy < policy.judge_accuracy_floor:
            reasons.append(f"judge accuracy {judge_accuracy:.2f} on held-out pairs < floor "
                           f"{policy.judge_accuracy_floor}")
        if not policy.trust_automatic_judge:
            reasons.append("auto-promotion is off for automatic judges (a model can be fooled): promote by hand "
                           "after reading the gate report, or set --trust_automatic_judge")
    if method == "online_rl" and not policy.auto_promote_online_rl:
        reasons.append("auto-promotion is off for online RL (the policy may have learned to please its reward "
                       "model): promote by hand, or set --auto_promote_online_rl")
    if accuracies is not None and accuracies[0] < accuracies[1] - policy.max_accuracy_drop:
        reasons.append(f"held-out preference accuracy dropped: {accuracies[0]:.2f} < {accuracies[1]:.2f} of the "
                       "compared version (same pairs, same reference)")
    return reasons


def decide(outcomes: list[str], policy: GatePolicy, *, eval_on_train: bool, heldout_prompts: int,
           judge_kind: str | None, judge_accuracy: float | None, method: str, auto_promote: bool,
           accuracies: tuple[float, float] | None = None) -> Verdict:
    """The verdict plus refusals; `promote` only for a pass with no refusal and auto-promotion on."""
    result = verdict(outcomes, policy.min_decisive)
    refused = refusals(policy, eval_on_train=eval_on_train, heldout_prompts=heldout_prompts, judge_kind=judge_kind,
                       judge_accuracy=judge_accuracy, method=method, accuracies=accuracies)
    promote = result.status == "pass" and not refused and auto_promote
    reason = result.reason + "".join(f"; not auto-promoted: {r}" for r in refused if result.status == "pass")
    if result.status == "pass" and not refused and not auto_promote:
        reason += "; auto-promotion is off for this round: promote by hand"
    return Verdict(**{**result.as_dict(), "refusals": refused, "promote": promote, "reason": reason})


def human_judgments(pairs: list[list[int]], votes: dict[tuple[int, int], dict[str, object]]) -> list[str | None]:
    """Each gate item's judgment from reviewers' A/B votes: `pairs` are [candidate response, other response] (an
    empty pair = identical answers, a tie); `votes` is feedback_db.consensus.pair_votes. Per item the strict
    majority of its reviewers counts (a split vote, tie or both_bad is a tie); None = no vote yet."""
    outcomes: list[str | None] = []
    for pair in pairs:
        if not pair:
            outcomes.append("tie")
            continue
        candidate, other = pair
        by_user = votes.get((min(candidate, other), max(candidate, other)), {})
        if not by_user:
            outcomes.append(None)
            continue
        tally = {"win": 0, "loss": 0}
        for judgment in by_user.values():
            if judgment == candidate:
                tally["win"] += 1
            elif judgment == other:
                tally["loss"] += 1
        total = len(by_user)
        outcomes.append("win" if 2 * tally["win"] > total else "loss" if 2 * tally["loss"] > total else "tie")
    return outcomes


def votes_missing(pairs: list[list[int]], votes: dict[tuple[int, int], dict[str, object]],
                  votes_per_item: int) -> int:
    """Votes still expected before the human verdict is final (identical-answer items need none)."""
    return sum(max(0, votes_per_item - len(votes.get((min(p), max(p)), {}))) for p in pairs if p)


def human_verdict(gate: dict, votes: dict[tuple[int, int], dict[str, object]]) -> tuple[Verdict, int]:
    """(verdict so far, votes still missing) of a human sign-off gate as training.evaluate stored it in the
    version's metrics (`gate`); the verdict is final when no vote is missing."""
    outcomes = [o for o in human_judgments(gate["pairs"], votes) if o is not None]
    accuracies = gate.get("accuracies")
    result = decide(outcomes, GatePolicy(**gate["policy"]), eval_on_train=gate["eval_on_train"],
                    heldout_prompts=gate["heldout_prompts"], judge_kind="human", judge_accuracy=None,
                    method=gate["method"], auto_promote=gate["auto_promote"],
                    accuracies=tuple(accuracies) if accuracies else None)
    return result, votes_missing(gate["pairs"], votes, gate["votes_per_item"])
