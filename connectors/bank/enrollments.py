"""`POST /v1/bank/enrollments`: a partner bank enrolls a worker at its counter (banks.json `enrolls`).

The same intake contract and validation as the offices' `POST /v1/enrollments` (connectors/intake.py,
services.domain.enrollment), the same raw topic and normalizer. What differs:

- Authentication is the bank's SNAP transactional signature (connectors.bank.auth, service "00": this is
  not a SNAP service): Authorization Bearer, X-PARTNER-ID, X-TIMESTAMP, X-SIGNATURE over the raw body,
  plus X-EXTERNAL-ID (the bank's reference, carried on the record) and the X-Request-Id idempotency key.
- The owner is the office of the worker's placement (services.domain.placement: destination_country and
  placement_region), within the countries the bank's profile lists.
- The event id is namespaced to the bank: UUIDv5(bank, X-Request-Id), so a request id a bank reuses is the
  same event and never collides with another bank's or an office's.
- The answer is the KBRI API's shape, not SNAP's (202 EnrollmentAccepted plus `office_code`; errors
  {reason, field, message}): it concerns only the request just made, and no endpoint reads enrollments back.

Order of checks: body size (413; the signature covers the body, so it is read first) → signature (401) →
bank may enroll (403) → X-Request-Id, X-EXTERNAL-ID (400) → Content-Type (415) → strict JSON (400) →
placement within the bank's countries, an office for it (422) → domain rules (422) → Kafka (503) → 202.
Every authentication problem is a 401 here, a missing signature header included: in this error shape a
request that cannot be authenticated is unauthenticated, whatever header is missing.
"""

from __future__ import annotations

import logging
import re
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request, Response
from fastapi.responses import JSONResponse
from pydantic import Field

from connectors.bank.auth import SIGNATURE_INVALID, TIMESTAMP_OUT_OF_WINDOW, TOKEN_INVALID, UNKNOWN_PARTNER
from connectors.bank.context import BankContext
from connectors.bank.errors import HEADER_INVALID, HEADER_MISSING, SnapProblem
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
from connectors.intake import BANK, EnrollmentIntake, Submitter, check_request_id, count
from connectors.kafka_edge import BrokerUnavailable
from connectors.kbri.models import EnrollmentAccepted, EnrollmentRequest
from services.domain.errors import Rejected
from services.logs import event

log = logging.getLogger(__name__)

PATH = "/v1/bank/enrollments"
ENDPOINT = "enrollments"
SERVICE = "00"  # not a SNAP service: SnapAuth needs a code for its (unused here) SNAP refusals

BANK_MAY_NOT_ENROLL = "BANK_MAY_NOT_ENROLL"
H_EXTERNAL_ID = "sinergi-external-id"

_EXTERNAL_ID = re.compile(r"[0-9]{1,36}")
_AUTH_FIELDS = {
    UNKNOWN_PARTNER: "X-PARTNER-ID",
    TOKEN_INVALID: "Authorization",
    TIMESTAMP_OUT_OF_WINDOW: "X-TIMESTAMP",
    SIGNATURE_INVALID: "X-SIGNATURE",
}
_SIGNED_HEADERS = ("X-PARTNER-ID", "X-TIMESTAMP", "X-SIGNATURE")


class BankEnrollmentAccepted(EnrollmentAccepted):
    office_code: str = Field(description="The owning office, derived from destination_country and placement_region")


REQUEST_BODIES = {(PATH, "post"): EnrollmentRequest}


def _unauthenticated(problem: SnapProblem) -> HttpProblem:
    """A SnapAuth refusal in this API's shape: 401 with auth.py's reason and the header at fault."""
    field = _AUTH_FIELDS.get(problem.reason)
    if field is None and problem.reason in (HEADER_MISSING, HEADER_INVALID):
        field = next((h for h in _SIGNED_HEADERS if problem.message.endswith(h)), None)
    return HttpProblem(401, problem.reason, problem.message, field=field, headers={"WWW-Authenticate": "Bearer"})


def _external_id(value: str | None) -> str:
    if not value:
        raise HttpProblem(400, HEADER_MISSING, "X-EXTERNAL-ID is required", field="X-EXTERNAL-ID")
    if _EXTERNAL_ID.fullmatch(value) is None:
        raise HttpProblem(400, HEADER_INVALID, "X-EXTERNAL-ID must be 1-36 digits", field="X-EXTERNAL-ID")
    return value


class BankEnrollments:
    def __init__(self, ctx: BankContext) -> None:
        self.ctx = ctx
        self.intake = EnrollmentIntake(ctx.settings, ctx.producer)

    async def enroll(
        self, request: Request, obs: RequestObservation, x_request_id: str | None, x_external_id: str | None
    ) -> BankEnrollmentAccepted:
        raw = await read_body(request, self.ctx.settings.max_body_bytes)
        try:
            authenticated = self.ctx.auth.verify(request, raw, SERVICE, obs)
        except SnapProblem as problem:
            raise _unauthenticated(problem) from None
        bank = authenticated.partner.profile
        if not bank.enrolls:
            raise HttpProblem(403, BANK_MAY_NOT_ENROLL, "this bank is not enabled to enroll workers")
        request_id = check_request_id(x_request_id)
        external_id = _external_id(x_external_id)
        require_json_content_type(request)
        body = parse_json_object(raw)
        placement = self.intake.owner_for_bank(body, bank)
        accepted = await self.intake.submit(
            raw,
            body,
            submitter=Submitter(BANK, bank.bank_id),
            office=placement.office,
            request_id=request_id,
            warnings=placement.warnings,
            extra_headers=[(H_EXTERNAL_ID, external_id.encode())],
        )
        return BankEnrollmentAccepted(**accepted.model_dump(), office_code=placement.office)


