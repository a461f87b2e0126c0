"""Import prompts and training data from JSONL, CSV or Parquet files into the store, all or nothing.

Kinds and accepted fields (strings, or TRL conversational message lists):
- `prompts`: `prompt` or `text`; optional `tags` (list or comma-separated) and `split` (train | heldout).
- `demonstrations`: `messages` (ending with the assistant answer), `prompt` + `completion`, or Gradient's
  `inputs` = "<s>### Instruction:\\nQ\\n\\n### Response:\\nA</s>".
- `preferences`: `prompt` + `chosen` + `rejected` (or conversational `chosen`/`rejected` sharing an implicit prompt).
- `unpaired`: `prompt` + `completion` + `label` (true/false, 1/0, up/down).

Every row is validated before anything is written; the first bad one raises `ImportValidationError` naming the
line (JSONL) or row (CSV, Parquet) and the field. Rows already in the store are skipped and counted.

    report = import_file(store, "prefs.jsonl", "preferences")
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from feedback_db.file_rows import DEFAULT_LIMITS, ImportLimits, ImportValidationError, read_rows, type_name
from feedback_db.store import FeedbackStore
from feedback_db.vocab import IMPORT_KINDS, MESSAGE_ROLES, SPLITS

# 120 prompts written for Tuneloop (facts, how-to, writing, reasoning, coding, advice, safety-sensitive requests),
# every sixth of each kind held out; the first-run panel imports them into an empty store
STARTER_PROMPTS = Path(__file__).parent / "assets" / "starter_prompts.jsonl"


@dataclass(frozen=True)
class ImportReport:
    path: str
    kind: str  # prompts | demonstrations | preferences | unpaired
    format: str  # jsonl | csv | parquet
    rows: int
    added: dict[str, int]  # table -> rows inserted
    duplicates: int  # rows already in the store, skipped


@dataclass(frozen=True)
class _Record:
    """One validated row: its prompt (text + full conversation when multi-turn) and the kind's payload."""

    prompt: str
    messages: list[dict] | None
    values: dict


def import_file(
    store: FeedbackStore,
    path: str | Path,
    kind: str,
    split: str | None = None,
    source: str | None = None,
    limits: ImportLimits = DEFAULT_LIMITS,
) -> ImportReport:
    """Import a file, all or nothing. `split` (train | heldout) applies to new prompts without a `split` field;
    None (default) holds out the store's `heldout_share` of them by a hash of the prompt text."""
    if kind not in IMPORT_KINDS:
        raise ImportValidationError(f"kind must be one of {', '.join(IMPORT_KINDS)}; got {kind!r}")
    if split not in (None, *SPLITS):
        raise ImportValidationError(f"split must be 'train' or 'heldout'; got {split!r}")
    path = Path(path)
    fmt, rows = read_rows(path, limits)
    records = [_validate(kind, location, row, limits) for location, row in rows]
    added, duplicates = _write(store, kind, records, split, source or f"import:{path.name}")
    return ImportReport(str(path), kind, fmt, len(records), added, duplicates)


@dataclass(frozen=True)
class ImportPreview:
    """What an import would write, read and validated without touching the store."""

    format: str
    rows: int
    first: list[dict]  # the first rows as validated: prompt, then the kind's fields
    problem: str | None  # the validation error that would abort the import (None: it would go through)


def preview_file(path: str | Path, kind: str, shown: int = 5, limits: ImportLimits = DEFAULT_LIMITS) -> ImportPreview:
    """Read and validate every row of a file as `import_file` would; return the counts, the first rows and the
    first problem. Writes nothing."""
    if kind not in IMPORT_KINDS:
        raise ImportValidationError(f"kind must be one of {', '.join(IMPORT_KINDS)}; got {kind!r}")
    fmt, rows = read_rows(Path(path), limits)
    first, problem = [], None
    for location, row in rows:
        try:
            record = _validate(kind, location, row, limits)
        except ImportValidationError as err:
            problem = str(err)
            break
        if len(first) < shown:
            first.append({"prompt": record.prompt, **{k: str(v) for k, v in record.values.items()}})
    return ImportPreview(fmt, len(rows), first, problem)


# validation -----------------------------------------------------------------------------------------------------


