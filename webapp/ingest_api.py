"""Ingestion API for production apps and external annotation front ends, on the same server and tokens as
webapp/rest_api.py (same body cap, 4xx messages naming the field, nothing half-written):

    POST /api/v1/conversations {"messages": [{"role": "user", "content": "Hi"}], "answer": "Hello!",
                                "version": "prod-2024", "thumbs": 1, "likert": 4, "comment": "..."}
                               -> 201 {"prompt_id", "response_id", "rating_id"}   (feedback fields optional)
    POST /api/v1/rankings      {"response_ids": [13, 12, 14]}  (best first)           -> 201 {"id"}
    POST /api/v1/corrections   {"response_id": 12, "text": "A better answer"}         -> 201 {"id"}
    GET  /api/v1/review/next?mode=pairwise  -> 200 {"mode", "prompt": {"id", "messages"}, "responses": [{"id",
                               "text"}]} (blind: no versions) or 204 when the caller's queue is empty; answer it
                               with POST /ratings, /comparisons, /rankings or /corrections.

A conversation becomes a prompt (source `api`, the whole conversation kept), a response labelled with `version`
(any label: the production model need not be a Tuneloop version) and, with feedback fields, a rating — in one
transaction. Reviewer and admin tokens may write; feedback is stored under the token's user.
"""

import re
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Response
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.routing import BaseRoute

from feedback_db.vocab import REVIEW_MODES
from webapp import limits
from webapp.auth import REVIEWERS
from webapp.rest_api import PREFIX, capped_body, parse, token_user, unknown_response

MAX_MESSAGES = 64
VERSION_LABEL = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
Text = Annotated[str, Field(min_length=1, max_length=limits.MAX_REVIEW_TEXT_CHARS)]


class MessageIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    role: Literal["system", "user", "assistant"]
    content: Text


class ConversationIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    messages: list[MessageIn] = Field(min_length=1, max_length=MAX_MESSAGES)
    answer: Text
    version: str
    thumbs: Literal[0, 1] | None = None
    likert: int | None = Field(None, ge=1, le=5)
    comment: str = Field("", max_length=limits.MAX_REVIEW_TEXT_CHARS)

    @field_validator("messages")
    @classmethod
    def ends_with_user(cls, messages: list[MessageIn]) -> list[MessageIn]:
        if messages[-1].role != "user":
            raise ValueError("the last message must be the user's turn that `answer` replies to")
        return messages

    @field_validator("version")
    @classmethod
    def label(cls, version: str) -> str:
        if not VERSION_LABEL.fullmatch(version):
            raise ValueError("1-64 characters of letters, digits and . _ : -")
        return version


class RankingIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    response_ids: list[int] = Field(min_length=2, max_length=16)


class CorrectionIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    response_id: int
    text: Text


def ingest_routes(services) -> list[BaseRoute]:
    store = services.store
    router = APIRouter(prefix=PREFIX)

    @router.post("/conversations", status_code=201)
    def post_conversation(authorization: str | None = Header(None), body: bytes = Depends(capped_body)) -> dict:
        user = token_user(store, authorization, *REVIEWERS)
        c = parse(ConversationIn, body)
        messages = [m.model_dump() for m in c.messages]
        feedback = c.thumbs is not None or c.likert is not None or bool(c.comment.strip())
        if any(not m["content"].strip() for m in messages) or not c.answer.strip():
            raise HTTPException(422, "messages / answer: texts must not be blank")
        with store.transaction():
            prompt_id = store.add_prompt(messages[-1]["content"], source="api", messages=messages)
            response_id = store.add_response(prompt_id, c.answer, c.version, {"source": "api"})
            rating_id = store.add_rating(response_id, user.username, thumbs=c.thumbs, likert=c.likert,
                                         comment=c.comment) if feedback else None
        return {"prompt_id": prompt_id, "response_id": response_id, "rating_id": rating_id}

    @router.post("/rankings", status_code=201)
    def post_ranking(authorization: str | None = Header(None), body: bytes = Depends(capped_body)) -> dict:
        user = token_user(store, authorization, *REVIEWERS)
        ranking = parse(RankingIn, body)
        try:
            return {"id": store.add_ranking(ranking.response_ids, user.username)}
        except ValueError as exc:
            raise HTTPException(422, f"response_ids: {exc}") from None
        except KeyError as exc:
            raise HTTPException(422, f"response_ids: {exc.args[0]}") from None

    @router.post("/corrections", status_code=201)
    def post_correction(authorization: str | None = Header(None), body: bytes = Depends(capped_body)) -> dict:
        user = token_user(store, authorization, *REVIEWERS)
        correction = parse(CorrectionIn, body)
        try:
            return {"id": store.add_correction(correction.response_id, correction.text, user.username)}
        except ValueError as exc:
            raise HTTPException(422, f"text: {exc}") from None
        except KeyError as exc:
            raise unknown_response(exc, {"response_id": correction.response_id}) from None

    @router.get("/review/next", response_model=None)
    def review_next(mode: Literal[REVIEW_MODES] = Query("pairwise"),
                    authorization: str | None = Header(None)) -> dict | Response:
        user = token_user(store, authorization, *REVIEWERS)
        item = store.next_item(user.username, mode, services.annotators_per_item)
        if item is None:
            return Response(status_code=204)
        return {"mode": mode, "prompt": {"id": item.prompt.id, "messages": item.prompt.as_messages()},
                "responses": [{"id": r.id, "text": r.text} for r in item.responses]}

    return router.routes
