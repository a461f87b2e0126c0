"""Upgrading a schema-version-1 file that holds data to the current schema, in place."""

from pathlib import Path

from feedback_db import FeedbackStore
from feedback_db.connection import open_connection
from feedback_db.migrations import MIGRATIONS, migrate

V1_ROWS = [
    "INSERT INTO users VALUES (1, 'ann', 'scrypt$x', 'reviewer', 0, '2026-01-01T00:00:00+00:00')",
    "INSERT INTO prompts VALUES (1, 'Old question', 'manual', '[\"t\"]', 'train', '2026-01-01T00:00:00+00:00')",
    "INSERT INTO responses VALUES (1, 1, 'old answer', 'base', '{}', '2026-01-01T00:00:00+00:00')",
    "INSERT INTO responses VALUES (2, 1, 'new answer', 'v1-sft', '{}', '2026-01-01T00:00:00+00:00')",
    "INSERT INTO ratings VALUES (1, 1, 'ann', 1, 5, 'good', '2026-01-01T00:00:00+00:00')",
    "INSERT INTO comparisons VALUES (1, 1, 2, 1, 'v1-sft', 'base', 'a', 'ann', '2026-01-01T00:00:00+00:00')",
]


def test_v1_file_with_data_upgrades_in_place(tmp_path: Path) -> None:
    path = str(tmp_path / "old.db")
    conn = open_connection(path)
    assert migrate(conn, stop_before="m002_review_skips") == 1
    for sql in V1_ROWS:
        conn.execute(sql)
    assert "skips" not in {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
    conn.close()

    store = FeedbackStore(path)
    assert store.schema_version() == len(MIGRATIONS._migrations)
    prompt = store.get_prompt(1)
    assert (prompt.text, prompt.tags, prompt.messages) == ("Old question", ("t",), None)
    assert [r.text for r in store.list_responses(1)] == ["old answer", "new answer"]
    assert [(r.thumbs, r.likert, r.comment, r.source) for r in store.list_ratings()] == [(1, 5, "good", "review")]
    assert (store.list_comparisons()[0].winner, store.list_comparisons()[0].source) == ("a", "review")
    assert store.get_user("ann").role == "reviewer"
    # what the later migrations added works on the upgraded file
    store.skip_item("ann", "pairwise", [1, 2])
    assert store.next_item("ann", "pairwise") is None
    multi = store.add_prompt(
        "Go on", messages=[{"role": "user", "content": "Hi"}, {"role": "user", "content": "Go on"}]
    )
    assert store.get_prompt(multi).messages[0]["content"] == "Hi"
    token = store.create_api_token("ann", "upgraded")
    assert store.user_for_token(token).username == "ann"
    store.close()
    assert FeedbackStore(path).schema_version() == len(MIGRATIONS._migrations)  # reopening applies nothing twice


def test_two_stores_opening_a_fresh_file_migrate_once(tmp_path: Path) -> None:
    first, second = FeedbackStore(tmp_path / "db.sqlite"), FeedbackStore(tmp_path / "db.sqlite")
    assert first.schema_version() == second.schema_version() == len(MIGRATIONS._migrations)
    first.add_prompt("Q")
    assert [p.text for p in second.list_prompts()] == ["Q"]


def test_viewers_arena_votes_stored_before_the_split_are_relabelled(tmp_path: Path) -> None:
    path = str(tmp_path / "old.db")
    conn = open_connection(path)
    migrate(conn, stop_before="m009_viewer_arena_votes")  # a file from before viewers' arena votes were apart
    for name, role in (("vic", "viewer"), ("rita", "reviewer")):
        conn.execute("INSERT INTO users (username, password_hash, role, disabled, created) VALUES "
                     "(?, 'scrypt$x', ?, 0, '2026-01-01T00:00:00+00:00')", (name, role))
    conn.execute("INSERT INTO prompts (text, source, tags, split, created) VALUES ('Q', 'arena', '[]', 'train', '')")
    for i in (1, 2):
        conn.execute("INSERT INTO responses (prompt_id, text, model_version, settings, created) VALUES "
                     "(1, ?, 'base', '{}', '')", (f"answer {i}",))
    for name, source in (("vic", "arena"), ("rita", "arena"), ("vic", "review")):
        conn.execute("INSERT INTO comparisons (prompt_id, response_a, response_b, version_a, version_b, winner, "
                     "username, created, source) VALUES (1, 1, 2, 'base', 'base', 'a', ?, '', ?)", (name, source))
    conn.close()
    store = FeedbackStore(path)
    assert [(c.username, c.source) for c in store.list_comparisons()] == [
        ("vic", "viewer_arena"), ("rita", "arena"), ("vic", "review")]
    store.close()
