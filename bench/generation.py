"""Benchmark: candidate generation, the batched generator against plain transformers `generate`.

    python -m bench.generation [--quick] [--sizes 16,64] [--max-new-tokens 64] [--max-batch 16] [--chats-only]

Two LoRA versions (random non-zero adapters of the shape the app trains: r=8 on all linear layers) on the base
model; every prompt (the starter prompts) is answered by both versions, greedy, `--max-new-tokens` each. Side by
side in one run, alternating, for each number of prompts:
- sequential: `model.generate` one prompt at a time per version (what the app did before: one answer per call);
- hf batched: `model.generate` on left-padded batches of `--max-batch` prompts, one version per batch (the best
  plain contender);
- ours (one batch per version): training.generation with every row on the same adapter (the app's slots);
- ours (mixed): training.generation, one call for both versions' requests (rows carry their adapter; it admits
  them grouped by adapter, so the two versions share a batch, through PEFT's adapter_names, where one version's rows
  end and the other's begin).
tokens/s counts new tokens. "identical" is the share of answers equal to the sequential path's (greedy: they differ
only where float rounding in a padded batch flips a near-tie). The headline row compares the better of ours with
the best plain contender (hf batched, in practice); the last two lines are ours_vs_best_plain=<ratio> and
batched_vs_sequential=<ratio> (ours, mixed, vs sequential), both at the largest size; identical answers are counted
over the prompts sequential answered (`--sequential-sample`). Last rows: 8 concurrent chats
through the model service (continuous batching) vs 1 chat, aggregate decode tokens/s (2 x --max-new-tokens each),
and the 8 chats' p99 time to first token; with the template prefix cache (the service as it runs) and without it
(a second service whose engine prefills whole prompts, alternating with the first), and how many of the 8 greedy
answers are the same with and without it. `--chats-only` runs only these rows.
"""

import argparse
import json
import threading
import time

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from peft.tuners.lora import LoraLayer

from bench.common import ROOT, alternate, base_model_path, median, offline, percentile, report, verdict
from training.base_model import load_causal_lm, load_tokenizer
from training.generation import Request, generate
from training.hardware import device
from training.versions import LORA_TARGETS
from webapp.serving.service import ModelService

VERSIONS = ("v1", "v2")
TARGET = 5.0


def two_versions(path: str) -> PeftModel:
    config = LoraConfig(r=8, lora_alpha=16, target_modules=LORA_TARGETS, init_lora_weights=False)
    torch.manual_seed(0)
    model = get_peft_model(load_causal_lm(path), config, adapter_name=VERSIONS[0])
    model.add_adapter(VERSIONS[1], config)
    for module in model.modules():  # PEFT's random init is large: scale it to a trained adapter's size
        if isinstance(module, LoraLayer):
            for name in VERSIONS:
                module.lora_B[name].weight.data *= 0.05
    return model.eval()


def prompts(n: int) -> list[list[dict]]:
    lines = (ROOT / "feedback_db" / "assets" / "starter_prompts.jsonl").read_text().splitlines()
    texts = [json.loads(line)["prompt"] for line in lines]
    return [[{"role": "user", "content": texts[i % len(texts)]}] for i in range(n)]


def sequential(model: PeftModel, tokenizer, chats: list[list[dict]], max_new_tokens: int) -> dict:
    answers = {}
    for version in VERSIONS:
        model.set_adapter(version)
        for i, chat in enumerate(chats):
            inputs = tokenizer.apply_chat_template(chat, add_generation_prompt=True, return_tensors="pt",
                                                   return_dict=True).to(device())
            with torch.inference_mode():
                out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                                     pad_token_id=tokenizer.pad_token_id)
            answers[version, i] = out[0, inputs["input_ids"].shape[1]:]
    return answers


def hf_batched(model: PeftModel, tokenizer, chats: list[list[dict]], max_new_tokens: int, max_batch: int) -> dict:
    answers = {}
    tokenizer.padding_side = "left"
    for version in VERSIONS:
        model.set_adapter(version)
        for start in range(0, len(chats), max_batch):
            texts = [tokenizer.apply_chat_template(c, add_generation_prompt=True, tokenize=False)
                     for c in chats[start:start + max_batch]]
            inputs = tokenizer(texts, return_tensors="pt", padding=True).to(device())
            with torch.inference_mode():
                out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                                     pad_token_id=tokenizer.pad_token_id)
            for j, row in enumerate(out[:, inputs["input_ids"].shape[1]:]):
                answers[version, start + j] = row
    return answers


