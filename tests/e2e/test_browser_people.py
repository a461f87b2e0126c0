"""The people in the loop, in a real browser (Debian's Chromium) against one real app (`python app.py`) on one store.

The tests share one live app and one logged-in page per user, and run in file order as a new team would meet the
app; each later test seeds what it needs itself, so it also passes alone:
  1. onboarding: an admin on an empty store follows the first-run panel alone (starter prompts → two sampled answers
     per prompt from the embedded model → Review → first blind A/B vote); each step's wall time goes to
     tests/artifacts/e2e-people-timing.json; on the next page load the panel stays closed and reopens from the header;
  2. configurable criteria: the admin adds a 1–5 criterion, a reviewer answers it with a vote, the admin's export
     of `criterion_answers` holds the answer;
  3. data browser: search, filter by split, open a prompt, move it to held-out, exclude it (the reason shows as text);
  4. leaderboard: blind votes between two versions arrive one by one and the Stats ratings move with each.
Every step is checked on the page and in the store (the app's SQLite file). Screenshots: tests/artifacts/e2e-people-*.
"""

import json
import re
import time

import pytest
from playwright.sync_api import Page, expect

from feedback_db.browse import BrowseFilter
from feedback_db.importers import STARTER_PROMPTS
from feedback_db.leaderboard import leaderboard
from feedback_db.store import FeedbackStore
from tests.e2e.live_app import ADMIN
from tests.e2e.test_browser_loop import login, slow_machine_timeouts  # noqa: F401 (an autouse fixture)

pytestmark = pytest.mark.browser

STARTER = [json.loads(line) for line in STARTER_PROMPTS.read_text().splitlines()]
REASON = "Names a <p>real person</p> *twice*"


@pytest.fixture(scope="module")
def pages(browser, live_app) -> dict[str, Page]:
    """One logged-in page per user, opened on first use and shared by the module's tests."""
    opened: dict[str, Page] = {}
    yield opened
    for page in opened.values():
        page.context.close()


def page_of(pages: dict[str, Page], browser, live_app, username: str) -> Page:
    if username not in pages:
        pages[username] = login(browser, live_app.url, username)
    return pages[username]


@pytest.fixture
def store(live_app):
    store = FeedbackStore(live_app.data_dir / "tuneloop.db")
    yield store
    store.close()


def shot(page: Page, artifacts, name: str) -> None:
    page.screenshot(path=str(artifacts / f"e2e-people-{name}.png"), full_page=True)


def open_admin(page: Page, sub_tab: str) -> None:
    page.get_by_role("tab", name="Admin", exact=True).click()
    page.get_by_role("tab", name=sub_tab, exact=True).click()


def matching(count: int) -> re.Pattern:
    return re.compile(rf"^{count} prompts? match")


def choose(page: Page, label: str, option: str) -> None:
    """Pick `option` in the Gradio dropdown labelled `label`."""
    page.get_by_label(label, exact=True).click()
    page.get_by_role("option", name=option, exact=True).click()


