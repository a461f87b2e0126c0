"""The evaluation gate: decide whether a new policy version replaces the active one.

    python -m training evaluate --db data/tuneloop.db --version v5-dpo
    python -m training evaluate --db data/tuneloop.db --version v5-dpo --promote false   # measure only

On held-out data (the store's `heldout` split; the train split, flagged `eval_on_train`, when it has none):
- reward_model_accuracy: share of held-out pairs the reward model orders correctly;
- heldout_preference_accuracy: share of held-out pairs where the new version's implicit reward
  (log p_version - log p_parent) is higher for the chosen answer than for the rejected one;
- win_rate_vs_active: greedy answers of the new and the active version to held-out prompts, judged by the reward
  model (win 1, tie 0.5).
Promotion: store.set_active(version) when win_rate >= --win_rate_threshold and the preference accuracy did not
drop below the active version's (by more than --max_accuracy_drop). Otherwise the version stays a candidate;
an admin can still activate it in the app. Everything lands in the version's metrics.
"""

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from peft import PeftModel

from training.base_model import DEFAULT_BASE_MODEL, load_causal_lm, load_tokenizer, resolve_base_model
from training.generation import Request, generate
from training.hardware import device
from training.versions import is_adapter_dir, load_reward_model


@dataclass
class EvaluateConfig:
    db: str = field(metadata={"help": "Path of the store (data/tuneloop.db)."})
    version: str = field(metadata={"help": "The new version to evaluate."})
    data_dir: str | None = field(default=None, metadata={"help": "Data dir (default: the folder of --db)."})
    against: str = field(default="active", metadata={"help": "Compare with: 'active' (default), 'base' or a name."})
    reward_model: str | None = field(default=None, metadata={"help": "Reward version that judges (default: the "
                                                                     "newest reward version)."})
    base_model: str = field(default=DEFAULT_BASE_MODEL, metadata={"help": "Base model name, folder or hub id."})
    promote: bool = field(default=True, metadata={"help": "Make the version active when it passes the gate."})
    win_rate_threshold: float = field(default=0.5, metadata={"help": "Minimum win-rate vs the compared version."})
    max_accuracy_drop: float = field(default=0.0, metadata={"help": "Allowed drop of held-out preference "
                                                                    "accuracy vs the active version."})
    max_prompts: int = field(default=16, metadata={"help": "Held-out prompts answered for the win-rate."})
    max_new_tokens: int = field(default=64, metadata={"help": "Answer length for the win-rate."})

    def __post_init__(self):
        if self.data_dir is None:
            self.data_dir = str(Path(self.db).resolve().parent)


def load_policy(base_model: str, version_dir: str | Path | None) -> torch.nn.Module:
    """A version as a plain causal LM for scoring/generation (a LoRA adapter is merged into its own base copy)."""
    if version_dir is None:
        return load_causal_lm(base_model).eval()
    if is_adapter_dir(version_dir):
        return PeftModel.from_pretrained(load_causal_lm(base_model), str(version_dir)).merge_and_unload().eval()
    return load_causal_lm(str(version_dir)).eval()


@torch.no_grad()
def completion_logp(model, tokenizer, prompt: list[dict], completion: list[dict]) -> float:
    """Sum of log-probs of the completion tokens given the prompt (chat template applied)."""
    prompt_ids = tokenizer.apply_chat_template(prompt, add_generation_prompt=True)["input_ids"]
    full_ids = tokenizer.apply_chat_template(prompt + completion)["input_ids"]
    ids = torch.tensor([full_ids], device=device())
    logps = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), dim=-1)
    targets = ids[0, 1:]
    token_logps = logps.gather(-1, targets[:, None])[:, 0]
    return token_logps[len(prompt_ids) - 1:].sum().item()


def preference_accuracy(policy, reference, tokenizer, pairs) -> dict:
    """Implicit-reward accuracy: (log p_policy - log p_ref)(chosen) > (...)(rejected); and the mean margin."""
    wins, margins = [], []
    for row in pairs:
        rewards = [completion_logp(policy, tokenizer, row["prompt"], answer)
                   - completion_logp(reference, tokenizer, row["prompt"], answer)
                   for answer in (row["chosen"], row["rejected"])]
        wins.append(float(rewards[0] > rewards[1]))
        margins.append(rewards[0] - rewards[1])
    return {"accuracy": sum(wins) / len(wins), "margin": sum(margins) / len(margins)} if wins else {}


def greedy_answers(model, tokenizer, prompts: list[list[dict]], max_new_tokens: int) -> list[str]:
    """Greedy answers to all prompts, decoded together by the batched generator."""
    results = generate(model, tokenizer, [Request(prompt, max_new_tokens=max_new_tokens) for prompt in prompts])
    return [result.text.strip() for result in results]


