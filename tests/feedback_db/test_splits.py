"""Held-out by default: a deterministic share of new prompts by text hash, stable across re-imports; the m005
migration for old stores; the reward model's validation split keeps each prompt on one side."""

import json
from pathlib import Path

import pytest
from datasets import Dataset

from feedback_db import FeedbackStore
from feedback_db.connection import open_connection
from feedback_db.datasets import split_by_prompt
from feedback_db.importers import import_file
from feedback_db.migrations import migrate
from feedback_db.splits import split_for

# by sha256: "Question 1" and "Question 3" are held out at the default 10 %, "Question 0" and "Question 2" are not
HELD, TRAINED = ("Question 1", "Question 3"), ("Question 0", "Question 2")


def test_split_is_deterministic_with_the_configured_share() -> None:
    texts = [f"prompt number {i}" for i in range(4000)]
    held = [t for t in texts if split_for(t) == "heldout"]
    assert 0.085 < len(held) / len(texts) < 0.115
    assert held == [t for t in texts if split_for(f"  {t}\n") == "heldout"]  # same text, same side
    assert [split_for(t) for t in HELD + TRAINED] == ["heldout", "heldout", "train", "train"]
    assert all(split_for(t, 0.0) == "train" for t in HELD)
    assert sum(split_for(t, 0.5) == "heldout" for t in texts) > 1800
    with pytest.raises(ValueError, match="heldout_share must be in"):
        FeedbackStore(":memory:", heldout_share=1.0)


def test_new_prompts_follow_the_hash_and_an_explicit_split_wins(tmp_path: Path) -> None:
    store = FeedbackStore(tmp_path / "db.sqlite")
    ids = {text: store.add_prompt(text) for text in HELD + TRAINED}
    assert {t: store.get_prompt(i).split for t, i in ids.items()} == {
        "Question 1": "heldout", "Question 3": "heldout", "Question 0": "train", "Question 2": "train"}
    assert store.get_prompt(store.add_prompt("Question 1", split="train")).split == "train"
    none_held = FeedbackStore(tmp_path / "zero.sqlite", heldout_share=0.0)
    assert none_held.get_prompt(none_held.add_prompt("Question 1")).split == "train"


def test_reimport_lands_on_the_same_side(tmp_path: Path) -> None:
    path = tmp_path / "prompts.jsonl"
    rows = [{"prompt": f"Question {i}"} for i in range(40)] + [{"prompt": "Question 0", "split": "heldout"}]
    path.write_text("\n".join(json.dumps(r) for r in rows[:40]) + "\n")
    splits = []
    for name in ("a", "b"):
        store = FeedbackStore(tmp_path / f"{name}.sqlite")
        import_file(store, path, "prompts")
        import_file(store, path, "prompts")  # a re-import adds nothing and moves nothing
        splits.append({p.text: p.split for p in store.list_prompts()})
    assert splits[0] == splits[1] and len(splits[0]) == 40
    assert {t for t, s in splits[0].items() if s == "heldout"} == {t for t in splits[0] if split_for(t) == "heldout"}
    explicit = FeedbackStore(tmp_path / "c.sqlite")
    import_file(explicit, path, "prompts", split="train")
    assert {p.split for p in explicit.list_prompts()} == {"train"}


def test_m005_holds_out_unused_prompts_and_records_the_moves(tmp_path: Path) -> None:
    path = str(tmp_path / "old.db")
    conn = open_connection(path)
    migrate(conn, stop_before="m005_heldout_split")
    stamp = "2026-01-01T00:00:00+00:00"
    for i in range(4):
        conn.execute("INSERT INTO prompts (id, text, source, split, created) VALUES (?, ?, 'import', 'train', ?)",
                     (i + 1, f"Question {i}", stamp))
    # a version trained on the pair of "Question 1"; the pair of "Question 3" came after its snapshot
    conn.execute("INSERT INTO preference_pairs VALUES (1, 2, 'good', 'bad', 'import', ?)", (stamp,))
    snapshot = {"max_ids": {"prompts": 4, "responses": 0, "demonstrations": 0, "ratings": 0, "comparisons": 0,
                            "rankings": 0, "corrections": 0, "preference_pairs": 1, "unpaired_labels": 0}}
    conn.execute("INSERT INTO model_versions (name, method, technique, path, base_model, data_snapshot, status, "
                 "created) VALUES ('v1-dpo', 'dpo', 'lora', '/x', 'm', ?, 'active', ?)", (json.dumps(snapshot), stamp))
    conn.execute("INSERT INTO preference_pairs VALUES (2, 4, 'good', 'bad', 'import', ?)", (stamp,))
    conn.close()

    store = FeedbackStore(path)
    assert {p.text: p.split for p in store.list_prompts()} == {
        "Question 0": "train", "Question 1": "train", "Question 2": "train", "Question 3": "heldout"}
    moves = store.table_rows("prompt_split_moves")
    assert [(m["prompt_id"], m["from_split"], m["to_split"]) for m in moves] == [(4, "train", "heldout")]


def test_reward_validation_split_keeps_each_prompt_on_one_side() -> None:
    # a 5-answer ranking per prompt: 10 pairs sharing answers
    rows = [{"prompt": [{"role": "user", "content": f"Q{p}"}], "chosen": [{"role": "assistant", "content": f"a{i}"}],
             "rejected": [{"role": "assistant", "content": f"a{j}"}]}
            for p in range(10) for i in range(5) for j in range(i + 1, 5)]
    train, test = split_by_prompt(Dataset.from_list(rows), 0.2, seed=1)
    prompts = [{r[0]["content"] for r in part["prompt"]} for part in (train, test)]
    assert len(prompts[1]) == 2 and not prompts[0] & prompts[1]
    assert len(train) + len(test) == len(rows) and len(test) == 20
    assert split_by_prompt(Dataset.from_list(rows), 0.2, seed=1)[1]["prompt"] == test["prompt"]  # seeded
