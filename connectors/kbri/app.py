"""KBRI/KJRI/KRI/KDEI enrollment intake: `POST /v1/enrollments`.

The endpoint validates synchronously with the domain rules (so an office learns about a bad request at
once), then produces the EXACT raw body to `kbri.enrollments.raw` and answers 202 only after Kafka
acknowledged. The normalizer stage re-validates the raw record with the same function and the same
intake headers (received-at, office, request id), so both reach the same verdict.

Idempotency: the event id is UUIDv5(office, X-Request-Id). A repeat is produced and accepted again with
the same event id; consumers deduplicate by event id. No server state is kept here.

Order of checks: bearer token (401) → X-Request-Id (400) → Content-Type (415) → body size (413) →
strict JSON (400) → domain rules (422) → Kafka (503 when not acknowledged) → 202.
"""

from __future__ import annotations

import logging
import re
from datetime import datetime
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
    iso_utc,
    parse_json_object,
    problem_response,
    producer_lifespan,
    read_body,
    require_json_content_type,
    utc_now_ms,
    where_failed,
)
from connectors.kafka_edge import BrokerUnavailable, EdgeSender
from connectors.kbri.models import BillLineOut, BillOut, EnrollmentAccepted, EnrollmentRequest, Health
from services.catalogue import ENROLLMENTS_RAW
from services.config import Settings
from services.domain.dates import wib_date
from services.domain.enrollment import normalize_enrollment
from services.domain.errors import Rejected
from services.domain.identity import compose_va, participant_id
from services.domain.tariff import TariffTable, bill_amount_idr, load_tariffs
from services.logs import event
from services.reference import BankProfile, load_banks, load_offices, load_tariff_document

log = logging.getLogger(__name__)

API = "kbri"
ENDPOINT = "enrollments"
CHANNEL = "PERWAKILAN_RI"

# Reason codes of this API besides the shared transport ones and the domain's.
REQUEST_ID_MISSING = "REQUEST_ID_MISSING"
REQUEST_ID_INVALID = "REQUEST_ID_INVALID"

_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")

H_OFFICE = "sinergi-office"
H_REQUEST_ID = "sinergi-request-id"
H_EVENT_ID = "sinergi-event-id"
H_RECEIVED_AT = "sinergi-received-at"
H_CHANNEL = "sinergi-channel"


def _no_pii_kept(_plain: bytes) -> bytes:
    """The intake discards its validated Enrollment: nothing to encrypt here (the normalizer encrypts)."""
    return b""


class _Intake:
    """Reference data and secrets, loaded once per app."""

    def __init__(self, settings: Settings, producer: EdgeSender) -> None:
        self.settings = settings
        self.producer = producer
        self.offices = frozenset(load_offices(settings.offices_file))
        self.banks: dict[str, BankProfile] = load_banks(settings.banks_file)
        self.tariffs: TariffTable = load_tariffs(load_tariff_document(settings.tariff_file))
        secret = settings.participant_key_secret.get_secret_value().encode("utf-8")
        digits = settings.customer_no_digits
        self.participant_key = lambda nik: participant_id(nik, secret, digits)

    async def enroll(
        self, request: Request, obs: RequestObservation, authorization: str | None, x_request_id: str | None
    ) -> EnrollmentAccepted:
        office = authenticate(bearer_token(authorization), self.settings.office_tokens)
        if office is None:
            raise HttpProblem(
                401, UNAUTHORIZED, "missing or invalid bearer token", headers={"WWW-Authenticate": "Bearer"}
            )
        obs.partner = office
        if x_request_id is None or not x_request_id.strip():
            raise HttpProblem(400, REQUEST_ID_MISSING, "X-Request-Id is required", field="X-Request-Id")
        if _REQUEST_ID.fullmatch(x_request_id) is None:
            raise HttpProblem(
                400,
                REQUEST_ID_INVALID,
                "X-Request-Id must be 1-64 characters of A-Z a-z 0-9 . _ -",
                field="X-Request-Id",
            )
        require_json_content_type(request)
        raw = await read_body(request, self.settings.max_body_bytes)
        body = parse_json_object(raw)
        received_at = utc_now_ms()

        accepted = self._validate(body, office, x_request_id, received_at)
        headers = [
            (H_OFFICE, office.encode()),
            (H_REQUEST_ID, x_request_id.encode()),
            (H_EVENT_ID, accepted.event_id.encode()),
            (H_RECEIVED_AT, iso_utc(received_at).encode()),
            (H_CHANNEL, CHANNEL.encode()),
        ]
        await self.producer.send(ENROLLMENTS_RAW.name, accepted.customer_no.encode(), raw, headers)
        return accepted

    def _validate(
        self, body: dict[str, Any], office: str, request_id: str, received_at: datetime
    ) -> EnrollmentAccepted:
        tariff = self.tariffs.tariff_on(wib_date(received_at))
        enrollment = normalize_enrollment(
            body,
            office_code=office,
            request_id=request_id,
            received_at=received_at,
            known_offices=self.offices,
            participant_key=self.participant_key,
            encrypt_pii=_no_pii_kept,
            tariff=tariff,
            channel=CHANNEL,
        )
        breakdown = bill_amount_idr(
            tariff, enrollment.participant_type, enrollment.contract_months, enrollment.programs
        )
        customer_no = enrollment.participant_id
        return EnrollmentAccepted(
            event_id=enrollment.event_id,
            customer_no=customer_no,
            bill=BillOut(
                amount_idr=breakdown.total_idr,
                tariff_version=breakdown.tariff_version,
                lines=[
                    BillLineOut(code=line.code, description=line.description, amount_idr=line.amount_idr)
                    for line in breakdown.lines
                ],
                virtual_accounts={
                    bank_id: compose_va(bank.partner_service_id, customer_no) for bank_id, bank in self.banks.items()
                },
            ),
            warnings=list(enrollment.warnings),
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
    intake = _Intake(settings, producer)
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
    if problem.status < 500:
        event(log, "enrollment refused", office=obs.partner, reason=problem.reason, field=problem.field or "")
    return problem_response(problem)
