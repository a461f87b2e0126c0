"""training.hardware: the precision policy, and the micro-batch policy behind --batch_size."""

import pytest
import torch

from training.hardware import cpu_has_native_bf16, device, micro_batch, pick_dtype, trainer_precision_kwargs
from training.recipes.dpo import DPORecipeConfig
from training.recipes.sft import SFTRecipeConfig


@pytest.mark.skipif(device() != "cpu", reason="the CPU default")
def test_cpu_default_is_one_row_per_forward_with_accumulation():
    assert micro_batch(4, None) == (1, 4)
    assert micro_batch(16, None) == (1, 16)


def test_explicit_micro_batch_splits_the_optimizer_batch():
    assert micro_batch(8, 2) == (2, 4)
    assert micro_batch(4, 4) == (4, 1)


def test_micro_batch_keeps_rows_per_optimizer_step_across_processes():
    assert micro_batch(4, 1, processes=2) == (1, 2)  # 1 row x 2 accumulation x 2 processes = 4 rows
    assert micro_batch(8, 2, processes=4) == (2, 1)
    with pytest.raises(ValueError, match="x 2 processes"):
        micro_batch(4, 4, processes=2)


@pytest.mark.parametrize(("batch", "per_device"), [(4, 3), (0, None), (4, 0)])
def test_bad_batch_flags_are_refused_naming_the_flags(batch: int, per_device: int | None):
    with pytest.raises(ValueError, match="--batch_size"):
        micro_batch(batch, per_device)
    with pytest.raises(ValueError, match="--batch_size"):
        SFTRecipeConfig(dataset_file="x.jsonl", batch_size=batch, per_device_train_batch_size=per_device)
    with pytest.raises(ValueError, match="--batch_size"):
        DPORecipeConfig(dataset_file="x.jsonl", batch_size=batch, per_device_train_batch_size=per_device)


@pytest.mark.skipif(device() != "cpu", reason="the CPU policy")
def test_cpu_trains_fp32_weights_with_autocast_only_on_native_bf16():
    kwargs = trainer_precision_kwargs()
    assert pick_dtype() == torch.float32
    assert kwargs["bf16"] == cpu_has_native_bf16()
    assert kwargs["gradient_checkpointing"] is False and kwargs["fp16"] is False
