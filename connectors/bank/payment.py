"""`POST /v1.0/transfer-va/payment` (SNAP service 25): a bank's VA payment notification.

Validates with the domain's `normalize_payment`, produces the EXACT raw body to `bank.payments.raw` and
answers `2002500` only after Kafka acknowledged.

Response codes (domain.md 4.6: HTTP status + service code 25 + case):

    4002500  Bad Request                    body not parseable / too large / wrong content type
    4002501  Invalid Field Format {field}   header or body field malformed (incl. every amount attack)
    4002502  Invalid Mandatory Field {f}    header or body field missing
    4012500  Unauthorized. {why}            unknown token, X-PARTNER-ID not the token's bank
    4042512  Invalid Bill/Virtual Account   VA prefix not this bank's, or VA != partnerServiceId+customerNo
    4042513  Invalid Amount                 currency not accepted from this bank
    5002501  Internal Server Error
    5002502  External Server Error          HTTP 503 + Retry-After: Kafka did not acknowledge

Why HTTP 503 with 5002502: SNAP has no 503 family, and "the event store is unavailable" is precisely an
external dependency failing. The HTTP status is 503 so that generic HTTP tooling and the bank's retry
logic see a retryable condition (with Retry-After); the body stays SNAP-shaped, and as it carries no
paymentFlagStatus "00" the bank must treat the notification as not delivered and retry or ask status.
HTTP 413/415 keep their HTTP status too, with the closest SNAP code (4002500).
"""

from __future__ import annotations

import logging
import re
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request, Response
from fastapi.responses import JSONResponse

from connectors.bank.context import BankContext
from connectors.bank.errors import (
    SERVICE_PAYMENT,
    SnapProblem,
    from_http,
    from_rejected,
    internal_error,
    invalid,
    missing,
    refuse,
    snap_code,
    unauthorized,
)
from connectors.bank.models import (
    Amount,
    FlagReason,
    SnapError,
    VaPaymentRequest,
    VaPaymentResponse,
    VirtualAccountData,
)
from connectors.http_common import (
    BROKER_UNAVAILABLE,
    RETRY_AFTER_S,
    UNAUTHORIZED,
    HttpProblem,
    RequestObservation,
    iso_utc,
    parse_json_object,
    read_body,
    require_json_content_type,
    utc_now_ms,
    where_failed,
)
from connectors.kafka_edge import BrokerUnavailable
from services.catalogue import PAYMENTS_RAW
from services.domain.errors import Rejected
from services.domain.payment import normalize_payment
from services.logs import event

log = logging.getLogger(__name__)

PATH = "/v1.0/transfer-va/payment"
ENDPOINT = "va_payment"

PARTNER_ID_MISMATCH = "PARTNER_ID_MISMATCH"

H_BANK = "sinergi-bank"
H_EXTERNAL_ID = "sinergi-external-id"
H_EVENT_ID = "sinergi-event-id"
H_RECEIVED_AT = "sinergi-received-at"
H_CHANNEL_ID = "sinergi-channel-id"
H_X_TIMESTAMP = "sinergi-x-timestamp"

_EXTERNAL_ID = re.compile(r"[0-9]{1,36}")
_PARTNER_ID = re.compile(r"[A-Za-z0-9._-]{1,36}")
_CHANNEL_ID = re.compile(r"[A-Za-z0-9]{1,5}")
_TIMESTAMP = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?(Z|[+-][0-9]{2}:[0-9]{2})"
)

_SUCCESS_REASON = FlagReason(english="Success", indonesia="Sukses")

REQUEST_BODIES = {(PATH, "post"): VaPaymentRequest}


def _require(value: str | None, header: str, pattern: re.Pattern[str]) -> str:
    if value is None or value == "":
        raise missing(header, SERVICE_PAYMENT)
    if pattern.fullmatch(value) is None:
        raise invalid(header, SERVICE_PAYMENT)
    return value


def _check_timestamp(value: str | None) -> str:
    value = _require(value, "X-TIMESTAMP", _TIMESTAMP)
    try:
        datetime.fromisoformat(value)
    except ValueError:
        raise invalid("X-TIMESTAMP", SERVICE_PAYMENT) from None
    return value


