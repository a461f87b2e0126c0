"""The review form: per-mode guidelines, criteria and their answers, exclusions, undoing one's last judgment."""

from __future__ import annotations

import sqlite3

from feedback_db.models import Criterion, CriterionAnswer, Snapshot
from feedback_db.store.base import StoreBase, check, check_choice, now
from feedback_db.vocab import CRITERION_KINDS, JUDGMENT_TABLES, REVIEW_MODES


class ReviewFormMixin(StoreBase):
    """Guidelines, criteria, answers, undo."""

    # review form: guidelines, criteria, answers, undo ---

    def set_guidelines(self, mode: str, text: str, username: str) -> None:
        check_choice("mode", mode, REVIEW_MODES)
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
        check(bool(name.strip()), "a criterion needs a name")
        check_choice("kind", kind, CRITERION_KINDS)
        check(not excludes or kind == "flag", "only a yes/no flag can exclude rows from training")
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
        check_choice("judgment", judgment, JUDGMENT_TABLES)
        criteria = {c.id: c for c in self.list_criteria()}
        prompt_id = self._judgment_prompt(judgment, judgment_id)
        for criterion_id, value in answers.items():
            criterion = criteria.get(int(criterion_id))
            check(criterion is not None, f"no criterion {criterion_id} on the review form")
            allowed = range(1, 6) if criterion.kind == "scale" else (0, 1)
            check(value in allowed, f"criterion {criterion.name!r}: {value!r} is not one of {list(allowed)}")
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
            check(row is not None, "you have no judgment to undo")
            table, judgment_id = row[0], row[1]
            for version in self.list_versions():
                pinned = version.snapshot.max_ids.get(table, 0) if version.snapshot else 0
                check(judgment_id > pinned, f"version {version.name} was trained on this judgment; judge the item "
                                             "again to change it")
            conn.execute("DELETE FROM criterion_answers WHERE judgment = ? AND judgment_id = ?", (table, judgment_id))
            conn.execute(f"DELETE FROM {table} WHERE id = ?", (judgment_id,))
        return table, judgment_id