def ours(model: PeftModel, tokenizer, chats: list[list[dict]], max_new_tokens: int, max_batch: int,
         mixed: bool) -> dict:
    requests = [Request(c, max_new_tokens=max_new_tokens, adapter=v) for v in VERSIONS for c in chats]
    if mixed:
        results = generate(model, tokenizer, requests, max_batch=max_batch)
    else:
        results = []
        for version in VERSIONS:
            model.set_adapter(version)
            results += generate(model, tokenizer, [r for r in requests if r.adapter == version], max_batch=max_batch)
    return {(r.adapter, i % len(chats)): result.text for i, (r, result) in enumerate(zip(requests, results,
                                                                                         strict=True))}


def contenders_for(model: PeftModel, tokenizer, chats: list[list[dict]], n: int, b: int, sample: int) -> dict:
    return {
        "sequential generate": lambda: timed(lambda: sequential(model, tokenizer, chats[:sample], n), tokenizer),
        "hf batched generate": lambda: timed(lambda: hf_batched(model, tokenizer, chats, n, b), tokenizer),
        "ours, one batch per version": lambda: timed(lambda: ours(model, tokenizer, chats, n, b, False), tokenizer),
        "ours, mixed versions": lambda: timed(lambda: ours(model, tokenizer, chats, n, b, True), tokenizer),
    }


def timed(run, tokenizer) -> dict:
    started = time.perf_counter()
    answers = run()
    seconds = time.perf_counter() - started
    texts = {k: v if isinstance(v, str) else _text(tokenizer, v) for k, v in answers.items()}
    tokens = sum(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts.values())
    return {"seconds": seconds, "tokens": tokens, "texts": texts}


def _text(tokenizer, ids: torch.Tensor) -> str:
    stops = {tokenizer.eos_token_id, tokenizer.pad_token_id, tokenizer.convert_tokens_to_ids("<|im_end|>")}
    kept = []
    for token in ids.tolist():
        if token in stops:
            break
        kept.append(token)
    return tokenizer.decode(kept, skip_special_tokens=True)


