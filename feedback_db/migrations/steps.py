"""The schema's steps, in order: each `@MIGRATIONS()` function is one schema version.

`m001_initial` (the DDL in m001_initial.sql) is schema version 1; every later change is a new function appended
below (never edit an applied one: sqlite-utils records applied steps by function name, and the order here is the
order they run in). The runner is `feedback_db.migrations.migrate`.
"""

from __future__ import annotations

from pathlib import Path

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

MIGRATIONS = Migrations("tuneloop")


@MIGRATIONS()
def m001_initial(db: Database) -> None:
    """Schema version 1: the tables of the first release (m001_initial.sql)."""
    _execute_all(db, (Path(__file__).parent / "m001_initial.sql").read_text())


@MIGRATIONS()
def m002_review_skips(db: Database) -> None:
    """Skipped review items, and indexes for the per-reviewer queue queries."""
    _execute_all(
        db,
        """
        CREATE TABLE skips (
            id INTEGER PRIMARY KEY,
            username TEXT NOT NULL,
            mode TEXT NOT NULL CHECK (mode IN ('single', 'pairwise', 'ranking')),
            item_key TEXT NOT NULL,
            created TEXT NOT NULL,
            UNIQUE (username, mode, item_key)
        );
        CREATE INDEX idx_ratings_user ON ratings(username, response_id);
        CREATE INDEX idx_comparisons_pair ON comparisons(response_a, response_b);
        CREATE INDEX idx_rankings_prompt ON rankings(prompt_id);
        CREATE INDEX idx_prompts_text ON prompts(text);
        """,
    )


@MIGRATIONS()
def m003_prompt_messages(db: Database) -> None:
    """Imported multi-turn prompts keep their whole conversation (JSON); NULL = a single user turn."""
    db["prompts"].add_column("messages", str)


@MIGRATIONS()
def m004_api_tokens(db: Database) -> None:
    """Per-user tokens for the REST API, stored only as a sha256 of the token (`prefix` identifies it in lists)."""
    _execute_all(
        db,
        """
        CREATE TABLE api_tokens (
            id INTEGER PRIMARY KEY,
            username TEXT NOT NULL REFERENCES users(username),
            label TEXT NOT NULL DEFAULT '',
            prefix TEXT NOT NULL,
            token_hash TEXT NOT NULL UNIQUE,
            created TEXT NOT NULL,
            revoked TEXT
        );
        CREATE INDEX idx_api_tokens_user ON api_tokens(username);
        """,
    )


@MIGRATIONS()
def m007_generation_jobs(db: Database) -> None:
    """Candidate-generation jobs: what they answer and how far they got, so progress survives a page reload."""
    _execute_all(
        db,
        """
        CREATE TABLE generation_jobs (
            id INTEGER PRIMARY KEY,
            username TEXT NOT NULL,
            mode TEXT NOT NULL,
            versions TEXT NOT NULL,
            total INTEGER NOT NULL,
            done INTEGER NOT NULL DEFAULT 0,
            new_tokens INTEGER NOT NULL DEFAULT 0,
            tokens_per_s REAL NOT NULL DEFAULT 0,
            eta_s REAL,
            status TEXT NOT NULL CHECK (status IN ('queued', 'running', 'cancelling', 'cancelled', 'done', 'failed',
                                                   'interrupted')),
            error TEXT,
            created TEXT NOT NULL,
            updated TEXT NOT NULL
        );
        """,
    )


@MIGRATIONS()
def m007_review_queue_indexes(db: Database) -> None:
    """Indexes for the single-answer queue's per-item judge counts (review_queue._SINGLE_AT)."""
    _execute_all(
        db,
        """
        CREATE INDEX idx_ratings_response_user ON ratings(response_id, username);
        CREATE INDEX idx_corrections_response_user ON corrections(response_id, username);
        CREATE INDEX idx_corrections_user ON corrections(username, response_id);
        """,
    )