ERRORS: dict[int | str, dict[str, Any]] = {
    400: {
        "model": ErrorBody,
        "description": "Malformed request: REQUEST_ID_MISSING, REQUEST_ID_INVALID, HEADER_MISSING / "
        "HEADER_INVALID (X-EXTERNAL-ID), INVALID_JSON, INVALID_UTF8, NON_FINITE_NUMBER, DUPLICATE_KEY, "
        "JSON_TOO_DEEP, BODY_NOT_OBJECT",
    },
    401: {
        "model": ErrorBody,
        "description": "Not authenticated (field names the header): HEADER_MISSING, HEADER_INVALID, "
        "UNKNOWN_PARTNER, TOKEN_INVALID, TIMESTAMP_OUT_OF_WINDOW, SIGNATURE_INVALID",
    },
    403: {"model": ErrorBody, "description": "BANK_MAY_NOT_ENROLL: the bank's profile does not enroll workers"},
    413: {"model": ErrorBody, "description": "BODY_TOO_LARGE"},
    415: {"model": ErrorBody, "description": "UNSUPPORTED_MEDIA_TYPE"},
    422: {
        "model": ErrorBody,
        "description": "PLACEMENT_OUTSIDE_BANK_COUNTRIES, NO_OFFICE_FOR_PLACEMENT, or a domain rule as on "
        "POST /v1/enrollments (MISSING_FIELD, INVALID_FIELD, NIK_*, UNDER_AGE, PASSPORT_FORMAT, ...)",
    },
    500: {"model": ErrorBody, "description": "INTERNAL_ERROR"},
    503: {
        "model": ErrorBody,
        "description": "BROKER_UNAVAILABLE: not stored; retry after Retry-After seconds with the same X-Request-Id",
    },
}


def router(ctx: BankContext) -> APIRouter:
    enrollments = BankEnrollments(ctx)
    api = APIRouter()

    @api.post(
        PATH,
        status_code=202,
        response_model=BankEnrollmentAccepted,
        responses=ERRORS,
        summary="A partner bank enrolls a worker at its counter; 202 once it is durably stored",
    )
    async def post_bank_enrollment(
        request: Request,
        authorization: Annotated[str | None, Header(description="Bearer <bank token>")] = None,
        x_partner_id: Annotated[str | None, Header(alias="X-PARTNER-ID", description="The bank id")] = None,
        x_timestamp: Annotated[str | None, Header(alias="X-TIMESTAMP", description="ISO-8601 with offset")] = None,
        x_signature: Annotated[
            str | None, Header(alias="X-SIGNATURE", description="HMAC-SHA512 (or RSA) SNAP signature of the call")
        ] = None,
        x_external_id: Annotated[
            str | None, Header(alias="X-EXTERNAL-ID", description="The bank's reference, 1-36 digits")
        ] = None,
        x_request_id: Annotated[
            str | None, Header(description="The bank's request id, 1-64 of [A-Za-z0-9._-]; idempotency key")
        ] = None,
    ) -> Response:
        del authorization, x_partner_id, x_timestamp, x_signature  # declared for the docs; SnapAuth reads them
        obs = RequestObservation("bank", ENDPOINT)
        try:
            accepted = await enrollments.enroll(request, obs, x_request_id, x_external_id)
        except HttpProblem as problem:
            return _refuse(obs, problem)
        except Rejected as rejected:
            return _refuse(obs, HttpProblem(422, rejected.reason, rejected.message, field=rejected.field))
        except BrokerUnavailable as exc:
            event(log, "bank enrollment not stored", bank=obs.partner, reason=exc.reason)
            return _refuse(obs, broker_unavailable_problem())
        except Exception as exc:
            log.error("bank enrollment intake failed: %s", where_failed(exc))
            return _refuse(obs, HttpProblem(500, INTERNAL_ERROR, "internal error"))
        obs.done(202)
        count(BANK, obs.partner, None)
        event(
            log,
            "bank enrollment accepted",
            bank=obs.partner,
            office=accepted.office_code,
            event_id=accepted.event_id,
            warnings=",".join(accepted.warnings),
        )
        return JSONResponse(accepted.model_dump(mode="json"), status_code=202)

    return api


def _refuse(obs: RequestObservation, problem: HttpProblem) -> Response:
    obs.done(problem.status, problem.reason)
    count(BANK, obs.partner, problem.reason)
    if problem.status < 500:
        event(log, "bank enrollment refused", bank=obs.partner, reason=problem.reason, field=problem.field or "")
    return problem_response(problem)
