"""LoRA versions in slots: PEFT adapters named `slot<N>` inside the one shared model, one version per slot.

Injecting a new adapter into every layer takes about a second of pure Python, so a version whose LoRA config
matches a free slot's is loaded by copying its weights into that slot (milliseconds); `prepare_spare()` keeps one
free slot ready, outside the request path. The caller (ModelService) holds the model lock around every call and
never frees a slot whose version is active or generating, so no request sees its weights change.

`select_lora_layers` is the one place that touches a PEFT private field (see its docstring and
tests/webapp/test_serving_slots.py, which fails when PEFT changes it).
"""

import copy
import json
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch
from peft import PeftModel
from peft.tuners.tuners_utils import BaseTunerLayer
from safetensors.torch import load_file
from transformers import PreTrainedModel

from webapp.serving.errors import BASE, VersionLoadError

# adapter_config.json keys that record where an adapter came from, not how its modules compute
PROVENANCE_KEYS = ("base_model_name_or_path", "revision", "inference_mode", "peft_version", "auto_mapping")


@dataclass
class Slot:
    """One PEFT adapter of the shared model; holds one LoRA version at a time, or none (free)."""

    name: str
    signature: str | None  # the module-shaping part of its LoRA config; None: never reused (DoRA, modules_to_save)
    params: dict[str, torch.nn.Parameter]  # key as in adapter_model.safetensors -> this slot's parameter
    version: str | None = None


def select_lora_layers(layers: list[BaseTunerLayer], slots: list[str]) -> None:
    """Make `slots` the adapters the LoRA layers apply ([]: none, the base model).

    PEFT's public `set_adapter` (per layer or on the model) also walks every adapter of every layer to set
    requires_grad and re-freeze: 30-35 ms per switch with six adapters vs < 1 ms here (`python -m
    bench.adapter_select`), paid between interleaved requests. Our adapters
    are frozen once, at load, so only the active list changes here. `_active_adapter` is private to PEFT: this is
    the only function that touches it, and tests/webapp/test_serving_slots.py checks it against PEFT's own
    `set_adapter` (the public `active_adapters` and the forward output) so a PEFT change fails there."""
    for layer in layers:
        layer._active_adapter = slots


