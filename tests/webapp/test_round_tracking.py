"""Admin › Rounds: the experiment-tracking choice (report_to) reaches the round's config; other values are refused."""

import gradio as gr
import pytest

from tests.webapp.conftest import handler
from webapp import limits


def start(demo, report_to):
    fn = handler(demo, "rounds_start")
    return fn(["sft"], "lora", 4, "active", 5, None, 8, 0.1, True, False, gr.Request(username="alice"),
              viewer_chat=False, report_to=report_to)


@pytest.fixture()
def ready(store):
    for i in range(5):
        prompt_id = store.add_prompt(f"question {i}")
        store.add_demonstration(prompt_id, f"good answer {i}")
    return store


def test_the_form_offers_none_tensorboard_and_installed_mlflow():
    values = [value for _, value in limits.report_to_choices()]
    assert values == ["tensorboard", "none", "mlflow", "tensorboard,mlflow"]  # mlflow-skinny is a dev requirement


@pytest.mark.parametrize("report_to", ["mlflow", "none", "tensorboard,mlflow"])
def test_report_to_reaches_the_round_config_and_the_audit(demo, ready, report_to):
    _, _, run_id = start(demo, report_to)
    assert ready.get_run(run_id["value"]).config["report_to"] == report_to
    audit = [entry for entry in ready.list_audit() if entry.action == "start_round"]
    assert audit[0].detail["report_to"] == report_to  # newest first


@pytest.mark.parametrize("report_to", ["wandb", "mlflow,wandb", "<b>x</b>", "", None, "x" * 10_000])
def test_unknown_report_to_is_refused_before_anything_starts(demo, ready, report_to):
    with pytest.raises(gr.Error, match="Experiment tracking must be one of tensorboard, none, mlflow"):
        start(demo, report_to)
    assert ready.list_runs() == []
