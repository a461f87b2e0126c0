"""Handler-level tests: the real store in a temp dir, fake models and runner; handlers called as Gradio would."""

import json
import time
from pathlib import Path

import gradio as gr
import pytest

from feedback_db.models import Snapshot
from tests.webapp.conftest import PASSWORD, call, handler, make_services
from webapp.tabs.common import safe_markdown
from webapp.tabs.review import AGREEMENT_EVERY
from webapp.ui import build_ui


def add_pair(store, prompt="What is 2+2?", versions=("base", "v1-sft")) -> tuple[int, list[int]]:
    prompt_id = store.add_prompt(prompt)
    return prompt_id, [store.add_response(prompt_id, f"answer from {v}", v) for v in versions]


def register(store, tmp_path: Path, name="v1-sft", method="sft") -> Path:
    path = tmp_path / "versions" / name
    path.mkdir(parents=True)
    store.register_version(name=name, parent=None, method=method, technique="lora", path=str(path),
                           base_model="fake-base", config={}, data_snapshot={},
                           metrics={"gate_passed": True, "win_rate_vs_active": 0.7})
    return path


# ----- auth ---------------------------------------------------------------------------------------------------
def test_login_checks_password_and_disabled_users(services, store):
    assert services.auth.login("alice", PASSWORD)
    assert not services.auth.login("alice", "wrong")
    store.set_disabled("rita", True)
    assert not services.auth.login("rita", PASSWORD)


def test_every_public_event_is_in_the_role_registry(demo, services):
    public = {f.api_name for f in demo.fns.values() if f.api_visibility != "private"}
    assert public == set(services.auth.endpoints)
    assert {"users_add", "rounds_start", "versions_promote", "data_import"} <= set(services.auth.admin_only())


@pytest.mark.parametrize("user", [None, "vic", "rita", "ghost"])
def test_admin_handlers_refuse_non_admins(demo, services, user):
    for api_name in services.auth.admin_only():
        fn = handler(demo, api_name)
        n_inputs = len([f for f in demo.fns.values() if f.api_name == api_name][0].inputs)
        with pytest.raises(gr.Error, match="Permission denied"):
            result = fn(*[None] * n_inputs, gr.Request(username=user))
            list(result) if hasattr(result, "__next__") else None


def test_disabled_admin_is_refused(demo, store):
    store.create_user("bob", PASSWORD, "admin")
    store.set_disabled("bob", True)
    with pytest.raises(gr.Error, match="Permission denied"):
        call(demo, "users_list", user="bob")


def test_reviewer_endpoints_refuse_viewers(demo):
    with pytest.raises(gr.Error, match="Permission denied: admin or reviewer"):
        call(demo, "review_next", "pairwise", user="vic")


# ----- chat -----------------------------------------------------------------------------------------------------
def test_chat_streams_from_the_active_version_and_thumbs_become_feedback(demo, services, store):
    _, history, served = call(demo, "chat", "Hello?", [], "active", 64, 0.0, {}, user="vic")
    assert history[-1] == {"role": "assistant", "content": "[base] answer to: Hello?"}
    _, history, served = call(demo, "chat", "And again?", history, "active", 64, 0.0, served, user="vic")
    like = gr.LikeData(None, {"index": 3, "value": history[3]["content"], "liked": True})
    handler(demo, "chat_thumbs")(served, like, gr.Request(username="vic"))
    handler(demo, "chat_thumbs")(served, like, gr.Request(username="vic"))  # a second thumbs: same response
    ratings = store.list_ratings()
    assert [(r.username, r.thumbs, r.source) for r in ratings] == [("vic", 1, "viewer_chat")] * 2
    assert ratings[0].response_id == ratings[1].response_id
    response = store.get_response(ratings[0].response_id)
    assert (response.model_version, response.text) == ("base", "[base] answer to: And again?")
    prompt = store.get_prompt(response.prompt_id)
    assert prompt.text == "And again?" and [m["content"] for m in prompt.messages] == [
        "Hello?", "[base] answer to: Hello?", "And again?"]  # the whole conversation the model saw


