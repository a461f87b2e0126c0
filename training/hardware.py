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


def describe() -> str:
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)} ({pick_dtype()})".replace("torch.", "")
    return f"CPU x{torch.get_num_threads()} threads (float32)"
