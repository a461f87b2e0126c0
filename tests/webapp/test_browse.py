"""Admin › Browse through the handlers: filter, open a prompt with its answers and votes, move, exclude, restore."""

import gradio as gr
import pytest

from feedback_db.datasets import preference_rows
from tests.webapp.conftest import call
from tests.webapp.test_handlers import add_pair

FILTERS = {"search": "", "split": "any", "source": "", "version": "", "reviewer": "", "since": "",
           "disagreement": False, "excluded": "any", "page": 1}


def search(demo, **changes):
    return call(demo, "browse_search", *{**FILTERS, **changes}.values(), user="alice")


def test_browse_filter_open_move_exclude_restore(demo, store):
    prompt_id = store.add_prompt("Is <b>this</b> bold?", split="train")
    a, b = (store.add_response(prompt_id, f"answer from {v}", v) for v in ("base", "v1-sft"))
    add_pair(store, "Another question")
    store.add_comparison(a, b, "a", "rita")
    store.add_comparison(a, b, "b", "alice")
    table, summary = search(demo, disagreement=True)
    assert list(table.id) == [prompt_id] and summary.startswith("1 prompt matches")
    assert list(search(demo, search="another")[0].prompt) == ["Another question"]
    with pytest.raises(gr.Error, match="YYYY-MM-DD"):
        search(demo, since="yesterday")

    shown = call(demo, "browse_open", prompt_id, user="alice")
    assert "&lt;b&gt;this&lt;/b&gt;" in shown and "`v1-sft`" in shown and "rita chose **a**" in shown
    call(demo, "browse_move_heldout", prompt_id, user="alice")
    assert store.get_prompt(prompt_id).split == "heldout"
    with pytest.raises(gr.Error, match="already in heldout"):
        call(demo, "browse_move_heldout", prompt_id, user="alice")
    call(demo, "browse_move_train", prompt_id, user="alice")
    store.add_comparison(a, b, "a", "vic")  # a majority: the pair becomes a preference row
    assert len(preference_rows(store)[0]) == 1
    shown = call(demo, "browse_exclude", prompt_id, "personal data", user="alice")
    assert "excluded by alice: personal data" in shown and preference_rows(store)[0] == []
    assert list(search(demo, excluded="excluded")[0].id) == [prompt_id]
    call(demo, "browse_restore", prompt_id, user="alice")
    assert len(preference_rows(store)[0]) == 1
    actions = [e.action for e in store.list_audit()][:4]
    assert actions == ["restore_prompt", "exclude_prompt", "move_prompt", "move_prompt"]
    with pytest.raises(gr.Error, match="Permission denied"):
        call(demo, "browse_open", prompt_id, user="rita")