def test_chat_thumbs_ignore_the_client_history_and_other_users_answers(demo, services, store):
    _, history, served = call(demo, "chat", "Hello?", [], "active", 64, 0.0, {}, user="vic")
    forged = [{"role": "user", "content": "forged"}, {"role": "assistant", "content": "forged answer"}]
    _, shown, served = call(demo, "chat", "Next?", forged, "active", 64, 0.0, served, user="vic")
    assert "forged" not in str(shown) and shown[0]["content"] == "Hello?"
    like = gr.LikeData(None, {"index": 3, "value": "anything", "liked": True})
    with pytest.raises(gr.Error, match="Only a finished answer"):  # rita cannot rate vic's answer
        handler(demo, "chat_thumbs")(served, like, gr.Request(username="rita"))
    with pytest.raises(gr.Error, match="Only a finished answer"):  # a user message is not an answer
        handler(demo, "chat_thumbs")(served, gr.LikeData(None, {"index": 2, "value": "", "liked": True}),
                                     gr.Request(username="vic"))
    with pytest.raises(gr.Error, match="Only a finished answer"):
        handler(demo, "chat_thumbs")({}, like, gr.Request(username="vic"))
    assert store.list_ratings() == []


def test_viewer_chat_thumbs_train_only_when_an_admin_includes_them(demo, services, store):
    from feedback_db.datasets import kto_rows

    for i, liked in enumerate([True, False]):
        _, _, served = call(demo, "chat", f"Q{i}?", [], "active", 64, 0.0, {}, user="vic")
        handler(demo, "chat_thumbs")(served, gr.LikeData(None, {"index": 1, "value": "", "liked": liked}),
                                     gr.Request(username="vic"))
    def both_splits(snapshot: Snapshot) -> tuple[list[dict], int]:  # chat prompts are held out by a hash of their text
        results = [kto_rows(store, snapshot, split) for split in ("train", "heldout")]
        return [row for rows, _ in results for row in rows], sum(c["viewer_chat"] for _, c in results)

    assert both_splits(store.snapshot()) == ([], 2)
    rows, _ = both_splits(store.snapshot(include_viewer_chat=True))
    assert sorted(r["label"] for r in rows) == [False, True]


def test_side_by_side_answers_with_the_second_version(demo, services, store, tmp_path):
    register(store, tmp_path)
    history, _ = call(demo, "chat_compare", "Hi", [], "v1-sft", 64, 0.0, {}, True, user="rita")
    assert history[-1]["content"].startswith("[v1-sft]")
    history, _ = call(demo, "chat_compare", "Hi", [], "v1-sft", 64, 0.0, {}, False, user="rita")
    assert history == []


def test_chat_with_an_unloadable_version_is_a_clear_error(demo, store, tmp_path):
    register(store, tmp_path).rmdir()
    with pytest.raises(gr.Error, match="does not exist"):
        call(demo, "chat", "Hi", [], "v1-sft", 64, 0.0, {}, user="vic")


def test_markdown_in_answers_keeps_code_and_escapes_html():
    text = "Hi <script>alert(1)</script> <img src=x onerror=alert(1)> `a<b` \n```\n<div>\n```"
    out = safe_markdown(text)
    assert "<script>" not in out and "<img" not in out and "&lt;script&gt;" in out
    assert "<code>a&lt;b</code>" in out and "<pre><code>&lt;div&gt;\n</code></pre>" in out


# ----- review ---------------------------------------------------------------------------------------------------
def test_pairwise_vote_records_both_versions_and_serves_the_next_item(demo, store):
    add_pair(store, "first?")
    add_pair(store, "second?")
    shown = call(demo, "review_next", "pairwise", user="rita")
    item, progress = shown[0], shown[1]
    assert item["mode"] == "pairwise" and "**0** done · **2** remaining" in progress
    shown = call(demo, "review_vote_a", item, user="rita")
    (vote,) = store.list_comparisons()
    assert (vote.response_a, vote.response_b) == tuple(item["response_ids"])
    assert {vote.version_a, vote.version_b} == {"base", "v1-sft"} and vote.winner == "a"
    assert "**1** done · **1** remaining" in shown[1]
    with pytest.raises(gr.Error, match="No single item"):
        call(demo, "review_rate", shown[0], "up", "4", "", user="rita")


