"""`POST /v1.0/transfer-va/payment` (SNAP service 25): a bank's VA payment notification.

Order: read the raw body (bounded), authenticate it (connectors.bank.auth: partner, token, X-TIMESTAMP
window, X-SIGNATURE over exactly these bytes), check X-EXTERNAL-ID and CHANNEL-ID, then look the request
up in the X-EXTERNAL-ID store (connectors.bank.idempotency), and only for a new request parse, validate
with the domain's `normalize_payment`, produce the EXACT raw body to `bank.payments.raw` and answer
`2002500` only after Kafka acknowledged.

X-EXTERNAL-ID idempotency (domain.md 7.3): key = (bank, X-EXTERNAL-ID, WIB date of the received time),
body identity = sha256 of the minified raw body (what the signature covers). The same request again gets
the stored response byte for byte and produces nothing; concurrent identical requests share the first
one's outcome; the same key with another body is 409 4092500 EXTERNAL_ID_CONFLICT. Stored are 2xx and the
4xx the body earns once authenticated (the bank must send a corrected body under a new X-EXTERNAL-ID);
never a 5xx/503 (a retry after a broker outage is processed again) and never an authentication or
header failure. The store is per process: across replicas and restarts a payment stays single because
its event id (UUIDv5 of bank + paymentRequestId) is deduplicated downstream.

Response codes (domain.md 4.6: HTTP status + service code 25 + case):

    2002500  Successful                     recorded (Kafka acknowledged), or the replay of that answer
    4002500  Bad Request                    body not parseable / too large (413) / wrong content type (415)
    4002501  Invalid Field Format {field}   header or body field malformed (incl. every amount attack)
    4002502  Invalid Mandatory Field {f}    header or body field missing (X-SIGNATURE included)
    4012500  Unauthorized. {why}            UNKNOWN_PARTNER, TIMESTAMP_OUT_OF_WINDOW, SIGNATURE_INVALID
    4012501  Unauthorized. Invalid Token    TOKEN_INVALID: no token, unknown, expired, or another bank's
    4042512  Invalid Bill/Virtual Account   VA prefix not this bank's, or VA != partnerServiceId+customerNo
    4042513  Invalid Amount                 currency not accepted from this bank
    4042514  Paid Bill                      BILL_PAID: the read model shows the bill settled by other payments
    4042519  Invalid Bill/Virtual Account   BILL_EXPIRED: the bill can no longer be paid (re-registration)
    4092500  Conflict                       EXTERNAL_ID_CONFLICT: X-EXTERNAL-ID reused today, other body
    5002501  Internal Server Error
    5002502  External Server Error          HTTP 503 + Retry-After: Kafka did not acknowledge

Why HTTP 503 with 5002502: SNAP has no 503 family, and "the event store is unavailable" is precisely an
external dependency failing. The HTTP status is 503 so that generic HTTP tooling and the bank's retry
logic see a retryable condition (with Retry-After); the body stays SNAP-shaped, and as it carries no
paymentFlagStatus "00" the bank must treat the notification as not delivered and retry or ask status.
HTTP 413/415 keep their HTTP status too, with the closest SNAP code (4002500).

Foreign currency: a bank collecting in MYR/HKD/TWD/SGD sends paidAmount in that currency with
additionalInfo.fxRate (IDR per unit); see services.domain.payment for the one FX convention.
"""

from __future__ import annotations

import logging
import re
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from connectors.bank.auth import Authenticated
from connectors.bank.context import BankContext
from connectors.bank.errors import (
    SERVICE_PAYMENT,
    SnapProblem,
    conflict,
    from_http,
    from_rejected,
    internal_error,
    invalid,
    missing,
    refuse,
    snap_code,
)
from connectors.bank.idempotency import ExternalIdConflict, IdempotencyKey, IdempotencyStore, StoredResponse
from connectors.bank.models import (
    Amount,
    FlagReason,
    SnapError,
    VaPaymentRequest,
    VaPaymentResponse,
    VirtualAccountData,
)
from connectors.bank.snap_headers import snap_headers
from connectors.http_common import (
    BROKER_UNAVAILABLE,
    RETRY_AFTER_S,
    HttpProblem,
    RequestObservation,
    iso_utc,
    parse_json_object,
    read_body,
    require_json_content_type,
    where_failed,
)
from connectors.kafka_edge import BrokerUnavailable
from services.catalogue import PAYMENTS_RAW
from services.domain.dates import wib_date
from services.domain.errors import Rejected
from services.domain.payment import normalize_payment
from services.logs import event

log = logging.getLogger(__name__)

PATH = "/v1.0/transfer-va/payment"
ENDPOINT = "va_payment"
REFUSED = "payment refused"

H_BANK = "sinergi-bank"
H_EXTERNAL_ID = "sinergi-external-id"
H_EVENT_ID = "sinergi-event-id"
H_RECEIVED_AT = "sinergi-received-at"
H_CHANNEL_ID = "sinergi-channel-id"
H_X_TIMESTAMP = "sinergi-x-timestamp"

