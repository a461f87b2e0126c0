"""Run under `torchrun --nproc_per_node 2` by tests/training/test_distributed.py: exercises training.distributed with
no model. Each rank writes what it saw to <out>/rank<N>.json.

    torchrun --nproc_per_node 2 tests/training/distributed_probe.py <out dir>
"""

import json
import os
import sys
from pathlib import Path

from datasets import Dataset

from training.distributed import content_digest, from_main, materialise, start


def main() -> None:
    out = Path(sys.argv[1])
    state = start()
    seen: dict = {"rank": state.process_index, "processes": state.num_processes}
    seen["pid_of_rank0"] = from_main(os.getpid)  # computed on rank 0 only
    rows = materialise(lambda: Dataset.from_dict({"rank_that_built": [os.getpid()] * 3}), out / "data")
    seen["rows"] = list(rows["rank_that_built"])
    seen["digest"] = content_digest(rows)
    try:
        from_main(lambda: 1 / 0)
    except (ZeroDivisionError, RuntimeError) as error:
        seen["error"] = f"{type(error).__name__}: {error}"
    (out / f"rank{state.process_index}.json").write_text(json.dumps(seen))
    state.destroy_process_group()  # else gloo's threads can abort the interpreter at exit ("terminate called ...")


if __name__ == "__main__":
    main()
