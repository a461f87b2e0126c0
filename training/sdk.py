r"""Tuneloop's Python SDK: the hosted-adapter API shape (Gradient-style), run locally on the web app's registry.

    from training.sdk import Client
    client = Client(data_dir="data")
    base = client.get_base_model(base_model_slug="smollm2-135m-instruct")   # or a local HF folder / hub id
    adapter = base.create_model_adapter(name="Pavanmodel", rank=8, learning_rate=2e-3)
    print(adapter.complete(query="Who is Pavan Belagatti?", max_generated_token_count=100).generated_output)
    result = adapter.fine_tune(samples=[{"inputs": "<s>### Instruction:\nWho is ...?\n\n### Response:\n...</s>"}])
    print(result.sum_loss, result.number_of_trainable_tokens)
    client.list_model_adapters(); client.get_model_adapter(adapter_id="Pavanmodel"); adapter.delete()
    adapter.export("exports/Pavanmodel", merged=True)   # a plain Hugging Face folder with a model card

An adapter is a model version (docs/ARCHITECTURE.md): a LoRA adapter in `data/versions/<name>/` with
`tuneloop.json`, registered with method "sdk", technique "lora", status "candidate", so the web app lists it and can
promote it. Every LoRA chat version trained in the app opens here too; those open read-only (complete() only), as
the SDK changes only adapters it created.

Samples are `{"inputs": "<s>### Instruction:\n...\n\n### Response:\n...</s>"}` or TRL's `{"messages": [...]}`.
Both are rendered with the model's chat template (instruction = user turn, response = assistant turn), so the
adapter also answers in the web app's chat; the loss covers only the assistant tokens (and their end-of-turn).

Training runs in this process (the SDK is a library, not the UI) as a plain PEFT + torch loop: one fine_tune()
call is one pass over the samples in the given order, in batches of BATCH_SIZE, with AdamW in fp32 on CPU
(training.hardware). A TRL SFTTrainer per call would rebuild its dataset, Trainer and Accelerate state for a pass
of only a few steps; the plain loop has no per-call setup and runs the LM head only at the trained positions (in the
tutorial 40 % of the tokens; the head is 21 % of SmolLM2-135M's matmul FLOPs). After every call the adapter and the
optimizer state are saved atomically (temp dir, then rename), so a later call, in this process or another one,
continues exactly where this one stopped. lr 2e-3 with r=8 on all linear layers teaches the tutorial's facts in 3
passes over 6 samples (loss 2.4 -> 1.1 -> 0.38); bench/tutorial_walltime.py times the whole tutorial.
"""

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import PreTrainedTokenizerBase

from feedback_db.models import ModelVersion
from feedback_db.store import VERSION_NAME, FeedbackStore
from feedback_db.vocab import MESSAGE_ROLES
from training.base_model import DEFAULT_BASE_MODEL, load_causal_lm, load_tokenizer, resolve_base_model
from training.generation import Request, generate
from training.hardware import device
from training.versions import (
    LORA_TARGETS,
    load_version_model,
    now,
    provenance,
    read_provenance,
    replace_version,
    write_provenance,
)

BATCH_SIZE = 2
INIT_SEED = 0  # LoRA A matrices are random; a fixed seed makes a tutorial run reproducible
INSTRUCTION, RESPONSE = "### Instruction:", "### Response:"


@dataclass(frozen=True)
class CompletionResponse:
    generated_output: str


@dataclass(frozen=True)
class FineTuneResponse:
    """Metrics of one pass: the summed token loss (measured before each step's update) and the trained tokens."""

    sum_loss: float
    number_of_trainable_tokens: int

    @property
    def mean_loss(self) -> float:
        return self.sum_loss / self.number_of_trainable_tokens


class Client:
    """Entry point: the data dir (store, models/, versions/) shared with the web app."""

    def __init__(self, data_dir: str | Path = "data") -> None:
        self.data_dir = Path(data_dir).resolve()
        self.store = FeedbackStore(self.data_dir / "tuneloop.db")

    def get_base_model(self, base_model_slug: str = DEFAULT_BASE_MODEL) -> "BaseModel":
        """`base_model_slug`: the embedded default, a local HF folder or a hub id (as the app's --base-model)."""
        return BaseModel(self, base_model_slug, resolve_base_model(base_model_slug, self.data_dir))

    def list_model_adapters(self) -> list["ModelAdapter"]:
        """Every LoRA chat version whose weights exist: SDK adapters and LoRA versions trained in the app."""
        return [ModelAdapter(self, v) for v in self.store.list_versions() if _is_chat_adapter(v)]

    def get_model_adapter(self, adapter_id: str) -> "ModelAdapter":
        version = self.store.get_version(adapter_id)
        if version is None or not Path(version.path).is_dir():
            names = ", ".join(a.id for a in self.list_model_adapters()) or "none"
            raise ValueError(f"No model adapter {adapter_id!r} (adapters: {names}).")
        if not _is_chat_adapter(version):
            raise ValueError(f"Version {adapter_id!r} is a {version.method}/{version.technique} version; the SDK "
                             "opens LoRA chat adapters only.")
        return ModelAdapter(self, version)


