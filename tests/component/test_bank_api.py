"""SNAP VA payment notification, in-process: codes, produced records, and hostile amounts.

Every request is signed like a bank signs it (HMAC-SHA512 with the bank's dev secret), so that the
refusals below are the body's or the header's, not the signature's. Signature attacks, replays and
the broker outage are in test_bank_payment_security.py.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta, timezone
from typing import Annotated, Any

import httpx
import pytest
from fastapi import FastAPI, Header

from connectors.bank.snap_headers import header_parameter
from connectors.bank.snap_signing import sign_transactional_hmac
from connectors.kafka_edge import InMemoryProducer
from services.config import DEV_BANK_SECRETS, Settings

URL = "/v1.0/transfer-va/payment"
CUSTOMER_NO = "123456789012345678"
PSID = "   88001"  # MANDIRI in banks.json
VA = PSID + CUSTOMER_NO
WIB = timezone(timedelta(hours=7))
NOW = "<now>"  # sentinel: sign with the current time


def payment(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "partnerServiceId": PSID,
        "customerNo": CUSTOMER_NO,
        "virtualAccountNo": VA,
        "virtualAccountName": "Siti Aminah",
        "paymentRequestId": "MDR-20250901-000123",
        "paidAmount": {"value": "370000.00", "currency": "IDR"},
        "trxDateTime": "2025-09-01T10:15:00+07:00",
        "channelCode": "6011",
        "partnerReferenceNo": "MDR123",
    }
    body.update(overrides)
    return body


def now_ts(delta_s: float = 0, tz: timezone = WIB) -> str:
    """X-TIMESTAMP as a bank sends it, `yyyy-MM-ddTHH:mm:ss+07:00`, `delta_s` away from now."""
    ts = (datetime.now(tz) + timedelta(seconds=delta_s)).replace(microsecond=0).isoformat()
    return ts.replace("+00:00", "Z")


def snap_headers(
    raw: bytes,
    token: str | None = "dev-token-mandiri",
    partner: str | None = "MANDIRI",
    external_id: str | None = "20250901000000000001",
    timestamp: str | None = NOW,
    channel: str | None = "95221",
    secret: str | None = None,
    sign: bool = True,
) -> dict[str, str]:
    """Headers of a SNAP payment call, signed like a bank: HMAC-SHA512 with `secret` (default: the dev secret
    of `partner`) over POST:path:token:hex(sha256(minify(raw))):X-TIMESTAMP."""
    ts = now_ts() if timestamp is NOW else timestamp
    out = {"Content-Type": "application/json"}
    for name, value in (
        ("Authorization", f"Bearer {token}" if token is not None else None),
        ("X-PARTNER-ID", partner),
        ("X-EXTERNAL-ID", external_id),
        ("X-TIMESTAMP", ts),
        ("CHANNEL-ID", channel),
    ):
        if value is not None:
            out[name] = value
    if sign:
        key = secret if secret is not None else DEV_BANK_SECRETS.get(partner or "", "unknown-partner-secret")
        out["X-SIGNATURE"] = sign_transactional_hmac(key.encode(), "POST", URL, token or "", raw, ts or "")
    return out


async def pay(client: httpx.AsyncClient, body: bytes | dict[str, Any], **kw: Any) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return await client.post(URL, content=content, headers=snap_headers(content, **kw))


def assert_snap_error(resp: httpx.Response, status: int, code: str, reason: str | None = None) -> None:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"responseCode", "responseMessage", "reason"}
    assert body["responseCode"] == code
    if reason is not None:
        assert body["reason"] == reason


# --- happy path ----------------------------------------------------------------------------------------
async def test_payment_200_after_ack(bank_client: httpx.AsyncClient, producer: InMemoryProducer) -> None:
    raw = b" " + json.dumps(payment(), indent=2).encode()
    ts = now_ts()
    resp = await pay(bank_client, raw, timestamp=ts)
    assert resp.status_code == 200, resp.text
    assert resp.json() == {
        "responseCode": "2002500",
        "responseMessage": "Successful",
        "virtualAccountData": {
            "partnerServiceId": PSID,
            "customerNo": CUSTOMER_NO,
            "virtualAccountNo": VA,
            "paymentRequestId": "MDR-20250901-000123",
            "paidAmount": {"value": "370000.00", "currency": "IDR"},
            "paymentFlagStatus": "00",
            "paymentFlagReason": {"english": "Success", "indonesia": "Sukses"},
        },
    }
    assert len(producer.records) == 1
    rec = producer.records[0]
    assert rec.topic == "bank.payments.raw"
    assert rec.key == CUSTOMER_NO.encode()
    assert rec.value == raw
    assert rec.header("sinergi-bank") == b"MANDIRI"
    assert rec.header("sinergi-external-id") == b"20250901000000000001"
    assert rec.header("sinergi-event-id") is not None
    assert rec.header("sinergi-received-at") is not None
    assert rec.header("sinergi-channel-id") == b"95221"
    assert rec.header("sinergi-x-timestamp") == ts.encode()


async def test_same_payment_same_event_id(bank_client: httpx.AsyncClient, producer: InMemoryProducer) -> None:
    assert (await pay(bank_client, payment())).status_code == 200
    assert (await pay(bank_client, payment(), external_id="99")).status_code == 200
    assert (await pay(bank_client, payment(paymentRequestId="OTHER"), external_id="100")).status_code == 200
    ids = [r.header("sinergi-event-id") for r in producer.records]
    assert ids[0] == ids[1] != ids[2]


async def test_foreign_currency_with_fx_rate(bank_client: httpx.AsyncClient, producer: InMemoryProducer) -> None:
    body = payment(paidAmount={"value": "107.25", "currency": "MYR"}, additionalInfo={"fxRate": "3450.123456"})
    resp = await pay(bank_client, body)
    assert resp.status_code == 200, resp.text
    assert resp.json()["virtualAccountData"]["paidAmount"] == {"value": "107.25", "currency": "MYR"}
    assert len(producer.records) == 1


async def test_utc_timestamp_accepted(bank_client: httpx.AsyncClient) -> None:
    resp = await pay(bank_client, payment(), timestamp=now_ts(tz=UTC))
    assert resp.status_code == 200, resp.text


# --- auth (the attacks are in test_bank_payment_security.py) --------------------------------------------
@pytest.mark.parametrize(
    ("kw", "code", "reason"),
    [
        ({"token": None}, "4012501", "TOKEN_INVALID"),
        ({"token": "wrong"}, "4012501", "TOKEN_INVALID"),
        ({"token": "dev-token-kbri-kl"}, "4012501", "TOKEN_INVALID"),  # an office token is not a bank token
        ({"partner": "BNI"}, "4012501", "TOKEN_INVALID"),  # Mandiri's token, BNI's partner id (and secret)
        ({"token": "dev-token-bni"}, "4012501", "TOKEN_INVALID"),  # BNI's token, Mandiri's partner id
        ({"partner": "mandiri"}, "4012500", "UNKNOWN_PARTNER"),
        ({"sign": False}, None, None),
        ({"secret": "dev-client-secret-bni"}, "4012500", "SIGNATURE_INVALID"),
    ],
)
async def test_unauthorized(
    bank_client: httpx.AsyncClient, producer: InMemoryProducer, kw: dict[str, Any], code: str | None, reason: str
) -> None:
    resp = await pay(bank_client, payment(), **kw)
    if code is None:  # no X-SIGNATURE: a missing mandatory header (auth.py), still nothing produced
        assert_snap_error(resp, 400, "4002502", "HEADER_MISSING")
        assert "X-SIGNATURE" in resp.json()["responseMessage"]
    else:
        assert_snap_error(resp, 401, code, reason)
    assert producer.attempts == 0


async def test_other_bank_cannot_pay_mandiri_va(bank_client: httpx.AsyncClient, producer: InMemoryProducer) -> None:
    resp = await pay(bank_client, payment(), token="dev-token-bni", partner="BNI")
    assert_snap_error(resp, 404, "4042512", "VA_MISMATCH")
    assert producer.attempts == 0


# --- headers -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kw", "code", "reason"),
    [
        ({"partner": None}, "4002502", "HEADER_MISSING"),
        ({"partner": "MANDIRI/1"}, "4002501", "HEADER_INVALID"),
        ({"external_id": None}, "4002502", "HEADER_MISSING"),
        ({"external_id": "12ab"}, "4002501", "HEADER_INVALID"),
        ({"external_id": "1" * 37}, "4002501", "HEADER_INVALID"),
        ({"external_id": "-1"}, "4002501", "HEADER_INVALID"),
        ({"timestamp": None}, "4002502", "HEADER_MISSING"),
        ({"timestamp": "2025-09-01 10:15:01"}, "4002501", "HEADER_INVALID"),
        ({"timestamp": "2025-09-01T10:15:01"}, "4002501", "HEADER_INVALID"),
        ({"timestamp": "2025-13-01T10:15:01+07:00"}, "4002501", "HEADER_INVALID"),
        ({"channel": None}, "4002502", "HEADER_MISSING"),
        ({"channel": "123456"}, "4002501", "HEADER_INVALID"),
    ],
)
async def test_header_errors_400(
    bank_client: httpx.AsyncClient, producer: InMemoryProducer, kw: dict[str, Any], code: str, reason: str
) -> None:
    resp = await pay(bank_client, payment(), **kw)
    assert_snap_error(resp, 400, code, reason)
    assert producer.attempts == 0


async def test_external_id_36_digits_ok(bank_client: httpx.AsyncClient) -> None:
    assert (await pay(bank_client, payment(), external_id="9" * 36)).status_code == 200


# --- amounts: never 500, never produced ----------------------------------------------------------------
AMOUNT_ATTACKS: list[Any] = [
    "1e5",
    "NaN",
    "Infinity",
    "-1.00",
    "0.00",
    10000,
    10000.0,
    "10000.001",
    "10000",
    "10000.0",
    " 10000.00",
    "10,000.00",
    "+10000.00",
    "\u0661\u0660\u0660\u0660\u0660.\u0660\u0660",  # Arabic-Indic digits
    "10000.00\n",
    "0x10.00",
    "",
    True,
    None,
    [],
    {},
    "1" * 17 + ".00",
]


@pytest.mark.parametrize("value", AMOUNT_ATTACKS, ids=[repr(v) for v in AMOUNT_ATTACKS])
async def test_amount_attacks_400(bank_client: httpx.AsyncClient, producer: InMemoryProducer, value: Any) -> None:
    resp = await pay(bank_client, payment(paidAmount={"value": value, "currency": "IDR"}))
    assert resp.status_code == 400, resp.text
    assert resp.json()["responseCode"] in {"4002501", "4002502"}
    assert producer.attempts == 0


@pytest.mark.parametrize(
    "raw",
    [
        b'{"paidAmount": {"value": NaN, "currency": "IDR"}}',
        b'{"paidAmount": {"value": 1e999, "currency": "IDR"}}',
        b'{"paidAmount": {"value": "1.00", "value": "370000.00", "currency": "IDR"}}',
    ],
)
async def test_amount_json_tricks_400(bank_client: httpx.AsyncClient, producer: InMemoryProducer, raw: bytes) -> None:
    resp = await pay(bank_client, raw)
    assert_snap_error(resp, 400, "4002500")
    assert producer.attempts == 0


@pytest.mark.parametrize(
    "paid", ["370000.00", None, [], {"value": "1.00"}, {"currency": "IDR"}, {"value": "1.00", "currency": 5}]
)
async def test_paid_amount_shapes_never_500(
    bank_client: httpx.AsyncClient, producer: InMemoryProducer, paid: Any
) -> None:
    resp = await pay(bank_client, payment(paidAmount=paid))
    assert resp.status_code == 400, resp.text
    assert resp.json()["responseCode"] in {"4002501", "4002502"}
    assert producer.attempts == 0


async def test_currency_not_allowed_4042513(bank_client: httpx.AsyncClient, producer: InMemoryProducer) -> None:
    resp = await pay(bank_client, payment(paidAmount={"value": "100.00", "currency": "USD"}))
    assert_snap_error(resp, 404, "4042513", "CURRENCY_NOT_ALLOWED")
    assert producer.attempts == 0


async def test_idr_fraction_rejected(bank_client: httpx.AsyncClient, producer: InMemoryProducer) -> None:
    resp = await pay(bank_client, payment(paidAmount={"value": "370000.50", "currency": "IDR"}))
    assert_snap_error(resp, 400, "4002501", "AMOUNT_FORMAT")
    assert resp.json()["responseMessage"] == "Invalid Field Format paidAmount.value"
    assert producer.attempts == 0


# --- body fields ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("overrides", "status", "code", "reason"),
    [
        ({"virtualAccountNo": "   88001999999999999999"}, 404, "4042512", "VA_MISMATCH"),
        ({"virtualAccountNo": "88001" + CUSTOMER_NO}, 404, "4042512", "VA_MISMATCH"),
        (
            {"partnerServiceId": "   88002", "virtualAccountNo": "   88002" + CUSTOMER_NO},
            404,
            "4042512",
            "VA_MISMATCH",
        ),
        ({"customerNo": "12345ABC"}, 400, "4002501", "INVALID_FIELD"),
        ({"paymentRequestId": None}, 400, "4002502", "MISSING_FIELD"),
        ({"paymentRequestId": 42}, 400, "4002501", "INVALID_FIELD"),
        ({"trxDateTime": "2025-09-01T10:15:00"}, 400, "4002501", "TIMESTAMP_FORMAT"),
        ({"trxDateTime": None}, 400, "4002501", "TIMESTAMP_FORMAT"),
        ({"additionalInfo": {"fxRate": "1.0"}}, 400, "4002501", "INVALID_FIELD"),
        ({"additionalInfo": "x"}, 400, "4002501", "INVALID_FIELD"),
    ],
)
async def test_body_field_errors(
    bank_client: httpx.AsyncClient,
    producer: InMemoryProducer,
    overrides: dict[str, Any],
    status: int,
    code: str,
    reason: str,
) -> None:
    resp = await pay(bank_client, payment(**overrides))
    assert_snap_error(resp, status, code, reason)
    assert producer.attempts == 0


@pytest.mark.parametrize(
    "raw", [b"{oops", b"[]", b'{"a":' + b"[" * 25 + b"]" * 25 + b"}", b'{"customerNo": "\xc3\x28"}']
)
async def test_bad_json_4002500(bank_client: httpx.AsyncClient, producer: InMemoryProducer, raw: bytes) -> None:
    resp = await pay(bank_client, raw)
    assert_snap_error(resp, 400, "4002500")
    assert producer.attempts == 0


async def test_oversized_body(
    bank_client: httpx.AsyncClient, producer: InMemoryProducer, edge_settings: Settings
) -> None:
    resp = await pay(bank_client, payment(virtualAccountName="x" * edge_settings.max_body_bytes))
    assert_snap_error(resp, 413, "4002500", "BODY_TOO_LARGE")
    assert producer.attempts == 0


# --- broker --------------------------------------------------------------------------------------------
async def test_broker_down_503(bank_client: httpx.AsyncClient, producer: InMemoryProducer) -> None:
    producer.failing = "TIMEOUT"
    resp = await pay(bank_client, payment())
    assert_snap_error(resp, 503, "5002502", "BROKER_UNAVAILABLE")
    assert int(resp.headers["Retry-After"]) > 0
    assert "virtualAccountData" not in resp.json()
    assert producer.records == []


async def test_no_personal_data_in_logs_or_errors(
    bank_client: httpx.AsyncClient, producer: InMemoryProducer, caplog: pytest.LogCaptureFixture
) -> None:
    texts = []
    with caplog.at_level(logging.DEBUG):
        texts.append((await pay(bank_client, payment(), external_id="1")).text)
        texts.append((await pay(bank_client, payment(customerNo="12345ABC"), external_id="2")).text)
        texts.append((await pay(bank_client, payment(virtualAccountName=7), external_id="3")).text)
        texts.append((await pay(bank_client, payment(paymentRequestId="X"), external_id="1")).text)  # 409
        producer.failing = "TIMEOUT"
        texts.append((await pay(bank_client, payment(), external_id="4")).text)
    logged = caplog.text + "".join(repr(r.__dict__) for r in caplog.records)
    assert "Siti Aminah" not in logged
    assert CUSTOMER_NO not in logged
    assert all("Siti Aminah" not in t for t in texts)
    assert all("12345ABC" not in t for t in texts[1:])


async def test_openapi_and_health(bank_client: httpx.AsyncClient) -> None:
    spec = (await bank_client.get("/openapi.json")).json()
    op = spec["paths"]["/v1.0/transfer-va/payment"]["post"]
    assert op["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/VaPaymentRequest")
    assert {"200", "400", "401", "404", "409", "413", "415", "503"} <= set(op["responses"])
    for code in ("4012500", "4012501", "4092500", "UNKNOWN_PARTNER", "TIMESTAMP_OUT_OF_WINDOW", "SIGNATURE_INVALID"):
        assert code in json.dumps(op["responses"]), code
    assert {"VaPaymentResponse", "SnapError", "Amount"} <= set(spec["components"]["schemas"])
    fx = spec["components"]["schemas"]["PaymentAdditionalInfo"]["properties"]["fxRate"]["description"]
    assert all(currency in fx for currency in ("MYR", "HKD", "TWD", "SGD", "IDR"))
    names = {p["name"].lower() for p in op["parameters"]}
    assert {"authorization", "x-partner-id", "x-external-id", "x-timestamp", "x-signature", "channel-id"} <= names
    assert (await bank_client.get("/healthz")).json() == {"status": "ok"}


def test_the_documented_snap_headers_are_what_fastapi_generates_for_header_parameters() -> None:
    # The SNAP endpoints read their headers from the request (connectors/bank/snap_headers.py); their OpenAPI
    # parameters must stay what FastAPI writes for a Header() parameter, so clients and schemathesis see no change.
    probe = FastAPI()

    @probe.post("/probe")
    async def declared(
        authorization: Annotated[str | None, Header(description="Bearer <B2B access token>")] = None,
        x_partner_id: Annotated[str | None, Header(alias="X-PARTNER-ID", description="The bank id")] = None,
    ) -> None:
        return None

    generated = probe.openapi()["paths"]["/probe"]["post"]["parameters"]
    assert generated == [
        header_parameter("authorization", "Bearer <B2B access token>"),
        header_parameter("X-PARTNER-ID", "The bank id"),
    ]


async def test_the_snap_endpoints_document_their_six_headers(bank_client: httpx.AsyncClient) -> None:
    spec = (await bank_client.get("/openapi.json")).json()
    for path in ("/v1.0/transfer-va/payment", "/v1.0/transfer-va/inquiry"):
        parameters = spec["paths"][path]["post"]["parameters"]
        assert [p["name"] for p in parameters] == [
            "authorization",
            "X-PARTNER-ID",
            "X-EXTERNAL-ID",
            "X-TIMESTAMP",
            "X-SIGNATURE",
            "CHANNEL-ID",
        ], path
        assert all(p["in"] == "header" and p["description"] for p in parameters), path
