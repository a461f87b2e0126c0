"""The model card of an exported version: README.md with the Hugging Face metadata header, plus the same facts as JSON.

Lineage (the parent chain), method and technique, hyper-parameters, the data snapshot as numbers only
(feedback_db.summary), the evaluation gate's report and the metrics. The header is written by huggingface_hub's
`ModelCardData`, so the Hub and `ModelCard.load` read it as they read any card.
"""

from dataclasses import dataclass

from huggingface_hub import ModelCardData

from feedback_db.models import ModelVersion
from feedback_db.summary import snapshot_summary

GATE_KEYS = ("gate_passed", "gate_reason", "win_rate_vs_active", "win_rate_threshold", "judge", "promoted",
             "reward_model_accuracy", "heldout_preference_accuracy", "heldout_preference_margin",
             "preference_accuracy_dropped")
LOCAL_KEYS = ("db", "data_dir", "dataset_file", "snapshot", "run_id", "base_model", "parent", "reward_model")
RL_METHODS = ("reward", "dpo", "kto", "online_rl")


@dataclass(frozen=True)
class BaseIdentity:
    hub_id: str  # a hub id or a model name; never a local path
    sha256: str | None  # of the base's *.safetensors (None: a hub model not on this disk)
    license: str | None
    note: str


def lineage(store, version: ModelVersion) -> list[ModelVersion]:
    """The version and its ancestors, oldest first (the chain a LoRA stage continued, or a full model derived)."""
    chain, seen = [version], {version.name}
    while (parent := chain[-1].parent) is not None and parent not in seen and (v := store.get_version(parent)):
        chain.append(v)
        seen.add(parent)
    return chain[::-1]


def model_card(store, version: ModelVersion, base: BaseIdentity, kind: str) -> tuple[str, dict]:
    """(README.md text, tuneloop.json facts) for `version` exported as `kind` (adapter | merged | full)."""
    reward = version.method == "reward"
    chain = lineage(store, version)
    hyper = {k: v for k, v in version.config.items() if k not in LOCAL_KEYS}
    snapshot = version.data_snapshot or {}
    data = snapshot_summary(store, snapshot) if "max_ids" in snapshot else snapshot
    gate = {k: version.metrics[k] for k in GATE_KEYS if k in version.metrics}
    metrics = {k: v for k, v in version.metrics.items() if k not in GATE_KEYS and k != "history"}
    tags = ["tuneloop", version.method, version.technique, *(["trl"] if version.method != "sdk" else []),
            *(["peft", "lora"] if kind == "adapter" else []), *(["rlhf"] if version.method in RL_METHODS else []),
            *(["reward-model"] if reward else [])]
    header = ModelCardData(
        base_model=base.hub_id, library_name="peft" if kind == "adapter" else "transformers",
        license=base.license or "other", tags=tags,
        pipeline_tag="text-classification" if reward else "text-generation",
        base_model_relation="adapter" if kind == "adapter" else "finetune",
    )
    facts = {"name": version.name, "export": kind, "method": version.method, "technique": version.technique,
             "base_model": {"id": base.hub_id, "sha256": base.sha256, "license": base.license, "note": base.note},
             "lineage": [{"name": v.name, "method": v.method, "technique": v.technique, "created": v.created}
                         for v in chain],
             "hyperparameters": hyper, "data": data, "gate": gate, "metrics": metrics, "created": version.created}
    body = [
        f"# {version.name}",
        "",
        f"A {'reward model' if reward else 'chat model'} trained with Tuneloop from human "
        f"feedback: method **{version.method}**, technique **{version.technique}**, on top of `{base.hub_id}`. "
        f"This folder is {_KIND_TEXT[kind]}.",
        "",
        "## How to load",
        "",
        "```python",
        _usage(kind, reward, base.hub_id),
        "```",
        "",
        "## Base model",
        "",
        f"- id: `{base.hub_id}` ({base.note})",
        f"- weights SHA-256 (its *.safetensors, sorted by name): `{base.sha256 or 'not recorded'}`",
        f"- license: {base.license or 'not recorded: check the base model’s own terms'}",
        "",
        "## Lineage",
        "",
        " → ".join(["base", *(f"{v.name} ({v.method}/{v.technique}, {v.created[:10]})" for v in chain)]),
        "",
        "## Training",
        "",
        _table(hyper),
        "",
        "## Data snapshot",
        "",
        "Counts only; no prompt, answer or comment text is included.",
        "",
        _table(_flat(data)) if data else "No snapshot recorded.",
        "",
        "## Evaluation gate",
        "",
        _table(gate) if gate else "Not evaluated.",
        "",
        "## Metrics",
        "",
        _table(metrics) if metrics else "None recorded.",
        "",
    ]
    return f"---\n{header.to_yaml()}\n---\n\n" + "\n".join(body), facts


_KIND_TEXT = {
    "adapter": "a PEFT LoRA adapter: load the base model named above, then this adapter",
    "merged": "a standard Hugging Face model: the LoRA adapter merged into the base weights",
    "full": "a standard Hugging Face model (all weights were trained)",
}


def _usage(kind: str, reward: bool, base_id: str) -> str:
    auto = "AutoModelForSequenceClassification" if reward else "AutoModelForCausalLM"
    if kind == "adapter":
        extra = ", num_labels=1" if reward else ""
        return (f"from peft import PeftModel\nfrom transformers import {auto}\n\n"
                f"base = {auto}.from_pretrained(\"{base_id}\"{extra})  # or your local copy of it\n"
                "model = PeftModel.from_pretrained(base, \"path/to/this/folder\")")
    if reward:
        return ("from transformers import pipeline\n\nscore = pipeline(\"text-classification\", "
                "model=\"path/to/this/folder\", function_to_apply=\"none\")")
    return ("from transformers import pipeline\n\n"
            "chat = pipeline(\"text-generation\", model=\"path/to/this/folder\")\n"
            "print(chat([{\"role\": \"user\", \"content\": \"Hello!\"}], max_new_tokens=64))")


def _flat(data: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _table(values: dict) -> str:
    rows = [f"| {key} | {_cell(value)} |" for key, value in values.items()]
    return "\n".join(["| key | value |", "|---|---|", *rows])


def _cell(value: object) -> str:
    if isinstance(value, list):
        return " … ".join(_cell(v) for v in value)
    text = f"{value:.4g}" if isinstance(value, float) else "–" if value is None else str(value)
    return text.replace("|", "\\|").replace("\n", " ")
