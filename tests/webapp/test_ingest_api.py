"""Ingestion API against the real app and store: conversations (prompt + response + rating in one transaction),
rankings, corrections and the review queue for external front ends; bad input gets a 4xx naming the field and
writes nothing."""

import httpx

from tests.webapp import test_rest_api
from tests.webapp.test_rest_api import post

api = test_rest_api.api  # the fixture: the app as app.py launches it, tokens, two answers to one prompt

CONVERSATION = {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                             {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "2+2?"}],
                "answer": "4", "version": "prod-2024", "thumbs": 1, "likert": 5, "comment": "spot on"}


def rows(store) -> tuple[int, ...]:
    return tuple(store.count(t) for t in ("prompts", "responses", "ratings", "rankings", "corrections"))


def test_conversation_creates_prompt_response_and_rating(api):
    store, url, tokens, _ = api
    created = post(url, "conversations", tokens["rita"], CONVERSATION)
    assert created.status_code == 201, created.text
    ids = created.json()
    prompt = store.get_prompt(ids["prompt_id"])
    assert prompt.messages == CONVERSATION["messages"] and prompt.text == "2+2?" and prompt.source == "api"
    response = store.get_response(ids["response_id"])
    assert (response.text, response.model_version, response.prompt_id) == ("4", "prod-2024", prompt.id)
    (rating,) = store.list_ratings()
    assert (rating.id, rating.username, rating.thumbs, rating.likert) == (ids["rating_id"], "rita", 1, 5)
    bare = {k: CONVERSATION[k] for k in ("messages", "answer", "version")}
    assert post(url, "conversations", tokens["alice"], bare).json()["rating_id"] is None


def test_bad_conversations_name_the_field_and_write_nothing(api):
    store, url, tokens, _ = api
    before = rows(store)
    cases = {
        "messages": {**CONVERSATION, "messages": [{"role": "assistant", "content": "Hi"}]},
        "messages.0.role": {**CONVERSATION, "messages": [{"role": "robot", "content": "Hi"}]},
        "version": {**CONVERSATION, "version": "prod 2024!"},
        "likert": {**CONVERSATION, "likert": 9},
        "thumbs": {**CONVERSATION, "thumbs": 3},
        "answer": {**CONVERSATION, "answer": ""},
        "extra": {**CONVERSATION, "extra": 1},
    }
    for field, body in cases.items():
        response = post(url, "conversations", tokens["rita"], body)
        assert response.status_code == 422 and response.json()["detail"].startswith(field), (field, response.text)
    assert post(url, "conversations", tokens["vic"], CONVERSATION).status_code == 403
    assert post(url, "conversations", None, CONVERSATION).status_code == 401
    assert post(url, "conversations", tokens["rita"], b"{not json").status_code == 400
    assert rows(store) == before


def test_rankings_corrections_and_the_review_queue(api):
    store, url, tokens, (first, second) = api
    headers = {"Authorization": f"Bearer {tokens['rita']}"}
    item = httpx.get(f"{url}/api/v1/review/next", params={"mode": "pairwise"}, headers=headers)
    assert item.status_code == 200 and item.json()["prompt"]["messages"][-1]["content"] == "What is 2+2?"
    assert sorted(r["id"] for r in item.json()["responses"]) == [first, second]
    assert "version" not in str(item.json())  # blind
    a, b = (r["id"] for r in item.json()["responses"])
    voted = post(url, "comparisons", tokens["rita"], {"response_a": a, "response_b": b, "winner": "a"})
    assert voted.status_code == 201
    assert httpx.get(f"{url}/api/v1/review/next", params={"mode": "pairwise"}, headers=headers).status_code == 204
    bad_mode = httpx.get(f"{url}/api/v1/review/next", params={"mode": "nope"}, headers=headers)
    assert bad_mode.status_code == 422

    ranked = post(url, "rankings", tokens["rita"], {"response_ids": [second, first]})
    assert ranked.status_code == 201 and store.list_rankings()[0].response_ids == [second, first]
    assert post(url, "rankings", tokens["rita"], {"response_ids": [first, first]}).json()["detail"].startswith(
        "response_ids")
    assert post(url, "rankings", tokens["rita"], {"response_ids": [first, 999]}).status_code == 422
    fixed = post(url, "corrections", tokens["alice"], {"response_id": second, "text": "2+2 is 4."})
    assert fixed.status_code == 201 and store.list_corrections()[0].username == "alice"
    missing = post(url, "corrections", tokens["alice"], {"response_id": 999, "text": "x"})
    assert missing.status_code == 422 and missing.json()["detail"].startswith("response_id")
    assert len(store.list_rankings()) == 1 and len(store.list_corrections()) == 1


def test_the_routes_are_in_the_openapi_schema(api):
    store, url, _, _ = api
    assert httpx.get(f"{url}/openapi.json").status_code == 404  # not served to anyone (issue 13, low finding)
    from types import SimpleNamespace

    from fastapi import FastAPI

    from webapp.ingest_api import ingest_routes

    paths = FastAPI(routes=ingest_routes(SimpleNamespace(store=store))).openapi()["paths"]
    assert {"/api/v1/conversations", "/api/v1/rankings", "/api/v1/corrections", "/api/v1/review/next"} <= set(paths)
