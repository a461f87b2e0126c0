"""Admin › Browse: page, search and filter prompts (split, source, version, reviewer, date, disagreement, excluded),
open one prompt with all its answers and votes, move it between train and held-out, exclude it from training or
restore it (soft, audited, reversible). Every text is shown through safe_markdown."""

import math
import re

import gradio as gr
import pandas as pd

from feedback_db.browse import PAGE_SIZE, BrowseFilter
from feedback_db.vocab import SPLITS
from webapp import limits
from webapp.auth import ADMINS
from webapp.tabs.common import plain_text, safe_markdown
from webapp.tabs.review import conversation_markdown

COLUMNS = ["id", "split", "source", "prompt", "answers", "judgments", "excluded", "created"]
ANY = "any"
DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
MAX_SEARCH_CHARS = 200
MAX_REASON_CHARS = 500


def build_browse_tab(services, tab: gr.Tab) -> None:
    auth, store = services.auth, services.store

    def browse_search(search: str, split: str, source: str, version: str, reviewer: str, since: str,
                      disagreement: bool, excluded: str, page: float, request: gr.Request) -> tuple[pd.DataFrame, str]:
        auth.require(request, *ADMINS)
        limits.check_text("Search", search, MAX_SEARCH_CHARS)
        for label, value in (("Source", source), ("Version", version), ("Reviewer", reviewer)):
            limits.check_text(label, value, limits.MAX_USERNAME_CHARS)
        if since and not DATE.fullmatch(since.strip()):
            raise gr.Error(f"Since: use YYYY-MM-DD; got {since!r}.")
        f = BrowseFilter(search=search or "", split=None if split == ANY else split, source=source.strip() or None,
                         version=version.strip() or None, reviewer=reviewer.strip() or None,
                         since=since.strip() or None, disagreement=bool(disagreement),
                         excluded={ANY: None, "excluded": True, "included": False}.get(excluded))
        try:
            rows, total = store.browse_prompts(f, page=max(int(page or 1), 1))
        except ValueError as err:
            raise gr.Error(str(err)) from err
        table = pd.DataFrame([[r.id, r.split, r.source, r.text[:120], r.responses, r.judgments,
                               "yes" if r.excluded else "", r.created[:16]] for r in rows], columns=COLUMNS)
        pages = max(math.ceil(total / PAGE_SIZE), 1)
        matches = "1 prompt matches" if total == 1 else f"{total} prompts match"
        return table, f"{matches} · page {max(int(page or 1), 1)} of {pages}"

    def detail(prompt_id: int) -> str:
        prompt = store.get_prompt(prompt_id)
        if prompt is None:
            raise gr.Error(f"There is no prompt {prompt_id}.")
        fb = store.prompt_feedback(prompt_id)
        lines = [f"**Prompt {prompt.id}** · {prompt.split} · source `{prompt.source}` · {prompt.created[:16]}",
                 conversation_markdown(prompt)]
        for r in fb["responses"]:
            votes = [f"{x.username}: " + ", ".join(part for part in (
                f"thumbs {'up' if x.thumbs else 'down'}" if x.thumbs is not None else "",
                f"likert {x.likert}" if x.likert else "", plain_text(x.comment)) if part)
                for x in fb["ratings"] if x.response_id == r.id]
            lines.append(f"#### Answer {r.id} · `{r.model_version}`\n\n{safe_markdown(r.text)}\n\n"
                         + ("Ratings: " + "; ".join(votes) if votes else "No ratings."))
        for c in fb["comparisons"]:
            lines.append(f"- A/B {c.source}: {c.username} chose **{c.winner}** ({c.response_a} `{c.version_a}` vs "
                         f"{c.response_b} `{c.version_b}`)")
        lines += [f"- ranking by {k.username}: {k.response_ids}" for k in fb["rankings"]]
        lines += [f"- correction of {c.response_id} by {c.username}: {plain_text(c.text)}"
                  for c in fb["corrections"]]
        lines += [f"- {'excluded' if e['lifted'] is None else 'was excluded'} by {e['username']}: "
                  f"{plain_text(e['reason'])}" for e in fb["exclusions"]]
        return "\n\n".join(lines)

    def browse_open(prompt_id: float | None, request: gr.Request) -> str:
        auth.require(request, *ADMINS)
        if not prompt_id:
            raise gr.Error("Type a prompt id from the table.")
        return detail(int(prompt_id))

    def browse_move(prompt_id: float | None, split: str, request: gr.Request) -> str:
        admin = auth.require(request, *ADMINS)
        try:
            store.move_prompt(int(prompt_id or 0), split, admin.username)
        except ValueError as err:
            raise gr.Error(f"Not moved: {err}") from err
        store.audit(admin.username, "move_prompt", {"prompt_id": int(prompt_id), "split": split})
        return detail(int(prompt_id))

    def browse_move_train(prompt_id: float | None, request: gr.Request) -> str:
        return browse_move(prompt_id, "train", request)

    def browse_move_heldout(prompt_id: float | None, request: gr.Request) -> str:
        return browse_move(prompt_id, "heldout", request)

    def browse_exclude(prompt_id: float | None, reason: str, request: gr.Request) -> str:
        admin = auth.require(request, *ADMINS)
        limits.check_text("Reason", reason, MAX_REASON_CHARS)
        try:
            store.exclude_prompt(int(prompt_id or 0), admin.username, reason or "")
        except ValueError as err:
            raise gr.Error(f"Not excluded: {err}") from err
        store.audit(admin.username, "exclude_prompt", {"prompt_id": int(prompt_id), "reason": reason})
        return detail(int(prompt_id))

    def browse_restore(prompt_id: float | None, request: gr.Request) -> str:
        admin = auth.require(request, *ADMINS)
        try:
            store.restore_prompt(int(prompt_id or 0), admin.username)
        except ValueError as err:
            raise gr.Error(f"Not restored: {err}") from err
        store.audit(admin.username, "restore_prompt", {"prompt_id": int(prompt_id)})
        return detail(int(prompt_id))

    with gr.Row():
        search = gr.Textbox(label="Search prompt text", scale=3, elem_id="browse-search")
        split = gr.Dropdown([ANY, *SPLITS], value=ANY, label="Split", scale=1)
        source = gr.Textbox(label="Source (e.g. chat, arena)", scale=1)
        version = gr.Textbox(label="Answered by version", scale=1)
        reviewer = gr.Textbox(label="Judged by", scale=1)
    with gr.Row():
        since = gr.Textbox(label="Since (YYYY-MM-DD)", scale=1)
        disagreement = gr.Checkbox(label="Reviewers disagree", scale=1)
        excluded = gr.Radio([ANY, "excluded", "included"], value=ANY, label="Training", scale=2)
        page = gr.Number(1, label="Page", precision=0, minimum=1, scale=1)
        go = gr.Button("Search", variant="primary", scale=1, elem_id="browse-go")
    summary = gr.Markdown()
    table = gr.Dataframe(pd.DataFrame(columns=COLUMNS), interactive=False, wrap=True, elem_id="browse-table",
                         column_widths=["6%", "8%", "16%", "38%", "8%", "9%", "8%", "14%"])
    with gr.Row(equal_height=True):
        prompt_id = gr.Number(label="Prompt id", precision=0, scale=1, elem_id="browse-id")
        open_btn = gr.Button("Open", scale=1)
        to_train = gr.Button("Move to train", scale=1)
        to_heldout = gr.Button("Move to held-out", scale=1)
    with gr.Row(equal_height=True):
        reason = gr.Textbox(label="Why exclude (kept in the audit log)", scale=4)
        exclude = gr.Button("Exclude from training", variant="stop", scale=1)
        restore = gr.Button("Restore", scale=1)
    shown = gr.Markdown(elem_id="browse-detail")

    filters = [search, split, source, version, reviewer, since, disagreement, excluded, page]
    gr.on([go.click, search.submit, tab.select], browse_search, filters, [table, summary],
          api_name=auth.endpoint("browse_search", *ADMINS))
    open_btn.click(browse_open, prompt_id, shown, api_name=auth.endpoint("browse_open", *ADMINS))
    to_train.click(browse_move_train, prompt_id, shown, api_name=auth.endpoint("browse_move_train", *ADMINS))
    to_heldout.click(browse_move_heldout, prompt_id, shown, api_name=auth.endpoint("browse_move_heldout", *ADMINS))
    exclude.click(browse_exclude, [prompt_id, reason], shown, api_name=auth.endpoint("browse_exclude", *ADMINS))
    restore.click(browse_restore, prompt_id, shown, api_name=auth.endpoint("browse_restore", *ADMINS))