def chats(service: ModelService, concurrent: int, max_new_tokens: int) -> dict:
    """`concurrent` chats at once through the model service (continuous batching): aggregate decode tokens/s, TTFTs,
    the answers."""
    questions, ttfts, tokens, texts = prompts(concurrent), [], [], {}

    def chat(messages: list[dict]) -> None:
        started, stream = time.perf_counter(), service.stream(messages, max_new_tokens=max_new_tokens)
        next(stream)
        ttfts.append(time.perf_counter() - started)
        *_, text = stream
        tokens.append(len(service.tokenizer(text, add_special_tokens=False)["input_ids"]))
        texts[messages[0]["content"]] = text

    started = time.perf_counter()
    threads = [threading.Thread(target=chat, args=(q,)) for q in questions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {"tokens_per_s": sum(tokens) / (time.perf_counter() - started), "ttft_p99": percentile(ttfts, 99),
            "texts": texts}


def chat_rows(path: str, max_new_tokens: int, repeats: int) -> list[list]:
    """1 chat vs 8 concurrent chats, with the engine's template prefix cache and without it (alternating)."""
    cached, uncached = ModelService(path), ModelService(path)
    uncached._engine.prefix = []  # before its first lane: every prompt is prefilled whole
    settings = {"prefix cache": cached, "no prefix cache": uncached}
    runs = alternate({f"{n} chat(s), {name}": lambda s=service, n=n: chats(s, n, max_new_tokens)
                      for name, service in settings.items() for n in (1, 8)}, repeats)
    rows = []
    for name in settings:
        one, eight = (median([r["tokens_per_s"] for r in runs[f"{n} chat(s), {name}"]]) for n in (1, 8))
        p99 = max(r["ttft_p99"] for r in runs[f"8 chat(s), {name}"])
        rows.append(["8 chats", f"model service (continuous batching), {name}", eight, eight / one, "",
                     f">= 4x: {verdict(eight / one, 4.0)}; p99 TTFT {p99:.2f} s (< 1 s: {verdict(p99, 1.0, False)})"])
    pairs = [(a["texts"], b["texts"]) for a, b in zip(runs["8 chat(s), prefix cache"],
                                                      runs["8 chat(s), no prefix cache"], strict=True)]
    equal = sum(a[k] == b[k] for a, b in pairs for k in a)
    rows.append(["8 chats", "greedy answers: prefix cache vs none", "", "", "",
                 f"{equal} of {sum(len(a) for a, _ in pairs)} identical"])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="Smoke settings: 12 new tokens, one repeat.")
    parser.add_argument("--sizes", default="16,64", help="Numbers of prompts (each answered by both versions).")
    parser.add_argument("--max-new-tokens", type=int, default=None, help="Default 64, quick 12.")
    parser.add_argument("--max-batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=None, help="Default 2, quick 1.")
    parser.add_argument("--chats-only", action="store_true", help="Only the 8-chats rows (no candidate rows).")
    parser.add_argument("--sequential-sample", type=int, default=None,
                        help="Time sequential generate on the first N prompts only (default: all). One prompt at a "
                             "time, its tokens/s does not depend on how many; 64 prompts take ~30 min here.")
    args = parser.parse_args()
    offline()
    args.max_new_tokens = args.max_new_tokens or (12 if args.quick else 64)
    args.repeats = args.repeats or (1 if args.quick else 2)
    path = base_model_path()
    rows, ratio, ours_vs_best_plain = [], float("nan"), float("nan")
    sizes = [] if args.chats_only else [int(s) for s in args.sizes.split(",")]
    tokenizer, model = (load_tokenizer(path), two_versions(path)) if sizes else (None, None)
    for size in sizes:
        contenders = contenders_for(model, tokenizer, prompts(size), args.max_new_tokens, args.max_batch,
                                    args.sequential_sample or size)
        results = alternate(contenders, args.repeats)
        reference = results["sequential generate"][0]["texts"]
        rates = {name: median([r["tokens"] / r["seconds"] for r in runs]) for name, runs in results.items()}
        for name, runs in results.items():
            same = sum(runs[0]["texts"][k] == reference[k] for k in reference) / len(reference)
            rows.append([size, name, rates[name], rates[name] / rates["sequential generate"],
                         rates[name] / rates["hf batched generate"], f"{same:.0%}"])
        ratio = rates["ours, mixed versions"] / rates["sequential generate"]
        best = max(rates["ours, mixed versions"], rates["ours, one batch per version"])
        best_plain = max(rates["sequential generate"], rates["hf batched generate"])
        ours_vs_best_plain = best / best_plain
        rows.append([size, "target: ours vs sequential", "", best / rates["sequential generate"], "",
                     f">= {TARGET}x: {verdict(best / rates['sequential generate'], TARGET)}"])
        rows.append([size, "headline: ours vs best plain contender", "", "", ours_vs_best_plain,
                     f">= 1x: {verdict(ours_vs_best_plain, 1.0)}"])
    del model
    rows += chat_rows(path, args.max_new_tokens * 2, args.repeats)
    report("Candidate generation: batched generator vs transformers generate (bench/generation.py)",
           f"2 LoRA versions (r=8, all linear), greedy, {args.max_new_tokens} new tokens, max batch "
           f"{args.max_batch}, {args.repeats} repeat(s), threads {torch.get_num_threads()}; chats: "
           f"{2 * args.max_new_tokens} new tokens each"
           + (f"; sequential timed on the first {args.sequential_sample} prompts" if args.sequential_sample else ""),
           ["prompts", "contender", "new tokens/s", "vs sequential", "vs hf batched", "identical to sequential"],
           rows)
    if sizes:
        print(f"ours_vs_best_plain={ours_vs_best_plain:.2f}")
        print(f"batched_vs_sequential={ratio:.2f}")


if __name__ == "__main__":
    main()
