"""services/bench_ingest.py against the real bank app served by uvicorn on loopback, with the in-memory producer.

No broker: what is checked is the load generator itself. Its pre-signed requests must pass the API's own
authentication and validation (every one accepted), each must be a distinct notification (one record, one
event id and one X-EXTERNAL-ID per accepted request: nothing replayed by the X-EXTERNAL-ID store), and a
refusal must be counted by status and SNAP code and reported as a PROBLEM. Figures are printed, never
compared with a speed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from served import loopback_socket, served

from connectors.bank.app import create_bank_app
from connectors.bank.payment import H_EVENT_ID, H_EXTERNAL_ID
from connectors.kafka_edge import InMemoryProducer
from services.bench_ingest import Connection, IngestFigures, ResponseError, measure_ingest
from services.catalogue import PAYMENTS_RAW
from services.config import Settings


@dataclass
class InProcessHub:
    """What measure_ingest uses of services.bench.Hub; the API runs in this process, so its CPU is ours."""

    settings: Settings
    broker_pid: int | None = None

    def cpu_of(self, name: str) -> float | None:
        assert name == "api-bank"
        return time.process_time()


@pytest.fixture
def served_bank(monkeypatch) -> Iterator[tuple[InProcessHub, InMemoryProducer]]:
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    sock = loopback_socket()
    settings = Settings().model_copy(update={"bank_api_port": sock.getsockname()[1], "http_host": "127.0.0.1"})
    producer = InMemoryProducer()
    with served(create_bank_app(settings, producer), sock):
        yield InProcessHub(settings), producer


@pytest.mark.timeout(60)
async def test_every_presigned_notification_is_accepted_once_and_distinct(served_bank) -> None:
    hub, producer = served_bank
    figures = await measure_ingest(hub, 1.0, warmup_s=0.3, budget_s=8.0, concurrency=8)  # type: ignore[arg-type]
    print("\n".join(figures.lines()))

    assert figures.problems == []
    assert figures.refused == 0 and not figures.refusals
    assert figures.accepted > 0 and figures.open_accepted > 0, "both loops ran"
    assert figures.open_sent == figures.open_accepted
    assert figures.p50_ms <= figures.p99_ms
    assert figures.api_cpu_s > 0 and figures.per_core_rate == pytest.approx(figures.accepted / figures.api_cpu_s)

    # Each 200 2002500 is one record on the raw topic (the in-memory producer stores only what it "acked").
    total = figures.warmup_accepted + figures.accepted + figures.open_accepted
    records = producer.records
    assert len(records) == total
    assert {r.topic for r in records} == {PAYMENTS_RAW.name}
    assert len({r.header(H_EVENT_ID) for r in records}) == total, "a paymentRequestId was reused"
    assert len({r.header(H_EXTERNAL_ID) for r in records}) == total, "an X-EXTERNAL-ID was reused"
    # Several banks and currencies, like the traffic the API really gets.
    assert len({r.header("sinergi-bank") for r in records}) >= 2
    assert len({r.value.split(b'"currency":"')[1][:3] for r in records}) >= 2


@pytest.mark.timeout(60)
async def test_refusals_are_counted_by_code_and_reported(served_bank) -> None:
    hub, producer = served_bank
    producer.failing = "TIMEOUT"  # Kafka never acknowledges: the API must answer 503 5002502
    figures = await measure_ingest(hub, 0.5, warmup_s=0.2, budget_s=5.0, concurrency=4)  # type: ignore[arg-type]
    print("\n".join(figures.lines()))

    assert figures.accepted == 0 and not producer.records
    assert set(figures.refusals) == {"HTTP 503 5002502 BROKER_UNAVAILABLE"}
    assert figures.refused == figures.refusals["HTTP 503 5002502 BROKER_UNAVAILABLE"] > 0
    assert any("not accepted: HTTP 503 5002502 BROKER_UNAVAILABLE" in p for p in figures.problems)
    assert any("PROBLEM" in line for line in figures.lines())


class _Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += data

    def close(self) -> None:
        self.closed = True


async def test_a_response_split_across_reads_is_read_by_content_length() -> None:
    conn = Connection()
    transport = _Transport()
    conn.connection_made(transport)
    answer = asyncio.ensure_future(conn.request(b"POST / HTTP/1.1\r\n\r\n"))
    await asyncio.sleep(0)
    body = b'{"responseCode":"2002500"}'
    wire = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    for piece in (wire[:10], wire[10:40], wire[40:-3], wire[-3:] + b"HTTP/1.1 2"):  # the next answer's start too
        assert not answer.done()
        conn.data_received(piece)
    assert await answer == (200, body)
    assert bytes(conn.buffer) == b"HTTP/1.1 2" and not conn.closed

    second = asyncio.ensure_future(conn.request(b"POST / HTTP/1.1\r\n\r\n"))
    await asyncio.sleep(0)
    conn.connection_lost(None)
    with pytest.raises(ResponseError):
        await second


def test_lines_are_indented_like_the_bench_report() -> None:
    figures = IngestFigures(
        accepted=10, refused=1, seconds=1.0, api_cpu_s=0.5, per_core_rate=20.0, p50_ms=1.0, p99_ms=2.0
    )
    figures.problems.append("1 request(s) not accepted")
    lines = figures.lines()
    assert lines and all(line.startswith("      ") and not line.startswith("       ") for line in lines)
    assert lines[-1] == "      PROBLEM: 1 request(s) not accepted"
