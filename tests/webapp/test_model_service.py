"""ModelService on the real embedded model: offline load, determinism, hot-swap under load, bad adapters."""

import json
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForCausalLM, LlamaConfig
from trl import SFTConfig, SFTTrainer

from training.base_model import load_causal_lm, load_tokenizer
from training.hardware import trainer_precision_kwargs
from training.versions import LORA_TARGETS
from webapp.serving.errors import BASE, VersionLoadError
from webapp.serving.service import ModelService

QUESTION = [{"role": "user", "content": "What is the secret word?"}]
ANSWER = "The secret word is PINEAPPLE."


@pytest.fixture(scope="module")
def adapter_dir(tmp_path_factory: pytest.TempPathFactory, base_model_path: str) -> tuple[Path, dict, dict]:
    """Train a tiny LoRA adapter with TRL SFT (4 samples); return its dir and the base/LoRA weights before/after."""
    out = tmp_path_factory.mktemp("adapter")
    model = load_causal_lm(base_model_path)
    tokenizer = load_tokenizer(base_model_path)
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    rows = [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": ANSWER}]}
            for q in ("What is the secret word?", "Tell me the secret word.", "Secret word?", "Which word is secret?")]
    args = SFTConfig(output_dir=str(out / "run"), max_steps=12, per_device_train_batch_size=4, learning_rate=3e-3,
                     logging_steps=50, save_strategy="no", report_to=[], **trainer_precision_kwargs())
    lora = LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", task_type="CAUSAL_LM")
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
                         peft_config=lora)
    lora_before = {k: v.detach().clone() for k, v in trainer.model.named_parameters() if "lora_B" in k}
    trainer.train()
    trainer.model.save_pretrained(out / "v1")
    lora_after = {k: v.detach().clone() for k, v in trainer.model.named_parameters() if "lora_B" in k}
    base_after = {k.replace("base_model.model.", "").replace(".base_layer", ""): v.detach()
                  for k, v in trainer.model.state_dict().items() if "lora_" not in k}
    return out / "v1", {"before": before, "after": base_after}, {"before": lora_before, "after": lora_after}


@pytest.fixture(scope="module")
def service(base_model_path: str) -> ModelService:
    return ModelService(base_model_path)


def test_loads_offline_and_greedy_is_deterministic(service: ModelService) -> None:
    assert os.environ["HF_HUB_OFFLINE"] == "1"  # set in conftest: any hub access would raise
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    first = service.generate(messages, max_new_tokens=20)
    assert "Paris" in first
    assert service.generate(messages, max_new_tokens=20) == first


@contextmanager
def chatting(service: ModelService, question: list[dict], max_new_tokens: int, threads: int) -> Iterator[tuple]:
    """`threads` chats streaming answers until the block ends; yields (swap_lock, errors, results).

    Hold swap_lock while activating: a chat captures the active version and its first token under it, so each
    result is (version active at the start, full answer)."""
    swap_lock, stop, errors, results = threading.Lock(), threading.Event(), [], []

    def chat() -> None:
        while not stop.is_set():
            try:
                with swap_lock:
                    started_on = service.active
                    tokens = service.stream(question, max_new_tokens=max_new_tokens)
                    next(tokens)
                *_, text = tokens
                results.append((started_on, text))
            except Exception as err:  # noqa: BLE001 - every failure is a test failure
                errors.append(err)

    workers = [threading.Thread(target=chat) for _ in range(threads)]
    for worker in workers:
        worker.start()
    try:
        yield swap_lock, errors, results
    finally:
        stop.set()
        for worker in workers:
            worker.join(timeout=120)


def test_lora_training_changed_adapter_not_base(adapter_dir: tuple) -> None:
    _, base, lora = adapter_dir
    assert all(not torch.equal(lora["before"][k], lora["after"][k]) for k in lora["before"])
    shared = [k for k in base["before"] if k in base["after"]]
    assert len(shared) > 100
    assert all(torch.equal(base["before"][k], base["after"][k]) for k in shared)


def test_hot_swap_under_concurrent_generation(service: ModelService, adapter_dir: tuple) -> None:
    path, _, _ = adapter_dir
    service.load_version("v1", path)
    expected = {BASE: service.generate(QUESTION, version=BASE, max_new_tokens=10),
                "v1": service.generate(QUESTION, version="v1", max_new_tokens=10)}
    assert "PINEAPPLE" in expected["v1"] and "PINEAPPLE" not in expected[BASE]

    with chatting(service, QUESTION, 10, threads=4) as (swap_lock, errors, results):
        for i in range(20):
            with swap_lock:
                service.activate("v1" if i % 2 == 0 else BASE)
            threading.Event().wait(0.3)
    assert errors == []
    assert len(results) >= 8
    assert {v for v, _ in results} == {BASE, "v1"}
    assert all(text == expected[version] for version, text in results)
    service.activate(BASE)


