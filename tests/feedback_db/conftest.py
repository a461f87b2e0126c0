"""Fixtures for the feedback store tests: a fresh store on a real SQLite file."""

from pathlib import Path

import pytest

from feedback_db import FeedbackStore


@pytest.fixture()
def store(tmp_path: Path) -> FeedbackStore:
    s = FeedbackStore(tmp_path / "tuneloop.db")
    yield s
    s.close()
