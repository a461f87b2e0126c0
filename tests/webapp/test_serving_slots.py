"""The one PEFT private field serving touches (`_active_adapter`, set by webapp.serving.slots.select_lora_layers):
this fails when a PEFT release changes what it means, on a tiny random model (no download, a second).

Why the private field: with six adapters on 210 LoRA layers (the embedded SmolLM2's depth), PEFT's public
`set_adapter` took 30-35 ms per switch against 0.4-0.7 ms for the field (`python -m bench.adapter_select`)."""

import pytest
import torch
from peft import LoraConfig, get_peft_model
from peft.tuners.tuners_utils import BaseTunerLayer
from transformers import LlamaConfig, LlamaForCausalLM

from webapp.serving.slots import select_lora_layers


@pytest.fixture(scope="module")
def peft_model():
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2)
    lora = LoraConfig(r=4, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False,
                      inference_mode=True)
    model = get_peft_model(LlamaForCausalLM(config).eval(), lora, adapter_name="a")
    model.add_adapter("b", lora)
    return model.eval()


def logits(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_select_lora_layers_matches_peft_set_adapter(peft_model):
    ids = torch.tensor([[1, 5, 9, 13]])
    layers = [m for m in peft_model.modules() if isinstance(m, BaseTunerLayer)]
    with peft_model.disable_adapter():
        base = logits(peft_model, ids)
    expected = {}
    for name in ("a", "b"):
        peft_model.base_model.set_adapter(name)  # PEFT's own, public way
        expected[name] = logits(peft_model, ids)
    assert not torch.allclose(expected["a"], expected["b"])

    for name in ("b", "a", "b"):
        select_lora_layers(layers, [name])
        assert all(layer.active_adapters == [name] for layer in layers)  # PEFT's public view of the field
        assert torch.allclose(logits(peft_model, ids), expected[name])
    select_lora_layers(layers, [])
    assert torch.allclose(logits(peft_model, ids), base)
