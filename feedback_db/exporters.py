"""The one exporter: training datasets (TRL rows, as the recipes see them) and raw tables to JSONL or Parquet (chosen
by the file suffix). The CLI (`python -m feedback_db export`) and the web app's Data tab both call it.

export(store, "preferences", "out/prefs.jsonl", snapshot=store.snapshot())
export(store, "ratings", "out/ratings.parquet")
export_to_folder(store, "preferences", Path("data/exports"))   # -> data/exports/preferences-<UTC stamp>.jsonl
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from feedback_db.datasets import build_kto_dataset, build_preference_dataset, build_sft_dataset
from feedback_db.models import Snapshot
from feedback_db.store import EXPORTABLE_TABLES, FeedbackStore

DATASETS = {"sft": build_sft_dataset, "preferences": build_preference_dataset, "kto": build_kto_dataset}
ALIASES = {"preference": "preferences"}  # the CLI's spelling before the names were unified; still accepted


def export_names() -> list[str]:
    """What can be exported: the datasets, then the raw tables."""
    return [*DATASETS, *EXPORTABLE_TABLES]


def export(
    store: FeedbackStore, name: str, path: str | Path, snapshot: Snapshot | None = None, split: str = "train"
) -> int:
    """Write the dataset or raw table `name` to `path` (.jsonl | .parquet); returns the number of rows."""
    name = ALIASES.get(name, name)
    if name in DATASETS:
        return export_dataset(store, name, path, snapshot=snapshot, split=split)
    return export_table(store, name, path)


def export_to_folder(store: FeedbackStore, name: str, folder: Path) -> tuple[Path, int]:
    """Export `name` as JSONL to a new `<folder>/<name>-<UTC stamp>.jsonl` (the web app's download);
    (path, rows). The name is checked before it becomes part of a file name."""
    name = ALIASES.get(name, name)
    if name not in export_names():
        raise ValueError(f"export must be one of {', '.join(export_names())}; got {name!r}")
    path = folder / f"{name}-{datetime.now(UTC):%Y%m%d-%H%M%S}.jsonl"
    return path, export(store, name, path)


def _format(path: Path) -> str:
    if path.suffix.lower() not in (".jsonl", ".parquet"):
        raise ValueError(f"{path.name}: export to .jsonl or .parquet")
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.suffix.lower()[1:]


def _write_jsonl(rows, path: Path) -> None:
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def export_dataset(
    store: FeedbackStore, name: str, path: str | Path, snapshot: Snapshot | None = None, split: str = "train"
) -> int:
    """Write the `name` (sft | preferences | kto) dataset; returns the number of rows."""
    name = ALIASES.get(name, name)
    if name not in DATASETS:
        raise ValueError(f"dataset must be one of {', '.join(DATASETS)}; got {name!r}")
    path = Path(path)
    fmt = _format(path)
    dataset = DATASETS[name](store, snapshot=snapshot, split=split)
    if fmt == "jsonl":
        _write_jsonl(dataset, path)
    else:
        dataset.to_parquet(str(path))
    return len(dataset)


def export_table(store: FeedbackStore, table: str, path: str | Path) -> int:
    """Write a raw table (JSON columns as text, as stored); returns the number of rows."""
    path = Path(path)
    rows = store.table_rows(table)  # checks the table name before anything is written
    if _format(path) == "jsonl":
        _write_jsonl(rows, path)
    else:
        pq.write_table(pa.Table.from_pylist(rows), path)
    return len(rows)