def test_onboarding_from_an_empty_store_to_a_first_blind_vote(browser, live_app, pages, store, artifacts):
    steps, started = {}, time.monotonic()

    def lap(name: str) -> None:
        steps[name] = round(time.monotonic() - started - sum(steps.values()), 1)

    admin = page_of(pages, browser, live_app, ADMIN)
    panel = admin.locator("#tl-onboarding")
    expect(panel).to_be_visible()
    lap("login_to_panel_s")
    admin.get_by_role("button", name="1. Load starter prompts").click()
    expect(admin.get_by_text("Loaded 120 prompts")).to_be_visible()
    lap("load_starter_prompts_s")
    assert store.count("prompts") == 120 and len(store.list_prompts(split="heldout")) == 17

    admin.get_by_role("button", name="2. Generate candidates").click()
    expect(admin.get_by_text("6 blind A/B items wait in the Review tab")).to_be_visible(timeout=600_000)
    lap("generate_candidates_s")
    responses = [r for p in store.list_prompts(split="train") for r in store.list_responses(p.id)]
    assert len(responses) == 12 and {r.model_version for r in responses} == {"base"}
    assert all(r.text.strip() for r in responses)  # the embedded model answered every prompt, twice
    shot(admin, artifacts, "01-onboarding")

    admin.get_by_role("button", name="3. Review").click()
    admin.get_by_role("button", name="Next item").click()
    expect(admin.get_by_text("0 done")).to_be_visible()
    lap("open_first_item_s")
    admin.get_by_role("button", name="A is better (a)").click()
    expect(admin.get_by_text("1 done")).to_be_visible()
    expect(admin.locator("#rv-mine")).to_contain_text("1 A/B votes")  # the reviewer's counts follow each vote
    lap("first_vote_s")
    steps["login_to_first_blind_vote_s"] = round(time.monotonic() - started, 1)
    # the panel follows the vote without a click on it: Review ticked, the next step (train) highlighted
    expect(panel).to_contain_text("✓ 3. Review")
    expect(admin.locator("#ob-train")).to_have_class(re.compile(r"\bprimary\b"))
    for done in ("#ob-load", "#ob-generate", "#ob-review"):
        expect(admin.locator(done)).not_to_have_class(re.compile(r"\bprimary\b"))
    admin.wait_for_timeout(500)  # the buttons' colour transition, for the screenshot
    shot(admin, artifacts, "02-first-vote")
    (artifacts / "e2e-people-timing.json").write_text(json.dumps(steps, indent=1))

    (vote,) = store.list_comparisons()
    assert (vote.source, vote.username, vote.version_a, vote.version_b) == ("review", ADMIN, "base", "base")
    assert vote.winner == "a" and store.get_response(vote.response_a).prompt_id == store.get_response(
        vote.response_b).prompt_id
    assert steps["login_to_first_blind_vote_s"] < 300  # issue 16's "done when": a first vote within 5 minutes

    admin.reload()  # the store has prompts now: the panel stays closed, the header reopens it
    expect(admin.get_by_text(f"Signed in as {ADMIN}")).to_be_visible()
    guide = admin.locator("#ob-open")
    expect(guide).to_be_visible()
    expect(panel).to_be_hidden()
    guide.click()
    expect(panel).to_be_visible()
    expect(panel).to_contain_text("✓ 3. Review")
    admin.locator("#ob-close").click()
    expect(panel).to_be_hidden()


def test_admin_adds_a_criterion_a_reviewer_answers_it_and_the_export_holds_it(browser, live_app, pages, store,
                                                                              artifacts):
    admin = page_of(pages, browser, live_app, ADMIN)
    open_admin(admin, "Guidelines & criteria")
    admin.locator("#form-name textarea").fill("factually accurate")
    admin.get_by_label("Description shown to reviewers").fill("Every claim in the answer is true")
    admin.get_by_role("button", name="Add criterion").click()
    expect(admin.locator("#form-criteria")).to_contain_text("factually accurate")
    expect(admin.locator("#form-description textarea")).to_have_value("")  # the form is ready for the next one
    (criterion,) = store.list_criteria()
    assert (criterion.name, criterion.kind, criterion.excludes) == ("factually accurate", "scale", False)
    shot(admin, artifacts, "03-criterion-added")

    seed_pairs(store, "Criterion", 1)  # an item for the reviewer even when this test runs alone
    rita = page_of(pages, browser, live_app, "rita")
    rita.get_by_role("tab", name="Review", exact=True).click()
    rita.get_by_role("button", name="Next item").click()
    question = rita.locator("#rv-criterion-0")
    expect(question).to_contain_text("factually accurate")
    expect(question).to_contain_text("Every claim in the answer is true")
    question.get_by_label("4", exact=True).check()
    rita.get_by_role("button", name="B is better (b)").click()
    expect(rita.get_by_text("1 done")).to_be_visible()
    expect(rita.locator("#rv-mine")).to_contain_text("1 A/B votes")
    shot(rita, artifacts, "04-criterion-answered")
    (vote,) = [c for c in store.list_comparisons() if c.username == "rita"]
    (answer,) = store.list_criterion_answers()
    assert (answer.criterion_id, answer.value, answer.judgment, answer.judgment_id, answer.username) == (
        criterion.id, 4, "comparisons", vote.id, "rita")

    open_admin(admin, "Data")
    choose(admin, "Dataset or table", "criterion_answers")
    admin.get_by_role("button", name="Export JSONL").click()
    expect(admin.get_by_text("criterion_answers-").first).to_be_visible()
    (path,) = (live_app.data_dir / "exports").glob("criterion_answers-*.jsonl")
    (row,) = [json.loads(line) for line in path.read_text().splitlines()]
    assert (row["criterion_id"], row["value"], row["judgment_id"], row["username"]) == (criterion.id, 4, vote.id,
                                                                                        "rita")


