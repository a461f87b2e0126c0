"""Arena (everyone, next to Chat): one prompt, two versions picked at random, answers side by side without names; vote
A / B / tie / both bad, then the names are revealed. The battle lives in the session; see webapp/arena.py."""

import random
from collections.abc import Iterator

import gradio as gr

from feedback_db.vocab import VIEWER
from webapp import arena, limits
from webapp.auth import EVERYONE
from webapp.serving.errors import Request, VersionLoadError
from webapp.tabs.common import safe_markdown

MAX_NEW_TOKENS = 128
TEMPERATURE = 0.7
VOTES = (("A is better", "a"), ("B is better", "b"), ("Tie", "tie"), ("Both bad", "both_bad"))
SAID = {"a": "A is better", "b": "B is better", "tie": "a tie", "both_bad": "both bad"}


def build_arena_tab(services) -> None:
    auth, store = services.auth, services.store
    rng = random.Random()

    def pair_view(messages: list[dict], answers: tuple[str, str]) -> tuple[list[dict], list[dict]]:
        """What the two Chatbots show: every text through safe_markdown (HTML shown as text); the battle keeps
        the raw text."""
        shown = [{"role": m["role"], "content": safe_markdown(m["content"])} for m in messages]
        return tuple([*shown, {"role": "assistant", "content": safe_markdown(text)}] for text in answers)

    def arena_ask(message: str, request: gr.Request) -> Iterator[tuple]:
        user = auth.require(request, *EVERYONE)
        limits.check_text("Message", message, limits.MAX_CHAT_CHARS)
        if not message.strip():
            raise gr.Error("Type a prompt first.")
        try:
            versions = arena.pick_versions(services.servable_versions(), services.models.active,
                                           arena.newest_candidate(store), rng)
            for name in versions:
                services.ensure_loaded(name)
        except (ValueError, VersionLoadError) as err:
            raise gr.Error(str(err)) from err
        messages = [{"role": "user", "content": message}]
        hidden = gr.update(interactive=False)
        yield "", *pair_view(messages, ("", "")), None, "Answering… (both versions in one batch)", hidden, hidden, \
            hidden, hidden
        with services.usage.slot(user.username, "arena"):  # one battle at a time per user (webapp/usage_limits.py)
            # one batch for both answers: the model service's continuous-batching engine decodes them together
            requests = [Request(messages, MAX_NEW_TOKENS, TEMPERATURE, adapter=name) for name in versions]
            answers = [result.text for result in services.models.generate_many(requests)]
        battle = arena.Battle(messages, versions, tuple(answers))
        yield ("", *pair_view(messages, battle.answers), battle, "Which answer is better? The names are shown after "
               "your vote.", *(gr.update(interactive=True),) * len(VOTES))

    def vote(winner: str):
        def arena_vote(battle: arena.Battle | None, request: gr.Request) -> tuple:
            user = auth.require(request, *EVERYONE)
            if battle is None:
                raise gr.Error("Ask a prompt first (or this battle already has your vote).")
            comparison_id = arena.record_vote(store, battle, winner, user.username, viewer=user.role == VIEWER)
            a, b = battle.versions
            reveal = (f"**A** was `{a}` · **B** was `{b}` — you said *{SAID[winner]}* "
                      f"(saved as comparison {comparison_id}). Ask another prompt for a new battle.")
            return None, reveal, *(gr.update(interactive=False),) * len(VOTES)
        return arena_vote

    gr.Markdown("Blind battle: your prompt goes to two versions picked at random; vote for the better answer and "
                "see which versions they were. Votes feed the leaderboard in Stats and the next training round "
                "(viewers' votes only when an admin includes viewers' chat feedback).")
    with gr.Row():
        chat_a = gr.Chatbot(label="Answer A", height=380, sanitize_html=True, elem_id="arena-chat-a")
        chat_b = gr.Chatbot(label="Answer B", height=380, sanitize_html=True, elem_id="arena-chat-b")
    status = gr.Markdown(elem_id="arena-status")
    with gr.Row():
        buttons = [gr.Button(label, interactive=False, elem_id=f"arena-{key}") for label, key in VOTES]
    with gr.Row():
        message = gr.Textbox(placeholder="A prompt for both versions… (Enter to send)", show_label=False, scale=8,
                             elem_id="arena-message")
        send = gr.Button("Battle", variant="primary", scale=1, elem_id="arena-send")
    battle = gr.State(None)

    gr.on([message.submit, send.click], arena_ask, message, [message, chat_a, chat_b, battle, status, *buttons],
          api_name=services.usage.limited(auth.endpoint("arena_ask", *EVERYONE), "arena"))
    for button, (_, key) in zip(buttons, VOTES, strict=True):
        button.click(vote(key), battle, [battle, status, *buttons], api_name=auth.endpoint(f"arena_vote_{key}",
                                                                                             *EVERYONE))
