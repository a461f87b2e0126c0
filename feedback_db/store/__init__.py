"""`FeedbackStore`: the SQLite store behind Tuneloop (users, prompts, responses, feedback, versions, runs, audit).

The only code that writes SQL. Safe to share between Gradio worker threads and between processes (the training
process writes runs/metrics/versions to the same file): see `feedback_db.connection`. Feedback is append-only;
a reviewer judging the same item again adds a row and the latest one counts, so `snapshot()` max ids pin exactly
what a round trained on.

    store = FeedbackStore("data/tuneloop.db")
    pid = store.add_prompt("Why is the sky blue?")

One class, written by concern: each module of this package is a mixin over `base.StoreBase` (one connection
manager, the row helpers and the shared checks), and `FeedbackStore` composes them:
`users` (users, API tokens), `prompts` (prompts, responses, imported rows, data browser), `feedback` (judgments,
review queue), `review_form` (guidelines, criteria, undo), `versions`, `runs` (runs, generation jobs),
`webhooks`, `audit` (snapshot, audit log, whole-table reads).
"""

from feedback_db.store.audit import EXPORTABLE_TABLES, FEEDBACK_TABLES, SNAPSHOT_TABLES, AuditMixin
from feedback_db.store.base import MAX_ID, now
from feedback_db.store.feedback import FeedbackMixin
from feedback_db.store.prompts import PromptsMixin
from feedback_db.store.review_form import ReviewFormMixin
from feedback_db.store.runs import RunsMixin
from feedback_db.store.users import TOKEN_PREFIX, UsersMixin
from feedback_db.store.versions import VERSION_NAME, VersionsMixin
from feedback_db.store.webhooks import WebhooksMixin

__all__ = ["EXPORTABLE_TABLES", "FEEDBACK_TABLES", "MAX_ID", "SNAPSHOT_TABLES", "TOKEN_PREFIX", "VERSION_NAME",
           "FeedbackStore", "now"]


class FeedbackStore(UsersMixin, PromptsMixin, FeedbackMixin, ReviewFormMixin, VersionsMixin, RunsMixin, WebhooksMixin,
                    AuditMixin):
    """`FeedbackStore(path, heldout_share=0.1)`: every method of the store (see the package docstring for the map)."""
