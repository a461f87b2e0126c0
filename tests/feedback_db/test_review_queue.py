"""The review queue: what each reviewer is served next in single, pairwise and ranking modes."""

from feedback_db import FeedbackStore


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
