"""Feedback (ratings, comparisons, rankings, corrections; append-only) and the review queue."""

from __future__ import annotations

import json

from feedback_db import review_queue
from feedback_db.models import Comparison, Correction, Ranking, Rating, ReviewItem, Snapshot
from feedback_db.store.base import StoreBase, check, check_choice, now
from feedback_db.vocab import COMPARISON_SOURCES, RATING_SOURCES, REVIEW_MODES, WINNERS

RATING_VALUES = {"thumbs": (0, 1), "likert": (1, 2, 3, 4, 5)}  # what add_rating accepts


class FeedbackMixin(StoreBase):
    """Judgments, and the queue that serves items to judge."""

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
        check_choice("source", source, RATING_SOURCES)
        check(thumbs is None or thumbs in (0, 1), f"thumbs must be 1 (up) or 0 (down); got {thumbs!r}")
        check(likert is None or likert in range(1, 6), f"likert must be 1..5; got {likert!r}")
        check(
            thumbs is not None or likert is not None or bool(comment.strip()),
            "a rating needs thumbs, likert or a comment",
        )
        self._require_response(response_id)
        row = {"response_id": response_id, "username": username, "thumbs": thumbs, "likert": likert}
        return self._insert("ratings", {**row, "comment": comment, "source": source, "created": now()})

    def add_comparison(
        self, response_a: int, response_b: int, winner: str, username: str, source: str = "review"
    ) -> int:
        check_choice("winner", winner, WINNERS)
        check_choice("source", source, COMPARISON_SOURCES)
        check(response_a != response_b, "a comparison needs two different responses")
        a, b = self._require_response(response_a), self._require_response(response_b)
        check(a.prompt_id == b.prompt_id, "compared responses must answer the same prompt")
        row = {"prompt_id": a.prompt_id, "response_a": a.id, "response_b": b.id, "version_a": a.model_version}
        row |= {"version_b": b.model_version, "winner": winner, "username": username, "created": now()}
        return self._insert("comparisons", {**row, "source": source})

    def add_ranking(self, response_ids_best_first: list[int], username: str) -> int:
        ids = list(response_ids_best_first)
        check(len(ids) >= 2 and len(set(ids)) == len(ids), "a ranking needs two or more distinct responses")
        prompts = {self._require_response(i).prompt_id for i in ids}
        check(len(prompts) == 1, "ranked responses must answer the same prompt")
        row = {"prompt_id": prompts.pop(), "response_ids": json.dumps(ids), "username": username, "created": now()}
        return self._insert("rankings", row)

    def add_correction(self, response_id: int, text: str, username: str) -> int:
        check(bool(text.strip()), "a correction must not be empty")
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

    # one reviewer's view (the review tab refreshes it after every judgment: reads scoped to the reviewer) ---

    def reviewer_counts(self, username: str) -> dict[str, int]:
        """Judgments `username` made, per mode (rating | comparison | ranking | correction), each an index count."""
        sql = " UNION ALL ".join(
            f"SELECT '{table[:-1]}', COUNT(*) FROM {table} WHERE username = :user"
            for table in ("ratings", "comparisons", "rankings", "corrections")
        )
        return {mode: count for mode, count in self._query(sql, {"user": username})}

    def rating_agreement_counts(self, username: str) -> dict[str, tuple[int, int]]:
        """Per rating kind (thumbs, likert): (items where `username` gave the strict majority of the other reviewers'
        values, items with such a majority that `username` also judged), each reviewer's latest non-empty value per
        response; what `consensus.shares_with_majority` counts, tallied in SQL over the responses `username` rated
        (one row back, not every rating on those items: the review tab asks after every judgment)."""
        counts = {}
        for kind, values in RATING_VALUES.items():
            # the bare `v` next to MAX(id) is the value of the latest row of each (response, reviewer) group (SQLite);
            # the others' majority is the one value (of the kind's few) held by more than half of them
            majority = " ".join(f"WHEN 2 * SUM(username != :user AND v = {v}) > SUM(username != :user) THEN {v}"
                                for v in values)
            sql = f"""
                SELECT COALESCE(SUM(mine = others), 0), COUNT(others) FROM (
                    SELECT MAX(CASE WHEN username = :user THEN v END) AS mine, CASE {majority} END AS others
                    FROM (SELECT response_id, username, {kind} AS v, MAX(id) FROM ratings
                          WHERE {kind} IS NOT NULL
                            AND response_id IN (SELECT response_id FROM ratings WHERE username = :user)
                          GROUP BY response_id, username)
                    GROUP BY response_id
                ) WHERE mine IS NOT NULL"""
            counts[kind] = tuple(self._query(sql, {"user": username})[0])
        return counts

    def pairwise_on_prompts_of(self, username: str) -> tuple[list[Comparison], list[Ranking]]:
        """Every comparison and ranking (anyone's) on a prompt `username` compared or ranked, each in id order: all
        the pairwise votes on the pairs they judged."""
        mine = ("SELECT prompt_id FROM comparisons WHERE username = :user "
                "UNION SELECT prompt_id FROM rankings WHERE username = :user")
        comparisons = self._query(
            f"SELECT * FROM comparisons WHERE prompt_id IN ({mine}) ORDER BY id", {"user": username}
        )
        rankings = self._query(f"SELECT * FROM rankings WHERE prompt_id IN ({mine}) ORDER BY id", {"user": username})
        return ([Comparison(**dict(r)) for r in comparisons],
                [Ranking(**{**dict(r), "response_ids": json.loads(r["response_ids"])}) for r in rankings])

    # review queue ---

    def next_item(self, username: str, mode: str, annotators_per_item: int = 1) -> ReviewItem | None:
        """The next item for `username`: not yet judged or skipped by them, fewest judgments first."""
        check_choice("mode", mode, REVIEW_MODES)
        check(annotators_per_item >= 1, "annotators_per_item must be at least 1")
        candidates = review_queue.candidates(self._db.get(), username, mode, annotators_per_item, limit=1)
        if not candidates:
            return None
        ids = review_queue.shuffled(candidates[0])
        responses = [self._require_response(i) for i in ids]
        return ReviewItem(mode=mode, prompt=self.get_prompt(responses[0].prompt_id), responses=responses)

    def queue_progress(self, username: str, mode: str, annotators_per_item: int = 1) -> tuple[int, int]:
        """(items `username` judged in this mode, items still waiting for them)."""
        check_choice("mode", mode, REVIEW_MODES)
        conn = self._db.get()
        return (review_queue.judged_count(conn, username, mode),
                review_queue.candidate_count(conn, username, mode, annotators_per_item))

    def skip_item(self, username: str, mode: str, response_ids: list[int]) -> None:
        """Never serve this item (the responses of a `ReviewItem`) to `username` again."""
        check_choice("mode", mode, REVIEW_MODES)
        key = review_queue.item_key(mode, response_ids, self._require_response(response_ids[0]).prompt_id)
        with self._db.write() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO skips (username, mode, item_key, created) VALUES (?, ?, ?, ?)",
                (username, mode, key, now()),
            )
