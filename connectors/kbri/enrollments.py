"""`POST /v1/enrollments`: one enrollment from an office.

The endpoint validates synchronously with the domain rules (so an office learns about a bad request at
once), then produces the EXACT raw body to `kbri.enrollments.raw` and answers 202 only after Kafka
acknowledged. The normalizer stage re-validates the raw record with the same function and the same
intake headers (received-at, office, request id), so both reach the same verdict. Validation and produce
are connectors/intake.py's, shared with the bank API's enrollments; this module is the office's side.

Idempotency: the event id is UUIDv5(office, X-Request-Id). A repeat is produced and accepted again with
the same event id; consumers deduplicate by event id. No server state is kept here.

Order of checks: office key (401) → X-Request-Id (400) → Content-Type (415) → body size (413) →
strict JSON (400) → domain rules (422) → Kafka (503 when not acknowledged) → 202.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request, Response
from fastapi.responses import JSONResponse

from connectors.http_common import (
    INTERNAL_ERROR,
    ErrorBody,
    HttpProblem,
    RequestObservation,
    broker_unavailable_problem,
    parse_json_object,
    problem_response,
    read_body,
    require_json_content_type,
    where_failed,
)
from connectors.intake import OFFICE, Submitter, check_request_id, count
from connectors.kafka_edge import BrokerUnavailable
from connectors.kbri.context import KbriContext
from connectors.kbri.models import EnrollmentAccepted, EnrollmentRequest
from services.domain.errors import Rejected
from services.logs import event

log = logging.getLogger(__name__)

API = "kbri"
ENDPOINT = "enrollments"
PATH = "/v1/enrollments"

REQUEST_BODIES = {(PATH, "post"): EnrollmentRequest}

ERRORS: dict[int | str, dict[str, Any]] = {
    400: {
        "model": ErrorBody,
        "description": "Malformed request: REQUEST_ID_MISSING, REQUEST_ID_INVALID, INVALID_JSON, "
        "INVALID_UTF8, NON_FINITE_NUMBER, DUPLICATE_KEY, JSON_TOO_DEEP, BODY_NOT_OBJECT",
    },
    401: {"model": ErrorBody, "description": "UNAUTHORIZED: missing or unknown office key"},
    413: {"model": ErrorBody, "description": "BODY_TOO_LARGE"},
    415: {"model": ErrorBody, "description": "UNSUPPORTED_MEDIA_TYPE"},
    422: {
        "model": ErrorBody,
        "description": "A domain rule refused the enrollment (reason + field), e.g. MISSING_FIELD, "
        "INVALID_FIELD, UNKNOWN_OFFICE, NIK_FORMAT, NIK_PROVINCE, NIK_DATE, NIK_SERIAL, UNDER_AGE, "
        "PASSPORT_FORMAT, CONTRACT_MONTHS, PROGRAMS, JHT_AMOUNT, REGISTRATION_TOO_EARLY, NO_TARIFF",
    },
    500: {"model": ErrorBody, "description": "INTERNAL_ERROR"},
    503: {
        "model": ErrorBody,
        "description": "BROKER_UNAVAILABLE: not stored; retry after Retry-After seconds with the same X-Request-Id",
    },
}


def refuse(obs: RequestObservation, problem: HttpProblem, what: str = "enrollment refused") -> Response:
    """Count the refusal once, log its reason (never a value) and build the {reason, field, message} body."""
    obs.done(problem.status, problem.reason)
    if problem.status < 500:
        event(log, what, office=obs.partner, reason=problem.reason, field=problem.field or "")
    return problem_response(problem)


def router(ctx: KbriContext) -> APIRouter:
    api = APIRouter()

    async def enroll(request: Request, obs: RequestObservation, x_request_id: str | None) -> EnrollmentAccepted:
        office = ctx.auth.office(request, obs)
        request_id = check_request_id(x_request_id)
        require_json_content_type(request)
        raw = await read_body(request, ctx.settings.max_body_bytes)
        body = parse_json_object(raw)
        return await ctx.intake.submit(
            raw, body, submitter=Submitter(OFFICE, office), office=office, request_id=request_id
        )

    @api.post(
        PATH,
        status_code=202,
        response_model=EnrollmentAccepted,
        responses=ERRORS,
        summary="Submit a PMI enrollment; 202 once it is durably stored",
    )
    async def post_enrollment(
        request: Request,
        authorization: Annotated[str | None, Header(description="Bearer <office API key>")] = None,
        x_request_id: Annotated[
            str | None, Header(description="The office's request id, 1-64 of [A-Za-z0-9._-]; idempotency key")
        ] = None,
    ) -> Response:
        obs = RequestObservation(API, ENDPOINT)
        try:
            accepted = await enroll(request, obs, x_request_id)
        except HttpProblem as problem:
            count(OFFICE, obs.partner, problem.reason)
            return refuse(obs, problem)
        except Rejected as rejected:
            count(OFFICE, obs.partner, rejected.reason)
            return refuse(obs, HttpProblem(422, rejected.reason, rejected.message, field=rejected.field))
        except BrokerUnavailable as exc:
            event(log, "enrollment not stored", office=obs.partner, reason=exc.reason)
            unavailable = broker_unavailable_problem()
            count(OFFICE, obs.partner, unavailable.reason)
            return refuse(obs, unavailable)
        except Exception as exc:
            log.error("enrollment intake failed: %s", where_failed(exc))
            failure = HttpProblem(500, INTERNAL_ERROR, "internal error")
            count(OFFICE, obs.partner, failure.reason)
            return refuse(obs, failure)
        obs.done(202)
        count(OFFICE, obs.partner, None)
        event(
            log,
            "enrollment accepted",
            office=obs.partner,
            event_id=accepted.event_id,
            warnings=",".join(accepted.warnings),
        )
        return JSONResponse(accepted.model_dump(mode="json"), status_code=202)

    return api
