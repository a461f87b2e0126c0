"""The served model: one base model, PEFT adapters hot-swapped as named versions, full-weight versions beside it.

Generation runs on one engine thread (webapp/serving/engine.py) that decodes every request in one batch: concurrent chats
and generation jobs join the running batch between two decode steps, rows of different LoRA versions mix in one
forward pass (PEFT's adapter_names), and each step holds the model lock for one forward pass. So a hot-swap (loading
an adapter, changing the active version) waits at most one step, and every request finishes on the version it
started with, whatever is activated meanwhile.

LoRA versions live in slots: PEFT adapters named `slot<N>` inside the shared model. Injecting a new adapter into
every layer takes about a second of pure Python, so a version whose LoRA config matches a free slot's is loaded by
copying its weights into that slot (milliseconds); `prepare_spare()` keeps one free slot ready, outside the request
path. A slot whose version is active or generating is never free, so no request sees its weights change.

    models = ModelService(resolve_base_model("smollm2-135m-instruct", "data"), Path("data/versions"))
    models.load_version("v1-sft", Path("data/versions/v1-sft")); models.activate("v1-sft")
    print(models.generate([{"role": "user", "content": "Hi"}]))
"""

import copy
import heapq
import itertools
import json
import queue
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from peft import PeftModel
from peft.tuners.tuners_utils import BaseTunerLayer
from safetensors.torch import load_file
from transformers import PreTrainedModel

from training.base_model import load_causal_lm, load_tokenizer
from training.generation import BASE_ADAPTER, Request, model_forward
from webapp.serving.engine import CHAT, JOB, Engine, Route, Ticket

BASE = "base"
# TurnLock priorities: registry changes (load, activate) first, then the engine's forward passes
REGISTRY, DECODE = 0, 1
# adapter_config.json keys that record where an adapter came from, not how its modules compute
PROVENANCE_KEYS = ("base_model_name_or_path", "revision", "inference_mode", "peft_version", "auto_mapping")


class VersionLoadError(RuntimeError):
    """A version could not be loaded; the previously active version keeps serving."""


