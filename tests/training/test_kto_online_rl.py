"""KTO on thumbs and online RL (GRPO) against a trained reward model, through the store."""

from pathlib import Path

import pytest

from training.recipes.kto import KTORecipeConfig
from training.recipes.kto import main as kto
from training.recipes.online_rl import OnlineRLRecipeConfig
from training.recipes.online_rl import main as online_rl
from training.recipes.reward import RewardRecipeConfig
from training.recipes.reward import main as reward


def test_kto_trains_on_thumbs(store, data_dir: Path):
    run_id = store.create_run(config={}, stages=["kto"], username="admin")
    name = kto(KTORecipeConfig(db=store.path, data_dir=str(data_dir), parent="base", max_steps=2, run_id=run_id))
    version = store.get_version(name)
    assert version.method == "kto" and version.parent is None
    assert version.metrics["desirable"] > version.metrics["undesirable"] > 0
    assert version.metrics["desirable_weight"] < 1.0 == version.metrics["undesirable_weight"]  # label balance
    rows = store.run_metrics(run_id)
    assert [r.metrics["step"] for r in rows if "loss" in r.metrics] == [1, 2]
    assert all("kl" in r.metrics for r in rows if "loss" in r.metrics)


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_online_rl_logs_rewards_and_kl(store, data_dir: Path):
    run_id = store.create_run(config={}, stages=["reward", "online_rl"], username="admin")
    reward_name = reward(RewardRecipeConfig(db=store.path, data_dir=str(data_dir), max_steps=2, run_id=run_id))
    name = online_rl(OnlineRLRecipeConfig(db=store.path, data_dir=str(data_dir), parent="base", max_steps=2,
                                          max_completion_length=16, run_id=run_id))
    version = store.get_version(name)
    assert version.method == "online_rl" and version.metrics["reward_model"] == reward_name
    rows = [r.metrics for r in store.run_metrics(run_id) if r.stage == "online_rl" and "loss" in r.metrics]
    assert len(rows) == 2
    assert all("reward" in r and "kl" in r for r in rows)
    # a freeze stage from that LoRA version: KL towards it (its merged copy, saved beside the stage's data while
    # the trainer is built), and nothing of that copy left behind or published
    frozen = store.get_version(online_rl(OnlineRLRecipeConfig(
        db=store.path, data_dir=str(data_dir), parent=name, technique="freeze", max_steps=1,
        max_completion_length=8, run_id=run_id)))
    assert frozen.parent == name and frozen.metrics["kl_reference"] == name and frozen.technique == "freeze"
    assert not list((data_dir / "versions").glob(".tmp-*")) and not list(Path(frozen.path).glob("kl-reference*"))
