"""Training-data correctness fixes of issue 12: an online RL round without a reward model is refused up front; the
reward model can start from the round's SFT adapter; online RL's KL reference is the parent policy."""

from pathlib import Path

import pytest
import torch
from datasets import Dataset
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForSequenceClassification
from trl import GRPOConfig

from training.base_model import load_causal_lm, load_tokenizer
from training.hardware import trainer_precision_kwargs
from training.recipes.online_rl import OnlineRLRecipeConfig, build_trainer
from training.recipes.reward import policy_adapter_on_classifier
from training.round import RoundConfig, reward_model_problems
from training.round import main as run_round
from training.versions import load_trainable_policy

Q_PROJ = "model.layers.0.self_attn.q_proj.weight"


def lora_parent(base_model_path: str, folder: Path) -> Path:
    """A LoRA adapter with non-zero B matrices (a policy that differs from the base)."""
    torch.manual_seed(0)
    model = get_peft_model(load_causal_lm(base_model_path),
                           LoraConfig(r=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    for name, param in model.named_parameters():
        if "lora_B" in name:
            param.data.normal_(0, 0.05)
    model.save_pretrained(str(folder))
    return folder


def test_online_rl_round_without_a_reward_model_is_refused_before_any_stage(store, data_dir: Path):
    assert reward_model_problems(RoundConfig(db=store.path, stages="reward,online_rl"), store) == []
    assert reward_model_problems(RoundConfig(db=store.path, stages="dpo"), store) == []
    with pytest.raises(SystemExit, match="Online RL needs a reward model"):
        run_round(RoundConfig(db=store.path, stages="sft,online_rl,reward"))
    assert store.list_runs()[0].status == "failed" and store.list_versions() == []
    (problem,) = reward_model_problems(RoundConfig(db=store.path, stages="online_rl", reward_model="v9-reward"), store)
    assert "--reward_model v9-reward: no reward version" in problem


def test_reward_model_starts_from_the_sft_adapter(base_model_path, tmp_path):
    parent = lora_parent(base_model_path, tmp_path / "sft")
    classifier = AutoModelForSequenceClassification.from_pretrained(base_model_path, num_labels=1)
    model = policy_adapter_on_classifier(classifier, parent)
    sft = load_trainable_policy(base_model_path, parent, "lora", 16, 32, 4)
    key = "model.layers.3.self_attn.v_proj.lora_B.default.weight"
    weights = dict(model.named_parameters())
    assert torch.equal(weights[f"base_model.model.{key}"], dict(sft.named_parameters())[f"base_model.model.{key}"])
    assert weights[f"base_model.model.{key}"].requires_grad
    assert any("score" in name and p.requires_grad for name, p in weights.items())
    with pytest.raises(ValueError, match="starts from a LoRA policy version only"):
        policy_adapter_on_classifier(classifier, None)


def grpo_reference(base_model_path: str, parent: Path | None, technique: str, tmp_path: Path):
    """The KL reference GRPOTrainer holds for a policy loaded as online_rl loads it (built, not trained)."""
    tokenizer = load_tokenizer(base_model_path)
    model = load_trainable_policy(base_model_path, parent, technique, 16, 32, 4)
    judge = AutoModelForSequenceClassification.from_pretrained(base_model_path, num_labels=1)
    judge.config.pad_token_id = tokenizer.pad_token_id
    cfg = OnlineRLRecipeConfig(dataset_file="unused.jsonl", reward_model="unused", data_dir=str(tmp_path),
                               technique=technique, report_to="none")
    args = GRPOConfig(output_dir=str(tmp_path / "out"), beta=0.04, num_generations=2, per_device_train_batch_size=2,
                      max_steps=1, report_to="none", **trainer_precision_kwargs())
    prompts = Dataset.from_list([{"prompt": [{"role": "user", "content": f"Question {i}"}]} for i in range(4)])
    trainer = build_trainer(cfg, args, model, parent, judge, tokenizer, prompts, tmp_path / "kl-reference", [])
    assert model.config._name_or_path == base_model_path  # restored: checkpoints name the base, not a temp folder
    return trainer.ref_model


def test_online_rl_kl_reference_is_the_lora_parent_for_a_full_stage(base_model_path, tmp_path):
    parent = lora_parent(base_model_path, tmp_path / "parent")
    merged = PeftModel.from_pretrained(load_causal_lm(base_model_path), str(parent)).merge_and_unload()
    base = load_causal_lm(base_model_path)
    for technique in ("full", "freeze"):
        reference = grpo_reference(base_model_path, parent, technique, tmp_path / technique)
        weights = dict(reference.named_parameters())
        assert torch.equal(weights[Q_PROJ], dict(merged.named_parameters())[Q_PROJ].to(weights[Q_PROJ].dtype))
        assert not torch.equal(weights[Q_PROJ], dict(base.named_parameters())[Q_PROJ].to(weights[Q_PROJ].dtype))
    # a base parent: the reference is the base (no copy saved); LoRA: TRL's frozen adapter copy, no second model
    reference = grpo_reference(base_model_path, None, "full", tmp_path / "base")
    assert torch.equal(dict(reference.named_parameters())[Q_PROJ], dict(base.named_parameters())[Q_PROJ])
    assert not (tmp_path / "base" / "kl-reference").exists()
    assert grpo_reference(base_model_path, parent, "lora", tmp_path / "lora") is None