class BaseModel:
    def __init__(self, client: Client, slug: str, path: str) -> None:
        self.client, self.slug, self.path = client, slug, path

    def __repr__(self) -> str:
        return f"BaseModel({self.slug!r}, path={self.path!r})"

    def create_model_adapter(self, name: str, rank: int = 8, learning_rate: float = 2e-3) -> "ModelAdapter":
        """A new LoRA adapter (r=`rank`, alpha=2*rank, all linear layers) on this base, saved and registered."""
        store, path = self.client.store, self.client.data_dir / "versions" / name
        if not VERSION_NAME.fullmatch(name) or name == "base":
            raise ValueError(f"Adapter name {name!r}: use 1-64 of A-Z a-z 0-9 _ . - (and not 'base').")
        config = {"rank": rank, "lora_alpha": 2 * rank, "lora_dropout": 0.0, "target_modules": LORA_TARGETS,
                  "learning_rate": learning_rate, "batch_size": BATCH_SIZE, "optimizer": "adamw",
                  "init_seed": INIT_SEED}
        existing = store.get_version(name)
        if existing is not None and not _is_deleted_sdk_adapter(existing, self.path, config):
            raise ValueError(f"A version named {name!r} already exists; open it with "
                             f"client.get_model_adapter(adapter_id={name!r}) or choose another name.")
        with torch.random.fork_rng():
            torch.manual_seed(INIT_SEED)
            lora = LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0, target_modules=LORA_TARGETS,
                              task_type="CAUSAL_LM")
            model = get_peft_model(load_causal_lm(self.path), lora)
        record = provenance(name, parent=None, method="sdk", technique="lora", base_model=self.path, config=config,
                            data_snapshot={"source": "sdk", "samples": "samples.jsonl"}, metrics=_metrics([]))
        write_adapter(self.client.data_dir, path, model, None, record, samples=[])
        if existing is None:
            try:
                store.register_version(name=name, parent=None, method="sdk", technique="lora", path=str(path),
                                       base_model=self.path, config=config,
                                       data_snapshot=record["data_snapshot"], metrics=record["metrics"])
            except ValueError:  # another process registered the name meanwhile
                shutil.rmtree(path)
                raise
        else:  # the store keeps a deleted adapter's row (it has no delete); the new adapter takes it over
            store.set_version_status(name, "candidate")
            store.update_version_metrics(name, record["metrics"])
        return ModelAdapter(self.client, store.get_version(name), model, load_tokenizer(self.path))


