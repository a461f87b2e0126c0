"""The JSON REST API for feedback, served by the same server as the Gradio app: integrations and production apps
push ratings and comparisons without the UI.

    POST /api/v1/ratings      {"response_id": 12, "thumbs": 1, "likert": 4, "comment": "..."}  -> 201 {"id": 7}
    POST /api/v1/comparisons  {"response_a": 12, "response_b": 13, "winner": "a"}             -> 201 {"id": 3}
    GET  /api/v1/me                                                                            -> {"username", "role"}

Every request carries `Authorization: Bearer tl_...` (`python app.py create-token --username alice`). Reviewers and
admins may write feedback, viewers only read /me; a missing, unknown or revoked token and a disabled user get 401.
Feedback is stored under the token's user, never a name from the body. Errors are `{"detail": "<field>: <why>"}`
with a 4xx status, and nothing is written. Handlers are sync `def`s: FastAPI runs them in its threadpool, so SQLite
never blocks the event loop (each worker thread has its own connection). webapp/server.py puts `rest_routes` in
the app's FastAPI server next to the mounted Gradio UI, so login page, queue and these routes share one server.
"""

from typing import Annotated, Literal, TypeVar

from fastapi import APIRouter, Depends, Header, HTTPException, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.routing import BaseRoute

from feedback_db.models import User
from feedback_db.store import MAX_ID
from feedback_db.vocab import WINNERS
from webapp import limits
from webapp.auth import EVERYONE, REVIEWERS

PREFIX = "/api/v1"
M = TypeVar("M", bound=BaseModel)


Id = Annotated[int, Field(ge=1, le=MAX_ID)]  # beyond SQLite's integers there is no row: 422, not a 500


class RatingIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    response_id: Id
    thumbs: int | None = None  # 1 = up, 0 = down
    likert: int | None = None  # 1..5
    comment: str = Field("", max_length=limits.MAX_REVIEW_TEXT_CHARS)


class ComparisonIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    response_a: Id
    response_b: Id
    winner: Literal[WINNERS]


async def capped_body(request: Request) -> bytes:
    """The raw body, refused with 413 past `limits.MAX_API_BODY_BYTES` before more of it is read."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limits.MAX_API_BODY_BYTES:
        raise HTTPException(413, f"body: over the limit of {limits.MAX_API_BODY_BYTES:,} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limits.MAX_API_BODY_BYTES:
            raise HTTPException(413, f"body: over the limit of {limits.MAX_API_BODY_BYTES:,} bytes")
    return bytes(body)


def parse(model: type[M], body: bytes) -> M:
    """The body as `model`; 400 for malformed JSON, 422 naming the first wrong field otherwise."""
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        error = exc.errors()[0]
        if error["type"] == "json_invalid":
            raise HTTPException(400, f"body: not valid JSON ({error['ctx']['error']})") from None
        field = ".".join(str(part) for part in error["loc"]) or "body"
        raise HTTPException(422, f"{field}: {error['msg']}") from None


def token_user(store, authorization: str | None, *roles: str) -> User:
    """The token's user if their role is one of `roles`: 401 without a valid token, 403 for other roles."""
    scheme, _, token = (authorization or "").partition(" ")
    user = store.user_for_token(token.strip()) if scheme.lower() == "bearer" and token.strip() else None
    if user is None:
        raise HTTPException(401, "Authorization: a valid API token is required (Authorization: Bearer tl_...)",
                            headers={"WWW-Authenticate": "Bearer"})
    if user.role not in roles:
        raise HTTPException(403, f"Permission denied: {' or '.join(roles)} role required; "
                                 f"{user.username!r} is a {user.role}")
    return user


def unknown_response(exc: KeyError, fields: dict[str, int]) -> HTTPException:
    """The store's KeyError for a missing response, as a 422 naming the body field that referenced it."""
    message = exc.args[0]
    named = [name for name, value in fields.items() if message == f"no response {value}"]
    return HTTPException(422, f"{named[0] if named else 'body'}: {message}")


def rest_routes(services) -> list[BaseRoute]:
    """The API's routes, for `FastAPI(routes=...)` (Gradio's `launch(app_kwargs=...)`)."""
    store = services.store
    router = APIRouter(prefix=PREFIX)

    @router.get("/me")
    def me(authorization: str | None = Header(None)) -> dict:
        user = token_user(store, authorization, *EVERYONE)
        return {"username": user.username, "role": user.role}

    @router.post("/ratings", status_code=201)
    def post_rating(authorization: str | None = Header(None), body: bytes = Depends(capped_body)) -> dict:
        user = token_user(store, authorization, *REVIEWERS)
        rating = parse(RatingIn, body)
        try:
            rating_id = store.add_rating(rating.response_id, user.username, thumbs=rating.thumbs,
                                         likert=rating.likert, comment=rating.comment, source="api")
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None
        except KeyError as exc:
            raise unknown_response(exc, {"response_id": rating.response_id}) from None
        return {"id": rating_id}

    @router.post("/comparisons", status_code=201)
    def post_comparison(authorization: str | None = Header(None), body: bytes = Depends(capped_body)) -> dict:
        user = token_user(store, authorization, *REVIEWERS)
        comparison = parse(ComparisonIn, body)
        try:
            comparison_id = store.add_comparison(comparison.response_a, comparison.response_b, comparison.winner,
                                                 user.username, source="api")
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None
        except KeyError as exc:
            fields = {"response_a": comparison.response_a, "response_b": comparison.response_b}
            raise unknown_response(exc, fields) from None
        return {"id": comparison_id}

    return router.routes
