"""Switching the active LoRA adapter: serving's one private-field assignment vs PEFT's public set_adapter.

    python -m bench.adapter_select [--switches 50]

A random model of the embedded SmolLM2-135M's depth (30 decoder layers, LoRA on all 7 linear projections: 210 LoRA
layers) with six adapters, as the model service holds at most (`max_loaded`). Only the per-layer Python work is
measured, so the hidden size is small. Contenders: `webapp.serving.slots.select_lora_layers` (sets the layers'
active adapter list), PEFT's `model.base_model.set_adapter` and each layer's `set_adapter(inference_mode=True)`
(both also walk every adapter's parameters to set requires_grad).
"""

import argparse
import time

import torch
from peft import LoraConfig, get_peft_model
from peft.tuners.tuners_utils import BaseTunerLayer
from transformers import LlamaConfig, LlamaForCausalLM

from webapp.serving.slots import select_lora_layers

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--switches", type=int, default=50)
    args = parser.parse_args()
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=30,
                         num_attention_heads=4, num_key_value_heads=2)
    lora = LoraConfig(r=8, target_modules=TARGETS, inference_mode=True)
    peft = get_peft_model(LlamaForCausalLM(config).eval(), lora, adapter_name="slot1")
    for i in range(2, 7):
        peft.add_adapter(f"slot{i}", lora)
    layers = [m for m in peft.modules() if isinstance(m, BaseTunerLayer)]

    def ms_per_switch(switch) -> float:
        start = time.perf_counter()
        for i in range(args.switches):
            switch(f"slot{1 + i % 6}")
        return (time.perf_counter() - start) / args.switches * 1000

    results = {
        "select_lora_layers (private field)": ms_per_switch(lambda name: select_lora_layers(layers, [name])),
        "model.base_model.set_adapter": ms_per_switch(peft.base_model.set_adapter),
        "per-layer set_adapter(inference_mode=True)": ms_per_switch(
            lambda name: [layer.set_adapter(name, inference_mode=True) for layer in layers]),
    }
    print(f"{len(layers)} LoRA layers, 6 adapters, {args.switches} switches")
    for name, ms in results.items():
        print(f"{name:45s} {ms:8.2f} ms/switch")


if __name__ == "__main__":
    main()
