"""The browser tests may skip for a developer without Chromium, never in CI: under CI=true a missing browser fails."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run_browser_tests(ci: bool) -> subprocess.CompletedProcess:
    env = {**os.environ, "TUNELOOP_CHROMIUM": "/nonexistent/chromium", "CI": "true" if ci else ""}
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/e2e"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("ci", [True, False], ids=["ci", "local"])
def test_missing_browser_fails_in_ci_and_skips_locally(ci):
    result = run_browser_tests(ci)
    if ci:
        assert result.returncode != 0 and "CI=true and the browser tests cannot run" in result.stdout, result.stdout
    else:
        assert result.returncode == 0 and "skipped" in result.stdout, result.stdout
