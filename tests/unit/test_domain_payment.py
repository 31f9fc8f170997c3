from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.domain.errors import Rejected
from services.domain.identity import event_uuid
from services.domain.models import Payment
from services.domain.payment import normalize_payment, parse_amount, parse_trx_time, to_idr

PSID = "   88001"
CUSTOMER = "123456789012345678"
VA = PSID + CUSTOMER
RECEIVED = datetime(2025, 9, 1, 3, 20, tzinfo=UTC)
_DROP = object()


def body(**overrides: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "partnerServiceId": PSID,
        "customerNo": CUSTOMER,
        "virtualAccountNo": VA,
        "virtualAccountName": "SITI AMINAH",
        "paymentRequestId": "PAY-0001",
        "paidAmount": {"value": "370000.00", "currency": "IDR"},
        "trxDateTime": "2025-09-01T10:15:00+07:00",
        "channelCode": "6011",
        "partnerReferenceNo": "REF-1",
        "additionalInfo": {},
        "billDetails": [],  # ignored
    }
    for key, value in overrides.items():
        if value is _DROP:
            raw.pop(key, None)
        else:
            raw[key] = value
    return raw


def normalize(raw: Any, **kwargs: Any) -> Payment:
    args: dict[str, Any] = {
        "bank_id": "MANDIRI",
        "partner_service_id": PSID,
        "allowed_currencies": frozenset({"IDR", "MYR"}),
        "external_id": "41807553358950093184",
        "received_at": RECEIVED,
    }
    args.update(kwargs)
    return normalize_payment(raw, **args)


def rejected(raw: Any, **kwargs: Any) -> Rejected:
    with pytest.raises(Rejected) as info:
        normalize(raw, **kwargs)
    assert CUSTOMER not in str(info.value) and "SITI" not in str(info.value)
    return info.value


# --- parse_amount ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("370000.00", Decimal("370000.00")),
        ("0.01", Decimal("0.01")),
        ("1" * 16 + ".99", Decimal("1" * 16 + ".99")),
    ],
)
def test_parse_amount_accepts(value: str, expected: Decimal) -> None:
    assert parse_amount(value) == expected
    assert parse_amount(value).as_tuple().exponent == -2


@pytest.mark.parametrize(
    "value",
    [
        "1e5",
        "1E5",
        "1.00e2",
        "NaN",
        "nan",
        "Infinity",
        "-Infinity",
        "-1.00",
        "+1.00",
        "0.00",
        "000.00",
        "10000.0",
        "10000",
        "10000.",
        ".50",
        "10000.001",
        "10,000.00",
        "10000,00",
        " 10000.00",
        "10000.00 ",
        "10000.00\n",
        "1_000.00",
        "\u0661\u0660\u0660.\u0660\u0660",  # Arabic-Indic digits
        "1" * 17 + ".00",
        "",
        10000,
        10000.0,
        Decimal("10000.00"),
        None,
        True,
        ["10000.00"],
    ],
)
def test_parse_amount_attacks(value: Any) -> None:
    with pytest.raises(Rejected) as info:
        parse_amount(value)
    assert info.value.reason == "AMOUNT_FORMAT"


# --- FX ----------------------------------------------------------------------------------------------


def test_fx_conversion_is_exact_half_up() -> None:
    # 107.25 MYR * 3450.123456 = 370025.79065... -> 370026
    assert to_idr(Decimal("107.25"), Decimal("3450.123456")) == 370_026
    assert to_idr(Decimal("5.00"), Decimal("0.5")) == 3  # 2.5 -> 3 (half-up, not banker's 2)
    assert to_idr(Decimal("1.00"), Decimal("0.499999")) == 0
    # 18 x 18 significant digits: a float or the default 28-digit context would lose rupiah
    big = 999_999_999_999_999_999
    assert to_idr(Decimal("9999999999999999.99"), Decimal("999999999999.999999")) == (big * big + 50_000_000) // 10**8


@settings(max_examples=300)
@given(st.integers(min_value=1, max_value=10**18 - 1), st.integers(min_value=1, max_value=10**18 - 1))
def test_fx_conversion_matches_integer_oracle(cents: int, micro: int) -> None:
    amount = Decimal(cents).scaleb(-2)
    rate = Decimal(micro).scaleb(-6)
    # amount * rate in units of 1e-8; round half up to a whole rupiah with integers only
    expected = (cents * micro + 50_000_000) // 100_000_000
    assert to_idr(amount, rate) == expected


