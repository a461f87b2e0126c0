#!/usr/bin/env bash
# The benchmarks on a CUDA GPU in bf16; every table records the card. Two groups, each within 10 minutes:
# - training: SFT and DPO throughput, chat serving (benchmarks 1, 2 and 4). With 2+ GPUs it then also runs the
#   `accelerate launch` configs (DDP LoRA SFT and DPO, FSDP full SFT) on all of them, 20 steps each, up to 4 more
#   minutes per run (never run yet: no multi-GPU machine was lent).
# - generation (issue 14): candidate generation, ours vs sequential and hf batched `generate` (16 and 64 prompts,
#   2 versions, max batch 64; sequential timed on the first 16 prompts), with the 8-concurrent-chats rows; a probe
#   chat's TTFT during a 200-prompt generation job in the real app; the chat flood (other users' TTFT).
#
#     bash bench/gpu_bench.sh [all|training|generation]   # from the repository root, with a CUDA build of torch
#
# On a GPU `training.hardware` picks bf16 for our recipes and the service; the plain TRL baselines run TRL's
# defaults (bf16=True, gradient checkpointing on), so the ratio is against `trl-defaults` there. The fp32 matmul
# peak is replaced by the card's measured bf16 matmul peak. Each step has its own time limit so each group stays
# under 10 minutes (`all`: both, about 20); a step that overruns is reported and the next one still runs.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
group=${1:-all}
case "$group" in all|training|generation) ;; *) echo "usage: $0 [all|training|generation]"; exit 2;; esac

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || { echo "no GPU"; exit 1; }
"$PY" -c "import torch; assert torch.cuda.is_available(), 'torch has no CUDA'; print(torch.cuda.get_device_name(0))" \
    || exit 1
"$PY" -m training.base_model --data-dir .cache/bench-data >/dev/null || exit 1   # one-time conversion (~30 s)

status=0
run() {  # run <seconds> <module> [args...]
    local limit=$1; shift
    echo "===== $* (limit ${limit} s) ====="
    timeout "$limit" "$PY" -m "$@" || { echo "!!!!! $* failed or timed out"; status=1; }
}
if [ "$group" != training ]; then
    run 240 bench.generation --sizes 16,64 --max-new-tokens 64 --max-batch 64 --sequential-sample 16 --repeats 1
    run 240 bench.job_probe
    run 120 bench.chat_flood --flood-s 40 --idle-s 15
fi
[ "$group" = generation ] && exit $status
run 200 bench.sft_throughput --steps 20 --batch 16 --repeats 2
run 200 bench.dpo_throughput --steps 20 --batch 16 --repeats 2
run 120 bench.chat_serving --prompts 6 --max-new-tokens 128 --repeats 2

gpus=$(nvidia-smi -L | wc -l)
if [ "$gpus" -ge 2 ]; then  # the multi-GPU configs: one process per GPU, 2 rows per GPU per optimizer step
    launch() {  # launch <config> <recipe flags...>
        local config=$1; shift
        run 240 accelerate.commands.launch --config_file "training/accelerate/$config.yaml" --num_processes "$gpus" \
            -m training "$@" --data_dir .cache/bench-data --parent base --max_steps 20 --batch_size $((2 * gpus))
    }
    launch ddp sft --dataset_file tests/assets/sft_tiny.jsonl
    launch ddp dpo --dataset_file tests/assets/pairs_tiny.jsonl
    launch fsdp sft --dataset_file tests/assets/sft_tiny.jsonl --technique full
fi
exit $status