class PaymentIntake:
    def __init__(self, ctx: BankContext) -> None:
        self.ctx = ctx

    async def pay(
        self,
        request: Request,
        obs: RequestObservation,
        authorization: str | None,
        partner_id: str | None,
        external_id: str | None,
        timestamp: str | None,
        channel_id: str | None,
    ) -> VaPaymentResponse:
        bank_id = self.ctx.auth.token_bank(authorization)
        if bank_id is None:
            raise unauthorized("Invalid token", UNAUTHORIZED, SERVICE_PAYMENT)
        obs.partner = bank_id
        partner_id = _require(partner_id, "X-PARTNER-ID", _PARTNER_ID)
        if partner_id != bank_id:
            raise unauthorized("Unknown client", PARTNER_ID_MISMATCH, SERVICE_PAYMENT)
        partner = self.ctx.registry.get(bank_id)
        if partner is None:  # a token without a bank profile is a configuration error
            raise unauthorized("Unknown client", PARTNER_ID_MISMATCH, SERVICE_PAYMENT)
        bank = partner.profile
        external_id = _require(external_id, "X-EXTERNAL-ID", _EXTERNAL_ID)
        x_timestamp = _check_timestamp(timestamp)
        channel_id = _require(channel_id, "CHANNEL-ID", _CHANNEL_ID)

        require_json_content_type(request)
        raw = await read_body(request, self.ctx.settings.max_body_bytes)
        body = parse_json_object(raw)
        received_at = utc_now_ms()
        payment = normalize_payment(
            body,
            bank_id=bank_id,
            partner_service_id=bank.partner_service_id,
            allowed_currencies=bank.currencies,
            external_id=external_id,
            received_at=received_at,
        )
        headers = [
            (H_BANK, bank_id.encode()),
            (H_EXTERNAL_ID, external_id.encode()),
            (H_EVENT_ID, payment.event_id.encode()),
            (H_RECEIVED_AT, iso_utc(received_at).encode()),
            (H_CHANNEL_ID, channel_id.encode()),
            (H_X_TIMESTAMP, x_timestamp.encode()),
        ]
        await self.ctx.producer.send(PAYMENTS_RAW.name, payment.participant_id.encode(), raw, headers)
        event(log, "payment accepted", bank=bank_id, event_id=payment.event_id)
        paid = body["paidAmount"]  # validated by normalize_payment: echo what the bank sent, verbatim
        return VaPaymentResponse(
            virtualAccountData=VirtualAccountData(
                partnerServiceId=body["partnerServiceId"],
                customerNo=body["customerNo"],
                virtualAccountNo=body["virtualAccountNo"],
                paymentRequestId=body["paymentRequestId"],
                paidAmount=Amount(value=paid["value"], currency=paid["currency"]),
                paymentFlagReason=_SUCCESS_REASON,
            )
        )


def _doc(text: str) -> dict[str, Any]:
    return {"model": SnapError, "description": text}


ERRORS: dict[int | str, dict[str, Any]] = {
    400: _doc(
        "4002500 Bad Request (INVALID_JSON, INVALID_UTF8, NON_FINITE_NUMBER, DUPLICATE_KEY, "
        "JSON_TOO_DEEP, BODY_NOT_OBJECT); 4002501 Invalid Field Format {field} (INVALID_FIELD, "
        "AMOUNT_FORMAT, FX_RATE_FORMAT, VA_FORMAT, TIMESTAMP_FORMAT, HEADER_INVALID); "
        "4002502 Invalid Mandatory Field {field} (MISSING_FIELD, HEADER_MISSING)"
    ),
    401: _doc("4012500 Unauthorized (UNAUTHORIZED, PARTNER_ID_MISMATCH)"),
    404: _doc("4042512 Invalid Bill/Virtual Account (VA_MISMATCH); 4042513 Invalid Amount (CURRENCY_NOT_ALLOWED)"),
    413: _doc("4002500 Bad Request (BODY_TOO_LARGE)"),
    415: _doc("4002500 Bad Request (UNSUPPORTED_MEDIA_TYPE)"),
    500: _doc("5002501 Internal Server Error (INTERNAL_ERROR)"),
    503: _doc(
        "5002502 External Server Error (BROKER_UNAVAILABLE): not recorded; retry after Retry-After "
        "seconds with the same X-EXTERNAL-ID and paymentRequestId"
    ),
}


def router(ctx: BankContext) -> APIRouter:
    intake = PaymentIntake(ctx)
    api = APIRouter()

    @api.post(
        PATH,
        response_model=VaPaymentResponse,
        responses=ERRORS,
        summary="VA payment notification (SNAP service 25); 2002500 once durably recorded",
    )
    async def va_payment(
        request: Request,
        authorization: Annotated[str | None, Header(description="Bearer <bank token>")] = None,
        x_partner_id: Annotated[str | None, Header(alias="X-PARTNER-ID", description="The bank id")] = None,
        x_external_id: Annotated[
            str | None, Header(alias="X-EXTERNAL-ID", description="Numeric, <= 36, unique per day")
        ] = None,
        x_timestamp: Annotated[str | None, Header(alias="X-TIMESTAMP", description="ISO-8601 with offset")] = None,
        channel_id: Annotated[str | None, Header(alias="CHANNEL-ID", description="<= 5 characters")] = None,
    ) -> Response:
        obs = RequestObservation("bank", ENDPOINT)
        try:
            result = await intake.pay(request, obs, authorization, x_partner_id, x_external_id, x_timestamp, channel_id)
        except SnapProblem as problem:
            return refuse(obs, problem, "payment refused")
        except HttpProblem as problem:
            return refuse(obs, from_http(problem, SERVICE_PAYMENT), "payment refused")
        except Rejected as rejected:
            return refuse(obs, from_rejected(rejected, SERVICE_PAYMENT), "payment refused")
        except BrokerUnavailable as exc:
            event(log, "payment not recorded", bank=obs.partner, reason=exc.reason)
            unavailable = SnapProblem(
                503,
                snap_code(500, "02", SERVICE_PAYMENT),
                "External Server Error",
                BROKER_UNAVAILABLE,
                headers={"Retry-After": str(RETRY_AFTER_S)},
            )
            return refuse(obs, unavailable, "payment refused")
        except Exception as exc:
            log.error("payment intake failed: %s", where_failed(exc))
            return refuse(obs, internal_error(SERVICE_PAYMENT), "payment refused")
        obs.done(200)
        return JSONResponse(result.model_dump(mode="json"), status_code=200)

    return api