def check_adapter_config(name: str, path: Path) -> dict:
    """adapter_config.json of a chat-model adapter with weights beside it; VersionLoadError otherwise."""
    try:
        config = json.loads((path / "adapter_config.json").read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise VersionLoadError(f"Version {name!r}: adapter_config.json is unreadable ({err}).") from err
    if config.get("task_type") not in (None, "CAUSAL_LM"):
        raise VersionLoadError(f"Version {name!r} is a {config.get('task_type')} adapter (a reward model?), "
                               "not a chat model.")
    if not any(path.glob("adapter_model.*")):
        raise VersionLoadError(f"Version {name!r}: {path} has no adapter weights (adapter_model.safetensors).")
    return config


def read_adapter_weights(name: str, path: Path, config: dict) -> dict[str, torch.Tensor] | None:
    """The adapter's tensors, for copying into a free slot; None when only PEFT's own loading applies."""
    if signature(config) is None or not (path / "adapter_model.safetensors").is_file():
        return None
    try:
        return load_file(path / "adapter_model.safetensors")
    except Exception as err:  # a truncated or garbled file: refuse it like PEFT would
        raise VersionLoadError(f"Version {name!r} could not be loaded from {path}: {err}") from err


def signature(config: dict) -> str | None:
    """What must match for a LoRA adapter's weights to be copied into another adapter's slot: its whole config but
    provenance. None for adapters whose state is not only lora_A/lora_B weights (DoRA, modules_to_save)."""
    if config.get("peft_type") != "LORA" or config.get("use_dora") or config.get("modules_to_save"):
        return None
    shape = {k: v for k, v in config.items() if k not in PROVENANCE_KEYS}
    if isinstance(shape.get("target_modules"), list):
        shape["target_modules"] = sorted(shape["target_modules"])  # saved from a set: any order
    return json.dumps(shape, sort_keys=True)


class LoraSlots:
    """The slot registry of one shared base model. Not thread-safe: the caller holds the model lock."""

    def __init__(self, lm: PreTrainedModel) -> None:
        self._lm = lm
        self.peft: PeftModel | None = None
        self.versions: OrderedDict[str, Slot] = OrderedDict()  # loaded LoRA versions in LRU order
        self._slots: dict[str, Slot] = {}  # at most one free slot beyond the loaded versions
        self._slot_count = 0
        self._last_slot: Slot | None = None  # the slot loaded most recently: the spare copies its config
        self._lora_layers: list[BaseTunerLayer] = []
        self.peft_selects = False  # some adapter has modules_to_save: select through PEFT's set_adapter
        self._selected: list[str] | None = None  # the slot the LoRA layers apply ([] = none); None = unknown

    def load(self, name: str, path: Path, config: dict, weights: dict[str, torch.Tensor] | None) -> None:
        sig = signature(config)
        slot = self._free_slot(sig, weights) if weights is not None else None
        if slot is not None:
            with torch.no_grad():
                for key, value in weights.items():
                    slot.params[key].copy_(value)
        else:  # no compatible free slot: inject a new adapter (PEFT also checks the weights fit this base model)
            slot_name = self._new_slot_name()
            try:
                if self.peft is None:
                    self.peft = PeftModel.from_pretrained(self._lm, str(path), adapter_name=slot_name,
                                                          is_trainable=False)
                else:
                    self.peft.load_adapter(str(path), adapter_name=slot_name, is_trainable=False)
            except Exception as err:  # any failure inside PEFT leaves the registry as it was
                if self.peft is not None:
                    if slot_name in self.peft.peft_config:
                        self.peft.delete_adapter(slot_name)
                    self._after_injection()
                raise VersionLoadError(f"Version {name!r} could not be loaded from {path}: {err}") from err
            self._after_injection()
            slot = self._slots[slot_name] = Slot(slot_name, sig, self._slot_params(slot_name))
        slot.version = name
        self.versions[name] = slot
        self._last_slot = slot
        self.trim(keep=sig)

    def release(self, name: str) -> None:
        """Free the version's slot (its weights stay until a load reuses or `trim` drops it)."""
        self.versions.pop(name).version = None

    def prepare_spare(self) -> bool:
        """Add a free slot shaped like the last loaded adapter (about a second: PEFT injects into every layer)."""
        last = self._last_slot
        if last is None or last.signature is None or any(s.version is None for s in self._slots.values()):
            return False
        name = self._new_slot_name()
        self.peft.add_adapter(name, copy.deepcopy(self.peft.peft_config[last.name]))
        self._after_injection()
        self._slots[name] = Slot(name, last.signature, self._slot_params(name))
        return True

    def trim(self, keep: str | None) -> None:
        """Bound memory: at most one free, reusable slot stays, preferably one with signature `keep`."""
        free = [s for s in self._slots.values() if s.version is None]
        reusable = [s for s in free if s.signature is not None]
        kept = next((s for s in reversed(reusable) if s.signature == keep), reusable[-1] if reusable else None)
        dropped = [s for s in free if s is not kept]
        for slot in dropped:
            del self._slots[slot.name]
            self.peft.delete_adapter(slot.name)
            if self._last_slot is slot:
                self._last_slot = kept
        if dropped:
            self._after_injection()

    def select(self, version: str) -> None:
        """Point the shared model at `version` (BASE: no adapter) for the next forward pass."""
        if self.peft is None:
            return
        slots = [] if version == BASE else [self.versions[version].name]
        if version != BASE:
            self.versions.move_to_end(version)
        if self._selected == slots:
            return
        if self.peft_selects:  # modules_to_save copies switch only through PEFT's own API
            if not slots:
                self.peft.base_model.disable_adapter_layers()
            else:
                self.peft.base_model.enable_adapter_layers()
                self.peft.base_model.set_adapter(slots[0])
        else:
            select_lora_layers(self._lora_layers, slots)
        self._selected = slots

    def mixes(self, version: str) -> bool:
        """Whether the version's rows can share a batch with other versions' (PEFT's adapter_names)."""
        return not self.peft_selects and self.versions[version].signature is not None

    def _free_slot(self, sig: str | None, weights: dict[str, torch.Tensor]) -> Slot | None:
        """A free slot with the same config whose parameters take exactly these tensors."""
        for slot in self._slots.values():
            if (slot.version is None and slot.signature == sig and slot.params.keys() == weights.keys()
                    and all(slot.params[k].shape == v.shape for k, v in weights.items())):
                return slot
        return None

    def _new_slot_name(self) -> str:
        self._slot_count += 1
        return f"slot{self._slot_count}"

    def _slot_params(self, slot_name: str) -> dict[str, torch.nn.Parameter]:
        """Map the slot's parameters to adapter_model.safetensors keys (the same names without the adapter name)."""
        params = {}
        for key, param in self.peft.named_parameters():
            parts = key.split(".")
            if slot_name in parts:
                parts.remove(slot_name)
                params[".".join(parts)] = param
        return params

    def _after_injection(self) -> None:
        """PEFT changed the adapters (and set its own active one): refresh what the fast selection relies on."""
        self.peft.eval()
        self._lora_layers = [m for m in self._lm.modules() if isinstance(m, BaseTunerLayer)]
        self.peft_selects = any(c.modules_to_save for c in self.peft.peft_config.values())
        if not self.peft_selects:
            self.peft.base_model.enable_adapter_layers()
        self._selected = None
