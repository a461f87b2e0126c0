"""REST API tests against the real app (Gradio + the /api/v1 routes on one server) and the real store.

Tokens decide who writes: the stored username is the token's user, viewers get 403, and a missing, unknown or
revoked token or a disabled user gets 401. Bad bodies get a 4xx naming the field and write nothing.
"""

import json
from concurrent.futures import ThreadPoolExecutor

import gradio as gr
import httpx
import pytest

from tests.webapp.conftest import call, make_services
from tests.webapp.test_api import serve, session
from webapp import limits


@pytest.fixture()
def api(store, tmp_path):
    """(store, url, {username: token}, [response ids]): the app launched as app.py does, two answers to a prompt."""
    services = make_services(store, tmp_path)
    prompt = store.add_prompt("What is 2+2?")
    responses = [store.add_response(prompt, "4", "base"), store.add_response(prompt, "5", "v1-sft")]
    tokens = {username: store.create_api_token(username, "test") for username in ("alice", "rita", "vic")}
    with serve(services) as url:
        yield store, url, tokens, responses


def post(url: str, path: str, token: str | None, body) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(f"{url}/api/v1/{path}", content=content, headers={**headers, "Content-Type": "application/json"})


def feedback_rows(store) -> tuple[int, int]:
    return len(store.list_ratings()), len(store.list_comparisons())


def test_rating_and_comparison_are_stored_under_the_tokens_user(api):
    store, url, tokens, (first, second) = api
    rated = post(url, "ratings", tokens["rita"], {"response_id": first, "thumbs": 1, "likert": 4, "comment": "ok"})
    assert rated.status_code == 201, rated.text
    (rating,) = store.list_ratings()
    assert (rating.id, rating.username, rating.thumbs, rating.likert, rating.comment) == (
        rated.json()["id"], "rita", 1, 4, "ok")
    compared = post(url, "comparisons", tokens["alice"], {"response_a": first, "response_b": second, "winner": "b"})
    assert compared.status_code == 201, compared.text
    (comparison,) = store.list_comparisons()
    assert (comparison.id, comparison.username, comparison.winner, comparison.version_b) == (
        compared.json()["id"], "alice", "b", "v1-sft")
    me = httpx.get(f"{url}/api/v1/me", headers={"Authorization": f"Bearer {tokens['vic']}"})
    assert me.json() == {"username": "vic", "role": "viewer"}


def test_a_username_in_the_body_is_refused_not_used(api):
    store, url, tokens, (first, _) = api
    response = post(url, "ratings", tokens["rita"], {"response_id": first, "thumbs": 1, "username": "alice"})
    assert response.status_code == 422 and response.json()["detail"].startswith("username:")
    assert feedback_rows(store) == (0, 0)


def test_who_may_write(api):
    store, url, tokens, (first, _) = api
    body = {"response_id": first, "thumbs": 0}
    revoked = store.create_api_token("rita", "old")
    store.revoke_api_token(store.list_api_tokens("rita")[-1].id)
    store.create_user("dora", "long-enough", "reviewer")
    disabled = store.create_api_token("dora")
    store.set_disabled("dora", True)
    for token in (None, "tl_not-a-real-token", revoked, disabled):
        response = post(url, "ratings", token, body)
        assert response.status_code == 401, (token, response.text)
        assert response.headers["www-authenticate"] == "Bearer"
    assert httpx.post(f"{url}/api/v1/ratings", json=body, headers={"Authorization": tokens["rita"]}).status_code == 401
    viewer = post(url, "ratings", tokens["vic"], body)
    assert viewer.status_code == 403 and "reviewer" in viewer.json()["detail"]
    assert feedback_rows(store) == (0, 0)
    assert post(url, "ratings", tokens["rita"], body).status_code == 201


def test_a_browser_login_cookie_is_not_an_api_token(api):
    store, url, _, (first, _) = api
    client = session(url, "rita")
    assert client.post("/api/v1/ratings", json={"response_id": first, "thumbs": 1}).status_code == 401
    assert feedback_rows(store) == (0, 0)


