"""Python SDK: adapters are registry versions, train only their LoRA weights, persist, and reject bad samples."""

import json
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import load_file

from training.base_model import load_causal_lm, load_tokenizer
from training.sdk import Client, encode_conversation, parse_sample
from training.versions import LORA_TARGETS

SAMPLES = [
    {"inputs": "<s>### Instruction:\nWhat is Tuneloop?\n\n### Response:\nTuneloop is a feedback app.</s>"},
    {"messages": [{"role": "user", "content": "Who makes Tuneloop?"},
                  {"role": "assistant", "content": "Its open-source community."}]},
]


@pytest.fixture(autouse=True)
def one_thread():
    """On shared, oversubscribed cores two OpenMP threads spin-wait at every barrier (~9x slower measured here)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def lora_tensors(adapter) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in adapter._model.named_parameters() if "lora_" in name}


def test_adapter_lifecycle(data_dir: Path, base_model_path: str):
    client = Client(data_dir=data_dir)
    adapter = client.get_base_model().create_model_adapter(name="Pavanmodel", rank=8, learning_rate=1e-2)
    version = client.store.get_version("Pavanmodel")
    assert (version.method, version.technique, version.status) == ("sdk", "lora", "candidate")
    assert Path(version.base_model).resolve() == Path(base_model_path).resolve()
    assert json.loads((data_dir / "versions" / "Pavanmodel" / "tuneloop.json").read_text())["method"] == "sdk"
    assert [a.id for a in client.list_model_adapters()] == ["Pavanmodel"]
    assert "Paris" in adapter.complete(query="What is the capital of France?").generated_output  # chat template
    before = lora_tensors(adapter)

    result = adapter.fine_tune(samples=SAMPLES)

    assert result.sum_loss > 0 and result.number_of_trainable_tokens > 10
    changed = lora_tensors(adapter)
    assert all(not torch.equal(before[n], changed[n]) for n in before if "lora_B" in n)  # lora_B starts at zero
    base = load_file(f"{base_model_path}/model.safetensors")
    served = adapter._model.get_base_model().state_dict()
    assert torch.equal(served["model.layers.0.self_attn.q_proj.base_layer.weight"],
                       base["model.layers.0.self_attn.q_proj.weight"])
    saved = load_file(str(data_dir / "versions" / "Pavanmodel" / "adapter_model.safetensors"))
    assert saved and all(torch.equal(t, changed[n.replace(".weight", ".default.weight")]) for n, t in saved.items())
    assert client.store.get_version("Pavanmodel").metrics["fine_tune_calls"] == 1
    assert not list((data_dir / "versions").glob(".tmp-*"))

    # a new client (as a new process would) continues from the saved weights and optimizer state
    reopened = Client(data_dir=data_dir).get_model_adapter(adapter_id="Pavanmodel")
    assert reopened.fine_tune(samples=SAMPLES).sum_loss == pytest.approx(adapter.fine_tune(samples=SAMPLES).sum_loss)
    reopened_weights, continued = lora_tensors(reopened), lora_tensors(adapter)
    assert all(torch.allclose(reopened_weights[n], continued[n], atol=1e-6) for n in continued)

    adapter.delete()
    assert client.list_model_adapters() == []
    assert not (data_dir / "versions" / "Pavanmodel").exists()
    assert client.store.get_version("Pavanmodel").status == "archived"
    with pytest.raises(ValueError, match="No model adapter 'Pavanmodel'"):
        client.get_model_adapter(adapter_id="Pavanmodel")
    again = client.get_base_model().create_model_adapter(name="Pavanmodel", rank=8, learning_rate=1e-2)
    assert [a.id for a in client.list_model_adapters()] == [again.id]
    with pytest.raises(ValueError, match="already exists"):
        client.get_base_model().create_model_adapter(name="Pavanmodel")


@pytest.mark.parametrize(("sample", "message"), [
    ("### Instruction:\nhi\n\n### Response:\nhello", r"samples\[1\]: expected a dict .* got str"),
    ({"input": "x"}, r"samples\[1\]: expected a dict with exactly one of 'inputs' or 'messages', got keys"),
    ({"inputs": "<s>### Instruction:\nhi\n\n</s>"}, r"samples\[1\]\['inputs'\]: expected .*### Response:"),
    ({"inputs": "<s>### Instruction:\n\n### Response:\nhello</s>"}, r"samples\[1\]\['inputs'\]: the instruction is"),
    ({"inputs": "<s>### Instruction:\nhi\n### Response:\n </s>"}, r"samples\[1\]\['inputs'\]: the response is empty"),
    ({"messages": [{"role": "user", "content": "hi"}]}, r"samples\[1\]\['messages'\]: the last message must be"),
    ({"messages": [{"role": "bot", "content": "hi"}]}, r"samples\[1\]\['messages'\]\[0\]: expected"),
])
def test_malformed_sample_names_index_and_problem(sample, message: str):
    parse_sample(0, SAMPLES[0])
    with pytest.raises(ValueError, match=message):
        parse_sample(1, sample)


def test_fine_tune_rejects_bad_samples_before_training(data_dir: Path):
    adapter = Client(data_dir=data_dir).get_base_model().create_model_adapter(name="strict")
    weights = (data_dir / "versions" / "strict" / "adapter_model.safetensors").read_bytes()
    with pytest.raises(ValueError, match=r"samples\[2\]"):
        adapter.fine_tune(samples=[*SAMPLES, {"inputs": "no markers"}])
    assert (data_dir / "versions" / "strict" / "adapter_model.safetensors").read_bytes() == weights


def test_only_assistant_turns_are_trained(base_model_path: str):
    tokenizer = load_tokenizer(base_model_path)
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello there."},
                {"role": "user", "content": "Bye"}, {"role": "assistant", "content": "Goodbye."}]
    ids, trained = encode_conversation(tokenizer, messages)
    assert ids == tokenizer(tokenizer.apply_chat_template(messages, tokenize=False), add_special_tokens=False)[
        "input_ids"]
    trained_text = "".join(tokenizer.decode([i]) for i, t in zip(ids, trained, strict=True) if t)
    assert trained_text == "Hello there.<|im_end|>\nGoodbye.<|im_end|>\n"
    assert parse_sample(0, SAMPLES[0]) == [{"role": "user", "content": "What is Tuneloop?"},
                                           {"role": "assistant", "content": "Tuneloop is a feedback app."}]


def test_app_lora_version_opens_read_only(data_dir: Path, base_model_path: str):
    client = Client(data_dir=data_dir)
    folder = data_dir / "versions" / "v1-sft"
    model = get_peft_model(load_causal_lm(base_model_path), LoraConfig(r=4, target_modules=LORA_TARGETS,
                                                                       task_type="CAUSAL_LM"))
    model.save_pretrained(folder)
    client.store.register_version(name="v1-sft", parent=None, method="sft", technique="lora", path=str(folder),
                                  base_model=base_model_path, config={}, data_snapshot={}, metrics={})
    client.store.register_version(name="v2-reward", parent=None, method="reward", technique="lora",
                                  path=str(folder), base_model=base_model_path, config={}, data_snapshot={},
                                  metrics={})

    adapter = client.get_model_adapter(adapter_id="v1-sft")

    assert [a.id for a in client.list_model_adapters()] == ["v1-sft"]
    assert adapter.complete(query="Say hi.", max_generated_token_count=4).generated_output
    with pytest.raises(ValueError, match="trained in the app"):
        adapter.fine_tune(samples=SAMPLES)
    with pytest.raises(ValueError, match="trained in the app"):
        adapter.delete()
    with pytest.raises(ValueError, match="LoRA chat adapters only"):
        client.get_model_adapter(adapter_id="v2-reward")
