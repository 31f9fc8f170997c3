"""Bank enrollments (`POST /v1/bank/enrollments`), in-process: a partner bank enrolls through the offices'
intake contract, owned by the office of the placement, idempotent per bank, and the normalizer agrees."""

from __future__ import annotations

import json
import logging
import uuid
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY

from connectors.bank.app import create_bank_app
from connectors.bank.snap_signing import sign_transactional_hmac
from connectors.kafka_edge import InMemoryProducer
from services.config import DEV_BANK_SECRETS, Settings
from services.context import build_context
from services.domain.identity import compose_va, participant_id
from services.normalize_enrollments import convert
from services.stage import received_at

URL = "/v1/bank/enrollments"
KBRI_URL = "/v1/enrollments"
WIB = timezone(timedelta(hours=7))
NIK = "3602045211870001"
PASSPORT = "C1234567"
TOKENS = {"MAYBANK_MY": "dev-token-maybank", "MANDIRI": "dev-token-mandiri", "BNI": "dev-token-bni"}
_UNSET: Any = object()


def enrollment(**overrides: Any) -> dict[str, Any]:
    departure = datetime.now(UTC).date() + timedelta(days=20)
    body: dict[str, Any] = {
        "nik": NIK,
        "full_name": "Siti Aminah",
        "date_of_birth": "1987-11-12",
        "sex": "F",
        "participant_type": "PLACED",
        "passport_number": PASSPORT,
        "destination_country": "MY",
        "placement_region": "Johor",
        "employer_name": "Syarikat Maju Sdn Bhd",
        "departure_date": departure.isoformat(),
        "contract_start": departure.isoformat(),
        "contract_months": 24,
        "programs": ["JKK", "JKM"],
    }
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not _UNSET}


def signed(
    raw: bytes,
    bank: str = "MAYBANK_MY",
    request_id: str | None = "mb-0001",
    *,
    external_id: str | None = "20260101000000000001",
    sign: bool = True,
    secret: str | None = None,
    token: str | None = None,
) -> dict[str, str]:
    """Headers of a bank's call, signed as the bank signs: HMAC-SHA512 over POST:path:token:digest:X-TIMESTAMP."""
    token = token or TOKENS[bank]
    ts = datetime.now(WIB).replace(microsecond=0).isoformat()
    out = {
        "Content-Type": "application/json",
        "Authorization": f"Bearer {token}",
        "X-PARTNER-ID": bank,
        "X-TIMESTAMP": ts,
    }
    if external_id is not None:
        out["X-EXTERNAL-ID"] = external_id
    if request_id is not None:
        out["X-Request-Id"] = request_id
    if sign:
        key = (secret or DEV_BANK_SECRETS[bank]).encode()
        out["X-SIGNATURE"] = sign_transactional_hmac(key, "POST", URL, token, raw, ts)
    return out


async def enroll(client: httpx.AsyncClient, body: dict[str, Any] | bytes, **kw: Any) -> httpx.Response:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return await client.post(URL, content=raw, headers=signed(raw, **kw))


def assert_error(resp: httpx.Response, status: int, reason: str, field: str | None = _UNSET) -> None:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"reason", "field", "message"}
    assert body["reason"] == reason
    if field is not _UNSET:
        assert body["field"] == field


def submissions(kind: str, submitter: str, reason: str | None) -> float:
    labels = {
        "kind": kind,
        "submitter": submitter,
        "outcome": "accepted" if reason is None else "rejected",
        "reason": reason or "none",
    }
    return REGISTRY.get_sample_value("sinergi_enrollment_submissions_total", labels) or 0.0


@pytest.fixture
def banks_file(tmp_path: Path, edge_settings: Settings) -> Path:
    """banks.json where BNI enrolls too (HK) and Maybank also lists a country without an office (JP)."""
    doc = json.loads(edge_settings.banks_file.read_text())
    for bank in doc["banks"]:
        if bank["bank_id"] == "BNI":
            bank["enrolls"] = True
        if bank["bank_id"] == "MAYBANK_MY":
            bank["countries"] = ["MY", "JP"]
    path = tmp_path / "banks.json"
    path.write_text(json.dumps(doc))
    return path


@pytest.fixture
async def two_bank_client(banks_file: Path, producer: InMemoryProducer) -> Any:
    app = create_bank_app(Settings(banks_file=banks_file), producer)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bank.test") as client:
        yield client


