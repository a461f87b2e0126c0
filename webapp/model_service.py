"""The served model: one base model, PEFT adapters hot-swapped as named versions, full-weight versions beside it.

Generation is a token-by-token decode loop that holds the model lock for one forward pass at a time, selecting
the request's version before each step. So concurrent chats interleave instead of queueing behind each other, a
hot-swap (loading an adapter, changing the active version) waits at most one token step, and every request
finishes on the version it started with, whatever is activated meanwhile.

    models = ModelService(resolve_base_model("smollm2-135m-instruct", "data"), Path("data/versions"))
    models.load_version("v1-sft", Path("data/versions/v1-sft")); models.activate("v1-sft")
    print(models.generate([{"role": "user", "content": "Hi"}]))
"""

import json
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from peft import PeftModel
from transformers import PreTrainedModel

from training.base_model import load_causal_lm, load_tokenizer
from training.hardware import device

BASE = "base"


class VersionLoadError(RuntimeError):
    """A version could not be loaded; the previously active version keeps serving."""


@dataclass(frozen=True)
class Generation:
    text: str
    version: str
    prompt_tokens: int
    new_tokens: int
    first_token_s: float
    total_s: float


class ModelService:
    def __init__(self, base_model_path: str, versions_dir: Path | None = None, max_loaded: int = 6) -> None:
        self.base_model_path = base_model_path
        self.versions_dir = versions_dir
        self.max_loaded = max_loaded
        self.tokenizer = load_tokenizer(base_model_path)
        self._lm: PreTrainedModel = load_causal_lm(base_model_path).eval()
        self._peft: PeftModel | None = None
        self._full: dict[str, PreTrainedModel] = {}
        self._adapters: OrderedDict[str, Path] = OrderedDict()  # LoRA versions in LRU order
        self._selected: str | None = None  # which adapter the shared model's LoRA layers currently apply
        self._active = BASE
        self._in_use: dict[str, int] = {}
        self._lock = threading.RLock()
        self._stop_ids = {i for i in (self.tokenizer.eos_token_id, self.tokenizer.convert_tokens_to_ids("<|im_end|>"))
                          if isinstance(i, int) and i >= 0}

    # ----- registry ---------------------------------------------------------------------------------------
    @property
    def active(self) -> str:
        return self._active

    def loaded_versions(self) -> list[str]:
        with self._lock:
            return [BASE, *self._adapters, *self._full]

    def is_loaded(self, name: str) -> bool:
        return name == BASE or name in self._adapters or name in self._full

    def load_version(self, name: str, path: Path) -> None:
        """Load a version directory (PEFT adapter or full model) under `name`; raise VersionLoadError if unusable."""
        if name == BASE:
            raise VersionLoadError("'base' is reserved for the base model without an adapter.")
        path = Path(path)
        if not path.is_dir():
            raise VersionLoadError(f"Version {name!r}: directory {path} does not exist.")
        is_adapter = (path / "adapter_config.json").is_file()
        if not is_adapter and not (path / "config.json").is_file():
            raise VersionLoadError(f"Version {name!r}: {path} holds neither adapter_config.json nor config.json.")
        if is_adapter:
            self._check_adapter_config(name, path)
        with self._lock:
            if self.is_loaded(name):
                self.unload(name)
            self._evict_for_space()
            if is_adapter:
                self._load_adapter(name, path)
            else:
                self._load_full(name, path)

    def activate(self, name: str, path: Path | None = None) -> None:
        """Make `name` the version new requests use. Loads it first when a path is given and it is not loaded."""
        if not self.is_loaded(name):
            if path is None and self.versions_dir is not None:
                path = self.versions_dir / name
            if path is None:
                raise VersionLoadError(f"Version {name!r} is not loaded and no directory was given.")
            self.load_version(name, path)
        with self._lock:
            self._active = name

    def unload(self, name: str) -> None:
        with self._lock:
            if name == BASE:
                raise ValueError("The base model cannot be unloaded.")
            if name == self._active:
                raise ValueError(f"Version {name!r} is active; activate another version before unloading it.")
            if self._in_use.get(name):
                raise ValueError(f"Version {name!r} is still generating; try again when its requests finish.")
            if name in self._full:
                del self._full[name]
            elif name in self._adapters:
                del self._adapters[name]
                self._peft.delete_adapter(name)
                self._selected = None
            else:
                raise KeyError(f"Version {name!r} is not loaded.")

    def _check_adapter_config(self, name: str, path: Path) -> None:
        try:
            config = json.loads((path / "adapter_config.json").read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise VersionLoadError(f"Version {name!r}: adapter_config.json is unreadable ({err}).") from err
        if config.get("task_type") not in (None, "CAUSAL_LM"):
            raise VersionLoadError(f"Version {name!r} is a {config.get('task_type')} adapter (a reward model?), "
                                   "not a chat model.")
        if not any(path.glob("adapter_model.*")):
            raise VersionLoadError(f"Version {name!r}: {path} has no adapter weights (adapter_model.safetensors).")

    def _load_adapter(self, name: str, path: Path) -> None:
        try:
            if self._peft is None:
                self._peft = PeftModel.from_pretrained(self._lm, str(path), adapter_name=name, is_trainable=False)
            else:
                self._peft.load_adapter(str(path), adapter_name=name, is_trainable=False)
        except Exception as err:  # any failure inside PEFT leaves the registry as it was
            if self._peft is not None and name in self._peft.peft_config:
                self._peft.delete_adapter(name)
            self._selected = None
            raise VersionLoadError(f"Version {name!r} could not be loaded from {path}: {err}") from err
        self._peft.eval()
        self._selected = None
        self._adapters[name] = path

    def _load_full(self, name: str, path: Path) -> None:
        try:
            model = load_causal_lm(str(path)).eval()
        except Exception as err:
            raise VersionLoadError(f"Version {name!r} could not be loaded from {path}: {err}") from err
        if model.config.vocab_size != self._lm.config.vocab_size:
            raise VersionLoadError(f"Version {name!r} was trained from another base model "
                                   f"(vocabulary {model.config.vocab_size} vs {self._lm.config.vocab_size}).")
        self._full[name] = model

    def _evict_for_space(self) -> None:
        """Keep memory bounded: drop least recently used versions that are neither active nor generating."""
        while len(self._adapters) + len(self._full) >= self.max_loaded:
            idle = [n for n in [*self._adapters, *self._full] if n != self._active and not self._in_use.get(n)]
            if not idle:
                return
            self.unload(idle[0])

    # ----- generation -------------------------------------------------------------------------------------
    def _model_for(self, version: str) -> PreTrainedModel:
        """Called under the lock before every forward pass: point the shared model at `version`."""
        if version in self._full:
            return self._full[version]
        if self._peft is not None and self._selected != version:
            if version == BASE:
                self._peft.base_model.disable_adapter_layers()
            else:
                self._peft.base_model.enable_adapter_layers()
                self._peft.base_model.set_adapter(version)
                self._adapters.move_to_end(version)
            self._selected = version
        return self._lm

    def stream(self, messages: list[dict], version: str | None = None, max_new_tokens: int = 256,
               temperature: float = 0.0, top_p: float = 0.95, seed: int | None = None) -> Iterator[str]:
        """Yield the answer so far after each new token."""
        for text, _ in self._decode(messages, version, max_new_tokens, temperature, top_p, seed):
            yield text

    def generate(self, messages: list[dict], version: str | None = None, max_new_tokens: int = 256,
                 temperature: float = 0.0, top_p: float = 0.95, seed: int | None = None) -> str:
        return self.generate_full(messages, version, max_new_tokens, temperature, top_p, seed).text

    def generate_full(self, messages: list[dict], version: str | None = None, max_new_tokens: int = 256,
                      temperature: float = 0.0, top_p: float = 0.95, seed: int | None = None) -> Generation:
        """Generate and return the text with its version and timings (time to first token, total)."""
        *_, (text, stats) = self._decode(messages, version, max_new_tokens, temperature, top_p, seed)
        return Generation(text=text, **stats)

    def _decode(self, messages: list[dict], version: str | None, max_new_tokens: int, temperature: float,
                top_p: float, seed: int | None) -> Iterator[tuple[str, dict]]:
        if not messages:
            raise ValueError("messages is empty: give at least one {'role': 'user', 'content': ...} message.")
        if not 1 <= max_new_tokens <= 4096:
            raise ValueError(f"max_new_tokens must be between 1 and 4096, got {max_new_tokens}.")
        if not 0.0 <= temperature <= 5.0:
            raise ValueError(f"temperature must be between 0 and 5, got {temperature}.")
        with self._lock:
            version = self._active if version is None else version
            if not self.is_loaded(version):
                raise KeyError(f"Version {version!r} is not loaded (loaded: {', '.join(self.loaded_versions())}).")
            self._in_use[version] = self._in_use.get(version, 0) + 1
        try:
            yield from self._decode_loop(messages, version, max_new_tokens, temperature, top_p, seed)
        finally:
            with self._lock:
                self._in_use[version] -= 1

    def _decode_loop(self, messages: list[dict], version: str, max_new_tokens: int, temperature: float,
                     top_p: float, seed: int | None) -> Iterator[tuple[str, dict]]:
        started = time.perf_counter()
        ids = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                                 return_dict=True)["input_ids"].to(device())
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        prompt_tokens, new_ids, cache, first_token_s = ids.shape[1], [], None, 0.0
        step_input = ids
        for _ in range(max_new_tokens):
            with self._lock, torch.inference_mode():
                out = self._model_for(version)(input_ids=step_input, cache=cache, use_cache=True, logits_to_keep=1)
            cache = out.cache
            token = self._pick(out.logits[0, -1].float(), temperature, top_p, generator)
            if not new_ids:
                first_token_s = time.perf_counter() - started
            if token in self._stop_ids:
                break
            new_ids.append(token)
            step_input = torch.tensor([[token]], device=ids.device)
            stats = {"version": version, "prompt_tokens": prompt_tokens, "new_tokens": len(new_ids),
                     "first_token_s": first_token_s, "total_s": time.perf_counter() - started}
            yield self.tokenizer.decode(new_ids, skip_special_tokens=True), stats
        if not new_ids:  # the model stopped at once: still one (empty) answer
            yield "", {"version": version, "prompt_tokens": prompt_tokens, "new_tokens": 0,
                       "first_token_s": first_token_s, "total_s": time.perf_counter() - started}

    @staticmethod
    def _pick(logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator | None) -> int:
        if temperature == 0.0:
            return int(torch.argmax(logits))
        probs = torch.softmax(logits / temperature, dim=-1)
        sorted_probs, order = torch.sort(probs, descending=True)
        keep = torch.cumsum(sorted_probs, dim=-1) - sorted_probs < top_p  # nucleus: smallest set reaching top_p
        sorted_probs = sorted_probs * keep
        choice = torch.multinomial(sorted_probs / sorted_probs.sum(), 1, generator=generator)
        return int(order[choice])
