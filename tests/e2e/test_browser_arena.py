"""First run to a blind vote, then the arena and the leaderboard, in a real browser against the real app.

An admin on an empty store follows the onboarding panel alone (starter prompts → two sampled answers per prompt
from the embedded model → Review → first blind A/B vote) and the time to that vote is recorded; a viewer then
battles in the Arena (a second version exists: an untrained SDK adapter), sees the names only after voting, and
the Stats leaderboard moves as votes arrive. Screenshots: tests/artifacts/e2e-arena-*.png, timing:
tests/artifacts/e2e-arena-timing.json.
"""

import json
import time

import pytest
from playwright.sync_api import Page, expect

from feedback_db.store import FeedbackStore
from tests.e2e.live_app import ADMIN
from tests.e2e.test_browser_loop import login, pwned, slow_machine_timeouts  # noqa: F401 (an autouse fixture)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

PROMPT = '<img src=x onerror="window.__pwned=1"> Name a primary colour.'


def shot(page: Page, artifacts, name: str) -> None:
    page.screenshot(path=str(artifacts / f"e2e-arena-{name}.png"), full_page=True)


def battle(page: Page, vote: str) -> str:
    """Ask the arena, check the answers are anonymous, vote; returns the reveal text."""
    page.locator("#arena-message textarea").fill(PROMPT)
    page.locator("#arena-send").click()
    status = page.locator("#arena-status")
    expect(status).to_contain_text("Which answer is better")
    answers = page.locator("#arena-chat-a").inner_text() + page.locator("#arena-chat-b").inner_text()
    assert "cand" not in answers and "cand" not in status.inner_text(), "the arena is not blind"
    page.locator(f"#arena-{vote}").click()
    expect(status).to_contain_text("A was")
    return status.inner_text()


def test_first_run_blind_vote_then_arena_and_leaderboard(browser, live_app, artifacts):
    started = time.monotonic()
    admin = login(browser, live_app.url, ADMIN)
    expect(admin.locator("#tl-onboarding")).to_be_visible()
    admin.get_by_role("button", name="1. Load starter prompts").click()
    expect(admin.get_by_text("Loaded 120 prompts")).to_be_visible()
    admin.get_by_role("button", name="2. Generate candidates").click()
    expect(admin.get_by_text("6 blind A/B items wait in the Review tab")).to_be_visible(timeout=600_000)
    shot(admin, artifacts, "01-onboarding")
    admin.get_by_role("button", name="3. Review").click()
    admin.get_by_role("button", name="Next item").click()
    expect(admin.get_by_text("0 done")).to_be_visible()
    admin.get_by_role("button", name="A is better (a)").click()
    expect(admin.get_by_text("1 done")).to_be_visible()
    first_vote_s = time.monotonic() - started
    shot(admin, artifacts, "02-first-vote")
    (artifacts / "e2e-arena-timing.json").write_text(json.dumps({"login_to_first_blind_vote_s": first_vote_s}))

    from training.sdk import Client  # a second servable version for the arena

    client = Client(live_app.data_dir)
    client.get_base_model().create_model_adapter(name="cand", rank=2)
    client.store.close()

    viewer = login(browser, live_app.url, "vic")
    viewer.get_by_role("tab", name="Arena").click()
    reveal = battle(viewer, "a")
    assert "cand" in reveal and "base" in reveal and not pwned(viewer)
    shot(viewer, artifacts, "03-revealed")
    viewer.get_by_role("tab", name="Stats").click()
    board = viewer.locator("#leaderboard")
    expect(board).to_contain_text("cand")
    first = board.inner_text()
    viewer.get_by_role("tab", name="Arena").click()
    battle(viewer, "b")
    viewer.get_by_role("tab", name="Stats").click()
    expect(board).not_to_have_text(first)  # refreshed on select: two votes now, ratings moved
    expect(viewer.locator("#win-matrix")).to_contain_text("base")
    shot(viewer, artifacts, "04-leaderboard")

    store = FeedbackStore(live_app.data_dir / "tuneloop.db")
    sources = [c.source for c in store.list_comparisons()]
    assert sources == ["review", "viewer_arena", "viewer_arena"]  # vic is a viewer
    arena = [c for c in store.list_comparisons() if c.source == "viewer_arena"]
    assert all({c.version_a, c.version_b} == {"base", "cand"} for c in arena)
    assert store.get_prompt(arena[0].prompt_id).messages == [{"role": "user", "content": PROMPT}]
    store.close()
