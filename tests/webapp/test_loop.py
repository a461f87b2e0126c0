"""The whole loop over the real app (real store, model service and training runner): import 12 prompts, generate
A/B candidates, 30 blind votes and 3 corrections, a DPO round, promote — and the chat's next answer comes from
the new version. Slow: two short training rounds in subprocesses on CPU.
"""

import json
import time

import pytest

from app import build_services, parse_args
from tests.webapp.conftest import PASSWORD, call
from webapp.ui import build_ui

REVIEWERS = ("rita", "rob", "ria")


def wait_for_run(services, run_id: int, timeout_s: float = 900) -> None:
    deadline = time.monotonic() + timeout_s
    while (run := services.store.get_run(run_id)).status not in ("succeeded", "failed", "cancelled", "interrupted"):
        assert time.monotonic() < deadline, f"run {run_id} still {run.status}"
        services.runner.poll_runs(services.store, services.data_dir)
        time.sleep(2)
    assert run.status == "succeeded", f"{run.error}\n{services.rounds.log(run_id)[-3000:]}"


@pytest.mark.slow
@pytest.mark.timeout(1800)  # two training subprocesses; ~10 min on 2 idle cores, far more on a loaded machine
def test_feedback_loop_end_to_end(data_dir, monkeypatch):
    monkeypatch.setenv("TUNELOOP_ADMIN", f"alice:{PASSWORD}")
    services = build_services(parse_args(["--data-dir", str(data_dir), "--annotators-per-item", "3"]))
    store = services.store
    for name in REVIEWERS:
        store.create_user(name, PASSWORD, "reviewer")
    demo = build_ui(services)

    prompts = data_dir / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"Give me one short fact about the number {i}."}) + "\n"
                               for i in range(12)))
    demos = data_dir / "demos.jsonl"
    demos.write_text("".join(json.dumps({"prompt": f"Give me one short fact about the number {i}.",
                                         "completion": f"{i} is a number."}) + "\n" for i in range(12)))
    call(demo, "data_import", str(prompts), "prompts", "train", user="alice")
    call(demo, "data_import", str(demos), "demonstrations", "train", user="alice")
    assert store.count("prompts") == 12

    # A first candidate (SFT on the demonstrations), so A/B compares two versions: active (base) vs candidate.
    _, _, run = call(demo, "rounds_start", ["sft"], "lora", 4, "active", 1, None, 8, 0.1, False, False, user="alice")
    wait_for_run(services, run["value"])
    candidate = store.get_run(run["value"]).versions[-1]
    message = call(demo, "data_generate", "pairwise", candidate, 3, "train", 12, 0.7, user="alice")
    assert "Generation job #1" in message  # a job on the worker thread, as the Data tab starts it
    deadline = time.monotonic() + 300
    while store.get_generation_job(1).active and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "✅ generated (24/24 answers" in call(demo, "data_job", user="alice")

    votes = 0
    for reviewer in REVIEWERS:
        item = call(demo, "review_next", "pairwise", user=reviewer)[0]
        for _ in range(10):
            by_version = {store.get_response(i).model_version: i for i in item["response_ids"]}
            winner = "a" if item["response_ids"][0] == by_version[candidate] else "b"  # the candidate wins
            item = call(demo, f"review_vote_{winner}", item, user=reviewer)[0]
            votes += 1
    for response in store.list_responses()[:3]:
        call(demo, "review_correct", {"response_ids": [response.id]}, response.id, "A better, shorter answer.",
             user="rita")
    assert votes == len(store.list_comparisons()) == 30 and len(store.list_corrections()) == 3

    _, _, run = call(demo, "rounds_start", ["dpo"], "lora", 4, candidate, 1, None, 8, 0.1, False, False,
                     user="alice")
    wait_for_run(services, run["value"])
    new_version = store.get_run(run["value"]).versions[-1]
    assert store.get_version(new_version).parent == candidate

    started = time.monotonic()
    call(demo, "versions_promote", new_version, user="alice")
    swap_s = time.monotonic() - started
    assert services.models.active == new_version and store.active_version().name == new_version
    assert swap_s < 5, f"hot-swap took {swap_s:.1f}s"

    _, history, served = call(demo, "chat", "Give me one short fact about the number 3.", [], "active", 24, 0.0, {},
                              user="vic" if store.get_user("vic") else "alice")
    assert served["messages"][-1]["version"] == new_version
    expected = services.models.generate([{"role": "user", "content": "Give me one short fact about the number 3."}],
                                        version=new_version, max_new_tokens=24)
    assert history[-1]["content"] == expected
