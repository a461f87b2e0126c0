"""Multi-process training for real: `torchrun --nproc_per_node 2` (gloo on CPU) runs of the recipes and a round
against a tiny store, with the embedded model. Rank 0 reads the store, materialises the data, publishes and writes
progress; every rank trains on the same rows and ends with the same weights.
"""

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parent.parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def torchrun(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
               str(free_port()), *args]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return result


def per_rank(output: str, pattern: str) -> dict[str, dict[int, str]]:
    """{key: {rank: value}} from the lines every rank prints; `pattern` has the groups key, rank and value."""
    found: dict[str, dict[int, str]] = {}
    for match in re.finditer(pattern, output):
        found.setdefault(match["key"], {})[int(match["rank"])] = match["value"]
    return found


def assert_ranks_agree(output: str, stages: list[str]) -> None:
    """Every stage: both ranks loaded the same rows and ended with the same trainable weights."""
    data = per_rank(output, r"rank (?P<rank>\d)/2 data (?P<key>\S+): (?P<value>[^\n]+)")
    weights = per_rank(output, r"\[tuneloop\] (?P<key>\w+) rank (?P<rank>\d)/2 trainable weights sha256 "
                               r"(?P<value>\S+)")
    lines = "\n".join(line for line in output.splitlines() if "[tuneloop]" in line)
    assert len(data) == len(weights) == len(stages), lines
    for seen in [*data.values(), *(weights[stage] for stage in stages)]:
        assert seen.keys() == {0, 1} and seen[0] == seen[1], lines


@pytest.mark.slow  # ~11 s of start-up for two processes; the default suite keeps the 2-process SFT run
def test_rank0_decides_and_a_rank0_failure_reaches_every_rank(tmp_path: Path):
    torchrun(str(ROOT / "tests" / "training" / "distributed_probe.py"), str(tmp_path), timeout=120)
    ranks = [json.loads((tmp_path / f"rank{i}.json").read_text()) for i in (0, 1)]
    assert [r["processes"] for r in ranks] == [2, 2]
    assert ranks[0]["pid_of_rank0"] == ranks[1]["pid_of_rank0"]
    assert ranks[0]["rows"] == ranks[1]["rows"] == [ranks[0]["pid_of_rank0"]] * 3  # built once, by rank 0
    assert ranks[0]["digest"] == ranks[1]["digest"]
    assert ranks[0]["error"].startswith("ZeroDivisionError")
    assert ranks[1]["error"] == "RuntimeError: rank 0 failed: ZeroDivisionError: division by zero"  # no hang


def test_torchrun_sft_two_processes_publishes_one_version(store, data_dir: Path):
    run_id = store.create_run(config={}, stages=["sft"], username="admin")
    result = torchrun("-m", "training", "sft", "--db", store.path, "--data_dir", str(data_dir), "--parent", "base",
                      "--max_steps", "1", "--run_id", str(run_id))
    output = result.stdout + result.stderr
    assert_ranks_agree(output, ["sft"])
    (version,) = store.list_versions()
    assert version.metrics["processes"] == 2
    assert result.stdout.split()[-2:] == [version.name, version.name]  # every rank returned the published name
    progress = store.run_metrics(run_id)
    assert [m.step for m in progress] == [1, 1]  # one log step + the summary, from rank 0 only
    weights = load_file(Path(version.path) / "adapter_model.safetensors")
    assert any(w.abs().sum() > 0 for k, w in weights.items() if "lora_B" in k)  # a trained adapter, not the init
    assert not list((data_dir / "versions").glob(".tmp-*"))  # the output and its materialised data are gone


@pytest.mark.slow
@pytest.mark.timeout(1200)
@pytest.mark.parametrize("method", ["dpo", "kto", "reward"])
def test_torchrun_preference_recipes_two_processes(store, data_dir: Path, method: str):
    """DPO and KTO run TRL's reference log-prob precompute, whose cache file every rank must find."""
    extra = [] if method == "reward" else ["--parent", "base"]
    result = torchrun("-m", "training", method, "--db", store.path, "--data_dir", str(data_dir), "--max_steps", "2",
                      *extra)
    output = result.stdout + result.stderr
    assert_ranks_agree(output, [method])
    (version,) = store.list_versions()
    assert version.method == method and version.metrics["processes"] == 2
    assert not list((data_dir / "versions").glob(".tmp-*"))


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_torchrun_round_sft_reward_dpo_one_snapshot(store, data_dir: Path):
    result = torchrun("-m", "training", "round", "--db", store.path, "--stages", "sft,reward,dpo", "--max_steps", "1",
                      timeout=1700)
    output = result.stdout + result.stderr
    (snapshots,) = per_rank(output, r"round (?P<key>\d+) rank (?P<rank>\d): snapshot (?P<value>[^\n]+)").values()
    assert snapshots.keys() == {0, 1} and snapshots[0] == snapshots[1]
    assert_ranks_agree(output, ["sft", "reward", "dpo"])
    versions = {v.method: v for v in store.list_versions()}
    assert set(versions) == {"sft", "reward", "dpo"}
    assert versions["dpo"].parent == versions["sft"].name  # rank 1 got rank 0's published name too
    assert all(v.data_snapshot == versions["sft"].data_snapshot for v in versions.values())
    (run,) = store.list_runs()
    assert run.status == "succeeded" and run.versions == [versions[m].name for m in ("sft", "reward", "dpo")]
    assert "win_rate_vs_active" in store.get_version(versions["dpo"].name).metrics  # the gate ran (rank 0)
    sft = load_file(Path(versions["sft"].path) / "adapter_model.safetensors")
    dpo = load_file(Path(versions["dpo"].path) / "adapter_model.safetensors")
    assert all(not torch.equal(dpo[k], sft[k]) for k in sft if "lora_B" in k)
