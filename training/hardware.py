"""Hardware decisions in one place: which device and dtype to train and serve in.

Weights: bf16 on GPUs that support it, fp32 on CPUs. bf16 on CPUs without bf16 instructions is ~300x slower than
fp32 (measured on such a CPU: 0.3 vs 113 GFLOP/s). CPUs with native bf16 (AVX512-BF16 or AMX) train with bf16
autocast over fp32 weights: LoRA SFT 184 vs 141 trained tokens/s, DPO 0.70 vs 0.54 pairs/s in one side-by-side
run here (bench/sft_throughput.py, bench/dpo_throughput.py). Serving stays fp32 on CPU. Everything that loads a
model or builds a trainer asks here.
"""

import re
from pathlib import Path

import torch


def device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def pick_dtype() -> torch.dtype:
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX in the CPU flags and oneDNN's bf16 kernels in this torch build."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux: no cheap way to tell, stay in fp32
        return False
    return bool(re.search(r"\b(avx512_bf16|amx_bf16)\b", flags)) and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def trainer_precision_kwargs() -> dict:
    """Keyword arguments for any TRL/transformers TrainingArguments.

    TRL 1.16 defaults to bf16=True and gradient_checkpointing=True even on CPU: bf16 is kept only where the hardware
    runs it natively (autocast over fp32 weights on such CPUs), checkpointing is off (it only costs time here).
    """
    bf16 = pick_dtype() == torch.bfloat16 or (device() == "cpu" and cpu_has_native_bf16())
    return {
        "bf16": bf16,
        "fp16": False,
        "gradient_checkpointing": False,
        "use_cpu": device() == "cpu",
        "dataloader_num_workers": 0,
    }


def micro_batch(batch_size: int, per_device: int | None, processes: int = 1) -> tuple[int, int]:
    """(rows per forward pass, gradient accumulation steps) that make `batch_size` rows per optimizer step, summed
    over the `processes` training processes (so a 2-process run takes the same optimizer steps as a 1-process one).

    CPU default: one row per forward. On CPU, SDPA runs any masked batch (padding-free's block-diagonal mask or a
    padded batch) through its math kernel, which keeps a tokens x tokens score matrix per layer and head for the
    backward pass: LoRA SFT on 4 rows of ~480 tokens peaked at 6.6 GB RSS in one forward vs 2.8 GB one row at a
    time, DPO on 4 pairs 9.7 vs 3.4 GB (bench/memory.py). GPUs take the whole batch in one forward.
    """
    if batch_size < 1:
        raise ValueError(f"--batch_size must be at least 1, got {batch_size}.")
    if per_device is None:
        per_device = 1 if device() == "cpu" else max(1, batch_size // processes)
    if per_device < 1 or batch_size % (per_device * processes):
        raise ValueError(f"--batch_size {batch_size} must be a multiple of --per_device_train_batch_size "
                         f"{per_device} (rows per forward pass) x {processes} processes.")
    return per_device, batch_size // (per_device * processes)


def describe() -> str:
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)} ({pick_dtype()})".replace("torch.", "")
    autocast = ", bf16 autocast in training" if trainer_precision_kwargs()["bf16"] else ""
    return f"CPU x{torch.get_num_threads()} threads (float32{autocast})"
