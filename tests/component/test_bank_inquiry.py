"""SNAP VA inquiry (service 24), in-process: signed requests against a member book filled by hand."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY

from connectors.bank.app import create_bank_app
from connectors.bank.member_book import MemberBook, OpenBill, Refusal
from connectors.bank.snap_signing import sign_transactional_hmac
from connectors.kafka_edge import InMemoryProducer
from services.config import DEV_BANK_SECRETS, Settings
from services.domain.models import MemberRecord, MemberStatus, ParticipantType, Program, Sex

URL = "/v1.0/transfer-va/inquiry"
PSID = "   88001"  # MANDIRI in banks.json
WIB = timezone(timedelta(hours=7))
NIK = "3201011203900001"
PASSPORT = "C1234567"

OPEN = "100000000000000001"
PARTIAL = "100000000000000002"
PAID = "100000000000000003"
PAST_DUE = "100000000000000004"
EXPIRED = "100000000000000005"
LAPSED = "100000000000000006"
CANCELLED = "100000000000000007"
UNKNOWN_VA = "199999999999999999"


def member(customer_no: str, version: int = 1, **overrides: Any) -> MemberRecord:
    fields: dict[str, Any] = {
        "record_id": f"{customer_no}:{version}",
        "participant_id": customer_no,
        "version": version,
        "status": MemberStatus.AWAITING_PAYMENT,
        "office_code": "KBRI_KUALA_LUMPUR",
        "full_name": "Siti Aminah",
        "pii_encrypted": f'{{"nik":"{NIK}","passport_number":"{PASSPORT}"}}'.encode(),
        "date_of_birth": date(1990, 3, 12),
        "sex": Sex.F,
        "participant_type": ParticipantType.PLACED,
        "destination_country": "MY",
        "programs": [Program.JKK, Program.JKM],
        "customer_no": customer_no,
        "bill_amount_idr": 370_000,
        "paid_amount_idr": 0,
        "bill_issued_at": datetime.now(UTC),
        "bill_expires_on": datetime.now(WIB).date() + timedelta(days=30),
        "enrollment_event_id": "enr-1",
        "payment_event_ids": [],
        "caused_by_event_id": "enr-1",
        "updated_at": datetime.now(UTC),
    }
    fields.update(overrides)
    return MemberRecord(**fields)


class SpyBook(MemberBook):
    """Counts every look-up: an unauthenticated request must not reach the book at all."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lookups = 0

    def inquire(self, customer_no: str) -> OpenBill | Refusal:
        self.lookups += 1
        return super().inquire(customer_no)


def fill(book: MemberBook) -> None:
    yesterday = datetime.now(WIB).date() - timedelta(days=1)
    book.apply(member(OPEN))
    book.apply(member(PARTIAL, 2, paid_amount_idr=120_000, payment_event_ids=["p-1"]))
    book.apply(member(PAID, 3, status=MemberStatus.ACTIVE, paid_amount_idr=370_000, payment_event_ids=["p-2"]))
    book.apply(member(PAST_DUE, bill_expires_on=yesterday))
    book.apply(member(EXPIRED, 4, status=MemberStatus.EXPIRED))
    book.apply(member(LAPSED, 5, status=MemberStatus.LAPSED_REREGISTER))
    book.apply(member(CANCELLED, 2, status=MemberStatus.CANCELLED))


@pytest.fixture
def book() -> SpyBook:
    b = SpyBook("FULL")
    fill(b)
    b.mark_ready()
    return b


async def _client(settings: Settings, book: MemberBook) -> AsyncIterator[httpx.AsyncClient]:
    app = create_bank_app(settings, InMemoryProducer(), book=book)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bank.test") as client:
        yield client


@pytest.fixture
async def client(book: SpyBook) -> AsyncIterator[httpx.AsyncClient]:
    async for c in _client(Settings(), book):
        yield c


