"""Importing JSONL/CSV/Parquet files: good files land whole, bad files land nothing and say where and why."""

import json
from pathlib import Path
from typing import NamedTuple

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from feedback_db import FeedbackStore
from feedback_db.__main__ import main as cli
from feedback_db.datasets import build_kto_dataset, build_preference_dataset, build_sft_dataset
from feedback_db.exporters import export_dataset, export_table, export_to_folder
from feedback_db.importers import ImportLimits, ImportValidationError, import_file
from feedback_db.store import EXPORTABLE_TABLES

ASSETS = Path(__file__).resolve().parents[1] / "assets"


def _dump(store: FeedbackStore) -> dict:
    return {t: store.table_rows(t) for t in EXPORTABLE_TABLES} | {"users": store.count("users")}


def test_tiny_fixtures_import_and_reimport_as_duplicates(store: FeedbackStore) -> None:
    report = import_file(store, ASSETS / "import_prompts_tiny.csv", "prompts")
    assert (report.format, report.rows, report.added["prompts"], report.duplicates) == ("csv", 3, 3, 0)
    splits = {p.text: (p.split, p.tags) for p in store.list_prompts()}
    assert splits["Name a prime number greater than 10."] == ("heldout", ("math",))
    assert splits["What is the capital of France?"] == ("train", ("geo", "easy"))

    sft = import_file(store, ASSETS / "import_sft_tiny.jsonl", "demonstrations")
    assert (sft.rows, sft.added["demonstrations"]) == (5, 5)
    messages = [r["messages"] for r in build_sft_dataset(store)]
    assert [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}] == messages[1][:2]
    assert {"role": "assistant", "content": "Blue."} in [m[-1] for m in messages]  # Gradient form, </s> stripped
    assert {"role": "assistant", "content": "Apple."} in [m[-1] for m in messages]  # ... and without </s>

    prefs = import_file(store, ASSETS / "import_prefs_tiny.parquet", "preferences")
    assert (prefs.format, prefs.added["preference_pairs"]) == ("parquet", 3)
    unpaired = import_file(store, ASSETS / "import_unpaired_tiny.csv", "unpaired")
    assert [r["label"] for r in build_kto_dataset(store)] == [True, False, True] and unpaired.rows == 3

    again = import_file(store, ASSETS / "import_prefs_tiny.parquet", "preferences")
    assert (again.added["preference_pairs"], again.duplicates) == (0, 3)


def test_trl_conversational_fixtures_import(store: FeedbackStore) -> None:
    assert import_file(store, ASSETS / "sft_tiny.jsonl", "demonstrations").added["demonstrations"] > 0
    assert import_file(store, ASSETS / "pairs_tiny.jsonl", "preferences").added["preference_pairs"] > 0
    assert import_file(store, ASSETS / "kto_tiny.jsonl", "unpaired").added["unpaired_labels"] > 0


def test_heldout_import_stays_out_of_train(store: FeedbackStore) -> None:
    import_file(store, ASSETS / "import_prefs_tiny.parquet", "preferences", split="heldout")
    assert len(build_preference_dataset(store)) == 0
    assert len(build_preference_dataset(store, split="heldout")) == 3


def test_exports_round_trip(store: FeedbackStore, tmp_path: Path) -> None:
    import_file(store, ASSETS / "import_prefs_tiny.parquet", "preferences")
    import_file(store, ASSETS / "import_sft_tiny.jsonl", "demonstrations")
    for suffix in ("jsonl", "parquet"):
        out = tmp_path / f"prefs.{suffix}"
        assert export_dataset(store, "preference", out) == 3
        other = FeedbackStore(tmp_path / f"other-{suffix}.db")
        import_file(other, out, "preferences")
        assert build_preference_dataset(other).to_list() == build_preference_dataset(store).to_list()
    assert export_dataset(store, "sft", tmp_path / "sft.jsonl") == 5
    assert export_table(store, "demonstrations", tmp_path / "demos.parquet") == 5
    assert pq.read_table(tmp_path / "demos.parquet").num_rows == 5
    with pytest.raises(ValueError, match="jsonl or .parquet"):
        export_table(store, "ratings", tmp_path / "x.xlsx")


