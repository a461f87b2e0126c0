"""The served model: one base model, PEFT adapters hot-swapped as named versions, full-weight versions beside it.

Generation runs on one engine thread (webapp/serving/engine.py) that decodes every request in one batch: concurrent
chats and generation jobs join the running batch between two decode steps, rows of different LoRA versions mix in
one forward pass (PEFT's adapter_names), and each step holds the model lock (webapp/serving/lock.py) for one forward
pass. So a hot-swap (loading an adapter, changing the active version) waits at most one step, and every request
finishes on the version it started with, whatever is activated meanwhile. LoRA versions live in slots
(webapp/serving/slots.py); a slot whose version is active or generating is never freed.

    models = ModelService(resolve_base_model("smollm2-135m-instruct", "data"), Path("data/versions"))
    models.load_version("v1-sft", Path("data/versions/v1-sft")); models.activate("v1-sft")
    print(models.generate([{"role": "user", "content": "Hi"}]))
"""

import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from transformers import PreTrainedModel

from training.base_model import load_causal_lm, load_tokenizer
from training.generation import BASE_ADAPTER, Request, model_forward
from webapp.serving.engine import CHAT, JOB, Engine, Route, Ticket
from webapp.serving.errors import BASE, VersionLoadError
from webapp.serving.lock import DECODE, TurnLock
from webapp.serving.slots import LoraSlots, check_adapter_config, read_adapter_weights


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
        self._slots = LoraSlots(self._lm)
        self._full: dict[str, PreTrainedModel] = {}
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
            return [BASE, *self._slots.versions, *self._full]

    def is_loaded(self, name: str) -> bool:
        return name == BASE or name in self._slots.versions or name in self._full

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
            config = check_adapter_config(name, path)
            weights = read_adapter_weights(name, path, config)  # before the lock: generation goes on
        with self._lock:
            if self.is_loaded(name):
                self.unload(name)
            self._evict_for_space()
            if is_adapter:
                self._slots.load(name, path, config, weights)
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
            self._slots.trim(keep=None)

    def prepare_spare(self) -> bool:
        """Add a free LoRA slot shaped like the last loaded adapter, so the next compatible version loads by copying
        its weights. Holds the lock for about a second (PEFT injects into every layer): call it outside the request
        path, e.g. from the poller a while after a swap. Returns whether it added one."""
        with self._lock:
            return self._slots.prepare_spare()

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
        elif name in self._slots.versions:
            self._slots.release(name)
        else:
            raise KeyError(f"Version {name!r} is not loaded.")
        self._engine.forget(name)

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
        while len(self._slots.versions) + len(self._full) >= self.max_loaded:
            idle = [n for n in [*self._slots.versions, *self._full] if n != self._active and not self._in_use.get(n)]
            if not idle:
                return
            self._release(idle[0])

    # ----- generation -------------------------------------------------------------------------------------
    def _model_for(self, version: str) -> PreTrainedModel:
        """Called under the lock before every forward pass: point the shared model at `version`."""
        if version in self._full:
            return self._full[version]
        self._slots.select(version)
        return self._lm

    def route(self, version: str) -> Route:
        """Where `version`'s rows decode. LoRA versions and the base share one lane (rows mix versions through PEFT's
        adapter_names) unless an adapter cannot mix (DoRA, modules_to_save); full-weight versions have their own."""
        if version in self._full:
            return Route(f"full:{version}", model_forward(self._full[version]), None)
        if version == BASE:
            return Route("shared", self._shared_forward, None)
        if not self._slots.mixes(version):
            return Route(f"solo:{version}", self._shared_forward, version)
        return Route("shared", self._shared_forward, version)

    def _shared_forward(self, input_ids, attention_mask, position_ids, cache, adapters):
        """The shared model's forward pass (under the lock): one version selected, or PEFT's mixed batch."""
        versions = set(adapters) if adapters is not None else {BASE}
        if len(versions) == 1:
            version = versions.pop()
            return model_forward(self._model_for(BASE if version == BASE_ADAPTER else version))(
                input_ids, attention_mask, position_ids, cache, None)
        slots = [name if name == BASE_ADAPTER else self._slots.versions[name].name for name in adapters]
        return model_forward(self._slots.peft)(input_ids, attention_mask, position_ids, cache, slots)

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
