"""SNAP biller API for partner banks: `POST /v1.0/transfer-va/payment` (service code 25) and
`POST /v1.0/access-token/b2b` (service code 73).

The token endpoint verifies X-SIGNATURE = SHA256withRSA(clientId|X-TIMESTAMP) against the bank's configured
public keys (settings.bank_public_keys, several during rotation) and issues a short-lived opaque token
(4007301/4007302 for malformed/missing headers or grantType, 4017300 for an unknown client, a stale
timestamp or a bad signature). The payment endpoint accepts such a token or a static settings.bank_tokens
token (demo/simulator); its own X-SIGNATURE verification arrives with the next issue. The payment endpoint
validates with the domain's `normalize_payment`, produces the EXACT raw body to `bank.payments.raw` and
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

Every error body is {"responseCode", "responseMessage", "reason"}; messages name fields, never values.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any

from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import FastAPI, Header, Request, Response
from fastapi.responses import JSONResponse

from connectors.bank.models import (
    Amount,
    B2bTokenRequest,
    B2bTokenResponse,
    FlagReason,
    Health,
    SnapError,
    VaPaymentRequest,
    VaPaymentResponse,
    VirtualAccountData,
)
from connectors.bank.snap_signing import (
    SnapTimestampError,
    load_rsa_public_key,
    parse_snap_timestamp,
    string_to_sign_token,
    verify_rsa_sha256,
    within_window,
)
from connectors.bank.tokens import TokenIssuer
from connectors.http_common import (
    BROKER_UNAVAILABLE,
    INTERNAL_ERROR,
    RETRY_AFTER_S,
    UNAUTHORIZED,
    HttpProblem,
    RequestObservation,
    authenticate,
    bearer_token,
    document_request_bodies,
    iso_utc,
    parse_json_object,
    producer_lifespan,
    read_body,
    require_json_content_type,
    utc_now_ms,
    where_failed,
)
from connectors.kafka_edge import BrokerUnavailable, EdgeSender
from services.catalogue import PAYMENTS_RAW
from services.config import Settings
from services.domain.errors import Reason, Rejected
from services.domain.payment import normalize_payment
from services.logs import event
from services.reference import BankProfile, load_banks

log = logging.getLogger(__name__)

API = "bank"
ENDPOINT = "va_payment"
SERVICE = "25"
B2B_ENDPOINT = "b2b_token"
B2B_SERVICE = "73"

# Reason codes of this API besides the shared transport ones and the domain's.
PARTNER_ID_MISMATCH = "PARTNER_ID_MISMATCH"
HEADER_MISSING = "HEADER_MISSING"
HEADER_INVALID = "HEADER_INVALID"
# B2B access token (service 73).
UNKNOWN_CLIENT = "UNKNOWN_CLIENT"
SIGNATURE_INVALID = "SIGNATURE_INVALID"
TIMESTAMP_OUT_OF_WINDOW = "TIMESTAMP_OUT_OF_WINDOW"
GRANT_TYPE_MISSING = "GRANT_TYPE_MISSING"
GRANT_TYPE_INVALID = "GRANT_TYPE_INVALID"

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

# Domain reasons that are not a field-format problem.
_REASON_CODES: dict[str, tuple[int, str, str]] = {
    Reason.MISSING_FIELD: (400, "02", "Invalid Mandatory Field"),
    Reason.VA_MISMATCH: (404, "12", "Invalid Bill/Virtual Account"),
    Reason.CURRENCY_NOT_ALLOWED: (404, "13", "Invalid Amount"),
}


def snap_code(family: int, case: str, service: str = SERVICE) -> str:
    """HTTP family (3) + service code (25 by default) + case (2), e.g. snap_code(400, "01") == "4002501"."""
    return f"{family}{service}{case}"


class SnapProblem(Exception):
    """A refusal in SNAP terms: HTTP status, SNAP response code and message, and our reason code."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        reason: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(f"{code} {reason}")
        self.status = status
        self.code = code
        self.message = message
        self.reason = reason
        self.headers = headers or {}

    def response(self) -> JSONResponse:
        body = SnapError(responseCode=self.code, responseMessage=self.message, reason=self.reason)
        return JSONResponse(body.model_dump(), status_code=self.status, headers=self.headers)


