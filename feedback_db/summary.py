"""What a data snapshot held, as numbers only (for model cards): counts by kind, split sizes, date range, reviewers.

    summary = snapshot_summary(store, version.snapshot)

No raw text leaves: prompts, answers and comments are counted, never copied.
"""

from __future__ import annotations

from collections import Counter

from feedback_db.models import Snapshot
from feedback_db.store import FeedbackStore


def snapshot_summary(store: FeedbackStore, snapshot: Snapshot | None) -> dict:
    """Counts of every row kind a round could read under `snapshot` (None: everything stored now)."""
    prompts = store.list_prompts(snapshot=snapshot)
    feedback = {
        "ratings": store.list_ratings(snapshot=snapshot),
        "comparisons": store.list_comparisons(snapshot=snapshot),
        "rankings": store.list_rankings(snapshot=snapshot),
        "corrections": store.list_corrections(snapshot=snapshot),
    }
    imported = {
        "demonstrations": store.list_demonstrations(snapshot=snapshot),
        "preference_pairs": store.list_preference_pairs(snapshot=snapshot),
        "unpaired_labels": store.list_unpaired_labels(snapshot=snapshot),
    }
    rows = [row for kind in (*feedback.values(), *imported.values()) for row in kind]
    days = sorted(row.created[:10] for row in rows)
    return {
        "taken_at": snapshot.taken_at if snapshot else None,
        "counts": {"prompts": len(prompts), "responses": len(store.list_responses(snapshot=snapshot)),
                   **{kind: len(items) for kind, items in {**feedback, **imported}.items()}},
        "prompt_splits": dict(sorted(Counter(p.split for p in prompts).items())),
        "date_range": [days[0], days[-1]] if days else None,
        "reviewers": len({row.username for kind in feedback.values() for row in kind}),
    }