def test_corrupt_or_wrong_adapter_is_refused_and_active_keeps_serving(
        service: ModelService, adapter_dir: tuple, tmp_path: Path) -> None:
    path, _, _ = adapter_dir
    service.load_version("good", path)
    service.activate("good")
    reference = service.generate(QUESTION, max_new_tokens=10)

    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "adapter_config.json").write_text((path / "adapter_config.json").read_text())
    (corrupt / "adapter_model.safetensors").write_bytes(b"\x00garbage" * 100)
    missing = tmp_path / "missing"
    bad_json = tmp_path / "bad_json"
    bad_json.mkdir()
    (bad_json / "adapter_config.json").write_text("{not json")

    other = tmp_path / "other_base"  # an adapter trained on a different (tiny) base model
    tiny = AutoModelForCausalLM.from_config(LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                                        num_attention_heads=4, num_key_value_heads=2,
                                                        vocab_size=service.tokenizer.vocab_size))
    get_peft_model(tiny, LoraConfig(r=4, target_modules="all-linear", task_type="CAUSAL_LM")).save_pretrained(other)

    for bad, message in ((corrupt, "could not be loaded"), (missing, "does not exist"),
                         (bad_json, "unreadable"), (other, "could not be loaded")):
        with pytest.raises(VersionLoadError, match=message):
            service.activate("bad", bad)
        assert service.active == "good"
        assert "bad" not in service.loaded_versions()
        assert service.generate(QUESTION, max_new_tokens=10) == reference

    reward = tmp_path / "reward"
    reward.mkdir()
    config = json.loads((path / "adapter_config.json").read_text()) | {"task_type": "SEQ_CLS"}
    (reward / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(VersionLoadError, match="not a chat model"):
        service.load_version("rm", reward)
    service.activate(BASE)
    service.unload("good")
    assert "good" not in service.loaded_versions()


# ----- LoRA slots: compatible versions load by copying weights into a free slot ------------------------------
SLOT_QUESTION = [{"role": "user", "content": "Tell me something about otters."}]


@pytest.fixture(scope="module")
def random_adapters(tmp_path_factory: pytest.TempPathFactory, base_model_path: str) -> dict[str, Path]:
    """Three r=8 adapters with distinct random weights (one config) and one r=4 adapter (another config)."""
    out = tmp_path_factory.mktemp("random-adapters")
    paths = {}
    for r, names in ((8, ("a", "b", "c")), (4, ("r4",))):
        model = get_peft_model(load_causal_lm(base_model_path),
                               LoraConfig(r=r, lora_alpha=2 * r, target_modules=LORA_TARGETS, task_type="CAUSAL_LM"))
        for seed, name in enumerate(names):
            torch.manual_seed(seed)
            with torch.no_grad():
                for key, param in model.named_parameters():
                    if "lora_" in key:
                        param.normal_(0, 0.05)
            model.save_pretrained(out / name)
            paths[name] = out / name
    return paths


@pytest.fixture(scope="module")
def fresh_answers(random_adapters: dict[str, Path], base_model_path: str) -> dict[str, str]:
    """Greedy answers of each adapter loaded the plain PEFT way (PeftModel.from_pretrained / load_adapter)."""
    tokenizer = load_tokenizer(base_model_path)
    ids = tokenizer.apply_chat_template(SLOT_QUESTION, add_generation_prompt=True, return_tensors="pt",
                                        return_dict=True)["input_ids"]
    model = PeftModel.from_pretrained(load_causal_lm(base_model_path), str(random_adapters["a"]), adapter_name="a")
    answers = {}
    for name, path in random_adapters.items():
        if name != "a":
            model.load_adapter(str(path), adapter_name=name)
        model.set_adapter(name)
        with torch.inference_mode():
            out = model.eval().generate(input_ids=ids, max_new_tokens=8, do_sample=False)
        answers[name] = tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
    return answers


def test_slot_reuse_gives_the_same_answers_as_a_fresh_peft_model(
        base_model_path: str, random_adapters: dict[str, Path], fresh_answers: dict[str, str]) -> None:
    assert len(set(fresh_answers.values())) == len(fresh_answers)  # the adapters really differ
    service = ModelService(base_model_path, max_loaded=2)
    service.load_version("v1", random_adapters["a"])  # the first adapter wraps the base model
    assert service.generate(SLOT_QUESTION, version="v1", max_new_tokens=8) == fresh_answers["a"]
    assert service.prepare_spare()
    assert not service.prepare_spare()  # one spare at most
    # v2 fills the spare; v3, v4, v5 each evict the least recently used idle version and reuse its slot
    for i, adapter in enumerate(("b", "c", "a", "b"), start=2):
        service.load_version(f"v{i}", random_adapters[adapter])
        assert service.prepare_spare() == (i == 2)  # only filling the spare used it up
        assert service.generate(SLOT_QUESTION, version=f"v{i}", max_new_tokens=8) == fresh_answers[adapter]
    assert service.loaded_versions() == [BASE, "v4", "v5"]
    assert service.generate(SLOT_QUESTION, version=BASE, max_new_tokens=8) not in fresh_answers.values()


def test_a_version_reloaded_under_its_name_answers_with_its_new_weights(
        base_model_path: str, random_adapters: dict[str, Path], fresh_answers: dict[str, str]) -> None:
    """The engine keeps the chat template's prefix (keys and values) per version: a reload must not reuse it."""
    service = ModelService(base_model_path)
    service.load_version("v1", random_adapters["a"])
    assert service.generate(SLOT_QUESTION, version="v1", max_new_tokens=8) == fresh_answers["a"]
    service.load_version("v1", random_adapters["b"])
    assert service.generate(SLOT_QUESTION, version="v1", max_new_tokens=8) == fresh_answers["b"]


def test_incompatible_config_falls_back_to_peft_loading(
        base_model_path: str, random_adapters: dict[str, Path], fresh_answers: dict[str, str]) -> None:
    service = ModelService(base_model_path)
    service.load_version("v1", random_adapters["a"])
    assert service.prepare_spare()
    service.load_version("small", random_adapters["r4"])  # r=4 does not fit the r=8 spare: PEFT injects it
    assert not service.prepare_spare()  # the spare is still free
    service.load_version("v2", random_adapters["b"])
    for version, adapter in (("small", "r4"), ("v2", "b"), ("v1", "a")):
        assert service.generate(SLOT_QUESTION, version=version, max_new_tokens=8) == fresh_answers[adapter]


def test_slots_in_use_are_not_overwritten_by_loads(
        base_model_path: str, random_adapters: dict[str, Path], fresh_answers: dict[str, str]) -> None:
    service = ModelService(base_model_path, max_loaded=2)
    expected = {BASE: service.generate(SLOT_QUESTION, max_new_tokens=8)} | {
        f"v{i}": fresh_answers["abc"[i % 3]] for i in range(6)}
    with chatting(service, SLOT_QUESTION, 8, threads=3) as (swap_lock, errors, results):
        for i in range(6):  # each version is new, so loads reuse the slots of versions that may still be generating
            service.load_version(f"v{i}", random_adapters["abc"[i % 3]])
            with swap_lock:
                service.activate(f"v{i}")
            if i % 2 == 0:
                service.prepare_spare()
            threading.Event().wait(1.0)
    assert errors == []
    assert len({v for v, _ in results}) >= 4
    assert all(text == expected[version] for version, text in results)


def test_corrupt_adapter_on_the_fast_path_is_refused(
        base_model_path: str, random_adapters: dict[str, Path], fresh_answers: dict[str, str], tmp_path: Path) -> None:
    service = ModelService(base_model_path)
    service.activate("v1", random_adapters["a"])
    assert service.prepare_spare()
    garbage, wrong_shapes = tmp_path / "garbage", tmp_path / "wrong_shapes"
    for bad in (garbage, wrong_shapes):
        bad.mkdir()
        (bad / "adapter_config.json").write_text((random_adapters["a"] / "adapter_config.json").read_text())
    (garbage / "adapter_model.safetensors").write_bytes(b"\x00garbage" * 100)
    # a readable file whose tensors do not fit the config (r=4 weights under an r=8 config)
    (wrong_shapes / "adapter_model.safetensors").write_bytes(
        (random_adapters["r4"] / "adapter_model.safetensors").read_bytes())
    for bad in (garbage, wrong_shapes):
        with pytest.raises(VersionLoadError, match="could not be loaded"):
            service.activate("bad", bad)
        assert service.active == "v1"
        assert "bad" not in service.loaded_versions()
        assert service.generate(SLOT_QUESTION, max_new_tokens=8) == fresh_answers["a"]
    service.load_version("v2", random_adapters["b"])  # the spare survived the failures
    assert service.generate(SLOT_QUESTION, version="v2", max_new_tokens=8) == fresh_answers["b"]


def test_chats_join_a_running_job_batch_and_answer_as_alone(service: ModelService) -> None:
    from training.generation import Request

    questions = [[{"role": "user", "content": q}] for q in ("Name a fruit.", "What is 2+2?", "Say hello.")]
    alone = [service.generate(q, max_new_tokens=12) for q in questions]
    job_done, first_chat_token = threading.Event(), []

    def job() -> None:
        service.generate_many([Request(q, max_new_tokens=12) for q in questions * 4])
        job_done.set()

    worker = threading.Thread(target=job)
    worker.start()
    tokens = service.stream(questions[1], max_new_tokens=12)
    next(tokens)
    first_chat_token.append(job_done.is_set())
    *_, chat = tokens
    worker.join()
    assert first_chat_token == [False]  # the chat's first token came while the job was still decoding
    assert chat == alone[1]
    assert [r.text for r in service.generate_many([Request(q, max_new_tokens=12) for q in questions])] == alone
    assert not any(service._in_use.values())  # every version it used is released


def test_a_lone_greedy_answer_is_the_same_before_and_after_other_requests(
        base_model_path: str, random_adapters: dict[str, Path]) -> None:
    """Issue 14: a lone temperature-0 chat must not depend on what the engine decoded before it (rows that finished,
    were cancelled mid-answer or joined a running batch, other versions, a spare slot added meanwhile)."""
    from training.generation import Request

    question = [{"role": "user", "content": "Name a colour."}]
    tokenizer = load_tokenizer(base_model_path)
    ids = tokenizer.apply_chat_template(question, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    plain = PeftModel.from_pretrained(load_causal_lm(base_model_path), str(random_adapters["a"])).eval()
    with torch.inference_mode():
        out = plain.generate(**ids, max_new_tokens=16, do_sample=False)
    reference = tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)

    service = ModelService(base_model_path)
    service.activate("v1", random_adapters["a"])
    alone = service.generate(question, max_new_tokens=16)
    assert alone == reference  # plain transformers generate on the same weights

    service.load_version("v2", random_adapters["b"])
    others = [[{"role": "user", "content": q}] for q in
              ("Write a long story about a dragon who learns to bake bread in a small mountain village.", "Hi",
               "What is 2+2?", "List ten animals that live in the sea, with one fact about each.")]

    def cancelled_midway(messages: list[dict]) -> None:
        tokens = service.stream(messages, version="v2", max_new_tokens=40)
        next(tokens), next(tokens), next(tokens)
        tokens.close()  # the client went away: its row leaves the batch at the next step

    requests = [Request(q, max_new_tokens=n, adapter=v)
                for q, n in zip(others, (30, 5, 12, 20), strict=True) for v in ("v1", "v2", BASE)]
    job = threading.Thread(target=service.generate_many, args=(requests,))
    chats = [threading.Thread(target=cancelled_midway, args=(q,)) for q in others[::3]]
    for worker in (job, *chats):
        worker.start()
    service.generate(question, max_new_tokens=16)  # joins the running batch (mixed versions: rounding may differ)
    for worker in (job, *chats):
        worker.join()
    assert service.prepare_spare()
    assert service.generate(question, max_new_tokens=16) == alone
    assert not any(service._in_use.values())


def test_a_short_chat_does_not_wait_for_another_users_long_prefill(base_model_path: str) -> None:
    """Issue 13, finding 2: the engine prefilled one prompt group at a time per lane, so a chat arriving while a
    flooder's 1,000-token prompt prefilled (16 passes of 64 tokens) waited for every pass of it (seconds on a CPU).
    Now it starts its own prefill at once and, having fewer passes left, goes first: its first token comes after
    at most one of the long prompt's passes. Both answers are still those each gives alone."""
    from training.generation import Request

    service = ModelService(base_model_path)
    long = [{"role": "user", "content": "Tell me everything about the history of computing. " * 100}]
    short = [{"role": "user", "content": "Name a primary colour."}]
    entered, gate, forward = threading.Event(), threading.Event(), service._engine.guard
    gate.set()

    @contextmanager
    def holding() -> Iterator[None]:  # while the gate is shut, a forward pass waits (the lane's batch keeps it)
        if not gate.is_set():
            entered.set()
            gate.wait()
        with forward():
            yield

    service._engine.guard = holding
    alone = {"long": service.generate(long, max_new_tokens=4), "short": service.generate(short, max_new_tokens=8)}
    assert len(service.tokenizer.apply_chat_template(long, add_generation_prompt=True)["input_ids"]) > 900
    gate.clear()  # the long prompt's first pass waits until the short chat is queued
    flood = service.submit(Request(long, max_new_tokens=4))
    assert entered.wait(30)
    chat = service.submit(Request(short, max_new_tokens=8))
    gate.set()
    (*_, (flood_text, _)), (*_, (chat_text, _)) = flood.updates(), chat.updates()
    assert chat.started + chat.first_token_s < flood.started + flood.first_token_s
    assert {"long": flood_text, "short": chat_text} == alone
