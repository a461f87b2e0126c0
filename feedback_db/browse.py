"""The SQL behind the admins' data browser (`FeedbackStore.browse_prompts` / `prompt_feedback`): page, search and
filter prompts by split, source, version, reviewer, date and disagreement; everything stored about one prompt.

Disagreement = two reviewers picked different winners for the same pair of answers, or gave one answer both a
thumbs up and a thumbs down.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from feedback_db.connection import retry_locked

PAGE_SIZE = 25


@dataclass(frozen=True)
class BrowseFilter:
    search: str = ""  # substring of the prompt text (case-insensitive)
    split: str | None = None
    source: str | None = None
    version: str | None = None  # has an answer from this version
    reviewer: str | None = None  # judged by this user
    since: str | None = None  # created on or after (YYYY-MM-DD)
    disagreement: bool = False
    excluded: bool | None = None  # None = both


@dataclass(frozen=True)
class BrowseRow:
    id: int
    split: str
    source: str
    text: str
    responses: int
    judgments: int
    excluded: bool
    created: str


_PAIR = "min(c1.response_a, c1.response_b) = min(c2.response_a, c2.response_b) AND " \
        "max(c1.response_a, c1.response_b) = max(c2.response_a, c2.response_b)"
_PICK = "CASE {c}.winner WHEN 'a' THEN {c}.response_a WHEN 'b' THEN {c}.response_b ELSE {c}.winner END"
_DISAGREEMENT = f"""(
    EXISTS (SELECT 1 FROM comparisons c1 JOIN comparisons c2 ON {_PAIR} AND c1.username != c2.username
            WHERE c1.prompt_id = p.id AND {_PICK.format(c='c1')} IS NOT {_PICK.format(c='c2')})
    OR EXISTS (SELECT 1 FROM ratings x JOIN responses r ON r.id = x.response_id
               WHERE r.prompt_id = p.id AND x.thumbs IS NOT NULL GROUP BY x.response_id
               HAVING COUNT(DISTINCT x.thumbs) > 1)
)"""
_JUDGED_BY = """(
    EXISTS (SELECT 1 FROM ratings x JOIN responses r ON r.id = x.response_id
            WHERE r.prompt_id = p.id AND x.username = :reviewer)
    OR EXISTS (SELECT 1 FROM corrections x JOIN responses r ON r.id = x.response_id
               WHERE r.prompt_id = p.id AND x.username = :reviewer)
    OR EXISTS (SELECT 1 FROM comparisons c WHERE c.prompt_id = p.id AND c.username = :reviewer)
    OR EXISTS (SELECT 1 FROM rankings k WHERE k.prompt_id = p.id AND k.username = :reviewer)
)"""
_EXCLUDED = "EXISTS (SELECT 1 FROM prompt_exclusions e WHERE e.prompt_id = p.id AND e.lifted IS NULL)"
_SELECT = f"""
SELECT p.id, p.split, p.source, p.text, p.created,
       (SELECT COUNT(*) FROM responses r WHERE r.prompt_id = p.id) AS responses,
       (SELECT COUNT(*) FROM ratings x JOIN responses r ON r.id = x.response_id WHERE r.prompt_id = p.id)
       + (SELECT COUNT(*) FROM comparisons c WHERE c.prompt_id = p.id)
       + (SELECT COUNT(*) FROM rankings k WHERE k.prompt_id = p.id) AS judgments,
       {_EXCLUDED} AS excluded
FROM prompts p
"""


def _where(f: BrowseFilter) -> tuple[str, dict]:
    clauses, params = ["1"], {}
    if f.search.strip():
        clauses.append("p.text LIKE :search ESCAPE '\\'")
        escaped = f.search.strip().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        params["search"] = f"%{escaped}%"
    for column in ("split", "source"):
        if getattr(f, column):
            clauses.append(f"p.{column} = :{column}")
            params[column] = getattr(f, column)
    if f.version:
        clauses.append("EXISTS (SELECT 1 FROM responses r WHERE r.prompt_id = p.id AND r.model_version = :version)")
        params["version"] = f.version
    if f.reviewer:
        clauses.append(_JUDGED_BY)
        params["reviewer"] = f.reviewer
    if f.since:
        clauses.append("p.created >= :since")
        params["since"] = f.since
    if f.disagreement:
        clauses.append(_DISAGREEMENT)
    if f.excluded is not None:
        clauses.append(_EXCLUDED if f.excluded else f"NOT {_EXCLUDED}")
    return " AND ".join(clauses), params


def browse(conn: sqlite3.Connection, f: BrowseFilter, page: int = 1,
           page_size: int = PAGE_SIZE) -> tuple[list[BrowseRow], int]:
    """One page of prompts matching `f`, newest first, and how many match in all."""
    where, params = _where(f)
    total = retry_locked(lambda: conn.execute(f"SELECT COUNT(*) FROM prompts p WHERE {where}", params).fetchone()[0])
    sql = f"{_SELECT} WHERE {where} ORDER BY p.id DESC LIMIT :limit OFFSET :offset"
    paged = {**params, "limit": page_size, "offset": (max(page, 1) - 1) * page_size}
    rows = retry_locked(lambda: conn.execute(sql, paged).fetchall())
    return [BrowseRow(r["id"], r["split"], r["source"], r["text"], r["responses"], r["judgments"], bool(r["excluded"]),
                      r["created"]) for r in rows], total
