"""SFT recipe: what each technique trains (and leaves alone), on the real default model, a few steps each."""

from pathlib import Path

import torch
from safetensors.torch import load_file

from tests.training.conftest import ASSETS
from training.recipes.sft import SFTRecipeConfig, main

SFT_FILE = str(ASSETS / "sft_tiny.jsonl")


def test_lora_trains_adapter_and_leaves_base(data_dir: Path, base_model_path: str):
    folder = main(SFTRecipeConfig(dataset_file=SFT_FILE, data_dir=str(data_dir), max_steps=2))
    adapter = load_file(f"{folder}/adapter_model.safetensors")
    lora_b = [t for name, t in adapter.items() if "lora_B" in name]
    assert lora_b and all(t.abs().sum() > 0 for t in lora_b)  # lora_B starts at zero: non-zero means it trained
    assert (Path(folder) / "tuneloop.json").is_file()
    base = load_file(f"{base_model_path}/model.safetensors")
    from peft import PeftModel

    from training.base_model import load_causal_lm

    merged = PeftModel.from_pretrained(load_causal_lm(base_model_path), folder)
    state = merged.base_model.model.state_dict()
    q = "model.layers.0.self_attn.q_proj.base_layer.weight"
    assert torch.equal(state[q], base["model.layers.0.self_attn.q_proj.weight"])
    assert not list((data_dir / "versions").glob(".tmp-*"))


def test_full_changes_every_trainable_tensor(data_dir: Path, base_model_path: str):
    folder = main(SFTRecipeConfig(dataset_file=SFT_FILE, data_dir=str(data_dir), technique="full", max_steps=1,
                                  batch_size=6))
    base = load_file(f"{base_model_path}/model.safetensors")
    trained = load_file(f"{folder}/model.safetensors")
    unchanged = [name for name, tensor in base.items() if torch.equal(tensor, trained[name])]
    assert unchanged == []


def test_freeze_trains_only_top_blocks_and_untied_head(data_dir: Path, base_model_path: str):
    folder = main(SFTRecipeConfig(dataset_file=SFT_FILE, data_dir=str(data_dir), technique="freeze",
                                  freeze_top_n=2, max_steps=1, batch_size=6))
    base = load_file(f"{base_model_path}/model.safetensors")
    trained = load_file(f"{folder}/model.safetensors")
    n_layers = 1 + max(int(name.split(".")[2]) for name in base if name.startswith("model.layers."))
    top = {f"model.layers.{i}." for i in range(n_layers - 2, n_layers)}
    for name, tensor in base.items():
        should_train = any(name.startswith(prefix) for prefix in top) or name == "model.norm.weight"
        assert torch.equal(tensor, trained[name]) != should_train, name
    # the head was untied from the (frozen) embedding and trained on its own
    assert torch.equal(trained["model.embed_tokens.weight"], base["model.embed_tokens.weight"])
    assert not torch.equal(trained["lm_head.weight"], base["model.embed_tokens.weight"])
    from training.base_model import load_causal_lm

    reloaded = load_causal_lm(folder)
    assert not torch.equal(reloaded.lm_head.weight, reloaded.model.embed_tokens.weight)
    assert torch.equal(reloaded.lm_head.weight, trained["lm_head.weight"])
