"""Model versions on disk, the one home of: resolving a parent, loading a version as a model (to train, to answer),
publishing a finished output atomically, replacing an SDK adapter in place, and the provenance file they write.

Every recipe writes into `data/versions/.tmp-<pid>-<method>-*` and calls `publish_version`, which writes
`tuneloop.json` (provenance, see docs/ARCHITECTURE.md), renames the folder into `data/versions/<name>/` and
registers it in the store. The stage's datasets live beside it in `<that folder>.data` (training.distributed).
A crashed or killed run leaves only `.tmp-<pid>-*` folders, which `remove_stale_tmp_dirs` deletes once its
process is gone. Under several processes the pid is rank 0's and only rank 0 publishes.
"""

import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict, is_dataclass
from datetime import UTC, datetime
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForSequenceClassification, PreTrainedModel

from feedback_db.models import Snapshot
from training.base_model import load_causal_lm, load_causal_lm_for_training
from training.distributed import from_main
from training.hardware import device, pick_dtype

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
_TMP_RE = re.compile(r"^\.tmp-(\d+)-")


def read_provenance(version_dir: str | Path) -> dict:
    path = Path(version_dir) / "tuneloop.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def provenance(name: str, *, parent: str | None, method: str, technique: str, base_model: str, config: dict,
               data_snapshot: Snapshot | dict | None, metrics: dict) -> dict:
    """The tuneloop.json of a version (docs/ARCHITECTURE.md, "Model versions")."""
    if isinstance(data_snapshot, Snapshot):
        data_snapshot = data_snapshot.to_dict()
    return {"name": name, "parent": parent, "method": method, "technique": technique, "base_model": base_model,
            "config": config, "data_snapshot": data_snapshot, "metrics": metrics, "created": now()}


def write_provenance(folder: Path, record: dict) -> None:
    (folder / "tuneloop.json").write_text(json.dumps(record, indent=2, default=str))


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def load_version_model(base_model: str, version_dir: str | Path | None, trainable: bool = False,
                       merge: bool = True) -> PreTrainedModel:
    """A chat-model version as a causal LM: the base (None), the base + the version's LoRA adapter (merged into its
    own copy of the base, or kept as a PeftModel with `merge=False`, trainable if asked), or its full weights."""
    if version_dir is None:
        return load_causal_lm(base_model)
    if is_adapter_dir(version_dir):
        model = PeftModel.from_pretrained(load_causal_lm(base_model), str(version_dir), is_trainable=trainable)
        return model.merge_and_unload() if merge else model
    return load_causal_lm(str(version_dir))


def is_adapter_dir(version_dir: str | Path) -> bool:
    return (Path(version_dir) / "adapter_config.json").is_file()


def resolve_parent(store, parent: str | None) -> tuple[str | None, Path | None]:
    """`parent` is "base", "active", a version name from the store, or a version folder. Returns (name, dir)."""
    if parent in (None, "", "base"):
        return None, None
    if parent == "active":
        active = store.active_version() if store is not None else None
        return (active.name, Path(active.path)) if active else (None, None)
    if store is not None and (version := store.get_version(parent)) is not None:
        return version.name, Path(version.path)
    if Path(parent).is_dir():
        return read_provenance(parent).get("name", str(parent)), Path(parent)
    raise ValueError(f"--parent {parent}: no such version in the store and no such folder.")


def load_trainable_policy(
    base_model: str, parent_dir: Path | None, technique: str, lora_r: int, lora_alpha: int, freeze_top_n: int
) -> PreTrainedModel:
    """The policy a stage trains, starting from its parent's weights.

    lora: the parent's adapter loaded trainable (or a fresh LoRA on the base), so the result is one adapter on the
    base. full/freeze: a full model (the parent's folder, or base + the parent's adapter merged).
    """
    parent_is_adapter = parent_dir is not None and is_adapter_dir(parent_dir)
    if technique == "lora":
        if parent_dir is not None and not parent_is_adapter:
            raise ValueError(f"Parent {parent_dir} holds full weights; a LoRA stage needs a LoRA or base parent.")
        model = load_causal_lm_for_training(base_model)
        if parent_is_adapter:
            return PeftModel.from_pretrained(model, str(parent_dir), is_trainable=True)
        lora = LoraConfig(r=lora_r, lora_alpha=lora_alpha, lora_dropout=0.0, target_modules=LORA_TARGETS,
                          task_type="CAUSAL_LM")
        return get_peft_model(model, lora)
    if parent_is_adapter:
        base = load_causal_lm_for_training(base_model)
        model = PeftModel.from_pretrained(base, str(parent_dir)).merge_and_unload()
    else:
        model = load_causal_lm_for_training(str(parent_dir) if parent_dir is not None else base_model)
    if technique == "freeze":
        freeze_all_but_top(model, freeze_top_n)
    return model


