"""`POST /v1.0/bank-statements` in-process: signed uploads of every format, refusals, and what reaches Kafka."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest

from connectors.bank.app import create_bank_app
from connectors.bank.snap_signing import sign_transactional_hmac
from connectors.embedded import free_port
from connectors.kafka_edge import InMemoryProducer
from connectors.statement_ingest import EXIT_UNAVAILABLE, import_file
from services.catalogue import STATEMENTS_RAW
from services.config import DEV_BANK_SECRETS, Settings
from services.domain.models import EntryDetailStatus, StatementEntry

PATH = "/v1.0/bank-statements"
DATA = Path(__file__).parent.parent / "unit" / "data" / "statements"
TOKENS = {"MANDIRI": "dev-token-mandiri", "BNI": "dev-token-bni"}
WIB = timezone(timedelta(hours=7))
SNAP_ACCOUNT = "1370012345678"

# file -> (content type, query, format, entries, totals)
SAMPLES: dict[str, tuple[str, dict[str, str], str, int, list[str]]] = {
    "bni_20250715.sta": ("text/plain", {}, "MT940", 5, []),
    "mandiri_camt054.xml": ("application/xml", {}, "CAMT054", 3, ["NO_DECLARED_TOTALS"]),
    "bri_camt053.xml": ("text/xml", {}, "CAMT053", 4, []),
    "bni_snap_statement.json": ("application/json", {"accountNo": SNAP_ACCOUNT}, "SNAP_STATEMENT", 3, []),
    "cimb_statement.csv": ("text/csv", {}, "CSV", 4, ["NO_DECLARED_TOTALS"]),
}


def now_wib() -> str:
    return datetime.now(WIB).isoformat(timespec="seconds")


async def upload(
    client: httpx.AsyncClient,
    raw: bytes,
    *,
    bank: str = "MANDIRI",
    content_type: str | None = "application/octet-stream",
    query: dict[str, str] | None = None,
    external_id: str | None = "20250716000000000001",
    secret: str | None = None,
    signed_body: bytes | None = None,
    signature: bool = True,
) -> httpx.Response:
    token = TOKENS[bank]
    ts = now_wib()
    headers = {"Authorization": f"Bearer {token}", "X-PARTNER-ID": bank, "X-TIMESTAMP": ts}
    if signature:
        key = (secret or DEV_BANK_SECRETS[bank]).encode()
        headers["X-SIGNATURE"] = sign_transactional_hmac(
            key, "POST", PATH, token, raw if signed_body is None else signed_body, ts
        )
    if content_type is not None:
        headers["Content-Type"] = content_type
    if external_id is not None:
        headers["X-EXTERNAL-ID"] = external_id
    return await client.post(PATH, params=query or {}, content=raw, headers=headers)


def assert_snap_error(resp: httpx.Response, status: int, code: str, reason: str) -> None:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"responseCode", "responseMessage", "reason"}
    assert (body["responseCode"], body["reason"]) == (code, reason)


def entries_of(producer: InMemoryProducer) -> list[StatementEntry]:
    return [StatementEntry.model_validate_json(r.value) for r in producer.records]


# --- every format -------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(SAMPLES))
async def test_a_signed_upload_is_answered_after_every_entry_was_acknowledged(
    bank_client: httpx.AsyncClient, producer: InMemoryProducer, name: str
) -> None:
    content_type, query, fmt, count, totals = SAMPLES[name]
    raw = (DATA / name).read_bytes()
    resp = await upload(bank_client, raw, content_type=content_type, query={"filename": name, **query})

    assert resp.status_code == 200, resp.text
    assert resp.json() == {
        "responseCode": "2001400",
        "responseMessage": "Successful",
        "statement": {
            "file_id": hashlib.sha256(raw).hexdigest(),
            "format": fmt,
            "entries": count,
            "rejected": 0,
            "errors": [],
            "totals": totals,
        },
    }
    assert len(producer.records) == count
    assert {(r.topic, r.key) for r in producer.records} == {(STATEMENTS_RAW.name, b"MANDIRI")}
    entries = entries_of(producer)
    assert {e.bank_id for e in entries} == {"MANDIRI"}  # the authenticated bank, whatever the file says
    assert {e.source.value for e in entries} == {fmt}
    assert all(r.header("sinergi-external-id") == b"20250716000000000001" for r in producer.records)


async def test_error_correction_and_reversal_entries_keep_their_status(
    bank_client: httpx.AsyncClient, producer: InMemoryProducer
) -> None:
    snap = (DATA / "bni_snap_statement.json").read_bytes()
    resp = await upload(bank_client, snap, bank="BNI", content_type="application/json", query={"accountNo": "1"})
    assert resp.status_code == 200, resp.text
    statuses = [(e.direction.value, e.detail_status) for e in entries_of(producer)]
    assert statuses[-1] == ("DEBIT", EntryDetailStatus.ERROR_CORRECTION)

    producer.records.clear()
    resp = await upload(bank_client, (DATA / "bni_20250715.sta").read_bytes(), bank="BNI", content_type="text/plain")
    assert resp.status_code == 200, resp.text
    reversal = [e for e in entries_of(producer) if e.detail_status is EntryDetailStatus.REVERSAL]
    assert [(e.line_no, e.direction.value) for e in reversal] == [(13, "DEBIT")]


async def test_a_bad_line_is_reported_with_its_number_and_the_rest_is_produced(
    bank_client: httpx.AsyncClient, producer: InMemoryProducer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    raw = (DATA / "cimb_one_bad_line.csv").read_bytes()
    resp = await upload(bank_client, raw, content_type="text/csv; charset=utf-8")

    assert resp.status_code == 200, resp.text
    statement = resp.json()["statement"]
    assert (statement["entries"], statement["rejected"]) == (2, 1)
    assert statement["errors"] == [
        {"line_no": 3, "reason": "BAD_AMOUNT", "message": "amount must be digits with at most 2 decimals"}
    ]
    assert "LINES_REJECTED" in statement["totals"]
    assert [e.line_no for e in entries_of(producer)] == [2, 4]
    for value in ("98765432", "800123456789", "88123381726354019283746"):
        assert value not in resp.text
        assert value not in caplog.text


# --- authentication -------------------------------------------------------------------------------------
async def test_a_signature_by_another_secret_is_refused_and_nothing_produced(
    bank_client: httpx.AsyncClient, producer: InMemoryProducer
) -> None:
    raw = (DATA / "bni_20250715.sta").read_bytes()
    resp = await upload(bank_client, raw, secret="not-the-banks-secret")
    assert_snap_error(resp, 401, "4011400", "SIGNATURE_INVALID")
    assert producer.attempts == 0


async def test_a_tampered_file_is_refused_and_nothing_produced(
    bank_client: httpx.AsyncClient, producer: InMemoryProducer
) -> None:
    signed = (DATA / "bni_20250715.sta").read_bytes()
    tampered = signed.replace(b"C370000,00", b"C970000,00", 1)
    assert tampered != signed
    resp = await upload(bank_client, tampered, signed_body=signed)
    assert_snap_error(resp, 401, "4011400", "SIGNATURE_INVALID")
    assert producer.attempts == 0


async def test_an_unsigned_upload_or_another_banks_token_is_refused_and_nothing_produced(
    bank_client: httpx.AsyncClient, producer: InMemoryProducer
) -> None:
    raw = (DATA / "bni_20250715.sta").read_bytes()
    # SnapAuth's rule for every transactional call: a missing X-SIGNATURE is a missing mandatory header
    assert_snap_error(await upload(bank_client, raw, signature=False), 400, "4001402", "HEADER_MISSING")
    ts = now_wib()
    foreign = {
        "Authorization": "Bearer dev-token-bni",
        "X-PARTNER-ID": "MANDIRI",
        "X-TIMESTAMP": ts,
        "X-EXTERNAL-ID": "1",
        "X-SIGNATURE": sign_transactional_hmac(b"dev-client-secret-mandiri", "POST", PATH, "dev-token-bni", raw, ts),
    }
    assert_snap_error(await bank_client.post(PATH, content=raw, headers=foreign), 401, "4011401", "TOKEN_INVALID")
    assert producer.attempts == 0


# --- refusals of the file or the request ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "query", "status", "code", "reason"),
    [
        ("unknown", {}, 400, "4001400", "UNKNOWN_FORMAT"),
        ("unsafe_camt054.xml", {}, 400, "4001401", "UNSAFE_XML"),
        ("bni_snap_statement.json", {}, 400, "4001402", "MISSING_ACCOUNT"),
    ],
)
async def test_a_file_refused_as_a_whole_is_a_400_with_its_reason(
    bank_client: httpx.AsyncClient,
    producer: InMemoryProducer,
    name: str,
    query: dict[str, str],
    status: int,
    code: str,
    reason: str,
) -> None:
    raw = b"Dear BPJS, please find our statement attached." if name == "unknown" else (DATA / name).read_bytes()
    assert_snap_error(await upload(bank_client, raw, query=query), status, code, reason)
    assert producer.attempts == 0


async def test_external_id_content_type_and_query_parameters_are_checked(
    bank_client: httpx.AsyncClient, producer: InMemoryProducer
) -> None:
    raw = (DATA / "bni_20250715.sta").read_bytes()
    assert_snap_error(await upload(bank_client, raw, external_id=None), 400, "4001402", "HEADER_MISSING")
    assert_snap_error(await upload(bank_client, raw, external_id="12ab"), 400, "4001401", "HEADER_INVALID")
    assert_snap_error(
        await upload(bank_client, raw, content_type="image/png"), 415, "4001400", "UNSUPPORTED_MEDIA_TYPE"
    )
    bad_name = await upload(bank_client, raw, query={"filename": "../../etc/passwd"})
    assert_snap_error(bad_name, 400, "4001401", "INVALID_FIELD")
    bad_account = await upload(bank_client, raw, query={"accountNo": "12 34"})
    assert_snap_error(bad_account, 400, "4001401", "INVALID_FIELD")
    assert producer.attempts == 0
    assert (await upload(bank_client, raw, content_type=None)).status_code == 200  # no type: octet-stream


@pytest.fixture
async def small_limit_client(producer: InMemoryProducer) -> AsyncIterator[httpx.AsyncClient]:
    app = create_bank_app(Settings(statement_max_bytes=512), producer)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bank.test") as client:
        yield client


async def test_a_file_beyond_statement_max_bytes_is_a_413(
    small_limit_client: httpx.AsyncClient, producer: InMemoryProducer
) -> None:
    raw = (DATA / "bni_20250715.sta").read_bytes()
    assert len(raw) > 512
    assert_snap_error(await upload(small_limit_client, raw), 413, "4001400", "BODY_TOO_LARGE")
    assert producer.attempts == 0


# --- Kafka does not acknowledge ------------------------------------------------------------------------------
async def test_broker_failure_is_a_503_with_retry_after_and_claims_nothing(
    bank_client: httpx.AsyncClient, producer: InMemoryProducer
) -> None:
    producer.failing = "TIMEOUT"
    resp = await upload(bank_client, (DATA / "bri_camt053.xml").read_bytes(), content_type="application/xml")
    assert_snap_error(resp, 503, "5001402", "BROKER_UNAVAILABLE")
    assert resp.headers["Retry-After"] == "5"
    assert "statement" not in resp.json()
    assert producer.records == [] and producer.attempts == 4

    producer.failing = None  # the bank uploads again: every entry is recorded now
    again = await upload(bank_client, (DATA / "bri_camt053.xml").read_bytes(), content_type="application/xml")
    assert again.status_code == 200 and again.json()["statement"]["entries"] == 4 == len(producer.records)


def test_the_cli_exits_69_when_nothing_acknowledges(tmp_path: Path) -> None:
    """A real librdkafka producer against a loopback port where no broker listens."""
    settings = Settings(producer_message_timeout_ms=300, data_dir=tmp_path)
    out: list[str] = []
    code = import_file(
        settings,
        DATA / "bni_20250715.sta",
        bank_id="BNI",
        account_no=None,
        dry_run=False,
        bootstrap=f"127.0.0.1:{free_port()}",
        echo=out.append,
    )
    assert code == EXIT_UNAVAILABLE
    assert "did not acknowledge" in out[-1]


async def test_the_openapi_document_describes_the_file_body_and_the_answer(bank_client: httpx.AsyncClient) -> None:
    doc: dict[str, Any] = (await bank_client.get("/openapi.json")).json()
    operation = doc["paths"][PATH]["post"]
    assert {"text/plain", "application/xml", "text/csv", "application/json"} <= set(operation["requestBody"]["content"])
    assert {"200", "400", "401", "413", "415", "503"} <= set(operation["responses"])
    params = {p["name"] for p in operation["parameters"]}
    assert {"filename", "accountNo", "X-EXTERNAL-ID", "X-SIGNATURE"} <= params
