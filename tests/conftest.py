"""Shared fixtures. The embedded model is converted once into .cache/ (or $TUNELOOP_TEST_CACHE) and reused."""

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ASSETS = Path(__file__).resolve().parent / "assets"


def pytest_configure(config: pytest.Config) -> None:
    # The suite runs offline, like this machine: any attempt to reach a model hub fails loudly.
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


@pytest.fixture(scope="session")
def cache_dir() -> Path:
    path = Path(os.environ.get("TUNELOOP_TEST_CACHE", ROOT / ".cache" / "test-data"))
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def base_model_path(cache_dir: Path) -> str:
    """Local HF folder of the embedded SmolLM2-135M-Instruct (converted once, then reused)."""
    from training.base_model import DEFAULT_BASE_MODEL, resolve_base_model

    return resolve_base_model(DEFAULT_BASE_MODEL, cache_dir)


@pytest.fixture()
def data_dir(tmp_path: Path, base_model_path: str) -> Path:
    """A fresh data dir whose models/ points at the cached default model (no second conversion)."""
    models = tmp_path / "models"
    models.mkdir()
    (models / "smollm2-135m-instruct").symlink_to(base_model_path, target_is_directory=True)
    return tmp_path