def freeze_all_but_top(model: PreTrainedModel, top_n: int) -> None:
    """Feature-based fine-tuning: train only the top `top_n` decoder blocks, the final norm and the LM head.

    SmolLM2 ties the LM head to the input embedding; training the head would move the embedding too. The head is
    untied (given its own copy of the weights), so it trains while the embedding stays frozen; the saved model then
    has `tie_word_embeddings=False` and a separate `lm_head.weight`.
    """
    layers = model.model.layers
    if not 0 < top_n <= len(layers):
        raise ValueError(f"--freeze_top_n must be in 1..{len(layers)}, got {top_n}.")
    if model.lm_head.weight is model.model.embed_tokens.weight:
        model.lm_head.weight = torch.nn.Parameter(model.lm_head.weight.detach().clone())
        model.config.tie_word_embeddings = False
        model.config.get_text_config().tie_word_embeddings = False
        model._tied_weights_keys = {}
    for param in model.parameters():
        param.requires_grad = False
    for module in [*layers[-top_n:], model.model.norm, model.lm_head]:
        for param in module.parameters():
            param.requires_grad = True


def new_tmp_dir(data_dir: str | Path, method: str) -> Path:
    """A stage's output folder; under several processes rank 0 makes it and every rank gets its path."""
    def make() -> Path:
        versions = Path(data_dir) / "versions"
        versions.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f".tmp-{os.getpid()}-{method}-", dir=versions))

    return from_main(make)


def stage_data_dir(tmp_dir: Path) -> Path:
    """Where a stage materialises its datasets: beside its output folder, with the same `.tmp-<pid>-` prefix, so the
    stale-folder sweep also removes a killed run's copy; `publish_version` removes it after a successful one."""
    return tmp_dir.with_name(f"{tmp_dir.name}.data")


def remove_stale_tmp_dirs(data_dir: str | Path) -> list[Path]:
    """Delete `.tmp-<pid>-*` output folders whose training process no longer exists."""
    removed = []
    for path in (Path(data_dir) / "versions").glob(".tmp-*"):
        match = _TMP_RE.match(path.name)
        if match and not pid_alive(int(match.group(1))):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def publish_version(
    store, tmp_dir: Path, *, method: str, technique: str, parent: str | None, base_model: str, config,
    data_snapshot: Snapshot | dict | None, metrics: dict,
) -> str:
    """Write tuneloop.json, rename the temp folder into versions/<name>/ and register it. Returns the name.

    Without a store (a recipe run on a JSONL file) the folder is renamed to `<method>-<timestamp>` and not
    registered; the returned value is then the folder path. Under several processes only rank 0 (which saved the
    weights) writes and registers; every rank returns the name.
    """
    return from_main(lambda: _publish(store, tmp_dir, method=method, technique=technique, parent=parent,
                                      base_model=base_model, config=config, data_snapshot=data_snapshot,
                                      metrics=metrics))


def _publish(
    store, tmp_dir: Path, *, method: str, technique: str, parent: str | None, base_model: str, config,
    data_snapshot: Snapshot | dict | None, metrics: dict,
) -> str:
    shutil.rmtree(stage_data_dir(tmp_dir), ignore_errors=True)
    config_dict = asdict(config) if is_dataclass(config) else dict(config)
    if store is not None:
        name = store.next_version_name(method)
        while (tmp_dir.parent / name).exists():  # an orphan of a kill between rename and register: skip its name
            name = f"v{int(name[1:].split('-')[0]) + 1}-{method}"
    else:
        name = f"{method}-{datetime.now(UTC).strftime('%Y%m%d-%H%M%S')}"
    write_provenance(tmp_dir, provenance(name, parent=parent, method=method, technique=technique,
                                         base_model=base_model, config=config_dict, data_snapshot=data_snapshot,
                                         metrics=metrics))
    final = tmp_dir.parent / name
    os.replace(tmp_dir, final)
    if store is None:
        return str(final)
    store.register_version(
        name=name, parent=parent, method=method, technique=technique, path=str(final), base_model=base_model,
        config=config_dict, data_snapshot=data_snapshot, metrics=metrics,
    )
    return name


def replace_version(data_dir: str | Path, path: Path, write: Callable[[Path], None], method: str) -> None:
    """Rewrite the version folder `path` atomically (an SDK adapter after each fine_tune call): `write(tmp)` fills a
    new temp dir, which then takes `path`'s place.

    A directory cannot be renamed over a non-empty one, so the old one is first moved onto an empty temp dir; a
    crash between the two renames leaves the previous version in `versions/.tmp-<pid>-<method>-old-*`.
    """
    tmp = new_tmp_dir(data_dir, method)
    try:
        write(tmp)
        trash = new_tmp_dir(data_dir, f"{method}-old") if path.exists() else None
        if trash is not None:
            os.replace(path, trash)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if trash is not None:
        shutil.rmtree(trash)


def load_reward_model(base_model: str, version_dir: str | Path, tokenizer) -> PreTrainedModel:
    """A reward version as a plain sequence classifier (adapter merged): scores the last non-pad token."""
    model = AutoModelForSequenceClassification.from_pretrained(base_model, num_labels=1, dtype=pick_dtype())
    model.config.get_text_config().pad_token_id = tokenizer.pad_token_id
    model = PeftModel.from_pretrained(model, str(version_dir)).merge_and_unload()
    return model.to(device()).eval()
