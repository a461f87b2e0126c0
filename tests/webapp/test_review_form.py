"""The configurable review form through the handlers: admin guidelines and criteria, reviewer answers stored with
the judgment and exported, an excluding flag, undo, and the reviewer's own counts."""

import json
from pathlib import Path

import gradio as gr
import pytest

from feedback_db.datasets import preference_rows
from tests.webapp.conftest import call
from tests.webapp.test_handlers import add_pair


def test_admin_form_reaches_the_reviewer_and_answers_are_stored_exported_and_excluding(demo, store):
    call(demo, "form_guidelines", "pairwise", "Prefer **short** answers <script>x()</script>", user="alice")
    call(demo, "form_add_criterion", "factually accurate", "Every claim is true", "scale", False, user="alice")
    table, _, name, description = call(demo, "form_add_criterion", "personal data", "Names, phones", "flag", True,
                                       user="alice")
    assert list(table.name) == ["factually accurate", "personal data"] and name == description == ""  # form cleared
    with pytest.raises(gr.Error, match="only a yes/no flag"):
        call(demo, "form_add_criterion", "x", "", "scale", True, user="alice")
    with pytest.raises(gr.Error, match="Permission denied"):
        call(demo, "form_add_criterion", "y", "", "scale", False, user="rita")

    add_pair(store, "first?")
    add_pair(store, "second?")
    guidelines, mine, form, *slots = call(demo, "review_form", "pairwise", user="rita")
    assert "Prefer <strong>short</strong> answers &lt;script&gt;" in guidelines and "<script>" not in guidelines
    assert slots[0]["visible"] and slots[0]["label"] == "factually accurate"
    assert slots[0]["info"] == "Every claim is true · about this pair, stored with your vote"  # not per answer
    assert call(demo, "review_form", "single", user="rita")[3]["info"] == "Every claim is true"
    assert "out of training" in slots[1]["label"] and slots[1]["choices"] == [("yes", 1), ("no", 0)]
    assert not slots[2]["visible"] and "0 A/B votes" in mine

    item = call(demo, "review_next", "pairwise", user="rita")[0]
    item = call(demo, "review_criterion_0", item, form, 4, user="rita")
    item = call(demo, "review_criterion_1", item, form, 1, user="rita")
    flagged_prompt = store.get_response(item["response_ids"][0]).prompt_id
    shown = call(demo, "review_vote_a", item, user="rita")
    assert "1 A/B votes" in shown[-1]  # the reviewer's counts refresh with each judgment, not only on Next item
    (comparison,) = store.list_comparisons()
    answers = {(a.criterion_id, a.value, a.judgment, a.judgment_id) for a in store.list_criterion_answers()}
    assert answers == {(form[0], 4, "comparisons", comparison.id), (form[1], 1, "comparisons", comparison.id)}
    item = call(demo, "review_next", "pairwise", user="rita")[0]
    call(demo, "review_vote_b", item, user="rita")
    assert {r["prompt"][-1]["content"] for r in preference_rows(store)[0]} == {"first?", "second?"} - {
        store.get_prompt(flagged_prompt).text}

    path = call(demo, "data_export", "criterion_answers", user="alice")
    exported = [json.loads(line) for line in Path(path).read_text().splitlines()]
    assert {(r["criterion_id"], r["value"]) for r in exported} == {(form[0], 4), (form[1], 1)}
    assert "2 A/B votes" in call(demo, "review_form", "pairwise", user="rita")[1]


def test_bad_criterion_values_save_nothing_and_undo_serves_the_item_again(demo, store):
    call(demo, "form_add_criterion", "harmful", "", "flag", False, user="alice")
    add_pair(store, "only?")
    form = call(demo, "review_form", "pairwise", user="rita")[2]
    item = call(demo, "review_next", "pairwise", user="rita")[0]
    with pytest.raises(gr.Error, match="Not saved"):
        call(demo, "review_vote_a", {**item, "criteria": {form[0]: 7}}, user="rita")
    assert store.list_comparisons() == []  # the judgment and its answers are one transaction
    call(demo, "review_vote_tie", {**item, "criteria": {form[0]: 0}}, user="rita")
    assert call(demo, "review_next", "pairwise", user="rita")[0] is None
    shown = call(demo, "review_undo", "pairwise", user="rita")
    assert store.list_comparisons() == [] and store.list_criterion_answers() == []
    assert sorted(shown[0]["response_ids"]) == sorted(item["response_ids"])
    assert store.list_audit()[0].action == "undo_judgment"
    with pytest.raises(gr.Error, match="no judgment to undo"):
        call(demo, "review_undo", "pairwise", user="rita")
