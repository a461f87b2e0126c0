"""Each stage's dataset: built once per round from the round's snapshot, written to the run folder, read by the stage.

A round (training/round.py) builds what its stages train on with one `feedback_db.datasets.Builds` (each kind and
split at most once, so reward and dpo share one build of the preference pairs), checks those same rows
(`data_check(..., builds=)`), and writes each stage's train/heldout splits to `data/runs/<id>/data/<stage>/`
(`datasets.save_to_disk`). The stage's recipe gets that folder as `--dataset_dir` and loads it instead of reading the
store. A recipe run on its own (`python -m training dpo --db ...`) builds its rows here, from its own snapshot, the
same way; `--dataset_file` (a JSONL file) replaces the store altogether.
"""

import os
import shutil
from pathlib import Path

from datasets import Dataset, DatasetDict, concatenate_datasets, load_dataset, load_from_disk

from feedback_db.datasets import KTO_FEATURES, Builds
from feedback_db.models import Snapshot

DATA_FOLDER = "data"  # data/runs/<id>/data/<stage>/
DATASET_KIND = {"sft": "sft", "reward": "preferences", "dpo": "preferences", "kto": "kto"}


def stage_dataset(stage: str, builds: Builds) -> DatasetDict:
    """`train`, plus `heldout` when the snapshot has held-out rows (`datasets` cannot load back an empty split)."""
    if stage == "online_rl":  # prompts only: the policy samples its own answers
        prompts = builds.store.list_prompts(split="train", snapshot=builds.snapshot)
        return DatasetDict(train=Dataset.from_dict({"prompt": [p.as_messages() for p in prompts]}))
    kind = DATASET_KIND[stage]
    heldout = builds.dataset(kind, "heldout")
    if stage == "kto":  # held-out preference pairs evaluate KTO too, as one up and one down answer
        heldout = concatenate_datasets([heldout, unpaired(builds.dataset("preferences", "heldout"))])
    return DatasetDict(train=builds.dataset(kind), **({"heldout": heldout} if len(heldout) else {}))


def unpaired(pairs: Dataset) -> Dataset:
    """prompt/chosen/rejected rows → prompt/completion/label rows (chosen: desirable, rejected: undesirable)."""
    rows = [{"prompt": row["prompt"], "completion": row[side], "label": side == "chosen"}
            for row in pairs for side in ("chosen", "rejected")]
    return Dataset.from_dict({name: [row[name] for row in rows] for name in KTO_FEATURES}, features=KTO_FEATURES)


def write_stage_datasets(builds: Builds, stages: list[str], run_folder: Path) -> None:
    """Each stage's dataset into `run_folder/data/<stage>/`, whole or not at all (a resumed round keeps what is
    there: the same snapshot gives the same rows)."""
    for stage in dict.fromkeys(stages):
        folder = stage_dataset_dir(run_folder, stage)
        if folder.is_dir():
            continue
        tmp = folder.with_name(f".tmp-{os.getpid()}-{stage}")
        tmp.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        stage_dataset(stage, builds).save_to_disk(str(tmp))
        os.replace(tmp, folder)


def stage_dataset_dir(run_folder: Path, stage: str) -> Path:
    return run_folder / DATA_FOLDER / stage


def load_stage_dataset(cfg, store, snapshot: Snapshot | None, stage: str) -> DatasetDict:
    """What a recipe trains on: `--dataset_file` (JSONL, train only), `--dataset_dir` (the round's build), else the
    store's rows of `snapshot`, built now."""
    if cfg.dataset_file is not None:
        return DatasetDict(train=load_dataset("json", data_files=cfg.dataset_file, split="train"))
    if cfg.dataset_dir is not None:
        return load_from_disk(cfg.dataset_dir)
    return stage_dataset(stage, Builds(store, snapshot))
