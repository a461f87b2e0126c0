"""Review (reviewers): a per-reviewer queue of on-policy candidates — rate one, blind A/B, rank N, correct, skip.
The whole conversation is shown: the system prompt labelled as such, earlier turns collapsed.

The store serves the next item for the reviewer and shuffles the responses, so A/B stays blind and randomised;
the model versions behind A and B are recorded with the vote (from the responses), never shown here.
Shortcuts (webapp/ui.py): a/b/t/x vote, 1–5 Likert, u/d thumbs, Enter submit, s skip.
"""

from collections.abc import Callable

import gradio as gr

from feedback_db.agreement import reviewer_agreement
from feedback_db.models import Prompt
from webapp import limits
from webapp.auth import REVIEWERS
from webapp.tabs.common import safe_markdown

MODES = ("single", "pairwise", "ranking")  # the order of their boxes in `shown`
AGREEMENT_EVERY = 20  # judgments between two recomputations of a reviewer's agreement while they judge
MAX_CRITERIA = 5  # criteria slots on the form (admins add them in Admin › Guidelines & criteria)
KEYS = "Keys (outside text boxes): `a` `b` `t` `x` vote · `1`–`5` Likert · `u`/`d` thumbs · `Enter` submit · `s` skip"
GUIDELINES = """
* Judge **helpfulness first**, then correctness, then tone. A short correct answer beats a long wrong one.
* **A/B**: pick the better answer; **Tie** when they are equally good, **Both bad** when neither is acceptable.
* **Ranking**: type the answers' numbers best first, e.g. `2,1,3`.
* Anything could be improved? Open *Write a better answer*: your text becomes a training demonstration.
* Unsure or out of your depth? **Skip** — it will not come back to you.
"""


def conversation_markdown(prompt: Prompt) -> str:
    """The prompt as the reviewer sees it: the system prompt labelled as such, earlier turns collapsed, then the last
    user turn. Every piece of text goes through safe_markdown; only the <details> wrapper is ours."""
    messages = prompt.as_messages()
    system = [m["content"] for m in messages if m["role"] == "system"]
    turns = [m for m in messages[:-1] if m["role"] != "system"]
    parts = []
    if system:
        quoted = "\n".join(f"> {line}" for line in safe_markdown("\n".join(system)).splitlines())
        parts.append(f"**System prompt** (instructions the assistant was given, not written by the user):\n\n{quoted}")
    if turns:
        earlier = "\n\n".join(f"**{m['role'].capitalize()}:** {safe_markdown(m['content'])}" for m in turns)
        parts.append(f"<details><summary>Earlier turns ({len(turns)})</summary>\n\n{earlier}\n\n</details>")
    return "\n\n".join([*parts, f"### Prompt\n\n{safe_markdown(messages[-1]['content'])}"])


