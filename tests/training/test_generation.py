"""The batched generator on the real embedded model: batched answers equal one-by-one answers, rows leave and join
the running batch, mixed LoRA adapters in one batch, chunked prefill, seeded sampling, cancellation."""

import pytest
import torch
from peft import LoraConfig, get_peft_model

from training.base_model import load_causal_lm, load_tokenizer
from training.generation import Request, generate

QUESTIONS = ["What is the capital of France?", "Name three fruits.", "What is 2+2?", "Why is the sky blue?",
             "Write one sentence about cats."]


def ask(question: str, **settings) -> Request:
    return Request([{"role": "user", "content": question}], **settings)


@pytest.fixture(scope="module")
def model_and_tokenizer(base_model_path: str):
    return load_causal_lm(base_model_path).eval(), load_tokenizer(base_model_path)


@pytest.fixture(scope="module")
def two_adapters(base_model_path: str):
    """The base model with two random (non-zero) LoRA adapters, `a` and `b`."""
    torch.manual_seed(0)
    config = LoraConfig(r=4, lora_alpha=32, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    model = get_peft_model(load_causal_lm(base_model_path), config, adapter_name="a")
    torch.manual_seed(1)
    model.add_adapter("b", config)
    return model.eval()


def texts(results) -> list[str]:
    return [r.text for r in results]


def test_batched_greedy_equals_one_by_one_with_rows_leaving_and_joining(model_and_tokenizer) -> None:
    model, tokenizer = model_and_tokenizer
    # different lengths: rows leave at different steps, and with max_batch 2 the waiting ones join the running batch
    requests = [ask(q, max_new_tokens=n) for q, n in zip(QUESTIONS, (10, 3, 6, 8, 4), strict=True)]
    one_by_one = [generate(model, tokenizer, [r])[0] for r in requests]
    batched = generate(model, tokenizer, requests, max_batch=2)
    assert texts(batched) == texts(one_by_one)
    assert "Paris" in batched[0].text
    assert [r.new_tokens for r in batched] == [r.new_tokens for r in one_by_one]
    assert batched[1].new_tokens == 3  # stopped at its own length, not the batch's

    # the same answers as transformers' own greedy generate
    inputs = tokenizer.apply_chat_template(requests[0].messages, add_generation_prompt=True, return_tensors="pt",
                                           return_dict=True)
    output = model.generate(**inputs, max_new_tokens=10, do_sample=False)
    assert tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True) == batched[0].text


def test_mixed_adapters_in_one_batch_equal_each_adapter_alone(two_adapters, model_and_tokenizer) -> None:
    _, tokenizer = model_and_tokenizer
    requests = [ask(q, max_new_tokens=6, adapter=name)
                for q in QUESTIONS[:2] for name in ("a", "b", None)]
    alone = []
    for request in requests:
        if request.adapter is None:
            with two_adapters.disable_adapter():
                alone.append(generate(two_adapters, tokenizer, [request])[0].text)
        else:
            two_adapters.set_adapter(request.adapter)
            alone.append(generate(two_adapters, tokenizer, [request])[0].text)
    mixed = texts(generate(two_adapters, tokenizer, requests))
    assert mixed == alone
    assert len({mixed[0], mixed[1], mixed[2]}) == 3  # the adapters really answer differently