def inquiry(customer_no: str = OPEN, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "partnerServiceId": PSID,
        "customerNo": customer_no,
        "virtualAccountNo": PSID + customer_no,
        "inquiryRequestId": "MDR-INQ-20261125-000123",
        "channelCode": "6011",
        "trxDateInit": "2026-11-25T10:54:58+07:00",
        "amount": {"value": "370000.00", "currency": "IDR"},
        "additionalInfo": {},
    }
    body.update(overrides)
    return body


def headers(
    raw: bytes,
    *,
    bank: str = "MANDIRI",
    token: str | None = "dev-token-mandiri",
    secret: str | None = DEV_BANK_SECRETS["MANDIRI"],
    timestamp: str | None = None,
    external_id: str | None = "41230000000000001",
    channel: str | None = "95221",
    signature: str | None = None,
) -> dict[str, str]:
    ts = timestamp or datetime.now(WIB).isoformat(timespec="seconds")
    out = {"Content-Type": "application/json", "X-PARTNER-ID": bank, "X-TIMESTAMP": ts}
    if token is not None:
        out["Authorization"] = f"Bearer {token}"
    if signature is not None:
        out["X-SIGNATURE"] = signature
    elif secret is not None:
        out["X-SIGNATURE"] = sign_transactional_hmac(secret.encode(), "POST", URL, token or "", raw, ts)
    if external_id is not None:
        out["X-EXTERNAL-ID"] = external_id
    if channel is not None:
        out["CHANNEL-ID"] = channel
    return out


async def ask(client: httpx.AsyncClient, body: dict[str, Any] | bytes, **kw: Any) -> httpx.Response:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return await client.post(URL, content=raw, headers=headers(raw, **kw))


def assert_snap_error(resp: httpx.Response, status: int, code: str, reason: str) -> None:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"responseCode", "responseMessage", "reason"}
    assert (body["responseCode"], body["reason"]) == (code, reason), body


# --- answers ----------------------------------------------------------------------------------------------
async def test_open_bill_is_answered_with_the_outstanding_amount(client: httpx.AsyncClient) -> None:
    resp = await ask(client, inquiry(OPEN))
    assert resp.status_code == 200, resp.text
    assert resp.json() == {
        "responseCode": "2002400",
        "responseMessage": "Successful",
        "virtualAccountData": {
            "partnerServiceId": PSID,
            "customerNo": OPEN,
            "virtualAccountNo": PSID + OPEN,
            "virtualAccountName": "SITI AMINAH",
            "inquiryRequestId": "MDR-INQ-20261125-000123",
            "totalAmount": {"value": "370000.00", "currency": "IDR"},
            "billDetails": [
                {
                    "billCode": "01",
                    "billName": "Iuran BPJS Ketenagakerjaan PMI",
                    "billDescription": {"english": "PMI contribution", "indonesia": "Iuran BPJS TK PMI"},
                    "billAmount": {"value": "370000.00", "currency": "IDR"},
                }
            ],
            "inquiryStatus": "00",
            "inquiryReason": {"english": "Success", "indonesia": "Sukses"},
        },
    }


async def test_a_partly_paid_bill_answers_what_is_left(client: httpx.AsyncClient) -> None:
    resp = await ask(client, inquiry(PARTIAL))
    assert resp.status_code == 200, resp.text
    data = resp.json()["virtualAccountData"]
    assert data["totalAmount"] == {"value": "250000.00", "currency": "IDR"}
    assert data["billDetails"][0]["billAmount"] == {"value": "250000.00", "currency": "IDR"}


async def test_minimal_body_without_optional_fields(client: httpx.AsyncClient) -> None:
    body = {k: v for k, v in inquiry(OPEN).items() if k in ("partnerServiceId", "customerNo", "virtualAccountNo")}
    body["inquiryRequestId"] = "1"
    resp = await ask(client, body)
    assert resp.status_code == 200, resp.text
    assert resp.json()["virtualAccountData"]["inquiryRequestId"] == "1"


