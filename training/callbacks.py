"""Live progress: a TrainerCallback that writes every logging step to the store (and one line to the run log).

The app only reads `store.run_metrics(run_id)`, so a page reload or a second browser sees the same state.
A stage resumed from a checkpoint at step N first drops the rows an earlier attempt logged after step N (it logs
those steps again), so every step keeps one set of rows, the resumed run's; its ETA counts only the steps it ran.
Each row holds loss, learning_rate, epoch, step/total, eta_s, tokens_per_s and whatever the TRL trainer logs
(rewards/accuracies, rewards/margins, kl, reward, ...). Only rank 0 writes; under several data-parallel processes
every rank logs a digest of its trainable weights at the end (equal digests: the ranks stayed in step).
"""

import hashlib
import json
import math
import time

from accelerate import DistributedType
from transformers import PreTrainedModel, TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from training.distributed import say


class StoreProgressCallback(TrainerCallback):
    def __init__(self, store, run_id: int | None, stage: str):
        self.store = store
        self.run_id = run_id
        self.stage = stage
        self.started = 0.0
        self.last_time = 0.0
        self.last_tokens = 0
        self.first_step = 0

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        self.started = self.last_time = time.monotonic()
        self.last_tokens = state.num_input_tokens_seen
        self.first_step = state.global_step  # > 0: resumed from the checkpoint at that step
        if state.is_world_process_zero and self.store is not None and self.run_id is not None:
            self.store.drop_run_metrics_after(self.run_id, self.stage, state.global_step)

    def on_log(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, logs=None, **kwargs):
        if not state.is_world_process_zero:
            return
        now = time.monotonic()
        tokens = state.num_input_tokens_seen
        metrics = {key: value for key, value in (logs or {}).items() if isinstance(value, int | float)}
        metrics = {key: value for key, value in metrics.items() if math.isfinite(value)}
        elapsed = now - self.started
        metrics.update({
            "step": state.global_step,
            "total_steps": state.max_steps,
            "epoch": state.epoch or 0.0,
            "elapsed_s": round(elapsed, 2),
            "eta_s": round(elapsed / (state.global_step - self.first_step) * (state.max_steps - state.global_step), 1)
            if state.global_step > self.first_step else None,
        })
        if tokens and now > self.last_time:
            metrics["tokens_per_s"] = round((tokens - self.last_tokens) / (now - self.last_time), 1)
        self.last_time, self.last_tokens = now, tokens
        print(f"[tuneloop] {self.stage} {json.dumps(metrics)}", flush=True)
        if self.store is not None and self.run_id is not None:
            self.store.add_run_metrics(self.run_id, state.global_step, self.stage, metrics)

    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                     model: PreTrainedModel | None = None, **kwargs):
        sharded = args.distributed_state.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED)
        if args.world_size == 1 or model is None or sharded:  # FSDP / ZeRO-3 ranks hold different shards
            return
        say(f"[tuneloop] {self.stage} rank {args.process_index}/{args.world_size} trainable weights sha256 "
            f"{trainable_digest(model)}")


def trainable_digest(model: PreTrainedModel) -> str:
    digest = hashlib.sha256()
    for name, param in sorted(model.named_parameters(), key=lambda item: item[0]):
        if param.requires_grad:
            digest.update(name.encode())
            digest.update(param.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]
