"""Online RL against the reward model (GRPO) - the policy-optimisation step of classic RLHF.

    python -m training online_rl --db data/tuneloop.db --parent v3-sft --reward_model v4-reward
    python -m training online_rl --config training/configs/online_rl.yaml
    python -m training online_rl --dataset_file tests/assets/pairs_tiny.jsonl --reward_model <folder> --data_dir d

TRL 1.16 no longer ships PPOTrainer, so this is not PPO: it is GRPO (TRL's GRPOTrainer). For every training
prompt the policy samples `--num_generations` answers, the trained reward model scores them, and the policy is
pushed towards the answers scoring above their group's mean, with a KL penalty (`--beta` > 0) towards the parent
version. With LoRA the parent is a frozen copy of its adapter ("ref"), never a second model; full/freeze load a
reference copy (GRPO computes reference log-probs on freshly generated text, so they cannot be precomputed). That
copy is the parent too when a full/freeze stage starts from a LoRA parent: TRL builds it from the policy config's
`_name_or_path`, which names the base after a merge, so the merged parent is saved beside the stage's data and
named there while the trainer is built (`kl_reference_at_parent`).

Rollouts: TRL samples through `model.generate` on the policy as it trains; for a LoRA policy every decode step then
runs each adapted projection three times (base, A, B). `merged_lora_rollouts` samples the same way (the trainer's
generation config, prompts rendered with the chat template) with the adapter merged into the base weights for the
rollout and unmerged afterwards (what TRL itself does around a vLLM weight sync).
"""

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from datasets import Dataset
from peft import PeftModel
from trl import GRPOConfig, GRPOTrainer
from trl.models import unwrap_model_for_generation

from feedback_db.models import Snapshot
from training import run_args
from training.distributed import from_main
from training.stage_data import load_stage_dataset
from training.stage_run import StageRun
from training.versions import is_adapter_dir, load_reward_model, stage_data_dir

DEFAULT_LR = {"lora": 5e-5, "full": 1e-6, "freeze": 5e-6}


@dataclass
class OnlineRLRecipeConfig(run_args.PolicyArgs):
    dataset_file: str | None = field(default=None, metadata={"help": "JSONL with a conversational `prompt` "
                                                                     "column, used instead of the store's prompts."})
    reward_model: str | None = field(default=None, metadata={"help": "Reward version name or folder (default: "
                                                                     "the newest reward version)."})
    beta: float = field(default=0.04, metadata={"help": "KL penalty towards the parent (> 0)."})
    num_generations: int = field(default=4, metadata={"help": "Answers sampled per prompt (the GRPO group)."})
    max_completion_length: int = field(default=32, metadata={"help": "Tokens per sampled answer (CPU: keep it "
                                                                     "short; GPU: 256+)."})
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature of the rollouts."})
    num_train_epochs: float = field(default=1.0, metadata={"help": "Epochs over the prompts."})
    learning_rate: float | None = field(default=None, metadata={"help": "Default: 5e-5 lora, 1e-6 full, 5e-6 "
                                                                        "freeze."})
    max_prompts: int = field(default=64, metadata={"help": "Prompts used per round (CPU rollouts are slow)."})

    WHOLE_BATCH_PER_FORWARD = True  # see run_args.RecipeArgs

    def __post_init__(self):
        super().__post_init__()
        if self.db is None and (self.dataset_file is None or self.reward_model is None):
            raise ValueError("Pass --db (the store), or --dataset_file and --reward_model (a folder).")
        if self.beta <= 0:
            raise ValueError(f"--beta must be > 0 (KL towards the parent), got {self.beta}.")
        if (self.per_device_train_batch_size or self.batch_size) % self.num_generations:
            raise ValueError("--per_device_train_batch_size (default: --batch_size) must be a multiple of "
                             "--num_generations.")
        if self.learning_rate is None:
            self.learning_rate = DEFAULT_LR[self.technique]


def training_prompts(cfg: OnlineRLRecipeConfig, store, snapshot: Snapshot | None) -> Dataset:
    dataset = load_stage_dataset(cfg, store, snapshot, "online_rl")["train"].select_columns(["prompt"])
    if len(dataset) == 0:
        raise ValueError("No training prompts: add or import prompts first.")
    return dataset.shuffle(seed=cfg.seed).select(range(min(cfg.max_prompts, len(dataset))))


def reward_version_dir(cfg: OnlineRLRecipeConfig, store) -> tuple[str, str]:
    """(name, folder) of the reward model: --reward_model (a version or a folder), else the newest reward version."""
    reward_name = cfg.reward_model
    if reward_name is None and store is not None:
        rewards = [v for v in store.list_versions() if v.method == "reward"]
        reward_name = rewards[-1].name if rewards else None
    if reward_name is None:
        raise ValueError("No reward model: train one first (python -m training reward, or a reward stage).")
    reward_version = store.get_version(reward_name) if store is not None else None
    return reward_name, reward_version.path if reward_version else reward_name


