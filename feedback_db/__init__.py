"""Tuneloop's feedback store: `FeedbackStore` (the only code that writes SQL), dataset builders, importers.

Map: `store` (FeedbackStore, a package by concern), `vocab` (roles, splits, stages, ... for every layer), `models`
(dataclasses, `Snapshot`), `migrations` (schema), `connection` (per-thread connections), `review_queue` (what a
reviewer sees next), `consensus` (majority per item), `agreement` (kappa/alpha), `datasets` (TRL datasets +
data_check), `stats` (UI read-outs), `file_rows` / `importers` / `exporters` (files). docs/ARCHITECTURE.md has more.
"""

from feedback_db.store import FeedbackStore

__all__ = ["FeedbackStore"]
