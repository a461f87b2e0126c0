"""The evaluation gate: measure a new policy version against the active one on held-out prompts, then decide.

    python -m training evaluate --db data/tuneloop.db --version v5-dpo                      # judge: auto
    python -m training evaluate --db data/tuneloop.db --version v5-dpo --judge human        # human sign-off
    python -m training evaluate --db data/tuneloop.db --version v5-dpo --judge_model v2-reward --promote false

1. A seeded random sample of `--gate_prompts` held-out prompts of the version's snapshot (the train split, flagged
   `eval_on_train`, only when there is none); both versions answer greedily, up to `--max_new_tokens` tokens
   (truncation recorded).
2. The judge is never a model trained in the same round (`--exclude_judges`) nor the reward the policy was optimised
   against. `--judge auto`: human sign-off when the store has reviewers, else the `--judge_model` the admin chose
   (a frozen reward version or a local HF sequence-classification folder), else no judge.
   - human: the differing answer pairs go into the blind A/B review queue as gate items; the app decides once
     every item has `--votes_per_item` votes (webapp.services.check_gates -> training.gate);
   - model: the judge scores both answers; its accuracy on held-out pairs is measured too.
   Identical answers are ties, never wins.
3. Like with like: the held-out preference accuracy of both versions, against the same reference (the base model)
   on the same pairs; a drop refuses auto-promotion.
4. The verdict (training.gate): Wilson 95 % lower bound > 0.5 with >= --min_decisive decisive comparisons.
Everything lands in the version's metrics (`gate`) and in `gate_report.json` in the version folder.
"""

import json
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from training.base_model import DEFAULT_BASE_MODEL, load_tokenizer, resolve_base_model
from training.gate import GatePolicy, decide
from training.generation import Request, generate
from training.hardware import device
from training.versions import load_reward_model, load_version_model

JUDGES = ("auto", "human", "model", "none")


@dataclass
class EvaluateConfig:
    db: str = field(metadata={"help": "Path of the store (data/tuneloop.db)."})
    version: str = field(metadata={"help": "The new version to evaluate."})
    data_dir: str | None = field(default=None, metadata={"help": "Data dir (default: the folder of --db)."})
    against: str = field(default="active", metadata={"help": "Compare with: 'active' (default), 'base' or a name."})
    base_model: str = field(default=DEFAULT_BASE_MODEL, metadata={"help": "Base model name, folder or hub id."})
    judge: str = field(default="auto", metadata={"help": f"One of {JUDGES}: auto = human when the store has "
                                                          "reviewers, else --judge_model, else none."})
    judge_model: str | None = field(default=None, metadata={"help": "Independent judge: a frozen reward version "
                                                                    "or a local HF sequence-classification folder."})
    exclude_judges: str = field(default="", metadata={"help": "Comma-separated versions that may not judge (set by "
                                                              "a round: the versions it trained)."})
    promote: bool = field(default=True, metadata={"help": "Make the version active when the gate passes."})
    gate_prompts: int = field(default=32, metadata={"help": "Held-out prompts sampled for the comparison."})
    max_new_tokens: int = field(default=256, metadata={"help": "Answer length (truncation is recorded)."})
    seed: int = field(default=0, metadata={"help": "Seed of the held-out prompt sample (recorded)."})
    votes_per_item: int = field(default=1, metadata={"help": "Human sign-off: reviewer votes per gate item."})
    min_decisive: int = field(default=20, metadata={"help": "Decisive (non-tie) comparisons needed for a verdict."})
    min_heldout_prompts: int = field(default=20, metadata={"help": "Smaller held-out sets never auto-promote."})
    judge_accuracy_floor: float = field(default=0.6, metadata={"help": "An automatic judge less accurate than this "
                                                                       "on held-out pairs never auto-promotes."})
    trust_automatic_judge: bool = field(default=False, metadata={"help": "Let an automatic judge's pass "
                                                                         "auto-promote."})
    auto_promote_online_rl: bool = field(default=False, metadata={"help": "Let a pass auto-promote an online RL "
                                                                          "version."})
    max_accuracy_drop: float = field(default=0.0, metadata={"help": "Allowed drop of held-out preference accuracy "
                                                                    "vs the compared version (same pairs, same "
                                                                    "reference)."})

    def __post_init__(self):
        if self.data_dir is None:
            self.data_dir = str(Path(self.db).resolve().parent)
        if self.judge not in JUDGES:
            raise ValueError(f"--judge must be one of {JUDGES}, got {self.judge!r}.")
        if self.judge == "model" and not self.judge_model:
            raise ValueError("--judge model needs --judge_model (a reward version or a HF classifier folder).")
        if self.gate_prompts < 1 or self.max_new_tokens < 1 or self.votes_per_item < 1:
            raise ValueError("--gate_prompts, --max_new_tokens and --votes_per_item must be at least 1.")

    @property
    def policy(self) -> GatePolicy:
        return GatePolicy(self.min_decisive, self.min_heldout_prompts, self.judge_accuracy_floor,
                          self.trust_automatic_judge, self.auto_promote_online_rl, self.max_accuracy_drop)


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


