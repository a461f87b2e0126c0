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

Training runs in this process (the SDK is a library, not the UI) through the SFT recipe's own trainer
(training/recipes/sft.py: `sft_args` + `sft_trainer`, TRL's SFTTrainer): one fine_tune() call is one pass over the
samples in the given order, BATCH_SIZE samples per optimizer step, at a constant learning rate, with the adapter's
own AdamW, whose state is kept between calls. The samples go in tokenized, with the untrained tokens' labels at -100.
After every call the adapter and the optimizer state are saved atomically (training.versions.replace_version), so a
later call, in this process or another one, continues exactly where this one stopped. lr 2e-3 with r=8 on all
linear layers teaches the tutorial's facts in 3 passes over 6 samples (loss 2.4 -> 1.1 -> 0.4);
bench/tutorial_walltime.py times the whole tutorial.
"""

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from datasets import Dataset
from peft import LoraConfig, PeftModel, get_peft_model
from torch.optim.lr_scheduler import LambdaLR
from transformers import PreTrainedTokenizerBase
from transformers.trainer_callback import PrinterCallback

from feedback_db.models import ModelVersion
from feedback_db.store import VERSION_NAME, FeedbackStore
from training.base_model import DEFAULT_BASE_MODEL, load_causal_lm, load_tokenizer, resolve_base_model
from training.generation import Request, generate
from training.hardware import device
from training.recipes.sft import SFTRecipeConfig, sft_args, sft_trainer
from training.sdk_samples import encode_conversation, parse_sample
from training.versions import (
    LORA_TARGETS,
    load_version_model,
    new_tmp_dir,
    now,
    provenance,
    read_provenance,
    replace_version,
    write_provenance,
)

BATCH_SIZE = 2
INIT_SEED = 0  # LoRA A matrices are random; a fixed seed makes a tutorial run reproducible


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
        result = self._train_pass(model, tokenizer, encoded)
        record = read_provenance(self.path)
        record["metrics"] = _metrics([*record["metrics"]["history"], _history_row(result, len(samples))])
        record["updated"] = now()
        write_adapter(self.client.data_dir, self.path, model, self._optimizer, record, samples=conversations)
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

    def _train_pass(self, model: PeftModel, tokenizer: PreTrainedTokenizerBase,
                    encoded: list[tuple[list[int], list[bool]]]) -> FineTuneResponse:
        """One pass of the SFT recipe's trainer over the encoded samples, in order, with this adapter's optimizer."""
        config = read_provenance(self.path)["config"]
        data_dir = self.client.data_dir
        cfg = SFTRecipeConfig(db=str(data_dir / "tuneloop.db"), data_dir=str(data_dir), base_model=self.base_model,
                              batch_size=config["batch_size"], per_device_train_batch_size=config["batch_size"],
                              num_train_epochs=1,
                              learning_rate=config["learning_rate"], eval_steps=0, save_steps=0, save_minutes=0,
                              report_to="none", seed=INIT_SEED)
        dataset = Dataset.from_dict({"input_ids": [ids for ids, _ in encoded],
                                     "labels": [[t if trained else -100 for t, trained in zip(ids, mask, strict=True)]
                                                for ids, mask in encoded]})
        optimizer = self._load_optimizer()
        folder = new_tmp_dir(data_dir, "sdk-run")  # the trainer's output_dir; it saves no checkpoint
        try:
            args = sft_args(cfg, folder, has_eval=False, train_sampling_strategy="sequential", disable_tqdm=True)
            trainer = sft_trainer(args, model, tokenizer, dataset,
                                  optimizers=(optimizer, LambdaLR(optimizer, lambda step: 1.0)))
            trainer.remove_callback(PrinterCallback)  # fine_tune returns the loss; no log lines on stdout
            trainer.train()
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        model.eval()
        # each step's logged loss is its mean over the step's trained tokens (those after the first position)
        step_losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
        trained = [sum(mask[1:]) for _, mask in encoded]
        step_tokens = [sum(trained[i:i + cfg.batch_size]) for i in range(0, len(trained), cfg.batch_size)]
        return FineTuneResponse(sum_loss=sum(loss * n for loss, n in zip(step_losses, step_tokens, strict=True)),
                                number_of_trainable_tokens=sum(step_tokens))

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