@pytest.mark.parametrize(
    ("customer_no", "code", "reason"),
    [
        (UNKNOWN_VA, "4042412", "VA_NOT_FOUND"),
        (CANCELLED, "4042412", "VA_NOT_FOUND"),
        (PAID, "4042414", "BILL_PAID"),
        (PAST_DUE, "4042419", "BILL_EXPIRED"),
        (EXPIRED, "4042419", "BILL_EXPIRED"),
        (LAPSED, "4042419", "BILL_EXPIRED"),
    ],
)
async def test_no_payable_bill(client: httpx.AsyncClient, customer_no: str, code: str, reason: str) -> None:
    resp = await ask(client, inquiry(customer_no))
    assert_snap_error(resp, 404, code, reason)


async def test_not_ready_is_503_with_retry_after_never_a_false_unknown_va() -> None:
    loading = SpyBook("FULL")
    loading.apply(member(OPEN))  # part of the topic read, not yet caught up
    async for client in _client(Settings(), loading):
        for customer_no in (OPEN, UNKNOWN_VA):
            resp = await ask(client, inquiry(customer_no))
            assert_snap_error(resp, 503, "5002402", "READ_MODEL_NOT_READY")
            assert resp.headers["Retry-After"] == "5"
        # A malformed request is the bank's mistake whether or not the book is ready.
        resp = await ask(client, inquiry(OPEN, customerNo="12ab"))
        assert_snap_error(resp, 400, "4002401", "INVALID_FIELD")
        loading.mark_ready()
        assert (await ask(client, inquiry(OPEN))).status_code == 200
        assert_snap_error(await ask(client, inquiry(UNKNOWN_VA)), 404, "4042412", "VA_NOT_FOUND")


async def test_an_app_without_a_reader_is_never_ready() -> None:
    app = create_bank_app(Settings(), InMemoryProducer())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bank.test") as client:
        assert_snap_error(await ask(client, inquiry(OPEN)), 503, "5002402", "READ_MODEL_NOT_READY")


# --- authentication before anything else ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kw", "status", "code", "reason"),
    [
        ({"token": None}, 401, "4012401", "TOKEN_INVALID"),
        ({"token": "dev-token-bni"}, 401, "4012401", "TOKEN_INVALID"),  # another bank's token
        ({"signature": "AAAA"}, 401, "4012400", "SIGNATURE_INVALID"),
        ({"secret": DEV_BANK_SECRETS["BNI"]}, 401, "4012400", "SIGNATURE_INVALID"),  # signed with the wrong secret
        ({"timestamp": "2020-01-01T00:00:00+07:00"}, 401, "4012400", "TIMESTAMP_OUT_OF_WINDOW"),
        ({"bank": "NOBANK"}, 401, "4012400", "UNKNOWN_PARTNER"),
        ({"secret": None}, 400, "4002402", "HEADER_MISSING"),  # unsigned: X-SIGNATURE is a mandatory header
    ],
)
@pytest.mark.parametrize("customer_no", [OPEN, UNKNOWN_VA])
async def test_unauthenticated_requests_never_reach_the_book(
    client: httpx.AsyncClient, book: SpyBook, kw: dict[str, Any], status: int, code: str, reason: str, customer_no: str
) -> None:
    resp = await ask(client, inquiry(customer_no), **kw)
    assert_snap_error(resp, status, code, reason)
    assert book.lookups == 0


async def test_a_signature_over_another_body_is_refused(client: httpx.AsyncClient, book: SpyBook) -> None:
    signed = json.dumps(inquiry(OPEN)).encode()
    sent = json.dumps(inquiry(PARTIAL)).encode()
    resp = await client.post(URL, content=sent, headers=headers(signed))
    assert_snap_error(resp, 401, "4012400", "SIGNATURE_INVALID")
    assert book.lookups == 0


