"""Several training processes, one set of decisions: rank 0 reads the store, writes the files and publishes; every
rank follows what rank 0 decided.

    torchrun --nproc_per_node 2 -m training dpo --db data/tuneloop.db                          # CPU: gloo
    accelerate launch --config_file training/accelerate/ddp.yaml -m training dpo --db ...     # GPUs

In a plain `python -m training ...` (one process) every helper here is a plain call. `start()` joins the process
group before anything else, because transformers decides at model-load time whether DeepSpeed ZeRO-3 partitions
the weights as they load (`zero3_init_flag`: needs the trainer config object alive, see `is_deepspeed_zero3_enabled`)
and whether FSDP loads real weights on local rank 0 only (`fsdp_cpu_ram_efficient_loading`: needs an initialised
process group, see `is_fsdp_enabled`). So a recipe builds its trainer config before it loads the model.
"""

import hashlib
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from accelerate import PartialState
from accelerate.utils import broadcast_object_list
from datasets import Dataset, DatasetDict, load_from_disk

from feedback_db import FeedbackStore
from training.hardware import device

T = TypeVar("T")


def start() -> PartialState:
    """Join the process group torchrun/accelerate launched (gloo on CPU); a no-op state for a single process."""
    return PartialState(cpu=device() == "cpu")


def is_main() -> bool:
    return PartialState().is_main_process


def from_main(compute: Callable[[], T]) -> T:
    """Rank 0 computes the value and every rank returns it (a pickled broadcast; the other ranks wait meanwhile).

    When `compute` fails on rank 0 every rank fails with its message, instead of the others waiting for a value
    that never comes.
    """
    state = PartialState()
    if state.num_processes == 1:
        return compute()
    box: list = [None]
    if state.is_main_process:
        try:
            box = [("value", compute())]
        except BaseException as error:
            broadcast_object_list([("error", f"{type(error).__name__}: {error}")], from_process=0)
            raise
    broadcast_object_list(box, from_process=0)
    kind, value = box[0]
    if kind == "error":
        raise RuntimeError(f"rank 0 failed: {value}")
    return value


def materialise(build: Callable[[], Dataset | DatasetDict], folder: Path) -> Dataset | DatasetDict:
    """Rank 0 builds the dataset and saves it to `folder`; every rank then loads that one copy from disk.

    Needed beyond "same rows everywhere": TRL's reference log-prob precompute (DPO, KTO) writes its result to
    `cache-<fingerprint>.arrow` beside the dataset's own files and every rank reads it back. An in-memory dataset has
    no files, so `datasets` gives each process a random path in its own temp dir and ranks > 0 read a file that does
    not exist. A dataset loaded from disk gives every rank the same folder.
    """
    from_main(lambda: build().save_to_disk(str(folder)))
    dataset = load_from_disk(str(folder))
    state = PartialState()
    if state.num_processes > 1:  # the evidence that every rank trains on the same rows
        say(f"[tuneloop] rank {state.process_index}/{state.num_processes} data {folder.name}: "
            f"{content_digest(dataset)}")
    return dataset


def say(line: str) -> None:
    """Print `line` in one write: with PYTHONUNBUFFERED, print() writes the text and its newline separately, and the
    lines of ranks sharing one pipe interleave."""
    sys.stdout.write(f"{line}\n")
    sys.stdout.flush()


def content_digest(dataset: Dataset | DatasetDict) -> str:
    """`<rows> rows sha256 <digest>` of the rows' content (per split for a DatasetDict)."""
    if isinstance(dataset, DatasetDict):
        return ", ".join(f"{name} {content_digest(split)}" for name, split in dataset.items())
    digest = hashlib.sha256(json.dumps(dataset.to_list(), sort_keys=True, default=str).encode()).hexdigest()
    return f"{len(dataset)} rows sha256 {digest[:16]}"


def open_store(db: str | None) -> FeedbackStore | None:
    """The store on rank 0 only (opening it may migrate, a write); None on other ranks and without --db."""
    return FeedbackStore(db) if db is not None and is_main() else None
