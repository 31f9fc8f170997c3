"""KBRI batch upload, in-process: per-row report, what is produced (once per accepted row), idempotent
re-sends, broker failure mid-batch, limits, and no personal value in an answer or a log line."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY

from connectors.kafka_edge import Headers, InMemoryProducer
from connectors.kbri.app import create_kbri_app
from services.config import Settings
from services.domain.batch_csv import REQUIRED_COLUMNS

DATA = Path(__file__).resolve().parents[1] / "unit" / "data" / "batches"
MIXED = (DATA / "mixed.csv").read_bytes()
URL = "/v1/enrollments/batch"
TOKEN = "dev-token-kbri-kl"
OFFICE = "KBRI_KUALA_LUMPUR"
HEADER = ",".join(REQUIRED_COLUMNS)

# Everything personal in mixed.csv: none of it may appear in an answer or a log line.
MIXED_PII = [
    *(f"36020452118700{n:02d}" for n in (1, 5, 6)),
    "9902045211870002",
    "3171011505900003",
    "3602045501100004",
    "3171011505900007",
    *("C1234567", "C2345678", "B7654321", "C3456789", "C4567890", "A9988776"),
    *("Siti Aminah", "Dewi Lestari", "Budi Santoso", "Rina Wati", "Ani Susanti", "Handayani", "Agus Salim"),
]


def nik(serial: int) -> str:
    """A valid NIK (Banten, female, born 12 Nov 1987) per serial 1..9999."""
    return f"360204521187{serial:04d}"


def row(serial: int, **cells: str) -> str:
    values = {
        "nik": nik(serial),
        "full_name": f"Pekerja Nomor {serial}",
        "date_of_birth": "12/11/1987",
        "sex": "F",
        "participant_type": "PLACED",
        "passport_number": f"C{serial:07d}",
        "destination_country": "MY",
        "departure_date": "01/03/2027",
        "contract_start": "01/03/2027",
        "contract_months": "24",
        "programs": "JKK|JKM",
        **cells,
    }
    return ",".join(values[c] for c in REQUIRED_COLUMNS)


def csv_of(*rows: str, header: str = HEADER) -> bytes:
    return ("\r\n".join([header, *rows]) + "\r\n").encode()


def headers(batch_id: str | None = "KL-2027-03", token: str | None = TOKEN, ctype: str = "text/csv") -> dict[str, str]:
    out = {"Content-Type": ctype}
    if token is not None:
        out["Authorization"] = f"Bearer {token}"
    if batch_id is not None:
        out["X-Request-Id"] = batch_id
    return out


async def upload(client: httpx.AsyncClient, body: bytes, **kw: Any) -> httpx.Response:
    return await client.post(URL, content=body, headers=headers(**kw))


@asynccontextmanager
async def client_for(settings: Settings, producer: InMemoryProducer) -> AsyncIterator[httpx.AsyncClient]:
    app = create_kbri_app(settings, producer)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://kbri.test") as client:
        yield client


def by_row(resp: httpx.Response) -> dict[int, dict[str, Any]]:
    return {r["row"]: r for r in resp.json()["results"]}


def header(record: Any, name: str) -> str:
    value = record.header(name)
    assert value is not None, name
    return str(value.decode())


# --- the per-row report ----------------------------------------------------------------------------------
async def test_good_rows_accepted_bad_rows_reported(kbri_client: httpx.AsyncClient, producer: InMemoryProducer) -> None:
    resp = await upload(kbri_client, MIXED)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert (body["batch_id"], body["rows"], body["accepted"], body["rejected"]) == ("KL-2027-03", 7, 3, 4)
    assert body["resend"] is False
    assert "Retry-After" not in resp.headers
    results = by_row(resp)
    assert sorted(results) == [1, 2, 3, 4, 5, 6, 8]  # row 7 is blank
    verdicts = {n: (r["status"], r.get("reason"), r.get("field")) for n, r in results.items()}
    assert verdicts == {
        1: ("ACCEPTED", None, None),
        2: ("REJECTED", "NIK_PROVINCE", "nik"),
        3: ("ACCEPTED", None, None),
        4: ("REJECTED", "UNDER_AGE", "date_of_birth"),
        5: ("REJECTED", "MISSING_FIELD", "passport_number"),
        6: ("REJECTED", "MALFORMED_ROW", None),
        8: ("ACCEPTED", None, None),
    }
    for r in results.values():
        if r["status"] == "ACCEPTED":
            assert {"reason", "field", "message"}.isdisjoint(r)
            assert r["request_id"] == f"KL-2027-03#{r['row']}"
        else:
            assert {"event_id", "customer_no", "bill"}.isdisjoint(r)
            assert r["message"]
    assert results[6]["request_id"] is None
    assert results[1]["bill"]["amount_idr"] == 37_500 + 332_500
    assert results[3]["bill"]["amount_idr"] == 37_500 + 332_500 + 12 * 13_500  # 36 months; JHT is not billed
    assert results[8]["bill"]["amount_idr"] == 37_500 + 189_000

    # Each accepted row produced exactly once, as the single endpoint would, plus the batch coordinates.
    assert len(producer.records) == 3
    produced = {header(rec, "sinergi-event-id"): rec for rec in producer.records}
    assert set(produced) == {results[n]["event_id"] for n in (1, 3, 8)}
    for n in (1, 3, 8):
        rec = produced[results[n]["event_id"]]
        assert rec.topic == "kbri.enrollments.raw"
        assert rec.key == results[n]["customer_no"].encode()
        assert [name for name, _ in rec.headers] == [
            "sinergi-office",
            "sinergi-request-id",
            "sinergi-event-id",
            "sinergi-received-at",
            "sinergi-channel",
            "sinergi-batch-id",
            "sinergi-batch-row",
        ]
        assert header(rec, "sinergi-office") == OFFICE
        assert header(rec, "sinergi-request-id") == f"KL-2027-03#{n}"
        assert header(rec, "sinergi-batch-id") == "KL-2027-03"
        assert header(rec, "sinergi-batch-row") == str(n)
    siti = json.loads(produced[results[1]["event_id"]].value)
    assert siti["date_of_birth"] == "1987-11-12"
    assert siti["programs"] == ["JKK", "JKM"]
    assert siti["employer_name"] == 'Syarikat "Maju", Sdn Bhd'
    budi = json.loads(produced[results[3]["event_id"]].value)
    assert (budi["programs"], budi["jht_monthly_amount_idr"]) == (["JKK", "JKM", "JHT"], 100_000)


async def test_unknown_columns_ignored(kbri_client: httpx.AsyncClient, producer: InMemoryProducer) -> None:
    resp = await upload(kbri_client, MIXED)
    assert resp.json()["accepted"] == 3
    for rec in producer.records:
        assert "catatan" not in json.loads(rec.value)
        assert b"catatan desk satu" not in rec.value


async def test_a_row_is_the_single_enrollment(kbri_client: httpx.AsyncClient, producer: InMemoryProducer) -> None:
    from services.domain.enrollment import enrollment_event_id

    batch = await upload(kbri_client, csv_of(row(1)), batch_id="B9")
    single_body = json.loads(producer.records[0].value)
    single = await kbri_client.post(
        "/v1/enrollments",
        content=json.dumps(single_body).encode(),
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json", "X-Request-Id": "B9.1"},
    )
    assert single.status_code == 202, single.text
    (result,) = batch.json()["results"]
    assert result["request_id"] == "B9#1"
    assert result["event_id"] == enrollment_event_id("KBRI_KUALA_LUMPUR", "B9#1")
    assert result["event_id"] != single.json()["event_id"]  # a single request id can never alias a batch row
    assert result["customer_no"] == single.json()["customer_no"]
    assert result["bill"] == single.json()["bill"]


async def test_same_batch_twice_same_event_ids(kbri_client: httpx.AsyncClient, producer: InMemoryProducer) -> None:
    first = await upload(kbri_client, MIXED)
    second = await upload(kbri_client, MIXED)
    assert first.status_code == second.status_code == 200
    assert first.json()["results"] == second.json()["results"]
    ids = [header(rec, "sinergi-event-id") for rec in producer.records]
    assert len(ids) == 6 and len(set(ids)) == 3  # produced again under the same ids: consumers deduplicate
    other_batch = await upload(kbri_client, MIXED, batch_id="KL-2027-04")
    assert {r.get("event_id") for r in other_batch.json()["results"]}.isdisjoint(set(ids))


async def test_same_file_other_office_other_ids(kbri_client: httpx.AsyncClient, producer: InMemoryProducer) -> None:
    kl = await upload(kbri_client, csv_of(row(1)))
    jb = await upload(kbri_client, csv_of(row(1)), token="dev-token-kjri-jb")
    assert kl.json()["results"][0]["event_id"] != jb.json()["results"][0]["event_id"]
    assert [header(rec, "sinergi-office") for rec in producer.records] == [OFFICE, "KJRI_JOHOR_BAHRU"]


async def test_request_id_column_and_duplicates(kbri_client: httpx.AsyncClient, producer: InMemoryProducer) -> None:
    body = csv_of(
        row(1) + ",desk-1",
        row(2) + ",dup",
        row(3) + ",",
        row(4) + ",dup",
        header=HEADER + ",request_id",
    )
    results = by_row(await upload(kbri_client, body, batch_id="B"))
    assert [(r["request_id"], r["status"], r.get("reason")) for r in results.values()] == [
        ("desk-1", "ACCEPTED", None),
        ("dup", "REJECTED", "DUPLICATE_REQUEST_ID"),
        ("B#3", "ACCEPTED", None),
        ("dup", "REJECTED", "DUPLICATE_REQUEST_ID"),
    ]
    assert [header(rec, "sinergi-request-id") for rec in producer.records] == ["desk-1", "B#3"]


async def test_rows_of_one_member_produced_in_file_order(edge_settings: Settings) -> None:
    class EarlierIsSlower(InMemoryProducer):
        """The first sends take the most turns of the event loop: unordered rows would finish reversed."""

        sends = 0

        async def send(self, topic: str, key: bytes, value: bytes, headers: Headers) -> None:
            turn, self.sends = self.sends, self.sends + 1
            for _ in range(max(0, 60 - 10 * turn)):
                await asyncio.sleep(0)
            await super().send(topic, key, value, headers)

    producer = EarlierIsSlower()
    months = ["6", "12", "24", "36"]
    rows = [row(1, contract_months=m) for m in months] + [row(2), row(3)]
    async with client_for(edge_settings, producer) as client:
        resp = await upload(client, csv_of(*rows))
    results = by_row(resp)
    assert [results[n]["warnings"] for n in (1, 2, 3, 4, 5)] == [[], *[["NIK_REPEATED_IN_BATCH"]] * 3, []]
    key = results[1]["customer_no"].encode()
    produced = [json.loads(rec.value)["contract_months"] for rec in producer.records if rec.key == key]
    assert produced == [6, 12, 24, 36]
    assert len(producer.records) == 6


# --- Kafka not acknowledging --------------------------------------------------------------------------------
class AcksThenFails(InMemoryProducer):
    def __init__(self, acks: int) -> None:
        super().__init__()
        self.acks = acks

    async def send(self, topic: str, key: bytes, value: bytes, headers: Headers) -> None:
        if len(self.records) >= self.acks:
            self.failing = "TIMEOUT"
        await super().send(topic, key, value, headers)


async def test_broker_fails_mid_batch_then_resend() -> None:
    settings = Settings(kbri_batch_concurrency=1)  # one row at a time: which rows got through is determined
    producer = AcksThenFails(acks=2)
    body = csv_of(row(1), row(2), row(3), row(4, nik="9902045211870004"), row(5))
    async with client_for(settings, producer) as client:
        first = await upload(client, body)
        assert first.status_code == 200
        assert first.json()["resend"] is True
        assert int(first.headers["Retry-After"]) > 0
        verdicts = [(r["status"], r.get("reason")) for r in first.json()["results"]]
        assert verdicts == [
            ("ACCEPTED", None),
            ("ACCEPTED", None),
            ("REJECTED", "BROKER_UNAVAILABLE"),
            ("REJECTED", "NIK_PROVINCE"),  # still validated, though nothing more is sent
            ("REJECTED", "BROKER_UNAVAILABLE"),
        ]
        assert producer.attempts == 3  # rows after the first failure are not sent to wait out a timeout
        assert len(producer.records) == 2

        producer.acks = 100
        producer.failing = None
        again = await upload(client, body)
    assert again.json()["resend"] is False
    assert "Retry-After" not in again.headers
    assert [r["status"] for r in again.json()["results"]] == ["ACCEPTED"] * 3 + ["REJECTED", "ACCEPTED"]
    ids = [r.get("event_id") for r in first.json()["results"][:2]]
    assert [r.get("event_id") for r in again.json()["results"][:2]] == ids


async def test_broker_down_attempts_bounded_by_concurrency(
    kbri_client: httpx.AsyncClient, producer: InMemoryProducer, edge_settings: Settings
) -> None:
    producer.failing = "TIMEOUT"
    resp = await upload(kbri_client, csv_of(*(row(n) for n in range(1, 41))))
    assert resp.status_code == 200
    assert resp.json()["accepted"] == 0
    assert {r["reason"] for r in resp.json()["results"]} == {"BROKER_UNAVAILABLE"}
    assert 1 <= producer.attempts <= edge_settings.kbri_batch_concurrency < 40


async def test_internal_error_per_row_without_details(
    kbri_client: httpx.AsyncClient,
    producer: InMemoryProducer,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def boom(*_a: Any, **_k: Any) -> None:
        raise RuntimeError(f"kaboom {nik(1)}")

    monkeypatch.setattr(producer, "send", boom)
    with caplog.at_level(logging.DEBUG):
        resp = await upload(kbri_client, csv_of(row(1)))
    assert resp.status_code == 200
    assert resp.json()["results"][0]["reason"] == "INTERNAL_ERROR"
    assert resp.json()["resend"] is False
    assert nik(1) not in resp.text
    assert nik(1) not in caplog.text


# --- the request and the file as a whole --------------------------------------------------------------------
@pytest.mark.parametrize("token", [None, "wrong", "dev-token-bni"])
async def test_unauthorized_401(kbri_client: httpx.AsyncClient, producer: InMemoryProducer, token: str | None) -> None:
    resp = await upload(kbri_client, MIXED, token=token)
    assert resp.status_code == 401
    assert resp.json()["reason"] == "UNAUTHORIZED"
    assert resp.headers["WWW-Authenticate"] == "Bearer"
    assert producer.attempts == 0


@pytest.mark.parametrize(("batch_id", "reason"), [(None, "REQUEST_ID_MISSING"), ("has space", "REQUEST_ID_INVALID")])
async def test_batch_id_required(
    kbri_client: httpx.AsyncClient, producer: InMemoryProducer, batch_id: str | None, reason: str
) -> None:
    resp = await upload(kbri_client, MIXED, batch_id=batch_id)
    assert resp.status_code == 400
    assert (resp.json()["reason"], resp.json()["field"]) == (reason, "X-Request-Id")
    assert producer.attempts == 0


async def test_too_many_rows_413(producer: InMemoryProducer) -> None:
    async with client_for(Settings(kbri_batch_max_rows=2), producer) as client:
        ok = await upload(client, csv_of(row(1), row(2)))
        over = await upload(client, csv_of(row(1), row(2), row(3)))
    assert ok.status_code == 200
    assert over.status_code == 413
    assert over.json()["reason"] == "BATCH_TOO_LARGE"
    assert producer.attempts == 2  # the 2-row batch only: nothing of the oversized one is produced


async def test_body_too_large_413(producer: InMemoryProducer) -> None:
    async with client_for(Settings(kbri_batch_max_bytes=len(MIXED) - 1), producer) as client:
        resp = await upload(client, MIXED)
    assert resp.status_code == 413
    assert resp.json()["reason"] == "BODY_TOO_LARGE"
    assert producer.attempts == 0


async def test_missing_columns_400_named(kbri_client: httpx.AsyncClient, producer: InMemoryProducer) -> None:
    columns = [c for c in REQUIRED_COLUMNS if c not in ("sex", "programs")]
    body = csv_of(",".join(["x"] * len(columns)), header=",".join(columns))
    resp = await upload(kbri_client, body)
    assert resp.status_code == 400
    assert resp.json()["reason"] == "MISSING_COLUMNS"
    assert resp.json()["missing_columns"] == ["sex", "programs"]
    assert producer.attempts == 0


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b'{"nik": "3602045211870001"}', "NOT_CSV"),
        (b"PK\x03\x04\x14\x00\x06\x00\x08\x00", "NOT_CSV"),
        ("nik,full_name\nSîti,x\n".encode("latin-1"), "INVALID_UTF8"),
        (csv_of(), "BATCH_EMPTY"),
    ],
)
async def test_not_a_batch_400(
    kbri_client: httpx.AsyncClient, producer: InMemoryProducer, body: bytes, reason: str
) -> None:
    resp = await upload(kbri_client, body)
    assert resp.status_code == 400
    assert resp.json()["reason"] == reason
    assert "3602045211870001" not in resp.text
    assert producer.attempts == 0


@pytest.mark.parametrize("ctype", ["application/json", "text/csv; charset=windows-1252", "application/xml"])
async def test_not_csv_media_415(kbri_client: httpx.AsyncClient, producer: InMemoryProducer, ctype: str) -> None:
    resp = await upload(kbri_client, MIXED, ctype=ctype)
    assert resp.status_code == 415
    assert resp.json()["reason"] == "UNSUPPORTED_MEDIA_TYPE"
    assert producer.attempts == 0


@pytest.mark.parametrize("ctype", ["text/csv; charset=UTF-8", "application/vnd.ms-excel", "text/plain"])
async def test_csv_media_types(kbri_client: httpx.AsyncClient, ctype: str) -> None:
    resp = await upload(kbri_client, csv_of(row(1)), ctype=ctype)
    assert resp.status_code == 200, resp.text


# --- personal data, metrics, docs ---------------------------------------------------------------------------
async def test_no_personal_data_in_answers_or_logs(
    kbri_client: httpx.AsyncClient, producer: InMemoryProducer, caplog: pytest.LogCaptureFixture
) -> None:
    bad_ids = csv_of(row(1) + ",3602045211870001", row(2) + ",C0000002", header=HEADER + ",request_id")
    texts: list[str] = []
    with caplog.at_level(logging.DEBUG):
        texts.append((await upload(kbri_client, MIXED)).text)
        texts.append((await upload(kbri_client, bad_ids, batch_id="ids")).text)
        producer.failing = "TIMEOUT"
        texts.append((await upload(kbri_client, MIXED, batch_id="down")).text)
        texts.append((await upload(kbri_client, MIXED.replace(b"passport_number", b"paspor"))).text)
    logged = caplog.text + "".join(repr(r.__dict__) for r in caplog.records)
    for secret in [*MIXED_PII, nik(1), nik(2), "C0000001", "C0000002"]:
        for text in texts:
            assert secret not in text
        assert secret not in logged
    assert json.loads(texts[1])["results"][0]["reason"] == "REQUEST_ID_INVALID"
    assert any("enrollment batch processed" in r.getMessage() for r in caplog.records)


async def test_rows_counted_by_office_and_outcome(kbri_client: httpx.AsyncClient) -> None:
    def sample(outcome: str, reason: str) -> float:
        labels = {"kind": "office", "submitter": OFFICE, "outcome": outcome, "reason": reason}
        return REGISTRY.get_sample_value("sinergi_enrollment_submissions_total", labels) or 0.0

    keys = [("accepted", "none"), ("rejected", "NIK_PROVINCE"), ("rejected", "MALFORMED_ROW")]
    before = [sample(*k) for k in keys]
    await upload(kbri_client, MIXED)
    after = [sample(*k) for k in keys]
    assert [a - b for a, b in zip(after, before, strict=True)] == [3, 1, 1]


async def test_openapi_documents_the_batch(kbri_client: httpx.AsyncClient) -> None:
    spec = (await kbri_client.get("/openapi.json")).json()
    op = spec["paths"][URL]["post"]
    assert "text/csv" in op["requestBody"]["content"]
    assert {"200", "400", "401", "413", "415"} <= set(op["responses"])
    assert "Retry-After" in op["responses"]["200"]["headers"]
    assert {"BatchReport", "BatchRowResult", "BatchErrorBody"} <= set(spec["components"]["schemas"])
