"""FeedbackStore behaviour: users and passwords, feedback validation, versions, runs, snapshot, audit."""

import sqlite3

import pytest

from feedback_db import FeedbackStore
from feedback_db.models import Snapshot


def test_passwords_are_salted_hashes_and_disabled_users_cannot_log_in(store: FeedbackStore) -> None:
    store.create_user("ann", "s3cret", "reviewer")
    store.create_user("bob", "s3cret", "viewer")
    hashes = [r[0] for r in sqlite3.connect(store.path).execute("SELECT password_hash FROM users")]
    assert len(set(hashes)) == 2 and not any("s3cret" in h for h in hashes)
    assert store.authenticate("ann", "s3cret").role == "reviewer"
    assert store.authenticate("ann", "wrong") is None
    assert store.authenticate("nobody", "s3cret") is None
    store.set_disabled("ann", True)
    assert store.authenticate("ann", "s3cret") is None
    store.set_role("bob", "admin")
    assert [(u.username, u.role, u.disabled) for u in store.list_users()] == [
        ("ann", "reviewer", True),
        ("bob", "admin", False),
    ]
    with pytest.raises(ValueError, match="already exists"):
        store.create_user("bob", "x", "viewer")
    with pytest.raises(ValueError, match="role must be one of"):
        store.create_user("cy", "x", "root")
    with pytest.raises(KeyError):
        store.set_role("nobody", "admin")


def test_feedback_validation(store: FeedbackStore) -> None:
    p, q = store.add_prompt("P"), store.add_prompt("Q")
    a, b, other = (
        store.add_response(p, "A", "base"),
        store.add_response(p, "B", "v1"),
        store.add_response(q, "C", "v1"),
    )
    with pytest.raises(ValueError, match="thumbs must be 1"):
        store.add_rating(a, "ann", thumbs=-1)
    with pytest.raises(ValueError, match="likert must be 1..5"):
        store.add_rating(a, "ann", likert=6)
    with pytest.raises(ValueError, match="needs thumbs, likert or a comment"):
        store.add_rating(a, "ann")
    with pytest.raises(ValueError, match="same prompt"):
        store.add_comparison(a, other, "a", "ann")
    with pytest.raises(ValueError, match="winner must be"):
        store.add_comparison(a, b, "c", "ann")
    with pytest.raises(KeyError):
        store.add_correction(999, "x", "ann")
    with pytest.raises(ValueError, match="split must be"):
        store.add_prompt("x", split="test")
    comparison = store.list_comparisons()
    assert comparison == []
    store.add_comparison(b, a, "a", "ann")
    c = store.list_comparisons()[0]
    assert (c.prompt_id, c.version_a, c.version_b, c.winner) == (p, "v1", "base", "a")


def test_versions_activation_archives_the_previous_and_is_audited(store: FeedbackStore) -> None:
    assert store.next_version_name("sft") == "v1-sft"
    store.register_version("v1-sft", None, "sft", "lora", "/v/1", "base-id", {"lr": 1}, {"max_ids": {}}, {})
    assert store.next_version_name("dpo") == "v2-dpo"
    store.register_version("v2-dpo", "v1-sft", "dpo", "lora", "/v/2", "base-id", {}, {}, {"loss": 0.5})
    store.register_version("v3-reward", "v1-sft", "reward", "lora", "/v/3", "base-id", {}, {}, {})
    assert store.active_version() is None
    store.set_active("v1-sft", "ann")
    store.set_active("v2-dpo", "ann")
    assert store.active_version().name == "v2-dpo"
    assert {v.name: v.status for v in store.list_versions()} == {
        "v1-sft": "archived",
        "v2-dpo": "active",
        "v3-reward": "candidate",
    }
    with pytest.raises(ValueError, match="reward model"):
        store.set_active("v3-reward")
    with pytest.raises(ValueError, match="already exists"):
        store.register_version("v2-dpo", None, "dpo", "lora", "/x", "b", {}, {}, {})
    store.update_version_metrics("v2-dpo", {"win_rate": 0.7})
    assert store.get_version("v2-dpo").metrics == {"loss": 0.5, "win_rate": 0.7}
    store.set_active(None, "ann")
    assert store.active_version() is None
    assert [e.detail["version"] for e in store.list_audit()] == ["base", "v2-dpo", "v1-sft"]
    assert store.list_audit()[0].username == "ann"