async def test_whitespace_outside_strings_does_not_break_the_signature(client: httpx.AsyncClient) -> None:
    resp = await ask(client, b"\n " + json.dumps(inquiry(OPEN), indent=2).encode())
    assert resp.status_code == 200, resp.text


# --- malformed ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("body", "status", "code", "reason"),
    [
        (b"{not json", 400, "4002400", "INVALID_JSON"),
        (b"[]", 400, "4002400", "BODY_NOT_OBJECT"),
        (b'{"customerNo": "1", "customerNo": "2"}', 400, "4002400", "DUPLICATE_KEY"),
        (inquiry(OPEN, inquiryRequestId=None), 400, "4002402", "MISSING_FIELD"),
        (inquiry(OPEN, inquiryRequestId="   "), 400, "4002402", "MISSING_FIELD"),
        (inquiry(OPEN, inquiryRequestId="x" * 129), 400, "4002401", "INVALID_FIELD"),
        (inquiry(OPEN, inquiryRequestId="a\nb"), 400, "4002401", "INVALID_FIELD"),
        ({k: v for k, v in inquiry(OPEN).items() if k != "customerNo"}, 400, "4002402", "MISSING_FIELD"),
        ({k: v for k, v in inquiry(OPEN).items() if k != "partnerServiceId"}, 400, "4002402", "MISSING_FIELD"),
        (inquiry(OPEN, customerNo=int(OPEN)), 400, "4002401", "INVALID_FIELD"),
        (inquiry(OPEN, customerNo="1" * 21), 400, "4002401", "INVALID_FIELD"),
        (inquiry(OPEN, virtualAccountNo=PSID + OPEN + "0"), 404, "4042412", "VA_MISMATCH"),
        (inquiry(OPEN, virtualAccountNo=PSID + PARTIAL), 404, "4042412", "VA_MISMATCH"),
        (inquiry(OPEN, partnerServiceId="   88002", virtualAccountNo="   88002" + OPEN), 404, "4042412", "VA_MISMATCH"),
        (inquiry(OPEN, amount={"value": "3.7e5", "currency": "IDR"}), 400, "4002401", "AMOUNT_FORMAT"),
        (inquiry(OPEN, amount={"value": 370000, "currency": "IDR"}), 400, "4002401", "AMOUNT_FORMAT"),
        (inquiry(OPEN, amount={"value": "370000.00", "currency": "idr"}), 400, "4002401", "INVALID_FIELD"),
        (inquiry(OPEN, amount="370000.00"), 400, "4002401", "INVALID_FIELD"),
        (inquiry(OPEN, trxDateInit="2026-11-25 10:54"), 400, "4002401", "TIMESTAMP_FORMAT"),
        (inquiry(OPEN, trxDateInit="2026-02-30T10:54:58+07:00"), 400, "4002401", "TIMESTAMP_FORMAT"),
        (inquiry(OPEN, channelCode="60111"), 400, "4002401", "INVALID_FIELD"),
        (inquiry(OPEN, channelCode=6011), 400, "4002401", "INVALID_FIELD"),
        (inquiry(OPEN, additionalInfo=[]), 400, "4002401", "INVALID_FIELD"),
    ],
)
async def test_malformed_bodies(
    client: httpx.AsyncClient, book: SpyBook, body: Any, status: int, code: str, reason: str
) -> None:
    assert_snap_error(await ask(client, body), status, code, reason)
    assert book.lookups == 0


@pytest.mark.parametrize(
    ("kw", "code"),
    [
        ({"external_id": None}, "4002402"),
        ({"external_id": "ABC"}, "4002401"),
        ({"channel": None}, "4002402"),
        ({"channel": "TOOLONG"}, "4002401"),
    ],
)
async def test_mandatory_headers(client: httpx.AsyncClient, book: SpyBook, kw: dict[str, Any], code: str) -> None:
    resp = await ask(client, inquiry(OPEN), **kw)
    assert resp.status_code == 400 and resp.json()["responseCode"] == code, resp.text
    assert book.lookups == 0


