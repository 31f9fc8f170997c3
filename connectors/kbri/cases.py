"""`POST /v1/cases`: an office files a consultation case (question, complaint, claim inquiry, data correction).

The body is validated by services/domain/cases.py, encoded as Avro `sinergi.Case` (Confluent wire format)
and produced to `kbri.cases.v1` (key = case_event_id); the answer is 202 only after Kafka acknowledged.
BPJS answers on `core.case-updates.v1`, and the answer reaches the office's own feed as `case.updated`.

Idempotency by the office's `case_id` (in the body; no X-Request-Id): case_event_id = UUIDv5("case",
office, case_id), so filing the same case again produces the same event id and downstream deduplicates.
No server state is kept here. A case_id is the office's: another office's identical case_id is another case.

A `customer_no`, when given, must be one of the calling office's own members according to the office book;
another office's member is refused exactly like an unknown one (404 MEMBER_NOT_FOUND).

Order of checks: office key (401) → Content-Type (415) → body size (413) → strict JSON (400) → case rules
(422) → the member (503 while the book loads, 404) → the codec (503 until the registry answered) → Kafka
(503 BROKER_UNAVAILABLE) → 202. The case text is never logged: it may hold whatever the worker told the office.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from connectors.http_common import (
    INTERNAL_ERROR,
    RETRY_AFTER_S,
    ErrorBody,
    HttpProblem,
    RequestObservation,
    broker_unavailable_problem,
    iso_utc,
    parse_json_object,
    problem_response,
    read_body,
    require_json_content_type,
    utc_now_ms,
    where_failed,
)
from connectors.kafka_edge import BrokerUnavailable
from connectors.kbri.context import KbriContext, RecordEncoder
from connectors.kbri.inquiry import not_found
from connectors.kbri.office_book import not_ready_problem
from services.catalogue import KBRI_CASES
from services.config import Settings
from services.domain.cases import case_record, validate_case
from services.domain.errors import Rejected
from services.logs import event

log = logging.getLogger(__name__)

API = "kbri"
ENDPOINT = "cases"
PATH = "/v1/cases"
CASE_SCHEMA = "sinergi.Case"
CASES_UNAVAILABLE = "CASES_UNAVAILABLE"

H_OFFICE = "sinergi-office"
H_EVENT_ID = "sinergi-event-id"
H_RECEIVED_AT = "sinergi-received-at"


class AttachmentIn(BaseModel):
    ref: str = Field(description="An https URL or your document id ([A-Za-z0-9][A-Za-z0-9._/-]*), <= 512")
    media_type: str | None = Field(None, description="e.g. application/pdf")


class CaseRequestBody(BaseModel):
    """Body of POST /v1/cases (documentation; services.domain.cases is the validator)."""

    case_id: str = Field(description="Your case id, 1-64 of [A-Za-z0-9._-]; the idempotency key")
    category: Literal["QUESTION", "COMPLAINT", "CLAIM_INQUIRY", "DATA_CORRECTION", "OTHER"]
    text: str = Field(description="1-4000 characters; no control characters except tab and line breaks")
    attachments: list[AttachmentIn] = Field(default_factory=list, description="At most 10")
    customer_no: str | None = Field(None, description="The member the case is about: one of YOUR members")


class CaseAccepted(BaseModel):
    case_event_id: str = Field(description="Deterministic: same office + case_id, same id")
    status: Literal["RECEIVED"] = "RECEIVED"


REQUEST_BODIES: dict[tuple[str, str], type[BaseModel]] = {(PATH, "post"): CaseRequestBody}

ERRORS: dict[int | str, dict[str, Any]] = {
    400: {
        "model": ErrorBody,
        "description": "Malformed request: INVALID_JSON, INVALID_UTF8, NON_FINITE_NUMBER, DUPLICATE_KEY, "
        "JSON_TOO_DEEP, BODY_NOT_OBJECT",
    },
    401: {"model": ErrorBody, "description": "UNAUTHORIZED: missing or unknown office key"},
    404: {"model": ErrorBody, "description": "MEMBER_NOT_FOUND: customer_no is not one of your members"},
    413: {"model": ErrorBody, "description": "BODY_TOO_LARGE"},
    415: {"model": ErrorBody, "description": "UNSUPPORTED_MEDIA_TYPE"},
    422: {
        "model": ErrorBody,
        "description": "A case rule refused it (reason + field): MISSING_FIELD, INVALID_FIELD, CASE_ID_FORMAT, "
        "CASE_CATEGORY, CASE_TEXT, ATTACHMENTS, ATTACHMENT_REF, MEDIA_TYPE",
    },
    500: {"model": ErrorBody, "description": "INTERNAL_ERROR"},
    503: {
        "model": ErrorBody,
        "description": "BROKER_UNAVAILABLE, READ_MODEL_NOT_READY, CASES_UNAVAILABLE: not stored; retry after "
        "Retry-After seconds with the same case_id",
    },
}


def _cases_unavailable() -> HttpProblem:
    return HttpProblem(
        503,
        CASES_UNAVAILABLE,
        "case intake is starting (schema registry not reached yet); retry later",
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )


def router(ctx: KbriContext) -> APIRouter:
    api = APIRouter()

    async def file_case(request: Request, obs: RequestObservation) -> CaseAccepted:
        office = ctx.auth.office(request, obs)
        require_json_content_type(request)
        raw = await read_body(request, ctx.settings.max_body_bytes)
        case = validate_case(parse_json_object(raw))
        if case.customer_no is not None:
            if not ctx.book.ready:
                raise not_ready_problem()
            if ctx.book.member(office, case.customer_no) is None:
                raise not_found()
        codec = ctx.codec
        if codec is None:
            raise _cases_unavailable()
        received_at = utc_now_ms()
        record = case_record(office, case, received_at)
        value = codec.encode(CASE_SCHEMA, record)
        headers = [
            (H_OFFICE, office.encode()),
            (H_EVENT_ID, record.case_event_id.encode()),
            (H_RECEIVED_AT, iso_utc(received_at).encode()),
        ]
        await ctx.producer.send(KBRI_CASES.name, record.case_event_id.encode(), value, headers)
        return CaseAccepted(case_event_id=record.case_event_id)

    @api.post(
        PATH,
        status_code=202,
        response_model=CaseAccepted,
        responses=ERRORS,
        summary="File a consultation case for BPJS; 202 once it is durably stored",
    )
    async def post_case(
        request: Request,
        authorization: Annotated[str | None, Header(description="Bearer <office API key>")] = None,
    ) -> Response:
        obs = RequestObservation(API, ENDPOINT)
        try:
            accepted = await file_case(request, obs)
        except Rejected as rejected:
            problem = HttpProblem(422, rejected.reason, rejected.message, field=rejected.field)
        except BrokerUnavailable as exc:
            event(log, "case not stored", office=obs.partner, reason=exc.reason)
            problem = broker_unavailable_problem()
        except HttpProblem as http_problem:
            problem = http_problem
        except Exception as exc:
            log.error("case intake failed: %s", where_failed(exc))
            problem = HttpProblem(500, INTERNAL_ERROR, "internal error")
        else:
            obs.done(202)
            event(log, "case accepted", office=obs.partner, case_event_id=accepted.case_event_id)
            return JSONResponse(accepted.model_dump(mode="json"), status_code=202)
        obs.done(problem.status, problem.reason)
        if problem.status < 500:
            event(log, "case refused", office=obs.partner, reason=problem.reason, field=problem.field or "")
        return problem_response(problem)

    return api


# --- the codec, built beside the server --------------------------------------------------------------------
class CodecLoader:
    """Background task: builds the registry-backed codec off the event loop, retrying with backoff, and hands
    it to the context. The API serves enrollments meanwhile; only case intake waits (503 CASES_UNAVAILABLE)."""

    def __init__(
        self,
        settings: Settings,
        ctx: KbriContext,
        *,
        build: Callable[[Settings], RecordEncoder] | None = None,
    ) -> None:
        self._settings = settings
        self._ctx = ctx
        self._build = build or _build_codec
        self._task: asyncio.Task[None] | None = None
        self.attempts = 0

    async def start(self) -> None:
        if self._task is None and self._ctx.codec is None:
            self._task = asyncio.create_task(self._run(), name="kbri-codec-loader")

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def ready(self) -> bool:
        return self._ctx.codec is not None

    async def _run(self) -> None:
        delay = 0.5
        while True:
            self.attempts += 1
            try:
                self._ctx.codec = await asyncio.to_thread(self._build, self._settings)
            except Exception as exc:  # the registry may come up after us
                log.warning("case codec not built, retrying in %.1fs: %s", delay, where_failed(exc))
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._settings.read_model_retry_max_s)
                continue
            event(log, "case codec ready", attempts=self.attempts)
            return


def _build_codec(settings: Settings) -> RecordEncoder:
    from services.codec import build_codec

    return build_codec(settings)