def test_cli_and_app_export_the_same_file(store: FeedbackStore, tmp_path: Path) -> None:
    """One exporter: the CLI (old spelling `preference` still accepted) and the Data tab write the same rows."""
    import_file(store, ASSETS / "import_prefs_tiny.parquet", "preferences")
    for name in ("preferences", "preference"):
        assert cli(["--db", store.path, "export", name, str(tmp_path / f"cli-{name}.jsonl")]) == 0
    path, rows = export_to_folder(store, "preferences", tmp_path / "exports")
    assert rows == 3 and path.parent == tmp_path / "exports" and path.name.startswith("preferences-")
    texts = {(tmp_path / "cli-preferences.jsonl").read_text(), (tmp_path / "cli-preference.jsonl").read_text()}
    assert texts == {path.read_text()} and len(path.read_text().splitlines()) == 3
    with pytest.raises(ValueError, match="export must be one of"):
        export_to_folder(store, "../users", tmp_path / "exports")
    assert sorted(p.name for p in (tmp_path / "exports").iterdir()) == [path.name]  # nothing written for a bad name


GOOD_PAIR = {"prompt": "Q", "chosen": "good", "rejected": "bad"}


def _jsonl(rows: list) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def _parquet(rows: list[dict]) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pylist(rows), sink)
    return sink.getvalue().to_pybytes()


class Bad(NamedTuple):
    """A file that must import nothing: its kind, name and bytes, the error it must raise, and the limits."""

    id: str
    kind: str
    name: str
    content: bytes
    message: str
    limits: ImportLimits | None = None