def _validate(kind: str, loc: str, row: dict, limits: ImportLimits) -> _Record:
    for name, value in row.items():
        size = len(json.dumps(value, ensure_ascii=False)) if not isinstance(value, str) else len(value)
        if size > limits.max_field_chars:
            raise ImportValidationError(
                f"{loc}: field '{name}' is {size:,} characters long; the limit is {limits.max_field_chars:,}"
            )
    if kind == "prompts":
        name = "prompt" if "prompt" in row else "text"
        prompt, messages = _prompt(loc, row, name)
        values = {"tags": _tags(loc, row.get("tags")), "split": row.get("split") or None}
        if values["split"] not in (None, "train", "heldout"):
            raise ImportValidationError(f"{loc}: field 'split' must be 'train' or 'heldout', got {values['split']!r}")
        return _Record(prompt, messages, values)
    if kind == "demonstrations":
        return _demonstration(loc, row)
    if kind == "preferences":
        return _preference(loc, row)
    prompt, messages = _prompt(loc, row, "prompt")
    completion = _answer(loc, row, "completion")
    return _Record(prompt, messages, {"completion": completion, "label": _label(loc, row)})


def _require(loc: str, row: dict, name: str) -> object:
    if name not in row or row[name] is None or row[name] == "":
        present = ", ".join(f"'{k}'" for k in row) or "none"
        raise ImportValidationError(f"{loc}: field '{name}' is missing (fields present: {present})")
    return row[name]


def _messages(loc: str, name: str, value: object) -> list[dict]:
    if not isinstance(value, list) or not value:
        raise ImportValidationError(
            f"{loc}: field '{name}' must be a string or a list of messages, got {type_name(value)}"
        )
    for i, message in enumerate(value):
        if not isinstance(message, dict) or message.get("role") not in MESSAGE_ROLES:
            roles = ", ".join(MESSAGE_ROLES)
            raise ImportValidationError(f"{loc}: field '{name}' message {i} needs a 'role' of {roles}")
        if not isinstance(message.get("content"), str):
            raise ImportValidationError(f"{loc}: field '{name}' message {i} needs a string 'content'")
    return [{"role": m["role"], "content": m["content"]} for m in value]


def _prompt(loc: str, row: dict, name: str) -> tuple[str, list[dict] | None]:
    return _prompt_value(loc, name, _require(loc, row, name))


def _prompt_value(loc: str, name: str, value: object) -> tuple[str, list[dict] | None]:
    if isinstance(value, str):
        if not value.strip():
            raise ImportValidationError(f"{loc}: field '{name}' is empty")
        return value, None
    messages = _messages(loc, name, value)
    if messages[-1]["role"] != "user" or not messages[-1]["content"].strip():
        raise ImportValidationError(f"{loc}: field '{name}' must end with a non-empty user message")
    return messages[-1]["content"], messages if len(messages) > 1 else None


def _answer(loc: str, row: dict, name: str) -> str:
    value = _require(loc, row, name)
    if isinstance(value, list):
        messages = _messages(loc, name, value)
        if len(messages) != 1 or messages[0]["role"] != "assistant":
            raise ImportValidationError(f"{loc}: field '{name}' must hold exactly one assistant message")
        value = messages[0]["content"]
    if not isinstance(value, str):
        raise ImportValidationError(
            f"{loc}: field '{name}' must be a string or a list of messages, got {type_name(value)}"
        )
    if not value.strip():
        raise ImportValidationError(f"{loc}: field '{name}' is empty")
    return value


def _demonstration(loc: str, row: dict) -> _Record:
    if "messages" in row:
        messages = _messages(loc, "messages", row["messages"])
        if len(messages) < 2 or messages[-1]["role"] != "assistant":
            raise ImportValidationError(f"{loc}: field 'messages' must end with the assistant's answer")
        prompt, context = _prompt_value(loc, "messages", messages[:-1])
        return _Record(prompt, context, {"completion": _answer(loc, {"messages": [messages[-1]]}, "messages")})
    if "inputs" in row:
        return _gradient(loc, row["inputs"])
    prompt, context = _prompt(loc, row, "prompt")
    return _Record(prompt, context, {"completion": _answer(loc, row, "completion")})


GRADIENT_INSTRUCTION = "### Instruction:"
GRADIENT_RESPONSE = "### Response:"