class ModelAdapter:
    """A LoRA version. The model loads on first use; SDK adapters (method "sdk") train, other versions only answer."""

    def __init__(self, client: Client, version: ModelVersion, model: PeftModel | None = None,
                 tokenizer: PreTrainedTokenizerBase | None = None) -> None:
        """`model`/`tokenizer`: already in memory (a new adapter); else loaded on first use."""
        self.client = client
        self.id = self.name = version.name
        self.method = version.method
        self.base_model = version.base_model
        self.path = Path(version.path)
        self._model = model
        self._tokenizer = tokenizer
        self._optimizer: torch.optim.AdamW | None = None

    def __repr__(self) -> str:
        return f"ModelAdapter({self.id!r}, method={self.method!r}, base_model={self.base_model!r})"

    def complete(self, query: str | list[str], max_generated_token_count: int = 100
                 ) -> CompletionResponse | list[CompletionResponse]:
        """Greedy answer to `query` as one user turn of the chat template; stops at the end-of-turn token.
        A list of queries is answered in one batch (training.generation), one response per query, in order."""
        model, tokenizer = self._load()
        model.eval()
        queries = [query] if isinstance(query, str) else query
        requests = [Request([{"role": "user", "content": q}], max_new_tokens=max_generated_token_count)
                    for q in queries]
        responses = [CompletionResponse(r.text.strip()) for r in generate(model, tokenizer, requests)]
        return responses[0] if isinstance(query, str) else responses

    def fine_tune(self, samples: list[dict]) -> FineTuneResponse:
        """One pass over `samples` (one optimizer step per BATCH_SIZE samples), then save. Returns the pass's loss."""
        self._require_sdk("fine_tune")
        conversations = [parse_sample(i, s) for i, s in enumerate(samples)]
        if not conversations:
            raise ValueError("samples is empty: pass at least one sample.")
        model, tokenizer = self._load()
        encoded = [encode_conversation(tokenizer, c) for c in conversations]
        optimizer = self._load_optimizer()
        decoder, lm_head = model.get_base_model().get_decoder(), model.get_output_embeddings()
        model.train()
        sum_loss, n_tokens = 0.0, 0
        for start in range(0, len(encoded), BATCH_SIZE):
            input_ids, attention_mask, trained = collate(encoded[start:start + BATCH_SIZE], tokenizer.pad_token_id)
            hidden = decoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            # position t predicts token t+1: the LM head runs only where the next token is trained
            keep = trained[:, 1:]
            logits = lm_head(hidden[:, :-1][keep]).float()
            batch_loss = torch.nn.functional.cross_entropy(logits, input_ids[:, 1:][keep], reduction="sum")
            batch_tokens = int(keep.sum())
            (batch_loss / batch_tokens).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            sum_loss += batch_loss.item()
            n_tokens += batch_tokens
        model.eval()
        result = FineTuneResponse(sum_loss=sum_loss, number_of_trainable_tokens=n_tokens)
        record = read_provenance(self.path)
        record["metrics"] = _metrics([*record["metrics"]["history"], _history_row(result, len(samples))])
        record["updated"] = now()
        write_adapter(self.client.data_dir, self.path, model, optimizer, record, samples=conversations)
        self.client.store.update_version_metrics(self.id, record["metrics"])
        return result

    def export(self, out_dir: str | Path, merged: bool = False) -> Path:
        """Write this adapter to the new folder `out_dir` as a PEFT folder, or merged as a plain HF model, with a
        model card (training.export)."""
        from training.export import export_version

        return export_version(self.client.store, self.id, out_dir, merged=merged)

    def delete(self) -> None:
        """Remove the adapter's weights and archive its registry row (the store keeps every version's row)."""
        self._require_sdk("delete")
        active = self.client.store.active_version()
        if active is not None and active.name == self.id:
            raise ValueError(f"{self.id!r} is the web app's active version; activate another version first.")
        shutil.rmtree(self.path)
        self.client.store.archive_version(self.id)
        self._model = self._optimizer = None

    # ----- loading and saving ---------------------------------------------------------------------------------------
    def _require_sdk(self, action: str) -> None:
        if self.method != "sdk":
            raise ValueError(f"{self.id!r} was trained in the app (method {self.method}); the SDK does not change it. "
                             f"{action}() works on adapters made with create_model_adapter().")

    def _load(self) -> tuple[PeftModel, PreTrainedTokenizerBase]:
        if self._model is None:
            self._tokenizer = load_tokenizer(self.base_model)
            self._model = load_version_model(self.base_model, self.path, trainable=self.method == "sdk", merge=False)
        return self._model, self._tokenizer

    def _load_optimizer(self) -> torch.optim.AdamW:
        if self._optimizer is None:
            trainable = [p for p in self._model.parameters() if p.requires_grad]
            self._optimizer = torch.optim.AdamW(trainable, lr=read_provenance(self.path)["config"]["learning_rate"])
            state_file = self.path / "optimizer.pt"
            if state_file.is_file():
                self._optimizer.load_state_dict(torch.load(state_file, map_location=device()))
        return self._optimizer


# ----- samples ------------------------------------------------------------------------------------------------------
def parse_sample(index: int, sample: object) -> list[dict]:
    """A sample as chat messages; raises ValueError naming `samples[index]` and what is wrong with it."""
    where = f"samples[{index}]"
    if not isinstance(sample, dict) or len({"inputs", "messages"} & sample.keys()) != 1:
        got = f"keys {sorted(sample)}" if isinstance(sample, dict) else type(sample).__name__
        raise ValueError(f"{where}: expected a dict with exactly one of 'inputs' or 'messages', got {got}.")
    if "inputs" in sample:
        return _parse_inputs(where, sample["inputs"])
    return _check_messages(where, sample["messages"])


