"""Reliability fixtures: one real app process per module (`python app.py` on a free loopback port)."""

import pytest

from tests.e2e.live_app import LiveApp, add_users, make_data_dir


@pytest.fixture(scope="module")
def live_data_dir(tmp_path_factory, base_model_path):
    data_dir = make_data_dir(tmp_path_factory.mktemp("live"), base_model_path)
    add_users(data_dir)
    return data_dir


@pytest.fixture(scope="module")
def live_app(live_data_dir):
    app = LiveApp.start(live_data_dir)
    yield app
    app.stop()
