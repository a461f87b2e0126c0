"""Agreement statistics against hand-computed values, and the stats tab's read-outs."""

import random

import pytest

from feedback_db import FeedbackStore
from feedback_db.agreement import agreement, cohen_kappa, krippendorff_alpha, reviewer_agreement
from feedback_db.stats import feedback_counts, win_rates


def test_cohen_kappa_textbook_example() -> None:
    # 50 items: both yes 20, both no 15, a-yes/b-no 5, a-no/b-yes 10 -> p_o = .7, p_e = .5 -> kappa = .4
    a = ["y"] * 20 + ["n"] * 15 + ["y"] * 5 + ["n"] * 10
    b = ["y"] * 20 + ["n"] * 15 + ["n"] * 5 + ["y"] * 10
    assert cohen_kappa(a, b) == pytest.approx(0.4)
    assert cohen_kappa(["y", "y"], ["y", "y"]) is None  # chance agreement is total: undefined


def test_krippendorff_alpha_nominal() -> None:
    assert krippendorff_alpha([["a", "a"], ["b", "b"], ["a", "a", "a"]]) == pytest.approx(1.0)
    # two coders, 4 units: coincidences o_aa=2, o_bb=4, o_ab=o_ba=1 -> n=8, D_o=2, D_e=2*3*5/7 -> alpha = 1 - 7/15
    assert krippendorff_alpha([["a", "a"], ["a", "b"], ["b", "b"], ["b", "b"]]) == pytest.approx(1 - 7 / 15)
    assert krippendorff_alpha([["a"], ["b"]]) is None


def test_store_agreement_win_rates_and_counts(store: FeedbackStore) -> None:
    ids = []
    for n in range(3):
        p = store.add_prompt(f"Q{n}")
        ids.append((store.add_response(p, "old", "base"), store.add_response(p, "new", "v1-sft")))
    for (old, new), (ann, bob) in zip(ids, [("b", "b"), ("b", "a"), ("tie", "tie")], strict=True):
        store.add_comparison(old, new, ann, "ann")
        store.add_comparison(new, old, {"a": "b", "b": "a"}.get(bob, bob), "bob")  # swapped sides, same meaning
    pairwise = agreement(store, "pairwise")
    assert (pairwise.method, pairwise.items, pairwise.disagreements) == ("cohen_kappa", 3, 1)
    assert pairwise.per_reviewer == {"ann": pytest.approx(2 / 3), "bob": pytest.approx(2 / 3)}
    rates = {r.version: r for r in win_rates(store)}
    assert (rates["v1-sft"].wins, rates["v1-sft"].losses, rates["v1-sft"].ties) == (3, 1, 2)
    assert rates["base"].win_rate == pytest.approx(0.25) and rates["v1-sft"].win_rate == pytest.approx(0.75)
    store.add_rating(ids[0][0], "ann", thumbs=1)
    store.add_rating(ids[0][0], "bob", thumbs=1)
    store.add_rating(ids[0][0], "cy", thumbs=0)
    thumbs = agreement(store, "thumbs")
    assert (thumbs.method, thumbs.items, thumbs.disagreements) == ("krippendorff_alpha", 1, 0)
    assert thumbs.per_reviewer == {"cy": 0.0}  # ann's and bob's "others" (1 up, 1 down) have no majority
    counts = {(c.mode, c.username): c.count for c in feedback_counts(store)}
    assert counts == {
        ("comparison", "ann"): 3,
        ("comparison", "bob"): 3,
        ("rating", "ann"): 1,
        ("rating", "bob"): 1,
        ("rating", "cy"): 1,
    }


@pytest.mark.parametrize("seed", range(4))
def test_reviewer_agreement_and_counts_equal_the_whole_store_computation(store: FeedbackStore, seed: int) -> None:
    """The review tab's per-reviewer figures (read from the reviewer's own items only) against the full computation
    over every judgment: random votes by 5 reviewers, repeated and changed votes, swapped sides, rankings."""
    rng = random.Random(seed)
    users = ["ann", "bob", "cy", "dee", "eve"]
    items = []
    for n in range(12):
        prompt = store.add_prompt(f"Q{n}")
        items.append([store.add_response(prompt, f"answer {k}", rng.choice(["base", "v1", "v2"])) for k in range(3)])
    for _ in range(150):
        user, responses = rng.choice(users), rng.choice(items)
        what = rng.random()
        if what < 0.45:
            a, b = rng.sample(responses, 2)
            store.add_comparison(a, b, rng.choice(["a", "b", "tie", "both_bad"]), user)
        elif what < 0.55:
            store.add_ranking(rng.sample(responses, 3), user)
        elif what < 0.95:
            store.add_rating(rng.choice(responses), user, thumbs=rng.choice([None, 0, 1]),
                             likert=rng.choice([None, 1, 3, 5]), comment="c")
        else:
            store.add_correction(rng.choice(responses), "better", user)
    full = {kind: agreement(store, kind).per_reviewer for kind in ("pairwise", "thumbs", "likert")}
    assert any(full.values())  # the random votes do produce agreement figures to compare
    for user in [*users, "nobody"]:
        assert reviewer_agreement(store, user) == {kind: per.get(user) for kind, per in full.items()}
        counts = dict.fromkeys(("rating", "comparison", "ranking", "correction"), 0)
        for row in feedback_counts(store):
            if row.username == user:
                counts[row.mode] += row.count
        assert store.reviewer_counts(user) == counts


def test_win_rates_count_one_vote_per_reviewer_per_pair(store: FeedbackStore) -> None:
    prompt = store.add_prompt("Q")
    base, tuned = store.add_response(prompt, "a", "base"), store.add_response(prompt, "b", "v1-dpo")
    for _ in range(20):  # one reviewer voting the same pair again and again
        store.add_comparison(tuned, base, "a", "ann")
    store.add_comparison(base, tuned, "a", "ann")  # ... then changing their mind: the latest vote counts
    store.add_comparison(base, tuned, "a", "bob")
    rates = {r.version: r for r in win_rates(store)}
    assert (rates["base"].wins, rates["base"].losses, rates["v1-dpo"].wins, rates["v1-dpo"].losses) == (2, 0, 0, 2)
