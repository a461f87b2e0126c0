"""`FeedbackStore`: the SQLite store behind Tuneloop (users, prompts, responses, feedback, versions, runs, audit).

The only code that writes SQL. Safe to share between Gradio worker threads and between processes (the training
process writes runs/metrics/versions to the same file): see `feedback_db.connection`. Feedback is append-only;
a reviewer judging the same item again adds a row and the latest one counts, so `snapshot()` max ids pin exactly
what a round trained on.

    store = FeedbackStore("data/tuneloop.db")
    pid = store.add_prompt("Why is the sky blue?")
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import sqlite3
import unicodedata
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from feedback_db import browse, review_queue
from feedback_db.connection import Connections, retry_locked
from feedback_db.migrations import migrate, schema_version
from feedback_db.models import (
    ApiToken,
    AuditEntry,
    Comparison,
    Correction,
    Criterion,
    CriterionAnswer,
    Demonstration,
    FeedbackCount,
    GenerationJob,
    ModelVersion,
    PreferencePair,
    Prompt,
    Ranking,
    Rating,
    Response,
    ReviewItem,
    Run,
    RunMetric,
    Snapshot,
    UnpairedLabel,
    User,
    Webhook,
    WebhookDelivery,
)
from feedback_db.passwords import hash_password, verify_password
from feedback_db.splits import DEFAULT_HELDOUT_SHARE, check_share, split_for
from feedback_db.vocab import (
    COMPARISON_SOURCES,
    CRITERION_KINDS,
    FINAL_RUN_STATUSES,
    JUDGMENT_TABLES,
    METHODS,
    RATING_SOURCES,
    REVIEW_MODES,
    ROLES,
    RUN_STATUSES,
    SPLITS,
    TECHNIQUES,
    VERSION_STATUSES,
    WEBHOOK_EVENTS,
    WINNERS,
)

# tables whose max id a snapshot pins; builders read no row past them
SNAPSHOT_TABLES = (
    "prompts",
    "responses",
    "demonstrations",
    "ratings",
    "comparisons",
    "rankings",
    "corrections",
    "preference_pairs",
    "unpaired_labels",
)
FEEDBACK_TABLES = ("ratings", "comparisons", "rankings", "corrections")
EXPORTABLE_TABLES = (
    *SNAPSHOT_TABLES, "skips", "model_versions", "runs", "run_metrics", "audit", "prompt_split_moves",
    "review_criteria", "criterion_answers", "review_guidelines", "prompt_exclusions", "webhook_deliveries",
)
VERSION_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_DUMMY_HASH = hash_password("tuneloop-timing-equaliser")
TOKEN_PREFIX = "tl_"
MAX_ID = 2**63 - 1  # SQLite's INTEGER range; a larger id is no row (not an OverflowError)
MAX_USERNAME_CHARS = 64


def now() -> str:
    return datetime.now(UTC).isoformat()


class FeedbackStore:
    def __init__(self, path: str | Path, heldout_share: float = DEFAULT_HELDOUT_SHARE) -> None:
        """`heldout_share`: share of new prompts without an explicit split that go to `heldout` (by text hash)."""
        check_share(heldout_share)
        self.path = str(path)
        self.heldout_share = heldout_share
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._db = Connections(self.path)
        conn = self._db.get()
        retry_locked(lambda: conn.execute("PRAGMA journal_mode = WAL"))
        retry_locked(lambda: migrate(conn))

    def close(self) -> None:
        self._db.close()

    def schema_version(self) -> int:
        return schema_version(self._db.get())

    def data_version(self) -> int:
        """SQLite's `PRAGMA data_version` for this thread's connection: it changes when another connection (another
        thread or process) commits. A trivial read, so a poller can check it often and re-read only on change."""
        return self._db.get().execute("PRAGMA data_version").fetchone()[0]

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Group several store calls into one all-or-nothing write transaction."""
        with self._db.write():
            yield

    def _insert(self, table: str, row: dict) -> int:
        columns = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        try:
            with self._db.write() as conn:
                return conn.execute(f"INSERT INTO {table} ({columns}) VALUES ({marks})", tuple(row.values())).lastrowid
        except sqlite3.IntegrityError as exc:
            if "FOREIGN KEY" not in str(exc):
                raise
            refs = ", ".join(f"{k}={v}" for k, v in row.items() if k.endswith("_id"))
            raise KeyError(f"{table}: no such row referenced by {refs}") from None

    def _update(self, sql: str, params: tuple) -> int:
        with self._db.write() as conn:
            return conn.execute(sql, params).rowcount

    def _query(self, sql: str, params: tuple | list = ()) -> list[sqlite3.Row]:
        return self._db.query(sql, params)

    # users ---

    def create_user(self, username: str, password: str, role: str) -> User:
        _check_username(username)
        _check(bool(password), "password must not be empty")
        _check(role in ROLES, f"role must be one of {', '.join(ROLES)}; got {role!r}")
        password_hash = hash_password(password)
        try:
            self._insert(
                "users", {"username": username, "password_hash": password_hash, "role": role, "created": now()}
            )
        except sqlite3.IntegrityError:
            raise ValueError(f"user {username!r} already exists") from None
        return self._require_user(username)

    def authenticate(self, username: str, password: str) -> User | None:
        rows = self._query("SELECT password_hash FROM users WHERE username = ?", (username,))
        if not rows:
            verify_password(password, _DUMMY_HASH)  # same work for unknown users: no username probing by timing
            return None
        user = self.get_user(username)
        if not verify_password(password, rows[0]["password_hash"]) or user is None or user.disabled:
            return None
        return user

    def get_user(self, username: str) -> User | None:
        rows = self._query("SELECT * FROM users WHERE username = ?", (username,))
        return _user(rows[0]) if rows else None

    def list_users(self) -> list[User]:
        return [_user(r) for r in self._query("SELECT * FROM users ORDER BY username")]

    def set_role(self, username: str, role: str) -> None:
        _check(role in ROLES, f"role must be one of {', '.join(ROLES)}; got {role!r}")
        self._require_changed(self._update("UPDATE users SET role = ? WHERE username = ?", (role, username)), username)

    def set_disabled(self, username: str, disabled: bool) -> None:
        changed = self._update("UPDATE users SET disabled = ? WHERE username = ?", (int(disabled), username))
        self._require_changed(changed, username)

    def set_password(self, username: str, password: str) -> None:
        _check(bool(password), "password must not be empty")
        changed = self._update(
            "UPDATE users SET password_hash = ? WHERE username = ?", (hash_password(password), username)
        )
        self._require_changed(changed, username)

    def _require_user(self, username: str) -> User:
        user = self.get_user(username)
        if user is None:
            raise KeyError(f"no user {username!r}")
        return user

    @staticmethod
    def _require_changed(rowcount: int, username: str) -> None:
        if rowcount == 0:
            raise KeyError(f"no user {username!r}")

    # REST API tokens ---

    def create_api_token(self, username: str, label: str = "") -> str:
        """A new API token for `username`, returned once; only its sha256 is stored (32 random bytes need no
        slow hash, and a per-request scrypt would cap the API at a few requests per second)."""
        self._require_user(username)
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        row = {"username": username, "label": label, "prefix": token[:8], "token_hash": _token_hash(token)}
        self._insert("api_tokens", {**row, "created": now()})
        return token

    def user_for_token(self, token: str) -> User | None:
        """The user a valid token belongs to; None for unknown or revoked tokens and disabled users."""
        rows = self._query(
            "SELECT u.* FROM api_tokens t JOIN users u ON u.username = t.username "
            "WHERE t.token_hash = ? AND t.revoked IS NULL AND u.disabled = 0",
            (_token_hash(token),),
        )
        return _user(rows[0]) if rows else None

    def list_api_tokens(self, username: str | None = None) -> list[ApiToken]:
        where, params = ("username = ?", (username,)) if username is not None else ("1", ())
        rows = self._query(
            f"SELECT id, username, label, prefix, created, revoked FROM api_tokens WHERE {where} ORDER BY id", params
        )
        return [ApiToken(**dict(r)) for r in rows]

    def revoke_api_token(self, token_id: int) -> None:
        """Revoke a token for good (revoking it again keeps the first revocation time)."""
        if self._update("UPDATE api_tokens SET revoked = COALESCE(revoked, ?) WHERE id = ?", (now(), token_id)) == 0:
            raise KeyError(f"no API token {token_id}")

    # prompts and responses ---

    def add_prompt(
        self,
        text: str,
        source: str = "manual",
        tags: Sequence[str] = (),
        split: str | None = None,
        messages: list[dict] | None = None,
    ) -> int:
        """A new prompt; without `split` it is held out by a hash of its text (`feedback_db.splits`)."""
        _check(bool(text.strip()), "prompt text must not be empty")
        split = split or split_for(text, self.heldout_share)
        _check(split in SPLITS, f"split must be 'train' or 'heldout'; got {split!r}")
        row = {"text": text, "source": source, "tags": json.dumps(list(tags)), "split": split, "created": now()}
        row["messages"] = json.dumps(messages) if messages else None
        return self._insert("prompts", row)

    def get_prompt(self, prompt_id: int) -> Prompt | None:
        if not _valid_id(prompt_id):
            return None
        rows = self._query("SELECT * FROM prompts WHERE id = ?", (prompt_id,))
        return _prompt(rows[0]) if rows else None

    def list_prompts(self, split: str | None = None, snapshot: Snapshot | None = None) -> list[Prompt]:
        where, params = _upto("prompts", snapshot)
        if split is not None:
            where, params = f"{where} AND split = ?", [*params, split]
        return [_prompt(r) for r in self._query(f"SELECT * FROM prompts WHERE {where} ORDER BY id", params)]

    def set_prompt_split(self, prompt_id: int, split: str) -> None:
        _check(split in SPLITS, f"split must be 'train' or 'heldout'; got {split!r}")
        if self._update("UPDATE prompts SET split = ? WHERE id = ?", (split, prompt_id)) == 0:
            raise KeyError(f"no prompt {prompt_id}")

    def add_response(self, prompt_id: int, text: str, model_version: str, settings: dict | None = None) -> int:
        row = {"prompt_id": prompt_id, "text": text, "model_version": model_version}
        return self._insert("responses", {**row, "settings": json.dumps(settings or {}), "created": now()})

    def get_response(self, response_id: int) -> Response | None:
        if not _valid_id(response_id):
            return None
        rows = self._query("SELECT * FROM responses WHERE id = ?", (response_id,))
        return _response(rows[0]) if rows else None

    def list_responses(self, prompt_id: int | None = None, snapshot: Snapshot | None = None) -> list[Response]:
        where, params = _upto("responses", snapshot)
        if prompt_id is not None:
            where, params = f"{where} AND prompt_id = ?", [*params, prompt_id]
        return [_response(r) for r in self._query(f"SELECT * FROM responses WHERE {where} ORDER BY id", params)]

    def _require_response(self, response_id: int) -> Response:
        response = self.get_response(response_id)
        if response is None:
            raise KeyError(f"no response {response_id}")
        return response

    # imported training data ---

    def add_demonstration(self, prompt_id: int, completion: str, source: str = "import") -> int:
        _check(bool(completion.strip()), "demonstration completion must not be empty")
        row = {"prompt_id": prompt_id, "completion": completion, "source": source, "created": now()}
        return self._insert("demonstrations", row)

    def list_demonstrations(self, snapshot: Snapshot | None = None) -> list[Demonstration]:
        return [Demonstration(**dict(r)) for r in self._rows("demonstrations", snapshot)]

    def add_preference_pair(self, prompt_id: int, chosen: str, rejected: str, source: str = "import") -> int:
        row = {"prompt_id": prompt_id, "chosen": chosen, "rejected": rejected, "source": source, "created": now()}
        return self._insert("preference_pairs", row)

    def list_preference_pairs(self, snapshot: Snapshot | None = None) -> list[PreferencePair]:
        return [PreferencePair(**dict(r)) for r in self._rows("preference_pairs", snapshot)]

    def add_unpaired_label(self, prompt_id: int, completion: str, label: bool, source: str = "import") -> int:
        row = {"prompt_id": prompt_id, "completion": completion, "label": int(label), "source": source}
        return self._insert("unpaired_labels", {**row, "created": now()})

    def list_unpaired_labels(self, snapshot: Snapshot | None = None) -> list[UnpairedLabel]:
        return [
            UnpairedLabel(**{**dict(r), "label": bool(r["label"])}) for r in self._rows("unpaired_labels", snapshot)
        ]

    def _rows(self, table: str, snapshot: Snapshot | None) -> list[sqlite3.Row]:
        where, params = _upto(table, snapshot)
        return self._query(f"SELECT * FROM {table} WHERE {where} ORDER BY id", params)

    # feedback ---

    def add_rating(
        self,
        response_id: int,
        username: str,
        thumbs: int | None = None,
        likert: int | None = None,
        comment: str = "",
        source: str = "review",
    ) -> int:
        _check(source in RATING_SOURCES, f"source must be one of {', '.join(RATING_SOURCES)}; got {source!r}")
        _check(thumbs is None or thumbs in (0, 1), f"thumbs must be 1 (up) or 0 (down); got {thumbs!r}")
        _check(likert is None or likert in range(1, 6), f"likert must be 1..5; got {likert!r}")
        _check(
            thumbs is not None or likert is not None or bool(comment.strip()),
            "a rating needs thumbs, likert or a comment",
        )
        self._require_response(response_id)
        row = {"response_id": response_id, "username": username, "thumbs": thumbs, "likert": likert}
        return self._insert("ratings", {**row, "comment": comment, "source": source, "created": now()})

    def add_comparison(
        self, response_a: int, response_b: int, winner: str, username: str, source: str = "review"
    ) -> int:
        _check(winner in WINNERS, f"winner must be one of {', '.join(WINNERS)}; got {winner!r}")
        _check(source in COMPARISON_SOURCES, f"source must be one of {', '.join(COMPARISON_SOURCES)}; got {source!r}")
        _check(response_a != response_b, "a comparison needs two different responses")
        a, b = self._require_response(response_a), self._require_response(response_b)
        _check(a.prompt_id == b.prompt_id, "compared responses must answer the same prompt")
        row = {"prompt_id": a.prompt_id, "response_a": a.id, "response_b": b.id, "version_a": a.model_version}
        row |= {"version_b": b.model_version, "winner": winner, "username": username, "created": now()}
        return self._insert("comparisons", {**row, "source": source})

    def add_ranking(self, response_ids_best_first: list[int], username: str) -> int:
        ids = list(response_ids_best_first)
        _check(len(ids) >= 2 and len(set(ids)) == len(ids), "a ranking needs two or more distinct responses")
        prompts = {self._require_response(i).prompt_id for i in ids}
        _check(len(prompts) == 1, "ranked responses must answer the same prompt")
        row = {"prompt_id": prompts.pop(), "response_ids": json.dumps(ids), "username": username, "created": now()}
        return self._insert("rankings", row)

    def add_correction(self, response_id: int, text: str, username: str) -> int:
        _check(bool(text.strip()), "a correction must not be empty")
        self._require_response(response_id)
        return self._insert(
            "corrections", {"response_id": response_id, "text": text, "username": username, "created": now()}
        )

    def list_ratings(self, snapshot: Snapshot | None = None) -> list[Rating]:
        return [Rating(**dict(r)) for r in self._rows("ratings", snapshot)]

    def list_comparisons(self, snapshot: Snapshot | None = None) -> list[Comparison]:
        return [Comparison(**dict(r)) for r in self._rows("comparisons", snapshot)]

    def list_rankings(self, snapshot: Snapshot | None = None) -> list[Ranking]:
        return [
            Ranking(**{**dict(r), "response_ids": json.loads(r["response_ids"])})
            for r in self._rows("rankings", snapshot)
        ]

    def list_corrections(self, snapshot: Snapshot | None = None) -> list[Correction]:
        return [Correction(**dict(r)) for r in self._rows("corrections", snapshot)]

    # review form: guidelines, criteria, answers, undo ---

    def set_guidelines(self, mode: str, text: str, username: str) -> None:
        _check(mode in REVIEW_MODES, f"mode must be one of {', '.join(REVIEW_MODES)}; got {mode!r}")
        with self._db.write() as conn:
            conn.execute(
                "INSERT INTO review_guidelines (mode, text, username, updated) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(mode) DO UPDATE SET text = excluded.text, username = excluded.username, "
                "updated = excluded.updated",
                (mode, text, username, now()),
            )

    def guidelines(self, mode: str) -> str | None:
        """The admins' guidelines for a queue; None = never written (the UI shows its built-in ones)."""
        rows = self._query("SELECT text FROM review_guidelines WHERE mode = ?", (mode,))
        return rows[0]["text"] if rows else None

    def add_criterion(self, name: str, description: str, kind: str, excludes: bool = False) -> Criterion:
        _check(bool(name.strip()), "a criterion needs a name")
        _check(kind in CRITERION_KINDS, f"kind must be one of {', '.join(CRITERION_KINDS)}; got {kind!r}")
        _check(not excludes or kind == "flag", "only a yes/no flag can exclude rows from training")
        row = {"name": name.strip(), "description": description.strip(), "kind": kind, "excludes": int(excludes)}
        try:
            criterion_id = self._insert("review_criteria", {**row, "created": now()})
        except sqlite3.IntegrityError:
            raise ValueError(f"a criterion named {name.strip()!r} already exists") from None
        return next(c for c in self.list_criteria(include_retired=True) if c.id == criterion_id)

    def list_criteria(self, include_retired: bool = False) -> list[Criterion]:
        where = "1" if include_retired else "retired IS NULL"
        rows = self._query(f"SELECT * FROM review_criteria WHERE {where} ORDER BY id")
        return [Criterion(**{**dict(r), "excludes": bool(r["excludes"])}) for r in rows]

    def retire_criterion(self, name: str) -> None:
        """Take a criterion off the form; its answers stay (and a flag's exclusions stay in force)."""
        sql = "UPDATE review_criteria SET retired = COALESCE(retired, ?) WHERE name = ?"
        changed = self._update(sql, (now(), name))
        if changed == 0:
            raise KeyError(f"no criterion {name!r}")

    def add_criterion_answers(self, judgment: str, judgment_id: int, username: str, answers: dict[int, int]) -> int:
        """Answers to the form's criteria that came with one judgment (call inside the judgment's transaction)."""
        _check(judgment in JUDGMENT_TABLES, f"judgment must be one of {', '.join(JUDGMENT_TABLES)}")
        criteria = {c.id: c for c in self.list_criteria()}
        prompt_id = self._judgment_prompt(judgment, judgment_id)
        for criterion_id, value in answers.items():
            criterion = criteria.get(int(criterion_id))
            _check(criterion is not None, f"no criterion {criterion_id} on the review form")
            allowed = range(1, 6) if criterion.kind == "scale" else (0, 1)
            _check(value in allowed, f"criterion {criterion.name!r}: {value!r} is not one of {list(allowed)}")
            row = {"criterion_id": criterion.id, "judgment": judgment, "judgment_id": judgment_id}
            self._insert("criterion_answers", {**row, "prompt_id": prompt_id, "value": value, "username": username,
                                               "created": now()})
        return len(answers)

    def list_criterion_answers(self) -> list[CriterionAnswer]:
        return [CriterionAnswer(**dict(r)) for r in self._query("SELECT * FROM criterion_answers ORDER BY id")]

    def excluded_prompt_ids(self, snapshot: Snapshot | None = None) -> set[int]:
        """Prompts a reviewer flagged yes on an excluding criterion (as of `snapshot`: only answers that came with
        judgments it pins), kept out of every training dataset."""
        sql = ("SELECT a.prompt_id, a.judgment, a.judgment_id FROM criterion_answers a "
               "JOIN review_criteria c ON c.id = a.criterion_id WHERE c.excludes = 1 AND a.value = 1")
        rows = self._query(sql)
        excluded = self._query("SELECT prompt_id, created, lifted FROM prompt_exclusions")
        if snapshot is None:
            return {r["prompt_id"] for r in rows} | {r["prompt_id"] for r in excluded if r["lifted"] is None}
        taken = snapshot.taken_at  # admins' exclusions as they stood when the snapshot was taken
        return {r["prompt_id"] for r in rows if r["judgment_id"] <= snapshot.max_ids[r["judgment"]]} | {
            r["prompt_id"] for r in excluded if r["created"] <= taken and (r["lifted"] is None or r["lifted"] > taken)}

    def _judgment_prompt(self, judgment: str, judgment_id: int) -> int:
        sql = {"ratings": "SELECT r.prompt_id FROM ratings x JOIN responses r ON r.id = x.response_id WHERE x.id = ?",
               "comparisons": "SELECT prompt_id FROM comparisons WHERE id = ?",
               "rankings": "SELECT prompt_id FROM rankings WHERE id = ?"}[judgment]
        rows = self._query(sql, (judgment_id,))
        if not rows:
            raise KeyError(f"no {judgment} row {judgment_id}")
        return rows[0][0]

    def undo_last_judgment(self, username: str) -> tuple[str, int]:
        """Delete `username`'s latest rating, comparison or ranking and its criteria answers; (table, id).

        Refused once a registered version trained on it (its id is within that version's data snapshot): the
        version's provenance must stay true. A reviewer changes such a judgment by judging the item again."""
        union = " UNION ALL ".join(f"SELECT '{t}' AS t, id, created FROM {t} WHERE username = :u"
                                   for t in JUDGMENT_TABLES)
        with self._db.write() as conn:
            latest = f"SELECT t, id FROM ({union}) ORDER BY created DESC LIMIT 1"
            row = conn.execute(latest, {"u": username}).fetchone()
            _check(row is not None, "you have no judgment to undo")
            table, judgment_id = row[0], row[1]
            for version in self.list_versions():
                pinned = version.snapshot.max_ids.get(table, 0) if version.snapshot else 0
                _check(judgment_id > pinned, f"version {version.name} was trained on this judgment; judge the item "
                                             "again to change it")
            conn.execute("DELETE FROM criterion_answers WHERE judgment = ? AND judgment_id = ?", (table, judgment_id))
            conn.execute(f"DELETE FROM {table} WHERE id = ?", (judgment_id,))
        return table, judgment_id

    # data browser ---

    def browse_prompts(self, f: browse.BrowseFilter, page: int = 1,
                       page_size: int = browse.PAGE_SIZE) -> tuple[list[browse.BrowseRow], int]:
        _check(f.split in (None, *SPLITS), f"split must be 'train' or 'heldout'; got {f.split!r}")
        return browse.browse(self._db.get(), f, page, page_size)

    def prompt_feedback(self, prompt_id: int) -> dict[str, list]:
        """Everything judged about one prompt: responses, ratings, comparisons, rankings, corrections, criteria
        answers and exclusions (each a list of the store's dataclasses or, for exclusions, dicts)."""
        by_response = "response_id IN (SELECT id FROM responses WHERE prompt_id = ?)"
        q = self._query
        return {
            "responses": self.list_responses(prompt_id),
            "ratings": [Rating(**dict(r)) for r in q(f"SELECT * FROM ratings WHERE {by_response}", (prompt_id,))],
            "comparisons": [Comparison(**dict(r)) for r in q("SELECT * FROM comparisons WHERE prompt_id = ?",
                                                             (prompt_id,))],
            "rankings": [Ranking(**{**dict(r), "response_ids": json.loads(r["response_ids"])})
                         for r in q("SELECT * FROM rankings WHERE prompt_id = ?", (prompt_id,))],
            "corrections": [Correction(**dict(r)) for r in q(f"SELECT * FROM corrections WHERE {by_response}",
                                                             (prompt_id,))],
            "criteria": [CriterionAnswer(**dict(r)) for r in q("SELECT * FROM criterion_answers WHERE prompt_id = ?",
                                                               (prompt_id,))],
            "exclusions": [dict(r) for r in q("SELECT * FROM prompt_exclusions WHERE prompt_id = ? ORDER BY id",
                                              (prompt_id,))],
        }

    def exclude_prompt(self, prompt_id: int, username: str, reason: str) -> None:
        """Keep a prompt and all its rows out of training (soft: nothing is deleted; `restore_prompt` undoes it)."""
        _check(bool(reason.strip()), "say why the prompt is excluded")
        with self._db.write():
            _check(self.get_prompt(prompt_id) is not None, f"no prompt {prompt_id}")
            _check(not self._query("SELECT 1 FROM prompt_exclusions WHERE prompt_id = ? AND lifted IS NULL",
                                   (prompt_id,)), f"prompt {prompt_id} is already excluded")
            row = {"prompt_id": prompt_id, "reason": reason.strip(), "username": username, "created": now()}
            self._insert("prompt_exclusions", row)

    def restore_prompt(self, prompt_id: int, username: str) -> None:
        changed = self._update("UPDATE prompt_exclusions SET lifted = ?, lifted_by = ? WHERE prompt_id = ? AND "
                               "lifted IS NULL", (now(), username, prompt_id))
        _check(changed > 0, f"prompt {prompt_id} is not excluded")

    def move_prompt(self, prompt_id: int, split: str, username: str) -> None:
        """Move a prompt between train and held-out, recorded in `prompt_split_moves`."""
        _check(split in SPLITS, f"split must be 'train' or 'heldout'; got {split!r}")
        with self._db.write():
            prompt = self.get_prompt(prompt_id)
            _check(prompt is not None, f"no prompt {prompt_id}")
            _check(prompt.split != split, f"prompt {prompt_id} is already in {split}")
            self._update("UPDATE prompts SET split = ? WHERE id = ?", (split, prompt_id))
            row = {"prompt_id": prompt_id, "from_split": prompt.split, "to_split": split}
            self._insert("prompt_split_moves", {**row, "reason": f"data browser ({username})", "created": now()})

    # webhooks ---

    def add_webhook(self, url: str, secret: str, events: Sequence[str], username: str) -> int:
        _check(re.fullmatch(r"https?://[^\s]{1,2000}", url) is not None, f"url must be http(s)://...; got {url!r}")
        _check(len(secret) >= 16, "secret must be at least 16 characters")
        _check(bool(events) and set(events) <= set(WEBHOOK_EVENTS),
               f"events must be some of {', '.join(WEBHOOK_EVENTS)}; got {list(events)}")
        row = {"url": url, "secret": secret, "events": json.dumps(list(events)), "username": username}
        return self._insert("webhooks", {**row, "created": now()})

    def list_webhooks(self) -> list[Webhook]:
        rows = self._query("SELECT * FROM webhooks WHERE removed IS NULL ORDER BY id")
        return [Webhook(**{**dict(r), "events": json.loads(r["events"])}) for r in rows]

    def remove_webhook(self, webhook_id: int) -> None:
        if self._update("UPDATE webhooks SET removed = ? WHERE id = ? AND removed IS NULL", (now(), webhook_id)) == 0:
            raise KeyError(f"no webhook {webhook_id}")

    def enqueue_delivery(self, webhook_id: int, event: str, event_key: str, payload: dict) -> bool:
        """Queue one delivery; False when this hook already has one for `event_key`."""
        stamp = now()
        with self._db.write() as conn:
            cursor = conn.execute(
                "INSERT OR IGNORE INTO webhook_deliveries (webhook_id, event, event_key, payload, status, "
                "next_attempt, created) VALUES (?, ?, ?, ?, 'pending', ?, ?)",
                (webhook_id, event, event_key, json.dumps(payload), stamp, stamp),
            )
            return cursor.rowcount == 1

    def due_deliveries(self, at: str) -> list[WebhookDelivery]:
        rows = self._query("SELECT * FROM webhook_deliveries WHERE status = 'pending' AND next_attempt <= ? "
                           "ORDER BY id", (at,))
        return [_delivery(r) for r in rows]

    def record_attempt(self, delivery_id: int, http_status: int | None, error: str, next_attempt: str | None,
                       delivered: bool) -> None:
        """One attempt's outcome: delivered, retried at `next_attempt`, or (None) failed for good."""
        status = "delivered" if delivered else ("pending" if next_attempt else "failed")
        self._update(
            "UPDATE webhook_deliveries SET attempts = attempts + 1, status = ?, http_status = ?, last_error = ?, "
            "next_attempt = COALESCE(?, next_attempt), delivered = ? WHERE id = ?",
            (status, http_status, error[:500], next_attempt, now() if delivered else None, delivery_id),
        )

    def list_deliveries(self, limit: int = 100) -> list[WebhookDelivery]:
        rows = self._query("SELECT * FROM webhook_deliveries ORDER BY id DESC LIMIT ?", (limit,))
        return [_delivery(r) for r in rows]

    # review queue ---

    def next_item(self, username: str, mode: str, annotators_per_item: int = 1) -> ReviewItem | None:
        """The next item for `username`: not yet judged or skipped by them, fewest judgments first."""
        _check(mode in REVIEW_MODES, f"mode must be one of {', '.join(REVIEW_MODES)}; got {mode!r}")
        _check(annotators_per_item >= 1, "annotators_per_item must be at least 1")
        candidates = review_queue.candidates(self._db.get(), username, mode, annotators_per_item, limit=1)
        if not candidates:
            return None
        ids = review_queue.shuffled(candidates[0])
        responses = [self._require_response(i) for i in ids]
        return ReviewItem(mode=mode, prompt=self.get_prompt(responses[0].prompt_id), responses=responses)

    def queue_progress(self, username: str, mode: str, annotators_per_item: int = 1) -> tuple[int, int]:
        """(items `username` judged in this mode, items still waiting for them)."""
        _check(mode in REVIEW_MODES, f"mode must be one of {', '.join(REVIEW_MODES)}; got {mode!r}")
        conn = self._db.get()
        return (review_queue.judged_count(conn, username, mode),
                review_queue.candidate_count(conn, username, mode, annotators_per_item))

    def skip_item(self, username: str, mode: str, response_ids: list[int]) -> None:
        """Never serve this item (the responses of a `ReviewItem`) to `username` again."""
        _check(mode in REVIEW_MODES, f"mode must be one of {', '.join(REVIEW_MODES)}; got {mode!r}")
        key = review_queue.item_key(mode, response_ids, self._require_response(response_ids[0]).prompt_id)
        with self._db.write() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO skips (username, mode, item_key, created) VALUES (?, ?, ?, ?)",
                (username, mode, key, now()),
            )

    # model versions ---

    def register_version(
        self,
        name: str,
        parent: str | None,
        method: str,
        technique: str,
        path: str,
        base_model: str,
        config: dict,
        data_snapshot: Snapshot | dict | None,
        metrics: dict,
        status: str = "candidate",
    ) -> ModelVersion:
        """`data_snapshot`: the Snapshot the version was trained on, or free-form provenance (SDK adapters)."""
        _check(VERSION_NAME.fullmatch(name) is not None and name != "base", f"invalid version name {name!r}")
        _check(method in METHODS, f"method must be one of {', '.join(METHODS)}; got {method!r}")
        _check(technique in TECHNIQUES, f"technique must be one of {', '.join(TECHNIQUES)}; got {technique!r}")
        _check(status in VERSION_STATUSES, f"status must be one of {', '.join(VERSION_STATUSES)}; got {status!r}")
        row = {"name": name, "parent": parent, "method": method, "technique": technique, "path": str(path)}
        row |= {"base_model": base_model, "config": json.dumps(config), "data_snapshot": json.dumps(
            data_snapshot.to_dict() if isinstance(data_snapshot, Snapshot) else data_snapshot)}
        row |= {"metrics": json.dumps(metrics), "status": "candidate", "created": now()}
        with self._db.write():
            try:
                self._insert("model_versions", row)
            except sqlite3.IntegrityError:
                raise ValueError(f"version {name!r} already exists") from None
            if status == "active":
                self.set_active(name)
            elif status != "candidate":
                self.set_version_status(name, status)
        return self.get_version(name)

    def next_version_name(self, method: str) -> str:
        numbers = [int(m.group(1)) for (n,) in self._query("SELECT name FROM model_versions") if (m := _VN.match(n))]
        return f"v{max(numbers, default=0) + 1}-{method}"

    def get_version(self, name: str) -> ModelVersion | None:
        rows = self._query("SELECT * FROM model_versions WHERE name = ?", (name,))
        return _version(rows[0]) if rows else None

    def list_versions(self) -> list[ModelVersion]:
        return [_version(r) for r in self._query("SELECT * FROM model_versions ORDER BY id")]

    def update_version_metrics(self, name: str, metrics: dict) -> None:
        """Merge `metrics` into the version's metrics."""
        with self._db.write():
            version = self._require_version(name)
            merged = json.dumps({**version.metrics, **metrics})
            self._update("UPDATE model_versions SET metrics = ? WHERE name = ?", (merged, name))

    def set_active(self, name: str | None, username: str = "system") -> None:
        """Serve `name` (None = the base model); the previously active version becomes archived."""
        with self._db.write():
            if name is not None:
                version = self._require_version(name)
                _check(version.method != "reward", f"{name!r} is a reward model and cannot be served")
            previous = self.active_version()
            self._update("UPDATE model_versions SET status = 'archived' WHERE status = 'active'", ())
            if name is not None:
                self._update(
                    "UPDATE model_versions SET status = 'active', activated = ? WHERE name = ?", (now(), name)
                )
            detail = {"version": name or "base", "previous": previous.name if previous else "base"}
            self.audit(username, "activate_version", detail)

    def active_version(self) -> ModelVersion | None:
        rows = self._query("SELECT * FROM model_versions WHERE status = 'active'")
        return _version(rows[0]) if rows else None

    def previously_active(self) -> str | None:
        """The version that served before the last activation ("base" for the base model); None before any."""
        rows = self._query("SELECT detail FROM audit WHERE action = 'activate_version' ORDER BY id DESC LIMIT 1")
        return json.loads(rows[0]["detail"])["previous"] if rows else None

    def archive_version(self, name: str) -> None:
        self.set_version_status(name, "archived")

    def set_version_status(self, name: str, status: str) -> None:
        _check(status in VERSION_STATUSES, f"status must be one of {', '.join(VERSION_STATUSES)}; got {status!r}")
        _check(status != "active", "use set_active() to activate a version")
        if self._update("UPDATE model_versions SET status = ? WHERE name = ?", (status, name)) == 0:
            raise KeyError(f"no version {name!r}")

    def _require_version(self, name: str) -> ModelVersion:
        version = self.get_version(name)
        if version is None:
            raise KeyError(f"no version {name!r}")
        return version

    # runs ---

    def create_run(self, config: dict, stages: list[str], username: str) -> int:
        row = {"config": json.dumps(config), "stages": json.dumps(list(stages)), "username": username}
        return self._insert("runs", {**row, "status": "queued", "created": now(), "updated": now()})

    def update_run(
        self,
        run_id: int,
        *,
        status: str | None = None,
        pid: int | None = None,
        stage: str | None = None,
        error: str | None = None,
        log_tail: str | None = None,
        versions: list[str] | None = None,
    ) -> None:
        """Set the given fields (None = leave as is); a final status also stamps `finished`."""
        _check(status is None or status in RUN_STATUSES, f"status must be one of {', '.join(RUN_STATUSES)}")
        fields = {"status": status, "pid": pid, "stage": stage, "error": error, "log_tail": log_tail}
        fields["versions"] = None if versions is None else json.dumps(list(versions))
        changes = {k: v for k, v in fields.items() if v is not None} | {"updated": now()}
        if status in FINAL_RUN_STATUSES:
            changes["finished"] = changes["updated"]
        assignments = ", ".join(f"{k} = ?" for k in changes)
        if self._update(f"UPDATE runs SET {assignments} WHERE id = ?", (*changes.values(), run_id)) == 0:
            raise KeyError(f"no run {run_id}")

    def add_run_metrics(self, run_id: int, step: int, stage: str, metrics: dict) -> int:
        row = {"run_id": run_id, "step": step, "stage": stage, "metrics": json.dumps(metrics), "created": now()}
        return self._insert("run_metrics", row)

    def get_run(self, run_id: int) -> Run:
        rows = self._query("SELECT * FROM runs WHERE id = ?", (run_id,))
        if not rows:
            raise KeyError(f"no run {run_id}")
        return _run(rows[0])

    def list_runs(self, limit: int | None = None) -> list[Run]:
        rows = self._query("SELECT * FROM runs ORDER BY id DESC LIMIT ?", (-1 if limit is None else limit,))
        return [_run(r) for r in rows]

    def run_metrics(self, run_id: int, after_id: int = 0) -> list[RunMetric]:
        """Metrics rows of a run in logging order; `after_id` returns only rows newer than one already seen."""
        rows = self._query("SELECT * FROM run_metrics WHERE run_id = ? AND id > ? ORDER BY id", (run_id, after_id))
        return [RunMetric(**{**dict(r), "metrics": json.loads(r["metrics"])}) for r in rows]

    def mark_interrupted_runs(self, keep: Sequence[int] = ()) -> int:
        """At app start: runs left queued/running by a previous app process become `interrupted`, except `keep`
        (rounds still training in a live process of their own)."""
        stamp = now()
        marks = ", ".join("?" for _ in keep)
        return self._update(
            "UPDATE runs SET status = 'interrupted', updated = ?, finished = ? WHERE status IN ('queued', 'running')"
            f" AND id NOT IN ({marks})",
            (stamp, stamp, *keep),
        )

    # generation jobs ---

    def create_generation_job(self, username: str, mode: str, versions: list[str], total: int) -> int:
        stamp = now()
        return self._insert("generation_jobs", {"username": username, "mode": mode, "versions": json.dumps(versions),
                                                "total": total, "status": "queued", "created": stamp,
                                                "updated": stamp})

    def update_generation_job(self, job_id: int, status: str, done: int = 0, new_tokens: int = 0,
                              tokens_per_s: float = 0.0, eta_s: float | None = None, error: str | None = None) -> None:
        """Progress or the end of a job; a cancel request (`cancelling`) is kept until the job ends."""
        self._update("UPDATE generation_jobs SET status = CASE WHEN status = 'cancelling' AND ? = 'running' "
                     "THEN status ELSE ? END, done = ?, new_tokens = ?, tokens_per_s = ?, eta_s = ?, error = ?, "
                     "updated = ? WHERE id = ?",
                     (status, status, done, new_tokens, tokens_per_s, eta_s, error, now(), job_id))

    def cancel_generation_job(self, job_id: int) -> bool:
        """Ask a queued or running job to stop; False when it has already ended."""
        return self._update("UPDATE generation_jobs SET status = 'cancelling', updated = ? WHERE id = ? AND status "
                            "IN ('queued', 'running')", (now(), job_id)) > 0

    def get_generation_job(self, job_id: int) -> GenerationJob | None:
        rows = self._query("SELECT * FROM generation_jobs WHERE id = ?", (job_id,))
        return _generation_job(rows[0]) if rows else None

    def latest_generation_job(self) -> GenerationJob | None:
        rows = self._query("SELECT * FROM generation_jobs ORDER BY id DESC LIMIT 1")
        return _generation_job(rows[0]) if rows else None

    def mark_interrupted_generation_jobs(self) -> int:
        """At app start: jobs a previous app process left unfinished become `interrupted`."""
        return self._update("UPDATE generation_jobs SET status = 'interrupted', updated = ? WHERE status IN "
                            "('queued', 'running', 'cancelling')", (now(),))

    # snapshot, audit, stats, export ---

    def snapshot(self, include_viewer_chat: bool = False) -> Snapshot:
        """The max id of every table the dataset builders read, taken in one read transaction, and whether
        viewers' chat thumbs count (an admin's choice per round; off by default)."""
        conn = self._db.get()
        union = " UNION ALL ".join(f"SELECT '{t}', COALESCE(MAX(id), 0) FROM {t}" for t in SNAPSHOT_TABLES)
        max_ids = {table: max_id for table, max_id in retry_locked(lambda: conn.execute(union).fetchall())}
        feedback_max_id = max(max_ids[t] for t in FEEDBACK_TABLES)
        return Snapshot(max_ids, feedback_max_id, now(), include_viewer_chat)

    def audit(self, username: str, action: str, detail: dict) -> int:
        row = {"username": username, "action": action, "detail": json.dumps(detail), "created": now()}
        return self._insert("audit", row)

    def list_audit(self, limit: int = 100) -> list[AuditEntry]:
        rows = self._query("SELECT * FROM audit ORDER BY id DESC LIMIT ?", (limit,))
        return [AuditEntry(**{**dict(r), "detail": json.loads(r["detail"])}) for r in rows]

    def feedback_counts(self) -> list[FeedbackCount]:
        """Judgments per UTC day, mode (rating|comparison|ranking|correction) and reviewer."""
        union = " UNION ALL ".join(
            f"SELECT substr(created, 1, 10) AS day, '{t[:-1]}' AS mode, username FROM {t}" for t in FEEDBACK_TABLES
        )
        rows = self._query(
            f"SELECT day, mode, username, COUNT(*) AS count FROM ({union}) GROUP BY day, mode, username "
            "ORDER BY day, mode, username"
        )
        return [FeedbackCount(**dict(r)) for r in rows]

    def table_rows(self, table: str) -> list[dict]:
        """Every row of a table as stored (JSON columns as text), for raw exports. Password hashes never leave."""
        _check(table in EXPORTABLE_TABLES, f"table must be one of {', '.join(EXPORTABLE_TABLES)}; got {table!r}")
        return [dict(r) for r in self._query(f"SELECT * FROM {table} ORDER BY id")]

    def count(self, table: str) -> int:
        _check(table in (*EXPORTABLE_TABLES, "users"), f"unknown table {table!r}")
        return self._query(f"SELECT COUNT(*) FROM {table}")[0][0]


