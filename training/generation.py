"""The batched generator: every answer the app, the gate, Compare and the SDK produce is decoded here.

Rows decode together over one KV cache. Prompts are left-padded (their last tokens line up), each row carries its
own position ids, sampling settings and PEFT adapter (mixed-adapter batches through PEFT's `adapter_names`), and
leaves the batch when it emits a stop token or reaches its length. `generate` keeps the batch full: when rows leave,
waiting requests are prefilled and join the running batch between two decode steps (continuous batching).

    from training.generation import Request, generate
    results = generate(model, tokenizer, [Request([{"role": "user", "content": "Hi"}], max_new_tokens=32)])
    print(results[0].text)

`Batch` is the engine underneath: `admit(rows, chunk)` prefills new rows (a generator, one forward pass per
`chunk` prompt tokens, so a caller can interleave decode steps of the running rows) and `step()` decodes one token
for every row. The model service drives it from its own loop to batch concurrent chats.

Prefix cache: every single-turn prompt starts with the chat template's system turn and user header (24 of SmolLM2's
tokens, about 70 % of a short chat prompt; `template_prefix`). Its keys and values are computed once per adapter
and copied into each admitted row that starts with it, so prefill runs only over the rest of the prompt.

Greedy rows give the sequential path's answers up to float rounding: a padded batch sums the same products in
another order (other matrix shapes), so a near-tie between two tokens can flip and the answers part from there.
"""

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field

import torch
from peft import PeftModel
from transformers import DynamicCache, PreTrainedTokenizerBase

from training.hardware import device
from training.request import Request

BASE_ADAPTER = "__base__"  # PEFT's name for "no adapter" in a mixed batch


@dataclass(frozen=True)
class Result:
    text: str
    prompt_tokens: int
    new_tokens: int


@dataclass(eq=False)
class Row:
    """A request inside the batch: its prompt ids, the tokens so far, and where its next token goes."""

    request: Request
    prompt_ids: list[int]
    new_ids: list[int] = field(default_factory=list)
    done: bool = False
    generator: torch.Generator | None = None

    def __post_init__(self) -> None:
        if self.request.seed is not None:
            self.generator = torch.Generator().manual_seed(self.request.seed)


# forward(input_ids, attention_mask, position_ids, cache, adapters) -> (logits of each row's last position, cache)
Forward = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, DynamicCache, list[str] | None],
                   tuple[torch.Tensor, DynamicCache]]


def model_forward(model: torch.nn.Module) -> Forward:
    """The forward pass of a causal LM (or a PeftModel, which takes one adapter name per row).

    A PeftModel batch whose rows all run one adapter selects it (PEFT's set_adapter, frozen) and takes PEFT's plain
    LoRA path: its mixed-batch path gathers and scatters every LoRA layer's rows by adapter, even for one adapter.
    `generate` puts the caller's adapter selection back when it is done."""

    def forward(input_ids, attention_mask, position_ids, cache, adapters):
        extra = {}
        if adapters is not None and isinstance(model, PeftModel) and set(adapters) != {BASE_ADAPTER} \
                and len(set(adapters)) == 1:
            if model.active_adapters != adapters[:1]:
                model.set_adapter(adapters[0], inference_mode=True)
        elif adapters is not None:
            extra = {"adapter_names": adapters}
        out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, cache=cache,
                    use_cache=True, logits_to_keep=1, **extra)
        return out.logits[:, -1].float(), out.cache

    return forward


def stop_ids(tokenizer: PreTrainedTokenizerBase) -> set[int]:
    """End of sequence and end of turn: an answer stops at either."""
    ids = (tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<|im_end|>"))
    return {i for i in ids if isinstance(i, int) and i >= 0 and i != tokenizer.unk_token_id}


def prompt_ids(tokenizer: PreTrainedTokenizerBase, messages: list[dict]) -> list[int]:
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True)["input_ids"]