async def test_unknown_fields_are_ignored(client: httpx.AsyncClient) -> None:
    resp = await ask(client, inquiry(OPEN, sourceBankCode="008", passApp="x", flagAdvise="N", freeTexts=[]))
    assert resp.status_code == 200, resp.text


# --- personal data ---------------------------------------------------------------------------------------------------
async def test_no_personal_value_beyond_the_display_name(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    bodies = [(await ask(client, inquiry(c))).text for c in (OPEN, PARTIAL, PAID, PAST_DUE, CANCELLED, UNKNOWN_VA)]
    bodies.append((await ask(client, inquiry(OPEN, customerNo="12ab"))).text)
    for text in bodies:
        for value in (NIK, PASSPORT, "1990-03-12", "KBRI_KUALA_LUMPUR", '"F"', "JKK", "enr-1", "p-1"):
            assert value not in text
    assert "SITI AMINAH" in bodies[0]
    assert all("SITI" not in text and "Siti" not in text for text in bodies[2:])  # refusals name nobody
    logged = caplog.text + " ".join(str(getattr(r, "fields", "")) for r in caplog.records)
    assert "inquiry refused" in logged and "BILL_PAID" in logged  # the refusals were logged, by code
    for value in (NIK, PASSPORT, "SITI", "Siti", OPEN, UNKNOWN_VA, PSID + OPEN):
        assert value not in logged


async def test_initials_display_setting() -> None:
    settings = Settings(va_name_display="INITIALS")
    book = MemberBook(settings.va_name_display)
    book.apply(member(OPEN, full_name="Siti Aminah Binti Ahmad"))
    book.mark_ready()
    async for client in _client(settings, book):
        resp = await ask(client, inquiry(OPEN))
        assert resp.status_code == 200, resp.text
        assert resp.json()["virtualAccountData"]["virtualAccountName"] == "SITI A. B. A."
        assert "Aminah" not in resp.text and "AMINAH" not in resp.text


# --- metrics and the OpenAPI document --------------------------------------------------------------------------------
async def test_outcomes_are_counted(client: httpx.AsyncClient) -> None:
    def count(outcome: str) -> float:
        labels = {"api": "bank", "endpoint": "va_inquiry", "partner": "MANDIRI", "outcome": outcome}
        return REGISTRY.get_sample_value("sinergi_http_requests_total", labels) or 0.0

    def rejected(reason: str) -> float:
        labels = {"api": "bank", "endpoint": "va_inquiry", "reason": reason}
        return REGISTRY.get_sample_value("sinergi_http_rejections_total", labels) or 0.0

    accepted, refused, paid = count("accepted"), count("rejected"), rejected("BILL_PAID")
    await ask(client, inquiry(OPEN))
    await ask(client, inquiry(PAID))
    assert count("accepted") == accepted + 1
    assert count("rejected") == refused + 1
    assert rejected("BILL_PAID") == paid + 1


async def test_openapi_documents_the_body_and_every_code(client: httpx.AsyncClient) -> None:
    doc = (await client.get("/openapi.json")).json()
    op = doc["paths"][URL]["post"]
    assert op["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/VaInquiryRequest"
    }
    request_schema = doc["components"]["schemas"]["VaInquiryRequest"]
    assert {"partnerServiceId", "customerNo", "virtualAccountNo", "inquiryRequestId"} <= set(request_schema["required"])
    assert {"200", "400", "401", "404", "413", "415", "500", "503"} <= set(op["responses"])
    for status, code in (("404", "4042414"), ("404", "4042419"), ("404", "4042412"), ("503", "5002402")):
        assert code in op["responses"][status]["description"]
    headers_documented = {p["name"].lower() for p in op["parameters"] if p["in"] == "header"}
    assert {"authorization", "x-partner-id", "x-external-id", "x-timestamp", "x-signature", "channel-id"} <= (
        headers_documented
    )