def _gradient(loc: str, value: object) -> _Record:
    if not isinstance(value, str):
        raise ImportValidationError(f"{loc}: field 'inputs' must be a string, got {type_name(value)}")
    text = value.strip().removeprefix("<s>").removesuffix("</s>").strip()
    if not text.startswith(GRADIENT_INSTRUCTION):
        raise ImportValidationError(f"{loc}: field 'inputs' must start with '<s>{GRADIENT_INSTRUCTION}'")
    if GRADIENT_RESPONSE not in text:
        raise ImportValidationError(f"{loc}: field 'inputs' has no '{GRADIENT_RESPONSE}' marker")
    question, answer = text.removeprefix(GRADIENT_INSTRUCTION).split(GRADIENT_RESPONSE, 1)
    if not question.strip() or not answer.strip():
        raise ImportValidationError(f"{loc}: field 'inputs' has an empty instruction or response")
    return _Record(question.strip(), None, {"completion": answer.strip()})


def _preference(loc: str, row: dict) -> _Record:
    if "prompt" not in row and isinstance(row.get("chosen"), list) and isinstance(row.get("rejected"), list):
        chosen = _messages(loc, "chosen", row["chosen"])
        rejected = _messages(loc, "rejected", row["rejected"])
        if chosen[:-1] != rejected[:-1] or len(chosen) < 2:
            raise ImportValidationError(
                f"{loc}: field 'prompt' is missing and 'chosen'/'rejected' do not share a prompt conversation"
            )
        row = {"prompt": chosen[:-1], "chosen": chosen[-1:], "rejected": rejected[-1:]}
    prompt, context = _prompt(loc, row, "prompt")
    chosen, rejected = _answer(loc, row, "chosen"), _answer(loc, row, "rejected")
    if chosen.strip() == rejected.strip():
        raise ImportValidationError(f"{loc}: fields 'chosen' and 'rejected' are the same text")
    return _Record(prompt, context, {"chosen": chosen, "rejected": rejected})


def _label(loc: str, row: dict) -> bool:
    value = _require(loc, row, "label")
    words = {"true": True, "false": False, "1": True, "0": False, "up": True, "down": False}
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in words:
        return words[value.strip().lower()]
    raise ImportValidationError(f"{loc}: field 'label' must be true/false (or 1/0, up/down), got {value!r}")


def _tags(loc: str, value: object) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [t.strip() for t in value.split(",") if t.strip()]
    if isinstance(value, list) and all(isinstance(t, str) for t in value):
        return value
    raise ImportValidationError(f"{loc}: field 'tags' must be a list of strings or comma-separated text")


# writing --------------------------------------------------------------------------------------------------------


def _write(
    store: FeedbackStore, kind: str, records: list[_Record], split: str | None, source: str
) -> tuple[dict[str, int], int]:
    added = {"prompts": 0, "demonstrations": 0, "preference_pairs": 0, "unpaired_labels": 0}
    duplicates = 0
    with store.transaction():
        prompt_ids = {(p.text, _key(p.messages)): p.id for p in store.list_prompts()}
        existing = _existing(store, kind)
        for record in records:
            prompt_key = (record.prompt, _key(record.messages))
            if prompt_key not in prompt_ids:
                split_here = record.values.get("split") or split
                tags = record.values.get("tags", [])
                prompt_ids[prompt_key] = store.add_prompt(record.prompt, source, tags, split_here, record.messages)
                added["prompts"] += 1
            elif kind == "prompts":
                duplicates += 1
            if kind == "prompts":
                continue
            prompt_id = prompt_ids[prompt_key]
            item = (prompt_id, *(record.values[k] for k in sorted(record.values)))
            if item in existing:
                duplicates += 1
                continue
            existing.add(item)
            if kind == "demonstrations":
                store.add_demonstration(prompt_id, record.values["completion"], source)
                added["demonstrations"] += 1
            elif kind == "preferences":
                store.add_preference_pair(prompt_id, record.values["chosen"], record.values["rejected"], source)
                added["preference_pairs"] += 1
            else:
                store.add_unpaired_label(prompt_id, record.values["completion"], record.values["label"], source)
                added["unpaired_labels"] += 1
    return added, duplicates


def _key(messages: list[dict] | None) -> str:
    return json.dumps(messages) if messages else ""


def _existing(store: FeedbackStore, kind: str) -> set[tuple]:
    """Rows already stored, keyed like `_write` keys a record: (prompt_id, *values sorted by field name)."""
    if kind == "demonstrations":
        return {(d.prompt_id, d.completion) for d in store.list_demonstrations()}
    if kind == "preferences":
        return {(p.prompt_id, p.chosen, p.rejected) for p in store.list_preference_pairs()}
    if kind == "unpaired":
        return {(u.prompt_id, u.completion, u.label) for u in store.list_unpaired_labels()}
    return set()
