"""The model card states the evaluation gate as training.evaluate / the app store it (`metrics["gate"]`)."""

from dataclasses import asdict
from pathlib import Path

from feedback_db import FeedbackStore
from training.gate import GatePolicy, decide
from training.model_card import BaseIdentity, model_card

BASE = BaseIdentity("HuggingFaceTB/SmolLM2-135M-Instruct", None, "apache-2.0", "test")


def gate_metrics(outcomes: list[str], **overrides) -> dict:
    """A decided human sign-off gate as webapp.services.check_gates stores it."""
    verdict = decide(outcomes, GatePolicy(), eval_on_train=False, heldout_prompts=40, judge_kind="human",
                     judge_accuracy=None, method="dpo", auto_promote=True)
    gate = {"judge": "human", "judge_name": "reviewers", "compared_with": "v1-sft", "eval_on_train": False,
            "heldout_prompts": 40, "seed": 7, "prompt_ids": list(range(1, len(outcomes) + 1)),
            "max_new_tokens": 256, "policy": asdict(GatePolicy()), "auto_promote": True, "method": "dpo",
            "truncated": [[i < 3, False] for i in range(len(outcomes))], "mode": "human",
            "pairs": [[2 * i, 2 * i + 1] for i in range(len(outcomes))], "votes_per_item": 2,
            "status": verdict.status, "verdict": verdict.as_dict(), **overrides}
    return {"train_loss": 0.5, "gate": gate, "win_rate_vs_active": verdict.win_rate, "promoted": verdict.promote}


def card_of(tmp_path: Path, metrics: dict) -> tuple[str, dict]:
    store = FeedbackStore(tmp_path / "db.sqlite")
    store.register_version(name="v2-dpo", parent=None, method="dpo", technique="lora", path=str(tmp_path),
                           base_model="base", config={"beta": 0.1}, data_snapshot={}, metrics=metrics)
    return model_card(store, store.get_version("v2-dpo"), BASE, "adapter")


def test_card_shows_the_gate_verdict_and_interval(tmp_path: Path) -> None:
    text, facts = card_of(tmp_path, gate_metrics(["win"] * 24 + ["loss"] * 6 + ["tie"] * 2))
    assert "| verdict | pass |" in text and "| promoted | True |" in text
    assert "| win_rate | 0.8 |" in text and "| interval_95 | [0.627, 0.905] |" in text
    assert "| wins | 24 |" in text and "| losses | 6 |" in text and "| ties | 2 |" in text
    assert "| judge | human |" in text and "| compared_with | v1-sft |" in text and "| truncated_answers | 3 |" in text
    assert "lower bound of the Wilson 95 % interval of the win-rate is above 0.5 over at least 20 decisive" in text
    gate = facts["gate"]
    assert gate["verdict"] == "pass" and gate["gate_prompts"] == 32
    assert [round(b, 3) for b in gate["interval_95"]] == [0.627, 0.905]  # numbers in tuneloop.json
    # the report's bulky lists stay out of the card and out of the metrics table
    assert "pairs" not in gate and "prompt_ids" not in gate and "| gate |" not in text
    assert "gate" not in facts["metrics"] and facts["metrics"] == {"train_loss": 0.5}


def test_card_shows_refusals_and_a_waiting_gate(tmp_path: Path) -> None:
    metrics = gate_metrics(["win"] * 30 + ["loss"] * 2, eval_on_train=True)
    metrics["gate"]["verdict"] = decide(["win"] * 30 + ["loss"] * 2, GatePolicy(), eval_on_train=True,
                                        heldout_prompts=0, judge_kind="human", judge_accuracy=None, method="dpo",
                                        auto_promote=True).as_dict()
    metrics["promoted"] = False
    text, facts = card_of(tmp_path / "a", metrics)
    assert "| promoted | False |" in text and "evaluated on training data" in text
    assert facts["gate"]["evaluated_on_training_data"] is True
    waiting = gate_metrics(["win"] * 4)
    waiting["gate"] |= {"status": "waiting", "verdict": None}
    del waiting["win_rate_vs_active"], waiting["promoted"]
    text, facts = card_of(tmp_path / "b", waiting)
    assert "| verdict | waiting |" in text and "waiting for reviewer votes" in text and "interval_95" not in text


def test_card_of_an_old_version_keeps_its_flat_gate_keys(tmp_path: Path) -> None:
    text, facts = card_of(tmp_path, {"train_loss": 0.5, "gate_passed": True, "win_rate_vs_active": 0.75})
    assert "| gate_passed | True |" in text and "| win_rate_vs_active | 0.75 |" in text
    assert facts["metrics"] == {"train_loss": 0.5}
