"""Admin › Guidelines & criteria (the review form): guidelines per queue (Markdown, shown to reviewers as text,
never HTML) and the optional criteria reviewers answer with each judgment — a 1–5 scale or a yes/no flag; a flag
can keep what it marks out of training. Answers are exported with the raw tables `criterion_answers` /
`review_criteria`."""

import gradio as gr
import pandas as pd

from webapp import limits
from webapp.auth import ADMINS
from webapp.tabs.review import GUIDELINES

MODES = [("Single answer", "single"), ("Blind A/B", "pairwise"), ("Ranking", "ranking")]
KINDS = [("1–5 scale", "scale"), ("yes/no flag", "flag")]
CRITERIA_COLUMNS = ["name", "kind", "description", "excludes", "answers"]
MAX_GUIDELINES_CHARS = 20_000
MAX_NAME_CHARS = 80
MAX_DESCRIPTION_CHARS = 500


def build_review_form_tab(services, tab: gr.Tab) -> None:
    auth, store = services.auth, services.store

    def criteria_table() -> pd.DataFrame:
        answers = [a.criterion_id for a in store.list_criterion_answers()]
        rows = [[c.name, c.kind, c.description, "yes" if c.excludes else "", answers.count(c.id)]
                for c in store.list_criteria()]
        return pd.DataFrame(rows, columns=CRITERIA_COLUMNS)

    def form_load(mode: str, request: gr.Request) -> tuple[str, pd.DataFrame, dict]:
        auth.require(request, *ADMINS)
        names = [c.name for c in store.list_criteria()]
        return store.guidelines(mode) or "", criteria_table(), gr.update(choices=names, value=None)

    def form_guidelines(mode: str, text: str, request: gr.Request) -> str:
        admin = auth.require(request, *ADMINS)
        limits.check_text("Guidelines", text, MAX_GUIDELINES_CHARS)
        try:
            store.set_guidelines(mode, text, admin.username)
        except ValueError as err:
            raise gr.Error(str(err)) from err
        store.audit(admin.username, "set_guidelines", {"mode": mode, "chars": len(text)})
        return f"Guidelines for the {mode} queue saved; reviewers see them on their next item."

    def form_add_criterion(name: str, description: str, kind: str, excludes: bool,
                           request: gr.Request) -> tuple[pd.DataFrame, dict, str, str]:
        admin = auth.require(request, *ADMINS)
        limits.check_text("Criterion name", name, MAX_NAME_CHARS)
        limits.check_text("Criterion description", description, MAX_DESCRIPTION_CHARS)
        try:
            criterion = store.add_criterion(name, description, kind, bool(excludes))
        except ValueError as err:
            raise gr.Error(f"Criterion not added: {err}") from err
        store.audit(admin.username, "add_criterion", {"name": criterion.name, "kind": kind, "excludes": excludes})
        names = [c.name for c in store.list_criteria()]
        return criteria_table(), gr.update(choices=names, value=None), "", ""

    def form_retire(name: str | None, request: gr.Request) -> tuple[pd.DataFrame, dict]:
        admin = auth.require(request, *ADMINS)
        try:
            store.retire_criterion(name or "")
        except KeyError as err:
            raise gr.Error(f"Pick a criterion on the form: {err}") from err
        store.audit(admin.username, "retire_criterion", {"name": name})
        return criteria_table(), gr.update(choices=[c.name for c in store.list_criteria()], value=None)

    with gr.Row():
        with gr.Column(scale=3):
            mode = gr.Radio(MODES, value="pairwise", label="Queue")
            guidelines = gr.Textbox(label="Guidelines (Markdown; empty = the built-in ones, shown greyed)", lines=8,
                                    placeholder=GUIDELINES.strip(), elem_id="form-guidelines")
            save = gr.Button("Save guidelines", variant="primary")
            saved = gr.Markdown()
        with gr.Column(scale=3):
            criteria = gr.Dataframe(pd.DataFrame(columns=CRITERIA_COLUMNS), label="Criteria on the form",
                                    interactive=False, wrap=True, elem_id="form-criteria",
                                    # widths: without them the last columns were squeezed to one letter per line
                                    column_widths=["22%", "11%", "35%", "17%", "15%"])
            name = gr.Textbox(label="Name (e.g. factually accurate)", elem_id="form-name")
            description = gr.Textbox(label="Description shown to reviewers", elem_id="form-description")
            with gr.Row():
                kind = gr.Radio(KINDS, value="scale", label="Answer")
                excludes = gr.Checkbox(label="A yes keeps the prompt out of training (flags only)")
            add = gr.Button("Add criterion", variant="primary")
            with gr.Row():
                retire_pick = gr.Dropdown([], label="Criterion", allow_custom_value=True, scale=3)
                retire = gr.Button("Remove from the form", scale=1)

    gr.on([tab.select, mode.change], form_load, mode, [guidelines, criteria, retire_pick],
          api_name=auth.endpoint("form_load", *ADMINS))
    save.click(form_guidelines, [mode, guidelines], saved, api_name=auth.endpoint("form_guidelines", *ADMINS))
    add.click(form_add_criterion, [name, description, kind, excludes], [criteria, retire_pick, name, description],
              api_name=auth.endpoint("form_add_criterion", *ADMINS))
    retire.click(form_retire, retire_pick, [criteria, retire_pick], api_name=auth.endpoint("form_retire", *ADMINS))
