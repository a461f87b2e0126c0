"""The feedback loop in a real browser (Chromium via Playwright) against the real app (`python app.py`).

Admin logs in, imports prompts and demonstrations, generates blind A/B candidates (active `base` vs an untrained
SDK adapter); a reviewer, in a second browser context, votes with the keyboard shortcuts and writes a correction;
the admin starts a short LoRA SFT round (3 steps), watches its progress, promotes the new version, and the demo
chat's answer comes from it; a viewer sees no Admin or Review tab. HTML/JS in a prompt stays inert throughout.
Screenshots of every step go to tests/artifacts/e2e-*.png.
"""

import json
import re

import pytest
from playwright.sync_api import Page, expect

from tests.e2e.live_app import ADMIN, PASSWORD

pytestmark = pytest.mark.browser

XSS = '<img src=x onerror="window.__pwned=1"> Which is larger, 7 or 9?'
PROMPTS = [XSS, "Name a primary colour.", "What is the capital of Italy?", "Say hello in French."]
ANSWER = "Tuneloop rocks: the answer is purple."
QUESTION = "Name a primary colour."
TIMEOUT_MS = 120_000


@pytest.fixture(scope="module")
def candidate(live_app):
    """A second servable version for blind A/B: an (untrained) SDK adapter, created in the app's data dir."""
    from training.sdk import Client

    client = Client(live_app.data_dir)
    client.get_base_model().create_model_adapter(name="cand", rank=2)
    client.store.close()
    return "cand"


@pytest.fixture(autouse=True)
def slow_machine_timeouts():
    expect.set_options(timeout=TIMEOUT_MS)  # 2 shared CPU cores: generation and training take their time
    yield
    expect.set_options(timeout=5_000)


def login(browser, url: str, username: str) -> Page:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    page.goto(url)
    page.get_by_label("username").fill(username)
    page.get_by_label("password").fill(PASSWORD)
    page.get_by_role("button", name="Login").click()
    expect(page.get_by_text(f"Signed in as {username}")).to_be_visible()
    return page


def shot(page: Page, artifacts, name: str) -> None:
    page.screenshot(path=str(artifacts / f"e2e-{name}.png"), full_page=True)


def pwned(page: Page) -> bool:
    return page.evaluate("() => window.__pwned !== undefined")


def import_file(page: Page, path, kind: str, expected: str) -> None:
    page.locator("input[type=file]").first.set_input_files(str(path))
    page.get_by_role("radio", name=kind, exact=True).check()
    # all four prompts train: "auto" would hold some out by text hash and this loop counts them
    page.get_by_role("radio", name="train", exact=True).first.check()
    page.get_by_role("button", name="Import", exact=True).click()
    expect(page.get_by_text(expected)).to_be_visible()


def set_number(page: Page, label: str, value: str) -> None:
    box = page.get_by_label(label, exact=True).filter(visible=True)
    box.fill(value)
    box.press("Tab")