@MIGRATIONS()
def m005_heldout_split(db: Database) -> None:
    """Hold out the default share of existing train prompts by text hash, as new prompts are; recorded in
    `prompt_split_moves`. A prompt stays where it is when a registered version trained on its rows (any of its
    training rows or feedback has an id within that version's data snapshot): moving it would leak training data
    into the held-out set."""
    import json
    from datetime import UTC, datetime

    from feedback_db.splits import DEFAULT_HELDOUT_SHARE, split_for

    _execute_all(
        db,
        """
        CREATE TABLE prompt_split_moves (
            id INTEGER PRIMARY KEY,
            prompt_id INTEGER NOT NULL REFERENCES prompts(id),
            from_split TEXT NOT NULL,
            to_split TEXT NOT NULL,
            reason TEXT NOT NULL,
            created TEXT NOT NULL
        );
        CREATE INDEX idx_prompts_split ON prompts(split)
        """,
    )
    used: set[int] = set()
    for (snapshot,) in db.execute("SELECT data_snapshot FROM model_versions").fetchall():
        max_ids = json.loads(snapshot or "{}").get("max_ids")
        if max_ids:
            used |= {row[0] for row in db.execute(_USED_PROMPTS, max_ids).fetchall()}
    created = datetime.now(UTC).isoformat()
    for prompt_id, text in db.execute("SELECT id, text FROM prompts WHERE split = 'train' ORDER BY id").fetchall():
        if prompt_id not in used and split_for(text, DEFAULT_HELDOUT_SHARE) == "heldout":
            db.execute("UPDATE prompts SET split = 'heldout' WHERE id = ?", [prompt_id])
            db.execute(
                "INSERT INTO prompt_split_moves (prompt_id, from_split, to_split, reason, created) "
                "VALUES (?, 'train', 'heldout', 'm005: held-out share by text hash', ?)",
                [prompt_id, created],
            )


# prompts with a row some version trained on: named parameters are one snapshot's max ids per table
_USED_PROMPTS = """
SELECT prompt_id FROM demonstrations WHERE id <= :demonstrations
UNION SELECT prompt_id FROM preference_pairs WHERE id <= :preference_pairs
UNION SELECT prompt_id FROM unpaired_labels WHERE id <= :unpaired_labels
UNION SELECT prompt_id FROM comparisons WHERE id <= :comparisons
UNION SELECT prompt_id FROM rankings WHERE id <= :rankings
UNION SELECT r.prompt_id FROM ratings x JOIN responses r ON r.id = x.response_id WHERE x.id <= :ratings
UNION SELECT r.prompt_id FROM corrections x JOIN responses r ON r.id = x.response_id WHERE x.id <= :corrections
"""


@MIGRATIONS()
def m008_comparison_source(db: Database) -> None:
    """Where a blind A/B vote came from (review queue, arena, REST API): the leaderboard counts them all, the
    arena's own history reads its rows back."""
    db.execute("ALTER TABLE comparisons ADD COLUMN source TEXT NOT NULL DEFAULT 'review'")


@MIGRATIONS()
def m008_review_form(db: Database) -> None:
    """The configurable review form: Markdown guidelines per queue, optional criteria (a 1–5 scale or a yes/no flag;
    a flag may exclude what it marks from training), and the reviewers' answers, tied to the judgment they came
    with."""
    _execute_all(
        db,
        """
        CREATE TABLE review_guidelines (
            id INTEGER PRIMARY KEY,
            mode TEXT NOT NULL UNIQUE CHECK (mode IN ('single', 'pairwise', 'ranking')),
            text TEXT NOT NULL,
            username TEXT NOT NULL,
            updated TEXT NOT NULL
        );
        CREATE TABLE review_criteria (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            description TEXT NOT NULL DEFAULT '',
            kind TEXT NOT NULL CHECK (kind IN ('scale', 'flag')),
            excludes INTEGER NOT NULL DEFAULT 0,
            retired TEXT,
            created TEXT NOT NULL
        );
        CREATE TABLE criterion_answers (
            id INTEGER PRIMARY KEY,
            criterion_id INTEGER NOT NULL REFERENCES review_criteria(id),
            judgment TEXT NOT NULL CHECK (judgment IN ('ratings', 'comparisons', 'rankings')),
            judgment_id INTEGER NOT NULL,
            prompt_id INTEGER NOT NULL REFERENCES prompts(id),
            value INTEGER NOT NULL,
            username TEXT NOT NULL,
            created TEXT NOT NULL
        );
        CREATE INDEX idx_criterion_answers_judgment ON criterion_answers(judgment, judgment_id)
        """,
    )