@contextmanager
def kl_reference_at_parent(model, parent_dir: Path | None, technique: str, folder: Path) -> Iterator[Path | None]:
    """While GRPOTrainer is built, make its KL reference the parent policy.

    TRL 1.16's GRPOTrainer takes no reference model: for a non-PEFT policy it loads one from
    `model.config._name_or_path`. A full/freeze policy merged from a LoRA parent carries the *base's* path there,
    so the KL term would pull towards the base, not the parent. For that case rank 0 saves the policy as loaded
    (the merged parent, before any step) to `folder` and the config names it until the block ends; the original
    path is restored afterwards. Yields the folder, or None when TRL's own reference already is the parent (LoRA:
    a frozen "ref" copy of the parent adapter; a base or full-weights parent: its own folder)."""
    if technique == "lora" or parent_dir is None or not is_adapter_dir(parent_dir):
        yield None
        return
    from_main(lambda: model.save_pretrained(str(folder)))
    original = model.config._name_or_path
    model.config._name_or_path = str(folder)
    try:
        yield folder
    finally:
        model.config._name_or_path = original


@contextmanager
def lora_merged(model) -> Iterator[None]:
    """A PeftModel's active adapter merged into its base weights inside the block (other models: as they are)."""
    if not isinstance(model, PeftModel):
        yield
        return
    model.merge_adapter()
    try:
        yield
    finally:
        model.unmerge_adapter()


def merged_lora_rollouts(prompts: list[list[dict]], trainer: GRPOTrainer) -> dict:
    """GRPO's rollouts as TRL samples them without vLLM (left-padded prompts through `generate` with the trainer's
    generation config; a completion ends after its first end-of-sequence token), with a LoRA policy's adapter merged
    while it decodes. `prompts` holds each prompt once per sampled answer (TRL's sampler repeats them)."""
    tokenizer, device = trainer.processing_class, trainer.accelerator.device
    prompt_ids = [tokenizer.apply_chat_template(prompt, add_generation_prompt=True)["input_ids"] for prompt in prompts]
    width, pad = max(len(ids) for ids in prompt_ids), tokenizer.pad_token_id
    input_ids = torch.tensor([[pad] * (width - len(ids)) + ids for ids in prompt_ids], device=device)
    attention_mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in prompt_ids], device=device)
    with (unwrap_model_for_generation(trainer.model_wrapped, trainer.accelerator,
                                      generation_kwargs=trainer.generation_kwargs) as model,
          torch.no_grad(), lora_merged(model)):
        output = model.generate(input_ids=input_ids, attention_mask=attention_mask,
                                generation_config=trainer.generation_config)
    stops, completion_ids = set(trainer.eos_token_ids), []
    for row in output[:, width:].tolist():
        end = next((i + 1 for i, token in enumerate(row) if token in stops), len(row))
        completion_ids.append(row[:end])
    return {"prompt_ids": prompt_ids, "completion_ids": completion_ids, "logprobs": None}


def build_trainer(cfg: OnlineRLRecipeConfig, args: GRPOConfig, model, parent_dir: Path | None, reward_model,
                  tokenizer, dataset: Dataset, reference_dir: Path, callbacks: list) -> GRPOTrainer:
    """GRPO on the policy, the reward model as the reward function, the KL reference = the parent."""
    with kl_reference_at_parent(model, parent_dir, cfg.technique, reference_dir):
        return GRPOTrainer(
            model=model,
            reward_funcs=[reward_model],
            reward_processing_classes=[tokenizer],
            args=args,
            train_dataset=dataset,
            processing_class=tokenizer,
            eval_dataset=None,  # online RL scores its own samples; there is no held-out loss to track
            callbacks=callbacks,
            rollout_func=merged_lora_rollouts,
        )


def main(cfg: OnlineRLRecipeConfig) -> str:
    # 1. Processes, store, snapshot, prompts, reward model version: rank 0 reads the store (or the round's build) and
    #    writes the prompts, every rank loads that copy
    run = StageRun.begin(cfg, "online_rl")
    reward_name, reward_dir = from_main(lambda: reward_version_dir(cfg, run.store))
    dataset = run.materialise(lambda: training_prompts(cfg, run.store, run.snapshot))

    # 2. Trainer config, then the policy (parent weights, trainable) and the reward model as the reward function
    args = GRPOConfig(
        beta=cfg.beta,
        num_generations=cfg.num_generations,
        max_completion_length=cfg.max_completion_length,
        temperature=cfg.temperature,
        mask_truncated_completions=True,  # a cut-off answer is not a finished one: no reward signal from it
        **run.trainer_args(has_eval=False),  # online RL scores its own samples; no held-out loss to track
    )
    model = run.policy()
    reward_model = load_reward_model(run.base_model, reward_dir, run.tokenizer)

    # 3. Trainer (the KL reference in the stage's data folder, removed with it on publish)
    trainer = build_trainer(cfg, args, model, run.parent_dir, reward_model, run.tokenizer, dataset,
                            stage_data_dir(run.tmp_dir) / "kl-reference", run.callbacks(has_eval=False))

    # 4. Train, save (without TRL's frozen "ref" adapter copy; rank 0 writes), register
    result = run.train(trainer)
    run.save(trainer)
    logged = [entry for entry in trainer.state.log_history if "reward" in entry]
    metrics = run.metrics(trainer, result, {
        "train_prompts": len(dataset),
        "reward_model": reward_name,
        "first_reward": logged[0]["reward"] if logged else None,
        "final_reward": logged[-1]["reward"] if logged else None,
        "final_kl": logged[-1].get("kl") if logged else None,
        "completion_mean_length": logged[-1].get("completions/mean_length") if logged else None,
        "completion_clipped_ratio": logged[-1].get("completions/clipped_ratio") if logged else None,
        "kl_reference": run.parent_name or "base",
    })
    return run.publish(trainer, metrics, cfg.technique, run.parent_name)
