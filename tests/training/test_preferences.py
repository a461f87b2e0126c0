"""Reward and DPO recipes on the tiny preference set (real default model)."""

import json
from pathlib import Path

from datasets import load_dataset

from tests.training.conftest import ASSETS
from training.base_model import load_tokenizer
from training.evaluate import completion_logp
from training.recipes.dpo import DPORecipeConfig
from training.recipes.dpo import main as dpo
from training.recipes.reward import RewardRecipeConfig, pairwise_accuracy
from training.recipes.reward import main as reward
from training.versions import load_reward_model, load_version_model

PAIRS_FILE = str(ASSETS / "pairs_tiny.jsonl")


def mean_margin(model, tokenizer, pairs) -> float:
    margins = [completion_logp(model, tokenizer, row["prompt"], row["chosen"])
               - completion_logp(model, tokenizer, row["prompt"], row["rejected"]) for row in pairs]
    return sum(margins) / len(margins)


def test_reward_model_beats_chance_on_separable_pairs(data_dir: Path, base_model_path: str):
    folder = reward(RewardRecipeConfig(dataset_file=PAIRS_FILE, data_dir=str(data_dir), max_steps=4,
                                       eval_fraction=0.0, learning_rate=5e-4))
    metrics = json.loads((Path(folder) / "tuneloop.json").read_text())["metrics"]
    assert metrics["train_accuracy"] > 0.75
    tokenizer = load_tokenizer(base_model_path)
    reloaded = load_reward_model(base_model_path, folder, tokenizer)  # the saved adapter + score head
    pairs = load_dataset("json", data_files=PAIRS_FILE, split="train")
    assert pairwise_accuracy(reloaded, tokenizer, pairs)["accuracy"] > 0.75


def test_dpo_raises_chosen_rejected_margin(data_dir: Path, base_model_path: str):
    tokenizer = load_tokenizer(base_model_path)
    pairs = load_dataset("json", data_files=PAIRS_FILE, split="train").select(range(6))
    before = mean_margin(load_version_model(base_model_path, None).eval(), tokenizer, pairs)
    folder = dpo(DPORecipeConfig(dataset_file=PAIRS_FILE, data_dir=str(data_dir), parent="base", max_steps=3))
    after = mean_margin(load_version_model(base_model_path, folder).eval(), tokenizer, pairs)
    assert after > before + 1.0
    assert not (Path(folder) / "ref").exists()  # TRL's frozen reference adapter is not saved