def template_prefix(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """The token ids every prompt of the chat template starts with (system turn, user header): the common start of
    two different one-message prompts."""
    first, second = (prompt_ids(tokenizer, [{"role": "user", "content": text}]) for text in ("a", "Why?"))
    return first[:_common_start(first, second)]


def _common_start(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


# adapter (None: the model as it is) -> the prefix's (keys, values) per layer, each [1, kv heads, prefix, head dim]
PrefixCache = dict[str | None, list[tuple[torch.Tensor, torch.Tensor]]]


class Batch:
    """Rows decoding together over one KV cache, left-padded; rows join (`admit`) and leave (`step`) at any step.

    `guard` is entered around every forward pass (the model service takes its lock turn and selects the adapters
    there). Rows mix adapters when the forward takes `adapters` (PEFT); a batch whose rows all have adapter None
    runs the model as it is. `prefix` (usually `template_prefix`): rows that start with it reuse its keys and
    values from `prefixes`, computed once per adapter; whoever changes an adapter's weights drops its entry there
    (the model service does, when it unloads a version)."""

    def __init__(self, forward: Forward, stops: set[int], pad_id: int,
                 guard: Callable[[], AbstractContextManager] = nullcontext, prefix: Sequence[int] = (),
                 prefixes: PrefixCache | None = None) -> None:
        self.forward, self.stops, self.pad_id, self.guard = forward, stops, pad_id, guard
        self.prefix = list(prefix)
        self.prefixes: PrefixCache = {} if prefixes is None else prefixes
        self.rows: list[Row] = []
        self._cache: DynamicCache | None = None
        self._mask: torch.Tensor | None = None  # [rows, cached positions]: 1 where a real token is cached
        self._next: torch.Tensor | None = None  # [rows]: each row's next input token (its latest new token)

    def admit(self, rows: list[Row], chunk: int | None = None) -> Iterator[None]:
        """Prefill `rows` together (left-padded), `chunk` prompt tokens per forward pass, yielding after each pass;
        then pick their first tokens and merge them into the running batch.

        Rows that share the cached prefix start from a copy of its keys and values: their cache holds the prefix
        (same columns in every row), then the rest of each prompt left-padded (padding between the two is masked)."""
        adapters = _adapters(rows)
        cache, shared = DynamicCache(), min(_common_start(r.prompt_ids[:-1], self.prefix) for r in rows)
        if shared:
            keys = [None if adapters is None else adapters[i] for i in range(len(rows))]
            for key in dict.fromkeys(k for k in keys if k not in self.prefixes):
                self._compute_prefix(key)
                yield
            with torch.inference_mode():
                for i, layers in enumerate(zip(*(self.prefixes[k] for k in keys), strict=True)):
                    cache.update(torch.cat([k[:, :, :shared] for k, _ in layers]),
                                 torch.cat([v[:, :, :shared] for _, v in layers]), i)
        tails = [r.prompt_ids[shared:] for r in rows]
        width = max(len(t) for t in tails)
        ids = torch.tensor([[self.pad_id] * (width - len(t)) + t for t in tails], device=device())
        mask = torch.tensor([[1] * shared + [0] * (width - len(t)) + [1] * len(t) for t in tails], device=device())
        positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, shared:]
        chunk = chunk or width
        for start in range(0, width, chunk):
            end = min(start + chunk, width)
            with self.guard(), torch.inference_mode():
                logits, cache = self.forward(ids[:, start:end], mask[:, :shared + end], positions[:, start:end],
                                             cache, adapters)
            if end < width:
                yield
        self._merge(rows, cache, mask)
        self._take(rows, logits)
        yield

    def _compute_prefix(self, key: str | None) -> None:
        """One forward pass over the prefix alone, through adapter `key` (None: the model as it is)."""
        ids = torch.tensor([self.prefix], device=device())
        with self.guard(), torch.inference_mode():
            _, cache = self.forward(ids, torch.ones_like(ids), torch.arange(len(self.prefix), device=device())[None],
                                    DynamicCache(), None if key is None else [key])
            self.prefixes[key] = [(layer.keys, layer.values) for layer in cache.layers]

    def step(self) -> list[Row]:
        """Decode one token for every row; return the rows that finished (they have left the batch)."""
        if not self.rows:
            return []
        self._mask = torch.cat([self._mask, torch.ones_like(self._mask[:, :1])], dim=1)
        positions = self._mask.sum(-1, keepdim=True) - 1
        with self.guard(), torch.inference_mode():
            logits, self._cache = self.forward(self._next[:, None], self._mask, positions, self._cache,
                                               _adapters(self.rows))
        return self._take(self.rows, logits)

    def drop(self, rows: list[Row]) -> None:
        """Remove rows (finished or cancelled) from the batch and the cache; trim padding no row needs anymore."""
        keep = [i for i, r in enumerate(self.rows) if r not in rows]
        if len(keep) == len(self.rows):
            return
        self.rows = [self.rows[i] for i in keep]
        if not keep:
            self._cache = self._mask = self._next = None
            return
        index = torch.tensor(keep, device=device())
        self._mask, self._next = self._mask[index], self._next[index]
        unused = int((self._mask.cumsum(-1) == 0).all(0).sum())  # leading columns that are padding in every row
        self._mask = self._mask[:, unused:]
        _edit_cache(self._cache, lambda t: t[index, :, unused:])

    def _take(self, rows: list[Row], logits: torch.Tensor) -> list[Row]:
        """Pick each row's next token from its logits; rows that stop or reach their length are done and dropped."""
        tokens = pick_tokens(logits, rows)
        for row, token in zip(rows, tokens, strict=True):
            if token in self.stops:
                row.done = True
            else:
                row.new_ids.append(token)
                row.done = len(row.new_ids) >= row.request.max_new_tokens
        self._next = torch.tensor([r.new_ids[-1] if r.new_ids else self.pad_id for r in self.rows], device=device())
        finished = [r for r in rows if r.done]
        self.drop(finished)
        return finished

    def _merge(self, rows: list[Row], cache: DynamicCache, mask: torch.Tensor) -> None:
        """Append prefilled rows to the running batch: left-pad the shorter cache so both end at the same column."""
        if self._cache is None:
            self.rows, self._cache, self._mask = list(rows), cache, mask
            return
        old, new = self._mask.shape[1], mask.shape[1]
        width = max(old, new)
        pad = torch.nn.functional.pad
        self._mask = torch.cat([pad(self._mask, (width - old, 0)), pad(mask, (width - new, 0))])
        _edit_cache(self._cache, lambda t, other: torch.cat([pad(t, (0, 0, width - old, 0)),
                                                             pad(other, (0, 0, width - new, 0))]), cache)
        self.rows = [*self.rows, *rows]


def _edit_cache(cache: DynamicCache, edit: Callable, other: DynamicCache | None = None) -> None:
    """Replace every layer's keys and values by `edit(tensor)` or `edit(tensor, other's tensor)`: the one place that
    touches the cache's layout ([rows, heads, positions, head dim] per layer; tests/training/test_generation.py
    fails when transformers changes it)."""
    for i, layer in enumerate(cache.layers):
        extra = () if other is None else (other.layers[i],)
        layer.keys = edit(layer.keys, *(o.keys for o in extra))
        layer.values = edit(layer.values, *(o.values for o in extra))


def _adapters(rows: list[Row]) -> list[str] | None:
    names = [r.request.adapter for r in rows]
    return None if all(n is None for n in names) else [n or BASE_ADAPTER for n in names]


def pick_tokens(logits: torch.Tensor, rows: list[Row]) -> list[int]:
    """Greedy rows take the arg-max; sampling rows draw from their nucleus (top-p) with their own generator."""
    tokens = logits.argmax(-1).tolist()
    for i, row in enumerate(rows):
        if row.request.temperature > 0.0:  # on the CPU, where the row's generator is
            tokens[i] = sample(logits[i].cpu(), row.request.temperature, row.request.top_p, row.generator)
    return tokens


def sample(logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator | None) -> int:
    probs = torch.softmax(logits / temperature, dim=-1)
    sorted_probs, order = torch.sort(probs, descending=True)
    keep = torch.cumsum(sorted_probs, dim=-1) - sorted_probs < top_p  # nucleus: smallest set reaching top_p
    sorted_probs = sorted_probs * keep
    choice = torch.multinomial(sorted_probs / sorted_probs.sum(), 1, generator=generator)
    return int(order[choice])


def generate(model: torch.nn.Module | Forward, tokenizer: PreTrainedTokenizerBase, requests: Sequence[Request],
             max_batch: int = 16, guard: Callable[[], AbstractContextManager] = nullcontext,
             on_result: Callable[[int, Result], None] | None = None,
             cancelled: Callable[[], bool] | None = None) -> list[Result | None]:
    """Answer every request, up to `max_batch` rows decoding at once; results in request order.

    `on_result(index, result)` is called as each answer finishes (progress, storing as you go); when `cancelled()`
    turns true, decoding stops and the unfinished requests' results are None."""
    forward = model if not isinstance(model, torch.nn.Module) else model_forward(model)
    batch = Batch(forward, stop_ids(tokenizer), tokenizer.pad_token_id or 0, guard, template_prefix(tokenizer))
    rows = [Row(r, prompt_ids(tokenizer, r.messages)) for r in requests]
    order = {id(row): i for i, row in enumerate(rows)}
    waiting = rows[::-1]  # pop() from the end takes them in request order
    if max_batch > 1:  # admitted by adapter, then prompt length: one-adapter batches (PEFT's plain path), less padding
        waiting.sort(key=lambda r: (r.request.adapter or "", len(r.prompt_ids)), reverse=True)
    results: list[Result | None] = [None] * len(rows)

    def finish(rows: list[Row]) -> None:
        for row in rows:
            i = order[id(row)]
            results[i] = Result(tokenizer.decode(row.new_ids, skip_special_tokens=True), len(row.prompt_ids),
                                len(row.new_ids))
            if on_result:
                on_result(i, results[i])

    with _keeps_adapter_selection(model):
        while waiting or batch.rows:
            if cancelled and cancelled():
                break
            free = max_batch - len(batch.rows)
            # refill when a quarter of the batch is free (or it is empty): fewer, larger prefills
            if waiting and (free >= max(1, max_batch // 4) or not batch.rows):
                joining = [waiting.pop() for _ in range(min(free, len(waiting)))]
                for _ in batch.admit(joining):
                    pass
                finish([r for r in joining if r.done])
            finish(batch.step())
    return results


@contextmanager
def _keeps_adapter_selection(model: torch.nn.Module | Forward) -> Iterator[None]:
    """Put a PeftModel's active adapter and its parameters' requires_grad back as they were (model_forward selects
    the adapter of a one-adapter batch)."""
    if not isinstance(model, PeftModel):
        yield
        return
    active, trainable = model.active_adapter, {p: p.requires_grad for p in model.parameters()}
    try:
        yield
    finally:
        if model.active_adapter != active:
            model.set_adapter(active)
        for param, flag in trainable.items():
            param.requires_grad_(flag)
