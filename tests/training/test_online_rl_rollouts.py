"""Online RL's rollouts with the LoRA adapter merged: same model function while merged, base weights back after,
and a GRPOTrainer step on them trains the adapter (tests/training/test_kto_online_rl.py runs the whole recipe)."""

from pathlib import Path

import pytest
import torch
from datasets import Dataset
from peft import LoraConfig, get_peft_model
from trl import GRPOConfig, GRPOTrainer

from training.base_model import load_causal_lm, load_tokenizer
from training.recipes.online_rl import lora_merged, merged_lora_rollouts
from training.versions import LORA_TARGETS


def lora_policy(base_model_path: str):
    torch.manual_seed(0)
    lora = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=LORA_TARGETS, task_type="CAUSAL_LM",
                      init_lora_weights=False)  # random B: the adapter changes the outputs
    return get_peft_model(load_causal_lm(base_model_path, dtype=torch.float32), lora)


def test_merged_adapter_computes_the_same_logits_and_the_base_comes_back(base_model_path: str):
    model = lora_policy(base_model_path).eval()
    ids = load_tokenizer(base_model_path)("The river runs to the sea", return_tensors="pt")["input_ids"]
    base = {name: p.detach().clone() for name, p in model.named_parameters() if "base_layer" in name}
    with torch.no_grad():
        with model.disable_adapter():
            plain = model(ids).logits
        adapted = model(ids).logits
        with lora_merged(model):
            merged = model(ids).logits
            assert any(not torch.equal(p, base[n]) for n, p in model.named_parameters() if n in base)
    assert not torch.allclose(plain, adapted, atol=1e-3)  # the adapter matters here
    torch.testing.assert_close(merged, adapted, atol=2e-4, rtol=1e-4)
    for name, p in model.named_parameters():
        if name in base:
            torch.testing.assert_close(p, base[name], atol=1e-6, rtol=1e-6)


@pytest.mark.slow
def test_rollouts_end_at_the_first_stop_token_and_a_step_trains_the_adapter(base_model_path: str, tmp_path: Path):
    tokenizer = load_tokenizer(base_model_path)
    prompt = [{"role": "user", "content": "Name a colour."}]
    trainer = GRPOTrainer(
        model=lora_policy(base_model_path),
        reward_funcs=lambda completions, **_: [float(len(c[0]["content"])) for c in completions],
        args=GRPOConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, gradient_checkpointing=False,
                        per_device_train_batch_size=4, num_generations=4, max_completion_length=12, max_steps=1,
                        learning_rate=1e-3, report_to="none"),
        train_dataset=Dataset.from_list([{"prompt": prompt}] * 4),
        processing_class=tokenizer,
        rollout_func=merged_lora_rollouts,
    )
    out = merged_lora_rollouts([prompt] * 4, trainer)
    assert out["prompt_ids"] == [tokenizer.apply_chat_template(prompt, add_generation_prompt=True)["input_ids"]] * 4
    stops = set(trainer.eos_token_ids)
    assert len(out["completion_ids"]) == 4
    for ids in out["completion_ids"]:
        assert 1 <= len(ids) <= 12 and not stops & set(ids[:-1])  # nothing after a stop token

    lora = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if "lora_" in n}
    trainer.train()
    assert trainer.state.global_step == 1
    assert any(not torch.equal(p, lora[n]) for n, p in trainer.model.named_parameters() if n in lora)
