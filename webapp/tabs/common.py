"""Small helpers shared by the tabs: safe Markdown for model output, Chatbot message text."""

import html
import re

_CODE = re.compile(r"(```.*?(?:```|$)|`[^`\n]*`)", re.DOTALL)


def safe_markdown(text: str) -> str:
    """Model output as Markdown with raw HTML escaped (code spans and fences are left for the renderer to escape).

    Gradio also sanitizes on the client (`sanitize_html=True`); escaping here means a `<script>` or `<img onerror>`
    in an answer is shown as text, never parsed as HTML.
    """
    parts = _CODE.split(text)
    return "".join(part if i % 2 else html.escape(part, quote=False) for i, part in enumerate(parts))


def text_of(content: str | list | dict) -> str:
    """The text of a Chatbot message's content (Gradio 6 hands handlers a list of {"type": "text", ...} blocks)."""
    if isinstance(content, str):
        return content
    if isinstance(content, dict):
        return content.get("text", "")
    return "".join(text_of(block) for block in content)


def plain_messages(history: list[dict]) -> list[dict]:
    """Chatbot history → [{"role", "content": str}] for the model service."""
    return [{"role": m["role"], "content": text_of(m["content"])} for m in history]
