"""Schema of the Tuneloop store: sqlite-utils `Migrations` (the steps, in order, in steps.py) and their runner.

`migrate(conn)` applies the pending steps under a write lock, so several processes opening the same fresh file do not
race, and mirrors the count into `PRAGMA user_version`. Run by `FeedbackStore(path)` on open.
"""

import sqlite3

from sqlite_utils import Database

from feedback_db.migrations.steps import MIGRATIONS

__all__ = ["MIGRATIONS", "migrate", "schema_version"]


def schema_version(conn: sqlite3.Connection) -> int:
    return conn.execute("PRAGMA user_version").fetchone()[0]


def migrate(conn: sqlite3.Connection, stop_before: str | None = None) -> int:
    """Apply pending migrations on an autocommit connection; returns the schema version (applied count).

    `stop_before` leaves that migration and the later ones pending (used to build old-schema files in tests).
    """
    db = Database(conn, execute_plugins=False)
    if MIGRATIONS.pending(db) and not (stop_before and MIGRATIONS.pending(db)[0].name == stop_before):
        conn.execute("BEGIN IMMEDIATE")  # one writer migrates; the others wait here, then find nothing pending
        try:
            MIGRATIONS.apply(db, stop_before=stop_before)
            conn.execute(f"PRAGMA user_version = {len(MIGRATIONS.applied(db))}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return schema_version(conn)