def test_next_item_keeps_the_order_of_the_item_on_the_page(demo, store):
    """Next item before judging serves the same item again: its answers stay where they were (a fresh shuffle swapped
    A and B under the reviewer, and a vote clicked meanwhile applied to the new order); another item is shuffled."""
    add_pair(store, "first?")
    review_next = handler(demo, "review_next")
    item = call(demo, "review_next", "pairwise", user="rita")[0]
    orders = set()
    for _ in range(20):
        again = review_next("pairwise", gr.Request(username="rita"), item)
        assert again[0]["response_ids"] == item["response_ids"]
        orders.add(tuple(call(demo, "review_next", "pairwise", user="rita")[0]["response_ids"]))
    assert len(orders) == 2  # without the page's item, the order is drawn afresh


def test_reviewer_sees_the_whole_conversation_with_the_system_prompt_labelled(demo, store):
    messages = [{"role": "system", "content": "You are a <b>pirate</b>."}, {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Arr, hello."}, {"role": "user", "content": "Where is the gold?"}]
    prompt_id = store.add_prompt("Where is the gold?", messages=messages)
    for version in ("base", "v1-sft"):
        store.add_response(prompt_id, f"answer from {version}", version)
    shown = call(demo, "review_next", "pairwise", user="rita")[2]
    system, rest = shown.split("<details>", 1)
    assert "**System prompt**" in system and "> <p>You are a &lt;b&gt;pirate&lt;/b&gt;.</p>" in system
    assert "Earlier turns (2)" in rest and "**User:** <p>Hi</p>" in rest
    assert "**Assistant:** <p>Arr, hello.</p>" in rest
    assert rest.index("</details>") < rest.index("### Prompt\n\n<p>Where is the gold?</p>")


def test_single_rating_correction_ranking_and_skip(demo, store):
    prompt_id = store.add_prompt("Explain <b>HTML</b>")
    ids = [store.add_response(prompt_id, f"answer {i}", "base", {"seed": i}) for i in range(3)]
    shown = call(demo, "review_next", "single", user="rita")
    assert "&lt;b&gt;" in shown[2]
    item = shown[0]
    with pytest.raises(gr.Error, match="Give a thumbs"):
        call(demo, "review_rate", item, None, None, "  ", user="rita")
    cleared, mine = call(demo, "review_correct", item, item["response_ids"][0], "A better answer.", user="rita")
    assert cleared == "" and "0 ratings" in mine and "1 corrections" in mine  # counts refresh at once
    shown = call(demo, "review_rate", item, "down", "2", "too short", user="rita")
    assert "1 ratings" in shown[-1]
    (rating,) = store.list_ratings()
    assert (rating.thumbs, rating.likert, rating.comment) == (0, 2, "too short")
    assert store.list_corrections()[0].text == "A better answer."

    item = call(demo, "review_next", "ranking", user="rita")[0]
    with pytest.raises(gr.Error, match="exactly once"):
        call(demo, "review_rank", item, "1,1,2", user="rita")
    call(demo, "review_rank", item, "3,1,2", user="rita")
    assert store.list_rankings()[0].response_ids == [item["response_ids"][i] for i in (2, 0, 1)]
    assert sorted(ids) == sorted(item["response_ids"])

    next_single = call(demo, "review_next", "single", user="rita")[0]
    after_skip = call(demo, "review_skip", next_single, "single", user="rita")[0]
    assert after_skip is None or after_skip["response_ids"] != next_single["response_ids"]


# ----- admin: data, versions, rounds, users ---------------------------------------------------------------------
def test_import_error_names_the_line_and_imports_nothing(demo, store, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a"}\nnot json\n')
    with pytest.raises(gr.Error, match="Nothing imported.*line 2"):
        call(demo, "data_import", str(bad), "prompts", "train", user="alice")
    assert store.list_prompts() == []


def test_generate_pairwise_candidates_fills_the_review_queue(demo, services, store, tmp_path):
    register(store, tmp_path)
    for i in range(3):
        store.add_prompt(f"prompt {i}")
    message = call(demo, "data_generate", "pairwise", "v1-sft", 3, "train", 32, 0.7, user="alice")
    assert "Generation job #1" in message  # returned at once: the job runs on the worker thread
    deadline = time.monotonic() + 10
    while store.get_generation_job(1).active and time.monotonic() < deadline:
        time.sleep(0.05)
    status = call(demo, "data_job", user="alice")  # what the Data tab polls, also after a reload
    assert "**done**" in status and "✅ generated (6/6 answers" in status
    assert {r.model_version for r in store.list_responses()} == {"base", "v1-sft"}
    assert store.queue_progress("rita", "pairwise") == (0, 3)
    with pytest.raises(gr.Error, match="already has answers"):
        call(demo, "data_generate", "pairwise", "v1-sft", 3, "train", 32, 0.7, user="alice")
    assert store.list_audit()[0].action == "generate_candidates"
    assert call(demo, "data_job_cancel", user="alice").startswith("No generation job is running")


def test_generation_job_cancelled_and_interrupted(services, store):
    prompt_ids = [store.add_prompt(f"prompt {i}") for i in range(3)]
    job_id = store.create_generation_job("alice", "single", ["base"], 3)
    assert services.jobs.cancel(job_id)
    services.jobs._run_job(job_id, prompt_ids, ["base"], 1, 16, 0.0, False)
    assert store.get_generation_job(job_id).status == "cancelled" and not store.list_responses()
    running = store.create_generation_job("alice", "single", ["base"], 3)
    store.update_generation_job(running, "running", done=1)
    assert store.mark_interrupted_generation_jobs() == 1  # app start: the previous process's job
    assert store.get_generation_job(running).status == "interrupted"
    assert not services.jobs.cancel(running)


def test_export_writes_jsonl(demo, store, tmp_path):
    add_pair(store)
    path = call(demo, "data_export", "responses", user="alice")
    rows = [json.loads(line) for line in Path(path).read_text().splitlines()]
    assert len(rows) == 2 and Path(path).parent == tmp_path / "exports"


def test_promote_hot_swaps_and_rollback_returns_to_the_parent(demo, services, store, tmp_path):
    register(store, tmp_path)
    call(demo, "versions_promote", "v1-sft", user="alice")
    assert services.models.active == "v1-sft" and store.active_version().name == "v1-sft"
    assert call(demo, "chat", "Hi", [], "active", 64, 0.0, {}, user="vic")[1][-1]["content"].startswith("[v1-sft]")
    call(demo, "versions_rollback", user="alice")
    assert services.models.active == "base" and store.active_version() is None
    assert {"promote", "rollback"} <= {e.action for e in store.list_audit()}


def test_versions_table_shows_readable_metrics(demo, store, tmp_path):
    register(store, tmp_path)
    for name, metrics in (("fresh", {"fine_tune_calls": 0, "loss": None, "history": []}),  # an untouched SDK adapter
                          ("empty", {"loss": None, "history": []}),
                          ("tuned", {"fine_tune_calls": 2, "loss": 1.234567, "history": [{"loss": 2.0}]})):
        store.register_version(name=name, parent=None, method="sdk", technique="lora", path=str(tmp_path / name),
                               base_model="fake-base", config={}, data_snapshot={}, metrics=metrics)
    cells = dict(call(demo, "versions_list", user="alice")[0][["name", "metrics"]].values)
    assert cells == {"v1-sft": "gate_passed=True", "fresh": "fine_tune_calls=0", "empty": "—",
                     "tuned": "fine_tune_calls=2, loss=1.23"}


def test_back_to_previously_active_returns_to_the_version_that_served_before(demo, services, store, tmp_path):
    register(store, tmp_path)
    register(store, tmp_path, "v2-dpo", "dpo")  # no lineage link to v1-sft: rollback-to-parent would go to base
    with pytest.raises(gr.Error, match="nothing to go back to"):
        call(demo, "versions_back", user="alice")
    call(demo, "versions_promote", "v1-sft", user="alice")
    call(demo, "versions_promote", "v2-dpo", user="alice")
    call(demo, "versions_back", user="alice")
    assert services.models.active == "v1-sft" and store.active_version().name == "v1-sft"
    call(demo, "versions_back", user="alice")  # and forth again, like `cd -`
    assert services.models.active == "v2-dpo"
    assert "back_to_previous" in {e.action for e in store.list_audit()}


def test_promoting_a_broken_version_keeps_the_active_one(demo, services, store, tmp_path):
    register(store, tmp_path).rmdir()
    with pytest.raises(gr.Error, match="base keeps serving"):
        call(demo, "versions_promote", "v1-sft", user="alice")
    assert services.models.active == "base" and store.active_version() is None


def test_poller_sync_follows_the_store_and_reports_broken_versions(services, store, tmp_path):
    register(store, tmp_path)
    store.set_active("v1-sft", username="gate")
    services.sync_active()
    assert services.models.active == "v1-sft"
    register(store, tmp_path, "v2-dpo", "dpo").rmdir()
    store.set_active("v2-dpo", username="gate")
    services.sync_active()
    assert services.models.active == "v1-sft"
    assert "v2-dpo could not be loaded" in services.banner()


def test_poller_notices_a_commit_within_its_watch_interval(services, store, tmp_path):
    register(store, tmp_path)
    stop = services.start_poller(interval_s=0.3, watch_s=0.02)
    try:
        time.sleep(0.1)
        store.set_active("v1-sft", username="gate")  # this thread's connection: data_version changes for the poller's
        set_at = time.monotonic()
        while services.models.active != "v1-sft" and time.monotonic() - set_at < 5:
            time.sleep(0.005)
        noticed_s = time.monotonic() - set_at
        spares = services.models.spares_prepared
        assert services.models.active == "v1-sft"
        assert noticed_s < 0.25  # the watch, not the 0.3 s slow tick
        time.sleep(0.7)
        assert services.models.spares_prepared > spares  # on a slow tick once the swap is over
    finally:
        stop.set()


def test_rounds_start_needs_passing_data_check(demo, services, store):
    with pytest.raises(gr.Error, match="Data check failed"):
        call(demo, "rounds_start", ["sft"], "lora", 4, "active", 5, None, 8, 0.1, True, True, user="alice")
    for i in range(5):
        prompt_id = store.add_prompt(f"question {i}")
        store.add_demonstration(prompt_id, f"good answer {i}")
        store.add_preference_pair(prompt_id, f"good answer {i}", f"bad answer {i}")
    report, _, run_id = call(demo, "rounds_start", ["sft", "dpo"], "freeze", 2, "active", 5, 1e-4, 8, 0.2, True,
                             False, user="alice")
    run = store.get_run(run_id["value"])
    assert run.config["stage_args"] == {"sft": {"learning_rate": 1e-4, "freeze_top_n": 2},
                                        "dpo": {"learning_rate": 1e-4, "freeze_top_n": 2, "beta": 0.2}}
    assert run.config["max_steps"] == 5 and run.config["auto_promote"] is False
    call(demo, "rounds_cancel", run.id, user="alice")
    assert store.get_run(run.id).status == "cancelled"
    runs, status, *_ = call(demo, "rounds_progress", None, user="alice")
    assert f"Run {run.id}" in status and "cancelled" in status


def test_users_add_change_disable_and_audit(demo, store):
    call(demo, "users_add", "newbie", "long-enough", "viewer", user="alice")
    call(demo, "users_set_role", "newbie", "reviewer", user="alice")
    table = call(demo, "users_disable", "newbie", user="alice")
    assert store.get_user("newbie").role == "reviewer" and store.get_user("newbie").disabled
    assert "newbie" in set(table.username)
    with pytest.raises(gr.Error, match="disable yourself"):
        call(demo, "users_disable", "alice", user="alice")
    with pytest.raises(gr.Error, match="at least 8"):
        call(demo, "users_add", "x", "short", "viewer", user="alice")
    actions = list(call(demo, "audit_list", 50, user="alice").action)
    assert actions[:3] == ["disable_user", "set_role", "create_user"]


def test_stats_are_readable_by_viewers(demo, store):
    _, ids = add_pair(store)
    store.add_comparison(*ids, "b", "rita")
    board, matrix, counts, per_reviewer, agreement, _, win_rates, _ = call(demo, "stats", user="vic")
    assert list(board.version) == ["v1-sft", "base"] and list(board.votes) == [1, 1]  # the real leaderboard
    assert list(board["95% interval"]) == ["— (under 10 votes)"] * 2  # 1 vote: no interval worth showing
    assert matrix.set_index("wins of ↓ against →").loc["v1-sft", "base"] == "1/1 (100%)"
    assert counts["count"].sum() == 1 and list(per_reviewer.username) == ["rita"]
    assert list(win_rates.version) == ["base", "v1-sft"] and list(win_rates.wins) == [0, 1] and len(agreement) == 3


def test_leaderboard_shows_intervals_from_ten_votes(demo, store):
    for n in range(12):
        _, ids = add_pair(store, f"q{n}?")
        store.add_comparison(*ids, "b" if n % 3 else "a", "rita")
    board = call(demo, "stats", user="vic")[0]
    low, high = (int(x) for x in board["95% interval"][0].split(" – "))
    assert list(board.votes) == [12, 12] and low < board.rating[0] < high


def test_session_hides_tabs_by_role(demo):
    who, banner, review, admin, timer = call(demo, "session", user="vic")
    assert "vic" in who and "Serving `base`" in banner
    assert review["visible"] is False and admin["visible"] is False
    _, _, review, admin, _ = call(demo, "session", user="alice")
    assert review["visible"] and admin["visible"]


def test_real_importer_reports_the_line_and_imports_nothing(store, tmp_path):
    demo = build_ui(make_services(store, tmp_path))
    bad = tmp_path / "prompts.jsonl"
    bad.write_text('{"prompt": "fine"}\n{"prompt": ""}\n')
    summary, first = call(demo, "data_preview", str(bad), "prompts", user="alice")
    assert "2 prompts rows (jsonl)" in summary and "Would abort" in summary and "line 2" in summary
    assert list(first.prompt) == ["fine"] and store.list_prompts() == []  # a preview writes nothing
    with pytest.raises(gr.Error, match="Nothing imported.*line 2"):
        call(demo, "data_import", str(bad), "prompts", "heldout", user="alice")
    assert store.list_prompts() == []
    bad.write_text('{"prompt": "fine"}\n{"prompt": "also fine"}\n')
    assert "**Valid:**" in call(demo, "data_preview", str(bad), "prompts", user="alice")[0]
    message, counts = call(demo, "data_import", str(bad), "prompts", "heldout", user="alice")
    assert "Imported 2 rows" in message and [p.split for p in store.list_prompts()] == ["heldout", "heldout"]


# ----- evaluation gate: human sign-off ---------------------------------------------------------------------------
def human_gate(store, tmp_path: Path, prompts: int = 22) -> list[list[int]]:
    """A candidate whose gate put `prompts` held-out A/B items (candidate vs base) in the review queue, as
    training.evaluate does in human mode; the first item had identical answers (a tie, never queued)."""
    register(store, tmp_path, name="v2-dpo", method="dpo")
    pairs, ids = [[]], []
    for i in range(prompts):
        prompt_id, responses = add_pair(store, f"Held-out question {i}?", versions=("v2-dpo", "base"))
        pairs.append(responses)
        ids.append(prompt_id)
    gate = {"mode": "human", "status": "waiting", "judge": "human", "compared_with": "base", "pairs": pairs,
            "prompt_ids": [ids[0], *ids], "votes_per_item": 1, "policy": {"min_decisive": 20},
            "eval_on_train": False, "heldout_prompts": 40, "method": "dpo", "auto_promote": True}
    store.update_version_metrics("v2-dpo", {"gate": gate})
    return pairs


def test_human_gate_waits_for_votes_then_promotes(demo, services, store, tmp_path):
    pairs = human_gate(store, tmp_path)
    table = call(demo, "versions_list", user="alice")[0]
    row = table[table.name == "v2-dpo"].iloc[0]
    assert row.gate.startswith("⏳ human sign-off: waiting for 22 more votes (0 won, 0 lost, 1 ties so far)")
    item = call(demo, "review_next", "pairwise", user="rita")  # gate items are ordinary blind A/B items
    assert item is not None
    for n, (candidate, other) in enumerate(pairs[1:]):
        store.add_comparison(candidate, other, "a" if n else "b", "rita")  # 21 wins, 1 loss
        if n == 10:
            assert services.check_gates() == [] and services.models.active == "base"  # still waiting
    assert services.check_gates() == ["v2-dpo"]
    assert services.models.active == "v2-dpo" and store.active_version().name == "v2-dpo"
    gate = store.get_version("v2-dpo").metrics["gate"]
    assert gate["status"] == "pass" and gate["verdict"]["promote"] and gate["verdict"]["wins"] == 21
    report = call(demo, "versions_gate_report", "v2-dpo", user="alice")
    assert report["items"][0]["judgment"] == "tie (identical answers)"
    assert report["items"][1] == {"prompt": "Held-out question 0?", "candidate": "answer from v2-dpo",
                                  "compared": "answer from base", "votes": {"rita": "compared"}}
    assert services.check_gates() == []  # decided once


def test_human_gate_with_losing_votes_is_not_promoted(demo, services, store, tmp_path):
    pairs = human_gate(store, tmp_path)
    for n, (candidate, other) in enumerate(pairs[1:]):
        store.add_comparison(candidate, other, "a" if n % 2 else "b", "rita")  # 11 wins, 11 losses
    assert services.check_gates() == ["v2-dpo"] and services.models.active == "base"
    table = call(demo, "versions_list", user="alice")[0]
    assert table[table.name == "v2-dpo"].iloc[0].gate.startswith("❌ not better (human judge): win-rate 0.50")


def test_agreement_after_a_judgment_is_recomputed_every_few_judgments(demo, store):
    """The reviewer's counts refresh with every judgment; their agreement with the majority (every vote on their
    items) on Next item and every AGREEMENT_EVERY judgments."""
    shared = store.add_prompt("shared?")
    answer = store.add_response(shared, "shared answer", "base")
    store.add_rating(answer, "alice", thumbs=1)
    store.add_rating(answer, "rita", thumbs=1)
    for i in range(AGREEMENT_EVERY + 1):
        store.add_response(store.add_prompt(f"q{i}?"), f"answer {i}", "base")
    item = call(demo, "review_next", "single", user="rita")[0]
    assert "agreement with the majority: thumbs 100%" in call(demo, "review_form", "single", user="rita")[1]
    store.add_rating(answer, "rita", thumbs=0)  # rita changes her vote: she now disagrees with alice
    shown = call(demo, "review_rate", item, "up", None, "", user="rita")
    assert "3 ratings" in shown[-1] and "thumbs 100%" in shown[-1]  # counts now, agreement from before
    shown = call(demo, "review_next", "single", user="rita")
    assert "thumbs 0%" in shown[-1]  # Next item recomputes it
    store.add_rating(answer, "rita", thumbs=1)  # agrees again: one more judgment since the recomputation
    texts = []
    for _ in range(AGREEMENT_EVERY - 1):
        shown = call(demo, "review_rate", shown[0], "up", None, "", user="rita")
        texts.append(shown[-1])
    assert all("thumbs 0%" in text for text in texts[:-1])
    assert "thumbs 100%" in texts[-1]  # AGREEMENT_EVERY judgments after the last recomputation