def test_feedback_loop_in_the_browser(browser, live_app, candidate, artifacts, tmp_path):
    url = live_app.url
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS))
    demos = tmp_path / "demos.jsonl"
    demos.write_text("".join(json.dumps({"prompt": p, "completion": ANSWER}) + "\n" for p in PROMPTS))

    # 1. Admin: import, generate A/B candidates (active base vs the SDK adapter)
    admin = login(browser, url, ADMIN)
    shot(admin, artifacts, "01-admin-signed-in")
    admin.get_by_role("tab", name="Admin").click()
    import_file(admin, prompts, "prompts", "Imported 4 rows: 4 prompts")
    admin.get_by_role("button", name="Clear").first.click()  # the File component holds one file
    import_file(admin, demos, "demonstrations", "0 prompts, 4 demonstrations")
    shot(admin, artifacts, "02-admin-imported")
    candidate_box = admin.get_by_label("Candidate (B side)")
    candidate_box.click()
    admin.get_by_role("option", name=candidate).click()
    set_number(admin, "number input for Max new tokens", "16")
    admin.get_by_role("button", name="Generate", exact=True).click()
    expect(admin.get_by_text("8/8 answers", exact=False)).to_be_visible(timeout=240_000)
    shot(admin, artifacts, "03-admin-generated")

    # 2. Reviewer, second browser context: blind A/B with the keyboard, one correction
    reviewer = login(browser, url, "rita")
    reviewer.get_by_role("tab", name="Review").click()
    reviewer.get_by_role("button", name="Next item").click()
    expect(reviewer.get_by_text("0 done")).to_be_visible()
    shot(reviewer, artifacts, "04-reviewer-first-item")
    seen = [reviewer.locator("#tl-review").inner_text()]  # items come in the order the batched job finished them
    assert "cand" not in seen[0].replace("candidates", ""), "A/B is not blind: a version name is shown"
    reviewer.locator("body").click(position={"x": 5, "y": 5})  # focus outside any text field
    for done, key in enumerate(["a", "b"], start=1):
        reviewer.keyboard.press(key)
        expect(reviewer.get_by_text(f"{done} done")).to_be_visible()
        seen.append(reviewer.locator("#tl-review").inner_text())
    reviewer.get_by_text("✍️ Write a better answer").click()
    reviewer.get_by_label("Improve answer").click()
    reviewer.get_by_role("option", name="A", exact=True).click()
    reviewer.get_by_label("Better answer (Markdown)").fill(ANSWER)
    reviewer.get_by_role("button", name="Save correction").click()
    expect(reviewer.get_by_text("Correction saved")).to_be_visible()
    shot(reviewer, artifacts, "05-reviewer-corrected")
    reviewer.locator("body").click(position={"x": 5, "y": 5})
    reviewer.keyboard.press("t")
    expect(reviewer.get_by_text("3 done")).to_be_visible()
    seen.append(reviewer.locator("#tl-review").inner_text())
    reviewer.keyboard.press("x")
    expect(reviewer.get_by_text("Nothing left in this queue")).to_be_visible()
    html_item = [text for text in seen if "Which is larger, 7 or 9?" in text]
    assert html_item, "the item with the HTML prompt never showed its text"
    assert "<img" in html_item[0], "the HTML in the prompt was not shown as text"
    assert not pwned(reviewer), "HTML in a prompt ran as code"
    shot(reviewer, artifacts, "06-reviewer-queue-done")

    # 3. Admin: a short SFT round, watched live
    admin.get_by_role("tab", name="Rounds").click()
    for stage in ("reward", "dpo"):
        admin.get_by_role("checkbox", name=stage, exact=True).uncheck()
    set_number(admin, "Max steps per stage (-1 = recipe default)", "3")
    set_number(admin, "Learning rate (0 = recipe default)", "0.01")
    admin.get_by_role("checkbox", name="Run the evaluation gate").uncheck()
    admin.get_by_role("checkbox", name="Promote automatically when the gate passes").uncheck()
    admin.get_by_role("button", name="Start round").click()
    expect(admin.get_by_text(re.compile(r"Started run \d+"))).to_be_visible()
    expect(admin.get_by_text(re.compile(r"Run \d+: (running|succeeded)"))).to_be_visible()
    shot(admin, artifacts, "07-admin-round-running")
    expect(admin.get_by_text(re.compile(r"Run \d+: succeeded"))).to_be_visible(timeout=600_000)
    timeline = admin.get_by_text(re.compile(r"✅ sft \(v\d+-sft\)")).inner_text()  # the stage timeline
    version = re.search(r"✅ sft \((v\d+-sft)\)", timeline).group(1)
    shot(admin, artifacts, "08-admin-round-succeeded")

    # 4. Promote (hot-swap) and chat: the answer comes from the new version
    admin.get_by_role("tab", name="Versions").click()
    admin.get_by_role("button", name="↻ Refresh").filter(visible=True).click()
    admin.get_by_role("combobox", name="Version", exact=True).filter(visible=True).click()
    admin.get_by_role("option", name=version, exact=True).click()
    admin.get_by_role("button", name="Promote (hot-swap)").click()
    expect(admin.locator("#tl-banner")).to_contain_text(f"Serving {version}", timeout=60_000)
    shot(admin, artifacts, "09-admin-promoted")
    api = live_app.session("vic")
    answers = {v: live_app.call(api, "chat", [QUESTION, [], v, 32, 0.0])[1][1][-1]["content"][0]["text"]
               for v in (version, "base")}
    assert answers[version] != answers["base"], "the round did not change the answer"
    admin.get_by_role("tab", name="Chat").click()
    admin.get_by_role("button", name="Generation settings").click()
    set_number(admin, "number input for Max new tokens", "32")
    admin.get_by_placeholder("Ask something").fill(QUESTION)
    admin.get_by_placeholder("Ask something").press("Enter")
    conversation = admin.get_by_role("log", name="chatbot conversation").filter(visible=True)
    expect(conversation).to_contain_text(answers[version].strip())
    shot(admin, artifacts, "10-admin-chat-new-version")
    assert answers["base"].strip() not in conversation.inner_text()

    # 5. Viewer: no Admin, no Review
    viewer = login(browser, url, "vic")
    expect(viewer.get_by_role("tab", name="Chat")).to_be_visible()
    expect(viewer.get_by_role("tab", name="Admin")).to_have_count(0)
    expect(viewer.get_by_role("tab", name="Review")).to_have_count(0)
    shot(viewer, artifacts, "11-viewer-no-admin")
