"""`POST /v1.0/transfer-va/inquiry` (SNAP service 24): what a bank asks before it collects a VA payment.

Answered from the member book (connectors.bank.member_book), the bank API's read model of members.v1;
nothing is produced. Order: read the raw body (bounded), authenticate exactly those bytes
(connectors.bank.auth), check X-EXTERNAL-ID and CHANNEL-ID, parse strictly, validate, and only then
consult the book: an unauthenticated caller learns nothing about which VAs exist.

Response codes (domain.md 4.4, 4.6: HTTP status + service code 24 + case):

    2002400  Successful                     the outstanding bill (bill minus what was paid), in IDR
    4002400  Bad Request                    body not parseable / too large (413) / wrong content type (415)
    4002401  Invalid Field Format {field}   header or body field malformed
    4002402  Invalid Mandatory Field {f}    header or body field missing (X-SIGNATURE included)
    4012400  Unauthorized. {why}            UNKNOWN_PARTNER, TIMESTAMP_OUT_OF_WINDOW, SIGNATURE_INVALID
    4012401  Unauthorized. Invalid Token    TOKEN_INVALID
    4042412  Invalid Bill/Virtual Account   VA_NOT_FOUND (unknown or cancelled), VA_MISMATCH (not this bank's
                                            prefix, or virtualAccountNo != partnerServiceId + customerNo)
    4042414  Paid Bill                      BILL_PAID: nothing outstanding
    4042419  Bill Expired                   BILL_EXPIRED: past bill_expires_on (WIB), or EXPIRED/LAPSED_REREGISTER
    5002401  Internal Server Error
    5002402  External Server Error          HTTP 503 + Retry-After, READ_MODEL_NOT_READY: the book is still
                                            loading; never a false "unknown VA" meanwhile

The answer names the member only by `virtualAccountName` (Settings.va_name_display); no other personal
field is in it, and refusals carry codes only.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from connectors.bank.context import BankContext
from connectors.bank.errors import (
    SERVICE_INQUIRY,
    SnapProblem,
    from_http,
    from_rejected,
    internal_error,
    invalid,
    missing,
    refuse,
    snap_code,
)
from connectors.bank.inquiry_models import (
    Bilingual,
    BillDescription,
    BillDetail,
    InquiryVirtualAccountData,
    VaInquiryRequest,
    VaInquiryResponse,
)
from connectors.bank.member_book import OpenBill, Refusal
from connectors.bank.models import Amount, SnapError
from connectors.bank.snap_headers import snap_headers
from connectors.http_common import (
    RETRY_AFTER_S,
    HttpProblem,
    RequestObservation,
    parse_json_object,
    read_body,
    require_json_content_type,
    where_failed,
)
from services.domain.errors import Reason, Rejected
from services.domain.identity import compose_va
from services.logs import event

log = logging.getLogger(__name__)

PATH = "/v1.0/transfer-va/inquiry"
ENDPOINT = "va_inquiry"
REFUSED = "inquiry refused"
READ_MODEL_NOT_READY = "READ_MODEL_NOT_READY"

REQUEST_BODIES = {(PATH, "post"): VaInquiryRequest}

_EXTERNAL_ID = re.compile(r"[0-9]{1,36}")
_CHANNEL_ID = re.compile(r"[A-Za-z0-9]{1,5}")
_CUSTOMER_NO = re.compile(r"[0-9]{1,20}")
_CHANNEL_CODE = re.compile(r"[0-9]{1,4}")
_AMOUNT = re.compile(r"[0-9]{1,16}\.[0-9]{2}")
_CURRENCY = re.compile(r"[A-Z]{3}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_TIMESTAMP = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?(Z|[+-][0-9]{2}:[0-9]{2})"
)

IDR = "IDR"
BILL_CODE = "01"
BILL_NAME = "Iuran BPJS Ketenagakerjaan PMI"
BILL_DESCRIPTION = BillDescription(english="PMI contribution", indonesia="Iuran BPJS TK PMI")
SUCCESS = Bilingual(english="Success", indonesia="Sukses")

# Refusals the book decides: (HTTP status, SNAP case, message).
_REFUSALS: dict[Refusal, tuple[int, str, str]] = {
    Refusal.VA_NOT_FOUND: (404, "12", "Invalid Bill/Virtual Account"),
    Refusal.BILL_PAID: (404, "14", "Paid Bill"),
    Refusal.BILL_EXPIRED: (404, "19", "Bill Expired"),
}


def rupiah(amount_idr: int) -> str:
    """A SNAP amount string from integer rupiah: 370000 -> "370000.00" (no float on the way)."""
    if isinstance(amount_idr, bool) or not isinstance(amount_idr, int) or amount_idr < 0:
        raise ValueError("amount must be a non-negative integer number of rupiah")
    return f"{amount_idr}.00"


@dataclass(frozen=True)
class InquiryBody:
    """The validated identifiers of an inquiry, verbatim as the bank sent them (they are echoed)."""

    partner_service_id: str
    customer_no: str
    virtual_account_no: str
    inquiry_request_id: str


def _verbatim(body: Mapping[str, Any], field: str, max_len: int) -> str:
    """A required string taken as sent (SNAP identifiers carry significant spaces)."""
    value = body.get(field)
    if value is None or value == "":
        raise Rejected(Reason.MISSING_FIELD, field, "is required")
    if not isinstance(value, str):
        raise Rejected(Reason.INVALID_FIELD, field, "must be a string")
    if len(value) > max_len:
        raise Rejected(Reason.INVALID_FIELD, field, f"must be at most {max_len} characters")
    return value


def _optional_str(body: Mapping[str, Any], field: str, max_len: int, pattern: re.Pattern[str] | None = None) -> None:
    value = body.get(field)
    if value is None:
        return
    if not isinstance(value, str) or len(value) > max_len or _CONTROL.search(value):
        raise Rejected(Reason.INVALID_FIELD, field, f"must be a string of at most {max_len} characters")
    if pattern is not None and pattern.fullmatch(value) is None:
        raise Rejected(Reason.INVALID_FIELD, field, "has an invalid format")


def _check_amount(value: object) -> None:
    if not isinstance(value, Mapping):
        raise Rejected(Reason.INVALID_FIELD, "amount", "must be a JSON object")
    amount = value.get("value")
    if not isinstance(amount, str) or _AMOUNT.fullmatch(amount) is None:
        raise Rejected(Reason.AMOUNT_FORMAT, "amount.value", "must be a string like 370000.00")
    currency = value.get("currency")
    if not isinstance(currency, str) or _CURRENCY.fullmatch(currency) is None:
        raise Rejected(Reason.INVALID_FIELD, "amount.currency", "must be an ISO 4217 code")


def _check_trx_date_init(value: object) -> None:
    if not isinstance(value, str) or _TIMESTAMP.fullmatch(value) is None:
        raise Rejected(Reason.TIMESTAMP_FORMAT, "trxDateInit", "must be ISO-8601 with an offset, e.g. +07:00")
    try:
        datetime.fromisoformat(value)
    except ValueError:
        raise Rejected(Reason.TIMESTAMP_FORMAT, "trxDateInit", "is not a real date and time") from None


def parse_inquiry(body: Mapping[str, Any], partner_service_id: str) -> InquiryBody:
    """Validate an inquiry body from the bank whose VA prefix is `partner_service_id`; raises Rejected.

    Unknown fields are ignored (SNAP adds optional ones); the optional fields SNAP defines are type-checked.
    """
    bank_psid = partner_service_id.rjust(8)
    psid = _verbatim(body, "partnerServiceId", 8)
    if psid.rjust(8) != bank_psid:
        raise Rejected(Reason.VA_MISMATCH, "partnerServiceId", "is not this bank's partnerServiceId")
    customer_no = _verbatim(body, "customerNo", 20)
    if _CUSTOMER_NO.fullmatch(customer_no) is None:
        raise Rejected(Reason.INVALID_FIELD, "customerNo", "must be 1-20 digits")
    va = _verbatim(body, "virtualAccountNo", 28)
    if va != compose_va(bank_psid, customer_no):
        raise Rejected(Reason.VA_MISMATCH, "virtualAccountNo", "must be partnerServiceId + customerNo")
    inquiry_request_id = _verbatim(body, "inquiryRequestId", 128)
    if not inquiry_request_id.strip():
        raise Rejected(Reason.MISSING_FIELD, "inquiryRequestId", "is required")
    if _CONTROL.search(inquiry_request_id):
        raise Rejected(Reason.INVALID_FIELD, "inquiryRequestId", "must not contain control characters")

    _optional_str(body, "channelCode", 4, _CHANNEL_CODE)
    _optional_str(body, "sourceBankCode", 8)
    _optional_str(body, "passApp", 64)
    if body.get("trxDateInit") is not None:
        _check_trx_date_init(body["trxDateInit"])
    if body.get("amount") is not None:
        _check_amount(body["amount"])
    info = body.get("additionalInfo")
    if info is not None and not isinstance(info, Mapping):
        raise Rejected(Reason.INVALID_FIELD, "additionalInfo", "must be a JSON object")
    return InquiryBody(psid, customer_no, va, inquiry_request_id)


def answer(inquiry: InquiryBody, bill: OpenBill) -> VaInquiryResponse:
    amount = Amount(value=rupiah(bill.outstanding_idr), currency=IDR)
    return VaInquiryResponse(
        virtualAccountData=InquiryVirtualAccountData(
            partnerServiceId=inquiry.partner_service_id,
            customerNo=inquiry.customer_no,
            virtualAccountNo=inquiry.virtual_account_no,
            virtualAccountName=bill.member.display_name,
            inquiryRequestId=inquiry.inquiry_request_id,
            totalAmount=amount,
            billDetails=[
                BillDetail(billCode=BILL_CODE, billName=BILL_NAME, billDescription=BILL_DESCRIPTION, billAmount=amount)
            ],
            inquiryReason=SUCCESS,
        )
    )


def _require(value: str | None, header: str, pattern: re.Pattern[str]) -> str:
    if value is None or value == "":
        raise missing(header, SERVICE_INQUIRY)
    if pattern.fullmatch(value) is None:
        raise invalid(header, SERVICE_INQUIRY)
    return value


def not_ready() -> SnapProblem:
    return SnapProblem(
        503,
        snap_code(500, "02", SERVICE_INQUIRY),
        "External Server Error",
        READ_MODEL_NOT_READY,
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )


def refusal_problem(refusal: Refusal) -> SnapProblem:
    status, case, message = _REFUSALS[refusal]
    return SnapProblem(status, snap_code(status, case, SERVICE_INQUIRY), message, refusal.value)


class Inquiry:
    def __init__(self, ctx: BankContext) -> None:
        self.ctx = ctx

    async def handle(
        self, request: Request, obs: RequestObservation, external_id: str | None, channel_id: str | None
    ) -> VaInquiryResponse:
        raw = await read_body(request, self.ctx.settings.max_body_bytes)
        auth = self.ctx.auth.verify(request, raw, SERVICE_INQUIRY, obs)
        _require(external_id, "X-EXTERNAL-ID", _EXTERNAL_ID)
        _require(channel_id, "CHANNEL-ID", _CHANNEL_ID)
        require_json_content_type(request)
        inquiry = parse_inquiry(parse_json_object(raw), auth.partner.profile.partner_service_id)
        book = self.ctx.book
        if not book.ready:
            raise not_ready()
        result = book.inquire(inquiry.customer_no)
        if isinstance(result, Refusal):
            raise refusal_problem(result)
        event(log, "inquiry answered", bank=obs.partner, code="2002400")
        return answer(inquiry, result)


def _doc(text: str) -> dict[str, Any]:
    return {"model": SnapError, "description": text}


ERRORS: dict[int | str, dict[str, Any]] = {
    400: _doc(
        "4002400 Bad Request (INVALID_JSON, INVALID_UTF8, NON_FINITE_NUMBER, DUPLICATE_KEY, JSON_TOO_DEEP, "
        "BODY_NOT_OBJECT); 4002401 Invalid Field Format {field} (INVALID_FIELD, AMOUNT_FORMAT, VA_FORMAT, "
        "TIMESTAMP_FORMAT, HEADER_INVALID); 4002402 Invalid Mandatory Field {field} (MISSING_FIELD, HEADER_MISSING)"
    ),
    401: _doc(
        "4012400 Unauthorized (UNKNOWN_PARTNER, TIMESTAMP_OUT_OF_WINDOW, SIGNATURE_INVALID); "
        "4012401 Invalid Token (TOKEN_INVALID)"
    ),
    404: _doc(
        "4042412 Invalid Bill/Virtual Account (VA_NOT_FOUND, VA_MISMATCH); 4042414 Paid Bill (BILL_PAID); "
        "4042419 Bill Expired (BILL_EXPIRED)"
    ),
    413: _doc("4002400 Bad Request (BODY_TOO_LARGE)"),
    415: _doc("4002400 Bad Request (UNSUPPORTED_MEDIA_TYPE)"),
    500: _doc("5002401 Internal Server Error (INTERNAL_ERROR)"),
    503: _doc(
        "5002402 External Server Error (READ_MODEL_NOT_READY): the member book is still loading; "
        "retry after Retry-After seconds"
    ),
}


def router(ctx: BankContext) -> APIRouter:
    inquiry = Inquiry(ctx)
    api = APIRouter()

    @api.post(
        PATH,
        response_model=VaInquiryResponse,
        responses=ERRORS,
        summary="VA inquiry (SNAP service 24): the outstanding bill of a virtual account",
        openapi_extra=snap_headers(
            external_id="Numeric, <= 36, unique per day",
            timestamp="ISO-8601 with offset",
            signature="Base64 HMAC-SHA512 over the request",
        ),
    )
    async def va_inquiry(request: Request) -> Response:
        # The headers are documented above and read from the request (connectors/bank/snap_headers.py says why).
        obs = RequestObservation("bank", ENDPOINT)
        headers = request.headers
        try:
            result = await inquiry.handle(request, obs, headers.get("x-external-id"), headers.get("channel-id"))
        except SnapProblem as problem:
            if problem.status >= 500:
                event(log, "inquiry unavailable", bank=obs.partner, reason=problem.reason)
            return refuse(obs, problem, REFUSED)
        except HttpProblem as problem:
            return refuse(obs, from_http(problem, SERVICE_INQUIRY), REFUSED)
        except Rejected as rejected:
            return refuse(obs, from_rejected(rejected, SERVICE_INQUIRY), REFUSED)
        except Exception as exc:
            log.error("inquiry failed: %s", where_failed(exc))
            return refuse(obs, internal_error(SERVICE_INQUIRY), REFUSED)
        obs.done(200)
        return JSONResponse(result.model_dump(mode="json"), status_code=200)

    return api
