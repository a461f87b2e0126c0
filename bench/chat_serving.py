"""Benchmark 4: chat serving, ModelService against raw `model.generate` on the same model and settings.

    python -m bench.chat_serving [--quick] [--prompts 4] [--max-new-tokens 96] [--repeats 2]

Both serve the base model in `training.hardware`'s dtype, greedy, the same chat-template prompts and the same
`max_new_tokens`, one request at a time, alternating per prompt. Time to first token (TTFT) runs from the call
(chat template and tokenising included) to the first new token; decode tok/s = (new tokens - 1) / (total - TTFT).
raw generate's first token is seen through a streamer. Answers must be identical (greedy, same weights): the
table counts the prompts whose answers differ.
"""

import argparse
import time

import torch
from transformers import PreTrainedModel
from transformers.generation.streamers import BaseStreamer

from bench.common import alternate, base_model_path, median, offline, report, verdict
from training.hardware import device
from webapp.serving.service import ModelService

PROMPTS = [
    "Explain what a hash table is and when to use one.",
    "Write a short poem about the sea at night.",
    "What are three tips for a good night's sleep?",
    "Summarise the plot of Romeo and Juliet in a few sentences.",
    "How do I reverse a list in Python? Give an example.",
    "Why is the sky blue?",
    "Give me a recipe for a simple tomato soup.",
    "What is the difference between weather and climate?",
]


class FirstToken(BaseStreamer):
    """Notes when generate() emits its first new token (the first `put` is the prompt)."""

    def __init__(self) -> None:
        self.calls, self.first = 0, 0.0

    def put(self, value: torch.Tensor) -> None:
        self.calls += 1
        if self.calls == 2:
            self.first = time.perf_counter()

    def end(self) -> None:
        pass


def raw_generate(model: PreTrainedModel, tokenizer, prompt: str, max_new_tokens: int) -> dict:
    started = time.perf_counter()
    inputs = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                           return_tensors="pt", return_dict=True).to(device())
    streamer = FirstToken()
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, streamer=streamer,
                             pad_token_id=tokenizer.pad_token_id)
    total = time.perf_counter() - started
    new = out[0, inputs["input_ids"].shape[1]:]
    text = tokenizer.decode(new, skip_special_tokens=True)
    return {"text": text, "new_tokens": len(new), "ttft": streamer.first - started, "total": total}


def service_generate(service: ModelService, prompt: str, max_new_tokens: int) -> dict:
    result = service.generate_full([{"role": "user", "content": prompt}], max_new_tokens=max_new_tokens)
    # raw generate counts the stop token among its new tokens; ModelService stops before it
    stopped = result.new_tokens < max_new_tokens
    return {"text": result.text, "new_tokens": result.new_tokens + stopped, "ttft": result.first_token_s,
            "total": result.total_s}


def decode_rate(run: dict) -> float:
    return (run["new_tokens"] - 1) / (run["total"] - run["ttft"]) if run["new_tokens"] > 1 else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="Fewer prompts and tokens (a smoke run).")
    parser.add_argument("--prompts", type=int, default=None, help="Prompts (default 4, quick 2).")
    parser.add_argument("--max-new-tokens", type=int, default=None, help="Default 96, quick 48.")
    parser.add_argument("--repeats", type=int, default=None, help="Passes over the prompts (default 2, quick 1).")
    args = parser.parse_args()
    offline()
    prompts = PROMPTS[: args.prompts or (2 if args.quick else 4)]
    max_new = args.max_new_tokens or (48 if args.quick else 96)
    repeats = args.repeats or (1 if args.quick else 2)

    service = ModelService(base_model_path())
    raw_model, tokenizer = service._lm, service.tokenizer  # the very same weights: only the decode path differs
    for contender in (lambda: raw_generate(raw_model, tokenizer, prompts[0], 8),
                      lambda: service_generate(service, prompts[0], 8)):
        contender()  # warm-up (allocator, kernels)

    runs: dict[str, list[dict]] = {"ModelService": [], "model.generate": []}
    for prompt in prompts:
        per_prompt = alternate({"ModelService": lambda p=prompt: service_generate(service, p, max_new),
                                "model.generate": lambda p=prompt: raw_generate(raw_model, tokenizer, p, max_new)},
                               repeats)
        for name, results in per_prompt.items():
            runs[name] += [{**r, "prompt": prompt} for r in results]

    texts = {name: {r["prompt"]: r["text"] for r in results} for name, results in runs.items()}
    differing = sum(texts["ModelService"][p] != texts["model.generate"][p] for p in prompts)
    stats = {name: {"ttft": median([r["ttft"] for r in results]),
                    "decode": median([decode_rate(r) for r in results]),
                    "tokens": median([r["new_tokens"] for r in results])} for name, results in runs.items()}
    ours, raw = stats["ModelService"], stats["model.generate"]
    ttft_ratio, decode_ratio = raw["ttft"] / ours["ttft"], ours["decode"] / raw["decode"]
    rows = [[name, 1000 * s["ttft"], s["decode"], s["tokens"]] for name, s in stats.items()]
    rows.append(["ratio (ours vs raw; >1 = ours faster)", f"{ttft_ratio:.2f}x", f"{decode_ratio:.2f}x", ""])
    notes = [
        f"Target >= 1.0x: TTFT {verdict(ttft_ratio, 1.0)} ({ttft_ratio:.2f}x), decode {verdict(decode_ratio, 1.0)} "
        f"({decode_ratio:.2f}x).",
        f"Answers that differ between the two (greedy, same weights): {differing} of {len(prompts)}.",
    ]
    report("Chat serving: ModelService vs model.generate (bench/chat_serving.py)",
           f"SmolLM2-135M base, {service._lm.dtype}, greedy, {len(prompts)} prompts x {repeats} alternating "
           f"repeats, max_new_tokens={max_new}, medians over requests",
           ["path", "TTFT ms", "decode tok/s", "new tokens"], rows, notes)


if __name__ == "__main__":
    main()
