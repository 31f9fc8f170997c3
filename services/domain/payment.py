"""Normalize a SNAP VA payment notification (service 25, domain.md 4.5) into a ``Payment``.

Raw body (SNAP camelCase; unknown extra fields such as billDetails, hashedSourceAccountNo, flagAdvise
are ignored; virtualAccountName is type-checked and dropped, it is personal data)::

    field               type    rule
    partnerServiceId    string  the bank's VA prefix, left-padded with spaces to 8            required
    customerNo          string  1-20 digits; it is the participant id                         required
    virtualAccountNo    string  == partnerServiceId (padded to 8) + customerNo, <= 28 chars   required
    virtualAccountName  string                                                              optional
    paymentRequestId    string  1-128 chars, the bank's id of this payment                  required
    paidAmount          object  {"value": "^\\d{1,16}\\.\\d{2}$", "currency": ISO 4217}       required
    trxDateTime         string  ISO-8601 with offset or Z, e.g. 2025-09-01T10:15:00+07:00     required
    channelCode         string  ISO 18245 MCC                                               optional
    partnerReferenceNo  string                                                              optional
    additionalInfo      object  {"fxRate": "3450.123456"} when currency != IDR              optional

FX convention (ONE, agreed with each bank): ``paidAmount`` is always what the worker paid, in the currency
the worker paid in. For IDR the value must be whole rupiah (``.00``) and ``additionalInfo.fxRate`` must
be absent. For any other currency (which must be in the bank's allowed list),
``additionalInfo.fxRate`` is required: IDR per one unit, a decimal string with up to 6 decimals, and
``amount_idr = round_half_up(value * fxRate)`` to whole rupiah, computed exactly with Decimal.

Example (Mandiri, collected in Malaysia)::

    {"partnerServiceId": "   88001", "customerNo": "123456789012345678",
     "virtualAccountNo": "   88001123456789012345678", "paymentRequestId": "MIR-20250901-000123",
     "paidAmount": {"value": "107.25", "currency": "MYR"}, "trxDateTime": "2025-09-01T10:15:00+08:00",
     "channelCode": "6011", "partnerReferenceNo": "MIR123", "additionalInfo": {"fxRate": "3450.123456"}}

    -> amount_idr = 370026 (107.25 * 3450.123456 = 370025.7906...), trx_time 02:15 UTC, offset +480.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from datetime import datetime
from decimal import ROUND_HALF_UP, Context, Decimal
from typing import Any

from pydantic import ValidationError

from services.domain._fields import as_mapping, get_str, req_str
from services.domain.dates import require_aware
from services.domain.errors import Reason, Rejected
from services.domain.identity import compose_va, event_uuid
from services.domain.models import Payment

IDR = "IDR"
_AMOUNT = re.compile(r"[0-9]{1,16}\.[0-9]{2}")
_FX_RATE = re.compile(r"[0-9]{1,12}(\.[0-9]{1,6})?")
_CURRENCY = re.compile(r"[A-Z]{3}")
_CUSTOMER_NO = re.compile(r"[0-9]{1,20}")
_TIMESTAMP = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?(Z|[+-][0-9]{2}:[0-9]{2})"
)
_EXACT = Context(prec=60)  # 18 + 18 significant digits fit: the product is exact
_MAX_IDR = 10**16 - 1  # fits a long and the decimal(18,2) of the schema
_ONE = Decimal(1)


def parse_amount(value: str) -> Decimal:
    """A SNAP amount string: 1-16 digits, a dot, exactly 2 decimals, greater than zero.

    Anything else (a JSON number, exponent, NaN/Infinity, sign, spaces, 0 or 3 decimals, zero) is
    Rejected(AMOUNT_FORMAT). ASCII digits only.
    """
    if not isinstance(value, str) or _AMOUNT.fullmatch(value) is None:
        raise Rejected(Reason.AMOUNT_FORMAT, "paidAmount.value", "must be a string like 370000.00")
    amount = Decimal(value)
    if amount <= 0:
        raise Rejected(Reason.AMOUNT_FORMAT, "paidAmount.value", "must be greater than zero")
    return amount


def parse_fx_rate(value: object) -> Decimal:
    """IDR per one unit of the paid currency: a decimal string, up to 12 digits and 6 decimals, > 0."""
    if not isinstance(value, str) or _FX_RATE.fullmatch(value) is None:
        raise Rejected(Reason.FX_RATE_FORMAT, "additionalInfo.fxRate", "must be a string like 3450.123456")
    rate = Decimal(value)
    if rate <= 0:
        raise Rejected(Reason.FX_RATE_FORMAT, "additionalInfo.fxRate", "must be greater than zero")
    return rate.quantize(Decimal("0.000001"))


def to_idr(amount: Decimal, fx_rate: Decimal) -> int:
    """``amount * fx_rate`` rounded half-up to whole rupiah, exactly."""
    product = _EXACT.multiply(amount, fx_rate)
    return int(product.quantize(_ONE, rounding=ROUND_HALF_UP, context=_EXACT))


def parse_trx_time(value: object) -> tuple[datetime, int]:
    """``(UTC datetime, original offset in minutes)`` of an ISO-8601 time with an explicit offset or Z."""
    if not isinstance(value, str) or _TIMESTAMP.fullmatch(value) is None:
        raise Rejected(Reason.TIMESTAMP_FORMAT, "trxDateTime", "must be ISO-8601 with an offset, e.g. +07:00")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise Rejected(Reason.TIMESTAMP_FORMAT, "trxDateTime", "is not a real date and time") from None
    offset = parsed.utcoffset()
    if offset is None:  # pragma: no cover - the pattern requires an offset
        raise Rejected(Reason.TIMESTAMP_FORMAT, "trxDateTime", "must carry a UTC offset")
    minutes = int(offset.total_seconds()) // 60
    if abs(minutes) > 14 * 60:
        raise Rejected(Reason.TIMESTAMP_FORMAT, "trxDateTime", "UTC offset out of range")
    return require_aware(parsed, "trxDateTime"), minutes


def _req_verbatim(raw: Mapping[str, Any], field: str, *, max_len: int) -> str:
    """A required string taken verbatim (no stripping): SNAP identifiers carry significant spaces."""
    value = raw.get(field)
    if value is None or value == "":
        raise Rejected(Reason.MISSING_FIELD, field, "is required")
    if not isinstance(value, str):
        raise Rejected(Reason.INVALID_FIELD, field, "must be a string")
    if len(value) > max_len:
        raise Rejected(Reason.INVALID_FIELD, field, f"must be at most {max_len} characters")
    return value


def normalize_payment(
    raw: Mapping[str, Any],
    *,
    bank_id: str,
    partner_service_id: str,
    allowed_currencies: Collection[str],
    external_id: str,
    received_at: datetime,
) -> Payment:
    """Validate ``raw`` (see the module docstring) from bank ``bank_id`` and build the canonical ``Payment``.

    ``partner_service_id`` is the bank's configured VA prefix; ``external_id`` the X-EXTERNAL-ID header.
    Raises :class:`Rejected`; a naive ``received_at`` is a ValueError.
    """
    received_utc = require_aware(received_at, "received_at")
    if not isinstance(external_id, str) or not external_id.strip():
        raise Rejected(Reason.MISSING_FIELD, "X-EXTERNAL-ID", "is required")
    body = as_mapping(raw, None)

    psid = _req_verbatim(body, "partnerServiceId", max_len=8)
    bank_psid = partner_service_id.rjust(8)
    if psid.rjust(8) != bank_psid:
        raise Rejected(Reason.VA_MISMATCH, "partnerServiceId", "is not this bank's partnerServiceId")
    customer_no = _req_verbatim(body, "customerNo", max_len=20)
    if _CUSTOMER_NO.fullmatch(customer_no) is None:
        raise Rejected(Reason.INVALID_FIELD, "customerNo", "must be 1-20 digits")
    va = _req_verbatim(body, "virtualAccountNo", max_len=28)
    if va != compose_va(bank_psid, customer_no):
        raise Rejected(Reason.VA_MISMATCH, "virtualAccountNo", "must be partnerServiceId + customerNo")
    get_str(body, "virtualAccountName", required=False)
    payment_request_id = req_str(body, "paymentRequestId", max_len=128)

    paid = body.get("paidAmount")
    if paid is None:
        raise Rejected(Reason.MISSING_FIELD, "paidAmount", "is required")
    paid = as_mapping(paid, "paidAmount")
    if paid.get("value") is None:
        raise Rejected(Reason.MISSING_FIELD, "paidAmount.value", "is required")
    amount = parse_amount(paid["value"])
    currency = req_str(paid, "currency", max_len=3, label="paidAmount.currency")
    if _CURRENCY.fullmatch(currency) is None or currency not in allowed_currencies:
        raise Rejected(Reason.CURRENCY_NOT_ALLOWED, "paidAmount.currency", "currency is not accepted from this bank")

    info_raw = body.get("additionalInfo")
    info = as_mapping(info_raw, "additionalInfo") if info_raw is not None else {}
    fx_raw = info.get("fxRate")
    fx_rate: Decimal | None
    if currency == IDR:
        if fx_raw is not None:
            raise Rejected(Reason.INVALID_FIELD, "additionalInfo.fxRate", "must be absent for IDR payments")
        if amount != amount.to_integral_value():
            raise Rejected(Reason.AMOUNT_FORMAT, "paidAmount.value", "IDR amounts must be whole rupiah (.00)")
        fx_rate, amount_idr = None, int(amount)
    else:
        if fx_raw is None:
            raise Rejected(Reason.MISSING_FIELD, "additionalInfo.fxRate", "is required for non-IDR payments")
        fx_rate = parse_fx_rate(fx_raw)
        amount_idr = to_idr(amount, fx_rate)
        if amount_idr <= 0:
            raise Rejected(Reason.AMOUNT_FORMAT, "paidAmount.value", "converts to less than one rupiah")
    if amount_idr > _MAX_IDR:
        raise Rejected(Reason.AMOUNT_FORMAT, "paidAmount.value", "amount is too large")

    trx_time, offset_minutes = parse_trx_time(body.get("trxDateTime"))
    channel_code = get_str(body, "channelCode", required=False, max_len=16)
    partner_reference_no = get_str(body, "partnerReferenceNo", required=False, max_len=128)

    try:
        return Payment(
            event_id=event_uuid("payment", bank_id, payment_request_id),
            participant_id=customer_no,
            bank_id=bank_id,
            partner_service_id=bank_psid,
            virtual_account_no=va,
            payment_request_id=payment_request_id,
            external_id=external_id,
            partner_reference_no=partner_reference_no,
            amount_idr=amount_idr,
            original_amount=amount,
            original_currency=currency,
            fx_rate=fx_rate,
            trx_time=trx_time,
            trx_utc_offset_minutes=offset_minutes,
            channel_code=channel_code,
            received_at=received_utc,
        )
    except ValidationError as exc:  # safety net: the checks above should make this unreachable
        loc = exc.errors()[0]["loc"]
        raise Rejected(Reason.INVALID_FIELD, str(loc[0]) if loc else None, "invalid value") from None