_EXTERNAL_ID = re.compile(r"[0-9]{1,36}")
_CHANNEL_ID = re.compile(r"[A-Za-z0-9]{1,5}")

_SUCCESS_REASON = FlagReason(english="Success", indonesia="Sukses")

REQUEST_BODIES = {(PATH, "post"): VaPaymentRequest}


def _require(value: str | None, header: str, pattern: re.Pattern[str]) -> str:
    if value is None or value == "":
        raise missing(header, SERVICE_PAYMENT)
    if pattern.fullmatch(value) is None:
        raise invalid(header, SERVICE_PAYMENT)
    return value


def _millis(value: datetime) -> datetime:
    """What Avro timestamp-millis and the intake headers carry."""
    return value.replace(microsecond=value.microsecond - value.microsecond % 1000)


_BOOK_REFUSALS = {
    "BILL_PAID": SnapProblem(404, snap_code(404, "14", SERVICE_PAYMENT), "Paid Bill", "BILL_PAID"),
    "BILL_EXPIRED": SnapProblem(
        404, snap_code(404, "19", SERVICE_PAYMENT), "Invalid Bill/Virtual Account", "BILL_EXPIRED"
    ),
}


def _stored(response: JSONResponse, reason: str | None = None, headers: dict[str, str] | None = None) -> StoredResponse:
    return StoredResponse(response.status_code, bytes(response.body), tuple((headers or {}).items()), reason)


def _refused(obs: RequestObservation, problem: SnapProblem) -> StoredResponse:
    return _stored(refuse(obs, problem, REFUSED), problem.reason, problem.headers)


def _send(stored: StoredResponse) -> Response:
    return Response(
        content=stored.body, status_code=stored.status, headers=dict(stored.headers), media_type="application/json"
    )


class PaymentIntake:
    def __init__(self, ctx: BankContext) -> None:
        self.ctx = ctx
        self.replays = IdempotencyStore(ctx.settings.snap_idempotency_max_entries, api="bank", endpoint=ENDPOINT)

    async def handle(self, request: Request, external_id: str | None, channel_id: str | None) -> Response:
        obs = RequestObservation("bank", ENDPOINT)
        try:
            raw = await read_body(request, self.ctx.settings.max_body_bytes)
            auth = self.ctx.auth.verify(request, raw, SERVICE_PAYMENT, obs)
            external_id = _require(external_id, "X-EXTERNAL-ID", _EXTERNAL_ID)
            channel_id = _require(channel_id, "CHANNEL-ID", _CHANNEL_ID)
            require_json_content_type(request)
        except SnapProblem as problem:
            return refuse(obs, problem, REFUSED)
        except HttpProblem as problem:
            return refuse(obs, from_http(problem, SERVICE_PAYMENT), REFUSED)
        except Exception as exc:
            log.error("payment intake failed: %s", where_failed(exc))
            return refuse(obs, internal_error(SERVICE_PAYMENT), REFUSED)

        bank_id = auth.partner.bank_id
        key = IdempotencyKey(bank_id, external_id, wib_date(auth.received_at))
        # The closure sees the parameters, not their narrowed str values: bind those.
        ext, channel = external_id, channel_id

        async def work() -> StoredResponse:
            return await self._record(obs, auth, raw, ext, channel)

        try:
            served = await self.replays.run(key, auth.body_digest, work)
        except ExternalIdConflict:
            return refuse(obs, conflict(SERVICE_PAYMENT), REFUSED)
        if served.replayed:
            obs.done(served.response.status, served.response.reason)
            event(log, "payment replayed", bank=bank_id, status=served.response.status)
        return _send(served.response)

    async def _record(
        self, obs: RequestObservation, auth: Authenticated, raw: bytes, external_id: str, channel_id: str
    ) -> StoredResponse:
        """Validate and produce one new request; every outcome as a response (the store decides what to keep)."""
        try:
            return await self._produce(auth, raw, external_id, channel_id, obs)
        except SnapProblem as problem:
            return _refused(obs, problem)
        except HttpProblem as problem:
            return _refused(obs, from_http(problem, SERVICE_PAYMENT))
        except Rejected as rejected:
            return _refused(obs, from_rejected(rejected, SERVICE_PAYMENT))
        except BrokerUnavailable as exc:
            event(log, "payment not recorded", bank=obs.partner, reason=exc.reason)
            unavailable = SnapProblem(
                503,
                snap_code(500, "02", SERVICE_PAYMENT),
                "External Server Error",
                BROKER_UNAVAILABLE,
                headers={"Retry-After": str(RETRY_AFTER_S)},
            )
            return _refused(obs, unavailable)
        except Exception as exc:
            log.error("payment intake failed: %s", where_failed(exc))
            return _refused(obs, internal_error(SERVICE_PAYMENT))

    async def _produce(
        self, auth: Authenticated, raw: bytes, external_id: str, channel_id: str, obs: RequestObservation
    ) -> StoredResponse:
        bank = auth.partner.profile
        body = parse_json_object(raw)
        received_at = _millis(auth.received_at)
        payment = normalize_payment(
            body,
            bank_id=bank.bank_id,
            partner_service_id=bank.partner_service_id,
            allowed_currencies=bank.currencies,
            external_id=external_id,
            received_at=received_at,
        )
        refusal = self.ctx.book.payment_refusal(payment.participant_id, payment.event_id)
        if refusal is not None:
            # The bill is settled (or can no longer be paid) as far as the read model knows: refuse before
            # the bank takes the money. An unknown customer is accepted: the reconciler holds the payment.
            raise _BOOK_REFUSALS[refusal]
        headers = [
            (H_BANK, bank.bank_id.encode()),
            (H_EXTERNAL_ID, external_id.encode()),
            (H_EVENT_ID, payment.event_id.encode()),
            (H_RECEIVED_AT, iso_utc(received_at).encode()),
            (H_CHANNEL_ID, channel_id.encode()),
            (H_X_TIMESTAMP, auth.x_timestamp.encode()),
        ]
        await self.ctx.producer.send(PAYMENTS_RAW.name, payment.participant_id.encode(), raw, headers)
        event(log, "payment accepted", bank=bank.bank_id, event_id=payment.event_id)
        paid = body["paidAmount"]  # validated by normalize_payment: echo what the bank sent, verbatim
        result = VaPaymentResponse(
            virtualAccountData=VirtualAccountData(
                partnerServiceId=body["partnerServiceId"],
                customerNo=body["customerNo"],
                virtualAccountNo=body["virtualAccountNo"],
                paymentRequestId=body["paymentRequestId"],
                paidAmount=Amount(value=paid["value"], currency=paid["currency"]),
                paymentFlagReason=_SUCCESS_REASON,
            )
        )
        obs.done(200)
        # pydantic writes the JSON itself (what JSONResponse renders, compact, UTF-8), without a dict and the
        # stdlib encoder between: ~45 µs of a notification's ~1 ms.
        return StoredResponse(200, result.model_dump_json().encode(), (), None)


