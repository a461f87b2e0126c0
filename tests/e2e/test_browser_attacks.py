"""Browser attacks from the security review (issue 13) in real Chromium against the real app (`python app.py`):

- same-site CSRF: the logged-in admin visits a page served from another port on 127.0.0.1 that tries to create an
  admin with fetch (credentials included), with an auto-submitted form, and to read the user list back;
- clickjacking: that page frames the app;
- HTML/CSS injection: a reviewer opens the Review tab on prompts and answers carrying overlays, forms, links and
  tracking images;
- logout is a POST from the Log out button;
- chat flood: a viewer with a chat already running sends another from the Chat tab; the HTTP guard refuses it
  before Gradio reads it, and the page says why and stays usable.
"""

import http.server
import re
import sqlite3
import threading
import time
from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import ARTIFACTS
from tests.e2e.live_app import ADMIN, PASSWORD, LiveApp, add_users, free_port, make_data_dir
from tests.e2e.test_browser_loop import TIMEOUT_MS, login
from tests.webapp.test_safe_markdown import PAYLOADS

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ATTACK_PAGE = """<!doctype html><html><body>
<iframe id="framed" src="{app}/" width="400" height="300"></iframe>
<form id="f" method="post" action="{app}/gradio_api/call/users_add" enctype="text/plain" target="sink">
<input name='{{"data": ["formuser", "{password}", "admin"], "x": "' value='"}}'></form>
<iframe name="sink"></iframe>
<script>
window.results = {{}};
fetch("{app}/gradio_api/call/users_add", {{method: "POST", credentials: "include",
  headers: {{"Content-Type": "application/json"}},
  body: JSON.stringify({{data: ["mallory", "{password}", "admin"]}})}})
  .then(r => r.text().then(t => window.results.add = r.status + " " + t))
  .catch(e => window.results.add = "blocked: " + e);
fetch("{app}/gradio_api/call/users_add", {{method: "POST", credentials: "include", mode: "no-cors",
  headers: {{"Content-Type": "text/plain"}}, body: JSON.stringify({{data: ["nocors", "{password}", "admin"]}})}})
  .then(r => window.results.nocors = "sent " + r.type).catch(e => window.results.nocors = "blocked: " + e);
fetch("{app}/gradio_api/call/users_list", {{method: "POST", credentials: "include",
  headers: {{"Content-Type": "application/json"}}, body: "{{\\"data\\": []}}"}})
  .then(r => r.text().then(t => window.results.list = r.status + " " + t))
  .catch(e => window.results.list = "blocked: " + e);
document.getElementById("f").submit();
</script></body></html>"""


@pytest.fixture(scope="module")
def live_app(tmp_path_factory, base_model_path):
    data_dir = make_data_dir(tmp_path_factory.mktemp("browser-attacks"), base_model_path)
    add_users(data_dir)
    from feedback_db.store import FeedbackStore

    store = FeedbackStore(data_dir / "tuneloop.db")
    for payload in PAYLOADS:
        prompt_id = store.add_prompt(f"Prompt \\`{payload}\\`")
        store.add_response(prompt_id, f"Answer \\`{payload}\\` {payload}", "base")
    store.close()
    app = LiveApp.start(data_dir)
    yield app
    app.stop()


@pytest.fixture(scope="module")
def attacker_site(live_app, tmp_path_factory):
    """A page on another port of 127.0.0.1: same site as the app, another origin."""
    folder = tmp_path_factory.mktemp("attacker")
    (folder / "attack.html").write_text(ATTACK_PAGE.format(app=live_app.url, password=PASSWORD))
    port = free_port()
    handler = lambda *a, **kw: http.server.SimpleHTTPRequestHandler(*a, directory=str(folder), **kw)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{port}"
    server.shutdown()


def usernames(data_dir: Path) -> set[str]:
    conn = sqlite3.connect(f"file:{data_dir / 'tuneloop.db'}?mode=ro", uri=True)
    try:
        return {r[0] for r in conn.execute("SELECT username FROM users")}
    finally:
        conn.close()


def test_a_page_on_another_port_cannot_act_as_the_logged_in_admin(browser, live_app, attacker_site):
    page = login(browser, live_app.url, ADMIN)
    attack = page.context.new_page()
    attack.goto(f"{attacker_site}/attack.html")
    attack.wait_for_function("() => ['add', 'nocors', 'list'].every(k => window.results[k])", timeout=TIMEOUT_MS)
    results = attack.evaluate("window.results")
    attack.wait_for_timeout(1500)  # let the form post land too
    assert results["add"].startswith("blocked") or results["add"].startswith("403"), results
    assert results["list"].startswith("blocked") or "rita" not in results["list"], results  # nothing read back
    assert not {"mallory", "nocors", "formuser"} & usernames(live_app.data_dir)
    framed = attack.frame_locator("#framed")
    expect(framed.get_by_text("Signed in as")).to_have_count(0)  # frame-ancestors 'self': the app is not framed


