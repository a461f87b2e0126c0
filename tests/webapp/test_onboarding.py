"""First run: the starter prompts shipped in the repository and the four-step onboarding panel."""

import json
from collections import Counter
from dataclasses import replace

import gradio as gr
import pytest

from feedback_db.importers import STARTER_PROMPTS
from tests.webapp.conftest import FakeModels, call, handler, make_services
from webapp.jobs import finished_part
from webapp.serving.service import Generation
from webapp.ui import build_ui


def test_starter_prompts_are_many_varied_unique_and_partly_held_out():
    rows = [json.loads(line) for line in STARTER_PROMPTS.read_text().splitlines()]
    assert len(rows) >= 100 and len({r["prompt"] for r in rows}) == len(rows)
    kinds = Counter(r["tags"][1] for r in rows)
    assert {"facts", "how-to", "writing", "reasoning", "safety"} <= set(kinds) and min(kinds.values()) >= 10
    assert 10 <= sum(r["split"] == "heldout" for r in rows) <= 25


class SampledModels(FakeModels):
    """Sampled answers differ by seed, as the real model's do at temperature 0.8; the batch finishes them last
    first (a batched decoder stores answers as they finish, so sample 1 may be stored before sample 0)."""

    def generate_many(self, requests: list, on_result=None, cancelled=None) -> list:
        order = list(reversed(range(len(requests))))
        results = super().generate_many([requests[i] for i in order])
        for i, result in zip(order, results, strict=True):
            on_result(i, replace(result, text=f"{result.text} (sample {requests[i].seed})"))
        return results


def highlighted(buttons: list[dict]) -> str | None:
    """Which step button is the primary (highlighted) one: load, generate, review, round."""
    primary = [key for key, b in zip(("load", "generate", "review", "round"), buttons, strict=True)
               if b["variant"] == "primary"]
    assert len(primary) <= 1 and all(b["variant"] in ("primary", "secondary") for b in buttons)
    return primary[0] if primary else None


def test_onboarding_panel_walks_an_empty_store_through_one_loop(store, tmp_path):
    services = make_services(store, tmp_path, SampledModels())
    demo = build_ui(services)
    panel, steps, *buttons, guide = call(demo, "onboarding_show", user="vic")
    assert panel["visible"] is False and guide["visible"] is False
    panel, steps, *buttons, guide = call(demo, "onboarding_show", user="alice")
    assert panel["visible"] is True and guide["visible"] is True and "○ **1. Load starter prompts**" in steps
    assert highlighted(buttons) == "load"
    with pytest.raises(gr.Error, match="load the starter prompts first"):
        call(demo, "onboarding_generate", user="alice")

    result, steps, *buttons = call(demo, "onboarding_load", user="alice")
    assert "Loaded 120 prompts" in result and "✓ **1." in steps and highlighted(buttons) == "generate"
    panel, steps, *buttons, guide = call(demo, "onboarding_show", user="alice")  # a page load once there are prompts
    assert panel["visible"] is False and guide["visible"] is True and "✓ **1." in steps
    panel, steps, *buttons = call(demo, "onboarding_open", user="alice")  # the header's "First-run guide" reopens it
    assert panel["visible"] is True and "○ **2." in steps and highlighted(buttons) == "generate"
    with pytest.raises(gr.Error, match="Permission denied"):
        call(demo, "onboarding_open", user="rita")
    assert len(store.list_prompts(split="heldout")) == 17
    result, steps, *buttons = call(demo, "onboarding_generate", user="alice")
    assert "12 answers from `base`: 6 blind A/B items" in result and "✓ **2." in steps
    assert highlighted(buttons) == "review"
    with pytest.raises(gr.Error, match="Not enough votes"):
        call(demo, "onboarding_train", user="alice")

    after_judgment = handler(demo, "onboarding_after_judgment")
    for winner in ("a", "b", "a", "b"):
        item = call(demo, "review_next", "pairwise", user="alice")[0]
        assert {store.get_response(i).model_version for i in item["response_ids"]} == {"base"}  # samples of 1
        call(demo, f"review_vote_{winner}", item, user="alice")
        # the vote changed the reviewer's counts: the UI then refreshes the panel (no click on it)
        steps, *buttons = after_judgment(gr.Request(username="alice"))
        assert "✓ **3." in steps and highlighted(buttons) == "round"
    assert after_judgment(gr.Request(username="rita")) == (gr.skip(),) * 5  # a reviewer has no panel
    result, steps, *buttons = call(demo, "onboarding_train", user="alice")
    (run,) = store.list_runs()
    assert run.stages == ["dpo"] and run.config["auto_promote"] is False and f"Round {run.id} started" in result
    panel, steps, *buttons, _ = call(demo, "onboarding_show", user="alice")
    assert panel["visible"] is False and steps.count("✓") == 4 and highlighted(buttons) is None
    with pytest.raises(gr.Error, match="Permission denied"):
        call(demo, "onboarding_load", user="rita")


@pytest.mark.parametrize(("text", "kept"), [
    ("The sky is blue. It scatters light. Blue light is scat", "The sky is blue. It scatters light."),
    ("Steps:\n1. Boil water.\n2. Add the", "Steps:\n1. Boil water."),  # "2." is a list number, not an end
    ("Hi! Yes? Sure th", "Hi! Yes?"),
    ("Done. All good.", "Done. All good."),  # finished: unchanged
    ("One long sentence that never ends and goes on", "One long sentence that never ends and goes on"),
    ("Short. Then a much longer sentence that was cut off in the mid", None),  # the cut would drop over half
])
def test_finished_part_cuts_an_answer_back_to_its_last_finished_sentence(text, kept):
    assert finished_part(text) == (text if kept is None else kept)


def test_candidates_that_ran_into_the_token_limit_are_stored_to_their_last_sentence(store, tmp_path):
    class Cut(FakeModels):  # every answer uses the whole token budget and breaks off mid-word
        def generate_many(self, requests, on_result=None, cancelled=None):
            results = [Generation("First point. Second point. Third poi", "base", 5, r.max_new_tokens, 0.01, 0.02)
                       for r in requests]
            for i, result in enumerate(results):
                on_result(i, result)
            return results

    services = make_services(store, tmp_path, Cut())
    prompt = store.add_prompt("Explain.")
    services.jobs.generate_candidates([prompt], ["base"], 2, 40, 0.8, ab_pair=True, whole_sentences=True)
    services.jobs.generate_candidates([prompt], ["base"], 1, 40, 0.8)  # the Data tab's jobs store answers as made
    answers = store.list_responses(prompt)
    assert [r.text for r in answers] == ["First point. Second point."] * 2 + ["First point. Second point. Third poi"]
    assert [r.settings.get("cut_at_sentence") for r in answers] == [True, True, None]
