"""Training fixtures: a store filled from the tiny JSONL assets."""

import json
from pathlib import Path

import pytest

ASSETS = Path(__file__).resolve().parent.parent / "assets"


def read_jsonl(name: str) -> list[dict]:
    return [json.loads(line) for line in (ASSETS / name).read_text().splitlines() if line.strip()]


def fill_store(store, heldout_pairs: int = 3) -> None:
    """Demonstrations, preference pairs (the last `heldout_pairs` on held-out prompts) and thumbs labels."""
    for row in read_jsonl("sft_tiny.jsonl"):
        prompt_id = store.add_prompt(row["prompt"][-1]["content"], source="test", split="train")
        store.add_demonstration(prompt_id, row["completion"][0]["content"])
    pairs = read_jsonl("pairs_tiny.jsonl")
    for i, row in enumerate(pairs):
        split = "heldout" if i >= len(pairs) - heldout_pairs else "train"
        prompt_id = store.add_prompt(row["prompt"][-1]["content"], source="test", split=split)
        store.add_preference_pair(prompt_id, row["chosen"][0]["content"], row["rejected"][0]["content"])
    for row in read_jsonl("kto_tiny.jsonl"):
        prompt_id = store.add_prompt(row["prompt"][-1]["content"], source="test-kto", split="train")
        store.add_unpaired_label(prompt_id, row["completion"][0]["content"], row["label"])


@pytest.fixture()
def store(data_dir: Path):
    from feedback_db import FeedbackStore

    store = FeedbackStore(data_dir / "tuneloop.db")
    fill_store(store)
    return store