def test_foreign_currency_payment() -> None:
    p = normalize(
        body(
            paidAmount={"value": "107.25", "currency": "MYR"},
            additionalInfo={"fxRate": "3450.123456"},
            trxDateTime="2025-09-01T10:15:00+08:00",
        )
    )
    assert p.amount_idr == 370_026
    assert p.original_amount == Decimal("107.25") and p.original_currency == "MYR"
    assert p.fx_rate == Decimal("3450.123456")
    assert p.trx_time == datetime(2025, 9, 1, 2, 15, tzinfo=UTC) and p.trx_utc_offset_minutes == 480


def test_fx_rate_is_quantized_to_6_places() -> None:
    p = normalize(body(paidAmount={"value": "100.00", "currency": "MYR"}, additionalInfo={"fxRate": "3450"}))
    assert p.fx_rate is not None and p.fx_rate.as_tuple().exponent == -6
    assert p.amount_idr == 345_000


@pytest.mark.parametrize(
    ("info", "reason", "field"),
    [
        ({}, "MISSING_FIELD", "additionalInfo.fxRate"),
        (None, "MISSING_FIELD", "additionalInfo.fxRate"),
        ({"fxRate": 3450.12}, "FX_RATE_FORMAT", "additionalInfo.fxRate"),
        ({"fxRate": "3450.1234567"}, "FX_RATE_FORMAT", "additionalInfo.fxRate"),
        ({"fxRate": "1e3"}, "FX_RATE_FORMAT", "additionalInfo.fxRate"),
        ({"fxRate": "-3450"}, "FX_RATE_FORMAT", "additionalInfo.fxRate"),
        ({"fxRate": "0.000000"}, "FX_RATE_FORMAT", "additionalInfo.fxRate"),
        ({"fxRate": "NaN"}, "FX_RATE_FORMAT", "additionalInfo.fxRate"),
        ("fxRate=3450", "INVALID_FIELD", "additionalInfo"),
    ],
)
def test_foreign_currency_needs_a_valid_rate(info: Any, reason: str, field: str) -> None:
    exc = rejected(body(paidAmount={"value": "107.25", "currency": "MYR"}, additionalInfo=info))
    assert (exc.reason, exc.field) == (reason, field)


def test_rate_that_converts_to_zero_rupiah() -> None:
    exc = rejected(body(paidAmount={"value": "0.01", "currency": "MYR"}, additionalInfo={"fxRate": "0.000001"}))
    assert exc.reason == "AMOUNT_FORMAT"


# --- IDR and the rest of the body --------------------------------------------------------------------


def test_idr_payment() -> None:
    p = normalize(body())
    assert p.event_id == event_uuid("payment", "MANDIRI", "PAY-0001")
    assert p.participant_id == CUSTOMER and p.bank_id == "MANDIRI"
    assert p.partner_service_id == PSID and p.virtual_account_no == VA
    assert p.payment_request_id == "PAY-0001" and p.external_id == "41807553358950093184"
    assert p.partner_reference_no == "REF-1" and p.channel_code == "6011"
    assert p.amount_idr == 370_000 and isinstance(p.amount_idr, int)
    assert p.original_amount == Decimal("370000.00") and p.original_currency == "IDR" and p.fx_rate is None
    assert p.trx_time == datetime(2025, 9, 1, 3, 15, tzinfo=UTC) and p.trx_utc_offset_minutes == 420
    assert p.received_at == RECEIVED
    assert "SITI" not in p.model_dump_json()


def test_event_id_ignores_external_id_and_resends() -> None:
    a = normalize(body())
    b = normalize(body(), external_id="999", received_at=datetime(2025, 9, 2, tzinfo=UTC))
    assert a.event_id == b.event_id
    assert normalize(body(), bank_id="BNI").event_id != a.event_id


def test_optional_fields_may_be_absent() -> None:
    p = normalize(
        body(
            virtualAccountName=_DROP,
            channelCode=_DROP,
            partnerReferenceNo=_DROP,
            additionalInfo=_DROP,
            trxDateTime="2025-09-01T03:15:00Z",
        )
    )
    assert p.channel_code is None and p.partner_reference_no is None and p.trx_utc_offset_minutes == 0


def test_unpadded_partner_service_id_is_compared_padded() -> None:
    assert normalize(body(partnerServiceId="88001")).partner_service_id == PSID


