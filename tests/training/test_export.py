"""Export: a version leaves as a PEFT folder or a merged HF folder that plain transformers loads, with a model card."""

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import gradio as gr
import pytest
import torch
from huggingface_hub import ModelCard
from peft import PeftModel
from transformers import AutoModelForCausalLM

from tests.webapp.conftest import handler, make_services
from training.__main__ import main as cli
from training.export import check_free_space, export_version
from training.recipes.sft import SFTRecipeConfig
from training.recipes.sft import main as sft
from training.sdk import Client
from webapp.ui import build_ui

QUESTION = "What is the capital of France?"
SECRET = "Kestrel-4411 is a prompt only reviewers saw"

# Runs with `python -I` in an empty folder: no Tuneloop module is importable, only the installed libraries.
PLAIN_LOAD = """
import importlib.util, json, sys
from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline
assert importlib.util.find_spec("training") is None and importlib.util.find_spec("feedback_db") is None
folder = sys.argv[1]
model = AutoModelForCausalLM.from_pretrained(folder)
chat = pipeline("text-generation", model=folder, tokenizer=AutoTokenizer.from_pretrained(folder))
out = chat([{"role": "user", "content": sys.argv[2]}], max_new_tokens=12, do_sample=False)
print(json.dumps({"answer": out[0]["generated_text"][-1]["content"], "class": type(model).__name__}))
"""


@pytest.fixture()
def trained(store, data_dir: Path):
    """A real 1-step SFT LoRA version from the store (v1-sft), a child registered on it (v2-dpo) and feedback."""
    pid = store.add_prompt(SECRET, split="heldout")
    response = store.add_response(pid, "An answer nobody may export.", model_version="base")
    store.create_user("rita", "a-long-password-1", "reviewer")
    store.add_rating(response, "rita", thumbs=1, comment="a comment nobody may export")
    name = sft(SFTRecipeConfig(db=store.path, data_dir=str(data_dir), parent="base", max_steps=1, seed=3,
                               learning_rate=5e-3))
    parent = store.get_version(name)
    child_dir = data_dir / "versions" / "v2-dpo"
    shutil.copytree(parent.path, child_dir)
    store.register_version(name="v2-dpo", parent=name, method="dpo", technique="lora", path=str(child_dir),
                           base_model=parent.base_model, config={**parent.config, "beta": 0.1},
                           data_snapshot=parent.data_snapshot, metrics={"train_loss": 0.5})
    store.update_version_metrics("v2-dpo", {"train_loss": 0.5, "gate_passed": True, "win_rate_vs_active": 0.75,
                                            "promoted": False})
    return store