def test_runs_lifecycle_and_interrupted_runs(store: FeedbackStore) -> None:
    done = store.create_run({"stages": ["sft"]}, ["sft"], "ann")
    stuck = store.create_run({}, ["sft", "dpo"], "ann")
    store.update_run(done, status="running", pid=123, stage="sft")
    assert store.get_run(done).finished is None
    store.add_run_metrics(done, 1, "sft", {"loss": 2.0})
    store.add_run_metrics(done, 2, "sft", {"loss": 1.5})
    store.update_run(done, status="succeeded", versions=["v1-sft"], log_tail="ok")
    run = store.get_run(done)
    assert (run.status, run.pid, run.stage, run.versions, run.log_tail) == ("succeeded", 123, "sft", ["v1-sft"], "ok")
    assert run.finished is not None
    first = store.run_metrics(done)
    assert [m.metrics["loss"] for m in first] == [2.0, 1.5]
    assert store.run_metrics(done, after_id=first[0].id) == first[1:]
    store.update_run(stuck, status="running")
    assert store.mark_interrupted_runs() == 1
    assert [r.status for r in store.list_runs()] == ["interrupted", "succeeded"]
    with pytest.raises(KeyError):
        store.get_run(999)
    with pytest.raises(ValueError):
        store.update_run(done, status="exploded")


def test_snapshot_pins_max_ids(store: FeedbackStore) -> None:
    p = store.add_prompt("P")
    r = store.add_response(p, "A", "base")
    store.add_rating(r, "ann", thumbs=1)
    snap = store.snapshot()
    store.add_rating(r, "bob", thumbs=0)
    assert snap.max_ids["ratings"] == 1 and snap.feedback_max_id == 1 and snap.taken_at
    assert [x.username for x in store.list_ratings(snap)] == ["ann"]
    assert len(store.list_ratings()) == 2


def test_transaction_is_all_or_nothing(store: FeedbackStore) -> None:
    with pytest.raises(ValueError), store.transaction():
        store.add_prompt("kept?")
        store.add_prompt("  ")
    assert store.list_prompts() == []


def test_references_to_missing_rows_raise_key_error(store: FeedbackStore) -> None:
    with pytest.raises(KeyError, match="prompt_id=42"):
        store.add_response(42, "A", "base")
    with pytest.raises(KeyError, match="run_id=7"):
        store.add_run_metrics(7, 1, "sft", {})
    assert store.count("responses") == store.count("run_metrics") == 0


def test_prompts_lacking_answers(store: FeedbackStore) -> None:
    both, one, none, held = (store.add_prompt(t, split=s) for t, s in
                             (("both", "train"), ("one", "train"), ("none", "train"), ("held", "heldout")))
    for prompt, version in ((both, "v1"), (both, "v2"), (both, "v2"), (one, "v2"), (held, "v1")):
        store.add_response(prompt, "answer", version)
    assert store.prompts_lacking_answers(["v1", "v2"]) == [one, none]
    assert store.prompts_lacking_answers(["v2", "v2"]) == [none]
    assert store.prompts_lacking_answers(["v1"], split="heldout") == []
    assert store.prompts_lacking_answers(["v3"], split="heldout") == [held]
    assert store.prompts_lacking_answers([]) == []


def test_snapshot_crosses_processes_as_json_and_stays_in_the_version(store: FeedbackStore) -> None:
    p = store.add_prompt("P")
    store.add_rating(store.add_response(p, "A", "base"), "ann", thumbs=1)
    snap = store.snapshot(include_viewer_chat=True)
    assert Snapshot.from_json(snap.to_json()) == snap  # a recipe's --snapshot and runs/<id>/snapshot.json
    store.register_version("v1-sft", None, "sft", "lora", "/x", "base", {}, snap, {})
    store.register_version("mine", None, "sdk", "lora", "/y", "base", {}, {"source": "sdk"}, {})
    assert store.get_version("v1-sft").snapshot == snap and store.get_version("v1-sft").data_snapshot == snap.to_dict()
    assert store.get_version("mine").snapshot is None and store.get_version("mine").data_snapshot == {"source": "sdk"}
    old = {"max_ids": snap.max_ids, "feedback_max_id": 1, "taken_at": snap.taken_at}  # stored before the flag existed
    assert Snapshot.from_dict(old).include_viewer_chat is False
