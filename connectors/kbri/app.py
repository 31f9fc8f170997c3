"""KBRI/KJRI/KRI/KDEI enrollment intake: `POST /v1/enrollments`.

The endpoint validates synchronously with the domain rules (so an office learns about a bad request at
once), then produces the EXACT raw body to `kbri.enrollments.raw` and answers 202 only after Kafka
acknowledged. The normalizer stage re-validates the raw record with the same function and the same
intake headers (received-at, office, request id), so both reach the same verdict. Validation and produce
are connectors/intake.py's, shared with the bank API's enrollments; this module is the office's side.

Idempotency: the event id is UUIDv5(office, X-Request-Id). A repeat is produced and accepted again with
the same event id; consumers deduplicate by event id. No server state is kept here.

Order of checks: bearer token (401) → X-Request-Id (400) → Content-Type (415) → body size (413) →
strict JSON (400) → domain rules (422) → Kafka (503 when not acknowledged) → 202.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import FastAPI, Header, Request, Response
from fastapi.responses import JSONResponse

from connectors.http_common import (
    INTERNAL_ERROR,
    UNAUTHORIZED,
    ErrorBody,
    HttpProblem,
    RequestObservation,
    authenticate,
    bearer_token,
    broker_unavailable_problem,
    document_request_bodies,
    parse_json_object,
    problem_response,
    producer_lifespan,
    read_body,
    require_json_content_type,
    where_failed,
)
from connectors.intake import (
    CHANNEL_OFFICE,
    H_CHANNEL,
    H_EVENT_ID,
    H_OFFICE,
    H_RECEIVED_AT,
    H_REQUEST_ID,
    OFFICE,
    REQUEST_ID_INVALID,
    REQUEST_ID_MISSING,
    EnrollmentIntake,
    Submitter,
    check_request_id,
    count,
)
from connectors.kafka_edge import BrokerUnavailable, EdgeSender
from connectors.kbri.models import EnrollmentAccepted, EnrollmentRequest, Health
from services.config import Settings
from services.domain.errors import Rejected
from services.logs import event

# The header names and reason codes stay importable from here (services.bench builds intake records).
__all__ = [
    "CHANNEL",
    "H_CHANNEL",
    "H_EVENT_ID",
    "H_OFFICE",
    "H_RECEIVED_AT",
    "H_REQUEST_ID",
    "REQUEST_ID_INVALID",
    "REQUEST_ID_MISSING",
    "create_kbri_app",
]

log = logging.getLogger(__name__)

API = "kbri"
ENDPOINT = "enrollments"
CHANNEL = CHANNEL_OFFICE


class _OfficeIntake:
    """What is the KBRI API's own (the office's bearer token, its headers); the rest is connectors.intake."""

    def __init__(self, settings: Settings, producer: EdgeSender) -> None:
        self.settings = settings
        self.intake = EnrollmentIntake(settings, producer)

    async def enroll(
        self, request: Request, obs: RequestObservation, authorization: str | None, x_request_id: str | None
    ) -> EnrollmentAccepted:
        office = authenticate(bearer_token(authorization), self.settings.office_tokens)
        if office is None:
            raise HttpProblem(
                401, UNAUTHORIZED, "missing or invalid bearer token", headers={"WWW-Authenticate": "Bearer"}
            )
        obs.partner = office
        request_id = check_request_id(x_request_id)
        require_json_content_type(request)
        raw = await read_body(request, self.settings.max_body_bytes)
        body = parse_json_object(raw)
        return await self.intake.submit(
            raw, body, submitter=Submitter(OFFICE, office), office=office, request_id=request_id
        )


_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {
        "model": ErrorBody,
        "description": "Malformed request: REQUEST_ID_MISSING, REQUEST_ID_INVALID, INVALID_JSON, "
        "INVALID_UTF8, NON_FINITE_NUMBER, DUPLICATE_KEY, JSON_TOO_DEEP, BODY_NOT_OBJECT",
    },
    401: {"model": ErrorBody, "description": "UNAUTHORIZED: missing or unknown office token"},
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


def create_kbri_app(settings: Settings, producer: EdgeSender) -> FastAPI:
    """The KBRI API. The app starts the producer on startup and closes it on shutdown."""
    intake = _OfficeIntake(settings, producer)
    app = FastAPI(
        lifespan=producer_lifespan(producer),
        title="sinergi KBRI API",
        version="1.0.0",
        description="Enrollment intake for Indonesian representation offices (KBRI/KJRI/KRI/KDEI). "
        "Every error body is {reason, field, message}; personal values are never echoed.",
    )

    @app.post(
        "/v1/enrollments",
        status_code=202,
        response_model=EnrollmentAccepted,
        responses=_ERRORS,
        summary="Submit a PMI enrollment; 202 once it is durably stored",
    )
    async def post_enrollment(
        request: Request,
        authorization: Annotated[str | None, Header(description="Bearer <office token>")] = None,
        x_request_id: Annotated[
            str | None, Header(description="The office's request id, 1-64 of [A-Za-z0-9._-]; idempotency key")
        ] = None,
    ) -> Response:
        obs = RequestObservation(API, ENDPOINT)
        try:
            accepted = await intake.enroll(request, obs, authorization, x_request_id)
        except HttpProblem as problem:
            return _refuse(obs, problem)
        except Rejected as rejected:
            return _refuse(obs, HttpProblem(422, rejected.reason, rejected.message, field=rejected.field))
        except BrokerUnavailable as exc:
            event(log, "enrollment not stored", office=obs.partner, reason=exc.reason)
            return _refuse(obs, broker_unavailable_problem())
        except Exception as exc:
            log.error("enrollment intake failed: %s", where_failed(exc))
            return _refuse(obs, HttpProblem(500, INTERNAL_ERROR, "internal error"))
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

    @app.get("/healthz", response_model=Health)
    async def healthz() -> Health:
        return Health()

    document_request_bodies(app, {("/v1/enrollments", "post"): EnrollmentRequest})
    return app


def _refuse(obs: RequestObservation, problem: HttpProblem) -> Response:
    obs.done(problem.status, problem.reason)
    count(OFFICE, obs.partner, problem.reason)
    if problem.status < 500:
        event(log, "enrollment refused", office=obs.partner, reason=problem.reason, field=problem.field or "")
    return problem_response(problem)
