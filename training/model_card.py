"""The model card of an exported version: README.md with the Hugging Face metadata header, plus the same facts as JSON.

Lineage (the parent chain), method and technique, hyper-parameters, the data snapshot as numbers only
(feedback_db.summary), the evaluation gate's report and the metrics. The header is written by huggingface_hub's
`ModelCardData`, so the Hub and `ModelCard.load` read it as they read any card.
"""

from dataclasses import dataclass

from huggingface_hub import ModelCardData

from feedback_db.models import ModelVersion
from feedback_db.summary import snapshot_summary
from feedback_db.vocab import RL_STAGES

GATE_KEYS = ("gate", "win_rate_vs_active", "promoted")  # written by training.evaluate / webapp check_gates
# versions evaluated before the gate report (training.gate) kept these flat keys; their cards still show them
LEGACY_GATE_KEYS = ("gate_passed", "gate_reason", "win_rate_threshold", "judge", "reward_model_accuracy",
                    "heldout_preference_accuracy", "heldout_preference_margin", "preference_accuracy_dropped")
LOCAL_KEYS = ("db", "data_dir", "dataset_file", "dataset_dir", "snapshot", "run_id", "base_model", "parent",
              "reward_model")


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
    data = snapshot_summary(store, version.snapshot) if version.snapshot else version.data_snapshot or {}
    gate = gate_summary(version.metrics)
    metrics = {k: v for k, v in version.metrics.items()
               if k not in (*GATE_KEYS, *LEGACY_GATE_KEYS) and k != "history"}
    tags = ["tuneloop", version.method, version.technique, *(["trl"] if version.method != "sdk" else []),
            *(["peft", "lora"] if kind == "adapter" else []), *(["rlhf"] if version.method in RL_STAGES else []),
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
        _table({k: _interval(v) if k == "interval_95" else v for k, v in gate.items()}) if gate
        else "Not evaluated.",
        "",
        "## Metrics",
        "",
        _table(metrics) if metrics else "None recorded.",
        "",
    ]
    return f"---\n{header.to_yaml()}\n---\n\n" + "\n".join(body), facts


def gate_summary(metrics: dict) -> dict:
    """The evaluation gate's verdict as the card states it: from the gate report (`metrics["gate"]`, see
    training.evaluate and training.gate) the verdict, its Wilson 95 % interval and the counts behind it, the judge,
    what was compared and why auto-promotion was refused; never a prompt or an answer (those stay in the report)."""
    gate = metrics.get("gate")
    if not isinstance(gate, dict):  # evaluated before the gate report existed
        return {k: metrics[k] for k in (*LEGACY_GATE_KEYS, "win_rate_vs_active", "promoted") if k in metrics}
    verdict = gate.get("verdict") or {}
    policy = gate.get("policy") or {}
    truncated = gate.get("truncated") or []
    accuracy = gate.get("preference_accuracy") or {}
    summary = {
        "verdict": gate.get("status"),
        "promoted": bool(metrics.get("promoted", verdict.get("promote", False))),
        "reason": verdict.get("reason") or ("waiting for reviewer votes" if gate.get("status") == "waiting" else None),
        "rule": f"pass when the lower bound of the Wilson 95 % interval of the win-rate is above 0.5 over at least "
                f"{policy.get('min_decisive', '?')} decisive comparisons (identical answers are ties)",
        "win_rate": verdict.get("win_rate"),
        "interval_95": [verdict.get("lower"), verdict.get("upper")] if verdict.get("lower") is not None else None,
        "wins": verdict.get("wins"),
        "losses": verdict.get("losses"),
        "ties": verdict.get("ties"),
        "more_needed": verdict.get("more_needed"),
        "refusals": verdict.get("refusals") or [],
        "judge": gate.get("judge") or "none",
        "judge_name": gate.get("judge_name"),
        "judge_accuracy": gate.get("judge_accuracy"),
        "compared_with": gate.get("compared_with"),
        "evaluated_on_training_data": gate.get("eval_on_train"),
        "heldout_prompts": gate.get("heldout_prompts"),
        "gate_prompts": len(gate.get("prompt_ids") or []),
        "prompt_sample_seed": gate.get("seed"),
        "max_new_tokens": gate.get("max_new_tokens"),
        "truncated_answers": sum(bool(pair[0]) for pair in truncated) if truncated else None,
        "preference_accuracy_candidate": accuracy.get("candidate"),
        "preference_accuracy_compared": accuracy.get("compared"),
    }
    return {k: v for k, v in summary.items() if v is not None and v != []}


def _interval(bounds: list) -> str:
    return f"[{bounds[0]:.3f}, {bounds[1]:.3f}]"


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