def _doc(text: str) -> dict[str, Any]:
    return {"model": SnapError, "description": text}


ERRORS: dict[int | str, dict[str, Any]] = {
    400: _doc(
        "4002500 Bad Request (INVALID_JSON, INVALID_UTF8, NON_FINITE_NUMBER, DUPLICATE_KEY, "
        "JSON_TOO_DEEP, BODY_NOT_OBJECT); 4002501 Invalid Field Format {field} (INVALID_FIELD, "
        "AMOUNT_FORMAT, FX_RATE_FORMAT, TIMESTAMP_FORMAT; HEADER_INVALID for X-PARTNER-ID, X-TIMESTAMP, "
        "X-EXTERNAL-ID, CHANNEL-ID); 4002502 Invalid Mandatory Field {field} (MISSING_FIELD; HEADER_MISSING "
        "for X-PARTNER-ID, X-TIMESTAMP, X-SIGNATURE, X-EXTERNAL-ID, CHANNEL-ID)"
    ),
    401: _doc(
        "4012500 Unauthorized (UNKNOWN_PARTNER: X-PARTNER-ID is not a configured bank; TIMESTAMP_OUT_OF_WINDOW: "
        "X-TIMESTAMP too far from the server clock; SIGNATURE_INVALID: X-SIGNATURE does not verify over the raw "
        "body); 4012501 Invalid Token (TOKEN_INVALID: missing, unknown, expired, or another bank's token)"
    ),
    404: _doc(
        "4042512 Invalid Bill/Virtual Account (VA_MISMATCH); 4042513 Invalid Amount (CURRENCY_NOT_ALLOWED); "
        "4042514 Paid Bill (BILL_PAID); 4042519 Invalid Bill/Virtual Account (BILL_EXPIRED)"
    ),
    409: _doc(
        "4092500 Conflict (EXTERNAL_ID_CONFLICT): this X-EXTERNAL-ID was already used today (WIB) by this bank "
        "with a different body. The same request again (same body) gets the first answer again, byte for byte"
    ),
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
        description="Signed SNAP call: X-SIGNATURE = Base64(HMAC-SHA512(clientSecret, "
        "POST:/v1.0/transfer-va/payment:<token>:hex(sha256(minify(raw body))):X-TIMESTAMP)). "
        "X-EXTERNAL-ID is the idempotency key per bank and WIB day. A bank collecting in MYR, HKD, TWD or "
        "SGD sends paidAmount in that currency and additionalInfo.fxRate (IDR per unit, up to 6 decimals).",
        openapi_extra=snap_headers(
            external_id="Numeric, <= 36, unique per bank and WIB day",
            timestamp="ISO-8601 with offset, within the allowed skew",
            signature="Base64 HMAC-SHA512, see the description",
        ),
    )
    async def va_payment(request: Request) -> Response:
        # The headers are documented above and read from the request (connectors/bank/snap_headers.py says why).
        headers = request.headers
        return await intake.handle(request, headers.get("x-external-id"), headers.get("channel-id"))

    return api
