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
# r1, r2 form a pairwise item: same prompt, different versions or the two samples of one A/B pair
_IS_PAIR = """r1.prompt_id = r2.prompt_id AND r1.id < r2.id AND (r1.model_version != r2.model_version
        OR (json_extract(r1.settings, '$.ab_sample') IN (0, 1)
            AND json_extract(r2.settings, '$.ab_sample') = 1 - json_extract(r1.settings, '$.ab_sample')))"""
_PAIRS = f"pairs AS (SELECT r1.id AS a, r2.id AS b FROM responses r1 JOIN responses r2 ON {_IS_PAIR})"


def _not_judged_by_user(a: str, b: str) -> str:
    """Pair (a, b) neither judged nor skipped by :user; judged = two equality probes of idx_comparisons_user (with
    an OR, SQLite scans all the user's votes for every pair)."""
    return f"""NOT EXISTS (SELECT 1 FROM comparisons c WHERE c.username = :user AND c.response_a = {a}
                                                        AND c.response_b = {b})
      AND NOT EXISTS (SELECT 1 FROM comparisons c WHERE c.username = :user AND c.response_a = {b}
                                                        AND c.response_b = {a})
      AND NOT EXISTS (
          SELECT 1 FROM skips s WHERE s.username = :user AND s.mode = 'pairwise' AND s.item_key = {a} || '-' || {b}
      )"""


# the definition: every pair the user may judge with its judge count, fewest judges first (`candidates(limit=None)`
# and the tests' reference for the two fast forms below)
_PAIRWISE = f"""
WITH {_PAIRS}
SELECT ids, n FROM (
    SELECT p.a || ',' || p.b AS ids, p.a AS k1, p.b AS k2, (SELECT COUNT(DISTINCT c.username) {_PAIR_VOTES}) AS n
    FROM pairs p
    WHERE {_not_judged_by_user('p.a', 'p.b')}
)
WHERE n < :k ORDER BY n, k1, k2 LIMIT :limit
"""

# the next pairs at exactly :n judges, in id order (like _SINGLE_AT): SQLite walks the pairs by (a, b) and stops at
# :limit instead of counting every pair's judges and sorting them (21,000 pairs: ~150 ms -> well under 1 ms)
_PAIRWISE_AT = f"""
SELECT r1.id || ',' || r2.id AS ids, :n AS n FROM responses r1 JOIN responses r2 ON {_IS_PAIR}
WHERE CASE WHEN :n = 0
           THEN NOT EXISTS (SELECT 1 FROM comparisons c WHERE c.response_a = r1.id AND c.response_b = r2.id)
                AND NOT EXISTS (SELECT 1 FROM comparisons c WHERE c.response_a = r2.id AND c.response_b = r1.id)
           ELSE (SELECT COUNT(DISTINCT c.username) FROM comparisons c
                 WHERE (c.response_a = r1.id AND c.response_b = r2.id)
                    OR (c.response_a = r2.id AND c.response_b = r1.id)) = :n END
  AND {_not_judged_by_user('r1.id', 'r2.id')}
ORDER BY r1.id, r2.id LIMIT :limit
"""

# pairs left = all pairs minus those fully judged, judged by the user or skipped by the user (each pair once, and
# only real pairs: a comparison of two answers of one version outside an A/B pair is not a queue item): a pass over
# the judgments and one count of the pairs, not a count of every pair's judges
_PAIRWISE_COUNT = f"""
WITH {_PAIRS}, out(a, b) AS (
    SELECT MIN(response_a, response_b), MAX(response_a, response_b) FROM comparisons
    GROUP BY 1, 2 HAVING COUNT(DISTINCT username) >= :k
    UNION SELECT MIN(response_a, response_b), MAX(response_a, response_b) FROM comparisons WHERE username = :user
    UNION SELECT CAST(substr(item_key, 1, instr(item_key, '-') - 1) AS INTEGER),
                 CAST(substr(item_key, instr(item_key, '-') + 1) AS INTEGER)
          FROM skips WHERE username = :user AND mode = 'pairwise'
)
SELECT (SELECT COUNT(*) FROM pairs)
     - (SELECT COUNT(*) FROM out o JOIN responses r1 ON r1.id = o.a JOIN responses r2 ON r2.id = o.b WHERE {_IS_PAIR})
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
    walk = _SINGLE_AT if mode == "single" else _PAIRWISE_AT if mode == "pairwise" and limit is not None else None
    if walk:  # fewest judges first: one id-ordered walk per judge count
        rows = []
        for n in range(annotators_per_item):
            if len(rows) >= (limit if limit is not None else float("inf")):
                break
            at = {**params, "n": n, "limit": -1 if limit is None else limit - len(rows)}
            rows += retry_locked(lambda at=at, walk=walk: conn.execute(walk, at).fetchall())
    else:
        rows = retry_locked(lambda: conn.execute(_QUERIES[mode], params).fetchall())
    return [[int(i) for i in row[0].split(",")] for row in rows]


def candidate_count(conn: sqlite3.Connection, username: str, mode: str, annotators_per_item: int) -> int:
    """How many items `candidates` would return, counted in SQL instead of materialising every item's ids."""
    params = {"user": username, "k": annotators_per_item, "limit": -1, "max_ranked": MAX_RANKED}
    counts = {"single": _SINGLE_COUNT, "pairwise": _PAIRWISE_COUNT}
    sql = counts[mode] if mode in counts else f"SELECT COUNT(*) FROM ({_QUERIES[mode]})"
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