def _from_http(problem: HttpProblem, service: str = SERVICE) -> SnapProblem:
    """Transport-level refusals from connectors.http_common (body size, JSON, content type): 400xx00."""
    if problem.status < 500:
        return SnapProblem(problem.status, snap_code(400, "00", service), "Bad Request", problem.reason)
    return SnapProblem(problem.status, snap_code(500, "00", service), "General Error", problem.reason)


def _from_rejected(rejected: Rejected) -> SnapProblem:
    status, case, text = _REASON_CODES.get(rejected.reason, (400, "01", "Invalid Field Format"))
    message = f"{text} {rejected.field}" if rejected.field else text
    return SnapProblem(status, snap_code(status, case), message, rejected.reason)


def _missing(header: str, service: str = SERVICE, reason: str = HEADER_MISSING) -> SnapProblem:
    return SnapProblem(400, snap_code(400, "02", service), f"Invalid Mandatory Field {header}", reason)


def _invalid(header: str, service: str = SERVICE, reason: str = HEADER_INVALID) -> SnapProblem:
    return SnapProblem(400, snap_code(400, "01", service), f"Invalid Field Format {header}", reason)


def _unauthorized(why: str, reason: str) -> SnapProblem:
    return SnapProblem(
        401, snap_code(401, "00"), f"Unauthorized. {why}", reason, headers={"WWW-Authenticate": "Bearer"}
    )


def _require(value: str | None, header: str, pattern: re.Pattern[str]) -> str:
    if value is None or value == "":
        raise _missing(header)
    if pattern.fullmatch(value) is None:
        raise _invalid(header)
    return value


def _check_timestamp(value: str | None) -> str:
    value = _require(value, "X-TIMESTAMP", _TIMESTAMP)
    try:
        datetime.fromisoformat(value)
    except ValueError:
        raise _invalid("X-TIMESTAMP") from None
    return value


class _TokenGrant:
    """`POST /v1.0/access-token/b2b`: SHA256withRSA over `clientId|X-TIMESTAMP` -> a short-lived bearer token.

    Keys are loaded here, once, so that a broken PEM fails at start-up (SnapKeyError), not on a request.
    """

    def __init__(self, settings: Settings, issuer: TokenIssuer) -> None:
        self.settings = settings
        self.issuer = issuer
        self.keys: dict[str, list[rsa.RSAPublicKey]] = {
            bank: [load_rsa_public_key(pem.encode("ascii")) for pem in pems]
            for bank, pems in settings.bank_public_keys.items()
        }

    async def grant(
        self,
        request: Request,
        obs: RequestObservation,
        client_key: str | None,
        timestamp: str | None,
        signature: str | None,
    ) -> B2bTokenResponse:
        if not client_key:
            raise _missing("X-CLIENT-KEY", B2B_SERVICE)
        keys = self.keys.get(client_key)
        if not keys:
            raise _token_unauthorized("Unknown client", UNKNOWN_CLIENT)
        obs.partner = client_key
        if not timestamp:
            raise _missing("X-TIMESTAMP", B2B_SERVICE)
        try:
            ts = parse_snap_timestamp(timestamp)
        except SnapTimestampError:
            raise _invalid("X-TIMESTAMP", B2B_SERVICE) from None
        if not signature:
            raise _missing("X-SIGNATURE", B2B_SERVICE)
        if not within_window(ts, datetime.now(UTC), self.settings.snap_timestamp_skew_s):
            raise _token_unauthorized("Timestamp out of window", TIMESTAMP_OUT_OF_WINDOW)
        if not verify_rsa_sha256(keys, string_to_sign_token(client_key, timestamp), signature):
            raise _token_unauthorized("Invalid signature", SIGNATURE_INVALID)

        require_json_content_type(request)
        body = parse_json_object(await read_body(request, self.settings.max_body_bytes))
        grant_type = body.get("grantType")
        if grant_type is None or grant_type == "":
            raise _missing("grantType", B2B_SERVICE, GRANT_TYPE_MISSING)
        if grant_type != "client_credentials":
            raise _invalid("grantType", B2B_SERVICE, GRANT_TYPE_INVALID)

        token, expires_in = self.issuer.issue(client_key)
        event(log, "access token issued", bank=client_key)
        return B2bTokenResponse(accessToken=token, expiresIn=str(expires_in))


