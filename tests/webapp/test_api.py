"""HTTP API tests: every admin endpoint refuses anonymous, viewer and reviewer callers and works for an admin.

The admin-only list comes from the app's own registry (`services.auth.admin_only()`), and the endpoints are also
enumerated from the running app's /config, so an event added without registering its roles fails here.
"""

import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest
import uvicorn

from tests.webapp.conftest import PASSWORD, make_services
from webapp.server import build_app, public_origins
from webapp.ui import build_ui


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tiny_model(folder, tokenizer_from: str) -> None:
    """A 1-layer random Llama with the real tokenizer: a full-weights version that exports in milliseconds."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_from)
    LlamaForCausalLM(LlamaConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                                 num_key_value_heads=1, vocab_size=len(tokenizer))).save_pretrained(folder)
    tokenizer.save_pretrained(folder)


@contextmanager
def serve(services) -> Iterator[str]:
    """The app as app.py serves it (webapp/server.py under uvicorn), in a thread; yields its URL."""
    port = free_port()
    app = build_app(services, build_ui(services).queue(), public_origins(None, "127.0.0.1", port))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture()
def app(store, tmp_path, base_model_path):
    services = make_services(store, tmp_path)
    tiny_model(tmp_path / "versions" / "v1-sft", base_model_path)
    store.register_version(name="v1-sft", parent=None, method="sft", technique="lora",
                           path=str(tmp_path / "versions" / "v1-sft"), base_model="fake-base", config={},
                           data_snapshot={}, metrics={})
    for i in range(5):
        prompt_id = store.add_prompt(f"question {i}", split="heldout" if i == 0 else "train")
        store.add_demonstration(prompt_id, f"answer {i}")
    with serve(services) as url:
        yield services, url


def session(url: str, username: str | None) -> httpx.Client:
    client = httpx.Client(base_url=url, timeout=60)
    if username:
        assert client.post("/login", data={"username": username, "password": PASSWORD}).status_code == 200
    return client


def call(client: httpx.Client, api_name: str, data: list) -> tuple[str, object]:
    """POST /gradio_api/call/<name>, then read its event stream: ("complete", data) or ("error", message)."""
    started = client.post(f"/gradio_api/call/{api_name}", json={"data": data})
    if started.status_code != 200:
        return f"http {started.status_code}", started.text
    event, payload = "", None
    with client.stream("GET", f"/gradio_api/call/{api_name}/{started.json()['event_id']}") as stream:
        for line in stream.iter_lines():
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("data:") and event in ("complete", "error"):
                return event, json.loads(line.split(":", 1)[1])
    return event, payload


def admin_calls(client: httpx.Client, tmp_path) -> dict[str, list]:
    """Valid inputs for every admin endpoint, in an order where each one can succeed."""
    upload = tmp_path / "prompts.jsonl"
    upload.write_text('{"prompt": "imported"}\n')
    with upload.open("rb") as f:
        (uploaded,) = client.post("/gradio_api/upload", files={"files": f}).json()
    file_data = {"path": uploaded, "meta": {"_type": "gradio.FileData"}}
    return {
        "data_counts": [], "data_preview": [file_data, "prompts"],
        "data_import": [file_data, "prompts", "heldout"], "data_candidates": [],
        "data_generate": ["pairwise", "v1-sft", 3, "train", 16, 0.7], "data_export": ["prompts"],
        "data_job": [], "data_job_open": [], "data_job_cancel": [],
        "rounds_check": [["sft"]], "rounds_start": [["sft"], "lora", 4, "active", 2, None, 8, 0.1, True, True],
        "rounds_progress": [None], "rounds_cancel": [1], "rounds_resume": [1],
        "versions_list": [], "versions_compare": ["base", "v1-sft", 1], "versions_promote": ["v1-sft"],
        "versions_rollback": [], "versions_export": ["v1-sft", False], "versions_archive": ["v1-sft"],
        "versions_back": [],
        "versions_gate_report": ["v1-sft"],
        "users_list": [], "users_add": ["newbie", "long-enough", "viewer"], "users_set_role": ["newbie", "reviewer"],
        "users_disable": ["newbie"], "users_enable": ["newbie"], "audit_list": [20],
        "tokens_list": [], "tokens_create": ["newbie", "ci"], "tokens_revoke": [1],
        "onboarding_load": [], "onboarding_generate": [], "onboarding_train": [], "onboarding_open": [],
        "form_load": ["pairwise"], "form_guidelines": ["pairwise", "Be *kind*"],
        "form_add_criterion": ["accurate", "true claims", "scale", False], "form_retire": ["accurate"],
        "browse_search": ["question", "any", "", "", "", "", False, "any", 1], "browse_open": [1],
        "webhooks_list": [], "webhooks_add": ["http://127.0.0.1:9/hook", "a-long-enough-secret", ["promotion"]],
        "webhooks_remove": [1],
        "browse_move_heldout": [2], "browse_move_train": [2], "browse_exclude": [1, "test"], "browse_restore": [1],
    }


def test_config_endpoints_match_the_role_registry(app):
    services, url = app
    config = session(url, "vic").get("/config").json()
    names = {d["api_name"] for d in config["dependencies"] if d.get("api_visibility", "public") != "private"}
    assert names == set(services.auth.endpoints)


def test_admin_endpoints_refuse_everyone_but_admins(app, tmp_path):
    services, url = app
    admin = session(url, "alice")
    calls = admin_calls(admin, tmp_path)
    assert set(calls) == set(services.auth.admin_only()), "give every admin endpoint valid inputs here"
    for i in range(4):  # preference pairs for onboarding_train's DPO round
        services.store.add_preference_pair(services.store.add_prompt(f"pref {i}", split="train"), "good", "bad")
    clients = {"anonymous": session(url, None), "viewer": session(url, "vic"), "reviewer": session(url, "rita")}
    for api_name, data in calls.items():
        for who, client in clients.items():
            event, message = call(client, api_name, data)
            if who == "anonymous":
                assert event == "http 401", (api_name, event, message)
            else:
                assert event == "error" and "Permission denied" in str(message), (api_name, who, event, message)
        event, result = call(admin, api_name, data)
        assert event == "complete", (api_name, result)
    assert services.store.get_user("newbie").role == "reviewer"
    # promoted, rolled back to the parent (base), archived, then back to the previously active version
    assert services.store.active_version().name == "v1-sft" and services.models.active == "v1-sft"
    # the uploaded file and the starter prompts were imported (the fake importer stores each line as a prompt)
    assert len(services.store.list_prompts()) == 5 + 1 + 4 + 120
    (exported,) = (services.data_dir / "exports").glob("v1-sft-export-*")
    assert {"config.json", "model.safetensors", "README.md"} <= {p.name for p in exported.iterdir()}
    (token,) = services.store.list_api_tokens("newbie")
    assert token.label == "ci" and token.revoked is not None


def test_viewer_can_chat_but_not_review(app):
    _, url = app
    viewer = session(url, "vic")
    event, result = call(viewer, "chat", ["Hi", [], "active", 32, 0.0])  # gr.State inputs are not API parameters
    history = result[1]
    assert event == "complete" and history[-1]["content"] == [{"type": "text", "text": "[base] answer to: Hi"}]
    event, message = call(viewer, "review_next", ["pairwise"])
    assert event == "error" and "Permission denied" in str(message)


def test_judgments_outside_the_queue_keep_session_state_identity_and_role_checks(app):
    """The review judgments run with queue=False: the browser POSTs /gradio_api/run/<name> with every input (null for
    the gr.State) and gets the outputs back. The session's item (gr.State), the caller's identity from the session
    cookie and the role check hold on that path too, and a page on another origin cannot post there."""
    services, url = app
    store = services.store
    prompt_id = store.add_prompt("Rate me")
    store.add_response(prompt_id, "an answer", "base")
    config = session(url, "rita").get("/config").json()
    (rate,) = [d for d in config["dependencies"] if d["api_name"] == "review_rate"]
    assert rate["queue"] is False  # what makes the browser use /run
    body = {"data": [None, "up", "4", "fine"], "session_hash": "rita-page"}

    rita = session(url, "rita")
    assert call(rita, "review_next", ["single"])[0] == "complete"  # an item, but in another session (the API's own)
    refused = rita.post("/gradio_api/run/review_rate", json=body)
    assert refused.status_code == 500 and "No single item loaded" in refused.text
    opened = rita.post("/gradio_api/run/review_next", json={"data": ["single", None], "session_hash": "rita-page"})
    assert opened.status_code == 200
    rated = rita.post("/gradio_api/run/review_rate", json=body)
    assert rated.status_code == 200 and "1 ratings" in rated.json()["data"][-1]
    (rating,) = store.list_ratings()
    assert (rating.username, rating.thumbs, rating.likert, rating.comment) == ("rita", 1, 4, "fine")

    viewer = session(url, "vic")
    refused = viewer.post("/gradio_api/run/review_rate", json={**body, "session_hash": "vic-page"})
    assert refused.status_code == 500 and "Permission denied" in refused.text
    assert session(url, None).post("/gradio_api/run/review_rate", json=body).status_code == 401
    foreign = rita.post("/gradio_api/run/review_rate", json=body, headers={"Origin": "http://evil.example"})
    assert foreign.status_code == 403
    assert len(store.list_ratings()) == 1