_VN = re.compile(r"v(\d+)-")


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


def _valid_id(value: int) -> bool:
    return isinstance(value, int) and 0 < value <= MAX_ID


def _check_username(username: str) -> None:
    """Printable names only: control, format (bidi overrides, zero-width) and separator characters would let one
    name pose as another in every list and audit entry."""
    _check(bool(username.strip()), "username must not be empty")
    _check(len(username) <= MAX_USERNAME_CHARS, f"username must have at most {MAX_USERNAME_CHARS} characters")
    _check(username == username.strip(), "username must not start or end with spaces")
    bad = [c for c in username if unicodedata.category(c)[0] in "CZ" and c != " "]
    _check(not bad, f"username must not contain control or invisible characters (found U+{ord(bad[0]):04X})"
           if bad else "")


def _upto(table: str, snapshot: Snapshot | None) -> tuple[str, list]:
    if snapshot is None:
        return "1", []
    return "id <= ?", [snapshot.max_ids[table]]


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _user(row: sqlite3.Row) -> User:
    return User(row["id"], row["username"], row["role"], bool(row["disabled"]), row["created"])


def _prompt(row: sqlite3.Row) -> Prompt:
    messages = json.loads(row["messages"]) if row["messages"] else None
    return Prompt(
        row["id"], row["text"], row["source"], tuple(json.loads(row["tags"])), row["split"], row["created"], messages
    )


def _response(row: sqlite3.Row) -> Response:
    return Response(**{**dict(row), "settings": json.loads(row["settings"])})


def _version(row: sqlite3.Row) -> ModelVersion:
    decoded = {k: json.loads(row[k]) for k in ("config", "data_snapshot", "metrics")}
    return ModelVersion(**{**dict(row), **decoded})


def _delivery(row: sqlite3.Row) -> WebhookDelivery:
    return WebhookDelivery(**{**dict(row), "payload": json.loads(row["payload"])})


def _run(row: sqlite3.Row) -> Run:
    decoded = {k: json.loads(row[k]) for k in ("config", "stages", "versions")}
    return Run(**{**dict(row), **decoded})


def _generation_job(row: sqlite3.Row) -> GenerationJob:
    return GenerationJob(**{**dict(row), "versions": json.loads(row["versions"])})