class TurnLock:
    """A reentrant lock handed over in order: lower `priority` first, then first come, first served.

    Python's RLock lets whichever thread wakes first win, so a request arriving among busy chats could wait many of
    their decode steps for its first forward pass. Here a registry change (load, activate: plain `with lock`) and
    then a request's prefill go before the next decode step, and decode steps take turns."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._waiting: list[tuple[int, int]] = []  # heap of (priority, ticket)
        self._tickets = itertools.count()
        self._owner: int | None = None
        self._depth = 0

    @contextmanager
    def turn(self, priority: int = REGISTRY) -> Iterator[None]:
        self.acquire(priority)
        try:
            yield
        finally:
            self.release()

    def acquire(self, priority: int = REGISTRY) -> None:
        me = threading.get_ident()
        with self._cond:
            if self._owner == me:
                self._depth += 1
                return
            entry = (priority, next(self._tickets))
            heapq.heappush(self._waiting, entry)
            try:
                while self._owner is not None or self._waiting[0] != entry:
                    self._cond.wait()
            except BaseException:  # interrupted while waiting: leave the queue to the others
                self._waiting.remove(entry)
                heapq.heapify(self._waiting)
                self._cond.notify_all()
                raise
            heapq.heappop(self._waiting)
            self._owner, self._depth = me, 1

    def release(self) -> None:
        with self._cond:
            self._depth -= 1
            if self._depth == 0:
                self._owner = None
                self._cond.notify_all()

    def __enter__(self) -> None:
        self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


@dataclass
class _Slot:
    """One PEFT adapter of the shared model; holds one LoRA version at a time, or none (free)."""

    name: str
    signature: str | None  # the module-shaping part of its LoRA config; None: never reused (DoRA, modules_to_save)
    params: dict[str, torch.nn.Parameter]  # key as in adapter_model.safetensors -> this slot's parameter
    version: str | None = None


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
        self._adapters: OrderedDict[str, _Slot] = OrderedDict()  # LoRA versions in LRU order
        self._slots: dict[str, _Slot] = {}  # at most one free slot beyond the loaded versions
        self._slot_count = 0
        self._last_slot: _Slot | None = None  # the slot loaded most recently: the spare copies its config
        self._lora_layers: list[BaseTunerLayer] = []
        self._peft_selects = False  # some adapter has modules_to_save: select through PEFT's set_adapter
        self._selected: list[str] | None = None  # the slot the LoRA layers apply ([] = none); None = unknown
        self._active = BASE
        self._in_use: dict[str, int] = {}
        self._lock = TurnLock()
        self._engine = Engine(self.tokenizer, lambda: self._lock.turn(DECODE), self._release_version)

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
            config = self._check_adapter_config(name, path)
            weights = self._read_adapter_weights(name, path, config)  # before the lock: generation goes on
        with self._lock:
            if self.is_loaded(name):
                self.unload(name)
            self._evict_for_space()
            if is_adapter:
                self._load_adapter(name, path, config, weights)
            else:
                self._load_full(name, path)

    def activate(self, name: str, path: Path | None = None) -> None:
        """Make `name` the version new requests use. Loads it first when a path is given and it is not loaded."""
        with self._lock:  # load and switch in one turn: no forward pass waits in between
            if not self.is_loaded(name):
                if path is None and self.versions_dir is not None:
                    path = self.versions_dir / name
                if path is None:
                    raise VersionLoadError(f"Version {name!r} is not loaded and no directory was given.")
                self.load_version(name, path)
            self._active = name

    def unload(self, name: str) -> None:
        with self._lock:
            self._release(name)
            self._trim_free_slots(keep=None)

    def prepare_spare(self) -> bool:
        """Add a free LoRA slot shaped like the last loaded adapter, so the next compatible version loads by copying
        its weights. Holds the lock for about a second (PEFT injects into every layer): call it outside the request
        path, e.g. from the poller a while after a swap. Returns whether it added one."""
        with self._lock:
            last = self._last_slot
            if last is None or last.signature is None or any(s.version is None for s in self._slots.values()):
                return False
            name = self._new_slot_name()
            self._peft.add_adapter(name, copy.deepcopy(self._peft.peft_config[last.name]))
            self._after_injection()
            self._slots[name] = _Slot(name, last.signature, self._slot_params(name))
            return True

    def _release(self, name: str) -> None:
        """Unload without trimming free slots (a load that evicts reuses the freed slot)."""
        if name == BASE:
            raise ValueError("The base model cannot be unloaded.")
        if name == self._active:
            raise ValueError(f"Version {name!r} is active; activate another version before unloading it.")
        if self._in_use.get(name):
            raise ValueError(f"Version {name!r} is still generating; try again when its requests finish.")
        if name in self._full:
            del self._full[name]
        elif name in self._adapters:
            self._adapters.pop(name).version = None
        else:
            raise KeyError(f"Version {name!r} is not loaded.")

    def _check_adapter_config(self, name: str, path: Path) -> dict:
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

    @staticmethod
    def _read_adapter_weights(name: str, path: Path, config: dict) -> dict[str, torch.Tensor] | None:
        """The adapter's tensors, for copying into a free slot; None when only PEFT's own loading applies."""
        if _signature(config) is None or not (path / "adapter_model.safetensors").is_file():
            return None
        try:
            return load_file(path / "adapter_model.safetensors")
        except Exception as err:  # a truncated or garbled file: refuse it like PEFT would
            raise VersionLoadError(f"Version {name!r} could not be loaded from {path}: {err}") from err

    def _load_adapter(self, name: str, path: Path, config: dict, weights: dict[str, torch.Tensor] | None) -> None:
        signature = _signature(config)
        slot = self._free_slot(signature, weights) if weights is not None else None
        if slot is not None:
            with torch.no_grad():
                for key, value in weights.items():
                    slot.params[key].copy_(value)
        else:  # no compatible free slot: inject a new adapter (PEFT also checks the weights fit this base model)
            slot_name = self._new_slot_name()
            try:
                if self._peft is None:
                    self._peft = PeftModel.from_pretrained(self._lm, str(path), adapter_name=slot_name,
                                                           is_trainable=False)
                else:
                    self._peft.load_adapter(str(path), adapter_name=slot_name, is_trainable=False)
            except Exception as err:  # any failure inside PEFT leaves the registry as it was
                if self._peft is not None:
                    if slot_name in self._peft.peft_config:
                        self._peft.delete_adapter(slot_name)
                    self._after_injection()
                raise VersionLoadError(f"Version {name!r} could not be loaded from {path}: {err}") from err
            self._after_injection()
            slot = self._slots[slot_name] = _Slot(slot_name, signature, self._slot_params(slot_name))
        slot.version = name
        self._adapters[name] = slot
        self._last_slot = slot
        self._trim_free_slots(keep=signature)

    def _free_slot(self, signature: str | None, weights: dict[str, torch.Tensor]) -> _Slot | None:
        """A free slot with the same config whose parameters take exactly these tensors."""
        for slot in self._slots.values():
            if (slot.version is None and slot.signature == signature and slot.params.keys() == weights.keys()
                    and all(slot.params[k].shape == v.shape for k, v in weights.items())):
                return slot
        return None

    def _trim_free_slots(self, keep: str | None) -> None:
        """Bound memory: at most one free, reusable slot stays, preferably one with signature `keep`."""
        free = [s for s in self._slots.values() if s.version is None]
        reusable = [s for s in free if s.signature is not None]
        kept = next((s for s in reversed(reusable) if s.signature == keep), reusable[-1] if reusable else None)
        dropped = [s for s in free if s is not kept]
        for slot in dropped:
            del self._slots[slot.name]
            self._peft.delete_adapter(slot.name)
            if self._last_slot is slot:
                self._last_slot = kept
        if dropped:
            self._after_injection()

    def _new_slot_name(self) -> str:
        self._slot_count += 1
        return f"slot{self._slot_count}"

    def _slot_params(self, slot_name: str) -> dict[str, torch.nn.Parameter]:
        """Map the slot's parameters to adapter_model.safetensors keys (the same names without the adapter name)."""
        params = {}
        for key, param in self._peft.named_parameters():
            parts = key.split(".")
            if slot_name in parts:
                parts.remove(slot_name)
                params[".".join(parts)] = param
        return params

    def _after_injection(self) -> None:
        """PEFT changed the adapters (and set its own active one): refresh what the fast selection relies on."""
        self._peft.eval()
        self._lora_layers = [m for m in self._lm.modules() if isinstance(m, BaseTunerLayer)]
        self._peft_selects = any(c.modules_to_save for c in self._peft.peft_config.values())
        if not self._peft_selects:
            self._peft.base_model.enable_adapter_layers()
        self._selected = None

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
            self._release(idle[0])

    # ----- generation -------------------------------------------------------------------------------------
    def _model_for(self, version: str) -> PreTrainedModel:
        """Called under the lock before every forward pass: point the shared model at `version`."""
        if version in self._full:
            return self._full[version]
        if self._peft is not None:
            slots = [] if version == BASE else [self._adapters[version].name]
            if version != BASE:
                self._adapters.move_to_end(version)
            if self._selected != slots:
                self._select(slots)
        return self._lm

    def _select(self, slots: list[str]) -> None:
        if self._peft_selects:  # modules_to_save copies switch only through PEFT's own API
            if not slots:
                self._peft.base_model.disable_adapter_layers()
            else:
                self._peft.base_model.enable_adapter_layers()
                self._peft.base_model.set_adapter(slots[0])
        else:
            # PEFT's set_adapter also re-freezes every adapter's parameters in every layer (40 ms with six adapters,
            # on each switch between interleaved requests); ours are frozen once, at load.
            for layer in self._lora_layers:
                layer._active_adapter = slots
        self._selected = slots

    def route(self, version: str) -> Route:
        """Where `version`'s rows decode. LoRA versions and the base share one lane (rows mix versions through PEFT's
        adapter_names) unless an adapter cannot mix (DoRA, modules_to_save); full-weight versions have their own."""
        if version in self._full:
            return Route(f"full:{version}", model_forward(self._full[version]), None)
        if version == BASE:
            return Route("shared", self._shared_forward, None)
        if self._peft_selects or self._adapters[version].signature is None:
            return Route(f"solo:{version}", self._shared_forward, version)
        return Route("shared", self._shared_forward, version)

    def _shared_forward(self, input_ids, attention_mask, position_ids, cache, adapters):
        """The shared model's forward pass (under the lock): one version selected, or PEFT's mixed batch."""
        versions = set(adapters) if adapters is not None else {BASE}
        if len(versions) == 1:
            version = versions.pop()
            return model_forward(self._model_for(BASE if version == BASE_ADAPTER else version))(
                input_ids, attention_mask, position_ids, cache, None)
        slots = [name if name == BASE_ADAPTER else self._adapters[name].name for name in adapters]
        return model_forward(self._peft)(input_ids, attention_mask, position_ids, cache, slots)

    def submit(self, request: Request, priority: int = CHAT, stream: bool = True) -> Ticket:
        """Queue `request` (its `adapter`: a version name, None = the active version) for the engine; the version
        stays loaded until the ticket finishes."""
        with self._lock:
            version = self._active if request.adapter is None else request.adapter
            if not self.is_loaded(version):
                raise KeyError(f"Version {version!r} is not loaded (loaded: {', '.join(self.loaded_versions())}).")
            route = self.route(version)
            self._in_use[version] = self._in_use.get(version, 0) + 1
        return self._engine.submit(replace(request, adapter=route.adapter), version, route, priority, stream)

    def _release_version(self, version: str) -> None:
        with self._lock:
            self._in_use[version] -= 1

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
        ticket = self.submit(Request(messages, max_new_tokens, temperature, top_p, seed, adapter=version))
        try:
            yield from ticket.updates()
        finally:  # the caller stopped reading (a closed chat): the row leaves the batch at the next step
            self._engine.cancel(ticket)

    def generate_many(self, requests: list[Request], on_result: Callable[[int, Generation], None] | None = None,
                      cancelled: Callable[[], bool] | None = None) -> list[Generation | None]:
        """Answer every request (`adapter`: version name) as a job: they decode in the shared batch beside the chats,
        which keep priority and room. Results in order; None for those left when `cancelled()` turned true."""
        results: list[Generation | None] = [None] * len(requests)
        done: queue.SimpleQueue = queue.SimpleQueue()
        waiting = list(enumerate(requests))[::-1]
        in_flight: dict[int, Ticket] = {}

        def wait_for(i: int, ticket: Ticket) -> None:
            *_, (text, stats) = ticket.updates()
            done.put((i, Generation(text=text, **stats)))

        try:
            while waiting or in_flight:
                while waiting and len(in_flight) < self._engine.max_batch:
                    i, request = waiting.pop()
                    in_flight[i] = self.submit(request, priority=JOB, stream=False)
                    threading.Thread(target=wait_for, args=(i, in_flight[i]), daemon=True).start()
                i, result = done.get()
                del in_flight[i]
                results[i] = result
                if on_result:
                    on_result(i, result)
                if cancelled and cancelled():
                    break
        finally:
            for ticket in in_flight.values():
                self._engine.cancel(ticket)
        return results


def _signature(config: dict) -> str | None:
    """What must match for a LoRA adapter's weights to be copied into another adapter's slot: its whole config but
    provenance. None for adapters whose state is not only lora_A/lora_B weights (DoRA, modules_to_save)."""
    if config.get("peft_type") != "LORA" or config.get("use_dora") or config.get("modules_to_save"):
        return None
    shape = {k: v for k, v in config.items() if k not in PROVENANCE_KEYS}
    if isinstance(shape.get("target_modules"), list):
        shape["target_modules"] = sorted(shape["target_modules"])  # saved from a set: any order
    return json.dumps(shape, sort_keys=True)
