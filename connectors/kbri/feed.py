"""`GET /v1/updates?after=<cursor>&limit=<1..500>`: the pull feed of the calling office's updates.

Answered from the office book (connectors/kbri/office_book.py): the office's own topic
`kbri.updates.<office>.v1`, in its order. Nothing of another office can be in it. Each item is the
OfficeUpdate JSON document, the same as on the topic and in a webhook body.

    200  {"updates": [OfficeUpdate, ...], "next": "<cursor>", "has_more": bool}
    400  CURSOR_INVALID (not a cursor this API issued), LIMIT_INVALID
    401  UNAUTHORIZED
    410  CURSOR_EXPIRED: updates after the cursor were dropped (the book holds the newest
         Settings.office_feed_max_updates per office); resync through GET /v1/members/{customer_no}, then
         continue with GET /v1/updates without `after` (from the oldest update held)
    503  READ_MODEL_NOT_READY + Retry-After: the book is still loading; never a false empty page

Delivery is at-least-once: store `next` only after processing the page; after a crash the same updates
come again with the same update_id, and per subject only a higher `sequence` is news. Without `after` the
feed starts at the oldest update held. `has_more` says another page is ready now.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Header, Query, Request, Response
from pydantic import BaseModel, Field

from connectors.http_common import (
    INTERNAL_ERROR,
    ErrorBody,
    HttpProblem,
    RequestObservation,
    problem_response,
    where_failed,
)
from connectors.kbri.context import KbriContext
from connectors.kbri.office_book import CursorExpired, CursorInvalid, decode_cursor, encode_cursor, not_ready_problem
from services.domain.office_updates import OfficeUpdate
from services.logs import event

log = logging.getLogger(__name__)

API = "kbri"
ENDPOINT = "updates_feed"
PATH = "/v1/updates"
CURSOR_INVALID = "CURSOR_INVALID"
CURSOR_EXPIRED = "CURSOR_EXPIRED"
LIMIT_INVALID = "LIMIT_INVALID"
LIMIT_DEFAULT = 100
LIMIT_MAX = 500

REQUEST_BODIES: dict[tuple[str, str], type[BaseModel]] = {}

ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "CURSOR_INVALID, LIMIT_INVALID"},
    401: {"model": ErrorBody, "description": "UNAUTHORIZED: missing or unknown office key"},
    410: {
        "model": ErrorBody,
        "description": "CURSOR_EXPIRED: updates after this cursor are no longer held; resync your members "
        "through GET /v1/members/{customer_no}, then read GET /v1/updates without `after`",
    },
    500: {"model": ErrorBody, "description": "INTERNAL_ERROR"},
    503: {"model": ErrorBody, "description": "READ_MODEL_NOT_READY: retry after Retry-After seconds"},
}


class FeedPageOut(BaseModel):
    updates: list[OfficeUpdate] = Field(description="The office's updates in order, oldest first")
    next: str = Field(description="Opaque cursor: pass it as `after` once this page is processed")
    has_more: bool = Field(description="True when another page is ready now")


def _limit(value: str | None) -> int:
    if value is None:
        return LIMIT_DEFAULT
    if not (value.isascii() and value.isdigit()) or not 1 <= int(value) <= LIMIT_MAX:
        raise HttpProblem(400, LIMIT_INVALID, f"limit must be an integer 1-{LIMIT_MAX}", field="limit")
    return int(value)


def _after(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return decode_cursor(value)
    except CursorInvalid:
        raise HttpProblem(
            400, CURSOR_INVALID, "after must be a `next` cursor returned by this feed", field="after"
        ) from None


def router(ctx: KbriContext) -> APIRouter:
    api = APIRouter()

    def read(request: Request, obs: RequestObservation, after: str | None, limit: str | None) -> bytes:
        office = ctx.auth.office(request, obs)
        offset, size = _after(after), _limit(limit)
        if not ctx.book.ready:
            raise not_ready_problem()
        try:
            page = ctx.book.page(office, offset, size)
        except CursorExpired:
            raise HttpProblem(
                410,
                CURSOR_EXPIRED,
                "updates after this cursor are no longer held: re-read your members through "
                "GET /v1/members/{customer_no}, then continue with GET /v1/updates without after",
                field="after",
            ) from None
        # The book holds each update as its JSON document (FeedPageOut's items): spliced in, not re-serialized.
        updates = [orjson.Fragment(document) for document in page.updates]
        return orjson.dumps({"updates": updates, "next": encode_cursor(page.next), "has_more": page.has_more})

    @api.get(
        PATH,
        response_model=FeedPageOut,
        responses=ERRORS,
        summary="The calling office's updates (member status, rejections, case answers), from a cursor",
    )
    async def get_updates(
        request: Request,
        # Documented, not enforced by FastAPI: a mismatch gets this API's own 400 body.
        after: Annotated[
            str | None,
            Query(
                description="The `next` cursor of the previous page; omit to start at the oldest update held",
                json_schema_extra={"pattern": "^[A-Za-z0-9_-]{1,40}$"},
            ),
        ] = None,
        limit: Annotated[
            str | None,
            Query(
                description=f"Page size 1-{LIMIT_MAX}, default {LIMIT_DEFAULT}",
                json_schema_extra={"pattern": "^[1-9][0-9]{0,2}$"},
            ),
        ] = None,
        authorization: Annotated[str | None, Header(description="Bearer <office API key>")] = None,
    ) -> Response:
        obs = RequestObservation(API, ENDPOINT)
        try:
            page = read(request, obs, after, limit)
        except HttpProblem as problem:
            obs.done(problem.status, problem.reason)
            if problem.status < 500:
                event(log, "feed read refused", office=obs.partner, reason=problem.reason)
            return problem_response(problem)
        except Exception as exc:
            log.error("feed read failed: %s", where_failed(exc))
            obs.done(500)
            return problem_response(HttpProblem(500, INTERNAL_ERROR, "internal error"))
        obs.done(200)
        return Response(page, status_code=200, media_type="application/json")

    return api
