"""Demo chat (everyone): streaming answers from the active or a picked version, side-by-side, thumbs as feedback.

The server keeps each chat's conversation in a gr.State and each finished answer under an id
(webapp/chat_answers.py); thumbs name that id. Per-user in-flight and rate limits and the model-input budget are in
webapp/usage_limits.py.
"""

from collections.abc import Iterator

import gradio as gr

from webapp import limits
from webapp.auth import EVERYONE
from webapp.chat_answers import chat_input, record_thumbs
from webapp.serving.errors import VersionLoadError
from webapp.usage_limits import cap_history

ACTIVE = "active"
# Chats one Gradio event runs at once (its default is the app's 4). A streaming chat holds its slot until the last
# token, so 4 users' answers made a 5th user's chat wait in Gradio's queue for one of them to finish (23 s under
# the flood benchmark). The engine batches 16 rows; who may run how many is the per-user in-flight limit's job.
CHAT_CONCURRENCY = 16


def display(messages: list[dict]) -> list[dict]:
    """The server's conversation as Chatbot messages (without the answer ids it keeps next to them)."""
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def build_chat_tab(services) -> None:
    auth = services.auth

    def version_choices() -> list[tuple[str, str]]:
        # no version name in this label: it was built once and went stale after a promotion; the answer's label
        # and the banner say which version is serving
        return [("Active version (follows promotions)", ACTIVE),
                *((name, name) for name in services.servable_versions())]

    def resolve(version: str) -> str:
        name = services.models.active if version == ACTIVE else version
        try:
            services.ensure_loaded(name)
        except VersionLoadError as err:
            raise gr.Error(str(err)) from err
        return name

    def answer(lane: str, message: str, version: str, max_new_tokens: int, temperature: float, served: dict,
               request: gr.Request) -> Iterator[tuple[list[dict], dict]]:
        """Stream one answer. The conversation comes from `served` (a gr.State: kept by the server), never from
        the Chatbot value the client sends; the finished answer is kept under an id for thumbs."""
        user = auth.require(request, *EVERYONE)
        limits.check_text("Message", message, limits.MAX_CHAT_CHARS)
        if not message.strip():
            raise gr.Error("Type a message first.")
        # the per-user limits first: a refused request (a flood) costs no tokenizing and no version lookup
        with services.usage.slot(user.username, lane):
            name = resolve(version)
            conversation = cap_history([*(served or {}).get("messages", []), {"role": "user", "content": message}])
            model_input, notice = chat_input(services.models.tokenizer,
                                             [{"role": m["role"], "content": m["content"]} for m in conversation])
            if notice:
                gr.Warning(notice)
            settings = {"max_new_tokens": int(max_new_tokens), "temperature": float(temperature)}
            text = ""
            for text in services.models.stream(model_input, version=name, **settings):
                messages = [*conversation, {"role": "assistant", "content": text}]
                yield display(messages), {"messages": messages}
        answer_id = services.answers.keep(user.username, model_input, text, name, settings)
        messages = [*conversation, {"role": "assistant", "content": text, "answer_id": answer_id, "version": name}]
        yield display(messages), {"messages": messages}

    def chat(message: str, history: list[dict], version: str, max_new_tokens: int, temperature: float,
             served: dict, request: gr.Request) -> Iterator[tuple[str, list[dict], dict]]:
        # `history` (the Chatbot's value) is display only: what the client sends there is never used
        for shown, now_served in answer("chat", message, version, max_new_tokens, temperature, served, request):
            yield "", shown, now_served

    def chat_compare(message: str, history: list[dict], version: str, max_new_tokens: int, temperature: float,
                     served: dict, side_by_side: bool, request: gr.Request) -> Iterator[tuple[list[dict], dict]]:
        if side_by_side:
            yield from answer("chat_compare", message, version, max_new_tokens, temperature, served, request)
        else:
            auth.require(request, *EVERYONE)
            yield display((served or {}).get("messages", [])), served

    def like(served: dict, data: gr.LikeData, request: gr.Request) -> None:
        user = auth.require(request, *EVERYONE)
        index = data.index if isinstance(data.index, int) else data.index[0]
        messages = (served or {}).get("messages", [])
        answer_id = messages[index].get("answer_id") if isinstance(index, int) and 0 <= index < len(messages) else None
        kept = services.answers.get(user.username, answer_id) if answer_id else None
        if kept is None:
            raise gr.Error("Only a finished answer this chat gave you can be rated.")
        record_thumbs(services.store, kept, bool(data.liked), user.username, user.role)
        gr.Info("Thanks, feedback saved.")

    with gr.Row():
        version_a = gr.Dropdown(version_choices(), value=ACTIVE, label="Version", scale=3,
                                allow_custom_value=True)
        side_by_side = gr.Checkbox(label="Side-by-side: same prompt to two versions", scale=2)
        version_b = gr.Dropdown(version_choices(), value="base", label="Compare with", visible=False,
                                scale=3, allow_custom_value=True)
        refresh = gr.Button("↻ Versions", size="sm", scale=1)
    with gr.Row():
        chat_a = gr.Chatbot(label="Answer", height=440, sanitize_html=True, buttons=["copy"])
        chat_b = gr.Chatbot(label="Compared version", height=440, sanitize_html=True, buttons=["copy"], visible=False)
    served_a, served_b = gr.State({}), gr.State({})
    with gr.Row():
        message = gr.Textbox(placeholder="Ask something… (Enter to send)", show_label=False, scale=8, autofocus=True)
        send = gr.Button("Send", variant="primary", scale=1)
        clear = gr.Button("Clear", scale=1)
    with gr.Accordion("Generation settings", open=False):
        max_new_tokens = gr.Slider(16, 1024, value=256, step=16, label="Max new tokens")
        temperature = gr.Slider(0.0, 1.5, value=0.0, step=0.05, label="Temperature (0 = greedy)")
    gr.Markdown("👍/👎 on an answer stores it as feedback for the next training round.")

    # Both sides read the message box when the user sends; the main side clears it with its first update.
    gr.on([message.submit, send.click], chat, [message, chat_a, version_a, max_new_tokens, temperature, served_a],
          [message, chat_a, served_a], api_name=services.usage.limited(auth.endpoint("chat", *EVERYONE), "chat"),
          concurrency_limit=CHAT_CONCURRENCY)
    gr.on([message.submit, send.click], chat_compare,
          [message, chat_b, version_b, max_new_tokens, temperature, served_b, side_by_side], [chat_b, served_b],
          api_name=services.usage.limited(auth.endpoint("chat_compare", *EVERYONE), "chat_compare"),
          concurrency_limit=CHAT_CONCURRENCY)
    chat_a.like(like, served_a, None, api_name=auth.endpoint("chat_thumbs", *EVERYONE))
    chat_b.like(like, served_b, None, api_name=auth.endpoint("chat_compare_thumbs", *EVERYONE))
    clear.click(lambda: ([], [], {}, {}), None, [chat_a, chat_b, served_a, served_b], api_visibility="private")
    side_by_side.change(lambda on: (gr.update(visible=on), gr.update(visible=on)), side_by_side,
                        [version_b, chat_b], api_visibility="private")
    refresh.click(lambda: (gr.update(choices=version_choices()),) * 2, None, [version_a, version_b],
                  api_visibility="private")