def _token_unauthorized(why: str, reason: str) -> SnapProblem:
    return SnapProblem(401, snap_code(401, "00", B2B_SERVICE), f"Unauthorized. {why}", reason)


class _PaymentIntake:
    def __init__(self, settings: Settings, producer: EdgeSender, issuer: TokenIssuer) -> None:
        self.settings = settings
        self.producer = producer
        self.issuer = issuer
        self.banks: dict[str, BankProfile] = load_banks(settings.banks_file)

    def _bank_of(self, authorization: str | None) -> str | None:
        """Static demo/simulator token (settings.bank_tokens) or a token issued by the B2B token endpoint."""
        token = bearer_token(authorization)
        if token is None:
            return None
        return authenticate(token, self.settings.bank_tokens) or self.issuer.resolve(token)

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
        bank_id = self._bank_of(authorization)
        if bank_id is None:
            raise _unauthorized("Invalid token", UNAUTHORIZED)
        obs.partner = bank_id
        partner_id = _require(partner_id, "X-PARTNER-ID", _PARTNER_ID)
        if partner_id != bank_id:
            raise _unauthorized("Unknown client", PARTNER_ID_MISMATCH)
        bank = self.banks.get(bank_id)
        if bank is None:  # a token without a bank profile is a configuration error
            raise _unauthorized("Unknown client", PARTNER_ID_MISMATCH)
        external_id = _require(external_id, "X-EXTERNAL-ID", _EXTERNAL_ID)
        x_timestamp = _check_timestamp(timestamp)
        channel_id = _require(channel_id, "CHANNEL-ID", _CHANNEL_ID)

        require_json_content_type(request)
        raw = await read_body(request, self.settings.max_body_bytes)
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
        await self.producer.send(PAYMENTS_RAW.name, payment.participant_id.encode(), raw, headers)
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


