"""The review queue: what each reviewer is served next in single, pairwise and ranking modes."""

import random

import pytest

from feedback_db import FeedbackStore, review_queue


def _prompt_with(store: FeedbackStore, text: str, versions: list[str]) -> list[int]:
    p = store.add_prompt(text)
    return [store.add_response(p, f"{text} by {v} #{i}", v) for i, v in enumerate(versions)]


def test_single_mode_serves_unjudged_fewest_first_and_respects_annotators(store: FeedbackStore) -> None:
    r1, r2 = _prompt_with(store, "P", ["base", "base"])
    store.add_rating(r1, "ann", thumbs=1)
    assert store.next_item("ann", "single").response_ids == [r2]
    assert store.next_item("bob", "single", annotators_per_item=2).response_ids == [r2]  # fewest judgments first
    assert store.next_item("bob", "single", annotators_per_item=1).response_ids == [r2]  # r1 already has one
    assert store.queue_progress("ann", "single") == (1, 1)
    store.skip_item("ann", "single", [r2])
    assert store.next_item("ann", "single") is None
    assert store.queue_progress("ann", "single") == (1, 0)
    store.add_correction(r2, "better", "bob")  # a correction is a judgment of the response too
    assert store.queue_progress("bob", "single", annotators_per_item=2) == (1, 1)


def test_pairwise_pairs_different_versions_in_random_order(store: FeedbackStore) -> None:
    same = _prompt_with(store, "Same", ["base", "base"])
    a, b = _prompt_with(store, "Mixed", ["base", "v1-sft"])
    orders = set()
    for _ in range(40):
        item = store.next_item("ann", "pairwise")
        assert set(item.response_ids) == {a, b} and item.prompt.text == "Mixed"
        orders.add(tuple(item.response_ids))
    assert len(orders) == 2  # position is randomised
    assert not set(same) & {x for o in orders for x in o}
    store.add_comparison(b, a, "a", "ann")
    assert store.next_item("ann", "pairwise") is None
    assert store.queue_progress("ann", "pairwise") == (1, 0)
    assert store.next_item("bob", "pairwise") is None  # already judged once, one annotator per item
    assert store.next_item("bob", "pairwise", annotators_per_item=2) is not None


def test_two_samples_of_one_version_generated_as_an_ab_pair_are_a_pairwise_item(store: FeedbackStore) -> None:
    p = store.add_prompt("Sampled")
    a, b = (store.add_response(p, f"sample {i}", "base", {"seed": i, "ab_sample": i}) for i in range(2))
    three = store.add_prompt("Ranked")  # ranking samples carry seeds but are not A/B pairs
    for i in range(3):
        store.add_response(three, f"r{i}", "base", {"seed": i})
    assert set(store.next_item("ann", "pairwise").response_ids) == {a, b}
    store.add_comparison(a, b, "tie", "ann")
    assert store.next_item("ann", "pairwise") is None


def test_ranking_needs_three_responses_and_skips_ranked_prompts(store: FeedbackStore) -> None:
    _prompt_with(store, "Two", ["base", "v1"])
    three = _prompt_with(store, "Three", ["base", "v1", "v2"])
    item = store.next_item("ann", "ranking")
    assert sorted(item.response_ids) == three and item.mode == "ranking"
    store.add_ranking(item.response_ids, "ann")
    assert store.next_item("ann", "ranking") is None
    assert store.queue_progress("ann", "ranking") == (1, 0)
    store.skip_item("bob", "ranking", three)
    assert store.next_item("bob", "ranking", annotators_per_item=3) is None


@pytest.mark.parametrize("seed", range(4))
def test_pairwise_fast_next_item_and_count_equal_the_definition(store: FeedbackStore, seed: int) -> None:
    """The id-ordered walk (next item) and the subtraction count (items left) against `_PAIRWISE`, the query that
    lists every pair with its judge count: random pairs (versions, A/B samples, same-version answers that are no
    item), votes in either order (some on non-items), repeated votes and skips, 1 to 3 annotators per item."""
    rng = random.Random(seed)
    users = ["ann", "bob", "cy", "dee"]
    prompts = []
    for n in range(15):
        prompt = store.add_prompt(f"P{n}")
        if rng.random() < 0.3:
            ids = [store.add_response(prompt, f"s{i}", "base", {"seed": i, "ab_sample": i}) for i in range(2)]
        else:
            versions = rng.choices(["base", "v1", "v2"], k=rng.randint(2, 4))
            ids = [store.add_response(prompt, f"r{i}", v) for i, v in enumerate(versions)]
        prompts.append(ids)
    for _ in range(40):
        a, b = rng.sample(rng.choice(prompts), 2)
        user = rng.choice(users)
        if rng.random() < 0.8:
            store.add_comparison(a, b, rng.choice(["a", "b", "tie"]), user)
        else:
            store.skip_item(user, "pairwise", [a, b])
    conn = store._db.get()
    checked = 0
    for user in [*users, "new"]:
        for k in (1, 2, 3):
            every = review_queue.candidates(conn, user, "pairwise", k, limit=None)
            assert review_queue.candidate_count(conn, user, "pairwise", k) == len(every)
            assert review_queue.candidates(conn, user, "pairwise", k, limit=1) == every[:1]
            assert review_queue.candidates(conn, user, "pairwise", k, limit=3) == every[:3]
            checked += bool(every)
    assert checked  # some queues were not empty