def greedy_answers(model, tokenizer, prompts: list[list[dict]], max_new_tokens: int) -> list[tuple[str, bool]]:
    """(answer, truncated) per prompt, decoded together by the batched generator; truncated = it used all
    `max_new_tokens` without ending."""
    results = generate(model, tokenizer, [Request(prompt, max_new_tokens=max_new_tokens) for prompt in prompts])
    return [(result.text.strip(), result.new_tokens >= max_new_tokens) for result in results]


@torch.no_grad()
def reward_score(reward_model, tokenizer, prompt: list[dict], answer: str) -> float:
    conversation = prompt + [{"role": "assistant", "content": answer}]
    if tokenizer.chat_template:
        ids = tokenizer.apply_chat_template(conversation, return_tensors="pt", return_dict=True)["input_ids"]
    else:  # a generic classifier: the turns as plain text
        ids = tokenizer("\n\n".join(m["content"] for m in conversation), return_tensors="pt")["input_ids"]
    return reward_model(input_ids=ids.to(device())).logits[0, 0].item()


def sample_prompts(prompts: list, count: int, seed: int) -> list:
    """A seeded random sample of `count` prompts (all of them when fewer), in sampled order."""
    return random.Random(seed).sample(prompts, min(count, len(prompts)))


def pick_judge(cfg: EvaluateConfig, store, version) -> tuple[str | None, str | None]:
    """(kind, name): kind human | reward_version | hf_model | None. Refuses a judge trained in the same round or
    the reward model any stage of this lineage was optimised against."""
    if cfg.judge == "none":
        return None, None
    reviewers = any(u.role == "reviewer" and not u.disabled for u in store.list_users())
    if cfg.judge == "human" or (cfg.judge == "auto" and reviewers):
        return "human", "reviewers"
    if not cfg.judge_model:
        return None, None
    banned = {name for name in cfg.exclude_judges.split(",") if name}
    ancestor = version
    while ancestor is not None:
        banned |= {ancestor.config.get("reward_model"), ancestor.metrics.get("reward_model")} - {None}
        ancestor = store.get_version(ancestor.parent) if ancestor.parent else None
    if cfg.judge_model in banned:
        raise ValueError(f"--judge_model {cfg.judge_model}: trained in this round or optimised against by this "
                         "lineage; pick a frozen earlier reward version or an independent classifier.")
    judge = store.get_version(cfg.judge_model)
    if judge is not None:
        if judge.method != "reward":
            raise ValueError(f"--judge_model {cfg.judge_model}: a {judge.method} version, not a reward model.")
        return "reward_version", judge.name
    if not Path(cfg.judge_model, "config.json").is_file():
        raise ValueError(f"--judge_model {cfg.judge_model}: no reward version of that name and no HF model folder.")
    return "hf_model", cfg.judge_model


def load_judge(kind: str, name: str, store, base_model: str, tokenizer):
    """(model, tokenizer) of an automatic judge."""
    from transformers import AutoModelForSequenceClassification

    if kind == "reward_version":
        return load_reward_model(base_model, store.get_version(name).path, tokenizer), tokenizer
    return AutoModelForSequenceClassification.from_pretrained(name).to(device()).eval(), load_tokenizer(name)