def _errors() -> dict[int | str, dict[str, Any]]:
    return {
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


def _token_errors() -> dict[int | str, dict[str, Any]]:
    return {
        400: _doc(
            "4007300 Bad Request (INVALID_JSON, ...); 4007301 Invalid Field Format {field} (HEADER_INVALID, "
            "GRANT_TYPE_INVALID); 4007302 Invalid Mandatory Field {field} (HEADER_MISSING, GRANT_TYPE_MISSING)"
        ),
        401: _doc("4017300 Unauthorized (UNKNOWN_CLIENT, SIGNATURE_INVALID, TIMESTAMP_OUT_OF_WINDOW)"),
        413: _doc("4007300 Bad Request (BODY_TOO_LARGE)"),
        415: _doc("4007300 Bad Request (UNSUPPORTED_MEDIA_TYPE)"),
        500: _doc("5007301 Internal Server Error (INTERNAL_ERROR)"),
    }


def create_bank_app(
    settings: Settings, producer: EdgeSender, *, token_clock: Callable[[], float] = time.monotonic
) -> FastAPI:
    """The SNAP biller API. The app starts the producer on startup and closes it on shutdown.

    `token_clock` drives B2B token expiry (monotonic in production; tests inject a fake one).
    Raises SnapKeyError when a configured bank public key is unusable.
    """
    issuer = TokenIssuer(settings.snap_token_ttl_s, token_clock)
    granter = _TokenGrant(settings, issuer)
    intake = _PaymentIntake(settings, producer, issuer)
    app = FastAPI(
        lifespan=producer_lifespan(producer),
        title="sinergi bank API (SNAP biller)",
        version="1.0.0",
        description="SNAP virtual-account endpoints for partner banks. Error bodies are "
        '{"responseCode", "responseMessage", "reason"}; personal values are never echoed.',
    )

    @app.post(
        "/v1.0/transfer-va/payment",
        response_model=VaPaymentResponse,
        responses=_errors(),
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
        obs = RequestObservation(API, ENDPOINT)
        try:
            result = await intake.pay(request, obs, authorization, x_partner_id, x_external_id, x_timestamp, channel_id)
        except SnapProblem as problem:
            return _refuse(obs, problem)
        except HttpProblem as problem:
            return _refuse(obs, _from_http(problem))
        except Rejected as rejected:
            return _refuse(obs, _from_rejected(rejected))
        except BrokerUnavailable as exc:
            event(log, "payment not recorded", bank=obs.partner, reason=exc.reason)
            return _refuse(
                obs,
                SnapProblem(
                    503,
                    snap_code(500, "02"),
                    "External Server Error",
                    BROKER_UNAVAILABLE,
                    headers={"Retry-After": str(RETRY_AFTER_S)},
                ),
            )
        except Exception as exc:
            log.error("payment intake failed: %s", where_failed(exc))
            return _refuse(obs, SnapProblem(500, snap_code(500, "01"), "Internal Server Error", INTERNAL_ERROR))
        obs.done(200)
        return JSONResponse(result.model_dump(mode="json"), status_code=200)

    @app.post(
        "/v1.0/access-token/b2b",
        response_model=B2bTokenResponse,
        responses=_token_errors(),
        summary="SNAP B2B access token (service 73): X-SIGNATURE = SHA256withRSA(clientId|X-TIMESTAMP)",
    )
    async def b2b_token(
        request: Request,
        x_client_key: Annotated[str | None, Header(alias="X-CLIENT-KEY", description="The bank id")] = None,
        x_timestamp: Annotated[str | None, Header(alias="X-TIMESTAMP", description="ISO-8601 with offset")] = None,
        x_signature: Annotated[
            str | None, Header(alias="X-SIGNATURE", description="Base64 SHA256withRSA of clientId|X-TIMESTAMP")
        ] = None,
    ) -> Response:
        obs = RequestObservation(API, B2B_ENDPOINT)
        try:
            result = await granter.grant(request, obs, x_client_key, x_timestamp, x_signature)
        except SnapProblem as problem:
            return _refuse(obs, problem, "access token refused")
        except HttpProblem as problem:
            return _refuse(obs, _from_http(problem, B2B_SERVICE), "access token refused")
        except Exception as exc:
            log.error("access token failed: %s", where_failed(exc))
            failure = SnapProblem(500, snap_code(500, "01", B2B_SERVICE), "Internal Server Error", INTERNAL_ERROR)
            return _refuse(obs, failure, "access token refused")
        obs.done(200)
        return JSONResponse(result.model_dump(mode="json"), status_code=200)

    @app.get("/healthz", response_model=Health)
    async def healthz() -> Health:
        return Health()

    document_request_bodies(
        app,
        {
            ("/v1.0/transfer-va/payment", "post"): VaPaymentRequest,
            ("/v1.0/access-token/b2b", "post"): B2bTokenRequest,
        },
    )
    return app


def _refuse(obs: RequestObservation, problem: SnapProblem, what: str = "payment refused") -> Response:
    obs.done(problem.status, problem.reason)
    if problem.status < 500:
        event(log, what, bank=obs.partner, reason=problem.reason, code=problem.code)
    return problem.response()