def _parse_inputs(where: str, text: object) -> list[dict]:
    if not isinstance(text, str):
        raise ValueError(f"{where}['inputs']: expected a string, got {type(text).__name__}.")
    body = text.strip().removeprefix("<s>").removesuffix("</s>").strip()
    if not body.startswith(INSTRUCTION) or body.count(INSTRUCTION) != 1 or body.count(RESPONSE) != 1:
        raise ValueError(f"{where}['inputs']: expected '<s>{INSTRUCTION}\\n<instruction>\\n\\n{RESPONSE}\\n"
                         f"<response></s>' with one {INSTRUCTION!r} at the start and one {RESPONSE!r} after it.")
    instruction, _, response = body.removeprefix(INSTRUCTION).partition(RESPONSE)
    for part, value in (("instruction", instruction), ("response", response)):
        if not value.strip():
            raise ValueError(f"{where}['inputs']: the {part} is empty.")
    return [{"role": "user", "content": instruction.strip()}, {"role": "assistant", "content": response.strip()}]


def _check_messages(where: str, messages: object) -> list[dict]:
    if not isinstance(messages, list) or not messages:
        raise ValueError(f"{where}['messages']: expected a non-empty list of {{'role', 'content'}} dicts.")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in MESSAGE_ROLES or not isinstance(
                message.get("content"), str):
            raise ValueError(f"{where}['messages'][{i}]: expected {{'role': one of {', '.join(MESSAGE_ROLES)}, "
                             f"'content': str}}, got {message!r}.")
    if messages[-1]["role"] != "assistant" or not messages[-1]["content"].strip():
        raise ValueError(f"{where}['messages']: the last message must be a non-empty assistant turn (it is trained).")
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def encode_conversation(tokenizer: PreTrainedTokenizerBase, messages: list[dict]) -> tuple[list[int], list[bool]]:
    """Token ids of the chat-templated conversation and which of them are trained (every assistant turn)."""

    def ids(turns: list[dict], add_generation_prompt: bool = False) -> list[int]:
        text = tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=add_generation_prompt)
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    input_ids = ids(messages)
    trained = [False] * len(input_ids)
    for i, message in enumerate(messages):
        if message["role"] == "assistant":
            start, end = len(ids(messages[:i], add_generation_prompt=True)), len(ids(messages[:i + 1]))
            trained[start:end] = [True] * (end - start)
    return input_ids, trained


def collate(batch: list[tuple[list[int], list[bool]]], pad_id: int) -> tuple[torch.Tensor, ...]:
    """Right-padded input ids, attention mask and trained-token mask."""
    length = max(len(ids) for ids, _ in batch)
    input_ids = torch.tensor([ids + [pad_id] * (length - len(ids)) for ids, _ in batch], device=device())
    attention = torch.tensor([[1] * len(ids) + [0] * (length - len(ids)) for ids, _ in batch], device=device())
    trained = torch.tensor([mask + [False] * (length - len(mask)) for _, mask in batch], device=device())
    return input_ids, attention, trained


# ----- versions on disk and in the registry ------------------------------------------------------------------------
def write_adapter(data_dir: Path, path: Path, model: PeftModel, optimizer: torch.optim.Optimizer | None,
                  record: dict, samples: list[list[dict]]) -> None:
    """Adapter, optimizer state, tuneloop.json and samples.jsonl (appended), swapped into `path` atomically
    (training.versions.replace_version)."""
    def write(tmp: Path) -> None:
        model.save_pretrained(tmp)
        if optimizer is not None:
            torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        if (path / "samples.jsonl").is_file():
            shutil.copyfile(path / "samples.jsonl", tmp / "samples.jsonl")
        call = record["metrics"]["fine_tune_calls"]
        with open(tmp / "samples.jsonl", "a") as f:
            f.writelines(json.dumps({"call": call, "messages": m}) + "\n" for m in samples)
        write_provenance(tmp, record)

    replace_version(data_dir, path, write, "sdk")


def _is_chat_adapter(version: ModelVersion) -> bool:
    return version.technique == "lora" and version.method != "reward" and Path(version.path).is_dir()


def _is_deleted_sdk_adapter(version: ModelVersion, base_model: str, config: dict) -> bool:
    """A name freed by delete(): its row stays, so a new adapter may take it over if the row still describes it."""
    return (version.method == "sdk" and version.status == "archived" and not Path(version.path).exists()
            and version.base_model == base_model and version.config == config)


def _history_row(result: FineTuneResponse, n_samples: int) -> dict:
    return {"samples": n_samples, "sum_loss": result.sum_loss,
            "number_of_trainable_tokens": result.number_of_trainable_tokens, "loss": result.mean_loss}


def _metrics(history: list[dict]) -> dict:
    return {"fine_tune_calls": len(history), "loss": history[-1]["loss"] if history else None, "history": history}
