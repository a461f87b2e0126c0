"""Export training datasets (TRL formats) and raw tables to JSONL or Parquet (chosen by the file suffix).

export_dataset(store, "preference", "out/prefs.jsonl", snapshot=store.snapshot())
export_table(store, "ratings", "out/ratings.parquet")
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from feedback_db.datasets import build_kto_dataset, build_preference_dataset, build_sft_dataset
from feedback_db.store import FeedbackStore

DATASETS = {"sft": build_sft_dataset, "preference": build_preference_dataset, "kto": build_kto_dataset}


def _format(path: Path) -> str:
    if path.suffix.lower() not in (".jsonl", ".parquet"):
        raise ValueError(f"{path.name}: export to .jsonl or .parquet")
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.suffix.lower()[1:]


def export_dataset(
    store: FeedbackStore, name: str, path: str | Path, snapshot: dict | None = None, split: str = "train"
) -> int:
    """Write the `name` (sft | preference | kto) dataset; returns the number of rows."""
    if name not in DATASETS:
        raise ValueError(f"dataset must be one of {', '.join(DATASETS)}; got {name!r}")
    path = Path(path)
    fmt = _format(path)
    dataset = DATASETS[name](store, snapshot=snapshot, split=split)
    if fmt == "jsonl":
        with path.open("w", encoding="utf-8") as f:
            for row in dataset:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
    else:
        dataset.to_parquet(str(path))
    return len(dataset)


def export_table(store: FeedbackStore, table: str, path: str | Path) -> int:
    """Write a raw table (JSON columns as text, as stored); returns the number of rows."""
    path = Path(path)
    fmt = _format(path)
    rows = store.table_rows(table)
    if fmt == "jsonl":
        with path.open("w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
    else:
        pq.write_table(pa.Table.from_pylist(rows), path)
    return len(rows)
