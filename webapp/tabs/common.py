"""Small helpers shared by the tabs: user- and model-written text rendered safely."""

import html
import re

from markdown_it import MarkdownIt

SAFE_SCHEMES = ("http://", "https://", "mailto:")
# Markdown's ASCII punctuation, backslash-escaped by plain_text; & < > are left to html.escape (a backslash before
# the `&` of `&lt;` would show the entity itself)
_MARKDOWN_PUNCTUATION = re.compile(r"([\\`*_{}\[\]()#+\-.!|~=:\"'])")


def _safe_link(url: str) -> bool:
    return url.strip().lower().startswith(SAFE_SCHEMES)


# markdown-it-py (CommonMark, already installed with gradio): raw HTML off, so every `<` in the text is escaped,
# whatever backticks or backslashes surround it; images off (no remote requests from a reviewer's browser: a
# `![x](url)` stays text); links only to http(s)/mailto (reference links and autolinks go through the same check).
_MD = MarkdownIt("commonmark", {"html": False, "linkify": False}).disable("image")
_MD.validateLink = _safe_link
_render_fence = _MD.renderer.rules["fence"]


def _fence_without_language(self, tokens, idx, options, env) -> str:
    # a fence's info string (```<anything>) would become <code class="language-<anything>">: user-chosen class
    # names could borrow the page's own styles, so the code block is rendered without one
    tokens[idx].info = ""
    return _render_fence(tokens, idx, options, env)


_MD.add_render_rule("fence", _fence_without_language)


def safe_markdown(text: str) -> str:
    """Prompts and answers (written by users, importers or the model) as HTML with no raw HTML, style or script.

    The result goes into gr.Markdown, which passes HTML blocks through untouched (markdown-it's output has no
    blank lines inside a block) and sanitizes once more in the browser. Links get rel="nofollow noopener
    noreferrer" so a reviewer's click does not tell the target where it came from."""
    return _MD.render(text).replace("<a href=", '<a rel="nofollow noopener noreferrer" href=')


def plain_text(text: str) -> str:
    """A short user-written text (an exclusion reason, a comment) shown as itself on one line inside Markdown: no
    HTML, no Markdown, whitespace collapsed, so it can sit in a list item or after a label."""
    return html.escape(_MARKDOWN_PUNCTUATION.sub(r"\\\1", " ".join(text.split())), quote=False)
