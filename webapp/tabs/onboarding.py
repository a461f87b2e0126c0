"""First-run panel (opens by itself for admins of an empty store; the header's *First-run guide* reopens it):
load starter prompts → generate candidates → review → train a round, each one click, with what to expect and how
long it takes on a 2-core CPU machine."""

import gradio as gr

from feedback_db.datasets import data_check
from feedback_db.importers import STARTER_PROMPTS, import_file
from feedback_db.store import FeedbackStore
from webapp.auth import ADMINS
from webapp.serving.errors import VersionLoadError

PROMPTS, SAMPLES, MAX_NEW_TOKENS, TEMPERATURE = 6, 2, 128, 0.8  # answers cut back to their last sentence
ROUND_STEPS = 8
STEPS = {
    "prompts": "**1. Load starter prompts** — 120 prompts written for Tuneloop (facts, how-to, writing, reasoning, "
               "safety-sensitive requests), 103 for training and 17 held out. About a second.",
    "candidates": f"**2. Generate candidates** — the serving model answers {PROMPTS} prompts twice (sampled), so "
                  "each prompt becomes one blind A/B item. About a minute on 2 CPU cores.",
    "review": "**3. Review** — opens the Review tab: press *Next item* and pick the better answer (keys a / b / t / "
              "x). A few seconds per vote; 4 decisive votes are enough for a first round.",
    "round": f"**4. Train a round** — DPO with a LoRA adapter, {ROUND_STEPS} steps, in its own process; follow it in "
             "Admin › Rounds. About 2 minutes; the new version is a candidate that meets `base` in the Arena tab.",
}


def first_run_steps(store: FeedbackStore) -> dict[str, bool]:
    """Which steps of the first loop this store has done: prompts, candidates, review, round."""
    return {"prompts": store.count("prompts") > 0, "candidates": store.count("responses") > 0,
            "review": store.count("comparisons") > 0, "round": bool(store.list_runs(limit=1))}


def checklist(done: dict[str, bool]) -> str:
    return "\n\n".join(f"{'✓' if done[key] else '○'} {text}" for key, text in STEPS.items())


def panel_state(done: dict[str, bool]) -> tuple:
    """The checklist and the four step buttons' looks: the first step not done yet is the highlighted one."""
    upcoming = next((key for key in STEPS if not done[key]), None)
    return checklist(done), *(gr.update(variant="primary" if key == upcoming else "secondary") for key in STEPS)


def build_onboarding(services) -> tuple[gr.Column, list[gr.components.Component], gr.Button, gr.Button]:
    """The panel (hidden; the UI shows it to admins of an empty store), what `panel_state` updates (checklist and
    step buttons), its Review button (the UI wires it to switch tabs) and its Hide button."""
    auth, store = services.auth, services.store

    def onboarding_load(request: gr.Request) -> tuple[str, str]:
        admin = auth.require(request, *ADMINS)
        try:
            report = import_file(store, STARTER_PROMPTS, "prompts")  # already there: skipped
        except (ValueError, KeyError) as err:
            raise gr.Error(f"Starter prompts not imported: {err}") from err
        store.audit(admin.username, "import", {"kind": "prompts", "starter": True, "added": report.added})
        return (f"Loaded {report.added.get('prompts', 0)} prompts ({report.duplicates} were already there).",
                *panel_state(first_run_steps(store)))

    def onboarding_generate(request: gr.Request, progress=gr.Progress()  # noqa: B008 (Gradio injects it)
                            ) -> tuple[str, str]:
        admin = auth.require(request, *ADMINS)
        active = services.models.active
        prompt_ids = store.prompts_lacking_answers([active], split="train")[:PROMPTS]
        if not prompt_ids:
            raise gr.Error("No training prompts without answers: load the starter prompts first.")
        try:
            made = services.jobs.generate_candidates(prompt_ids, [active], SAMPLES, MAX_NEW_TOKENS, TEMPERATURE,
                                                progress=lambda done, total, _: progress((done, total)),
                                                ab_pair=True, whole_sentences=True)
        except VersionLoadError as err:
            raise gr.Error(str(err)) from err
        store.audit(admin.username, "generate_candidates", {"versions": [active], "prompts": len(prompt_ids),
                                                            "responses": made, "mode": "pairwise", "onboarding": True})
        return (f"{made} answers from `{active}`: {len(prompt_ids)} blind A/B items wait in the Review tab.",
                *panel_state(first_run_steps(store)))

    def onboarding_train(request: gr.Request) -> tuple[str, str]:
        admin = auth.require(request, *ADMINS)
        check = data_check(store, "dpo")
        if not check.ok:
            raise gr.Error("Not enough votes for a round yet: " + "; ".join(check.problems))
        if any(r.status in ("queued", "running") for r in store.list_runs()):
            raise gr.Error("A round is already running: follow it in Admin › Rounds.")
        cfg = services.rounds.config(["dpo"], "lora", 0, "active", ROUND_STEPS, None, 8, 0.1, evaluate=False,
                                     auto_promote=False, username=admin.username)
        run_id = services.rounds.start(cfg)
        store.audit(admin.username, "start_round", {"run_id": run_id, "stages": ["dpo"], "onboarding": True})
        return (f"Round {run_id} started: follow it in Admin › Rounds; its version then joins the Arena's battles.",
                *panel_state(first_run_steps(store)))

    with gr.Column(visible=False, elem_id="tl-onboarding") as panel:
        with gr.Row(equal_height=True):
            gr.Markdown("### First run: one loop in four clicks")
            close = gr.Button("Hide", size="sm", scale=0, min_width=80, elem_id="ob-close")
        steps = gr.Markdown(checklist({key: False for key in STEPS}))
        with gr.Row():
            load = gr.Button("1. Load starter prompts", variant="primary", elem_id="ob-load")
            generate = gr.Button("2. Generate candidates", elem_id="ob-generate")
            review = gr.Button("3. Review", elem_id="ob-review")
            train = gr.Button("4. Train a round", elem_id="ob-train")
        result = gr.Markdown(elem_id="ob-result")
    shown = [steps, load, generate, review, train]
    load.click(onboarding_load, None, [result, *shown], api_name=auth.endpoint("onboarding_load", *ADMINS))
    generate.click(onboarding_generate, None, [result, *shown],
                   api_name=auth.endpoint("onboarding_generate", *ADMINS))
    train.click(onboarding_train, None, [result, *shown], api_name=auth.endpoint("onboarding_train", *ADMINS))
    return panel, shown, review, close