@pytest.mark.parametrize(
    ("overrides", "reason", "field"),
    [
        ({"partnerServiceId": "   88002"}, "VA_MISMATCH", "partnerServiceId"),
        ({"virtualAccountNo": "88001" + CUSTOMER}, "VA_MISMATCH", "virtualAccountNo"),
        ({"virtualAccountNo": PSID + "123456789012345679"}, "VA_MISMATCH", "virtualAccountNo"),
        ({"customerNo": "12345678901234567a"}, "INVALID_FIELD", "customerNo"),
        ({"customerNo": "1" * 21}, "INVALID_FIELD", "customerNo"),
        ({"customerNo": 123456789012345678}, "INVALID_FIELD", "customerNo"),
        ({"customerNo": _DROP}, "MISSING_FIELD", "customerNo"),
        ({"partnerServiceId": _DROP}, "MISSING_FIELD", "partnerServiceId"),
        ({"virtualAccountNo": _DROP}, "MISSING_FIELD", "virtualAccountNo"),
        ({"paymentRequestId": _DROP}, "MISSING_FIELD", "paymentRequestId"),
        ({"paymentRequestId": 17}, "INVALID_FIELD", "paymentRequestId"),
        ({"paymentRequestId": "x" * 129}, "INVALID_FIELD", "paymentRequestId"),
        ({"paidAmount": _DROP}, "MISSING_FIELD", "paidAmount"),
        ({"paidAmount": "370000.00"}, "INVALID_FIELD", "paidAmount"),
        ({"paidAmount": {"currency": "IDR"}}, "MISSING_FIELD", "paidAmount.value"),
        ({"paidAmount": {"value": 370000.0, "currency": "IDR"}}, "AMOUNT_FORMAT", "paidAmount.value"),
        ({"paidAmount": {"value": "370000.50", "currency": "IDR"}}, "AMOUNT_FORMAT", "paidAmount.value"),
        ({"paidAmount": {"value": "370000.00"}}, "MISSING_FIELD", "paidAmount.currency"),
        (
            {"paidAmount": {"value": "370000.00", "currency": "HKD"}},
            "CURRENCY_NOT_ALLOWED",
            "paidAmount.currency",
        ),
        (
            {"paidAmount": {"value": "370000.00", "currency": "idr"}},
            "CURRENCY_NOT_ALLOWED",
            "paidAmount.currency",
        ),
        ({"paidAmount": {"value": "370000.00", "currency": 360}}, "INVALID_FIELD", "paidAmount.currency"),
        ({"additionalInfo": {"fxRate": "1.000000"}}, "INVALID_FIELD", "additionalInfo.fxRate"),
        ({"additionalInfo": ["x"]}, "INVALID_FIELD", "additionalInfo"),
        ({"trxDateTime": "2025-09-01T10:15:00"}, "TIMESTAMP_FORMAT", "trxDateTime"),
        ({"trxDateTime": "2025-09-01 10:15:00+07:00"}, "TIMESTAMP_FORMAT", "trxDateTime"),
        ({"trxDateTime": "2025-02-30T10:15:00+07:00"}, "TIMESTAMP_FORMAT", "trxDateTime"),
        ({"trxDateTime": "2025-09-01T10:15:00+0700"}, "TIMESTAMP_FORMAT", "trxDateTime"),
        ({"trxDateTime": "2025-09-01T10:15:00+15:00"}, "TIMESTAMP_FORMAT", "trxDateTime"),
        ({"trxDateTime": 1756696500}, "TIMESTAMP_FORMAT", "trxDateTime"),
        ({"trxDateTime": _DROP}, "TIMESTAMP_FORMAT", "trxDateTime"),
        ({"channelCode": 6011}, "INVALID_FIELD", "channelCode"),
        ({"partnerReferenceNo": ["r"]}, "INVALID_FIELD", "partnerReferenceNo"),
        ({"virtualAccountName": 5}, "INVALID_FIELD", "virtualAccountName"),
    ],
)
def test_rejections(overrides: dict[str, Any], reason: str, field: str) -> None:
    exc = rejected(body(**overrides))
    assert (exc.reason, exc.field) == (reason, field)


def test_currency_must_be_allowed_for_the_bank() -> None:
    exc = rejected(
        body(paidAmount={"value": "100.00", "currency": "MYR"}, additionalInfo={"fxRate": "3450"}),
        allowed_currencies={"IDR"},
    )
    assert exc.reason == "CURRENCY_NOT_ALLOWED"


@pytest.mark.parametrize("raw", [[], "x", None, 1])
def test_body_must_be_an_object(raw: Any) -> None:
    assert rejected(raw).reason == "INVALID_FIELD"


def test_external_id_and_received_at() -> None:
    assert rejected(body(), external_id="").field == "X-EXTERNAL-ID"
    with pytest.raises(ValueError):
        normalize(body(), received_at=datetime(2025, 9, 1))


def test_parse_trx_time_keeps_fractional_seconds_and_negative_offsets() -> None:
    when, offset = parse_trx_time("2025-09-01T10:15:00.123-03:30")
    assert offset == -210
    assert when == datetime(2025, 9, 1, 13, 45, 0, 123000, tzinfo=UTC)


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=6,
)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(body())), _JSON)
def test_any_value_in_any_field_is_accepted_or_rejected_never_crashes(field: str, value: Any) -> None:
    try:
        normalize(body(**{field: value}))
    except Rejected as exc:
        assert exc.reason.isupper()
