"""Arena handlers and decisions: weighted version picks, the stored vote, the reveal."""

import random
from collections import Counter

import gradio as gr
import pytest

from tests.webapp.conftest import call
from tests.webapp.test_handlers import register
from webapp.arena import pick_versions
from webapp.tabs.common import safe_markdown


def test_pick_versions_favours_active_and_newest_candidate_and_randomises_sides():
    rng = random.Random(0)
    picks = [pick_versions(["base", "v1-sft", "v2-dpo", "v3-dpo"], "v1-sft", "v3-dpo", rng) for _ in range(4000)]
    assert all(a != b for a, b in picks)
    seen = Counter(v for pair in picks for v in pair)
    assert min(seen["v1-sft"], seen["v3-dpo"]) > 1.5 * max(seen["base"], seen["v2-dpo"])
    assert 0.4 < sum(a == "v1-sft" for a, _ in picks) / seen["v1-sft"] < 0.6  # A or B side equally often
    with pytest.raises(ValueError, match="two servable versions"):
        pick_versions(["base"], "base", None, rng)


def test_arena_needs_two_versions(demo):
    with pytest.raises(gr.Error, match="two servable versions"):
        call(demo, "arena_ask", "Hello?", user="vic")


def test_arena_battle_vote_is_stored_with_source_and_revealed_after(demo, store, tmp_path):
    register(store, tmp_path)
    _, chat_a, chat_b, battle, status, *buttons = call(demo, "arena_ask", "Why is the sky blue?", user="vic")
    assert set(battle.versions) == {"base", "v1-sft"} and "names are shown after" in status
    assert chat_a[-1]["content"] == f"<p>[{battle.versions[0]}] answer to: Why is the sky blue?</p>\n"
    assert "v1-sft" not in status and all(b["interactive"] for b in buttons)
    state, reveal, *buttons = call(demo, "arena_vote_b", battle, user="vic")
    assert state is None and not any(b["interactive"] for b in buttons)
    assert f"**A** was `{battle.versions[0]}`" in reveal and f"**B** was `{battle.versions[1]}`" in reveal
    (comparison,) = store.list_comparisons()
    assert (comparison.source, comparison.winner, comparison.username) == ("viewer_arena", "b", "vic")  # a viewer
    assert (comparison.version_a, comparison.version_b) == battle.versions
    prompt = store.get_prompt(comparison.prompt_id)
    assert prompt.source == "arena" and prompt.messages == [{"role": "user", "content": "Why is the sky blue?"}]
    assert safe_markdown(store.get_response(comparison.response_b).text) == chat_b[-1]["content"]
    with pytest.raises(gr.Error, match="Ask a prompt first"):
        call(demo, "arena_vote_a", None, user="vic")


def test_arena_shows_html_in_prompts_and_answers_as_text_and_stores_it_raw(demo, store, tmp_path):
    register(store, tmp_path)
    prompt = '<img src=x onerror="alert(1)"> hi'
    _, chat_a, chat_b, battle, *_ = call(demo, "arena_ask", prompt, user="vic")
    assert chat_a[0]["content"].startswith("<p>&lt;img")
    assert "<img" not in chat_a[-1]["content"] + chat_b[-1]["content"]
    call(demo, "arena_vote_tie", battle, user="vic")
    assert store.list_prompts()[0].messages[0]["content"] == prompt


def test_arena_refuses_anonymous_and_oversized_prompts(demo, store, tmp_path):
    register(store, tmp_path)
    with pytest.raises(gr.Error):
        call(demo, "arena_ask", "Hi", user=None)
    with pytest.raises(gr.Error, match="limit"):
        call(demo, "arena_ask", "x" * 9000, user="vic")


def test_viewers_arena_votes_train_only_when_an_admin_includes_viewer_chat_feedback(demo, store, tmp_path):
    from feedback_db.datasets import preference_rows

    register(store, tmp_path)
    for user, prompt in (("vic", "Why is grass green?"), ("rita", "Why is snow white?")):
        battle = call(demo, "arena_ask", prompt, user=user)[3]
        call(demo, "arena_vote_a", battle, user=user)
    assert [(c.username, c.source) for c in store.list_comparisons()] == [("vic", "viewer_arena"), ("rita", "arena")]

    def both_splits(snapshot: dict) -> tuple[set[str], int]:  # arena prompts are split like any other prompt
        results = [preference_rows(store, snapshot, split) for split in ("train", "heldout")]
        asked = {row["prompt"][-1]["content"] for rows, _ in results for row in rows}
        return asked, sum(c["viewer_arena"] for _, c in results)

    assert both_splits(store.snapshot()) == ({"Why is snow white?"}, 1)
    assert both_splits(store.snapshot(include_viewer_chat=True)) == ({"Why is grass green?", "Why is snow white?"}, 0)