@MIGRATIONS()
def m008_prompt_exclusions(db: Database) -> None:
    """Admins keep prompts out of training from the data browser: soft (rows stay), audited (who, why, when) and
    reversible (`lifted`)."""
    _execute_all(
        db,
        """
        CREATE TABLE prompt_exclusions (
            id INTEGER PRIMARY KEY,
            prompt_id INTEGER NOT NULL REFERENCES prompts(id),
            reason TEXT NOT NULL,
            username TEXT NOT NULL,
            created TEXT NOT NULL,
            lifted TEXT,
            lifted_by TEXT
        );
        CREATE INDEX idx_prompt_exclusions_prompt ON prompt_exclusions(prompt_id)
        """,
    )


@MIGRATIONS()
def m008_webhooks(db: Database) -> None:
    """Outgoing webhooks (URL, signing secret, events) and their delivery log; one delivery per hook and event."""
    _execute_all(
        db,
        """
        CREATE TABLE webhooks (
            id INTEGER PRIMARY KEY,
            url TEXT NOT NULL,
            secret TEXT NOT NULL,
            events TEXT NOT NULL,
            username TEXT NOT NULL,
            created TEXT NOT NULL,
            removed TEXT
        );
        CREATE TABLE webhook_deliveries (
            id INTEGER PRIMARY KEY,
            webhook_id INTEGER NOT NULL REFERENCES webhooks(id),
            event TEXT NOT NULL,
            event_key TEXT NOT NULL,
            payload TEXT NOT NULL,
            status TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt TEXT NOT NULL,
            http_status INTEGER,
            last_error TEXT NOT NULL DEFAULT '',
            created TEXT NOT NULL,
            delivered TEXT,
            UNIQUE (webhook_id, event_key)
        );
        CREATE INDEX idx_webhook_deliveries_due ON webhook_deliveries(status, next_attempt)
        """,
    )


@MIGRATIONS()
def m006_rating_source(db: Database) -> None:
    """Where each rating came from (review, api, chat, viewer_chat): viewers' chat thumbs are kept apart."""
    db.execute("ALTER TABLE ratings ADD COLUMN source TEXT NOT NULL DEFAULT 'review'")


@MIGRATIONS()
def m009_viewer_arena_votes(db: Database) -> None:
    """Viewers' arena votes get source `viewer_arena` (like their chat thumbs, `viewer_chat`): they train only when
    an admin includes viewers' chat feedback. Votes stored before this are relabelled by the voter's current role."""
    db.execute("UPDATE comparisons SET source = 'viewer_arena' WHERE source = 'arena' AND username IN "
               "(SELECT username FROM users WHERE role = 'viewer')")


@MIGRATIONS()
def m010_reviewer_indexes(db: Database) -> None:
    """Indexes for one reviewer's counts and agreement (read after every judgment in the review tab) and the
    pairwise queue's per-reviewer counts: comparisons and rankings by reviewer, comparisons by prompt."""
    _execute_all(
        db,
        """
        CREATE INDEX idx_comparisons_user ON comparisons(username, response_a, response_b);
        CREATE INDEX idx_rankings_user ON rankings(username, prompt_id);
        CREATE INDEX idx_comparisons_prompt ON comparisons(prompt_id)
        """,
    )


def _execute_all(db: Database, script: str) -> None:
    # not executescript(): it COMMITs first, which would end migrate()'s locking transaction
    for statement in script.split(";"):
        if statement.strip():
            db.execute(statement)