def test_data_browser_filters_moves_to_held_out_and_excludes(browser, live_app, pages, store, artifacts):
    admin = page_of(pages, browser, live_app, ADMIN)
    if store.count("prompts") < len(STARTER):  # this test alone: the first run's step 1 through the app's API
        client = live_app.session(ADMIN)
        assert live_app.call(client, "onboarding_load", [])[0] == "complete"
        client.close()
    target = next(r["prompt"] for r in STARTER if "Ada Lovelace" in r["prompt"])
    (prompt,) = [p for p in store.list_prompts(split="train") if p.text == target]
    heldout = len(store.list_prompts(split="heldout"))
    open_admin(admin, "Browse")
    summary = admin.get_by_text(re.compile(r"prompts? match"))
    expect(summary).to_have_text(matching(store.count("prompts")))

    admin.locator("#browse-search textarea").fill("ada lovelace")
    admin.locator("#browse-go").click()
    expect(summary).to_have_text(matching(1))
    expect(admin.locator("#browse-table")).to_contain_text(target)
    admin.locator("#browse-search textarea").fill("")
    choose(admin, "Split", "heldout")
    admin.locator("#browse-go").click()
    expect(summary).to_have_text(matching(heldout))

    admin.locator("#browse-id input").fill(str(prompt.id))
    admin.get_by_role("button", name="Open", exact=True).click()
    detail = admin.locator("#browse-detail")
    expect(detail).to_contain_text(f"Prompt {prompt.id} · train")
    admin.get_by_role("button", name="Move to held-out").click()
    expect(detail).to_contain_text(f"Prompt {prompt.id} · heldout")
    assert store.get_prompt(prompt.id).split == "heldout"
    admin.locator("#browse-go").click()
    expect(summary).to_have_text(matching(heldout + 1))

    admin.get_by_label("Why exclude (kept in the audit log)").fill(REASON)
    admin.get_by_role("button", name="Exclude from training").click()
    expect(detail).to_contain_text(f"excluded by {ADMIN}: {REASON}")  # the reason as typed: no HTML, no Markdown
    shown = detail.locator("li", has_text="excluded by").inner_html()  # <p> around the item: a loose Markdown list
    assert "Names a &lt;p&gt;real person&lt;/p&gt; *twice*" in shown and "<em>" not in shown
    assert prompt.id in store.excluded_prompt_ids()
    (exclusion,) = store.prompt_feedback(prompt.id)["exclusions"]
    assert (exclusion["username"], exclusion["reason"], exclusion["lifted"]) == (ADMIN, REASON, None)
    assert [e.action for e in store.list_audit()][:2] == ["exclude_prompt", "move_prompt"]

    choose(admin, "Split", "any")
    admin.get_by_role("radio", name="excluded", exact=True).check()
    admin.locator("#browse-go").click()
    expect(summary).to_have_text(matching(1))
    expect(admin.locator("#browse-table")).to_contain_text(target)
    shot(admin, artifacts, "05-browse-excluded")
    rows, total = store.browse_prompts(BrowseFilter(excluded=True))
    assert total == 1 and rows[0].id == prompt.id


def seed_pairs(store: FeedbackStore, topic: str, count: int) -> None:
    """Blind A/B items between two versions' answers, as a production app posts them (see the ingestion API)."""
    for n in range(count):
        prompt_id = store.add_prompt(f"{topic} question {n}: name a prime number.", split="train")
        store.add_response(prompt_id, f"Old answer {n}: nine.", "prod-old")
        store.add_response(prompt_id, f"New answer {n}: seven.", "prod-new")


