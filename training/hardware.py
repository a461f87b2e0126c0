"""Hardware decisions in one place: which device and dtype to train and serve in.

bf16 on CPUs without bf16 instructions is ~300x slower than fp32 (measured here: 0.3 vs 113 GFLOP/s), so CPUs
always get fp32; GPUs that support bf16 get bf16. Everything that loads a model or builds a trainer asks here.
"""

import torch


def device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def pick_dtype() -> torch.dtype:
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def trainer_precision_kwargs() -> dict:
    """Keyword arguments for any TRL/transformers TrainingArguments.

    TRL 1.16 defaults to bf16=True and gradient_checkpointing=True even on CPU; both only cost time here.
    """
    bf16 = pick_dtype() == torch.bfloat16
    return {
        "bf16": bf16,
        "fp16": False,
        "gradient_checkpointing": False,
        "use_cpu": device() == "cpu",
        "dataloader_num_workers": 0,
    }


def micro_batch(batch_size: int, per_device: int | None) -> tuple[int, int]:
    """(rows per forward pass, gradient accumulation steps) that make `batch_size` rows per optimizer step.

    CPU default: one row per forward. On CPU, SDPA runs any masked batch (padding-free's block-diagonal mask or a
    padded batch) through its math kernel, which keeps a tokens x tokens score matrix per layer and head for the
    backward pass: LoRA SFT on 4 rows of ~480 tokens peaked at 6.6 GB RSS in one forward vs 2.8 GB one row at a
    time, DPO on 4 pairs 9.7 vs 3.4 GB (bench/memory.py). GPUs take the whole batch in one forward.
    """
    if batch_size < 1:
        raise ValueError(f"--batch_size must be at least 1, got {batch_size}.")
    if per_device is None:
        per_device = 1 if device() == "cpu" else batch_size
    if per_device < 1 or batch_size % per_device:
        raise ValueError(f"--batch_size {batch_size} must be a multiple of --per_device_train_batch_size "
                         f"{per_device} (rows per forward pass).")
    return per_device, batch_size // per_device


def describe() -> str:
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)} ({pick_dtype()})".replace("torch.", "")
    return f"CPU x{torch.get_num_threads()} threads (float32)"