@pytest.mark.slow
def test_chunked_prefill_and_seeded_sampling(model_and_tokenizer) -> None:
    from training.generation import Batch, Row, model_forward, prompt_ids, stop_ids

    model, tokenizer = model_and_tokenizer
    request = ask(QUESTIONS[3], max_new_tokens=6)
    whole = generate(model, tokenizer, [request])[0].text
    batch = Batch(model_forward(model), stop_ids(tokenizer), tokenizer.pad_token_id)
    row = Row(request, prompt_ids(tokenizer, request.messages))
    passes = sum(1 for _ in batch.admit([row], chunk=4))
    assert passes == -(-len(row.prompt_ids) // 4)  # one forward pass per 4 prompt tokens
    while batch.rows:
        batch.step()
    assert tokenizer.decode(row.new_ids, skip_special_tokens=True) == whole

    sampled = [ask(QUESTIONS[4], max_new_tokens=8, temperature=1.0, seed=s) for s in (1, 2)]
    together = texts(generate(model, tokenizer, sampled))
    assert together == [generate(model, tokenizer, [r])[0].text for r in sampled]  # each row has its own generator
    assert together[0] != together[1]


def test_cancel_stops_and_leaves_unfinished_rows_empty(model_and_tokenizer) -> None:
    model, tokenizer = model_and_tokenizer
    finished = []
    results = generate(model, tokenizer, [ask(q, max_new_tokens=2) for q in QUESTIONS], max_batch=1,
                       on_result=lambda i, r: finished.append(i), cancelled=lambda: len(finished) >= 2)
    assert finished == [0, 1]
    assert results[2:] == [None, None, None] and all(results[:2])


def test_prefix_cache_gives_the_answers_of_whole_prompt_prefill(two_adapters, model_and_tokenizer) -> None:
    """The chat template's shared prefix, prefilled once per adapter and copied into each row, gives the same greedy
    answers as prefilling every whole prompt: mixed adapters, chunked prefill, rows joining a running batch, and a
    prompt with a system message of its own (it shares only the prefix's first tokens) beside them."""
    from training.generation import Batch, Row, model_forward, prompt_ids, stop_ids, template_prefix

    _, tokenizer = model_and_tokenizer
    groups = [[ask(q, max_new_tokens=8, adapter=name) for q in QUESTIONS[:2] for name in ("a", "b", None)],
              [ask(q, max_new_tokens=8, adapter=name) for q in QUESTIONS[2:] for name in ("b", None)],
              [Request([{"role": "system", "content": "Answer in French."}, {"role": "user", "content": "Hello"}],
                       max_new_tokens=8, adapter="a")]]

    def answers(prefix: list[int]) -> tuple[list[str], Batch]:
        batch = Batch(model_forward(two_adapters), stop_ids(tokenizer), tokenizer.pad_token_id, prefix=prefix)
        rows = []
        for group in groups:  # each group joins the running batch after two decode steps of the rows before it
            rows += [Row(r, prompt_ids(tokenizer, r.messages)) for r in group]
            for _ in batch.admit(rows[-len(group):], chunk=4):
                pass
            batch.step(), batch.step()
        while batch.rows:
            batch.step()
        return [tokenizer.decode(r.new_ids, skip_special_tokens=True) for r in rows], batch

    prefix = template_prefix(tokenizer)
    assert tokenizer.decode(prefix).endswith("<|im_start|>user\n") and len(prefix) >= 20
    cached, batch = answers(prefix)
    assert set(batch.prefixes) == {"a", "b", "__base__"}  # computed once per adapter, reused by the second group
    assert cached == answers([])[0]
    assert len(set(cached[:3])) == 3  # the adapters really answer differently


def test_prefix_cache_layout_on_a_tiny_model() -> None:
    """Fast check of the cache layout (prefix columns, masked padding between prefix and rest, position ids): every
    decode step's logits with the prefix cache equal those of whole-prompt prefill, for rows sharing all, part or
    none of the prefix, each group joining the running batch (random 2-layer Llama with grouped KV heads)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from training.generation import Batch, Row, model_forward

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2)).eval()
    prefix = [5, 6, 7, 8, 9, 10]
    groups = [[prefix + [11, 12], prefix + [13], prefix + [14, 15, 16, 17]], [prefix[:3] + [20, 21]], [[30, 31, 32]]]

    def decode(prefix: list[int]) -> tuple[list[list[int]], list[torch.Tensor], Batch]:
        forward, steps = model_forward(model), []

        def recording(input_ids, *rest):
            logits, cache = forward(input_ids, *rest)
            if input_ids.shape[1] == 1:  # a decode step (no prefill here has a single column)
                steps.append(logits)
            return logits, cache

        batch, rows = Batch(recording, set(), 0, prefix=prefix), []
        for group in groups:
            rows += [Row(ask("unused", max_new_tokens=5), ids) for ids in group]
            for _ in batch.admit(rows[-len(group):]):
                pass
            batch.step()
        while batch.rows:
            batch.step()
        return [r.new_ids for r in rows], steps, batch

    cached, cached_steps, batch = decode(prefix)
    whole, whole_steps, _ = decode([])
    assert set(batch.prefixes) == {None}
    assert cached == whole
    assert len(cached_steps) == len(whole_steps) == 6
    for a, b in zip(cached_steps, whole_steps, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
