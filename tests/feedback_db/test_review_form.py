"""The configurable review form: guidelines per queue, criteria and their answers, flags that exclude prompts from
training (as of a snapshot), and undoing one's last judgment."""

import pytest

from feedback_db import FeedbackStore
from feedback_db.datasets import preference_rows


def _pair(store: FeedbackStore, text: str) -> tuple[int, int]:
    p = store.add_prompt(text, split="train")
    return store.add_response(p, f"{text} good", "v1"), store.add_response(p, f"{text} bad", "base")


def test_guidelines_per_queue_are_replaced_not_duplicated(store: FeedbackStore) -> None:
    assert store.guidelines("pairwise") is None
    store.set_guidelines("pairwise", "# Prefer *short* answers", "alice")
    store.set_guidelines("pairwise", "# Prefer correct answers", "alice")
    assert store.guidelines("pairwise") == "# Prefer correct answers" and store.guidelines("single") is None
    with pytest.raises(ValueError, match="mode must be one of"):
        store.set_guidelines("nope", "x", "alice")


def test_criteria_answers_are_validated_and_an_excluding_flag_drops_the_prompt_from_training(store) -> None:
    accurate = store.add_criterion("factually accurate", "Every claim is true", "scale")
    private = store.add_criterion("contains personal data", "Names, addresses, phone numbers", "flag", excludes=True)
    with pytest.raises(ValueError, match="only a yes/no flag"):
        store.add_criterion("x", "", "scale", excludes=True)
    with pytest.raises(ValueError, match="already exists"):
        store.add_criterion("factually accurate", "", "scale")
    kept, flagged = _pair(store, "kept"), _pair(store, "flagged")
    first = store.add_comparison(*kept, "a", "ann")
    store.add_criterion_answers("comparisons", first, "ann", {accurate.id: 4, private.id: 0})
    snapshot = store.snapshot()
    second = store.add_comparison(*flagged, "a", "ann")
    with pytest.raises(ValueError, match="not one of"):
        store.add_criterion_answers("comparisons", second, "ann", {accurate.id: 9})
    store.add_criterion_answers("comparisons", second, "ann", {private.id: 1})
    assert [(a.criterion_id, a.value) for a in store.list_criterion_answers()] == [
        (accurate.id, 4), (private.id, 0), (private.id, 1)]
    assert [r["chosen"][0]["content"] for r in preference_rows(store)[0]] == ["kept good"]
    assert len(preference_rows(store, snapshot)[0]) == 1  # the old snapshot rebuilds as it was
    store.retire_criterion("contains personal data")
    assert [c.name for c in store.list_criteria()] == ["factually accurate"]
    assert len(preference_rows(store)[0]) == 1  # retiring the flag keeps its exclusions
    assert {r["criterion_id"] for r in store.table_rows("criterion_answers")} == {accurate.id, private.id}


def test_undo_removes_the_latest_judgment_unless_a_version_trained_on_it(store: FeedbackStore) -> None:
    with pytest.raises(ValueError, match="no judgment to undo"):
        store.undo_last_judgment("ann")
    a, b = _pair(store, "one")
    store.add_rating(a, "ann", thumbs=1)
    criterion = store.add_criterion("harmful", "", "flag")
    comparison = store.add_comparison(a, b, "b", "ann")
    store.add_criterion_answers("comparisons", comparison, "ann", {criterion.id: 1})
    store.add_comparison(a, b, "a", "bob")
    assert store.undo_last_judgment("ann") == ("comparisons", comparison)
    assert [c.username for c in store.list_comparisons()] == ["bob"] and store.list_criterion_answers() == []
    assert store.next_item("ann", "pairwise", annotators_per_item=2).response_ids  # served again to change it
    store.register_version("v1-sft", None, "sft", "lora", "/tmp/x", "base", {}, store.snapshot(), {})
    with pytest.raises(ValueError, match="v1-sft was trained on this judgment"):
        store.undo_last_judgment("ann")
    assert len(store.list_ratings()) == 1
