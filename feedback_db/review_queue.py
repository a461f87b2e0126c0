"""Which review item a reviewer sees next; the SQL behind `FeedbackStore.next_item` / `queue_progress`.

Items per mode: `single` = one response; `pairwise` = two responses to one prompt from different model versions, or
two samples of one version generated as an A/B pair (settings `ab_sample` 0 and 1, stored in either order);
`ranking` = the latest responses (3 to `MAX_RANKED`) of one prompt. An item is offered to a reviewer who has not
judged or skipped it, while fewer than `annotators_per_item` reviewers have judged it, fewest judgments first.
"""

from __future__ import annotations

import random
import sqlite3

from feedback_db.connection import retry_locked

MAX_RANKED = 5

# every query yields (ids, n): the item's response ids comma-separated, and how many reviewers judged it
# single items at exactly :n judges, in id order: SQLite walks responses by id and stops at :limit, so serving the
# next item costs index probes over the items before it, not a count of every item's judges (21,000 items: 25 ms
# -> well under 1 ms per event); idx_ratings_response_user and idx_corrections_response_user serve the probes
_SINGLE_AT = """
SELECT CAST(r.id AS TEXT) AS ids, :n AS n FROM responses r
WHERE CASE WHEN :n = 0  -- the common case, unjudged: two index probes instead of a count
           THEN NOT EXISTS (SELECT 1 FROM ratings x WHERE x.response_id = r.id)
                AND NOT EXISTS (SELECT 1 FROM corrections x WHERE x.response_id = r.id)
           ELSE (SELECT COUNT(*) FROM (SELECT username FROM ratings WHERE response_id = r.id
                                       UNION SELECT username FROM corrections WHERE response_id = r.id)) = :n END
  AND NOT EXISTS (SELECT 1 FROM ratings x WHERE x.response_id = r.id AND x.username = :user)
  AND NOT EXISTS (SELECT 1 FROM corrections x WHERE x.response_id = r.id AND x.username = :user)
  AND NOT EXISTS (
      SELECT 1 FROM skips s WHERE s.username = :user AND s.mode = 'single' AND s.item_key = CAST(r.id AS TEXT)
  )
ORDER BY r.id LIMIT :limit
"""

# items left = all responses minus those fully judged, judged by the user or skipped by the user: a pass over the
# judgments, not over every item
_SINGLE_COUNT = """
SELECT (SELECT COUNT(*) FROM responses) - (SELECT COUNT(*) FROM (
    SELECT response_id FROM (
        SELECT response_id, username FROM ratings UNION SELECT response_id, username FROM corrections
    ) GROUP BY response_id HAVING COUNT(*) >= :k
    UNION SELECT response_id FROM ratings WHERE username = :user
    UNION SELECT response_id FROM corrections WHERE username = :user
    UNION SELECT CAST(item_key AS INTEGER) FROM skips WHERE username = :user AND mode = 'single'
))
"""

# pairs are compared in either order: (a, b) or (b, a), both served by idx_comparisons_pair
_PAIR_VOTES = (
    "FROM comparisons c "
    "WHERE ((c.response_a = p.a AND c.response_b = p.b) OR (c.response_a = p.b AND c.response_b = p.a))"
)
_PAIRWISE = f"""
WITH pairs AS (
    SELECT r1.id AS a, r2.id AS b FROM responses r1
    JOIN responses r2 ON r1.prompt_id = r2.prompt_id AND r1.id < r2.id AND (r1.model_version != r2.model_version
        OR (json_extract(r1.settings, '$.ab_sample') IN (0, 1)
            AND json_extract(r2.settings, '$.ab_sample') = 1 - json_extract(r1.settings, '$.ab_sample')))
)
SELECT ids, n FROM (
    SELECT p.a || ',' || p.b AS ids, p.a AS k1, p.b AS k2, (SELECT COUNT(DISTINCT c.username) {_PAIR_VOTES}) AS n
    FROM pairs p
    WHERE NOT EXISTS (SELECT 1 {_PAIR_VOTES} AND c.username = :user)
      AND NOT EXISTS (
          SELECT 1 FROM skips s WHERE s.username = :user AND s.mode = 'pairwise' AND s.item_key = p.a || '-' || p.b
      )
)
WHERE n < :k ORDER BY n, k1, k2 LIMIT :limit
"""

