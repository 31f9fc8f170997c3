"""The bench pre-loads the raw topics with exactly what the partner APIs would have written."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import httpx

from connectors.bank.app import create_bank_app
from connectors.bank.snap_signing import sign_transactional_hmac
from connectors.kafka_edge import InMemoryProducer
from connectors.kbri.app import create_kbri_app
from services.bench import percentile
from services.config import DEV_BANK_SECRETS, Settings
from services.simulation.backlog import RawRecord, build_backlog
from services.simulator import world_from_settings

PAY_PATH = "/v1.0/transfer-va/payment"


def _headers_without_time(record: RawRecord | object) -> dict[str, bytes]:
    headers = dict(record.headers)  # type: ignore[attr-defined]
    headers.pop("sinergi-received-at")
    return headers


async def test_backlog_records_equal_what_the_apis_produce() -> None:
    settings = Settings()
    producer = InMemoryProducer()
    backlog = build_backlog(settings, 25, seed=5, now=datetime.now(UTC))
    assert backlog.events == 50 and len(backlog.customer_nos) == 25
    tokens = {k: v.get_secret_value() for k, v in settings.office_tokens.items()}
    banks = {k: v.get_secret_value() for k, v in settings.bank_tokens.items()}
    kbri_app, bank_app = create_kbri_app(settings, producer), create_bank_app(settings, producer)
    async with (
        httpx.AsyncClient(transport=httpx.ASGITransport(app=kbri_app), base_url="http://k") as kbri,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=bank_app), base_url="http://b") as bank,
    ):
        for ours in backlog.enrollments:
            h = dict(ours.headers)
            office, request_id = h["sinergi-office"].decode(), h["sinergi-request-id"].decode()
            response = await kbri.post(
                "/v1/enrollments",
                content=ours.value,
                headers={
                    "Authorization": f"Bearer {tokens[office]}",
                    "X-Request-Id": request_id,
                    "Content-Type": "application/json",
                },
            )
            assert response.status_code == 202, response.text
            theirs = producer.records[-1]
            assert (theirs.topic, theirs.key, theirs.value) == (ours.topic, ours.key, ours.value)
            assert _headers_without_time(theirs) == _headers_without_time(ours)
            assert response.json()["customer_no"].encode() == ours.key
        for ours in backlog.payments:
            h = dict(ours.headers)
            bank_id = h["sinergi-bank"].decode()
            x_timestamp = h["sinergi-x-timestamp"].decode()
            signature = sign_transactional_hmac(
                DEV_BANK_SECRETS[bank_id].encode(), "POST", PAY_PATH, banks[bank_id], ours.value, x_timestamp
            )
            response = await bank.post(
                PAY_PATH,
                content=ours.value,
                headers={
                    "Authorization": f"Bearer {banks[bank_id]}",
                    "X-PARTNER-ID": bank_id,
                    "X-EXTERNAL-ID": h["sinergi-external-id"].decode(),
                    "X-TIMESTAMP": x_timestamp,
                    "X-SIGNATURE": signature,
                    "CHANNEL-ID": h["sinergi-channel-id"].decode(),
                    "Content-Type": "application/json",
                },
            )
            assert response.status_code == 200, response.text
            theirs = producer.records[-1]
            assert (theirs.topic, theirs.key, theirs.value) == (ours.topic, ours.key, ours.value)
            assert _headers_without_time(theirs) == _headers_without_time(ours)


def test_backlog_mixes_offices_banks_and_currencies() -> None:
    settings = Settings()
    backlog = build_backlog(settings, 300, seed=1, now=datetime(2025, 9, 1, 3, tzinfo=UTC))
    offices = {dict(r.headers)["sinergi-office"] for r in backlog.enrollments}
    banks = {dict(r.headers)["sinergi-bank"] for r in backlog.payments}
    currencies = {json.loads(r.value)["paidAmount"]["currency"] for r in backlog.payments}
    assert len(offices) == len(world_from_settings(settings).offices)
    assert banks == {b"MANDIRI", b"BNI", b"MAYBANK_MY"}
    assert {"IDR", "MYR", "HKD", "TWD"} <= currencies
    sizes = [len(r.value) for r in backlog.payments]
    assert 300 < sum(sizes) / len(sizes) < 500  # the "~400-byte" events of the baseline


def test_percentile_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile([3.0], 99) == 3.0
