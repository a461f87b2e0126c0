"""The store's core: one `Connections` manager (feedback_db.connection) per store, row insert/update/query helpers,
and the checks every part of the store shares (values from feedback_db.vocab, ids in SQLite's range)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from feedback_db.connection import Connections, retry_locked
from feedback_db.migrations import migrate, schema_version
from feedback_db.models import Snapshot
from feedback_db.splits import DEFAULT_HELDOUT_SHARE, check_share

T = TypeVar("T")

MAX_ID = 2**63 - 1  # SQLite's INTEGER range; a larger id is no row (not an OverflowError)


def now() -> str:
    return datetime.now(UTC).isoformat()


def check(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


def check_choice(name: str, value: object, choices: Sequence[str]) -> None:
    """ValueError naming the field and its allowed values unless `value` is one of `choices`."""
    check(value in choices, f"{name} must be one of {', '.join(choices)}; got {value!r}")


def valid_id(value: int) -> bool:
    return isinstance(value, int) and 0 < value <= MAX_ID


def upto(table: str, snapshot: Snapshot | None) -> tuple[str, list]:
    """The WHERE clause (and its parameters) that reads only rows a snapshot pins; everything without one."""
    if snapshot is None:
        return "1", []
    return "id <= ?", [snapshot.max_ids[table]]


class StoreBase:
    """The connection manager and row helpers the store's parts share (each part is a mixin of FeedbackStore)."""

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

    def _query(self, sql: str, params: tuple | list | dict = ()) -> list[sqlite3.Row]:
        return self._db.query(sql, params)

    def _one(self, convert: Callable[[sqlite3.Row], T], sql: str, params: tuple | list = ()) -> T | None:
        """The query's first row through `convert`; None when it returns no row."""
        rows = self._query(sql, params)
        return convert(rows[0]) if rows else None

    def _rows(self, table: str, snapshot: Snapshot | None, **equal: object) -> list[sqlite3.Row]:
        """`table`'s rows up to `snapshot` in id order; `equal`: column=value filters (a None value: no filter)."""
        where, params = upto(table, snapshot)
        for column, value in equal.items():
            if value is not None:
                where, params = f"{where} AND {column} = ?", [*params, value]
        return self._query(f"SELECT * FROM {table} WHERE {where} ORDER BY id", params)