@torch.no_grad()
def reward_score(reward_model, tokenizer, prompt: list[dict], answer: str) -> float:
    ids = tokenizer.apply_chat_template(prompt + [{"role": "assistant", "content": answer}], return_tensors="pt",
                                        return_dict=True)["input_ids"]
    return reward_model(input_ids=ids.to(device())).logits[0, 0].item()


def main(cfg: EvaluateConfig) -> dict:
    from feedback_db import FeedbackStore
    from feedback_db.datasets import build_preference_dataset

    # 1. Versions, held-out data
    store = FeedbackStore(cfg.db)
    version = store.get_version(cfg.version)
    if version is None or version.method == "reward":
        raise ValueError(f"--version {cfg.version}: not a policy version in the store.")
    against = store.active_version() if cfg.against == "active" else store.get_version(cfg.against)
    against = None if cfg.against == "base" or (against and against.name == version.name) else against
    parent = store.get_version(version.parent) if version.parent else None
    rewards = [v for v in store.list_versions() if v.method == "reward"]
    reward_version = store.get_version(cfg.reward_model) if cfg.reward_model else (rewards[-1] if rewards else None)
    base_model = resolve_base_model(cfg.base_model, cfg.data_dir)
    tokenizer = load_tokenizer(base_model)
    snapshot = version.data_snapshot or None
    pairs = build_preference_dataset(store, snapshot=snapshot, split="heldout")
    prompts = [p.as_messages() for p in store.list_prompts(split="heldout")]
    eval_on_train = len(pairs) == 0 or not prompts
    if len(pairs) == 0:
        pairs = build_preference_dataset(store, snapshot=snapshot)
    if not prompts:
        prompts = [p.as_messages() for p in store.list_prompts(split="train")]
    prompts = prompts[:cfg.max_prompts]
    metrics: dict = {"eval_on_train": eval_on_train, "eval_pairs": len(pairs), "eval_prompts": len(prompts),
                     "compared_with": against.name if against else "base"}

    # 2. Preference accuracy of the new version vs its parent (the DPO/KTO reference)
    policy = load_policy(base_model, version.path)
    if len(pairs):
        reference = load_policy(base_model, parent.path if parent else None)
        result = preference_accuracy(policy, reference, tokenizer, pairs)
        metrics.update(heldout_preference_accuracy=result["accuracy"], heldout_preference_margin=result["margin"])
        del reference

    # 3. Reward-model accuracy and win-rate vs the compared version, judged by the reward model
    if reward_version is not None:
        reward_model = load_reward_model(base_model, reward_version.path, tokenizer)
        metrics["judge"] = reward_version.name
        if len(pairs):
            ordered = [reward_score(reward_model, tokenizer, row["prompt"], row["chosen"][-1]["content"])
                       > reward_score(reward_model, tokenizer, row["prompt"], row["rejected"][-1]["content"])
                       for row in pairs]
            metrics["reward_model_accuracy"] = sum(ordered) / len(ordered)
        other = load_policy(base_model, against.path if against else None)
        outcomes = []
        answers = zip(greedy_answers(policy, tokenizer, prompts, cfg.max_new_tokens),
                      greedy_answers(other, tokenizer, prompts, cfg.max_new_tokens), strict=True)
        for prompt, (new_answer, old_answer) in zip(prompts, answers, strict=True):
            new = reward_score(reward_model, tokenizer, prompt, new_answer)
            old = reward_score(reward_model, tokenizer, prompt, old_answer)
            outcomes.append(1.0 if new > old else 0.5 if new == old else 0.0)
        metrics["win_rate_vs_active"] = sum(outcomes) / len(outcomes) if outcomes else None

    # 4. Promotion policy
    previous = against.metrics.get("heldout_preference_accuracy") if against else None
    accuracy = metrics.get("heldout_preference_accuracy")
    dropped = previous is not None and accuracy is not None and accuracy < previous - cfg.max_accuracy_drop
    win_rate = metrics.get("win_rate_vs_active")
    passed = win_rate is not None and win_rate >= cfg.win_rate_threshold and not dropped
    metrics.update(gate_passed=passed, win_rate_threshold=cfg.win_rate_threshold, preference_accuracy_dropped=dropped)
    if win_rate is None:
        metrics["gate_reason"] = "no reward model to judge the win-rate: kept as candidate"
    elif not passed:
        metrics["gate_reason"] = (f"win-rate {win_rate:.2f} < {cfg.win_rate_threshold}" if not dropped else
                                  f"held-out preference accuracy dropped ({accuracy:.2f} < {previous:.2f})")
    promoted = passed and cfg.promote
    if promoted:
        store.set_active(version.name, username="evaluation-gate")
    metrics["promoted"] = promoted
    store.update_version_metrics(version.name, metrics)
    print(f"[tuneloop] evaluate {version.name}: {json.dumps(metrics)}", flush=True)
    return metrics
