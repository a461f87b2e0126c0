"""Read an import file (JSONL, CSV or Parquet, by suffix) into `(location, row)` pairs within `ImportLimits`.

Locations are "line N" (JSONL) or "row N" (CSV, Parquet), so every later error can say where it is. A file that
cannot be read raises `ImportValidationError` naming the problem; `feedback_db.importers` validates the rows.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq

FORMATS = {".jsonl": "jsonl", ".json": "jsonl", ".csv": "csv", ".parquet": "parquet"}


class ImportValidationError(ValueError):
    """A file that cannot be imported; the message names the line/row and field."""


@dataclass(frozen=True)
class ImportLimits:
    max_bytes: int = 200 * 1024 * 1024
    max_rows: int = 200_000
    max_field_chars: int = 100_000


DEFAULT_LIMITS = ImportLimits()


def read_rows(path: Path, limits: ImportLimits) -> tuple[str, list[tuple[str, dict]]]:
    """(format, [(location, row)]) where location is "line N" (JSONL) or "row N" (CSV, Parquet)."""
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ImportValidationError(
            f"{path.name}: unsupported file type {path.suffix!r}; use .jsonl, .csv or .parquet"
        )
    if not path.is_file():
        raise ImportValidationError(f"{path.name}: no such file")
    size = path.stat().st_size
    if size == 0:
        raise ImportValidationError(f"{path.name}: the file is empty")
    if size > limits.max_bytes:
        raise ImportValidationError(
            f"{path.name}: the file is {size:,} bytes; the limit is {limits.max_bytes:,} bytes"
        )
    data = path.read_bytes()
    rows = _parquet_rows(data) if fmt == "parquet" else _text_rows(fmt, _decode(data))
    if not rows:
        raise ImportValidationError(f"{path.name}: the file has no rows")
    if len(rows) > limits.max_rows:
        raise ImportValidationError(f"{path.name}: {len(rows):,} rows; the limit is {limits.max_rows:,} per file")
    return fmt, rows


def _decode(data: bytes) -> str:
    nul = data.find(b"\x00")
    if nul >= 0:
        raise ImportValidationError(f"binary file (NUL byte at offset {nul}); expected UTF-8 text (JSONL or CSV)")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ImportValidationError(
            f"not UTF-8 text (invalid byte 0x{data[exc.start]:02x} at offset {exc.start}); save the file as UTF-8"
        ) from None


def _text_rows(fmt: str, text: str) -> list[tuple[str, dict]]:
    rows = []
    if fmt == "jsonl":
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ImportValidationError(f"line {number}: invalid JSON ({exc.msg})") from None
            except RecursionError:
                raise ImportValidationError(f"line {number}: JSON nested too deeply") from None
            if not isinstance(row, dict):
                raise ImportValidationError(f"line {number}: expected a JSON object, got {type_name(row)}")
            rows.append((f"line {number}", row))
        return rows
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        for number, row in enumerate(reader, start=1):
            if None in row:
                raise ImportValidationError(f"row {number}: more values than the header has columns")
            rows.append((f"row {number}", {k: _cell(v) for k, v in row.items() if v is not None}))
    except csv.Error as exc:
        raise ImportValidationError(f"row {reader.line_num}: invalid CSV ({exc})") from None
    return rows


def _cell(value: str) -> object:
    """CSV cells holding a conversation are JSON message lists."""
    if value.lstrip().startswith("[{"):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def _parquet_rows(data: bytes) -> list[tuple[str, dict]]:
    if not data.startswith(b"PAR1"):
        raise ImportValidationError("not a Parquet file (missing the PAR1 header)")
    try:
        table = pq.read_table(io.BytesIO(data))
    except Exception as exc:  # pyarrow raises several types for corrupt files
        raise ImportValidationError(f"not a readable Parquet file ({exc})") from None
    return [(f"row {i}", row) for i, row in enumerate(table.to_pylist(), start=1)]


def type_name(value: object) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number" if isinstance(value, int | float) else type(value).__name__
    )