_RANKING = """
WITH rankers AS (SELECT DISTINCT prompt_id, username FROM rankings)
SELECT ids, n FROM (
    SELECT (SELECT group_concat(id) FROM (
                SELECT id FROM responses WHERE prompt_id = p.id ORDER BY id DESC LIMIT :max_ranked
           )) AS ids,
           p.id AS k1, 0 AS k2,
           (SELECT COUNT(*) FROM rankers x WHERE x.prompt_id = p.id) AS n
    FROM prompts p
    WHERE (SELECT COUNT(*) FROM responses WHERE prompt_id = p.id) >= 3
      AND NOT EXISTS (SELECT 1 FROM rankers x WHERE x.prompt_id = p.id AND x.username = :user)
      AND NOT EXISTS (
          SELECT 1 FROM skips s WHERE s.username = :user AND s.mode = 'ranking' AND s.item_key = CAST(p.id AS TEXT)
      )
)
WHERE n < :k ORDER BY n, k1, k2 LIMIT :limit
"""

_QUERIES = {"pairwise": _PAIRWISE, "ranking": _RANKING}

_JUDGED = {
    "single": "SELECT COUNT(*) FROM (SELECT response_id FROM ratings WHERE username = :user "
    "UNION SELECT response_id FROM corrections WHERE username = :user)",
    "pairwise": "SELECT COUNT(*) FROM (SELECT DISTINCT MIN(response_a, response_b), MAX(response_a, response_b) "
    "FROM comparisons WHERE username = :user)",
    "ranking": "SELECT COUNT(DISTINCT prompt_id) FROM rankings WHERE username = :user",
}


def candidates(
    conn: sqlite3.Connection, username: str, mode: str, annotators_per_item: int, limit: int | None
) -> list[list[int]]:
    """Response-id lists of the items `username` may judge next, in serving order."""
    params = {"user": username, "k": annotators_per_item, "limit": -1 if limit is None else limit}
    params["max_ranked"] = MAX_RANKED
    if mode == "single":  # fewest judges first: one id-ordered walk per judge count
        rows = []
        for n in range(annotators_per_item):
            if limit is not None and len(rows) >= limit:
                break
            at = {**params, "n": n, "limit": -1 if limit is None else limit - len(rows)}
            rows += retry_locked(lambda at=at: conn.execute(_SINGLE_AT, at).fetchall())
    else:
        rows = retry_locked(lambda: conn.execute(_QUERIES[mode], params).fetchall())
    return [[int(i) for i in row[0].split(",")] for row in rows]


def candidate_count(conn: sqlite3.Connection, username: str, mode: str, annotators_per_item: int) -> int:
    """How many items `candidates` would return, counted in SQL instead of materialising every item's ids."""
    params = {"user": username, "k": annotators_per_item, "limit": -1, "max_ranked": MAX_RANKED}
    sql = _SINGLE_COUNT if mode == "single" else f"SELECT COUNT(*) FROM ({_QUERIES[mode]})"
    return retry_locked(lambda: conn.execute(sql, params).fetchone()[0])


def judged_count(conn: sqlite3.Connection, username: str, mode: str) -> int:
    return retry_locked(lambda: conn.execute(_JUDGED[mode], {"user": username}).fetchone()[0])


def item_key(mode: str, response_ids: list[int], prompt_id: int) -> str:
    """How a skip names an item: the response (single), the unordered pair (pairwise), the prompt (ranking)."""
    if mode == "single":
        return str(response_ids[0])
    if mode == "pairwise":
        return f"{min(response_ids)}-{max(response_ids)}"
    return str(prompt_id)


def shuffled(response_ids: list[int]) -> list[int]:
    """Random presentation order, so position (left/right, top) does not bias the judgment."""
    return random.sample(response_ids, len(response_ids))