def board_rows(page: Page) -> dict[str, dict[str, str]]:
    """The Stats leaderboard as {version: {column: cell}}. Gradio 6's Dataframe draws its header as a table and its
    body as a virtual list of ARIA rows (div[role=row] > div[role=gridcell]); its <tbody> is a hidden sizing copy."""
    board = page.locator("#leaderboard")
    header = [h.strip() for h in board.locator("th[role=columnheader]").all_inner_texts()]
    rows = board.locator("div[role=row]")
    cells = [[c.strip() for c in rows.nth(i).locator("[role=gridcell]").all_inner_texts()]
             for i in range(rows.count())]
    table = [dict(zip(header, row, strict=True)) for row in cells]
    return {row["version"]: row for row in table}


def vote_for(page: Page, marker: str) -> None:
    """Serve items until one shows an answer containing `marker`, then vote for that answer; skip the others (the
    first-run items, two samples of one version, come first in the queue). Next item is pressed only when no item
    is shown: pressed on a shown item, it re-served that item while this read the page, and until the app kept the
    shown item's order a vote clicked meanwhile could apply to the answers swapped (the prod-old one won)."""
    prompt = page.locator("#rv-prompt")
    if not (page.locator("#rv-answer-b").is_visible() and page.locator("#rv-answer-b").inner_text().strip()):
        page.get_by_role("button", name="Next item").click()
    for _ in range(10):
        expect(page.locator("#rv-answer-b")).not_to_be_empty()
        a, b, shown = (page.locator("#rv-answer-a").inner_text(), page.locator("#rv-answer-b").inner_text(),
                       prompt.inner_text())
        if marker in a or marker in b:
            page.get_by_role("button", name="A is better (a)" if marker in a else "B is better (b)").click()
            expect(prompt).not_to_have_text(shown)
            return
        page.get_by_role("button", name="Skip (s)").click()
        expect(prompt).not_to_have_text(shown)
    raise AssertionError(f"no item with {marker!r} was served")


def board_when(page: Page, version: str, votes: int, timeout: float = 30.0) -> dict[str, dict[str, str]]:
    """The leaderboard once `version`'s row shows `votes` votes (the Dataframe redraws after the tab's refresh)."""
    deadline = time.monotonic() + timeout
    while True:
        rows = board_rows(page)
        if rows.get(version, {}).get("votes") == str(votes) or time.monotonic() > deadline:
            return rows
        page.wait_for_timeout(200)


def test_leaderboard_ratings_move_as_votes_arrive(browser, live_app, pages, store, artifacts):
    seed_pairs(store, "Leaderboard", 3)
    before = len([c for c in store.list_comparisons() if c.username == "rita"])
    prior = {r.version: r.votes for r in leaderboard(store).ratings}.get("prod-new", 0)
    vic = page_of(pages, browser, live_app, "vic")

    rita = page_of(pages, browser, live_app, "rita")
    rita.get_by_role("tab", name="Review", exact=True).click()
    seen = []
    for votes in (1, 2):
        vote_for(rita, "New answer")
        expect(rita.locator("#rv-mine")).to_contain_text(f"{before + votes} A/B votes")  # stored: rita's counts say so
        stored = {r.version: r for r in leaderboard(store).ratings}
        vic.get_by_role("tab", name="Chat", exact=True).click()
        vic.get_by_role("tab", name="Stats", exact=True).click()  # the tab reloads its tables when selected
        rows = board_when(vic, "prod-new", stored["prod-new"].votes)
        assert "prod-new" in rows, rows
        assert int(rows["prod-new"]["votes"]) == stored["prod-new"].votes == prior + votes
        assert int(rows["prod-new"]["rating"]) == round(stored["prod-new"].rating)
        assert int(rows["prod-old"]["rating"]) == round(stored["prod-old"].rating)
        seen.append(int(rows["prod-new"]["rating"]))
    assert seen[0] < seen[1] and rows["prod-new"]["rank"] == "1"  # each win moves prod-new up
    shot(vic, artifacts, "06-leaderboard")
    counted = [c for c in store.list_comparisons() if "prod-new" in (c.version_a, c.version_b)]
    assert len(counted) == prior + 2 and all(c.source == "review" and c.username == "rita" for c in counted[-2:])
    assert all((c.version_a if c.winner == "a" else c.version_b) == "prod-new" for c in counted[-2:])