# --- accepted ----------------------------------------------------------------------------------------------
async def test_signed_enrollment_202_owned_by_the_placement_office(
    bank_client: httpx.AsyncClient, producer: InMemoryProducer, edge_settings: Settings
) -> None:
    before = submissions("bank", "MAYBANK_MY", None)
    raw = b" " + json.dumps(enrollment(), indent=1).encode() + b"\n"  # exact bytes travel, spacing included
    resp = await enroll(bank_client, raw)
    assert resp.status_code == 202, resp.text
    body = resp.json()

    customer_no = participant_id(NIK, edge_settings.participant_key_secret.get_secret_value().encode(), 18)
    assert body["status"] == "ACCEPTED"
    assert body["office_code"] == "KJRI_JOHOR_BAHRU"
    assert body["customer_no"] == customer_no
    assert body["warnings"] == []
    assert body["bill"]["amount_idr"] == 370_000
    assert body["bill"]["virtual_accounts"] == {
        "MANDIRI": compose_va("   88001", customer_no),
        "BNI": compose_va("   88002", customer_no),
        "MAYBANK_MY": compose_va("   88003", customer_no),
    }
    uuid.UUID(body["event_id"])
    assert submissions("bank", "MAYBANK_MY", None) == before + 1

    assert len(producer.records) == 1
    rec = producer.records[0]
    assert (rec.topic, rec.key, rec.value) == ("kbri.enrollments.raw", customer_no.encode(), raw)
    assert rec.header("sinergi-office") == b"KJRI_JOHOR_BAHRU"
    assert rec.header("sinergi-channel") == b"BANK_PARTNER"
    assert rec.header("sinergi-submitted-by") == b"bank:MAYBANK_MY"
    assert rec.header("sinergi-request-id") == b"mb-0001"
    assert rec.header("sinergi-event-id") == body["event_id"].encode()
    assert rec.header("sinergi-external-id") == b"20260101000000000001"

    # The normalizer, from the record alone, reaches the same verdict, event id and owner.
    headers = dict(rec.headers)
    ctx = build_context(edge_settings, codec=None)
    canonical = convert(ctx, json.loads(rec.value), headers, received_at(headers))
    assert canonical.event_id == body["event_id"]
    assert canonical.office_code == "KJRI_JOHOR_BAHRU"
    assert canonical.participant_id == customer_no
    assert canonical.channel == "BANK_PARTNER"
    assert canonical.office_request_id == "mb-0001"


@pytest.mark.parametrize(
    ("region", "office", "warnings"),
    [
        ("Tawau", "KRI_TAWAU", []),
        ("tawau, SABAH", "KRI_TAWAU", []),
        ("Sabah", "KJRI_KOTA_KINABALU", []),
        (_UNSET, "KBRI_KUALA_LUMPUR", []),
        ("Atlantis", "KBRI_KUALA_LUMPUR", ["PLACEMENT_REGION_UNKNOWN"]),
    ],
)
async def test_owner_follows_the_placement(
    bank_client: httpx.AsyncClient, producer: InMemoryProducer, region: Any, office: str, warnings: list[str]
) -> None:
    resp = await enroll(bank_client, enrollment(placement_region=region))
    assert resp.status_code == 202, resp.text
    assert resp.json()["office_code"] == office
    assert resp.json()["warnings"] == warnings
    assert producer.records[0].header("sinergi-office") == office.encode()


async def test_office_submission_ignores_placement_region(
    kbri_client: httpx.AsyncClient, producer: InMemoryProducer
) -> None:
    # An office owns what it submits: a Sabah placement sent by KBRI Kuala Lumpur stays Kuala Lumpur's.
    resp = await kbri_client.post(
        KBRI_URL,
        content=json.dumps(enrollment(placement_region="Sabah")).encode(),
        headers={
            "Authorization": "Bearer dev-token-kbri-kl",
            "X-Request-Id": "kl-1",
            "Content-Type": "application/json",
        },
    )
    assert resp.status_code == 202, resp.text
    assert "office_code" not in resp.json()
    assert producer.records[0].header("sinergi-office") == b"KBRI_KUALA_LUMPUR"
    assert producer.records[0].header("sinergi-submitted-by") is None


# --- idempotency, scoped to the bank -----------------------------------------------------------------------
async def test_same_request_id_same_event_id(bank_client: httpx.AsyncClient, producer: InMemoryProducer) -> None:
    first = await enroll(bank_client, enrollment(), request_id="mb-42")
    again = await enroll(bank_client, enrollment(), request_id="mb-42", external_id="20260101000000000002")
    other = await enroll(bank_client, enrollment(), request_id="mb-43")
    assert first.status_code == again.status_code == other.status_code == 202
    assert first.json()["event_id"] == again.json()["event_id"] != other.json()["event_id"]
    assert len(producer.records) == 3  # dedup is downstream, by event id


async def test_same_request_id_from_an_office_is_another_event(
    bank_client: httpx.AsyncClient, kbri_client: httpx.AsyncClient
) -> None:
    bank = await enroll(bank_client, enrollment(placement_region="Selangor"), request_id="shared-1")
    office = await kbri_client.post(
        KBRI_URL,
        content=json.dumps(enrollment()).encode(),
        headers={
            "Authorization": "Bearer dev-token-kbri-kl",
            "X-Request-Id": "shared-1",
            "Content-Type": "application/json",
        },
    )
    assert bank.status_code == office.status_code == 202
    assert bank.json()["office_code"] == "KBRI_KUALA_LUMPUR"  # same owner, same request id ...
    assert bank.json()["event_id"] != office.json()["event_id"]  # ... still two submitters, two events


async def test_same_request_id_from_two_banks_is_two_events(
    two_bank_client: httpx.AsyncClient, producer: InMemoryProducer
) -> None:
    maybank = await enroll(two_bank_client, enrollment(), request_id="r-7")
    hk = enrollment(destination_country="HK", placement_region=_UNSET)
    bni = await enroll(two_bank_client, hk, bank="BNI", request_id="r-7")
    assert maybank.status_code == bni.status_code == 202, bni.text
    assert bni.json()["office_code"] == "KJRI_HONG_KONG"
    assert maybank.json()["event_id"] != bni.json()["event_id"]
    assert [r.header("sinergi-submitted-by") for r in producer.records] == [b"bank:MAYBANK_MY", b"bank:BNI"]


# --- refusals ----------------------------------------------------------------------------------------------
async def test_bank_that_does_not_enroll_403(bank_client: httpx.AsyncClient, producer: InMemoryProducer) -> None:
    before = submissions("bank", "MANDIRI", "BANK_MAY_NOT_ENROLL")
    resp = await enroll(bank_client, enrollment(), bank="MANDIRI")
    assert_error(resp, 403, "BANK_MAY_NOT_ENROLL", None)
    assert producer.attempts == 0
    assert submissions("bank", "MANDIRI", "BANK_MAY_NOT_ENROLL") == before + 1


async def test_country_outside_the_bank_422(bank_client: httpx.AsyncClient, producer: InMemoryProducer) -> None:
    resp = await enroll(bank_client, enrollment(destination_country="HK", placement_region=_UNSET))
    assert_error(resp, 422, "PLACEMENT_OUTSIDE_BANK_COUNTRIES", "destination_country")
    assert producer.attempts == 0


async def test_country_without_an_office_422(two_bank_client: httpx.AsyncClient, producer: InMemoryProducer) -> None:
    resp = await enroll(two_bank_client, enrollment(destination_country="JP", placement_region="Tokyo"))
    assert_error(resp, 422, "NO_OFFICE_FOR_PLACEMENT", "destination_country")
    assert producer.attempts == 0


@pytest.mark.parametrize(
    ("kw", "reason", "field"),
    [
        ({"sign": False}, "HEADER_MISSING", "X-SIGNATURE"),
        ({"secret": "not-the-secret"}, "SIGNATURE_INVALID", "X-SIGNATURE"),
        ({"token": "dev-token-mandiri"}, "TOKEN_INVALID", "Authorization"),  # another bank's token
        ({"token": "forged"}, "TOKEN_INVALID", "Authorization"),
    ],
)
async def test_unauthenticated_401_nothing_produced(
    bank_client: httpx.AsyncClient, producer: InMemoryProducer, kw: dict[str, Any], reason: str, field: str
) -> None:
    resp = await enroll(bank_client, enrollment(), **kw)
    assert_error(resp, 401, reason, field)
    assert resp.headers["WWW-Authenticate"] == "Bearer"
    assert producer.attempts == 0


async def test_body_changed_after_signing_401(bank_client: httpx.AsyncClient, producer: InMemoryProducer) -> None:
    raw = json.dumps(enrollment()).encode()
    headers = signed(raw)
    tampered = raw.replace(b'"Johor"', b'"Sabah"')
    resp = await bank_client.post(URL, content=tampered, headers=headers)
    assert_error(resp, 401, "SIGNATURE_INVALID", "X-SIGNATURE")
    assert producer.attempts == 0


@pytest.mark.parametrize("drop", ["X-PARTNER-ID", "X-TIMESTAMP", "Authorization"])
async def test_missing_auth_header_401(bank_client: httpx.AsyncClient, producer: InMemoryProducer, drop: str) -> None:
    raw = json.dumps(enrollment()).encode()
    headers = signed(raw)
    del headers[drop]
    resp = await bank_client.post(URL, content=raw, headers=headers)
    assert resp.status_code == 401, resp.text
    assert producer.attempts == 0


@pytest.mark.parametrize(
    ("kw", "reason", "field"),
    [
        ({"request_id": None}, "REQUEST_ID_MISSING", "X-Request-Id"),
        ({"request_id": "has space"}, "REQUEST_ID_INVALID", "X-Request-Id"),
        ({"external_id": None}, "HEADER_MISSING", "X-EXTERNAL-ID"),
        ({"external_id": "EXT-1"}, "HEADER_INVALID", "X-EXTERNAL-ID"),
    ],
)
async def test_header_errors_400(
    bank_client: httpx.AsyncClient, producer: InMemoryProducer, kw: dict[str, Any], reason: str, field: str
) -> None:
    assert_error(await enroll(bank_client, enrollment(), **kw), 400, reason, field)
    assert producer.attempts == 0


@pytest.mark.parametrize(
    ("overrides", "reason", "field"),
    [
        ({"nik": "9902045211870001"}, "NIK_PROVINCE", "nik"),
        ({"passport_number": "c12 345"}, "PASSPORT_FORMAT", "passport_number"),
        ({"destination_country": "ID"}, "INVALID_FIELD", "destination_country"),
        ({"destination_country": _UNSET}, "MISSING_FIELD", "destination_country"),
        ({"placement_region": "x" * 65}, "INVALID_FIELD", "placement_region"),
        ({"placement_region": 7}, "INVALID_FIELD", "placement_region"),
        ({"programs": ["JKK"]}, "PROGRAMS", "programs"),
    ],
)
async def test_same_domain_rules_as_offices_422(
    bank_client: httpx.AsyncClient, producer: InMemoryProducer, overrides: dict[str, Any], reason: str, field: str
) -> None:
    assert_error(await enroll(bank_client, enrollment(**overrides)), 422, reason, field)
    assert producer.attempts == 0


async def test_transport_refusals(
    bank_client: httpx.AsyncClient, producer: InMemoryProducer, edge_settings: Settings
) -> None:
    assert_error(await enroll(bank_client, b'{"nik": "1", "nik": "2"}'), 400, "DUPLICATE_KEY")
    big = json.dumps(enrollment(employer_name="x" * edge_settings.max_body_bytes)).encode()
    assert_error(await enroll(bank_client, big), 413, "BODY_TOO_LARGE")
    raw = json.dumps(enrollment()).encode()
    headers = {**signed(raw), "Content-Type": "text/plain"}
    assert_error(await bank_client.post(URL, content=raw, headers=headers), 415, "UNSUPPORTED_MEDIA_TYPE")
    assert producer.attempts == 0


async def test_broker_unavailable_503_then_retry(bank_client: httpx.AsyncClient, producer: InMemoryProducer) -> None:
    producer.failing = "TIMEOUT"
    resp = await enroll(bank_client, enrollment())
    assert_error(resp, 503, "BROKER_UNAVAILABLE")
    assert int(resp.headers["Retry-After"]) > 0
    assert producer.records == []
    producer.failing = None
    retry = await enroll(bank_client, enrollment())
    assert retry.status_code == 202
    assert len(producer.records) == 1


# --- scope and personal data -------------------------------------------------------------------------------
async def test_no_endpoint_reads_enrollments_back(bank_client: httpx.AsyncClient) -> None:
    spec = (await bank_client.get("/openapi.json")).json()
    enrollment_paths = {path: set(ops) for path, ops in spec["paths"].items() if "enrollment" in path}
    assert enrollment_paths == {URL: {"post"}}
    body_schema = spec["components"]["schemas"]["EnrollmentRequest"]
    region = body_schema["properties"]["placement_region"]
    assert {"type": "string", "maxLength": 64} in region["anyOf"]
    resp = await bank_client.get(URL, headers={"Authorization": "Bearer dev-token-maybank"})
    assert resp.status_code == 405


async def test_no_personal_data_in_responses_or_logs(
    bank_client: httpx.AsyncClient, producer: InMemoryProducer, caplog: pytest.LogCaptureFixture
) -> None:
    cases = [
        enrollment(),
        enrollment(nik="9902045211870001"),
        enrollment(passport_number="c1234567"),
        enrollment(destination_country="HK"),
        enrollment(placement_region="Atlantis"),
    ]
    texts: list[str] = []
    with caplog.at_level(logging.DEBUG):
        for i, body in enumerate(cases):
            resp = await enroll(bank_client, body, request_id=f"pii-{i}")
            texts.append(resp.text + repr(dict(resp.headers)))
        texts.append((await enroll(bank_client, enrollment(), sign=False)).text)
    for text in [*texts, caplog.text]:
        for value in (NIK, "9902045211870001", PASSPORT, "c1234567", "Siti Aminah", "Syarikat Maju"):
            assert value not in text
        assert DEV_BANK_SECRETS["MAYBANK_MY"] not in text
        assert "dev-token-maybank" not in text