def test_hostile_markdown_renders_as_text_in_the_review_tab(browser, live_app):
    page = login(browser, live_app.url, "rita")
    page.get_by_role("tab", name="Review").click()
    review = page.locator("#tl-review")
    page.get_by_role("radio", name="Single answer").check()  # its change loads the first item
    for _ in range(5):
        expect(review.get_by_text("remaining in single", exact=False)).to_be_visible()
        expect(review.get_by_role("heading", name="Prompt")).to_be_visible()
        page.wait_for_timeout(1000)
        injected = page.evaluate("""() => {
            const root = document.getElementById('tl-review');
            const fixed = [...document.querySelectorAll('body *')].filter(
                e => getComputedStyle(e).position === 'fixed' && e.offsetWidth > innerWidth / 2
                     && e.offsetHeight > innerHeight / 2);
            return {img: root.querySelectorAll('.tl-response img, .prose img').length,
                    form: root.querySelectorAll('form, input[type=password], iframe, svg[onload]').length,
                    styled: [...root.querySelectorAll('.tl-response [style]:not([data-testid=status-tracker])')].map(
                        e => e.outerHTML.slice(0, 300)),
                    evil_links: [...root.querySelectorAll('a')].filter(a => !/^https?:|^mailto:/.test(
                        a.getAttribute('href') || 'x') && a.getAttribute('href') !== null).length,
                    fixed: fixed.length, pwned: window.__pwned === 1};
        }""")
        assert injected == {"img": 0, "form": 0, "styled": [], "evil_links": 0, "fixed": 0, "pwned": False}
        assert "position:fixed" in review.inner_text() or "&lt;" not in review.inner_text()
        page.get_by_role("button", name="Skip").click()


def test_logout_button_posts_and_ends_the_session(browser, live_app):
    page = login(browser, live_app.url, "vic")
    page.get_by_role("button", name="Log out").click()
    expect(page.get_by_label("username")).to_be_visible()
    page.goto(live_app.url + "/logout")
    expect(page.get_by_text("Log out with a POST")).to_be_visible()


def test_a_chat_refused_at_the_door_says_why_and_the_next_one_is_answered(browser, live_app):
    """vic has a long chat streaming (another tab; here an HTTP client) and sends a message from the Chat tab: the
    HTTP guard answers the browser's queue/join with 429 before Gradio reads it. The page shows the reason; once the
    other chat has ended, the same page's next message is answered (the refusal left its Gradio session intact)."""
    other_tab = live_app.session("vic")
    streaming, stop = threading.Event(), threading.Event()

    def long_chat() -> None:
        body = {"data": ["Count from 1 to 1000, one number per line.", [], "active", 1024, 0.0],
                "session_hash": live_app.sessions[id(other_tab)]}
        event_id = other_tab.post("/gradio_api/call/chat", json=body).json()["event_id"]
        with other_tab.stream("GET", f"/gradio_api/call/chat/{event_id}") as stream:
            for line in stream.iter_lines():
                if "generating" in line:
                    streaming.set()
                if stop.is_set():
                    return

    running = threading.Thread(target=long_chat)
    running.start()
    try:
        page = login(browser, live_app.url, "vic")
        page.get_by_role("tab", name="Chat").click()
        assert streaming.wait(60)
        box = page.get_by_placeholder("Ask something")
        box.fill("Name a primary colour.")
        box.press("Enter")
        expect(page.get_by_text("already have 1 chat request(s) running").first).to_be_visible()
        page.screenshot(path=str(ARTIFACTS / "e2e-chat-refused-at-the-door.png"), full_page=True)
        assert running.is_alive()
    finally:
        stop.set()
        running.join(60)
    probe = live_app.session("vic")  # the guard answers 429 until the cancelled chat has released vic's slot
    deadline = time.monotonic() + 60
    while probe.post("/gradio_api/call/chat", json={}).status_code == 429 and time.monotonic() < deadline:
        time.sleep(0.5)
    box.fill("Name a primary colour.")
    box.press("Enter")
    conversation = page.get_by_role("log", name="chatbot conversation").filter(visible=True)
    expect(box).to_have_value("")  # the chat's first update clears the box: the event ran in this page's session
    rows = conversation.locator(".message-row")
    expect(rows).to_have_count(2)  # the question and its answer
    expect(rows.nth(1)).to_contain_text(re.compile(r"\w"))
    page.screenshot(path=str(ARTIFACTS / "e2e-chat-after-refusal.png"), full_page=True)