def build_review_tab(services) -> gr.Markdown:
    """The tab; returns the reviewer's counts (`#rv-mine`), which change after every judgment."""
    auth, store = services.auth, services.store

    def show(username: str, mode: str, on_page: dict | None = None) -> tuple:
        """Fetch the reviewer's next item in `mode` and lay it out, with the reviewer's own counts and agreement,
        for the `shown` outputs. `on_page`: the item the page shows."""
        return *layout(username, mode, on_page), mine(username)

    def show_next(username: str, mode: str) -> tuple:
        """After a judgment in `mode` (its box is on the page): `show` cut to what changes, for the
        `judged_shown[mode]` outputs. Each output costs the Gradio event its processing, so the other modes' answers
        and boxes are not sent, and this mode's box is left as it is (gr.skip) unless the queue ran out (then it
        hides and the message shows)."""
        item, progress, prompt, *boxes, single, a, b, ranked, which = layout(username, mode, None)
        box = boxes[MODES.index(mode)] if item is None else gr.skip()
        answers = {"single": (single,), "pairwise": (a, b), "ranking": (ranked,)}[mode]
        return item, progress, prompt, box, *answers, which, mine(username, fresh=False)

    def layout(username: str, mode: str, on_page: dict | None) -> tuple:
        item = store.next_item(username, mode, services.annotators_per_item)
        done, remaining = store.queue_progress(username, mode, services.annotators_per_item)
        progress = f"**{done}** done · **{remaining}** remaining in *{mode}*"
        if item is None:
            hidden = (gr.update(visible=False),) * 3
            return (None, progress, "🎉 Nothing left in this queue. Try another mode or ask an admin for more "
                    "candidates.", *hidden, "", "", "", "", gr.update(choices=[], value=None))
        responses = item.responses
        if on_page and on_page["mode"] == mode and sorted(on_page["response_ids"]) == sorted(item.response_ids):
            # the item on the page served again (Next item before judging it): keep its A/B order, so the page
            # does not swap the answers under the reviewer, and a vote clicked meanwhile means what it showed
            responses = sorted(responses, key=lambda r: on_page["response_ids"].index(r.id))
        ids = [r.id for r in responses]
        texts = [safe_markdown(r.text) for r in responses]
        labels = ["A", "B"] if mode == "pairwise" else [str(i + 1) for i in range(len(texts))]
        state = {"mode": mode, "prompt_id": item.prompt.id, "response_ids": ids}
        ranked = "\n\n---\n\n".join(f"#### {label}\n\n{text}" for label, text in zip(labels, texts, strict=True))
        return (state, progress, conversation_markdown(item.prompt),
                gr.update(visible=mode == "single"), gr.update(visible=mode == "pairwise"),
                gr.update(visible=mode == "ranking"), texts[0], texts[0], texts[-1], ranked,
                gr.update(choices=list(zip(labels, ids, strict=True)), value=ids[0]))

    def judged(item: dict, table: str, username: str, write: Callable[[], int]) -> None:
        """Store a judgment and the criteria answers that came with it (item["criteria"]) in one transaction."""
        try:
            with store.transaction():
                store.add_criterion_answers(table, write(), username, item.get("criteria", {}))
        except (ValueError, KeyError) as err:
            raise gr.Error(f"Not saved: {err}") from err

    def current(item: dict | None, mode: str) -> dict:
        if not item or item["mode"] != mode:
            raise gr.Error(f"No {mode} item loaded: press Next item.")
        return item

    def review_next(mode: str, request: gr.Request, on_page: dict | None = None) -> tuple:
        """The next item; the item on the page (`on_page`, a State, not in the API) keeps its order if served again."""
        user = auth.require(request, *REVIEWERS)
        return show(user.username, mode, on_page)

    def review_rate(item: dict | None, thumbs: str | None, likert: str | None, comment: str,
                    request: gr.Request) -> tuple:
        user = auth.require(request, *REVIEWERS)
        limits.check_text("Comment", comment, limits.MAX_REVIEW_TEXT_CHARS)
        item = current(item, "single")
        if thumbs is None and likert is None and not comment.strip():
            raise gr.Error("Give a thumbs, a 1–5 score or a comment (or skip).")
        judged(item, "ratings", user.username, lambda: store.add_rating(
            item["response_ids"][0], user.username, thumbs=None if thumbs is None else int(thumbs == "up"),
            likert=int(likert) if likert else None, comment=comment.strip()))
        return show_next(user.username, "single")

    def vote(winner: str):
        def review_compare(item: dict | None, request: gr.Request) -> tuple:
            user = auth.require(request, *REVIEWERS)
            a, b = current(item, "pairwise")["response_ids"]
            judged(item, "comparisons", user.username, lambda: store.add_comparison(a, b, winner, user.username))
            return show_next(user.username, "pairwise")
        return review_compare

    def review_rank(item: dict | None, order: str, request: gr.Request) -> tuple:
        user = auth.require(request, *REVIEWERS)
        ids = current(item, "ranking")["response_ids"]
        try:
            picks = [int(x) for x in order.replace(" ", ",").split(",") if x]
        except ValueError as err:
            raise gr.Error(f"Ranking {order!r}: use the answers' numbers, best first, e.g. 2,1,3.") from err
        if sorted(picks) != list(range(1, len(ids) + 1)):
            raise gr.Error(f"Ranking {order!r}: give each of 1..{len(ids)} exactly once, best first.")
        judged(item, "rankings", user.username, lambda: store.add_ranking([ids[p - 1] for p in picks], user.username))
        return show_next(user.username, "ranking")

    def review_correct(item: dict | None, response_id: int | None, text: str, request: gr.Request) -> tuple[str, str]:
        user = auth.require(request, *REVIEWERS)
        limits.check_text("Correction", text, limits.MAX_REVIEW_TEXT_CHARS)
        if not item or response_id not in item["response_ids"]:
            raise gr.Error("Pick which answer you are improving.")
        if not text.strip():
            raise gr.Error("Write the better answer first.")
        store.add_correction(int(response_id), text.strip(), user.username)
        gr.Info("Correction saved: it will be used as a demonstration.")
        return "", mine(user.username)

    agreement_at: dict[str, tuple[int, dict]] = {}  # reviewer -> (their judgments then, their agreement figures)

    def mine(username: str, fresh: bool = True) -> str:
        """The reviewer's own counts and agreement with the majority; read from their judgments and the items they
        judged only. Counts are index counts, fresh every time; agreement reads every vote on the reviewer's items
        (its cost grows with their history and their co-reviewers), so after a judgment (`fresh` False) it is
        recomputed only every AGREEMENT_EVERY judgments, and always on Next item, the form and a correction."""
        counts = store.reviewer_counts(username)
        total = sum(counts.values())
        at, shares = agreement_at.get(username, (None, {}))
        if fresh or at is None or not 0 <= total - at < AGREEMENT_EVERY:
            shares = reviewer_agreement(store, username)
            agreement_at[username] = (total, shares)
        agree = ", ".join(f"{kind} {share:.0%}" for kind, share in shares.items() if share is not None)
        return (f"**Your judgments:** {counts['rating']} ratings · {counts['comparison']} A/B votes · "
                f"{counts['ranking']} rankings · {counts['correction']} corrections"
                + (f" · agreement with the majority: {agree}" if agree else ""))

    def review_form(mode: str, request: gr.Request) -> tuple:
        """The queue's guidelines, the reviewer's own counts and agreement, and the form's criteria."""
        user = auth.require(request, *REVIEWERS)
        criteria = store.list_criteria()[:MAX_CRITERIA]
        slots = [gr.update(visible=False, value=None)] * MAX_CRITERIA
        for i, c in enumerate(criteria):
            choices = [(str(n), n) for n in range(1, 6)] if c.kind == "scale" else [("yes", 1), ("no", 0)]
            label = c.name + (" (yes keeps this prompt out of training)" if c.excludes else "")
            # on an A/B item a criterion is answered once, stored with the vote (the comparison), not per answer
            scope = "about this pair, stored with your vote" if mode == "pairwise" else ""
            info = " · ".join(part for part in (c.description, scope) if part) or None
            slots[i] = gr.update(visible=True, label=label, info=info, choices=choices, value=None)
        text = store.guidelines(mode)
        guidelines = safe_markdown(text) if text is not None else GUIDELINES
        return f"{guidelines}\n\n{KEYS}", mine(user.username), [c.id for c in criteria], *slots

    def pick(slot: int):
        def review_criterion(item: dict | None, form: list[int], value: int | None, request: gr.Request) -> dict:
            auth.require(request, *REVIEWERS)
            if not item or slot >= len(form):
                return item
            answers = {k: v for k, v in item.get("criteria", {}).items() if k != form[slot]}
            return {**item, "criteria": answers if value is None else {**answers, form[slot]: int(value)}}
        return review_criterion

    def review_undo(mode: str, request: gr.Request) -> tuple:
        user = auth.require(request, *REVIEWERS)
        try:
            table, judgment_id = store.undo_last_judgment(user.username)
        except ValueError as err:
            raise gr.Error(f"Nothing undone: {err}") from err
        store.audit(user.username, "undo_judgment", {"table": table, "id": judgment_id})
        gr.Info(f"Your last judgment ({table[:-1]} {judgment_id}) was removed; its item is back in the queue.")
        return show(user.username, mode)

    def review_skip(item: dict | None, mode: str, request: gr.Request) -> tuple:
        user = auth.require(request, *REVIEWERS)
        if item:
            store.skip_item(user.username, item["mode"], item["response_ids"])
        return show(user.username, mode)

    with gr.Column(elem_id="tl-review"):
        with gr.Row(equal_height=True):
            mode = gr.Radio([("Single answer", "single"), ("Blind A/B", "pairwise"), ("Ranking", "ranking")],
                            value="pairwise", label="Queue", scale=3)
            progress = gr.Markdown(scale=2)
            next_btn = gr.Button("Next item", variant="primary", scale=1)
        with gr.Accordion("Guidelines & shortcuts", open=False):
            guidelines_md = gr.Markdown(f"{GUIDELINES}\n\n{KEYS}", elem_id="rv-guidelines")
        mine_md = gr.Markdown(elem_id="rv-mine")
        item, form = gr.State(None), gr.State([])
        prompt_md = gr.Markdown("Press **Next item** to start.", elem_id="rv-prompt")
        with gr.Row():  # the admin's criteria, above the answers: they go with the vote, so answer them first
            slots = [gr.Radio([], visible=False, elem_id=f"rv-criterion-{i}") for i in range(MAX_CRITERIA)]
        with gr.Group(visible=False) as single_box:
            single_md = gr.Markdown(elem_classes="tl-response")
            with gr.Row():
                thumbs = gr.Radio([("👍 Good (u)", "up"), ("👎 Bad (d)", "down")], label="Thumbs", elem_id="rv-thumbs")
                likert = gr.Radio(["1", "2", "3", "4", "5"], label="Quality 1–5 (keys 1–5)", elem_id="rv-likert")
            comment = gr.Textbox(label="Comment (optional)", lines=2)
            submit = gr.Button("Submit (Enter)", variant="primary", elem_id="rv-submit")
        with gr.Group(visible=False) as pair_box:
            with gr.Row():  # not equal_height: that centred the shorter answer vertically, a gap above it
                with gr.Column():
                    gr.Markdown("**Answer A**")
                    a_md = gr.Markdown(elem_classes="tl-response", elem_id="rv-answer-a")
                with gr.Column():
                    gr.Markdown("**Answer B**")
                    b_md = gr.Markdown(elem_classes="tl-response", elem_id="rv-answer-b")
            with gr.Row():
                a_btn = gr.Button("A is better (a)", elem_id="rv-a", variant="primary")
                b_btn = gr.Button("B is better (b)", elem_id="rv-b", variant="primary")
                tie_btn = gr.Button("Tie (t)", elem_id="rv-tie")
                bad_btn = gr.Button("Both bad (x)", elem_id="rv-bad", variant="stop")
        with gr.Group(visible=False) as rank_box:
            rank_md = gr.Markdown(elem_classes="tl-response")
            with gr.Row():
                order = gr.Textbox(label="Order, best first (e.g. 2,1,3)", scale=4)
                rank_btn = gr.Button("Submit ranking", variant="primary", scale=1)
        with gr.Accordion("✍️ Write a better answer", open=False):
            which = gr.Dropdown(label="Improve answer", choices=[])
            correction = gr.Textbox(label="Better answer (Markdown)", lines=6)
            correct_btn = gr.Button("Save correction")
        with gr.Row():
            skip = gr.Button("Skip (s)", elem_id="rv-skip", size="sm")
            undo = gr.Button("Undo my last judgment", elem_id="rv-undo", size="sm")

    shown = [item, progress, prompt_md, single_box, pair_box, rank_box, single_md, a_md, b_md, rank_md, which, mine_md]
    judged_shown = {mode: [item, progress, prompt_md, box, *answers, which, mine_md] for mode, box, answers in (
        ("single", single_box, [single_md]), ("pairwise", pair_box, [a_md, b_md]), ("ranking", rank_box, [rank_md]))}
    # clearing the form is the browser's own work (no request): text boxes emptied, radios unset
    clear = dict(fn=None, inputs=None, outputs=[thumbs, likert, comment, order], js="() => [null, null, '', '']")
    # the judgments (the click a reviewer repeats all day) skip Gradio's queue: one POST answered with the outputs,
    # instead of joining the queue and reading its event stream (issue 14: a click's cost, not a wait, at 32
    # reviewers); every handler still derives the user from the request's session and checks the role
    fast = dict(queue=False, show_progress="hidden")
    gr.on([next_btn.click, mode.change], review_next, [mode, item], shown,
          api_name=auth.endpoint("review_next", *REVIEWERS)).then(**clear)
    gr.on([next_btn.click, mode.change], review_form, mode, [guidelines_md, mine_md, form, *slots],
          api_name=auth.endpoint("review_form", *REVIEWERS))
    for i, slot in enumerate(slots):
        slot.input(pick(i), [item, form, slot], item, api_name=auth.endpoint(f"review_criterion_{i}", *REVIEWERS))
    judgments = [submit.click, rank_btn.click, undo.click, *(b.click for b in (a_btn, b_btn, tie_btn, bad_btn))]
    gr.on(judgments, None, None, slots, js=f"() => Array({MAX_CRITERIA}).fill(null)")
    undo.click(review_undo, mode, shown, api_name=auth.endpoint("review_undo", *REVIEWERS))
    submit.click(review_rate, [item, thumbs, likert, comment], judged_shown["single"],
                 api_name=auth.endpoint("review_rate", *REVIEWERS), **fast).then(**clear)
    for button, winner in ((a_btn, "a"), (b_btn, "b"), (tie_btn, "tie"), (bad_btn, "both_bad")):
        button.click(vote(winner), item, judged_shown["pairwise"],
                     api_name=auth.endpoint(f"review_vote_{winner}", *REVIEWERS), **fast)
    rank_btn.click(review_rank, [item, order], judged_shown["ranking"],
                   api_name=auth.endpoint("review_rank", *REVIEWERS), **fast).then(**clear)
    correct_btn.click(review_correct, [item, which, correction], [correction, mine_md],
                      api_name=auth.endpoint("review_correct", *REVIEWERS))
    skip.click(review_skip, [item, mode], shown, api_name=auth.endpoint("review_skip", *REVIEWERS)).then(**clear)
    return mine_md