def test_export_adapter_and_merged_load_without_tuneloop(trained, data_dir: Path, base_model_path: str, tmp_path):
    torch.set_num_threads(1)
    out = tmp_path / "out"

    # adapter: PEFT folder naming the base by hub id, nothing from the data dir
    cli(["export", "--db", trained.path, "--version", "v2-dpo", "--out", str(out / "a")])
    adapter_dir = out / "a"
    assert sorted(p.name for p in adapter_dir.iterdir()) == sorted(
        ["README.md", "adapter_config.json", "adapter_model.safetensors", "tokenizer.json", "tokenizer_config.json",
         "tuneloop.json", *[p.name for p in adapter_dir.glob("special_tokens_map.json")],
         *[p.name for p in adapter_dir.glob("chat_template.jinja")]])
    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    card = ModelCard.load(adapter_dir / "README.md")
    assert card.data.base_model == "HuggingFaceTB/SmolLM2-135M-Instruct" and card.data.library_name == "peft"
    assert card.data.license == "apache-2.0" and {"tuneloop", "dpo", "lora"} <= set(card.data.tags)
    assert "base → v1-sft (sft/lora" in card.text and "→ v2-dpo (dpo/lora" in card.text
    assert "| win_rate_vs_active | 0.75 |" in card.text and "| beta | 0.1 |" in card.text
    facts = json.loads((adapter_dir / "tuneloop.json").read_text())
    assert len(facts["base_model"]["sha256"]) == 64
    assert facts["data"]["counts"]["ratings"] == 1 and facts["data"]["reviewers"] == 1
    assert facts["data"]["prompt_splits"]["heldout"] == 4 and facts["data"]["counts"]["demonstrations"] > 0
    everything = "".join(p.read_text(errors="ignore") for p in adapter_dir.iterdir())
    assert SECRET not in everything and "nobody may export" not in everything and str(data_dir) not in everything
    plain = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_model_path), str(adapter_dir))
    served = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_model_path),
                                       trained.get_version("v2-dpo").path)
    assert all(torch.equal(a, b) for a, b in zip(plain.state_dict().values(), served.state_dict().values(),
                                                 strict=True))

    # the SDK and Admin › Versions › Export write the same adapter (the UI under data/exports/, plus a zip)
    weights = (adapter_dir / "adapter_model.safetensors").read_bytes()
    sdk_dir = Client(data_dir).get_model_adapter("v2-dpo").export(out / "sdk")
    assert (sdk_dir / "adapter_model.safetensors").read_bytes() == weights
    trained.create_user("alice", "a-long-password-2", "admin")
    text, archive = handler(build_ui(make_services(trained, data_dir)), "versions_export")(
        "v2-dpo", False, gr.Request(username="alice"))
    assert "Exported **v2-dpo**" in text and Path(archive).parent == data_dir / "exports"
    with zipfile.ZipFile(archive) as zipped:
        assert zipped.read("adapter_model.safetensors") == weights and "README.md" in zipped.namelist()
    assert trained.list_audit()[0].action == "export"

    # merged: plain transformers + pipeline in a process without Tuneloop; same greedy answer as the version
    merged_dir = export_version(trained, "v2-dpo", out / "m", merged=True)
    assert {"model.safetensors", "config.json", "generation_config.json", "tokenizer.json"} <= {
        p.name for p in merged_dir.iterdir()}
    assert ModelCard.load(merged_dir / "README.md").data.library_name == "transformers"
    result = subprocess.run([sys.executable, "-I", "-c", PLAIN_LOAD, str(merged_dir), QUESTION], cwd=tmp_path,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert loaded["class"] == "LlamaForCausalLM"
    version = Client(data_dir).get_model_adapter("v2-dpo")
    assert loaded["answer"].strip() == version.complete(QUESTION, max_generated_token_count=12).generated_output
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp dirs left


def test_export_refuses_bad_input_and_writes_nothing(store, data_dir: Path):
    (data_dir / "versions" / "v1-sft").mkdir(parents=True)
    store.register_version(name="v1-sft", parent=None, method="sft", technique="lora",
                           path=str(data_dir / "versions" / "v1-sft"), base_model="b", config={}, data_snapshot={},
                           metrics={})
    tmp_path = data_dir / "exports"
    tmp_path.mkdir()
    trained = store
    with pytest.raises(ValueError, match="'v9-nope': no such version .*v1-sft"):
        export_version(trained, "v9-nope", tmp_path / "x")
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match="already exists and is not an empty folder"):
        export_version(trained, "v1-sft", taken)
    assert [p.name for p in taken.iterdir()] == ["keep.txt"]
    free = shutil.disk_usage(tmp_path).free
    with pytest.raises(ValueError, match="not enough space"):
        check_free_space(tmp_path, free + (1 << 30))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]


PLAIN_SCORE = """
import importlib.util, json, sys
from transformers import AutoModelForSequenceClassification, AutoTokenizer
assert importlib.util.find_spec("training") is None
model = AutoModelForSequenceClassification.from_pretrained(sys.argv[1]).eval()
tokenizer = AutoTokenizer.from_pretrained(sys.argv[1])
ids = tokenizer.apply_chat_template(json.loads(sys.argv[2]), return_tensors="pt", return_dict=True)
print(json.dumps({"score": model(input_ids=ids["input_ids"]).logits[0, 0].item(), "class": type(model).__name__}))
"""


@pytest.mark.slow
def test_reward_version_exports_as_sequence_classifier(store, data_dir: Path, tmp_path: Path):
    from training.base_model import load_tokenizer
    from training.recipes.reward import RewardRecipeConfig
    from training.recipes.reward import main as reward
    from training.versions import load_reward_model

    torch.set_num_threads(1)
    name = reward(RewardRecipeConfig(db=store.path, data_dir=str(data_dir), max_steps=1))
    version = store.get_version(name)
    out = export_version(store, name, tmp_path / "rm", merged=True)
    card = ModelCard.load(out / "README.md")
    assert card.data.pipeline_tag == "text-classification" and "reward-model" in card.data.tags
    conversation = [{"role": "user", "content": "Why is the sky blue?"},
                    {"role": "assistant", "content": "Rayleigh scattering."}]
    result = subprocess.run([sys.executable, "-I", "-c", PLAIN_SCORE, str(out), json.dumps(conversation)],
                            cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    plain = json.loads(result.stdout.strip().splitlines()[-1])
    tokenizer = load_tokenizer(version.base_model)
    served = load_reward_model(version.base_model, version.path, tokenizer)
    ids = tokenizer.apply_chat_template(conversation, return_tensors="pt", return_dict=True)["input_ids"]
    with torch.no_grad():
        expected = served(input_ids=ids).logits[0, 0].item()
    assert plain["class"] == "LlamaForSequenceClassification"
    assert plain["score"] == pytest.approx(expected, abs=1e-4)