BAD = [
    Bad("bad-json-line-57", "preferences", "p.jsonl", _jsonl([GOOD_PAIR] * 56) + b'{"prompt": "Q" "chosen": "x"}\n',
        r"^line 57: invalid JSON \(Expecting ',' delimiter\)$"),
    Bad("empty-file", "prompts", "p.jsonl", b"", "the file is empty"),
    Bad("blank-lines-only", "prompts", "p.jsonl", b"\n  \n\n", "the file has no rows"),
    Bad("header-only-csv", "prompts", "p.csv", b"prompt\n", "the file has no rows"),
    Bad("binary", "prompts", "p.jsonl", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR",
        r"binary file \(NUL byte at offset 8\)"),
    Bad("latin-1", "prompts", "p.csv", "prompt\ncaf\u00e9\n".encode("latin-1"), "not UTF-8 text.*0xe9"),
    Bad("missing-chosen-row-3", "preferences", "p.csv", b"prompt,chosen,rejected\nQ,a,b\nR,c,d\nS,,f\n",
        "^row 3: field 'chosen' is missing"),
    Bad("wrong-columns", "demonstrations", "d.csv", b"question,answer\nQ,A\n",
        r"^row 1: field 'prompt' is missing \(fields present: 'question', 'answer'\)"),
    Bad("gradient-no-response-marker", "demonstrations", "d.jsonl",
        _jsonl([{"inputs": "<s>### Instruction:\nQ\n\n### Answer:\nA</s>"}]),
        "^line 1: field 'inputs' has no '### Response:' marker"),
    Bad("gradient-no-instruction", "demonstrations", "d.jsonl", _jsonl([{"inputs": "Q\n### Response:\nA"}]),
        "must start with '<s>### Instruction:'"),
    Bad("gradient-empty-answer", "demonstrations", "d.jsonl",
        _jsonl([{"inputs": "<s>### Instruction:\nQ\n\n### Response:\n</s>"}]), "empty instruction or response"),
    Bad("huge-field", "demonstrations", "d.jsonl", _jsonl([{"prompt": "Q", "completion": "x" * 2000}]),
        "^line 1: field 'completion' is 2,000 characters long; the limit is 1,000$",
        limits=ImportLimits(max_field_chars=1000)),
    Bad("too-many-rows", "prompts", "p.jsonl", _jsonl([{"prompt": f"q{i}"} for i in range(6)]),
        "6 rows; the limit is 5 per file", limits=ImportLimits(max_rows=5)),
    Bad("file-too-large", "prompts", "p.jsonl", _jsonl([{"prompt": "q" * 100}]),
        "the limit is 50 bytes", limits=ImportLimits(max_bytes=50)),
    Bad("array-not-object", "prompts", "p.jsonl", b'{"prompt": "a"}\n["b"]\n',
        "^line 2: expected a JSON object, got a list$"),
    Bad("chosen-wrong-type", "preferences", "p.jsonl", _jsonl([GOOD_PAIR, {**GOOD_PAIR, "chosen": 42}]),
        "^line 2: field 'chosen' must be a string or a list of messages, got a number$"),
    Bad("label-not-boolean", "unpaired", "u.csv", b"prompt,completion,label\nQ,A,maybe\n",
        "^row 1: field 'label' must be true/false"),
    Bad("messages-without-answer", "demonstrations", "d.jsonl",
        _jsonl([{"messages": [{"role": "user", "content": "Q"}]}]),
        "field 'messages' must end with the assistant's answer"),
    Bad("message-bad-role", "demonstrations", "d.jsonl",
        _jsonl([{"messages": [{"role": "human", "content": "Q"}, {"role": "assistant", "content": "A"}]}]),
        "field 'messages' message 0 needs a 'role'"),
    Bad("chosen-equals-rejected", "preferences", "p.jsonl", _jsonl([{**GOOD_PAIR, "rejected": "good"}]),
        "fields 'chosen' and 'rejected' are the same text"),
    Bad("unsupported-extension", "prompts", "p.txt", b"hello\n", "unsupported file type '.txt'"),
    Bad("corrupt-parquet", "preferences", "p.parquet", b"PAR1garbagegarbagePAR1", "not a readable Parquet file"),
    Bad("not-parquet", "preferences", "p.parquet", b"prompt,chosen\n", "missing the PAR1 header"),
    Bad("parquet-missing-column", "preferences", "p.parquet", _parquet([{"prompt": "Q", "chosen": "a"}]),
        "^row 1: field 'rejected' is missing"),
    Bad("csv-extra-values", "prompts", "p.csv", b"prompt\nQ,extra\n", "^row 1: more values than the header"),
    Bad("bad-split", "prompts", "p.jsonl", _jsonl([{"prompt": "Q", "split": "test"}]),
        "field 'split' must be 'train' or 'heldout'"),
    Bad("blank-prompt", "prompts", "p.jsonl", _jsonl([{"text": "   "}]), "^line 1: field 'text' is empty$"),
    Bad("implicit-prompt-mismatch", "preferences", "p.jsonl",
        _jsonl([{"chosen": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "a"}],
                 "rejected": [{"role": "user", "content": "R"}, {"role": "assistant", "content": "b"}]}]),
        "do not share a prompt conversation"),
    Bad("bad-row-after-good-rows", "unpaired", "u.jsonl",
        _jsonl([{"prompt": "Q", "completion": f"A{i}", "label": True} for i in range(9)] + [{"prompt": "Q"}]),
        "^line 10: field 'completion' is missing"),
]


@pytest.fixture()
def busy_store(store: FeedbackStore) -> FeedbackStore:
    """A store that already holds data, so "nothing changed" is checked against something."""
    import_file(store, ASSETS / "import_sft_tiny.jsonl", "demonstrations")
    import_file(store, ASSETS / "import_prefs_tiny.parquet", "preferences")
    p = store.add_prompt("Q")
    store.add_rating(store.add_response(p, "A", "base"), "ann", thumbs=1)
    return store


@pytest.mark.parametrize("bad", BAD, ids=[b.id for b in BAD])
def test_bad_file_imports_nothing_and_names_line_and_field(busy_store: FeedbackStore, tmp_path: Path,
                                                          bad: Bad) -> None:
    path = tmp_path / bad.name
    path.write_bytes(bad.content)
    before = _dump(busy_store)
    with pytest.raises(ImportValidationError, match=bad.message):
        import_file(busy_store, path, bad.kind, limits=bad.limits or ImportLimits())
    assert _dump(busy_store) == before


def test_import_validation_error_is_a_value_error(store: FeedbackStore, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no such file"):
        import_file(store, tmp_path / "missing.jsonl", "prompts")
    with pytest.raises(ValueError, match="kind must be one of"):
        import_file(store, ASSETS / "import_sft_tiny.jsonl", "sft")
