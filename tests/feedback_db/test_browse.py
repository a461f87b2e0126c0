"""The data browser's queries and actions: filters, paging, one prompt's feedback, exclusions and split moves."""

import pytest

from feedback_db import FeedbackStore
from feedback_db.browse import BrowseFilter
from feedback_db.datasets import preference_rows


def _judged(store: FeedbackStore, text: str, source: str = "manual", winners: tuple = ("a",)) -> int:
    p = store.add_prompt(text, source=source, split="train")
    a, b = store.add_response(p, f"{text} A", "v1"), store.add_response(p, f"{text} B", "base")
    for user, winner in zip(("ann", "bob"), winners, strict=False):
        store.add_comparison(a, b, winner, user)
    return p


def ids(store: FeedbackStore, **filters) -> list[int]:
    return [r.id for r in store.browse_prompts(BrowseFilter(**filters))[0]]


def test_filters_and_paging(store: FeedbackStore) -> None:
    agreed = _judged(store, "Why is 50% of the sky blue?", winners=("a", "a"))
    split = _judged(store, "What is a GPU?", source="arena", winners=("a", "b"))
    plain = store.add_prompt("Unanswered", split="heldout")
    assert ids(store) == [plain, split, agreed]
    assert ids(store, search="50%") == [agreed] and ids(store, search="%") == [agreed]  # LIKE wildcards escaped
    assert ids(store, split="heldout") == [plain] and ids(store, source="arena") == [split]
    assert ids(store, version="v1") == [split, agreed] and ids(store, reviewer="bob") == [split, agreed]
    assert ids(store, disagreement=True) == [split]
    assert ids(store, since="2999-01-01") == []
    rows, total = store.browse_prompts(BrowseFilter(), page=2, page_size=2)
    assert [r.id for r in rows] == [agreed] and total == 3
    assert (rows[0].responses, rows[0].judgments) == (2, 2)
    feedback = store.prompt_feedback(split)
    assert len(feedback["responses"]) == 2 and {c.winner for c in feedback["comparisons"]} == {"a", "b"}


def test_exclusion_is_soft_reversible_and_respects_snapshots(store: FeedbackStore) -> None:
    kept, dropped = _judged(store, "kept"), _judged(store, "dropped")
    before = store.snapshot()
    store.exclude_prompt(dropped, "alice", "contains a phone number")
    with pytest.raises(ValueError, match="already excluded"):
        store.exclude_prompt(dropped, "alice", "again")
    with pytest.raises(ValueError, match="say why"):
        store.exclude_prompt(kept, "alice", " ")
    assert [r["prompt"][-1]["content"] for r in preference_rows(store)[0]] == ["kept"]
    assert len(preference_rows(store, before)[0]) == 2  # a snapshot taken before rebuilds as it was
    assert ids(store, excluded=True) == [dropped] and store.get_prompt(dropped) is not None
    store.restore_prompt(dropped, "alice")
    assert len(preference_rows(store)[0]) == 2
    (exclusion,) = store.prompt_feedback(dropped)["exclusions"]
    assert exclusion["lifted_by"] == "alice" and exclusion["reason"] == "contains a phone number"
    with pytest.raises(ValueError, match="not excluded"):
        store.restore_prompt(dropped, "alice")


def test_move_prompt_records_the_move(store: FeedbackStore) -> None:
    p = store.add_prompt("Q", split="train")
    store.move_prompt(p, "heldout", "alice")
    assert store.get_prompt(p).split == "heldout"
    move = store.table_rows("prompt_split_moves")[-1]
    assert (move["prompt_id"], move["from_split"], move["to_split"]) == (p, "train", "heldout")
    with pytest.raises(ValueError, match="already in heldout"):
        store.move_prompt(p, "heldout", "alice")
