"""Browser end-to-end fixtures: the real app (`python app.py`) on a free loopback port, and Debian's Chromium.

Chromium is launched by executable path (Playwright's own browser download does not work offline). Without a
browser these tests skip locally but FAIL under CI=true, so CI cannot pass without running them.
"""

import os
import shutil
from pathlib import Path

import pytest

from tests.e2e.live_app import LiveApp, add_users, make_data_dir

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")


def chromium_path() -> str | None:
    """$TUNELOOP_CHROMIUM when set (and only it), else Debian's chromium."""
    configured = os.environ.get("TUNELOOP_CHROMIUM")
    if configured:
        return configured if Path(configured).is_file() else None
    return next((c for c in CHROMIUM_CANDIDATES if Path(c).is_file()), None) or shutil.which("chromium")


def unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"CI=true and the browser tests cannot run: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser():
    path = chromium_path()
    if path is None:
        unavailable("no Chromium found (make browser installs Debian's chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("playwright is not installed (pip install -r requirements-dev.txt)")
    with sync_playwright() as p:
        try:
            browser = p.chromium.launch(executable_path=path, headless=True,
                                        args=["--no-sandbox", "--disable-background-networking"])
        except Exception as err:  # a broken Chromium install: same rule as a missing one
            unavailable(f"Chromium at {path} did not start: {err}")
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def live_app(tmp_path_factory, base_model_path):
    data_dir = make_data_dir(tmp_path_factory.mktemp("e2e"), base_model_path)
    add_users(data_dir)
    app = LiveApp.start(data_dir)
    yield app
    app.stop()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS
