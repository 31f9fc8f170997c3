"""KBRI enrollment intake, in-process: what is answered, what is produced, what is never leaked."""

from __future__ import annotations

import json
import logging
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import pytest

from connectors.kafka_edge import InMemoryProducer
from connectors.kbri.app import create_kbri_app
from services.config import Settings
from services.domain.identity import compose_va, participant_id

NIK = "3602045211870001"  # Banten, female, born 12 Nov 1987, serial 0001 (domain.md 2.1 example, +40)
PASSPORT = "C1234567"
TOKEN = "dev-token-kbri-kl"
OFFICE = "KBRI_KUALA_LUMPUR"
URL = "/v1/enrollments"


def _today() -> date:
    return datetime.now(UTC).date()


def enrollment(**overrides: Any) -> dict[str, Any]:
    departure = _today() + timedelta(days=20)
    body: dict[str, Any] = {
        "nik": NIK,
        "full_name": "Siti Aminah",
        "date_of_birth": "1987-11-12",
        "sex": "F",
        "participant_type": "PLACED",
        "passport_number": PASSPORT,
        "destination_country": "MY",
        "employer_name": "Syarikat Maju Sdn Bhd",
        "departure_date": departure.isoformat(),
        "contract_start": departure.isoformat(),
        "contract_months": 24,
        "programs": ["JKK", "JKM"],
    }
    for key, value in overrides.items():
        if value is _DROP:
            body.pop(key, None)
        else:
            body[key] = value
    return body


_DROP = object()


def headers(token: str = TOKEN, request_id: str | None = "req-0001", **extra: str) -> dict[str, str]:
    out = {"Authorization": f"Bearer {token}", "Content-Type": "application/json", **extra}
    if request_id is not None:
        out["X-Request-Id"] = request_id
    return out


async def post(client: httpx.AsyncClient, body: bytes | dict[str, Any], **kw: Any) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return await client.post(URL, content=content, headers=headers(**kw))


# --- happy path ----------------------------------------------------------------------------------------
async def test_accepted_after_ack_with_bill_and_vas(
    kbri_client: httpx.AsyncClient, producer: InMemoryProducer, edge_settings: Settings
) -> None:
    # Exact bytes, odd spacing included: the raw topic carries what the office sent.
    raw = b"  " + json.dumps(enrollment(), indent=1).encode() + b"\n"
    resp = await post(kbri_client, raw)
    assert resp.status_code == 202, resp.text
    body = resp.json()

    expected_key = participant_id(NIK, edge_settings.participant_key_secret.get_secret_value().encode(), 18)
    assert body["status"] == "ACCEPTED"
    assert body["customer_no"] == expected_key
    uuid.UUID(body["event_id"])
    assert body["warnings"] == []
    bill = body["bill"]
    assert bill["amount_idr"] == 370_000  # PRE 37,500 + M24 332,500
    assert [line["code"] for line in bill["lines"]] == ["PRE", "M24"]
    assert sum(line["amount_idr"] for line in bill["lines"]) == 370_000
    assert bill["tariff_version"] == "permenaker-4-2023"
    assert bill["virtual_accounts"] == {
        "MANDIRI": compose_va("   88001", expected_key),
        "BNI": compose_va("   88002", expected_key),
        "MAYBANK_MY": compose_va("   88003", expected_key),
    }

    assert len(producer.records) == 1
    rec = producer.records[0]
    assert rec.topic == "kbri.enrollments.raw"
    assert rec.value == raw
    assert rec.key == expected_key.encode()
    assert NIK.encode() not in rec.key
    names = [name for name, _ in rec.headers]
    assert names == [
        "sinergi-office",
        "sinergi-request-id",
        "sinergi-event-id",
        "sinergi-received-at",
        "sinergi-channel",
    ]
    assert rec.header("sinergi-office") == OFFICE.encode()
    assert rec.header("sinergi-request-id") == b"req-0001"
    assert rec.header("sinergi-event-id") == body["event_id"].encode()
    assert rec.header("sinergi-channel") == b"PERWAKILAN_RI"
    received = datetime.fromisoformat(rec.header("sinergi-received-at").decode())  # type: ignore[union-attr]
    assert received.utcoffset() == timedelta(0)
    assert abs(datetime.now(UTC) - received) < timedelta(seconds=30)


async def test_repeat_request_id_same_event_id(kbri_client: httpx.AsyncClient, producer: InMemoryProducer) -> None:
    first = await post(kbri_client, enrollment(), request_id="abc.123_X-9")
    second = await post(kbri_client, enrollment(), request_id="abc.123_X-9")
    other = await post(kbri_client, enrollment(), request_id="abc.124")
    assert first.status_code == second.status_code == other.status_code == 202
    assert first.json()["event_id"] == second.json()["event_id"] != other.json()["event_id"]
    assert len(producer.records) == 3  # dedup is downstream, by event id


async def test_same_request_id_other_office_other_event_id(kbri_client: httpx.AsyncClient) -> None:
    a = await post(kbri_client, enrollment(), request_id="r1")
    b = await post(kbri_client, enrollment(), request_id="r1", token="dev-token-kjri-jb")
    assert a.status_code == b.status_code == 202
    assert a.json()["event_id"] != b.json()["event_id"]


async def test_nik_date_mismatch_is_a_warning(kbri_client: httpx.AsyncClient, producer: InMemoryProducer) -> None:
    resp = await post(kbri_client, enrollment(date_of_birth="1987-11-13"))
    assert resp.status_code == 202, resp.text
    assert resp.json()["warnings"] == ["NIK_DOB_MISMATCH"]
    assert len(producer.records) == 1


async def test_jht_and_long_contract(kbri_client: httpx.AsyncClient) -> None:
    resp = await post(
        kbri_client,
        enrollment(programs=["JKK", "JKM", "JHT"], jht_monthly_amount_idr=100_000, contract_months=36),
    )
    assert resp.status_code == 202, resp.text
    assert resp.json()["bill"]["amount_idr"] == 37_500 + 332_500 + 12 * 13_500  # JHT is not in the bill


# --- domain rejections ---------------------------------------------------------------------------------
def _dob_for_age(years: int) -> str:
    departure = _today() + timedelta(days=20)
    return departure.replace(year=departure.year - years).isoformat() if departure.month != 2 else "2015-01-01"


REJECTIONS = [
    ({"nik": _DROP}, "MISSING_FIELD", "nik"),
    ({"nik": "12345"}, "NIK_FORMAT", "nik"),
    ({"nik": 3602045211870001}, "INVALID_FIELD", "nik"),
    ({"nik": "9902045211870001"}, "NIK_PROVINCE", "nik"),
    ({"nik": "3602045213870001"}, "NIK_DATE", "nik"),
    ({"nik": "3602045211870000"}, "NIK_SERIAL", "nik"),
    ({"full_name": "  "}, "MISSING_FIELD", "full_name"),
    ({"date_of_birth": "12-11-1987"}, "INVALID_FIELD", "date_of_birth"),
    ({"date_of_birth": "1987-02-30"}, "INVALID_FIELD", "date_of_birth"),
    ({"sex": "X"}, "INVALID_FIELD", "sex"),
    ({"participant_type": "AGENCY"}, "INVALID_FIELD", "participant_type"),
    ({"passport_number": "c12 345"}, "PASSPORT_FORMAT", "passport_number"),
    ({"destination_country": "ID"}, "INVALID_FIELD", "destination_country"),
    ({"contract_months": 0}, "CONTRACT_MONTHS", "contract_months"),
    ({"contract_months": "24"}, "INVALID_FIELD", "contract_months"),
    ({"contract_months": 24.0}, "INVALID_FIELD", "contract_months"),
    ({"programs": ["JKK"]}, "PROGRAMS", "programs"),
    ({"programs": ["JKK", "JKM", "XYZ"]}, "INVALID_FIELD", "programs"),
    (
        {"programs": ["JKK", "JKM", "JHT"], "jht_monthly_amount_idr": 10},
        "JHT_AMOUNT",
        "jht_monthly_amount_idr",
    ),
    ({"programs": ["JKK", "JKM", "JHT"]}, "MISSING_FIELD", "jht_monthly_amount_idr"),
    ({"jht_monthly_amount_idr": 100_000}, "JHT_AMOUNT", "jht_monthly_amount_idr"),
    ({"date_of_birth": _dob_for_age(17)}, "UNDER_AGE", "date_of_birth"),
    (
        {"participant_type": "PERSEORANGAN", "departure_date": (_today() + timedelta(days=90)).isoformat()},
        "REGISTRATION_TOO_EARLY",
        "departure_date",
    ),
]


@pytest.mark.parametrize(("overrides", "reason", "field"), REJECTIONS)
async def test_domain_rejection_422(
    kbri_client: httpx.AsyncClient,
    producer: InMemoryProducer,
    overrides: dict[str, Any],
    reason: str,
    field: str,
) -> None:
    resp = await post(kbri_client, enrollment(**overrides))
    assert resp.status_code == 422, resp.text
    assert resp.json() == {"reason": reason, "field": field, "message": resp.json()["message"]}
    assert producer.attempts == 0


async def test_unknown_office_422(producer: InMemoryProducer) -> None:
    settings = Settings(office_tokens={"KBRI_ATLANTIS": "tok-atlantis"})
    app = create_kbri_app(settings, producer)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        resp = await post(client, enrollment(), token="tok-atlantis")
    assert resp.status_code == 422
    assert resp.json()["reason"] == "UNKNOWN_OFFICE"
    assert producer.attempts == 0


# --- transport rejections ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "auth",
    [
        None,
        "Bearer wrong",
        "Bearer ",
        "Basic ZGV2LXRva2VuLWticmkta2w=",
        "dev-token-kbri-kl",
        "Bearer dev-token-bni",
    ],
)
async def test_bad_token_401(kbri_client: httpx.AsyncClient, producer: InMemoryProducer, auth: str | None) -> None:
    hdrs = {"Content-Type": "application/json", "X-Request-Id": "r1"}
    if auth is not None:
        hdrs["Authorization"] = auth
    resp = await kbri_client.post(URL, content=json.dumps(enrollment()).encode(), headers=hdrs)
    assert resp.status_code == 401
    assert resp.json()["reason"] == "UNAUTHORIZED"
    assert resp.headers["WWW-Authenticate"] == "Bearer"
    assert producer.attempts == 0


async def test_missing_request_id_400(kbri_client: httpx.AsyncClient, producer: InMemoryProducer) -> None:
    resp = await post(kbri_client, enrollment(), request_id=None)
    assert resp.status_code == 400
    assert resp.json() == {
        "reason": "REQUEST_ID_MISSING",
        "field": "X-Request-Id",
        "message": resp.json()["message"],
    }
    assert producer.attempts == 0


@pytest.mark.parametrize("request_id", ["a" * 65, "has space", "semi;colon", "ünï", " "])
async def test_invalid_request_id_400(
    kbri_client: httpx.AsyncClient, producer: InMemoryProducer, request_id: str
) -> None:
    resp = await kbri_client.post(
        URL,
        content=json.dumps(enrollment()).encode(),
        headers=[
            (b"Authorization", f"Bearer {TOKEN}".encode()),
            (b"Content-Type", b"application/json"),
            (b"X-Request-Id", request_id.encode("utf-8")),
        ],
    )
    assert resp.status_code == 400
    assert resp.json()["reason"] in {"REQUEST_ID_INVALID", "REQUEST_ID_MISSING"}
    assert producer.attempts == 0


def _deep(levels: int) -> bytes:
    return b'{"nik":' + b"[" * levels + b"]" * levels + b"}"


BAD_BODIES = [
    (b"{not json", "INVALID_JSON"),
    (b"", "INVALID_JSON"),
    (b'{"contract_months": NaN}', "NON_FINITE_NUMBER"),
    (b'{"contract_months": Infinity}', "NON_FINITE_NUMBER"),
    (b'{"contract_months": -Infinity}', "NON_FINITE_NUMBER"),
    (b'{"contract_months": 1e400}', "NON_FINITE_NUMBER"),
    (b'{"nik": "1", "nik": "2"}', "DUPLICATE_KEY"),
    (b'{"a": {"x": 1, "x": 1}}', "DUPLICATE_KEY"),
    (_deep(20), "JSON_TOO_DEEP"),
    (_deep(30_000), "JSON_TOO_DEEP"),
    (b'{"nik": "\xff\xfe"}', "INVALID_UTF8"),
    (b"\xef\xbb\xbf{}", "INVALID_JSON"),
    (b"[1, 2]", "BODY_NOT_OBJECT"),
    (b'"string"', "BODY_NOT_OBJECT"),
    (b'{"contract_months": 1' + b"0" * 5000 + b"}", "INVALID_JSON"),
    (b'{"a": "' + b'\\"' * 30_000, "INVALID_JSON"),  # unterminated escapes: must stay linear
    (b"[" + b"[]," * 20_000 + b"[]]", "BODY_NOT_OBJECT"),
]


# A hang guard, not a speed check (speed is `make bench`'s): a quadratic parser took 22 s on one of these.
@pytest.mark.timeout(15)
@pytest.mark.parametrize(("raw", "reason"), BAD_BODIES, ids=[r for _, r in BAD_BODIES])
async def test_bad_body_400_fast(
    kbri_client: httpx.AsyncClient, producer: InMemoryProducer, raw: bytes, reason: str
) -> None:
    resp = await post(kbri_client, raw)
    assert resp.status_code == 400, resp.text
    assert resp.json()["reason"] == reason
    assert producer.attempts == 0


async def test_depth_limit_is_twenty(kbri_client: httpx.AsyncClient) -> None:
    # 20 levels in total (the object itself is level 1) are allowed: the domain then refuses the field.
    resp = await post(kbri_client, b'{"nik":' + b"[" * 19 + b"]" * 19 + b"}")
    assert resp.status_code == 422
    assert resp.json()["field"] == "nik"


async def test_brackets_inside_strings_do_not_count(kbri_client: httpx.AsyncClient) -> None:
    resp = await post(kbri_client, enrollment(employer_name='[[[[[[[[[[[[[[[[[[[[[[{{{{{{ \\" ]]'))
    assert resp.status_code == 202, resp.text


async def test_oversized_body_413(
    kbri_client: httpx.AsyncClient, producer: InMemoryProducer, edge_settings: Settings
) -> None:
    big = json.dumps(enrollment(employer_name="x" * edge_settings.max_body_bytes)).encode()
    resp = await post(kbri_client, big)
    assert resp.status_code == 413
    assert resp.json()["reason"] == "BODY_TOO_LARGE"
    assert producer.attempts == 0


async def test_oversized_chunked_body_413(
    kbri_client: httpx.AsyncClient, producer: InMemoryProducer, edge_settings: Settings
) -> None:
    async def chunks() -> Any:
        for _ in range(edge_settings.max_body_bytes // 1024 + 2):
            yield b" " * 1024

    resp = await kbri_client.post(URL, content=chunks(), headers=headers())
    assert resp.status_code == 413
    assert resp.json()["reason"] == "BODY_TOO_LARGE"
    assert producer.attempts == 0


async def test_wrong_content_type_415(kbri_client: httpx.AsyncClient, producer: InMemoryProducer) -> None:
    resp = await kbri_client.post(
        URL, content=json.dumps(enrollment()).encode(), headers=headers(**{"Content-Type": "text/plain"})
    )
    assert resp.status_code == 415
    assert resp.json()["reason"] == "UNSUPPORTED_MEDIA_TYPE"
    assert producer.attempts == 0


# --- broker --------------------------------------------------------------------------------------------
async def test_broker_unavailable_503(kbri_client: httpx.AsyncClient, producer: InMemoryProducer) -> None:
    producer.failing = "TIMEOUT"
    resp = await post(kbri_client, enrollment())
    assert resp.status_code == 503
    assert resp.json()["reason"] == "BROKER_UNAVAILABLE"
    assert int(resp.headers["Retry-After"]) > 0
    assert producer.attempts == 1
    assert producer.records == []
    producer.failing = None  # the office retries with the same request id
    retry = await post(kbri_client, enrollment())
    assert retry.status_code == 202
    assert len(producer.records) == 1


async def test_internal_error_500_without_details(
    kbri_client: httpx.AsyncClient,
    producer: InMemoryProducer,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def boom(*_a: Any, **_k: Any) -> None:
        raise RuntimeError(f"kaboom {NIK}")

    monkeypatch.setattr(producer, "send", boom)
    with caplog.at_level(logging.DEBUG):
        resp = await post(kbri_client, enrollment())
    assert resp.status_code == 500
    assert resp.json()["reason"] == "INTERNAL_ERROR"
    assert NIK not in resp.text
    assert NIK not in caplog.text


# --- personal data -------------------------------------------------------------------------------------
async def test_no_nik_or_passport_in_responses_or_logs(
    kbri_client: httpx.AsyncClient, producer: InMemoryProducer, caplog: pytest.LogCaptureFixture
) -> None:
    cases = [
        enrollment(),
        enrollment(date_of_birth="1987-11-13"),
        enrollment(nik="3602045211870000"),  # NIK_SERIAL
        enrollment(nik="9902045211870001"),  # NIK_PROVINCE
        enrollment(passport_number="c1234567"),  # PASSPORT_FORMAT (near-passport value)
        enrollment(date_of_birth=_dob_for_age(16)),
        enrollment(contract_months=0),
    ]
    texts: list[str] = []
    with caplog.at_level(logging.DEBUG):
        for i, body in enumerate(cases):
            resp = await post(kbri_client, body, request_id=f"pii-{i}")
            texts.append(resp.text + repr(dict(resp.headers)))
        producer.failing = "TIMEOUT"
        resp = await post(kbri_client, enrollment(), request_id="pii-x")
        texts.append(resp.text)
        resp = await post(kbri_client, b'{"nik": "3602045211870001", "nik": "3602045211870001"}')
        texts.append(resp.text)
        resp = await post(kbri_client, b'{"3602045211870001": 1, "3602045211870001": 2}')
        texts.append(resp.text)
    logged = caplog.text + "".join(repr(r.__dict__) for r in caplog.records)
    for secret in (NIK, "3602045211870000", "9902045211870001", PASSPORT, "c1234567"):
        for text in texts:
            assert secret not in text
        assert secret not in logged
    assert any("enrollment accepted" in r.getMessage() for r in caplog.records)


# --- docs ----------------------------------------------------------------------------------------------
async def test_openapi_documents_models(kbri_client: httpx.AsyncClient) -> None:
    spec = (await kbri_client.get("/openapi.json")).json()
    op = spec["paths"]["/v1/enrollments"]["post"]
    assert op["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/EnrollmentRequest")
    assert {"202", "400", "401", "413", "422", "503"} <= set(op["responses"])
    assert "EnrollmentAccepted" in spec["components"]["schemas"]
    assert "ErrorBody" in spec["components"]["schemas"]
    params = {p["name"].lower() for p in op["parameters"]}
    assert {"authorization", "x-request-id"} <= params
    assert (await kbri_client.get("/docs")).status_code == 200
    assert (await kbri_client.get("/healthz")).json() == {"status": "ok"}


async def test_lifespan_starts_and_closes_producer(edge_settings: Settings, producer: InMemoryProducer) -> None:
    app = create_kbri_app(edge_settings, producer)
    async with app.router.lifespan_context(app):
        assert producer.started
    assert not producer.started


async def test_metrics_bounded_labels(kbri_client: httpx.AsyncClient) -> None:
    from prometheus_client import REGISTRY

    def sample(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    ok = {"api": "kbri", "endpoint": "enrollments", "partner": OFFICE, "outcome": "accepted"}
    anon = {"api": "kbri", "endpoint": "enrollments", "partner": "unknown", "outcome": "unauthorized"}
    rejected = {"api": "kbri", "endpoint": "enrollments", "reason": "NIK_SERIAL"}
    before = (
        sample("sinergi_http_requests_total", **ok),
        sample("sinergi_http_requests_total", **anon),
        sample("sinergi_http_rejections_total", **rejected),
    )
    await post(kbri_client, enrollment())
    await post(kbri_client, enrollment(), token="nope")
    await post(kbri_client, enrollment(nik="3602045211870000"))
    after = (
        sample("sinergi_http_requests_total", **ok),
        sample("sinergi_http_requests_total", **anon),
        sample("sinergi_http_rejections_total", **rejected),
    )
    assert after == (before[0] + 1, before[1] + 1, before[2] + 1)
    assert sample("sinergi_http_request_duration_seconds_count", api="kbri", endpoint="enrollments") >= 3