def main(cfg: EvaluateConfig) -> dict:
    from feedback_db import FeedbackStore
    from feedback_db.datasets import build_preference_dataset

    # 1. Versions, held-out prompts (seeded sample) and pairs of the version's snapshot
    store = FeedbackStore(cfg.db)
    version = store.get_version(cfg.version)
    if version is None or version.method == "reward":
        raise ValueError(f"--version {cfg.version}: not a policy version in the store.")
    against = store.active_version() if cfg.against == "active" else store.get_version(cfg.against)
    against = None if cfg.against == "base" or (against and against.name == version.name) else against
    kind, judge_name = pick_judge(cfg, store, version)
    snapshot = version.snapshot
    heldout = store.list_prompts(split="heldout", snapshot=snapshot)
    eval_on_train = not heldout
    pool = heldout or store.list_prompts(split="train", snapshot=snapshot)
    prompts = sample_prompts(pool, cfg.gate_prompts, cfg.seed)
    pairs = build_preference_dataset(store, snapshot=snapshot, split="train" if eval_on_train else "heldout")
    base_model = resolve_base_model(cfg.base_model, cfg.data_dir)
    tokenizer = load_tokenizer(base_model)
    gate: dict = {"judge": kind, "judge_name": judge_name, "compared_with": against.name if against else "base",
                  "eval_on_train": eval_on_train, "heldout_prompts": len(heldout), "seed": cfg.seed,
                  "prompt_ids": [p.id for p in prompts], "max_new_tokens": cfg.max_new_tokens,
                  "policy": asdict(cfg.policy), "auto_promote": cfg.promote, "method": version.method}

    # 2. Both versions answer the sampled prompts
    policy = load_version_model(base_model, version.path).eval()
    other = load_version_model(base_model, against.path if against else None).eval()
    messages = [p.as_messages() for p in prompts]
    answers = list(zip(greedy_answers(policy, tokenizer, messages, cfg.max_new_tokens),
                       greedy_answers(other, tokenizer, messages, cfg.max_new_tokens), strict=True))
    gate["truncated"] = [[new[1], old[1]] for new, old in answers]

    # 3. Like with like: both versions' implicit-reward accuracy on the same pairs against the base model
    accuracies = None
    if len(pairs) and against is not None:
        reference = load_version_model(base_model, None).eval()
        accuracies = (preference_accuracy(policy, reference, tokenizer, pairs)["accuracy"],
                      preference_accuracy(other, reference, tokenizer, pairs)["accuracy"])
        gate["preference_accuracy"] = {"pairs": len(pairs), "candidate": accuracies[0], "compared": accuracies[1],
                                       "reference": "base"}
        del reference
    del policy, other

    # 4. Judge: human sign-off (gate items in the A/B queue) or an independent model
    if kind == "human":
        gate |= human_items(store, version.name, gate["compared_with"], prompts, answers, cfg.votes_per_item)
        gate |= {"mode": "human", "status": "waiting", "accuracies": accuracies}
        store.update_version_metrics(version.name, {"gate": gate})
        print(f"[tuneloop] evaluate {version.name}: {len(gate['pairs'])} gate items wait for reviewer votes",
              flush=True)
        return gate
    outcomes, scores, judge_accuracy = [], [], None
    if kind is not None:
        judge, judge_tokenizer = load_judge(kind, judge_name, store, base_model, tokenizer)
        if len(pairs) and not eval_on_train:
            ordered = [reward_score(judge, judge_tokenizer, row["prompt"], row["chosen"][-1]["content"])
                       > reward_score(judge, judge_tokenizer, row["prompt"], row["rejected"][-1]["content"])
                       for row in pairs]
            judge_accuracy = sum(ordered) / len(ordered)
        for prompt, ((new, _), (old, _)) in zip(prompts, answers, strict=True):
            if new.strip() == old.strip():
                outcomes.append("tie")
                scores.append(None)
                continue
            pair = (reward_score(judge, judge_tokenizer, prompt.as_messages(), new),
                    reward_score(judge, judge_tokenizer, prompt.as_messages(), old))
            outcomes.append("win" if pair[0] > pair[1] else "loss" if pair[0] < pair[1] else "tie")
            scores.append(list(pair))
        del judge
    result = decide(outcomes, cfg.policy, eval_on_train=eval_on_train, heldout_prompts=len(heldout),
                    judge_kind=kind, judge_accuracy=judge_accuracy, method=version.method, auto_promote=cfg.promote,
                    accuracies=accuracies)
    gate |= {"mode": "model" if kind else "none", "status": result.status, "judge_accuracy": judge_accuracy,
             "verdict": result.as_dict()}
    report = [{"prompt_id": p.id, "prompt": p.text, "candidate": new, "compared": old, "judgment": o, "scores": s}
              for p, ((new, _), (old, _)), o, s in zip(prompts, answers, outcomes or [None] * len(prompts),
                                                       scores or [None] * len(prompts), strict=True)]
    Path(version.path, "gate_report.json").write_text(json.dumps({"gate": gate, "items": report}, indent=1))
    if result.promote:
        store.set_active(version.name, username="evaluation-gate")
    store.update_version_metrics(version.name, {"gate": gate, "win_rate_vs_active": result.win_rate,
                                                "promoted": result.promote})
    print(f"[tuneloop] evaluate {version.name}: {result.status}, {result.reason}", flush=True)
    return gate


def human_items(store, candidate: str, compared: str, prompts: list, answers: list, votes_per_item: int) -> dict:
    """Store both answers of each sampled prompt as responses tagged with the gate, so they reach the blind A/B
    queue; identical answers are recorded as ties and not queued. Returns the gate's items."""
    pairs = []
    for prompt, ((new, new_cut), (old, old_cut)) in zip(prompts, answers, strict=True):
        if new.strip() == old.strip():
            pairs.append([])
            continue
        tag = {"gate": candidate, "greedy": True}
        pairs.append([store.add_response(prompt.id, new, candidate, {**tag, "truncated": new_cut}),
                      store.add_response(prompt.id, old, compared, {**tag, "truncated": old_cut})])
    return {"pairs": pairs, "votes_per_item": votes_per_item}