BAD_RATINGS = [  # id, body, status, the detail starts with
    ("not-json", b'{"response_id": 1,', 400, "body: not valid JSON"),
    ("not-an-object", [1, 2], 422, "body:"),
    ("missing-id", {"thumbs": 1}, 422, "response_id: Field required"),
    ("string-id", {"response_id": "1", "thumbs": 1}, 422, "response_id:"),
    ("float-likert", {"response_id": 1, "likert": 4.5}, 422, "likert:"),
    ("likert-out-of-range", {"response_id": 1, "likert": 7}, 422, "likert must be 1..5"),
    ("thumbs-2", {"response_id": 1, "thumbs": 2}, 422, "thumbs must be 1 (up) or 0 (down)"),
    ("empty-rating", {"response_id": 1}, 422, "a rating needs thumbs, likert or a comment"),
    ("unknown-response", {"response_id": 999, "thumbs": 1}, 422, "response_id: no response 999"),
    ("comment-too-long", {"response_id": 1, "comment": "x" * (limits.MAX_REVIEW_TEXT_CHARS + 1)}, 422, "comment:"),
]


@pytest.mark.parametrize("body, status, detail", [b[1:] for b in BAD_RATINGS], ids=[b[0] for b in BAD_RATINGS])
def test_bad_ratings_name_the_field_and_write_nothing(api, body, status, detail):
    store, url, tokens, _ = api
    response = post(url, "ratings", tokens["rita"], body)
    assert response.status_code == status, response.text
    assert response.json()["detail"].startswith(detail), response.json()
    assert feedback_rows(store) == (0, 0)


def test_bad_comparisons_name_the_field_and_write_nothing(api):
    store, url, tokens, (first, second) = api
    cases = [({"response_a": first, "response_b": 999, "winner": "a"}, "response_b: no response 999"),
             ({"response_a": first, "response_b": second, "winner": "left"}, "winner:"),
             ({"response_a": first, "response_b": first, "winner": "a"}, "a comparison needs two different")]
    for body, detail in cases:
        response = post(url, "comparisons", tokens["rita"], body)
        assert response.status_code == 422 and response.json()["detail"].startswith(detail), response.text
    assert feedback_rows(store) == (0, 0)


def test_an_oversized_body_is_refused_before_it_is_read(api):
    store, url, tokens, (first, _) = api
    huge = json.dumps({"response_id": first, "comment": "x" * limits.MAX_API_BODY_BYTES}).encode()
    assert post(url, "ratings", tokens["rita"], huge).status_code == 413

    def chunks():  # no Content-Length: the size is counted while reading
        yield huge[:1000]
        yield huge[1000:]

    headers = {"Authorization": f"Bearer {tokens['rita']}"}
    streamed = httpx.post(f"{url}/api/v1/ratings", content=chunks(), headers=headers)
    assert streamed.status_code == 413
    assert feedback_rows(store) == (0, 0)


def test_concurrent_ratings_are_each_stored_exactly_once(api):
    store, url, tokens, (first, _) = api
    reviewers = [f"rev{i:02d}" for i in range(16)]
    for username in reviewers:
        store.create_user(username, "long-enough", "reviewer")
    user_tokens = {username: store.create_api_token(username) for username in reviewers}

    def rate(username: str) -> list[int]:
        headers = {"Authorization": f"Bearer {user_tokens[username]}"}
        with httpx.Client(base_url=url, headers=headers) as client:
            return [client.post("/api/v1/ratings", json={"response_id": first, "likert": 1 + i % 5}).json()["id"]
                    for i in range(20)]

    with ThreadPoolExecutor(len(reviewers)) as pool:
        acked = dict(zip(reviewers, pool.map(rate, reviewers), strict=True))
    stored = {r.id: r.username for r in store.list_ratings()}
    assert len(stored) == 16 * 20
    assert stored == {rating_id: username for username, ids in acked.items() for rating_id in ids}


def test_admin_tab_creates_and_revokes_tokens(demo, store):
    token, table = call(demo, "tokens_create", "rita", "ci", user="alice")
    assert store.user_for_token(token).username == "rita"
    assert token not in table.to_string() and list(table["label"]) == ["ci"]
    with pytest.raises(gr.Error, match="Permission denied"):
        call(demo, "tokens_create", "rita", "mine", user="rita")
    with pytest.raises(gr.Error, match="no API token with id 99"):
        call(demo, "tokens_revoke", 99, user="alice")
    call(demo, "tokens_revoke", int(table["id"][0]), user="alice")
    assert store.user_for_token(token) is None
    assert [e.action for e in store.list_audit(2)] == ["revoke_api_token", "create_api_token"]
