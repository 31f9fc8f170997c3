"""The simulator against the real partner APIs in-process (ASGI transport, in-memory producer)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from connectors.bank.app import create_bank_app
from connectors.kafka_edge import InMemoryProducer
from connectors.kbri.app import create_kbri_app
from services.catalogue import ENROLLMENTS_RAW, PAYMENTS_RAW
from services.config import Settings
from services.simulation.generators import Mix
from services.simulator import RetryPolicy, Simulator

FAST = RetryPolicy(initial_s=0.001, max_s=0.01, request_deadline_s=5.0, ready_deadline_s=5.0)
NO_DELAY = Mix(pay_delay_max_s=0.0)


class Flaky(httpx.AsyncBaseTransport):
    """Refuses the first `failures` connections, then delegates (an API that is still starting)."""

    def __init__(self, inner: httpx.AsyncBaseTransport, failures: int) -> None:
        self.inner = inner
        self.failures = failures

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.failures > 0:
            self.failures -= 1
            raise httpx.ConnectError("connection refused", request=request)
        return await self.inner.handle_async_request(request)


@pytest.fixture
def settings() -> Settings:
    return Settings()


@pytest.fixture
def producer() -> InMemoryProducer:
    return InMemoryProducer()


@pytest.fixture
async def clients(
    settings: Settings, producer: InMemoryProducer
) -> AsyncIterator[Callable[..., tuple[httpx.AsyncClient, httpx.AsyncClient]]]:
    opened: list[httpx.AsyncClient] = []

    def make(kbri_failures: int = 0, bank_failures: int = 0) -> tuple[httpx.AsyncClient, httpx.AsyncClient]:
        kbri = httpx.AsyncClient(
            transport=Flaky(httpx.ASGITransport(app=create_kbri_app(settings, producer)), kbri_failures),
            base_url="http://kbri.test",
        )
        bank = httpx.AsyncClient(
            transport=Flaky(httpx.ASGITransport(app=create_bank_app(settings, producer)), bank_failures),
            base_url="http://bank.test",
        )
        opened.extend((kbri, bank))
        return kbri, bank

    yield make
    for client in opened:
        await client.aclose()


def _personal_values(producer: InMemoryProducer) -> set[str]:
    values: set[str] = set()
    for record in producer.records:
        body = json.loads(record.value)
        if record.topic == ENROLLMENTS_RAW.name:
            values |= {body["nik"], body["passport_number"], body["full_name"]}
        else:
            values |= {body["virtualAccountNo"].strip(), body["customerNo"]}
    return values


async def test_a_round_enrolls_pays_and_gets_the_expected_refusals(
    settings: Settings, producer: InMemoryProducer, clients: Any
) -> None:
    kbri, bank = clients()
    lines: list[str] = []
    mix = Mix(
        pay_delay_max_s=0.0, bad_enrollment_share=0.2, bad_payment_share=0.2, partial_share=0.3, duplicate_share=0.3
    )
    sim = Simulator(settings, kbri, bank, rate=0, seed=7, mix=mix, retry=FAST, out=lines.append)
    status = await sim.run(forever=False, members=60, stop=asyncio.Event())

    assert status == 0, lines
    assert lines[0].startswith("simulator: seed 7, 60 members per round")
    (round_line,) = [line for line in lines if line.startswith("round 1")]
    assert "unexpected 0" in round_line and "gave up 0" in round_line
    for code in ("NIK_", "AMOUNT_FORMAT", "VA_MISMATCH", "partial", "duplicate", "IDR"):
        assert code in round_line, round_line

    enrollments = [r for r in producer.records if r.topic == ENROLLMENTS_RAW.name]
    payments = [r for r in producer.records if r.topic == PAYMENTS_RAW.name]
    assert 40 < len(enrollments) <= 60
    assert len(payments) > len(enrollments)  # instalments and resends
    currencies = {json.loads(p.value)["paidAmount"]["currency"] for p in payments}
    assert {"IDR", "MYR"} <= currencies and currencies & {"HKD", "TWD"}
    # no personal value ever reaches the output
    output = "\n".join(lines)
    leaked = [v for v in _personal_values(producer) if v in output]
    assert not leaked


async def test_same_seed_same_traffic(settings: Settings, clients: Any) -> None:
    def bodies(producer: InMemoryProducer) -> list[bytes]:
        return sorted(r.value for r in producer.records if r.topic == ENROLLMENTS_RAW.name)

    runs = []
    for _ in range(2):
        producer = InMemoryProducer()
        kbri = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=create_kbri_app(settings, producer)), base_url="http://kbri.test"
        )
        bank = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=create_bank_app(settings, producer)), base_url="http://bank.test"
        )
        async with kbri, bank:
            sim = Simulator(settings, kbri, bank, rate=0, seed=99, mix=NO_DELAY, retry=FAST, out=lambda _: None)
            assert await sim.run(forever=False, members=10, stop=asyncio.Event()) == 0
        runs.append(bodies(producer))
    assert runs[0] == runs[1]


async def test_waits_for_apis_that_are_still_starting(
    settings: Settings, producer: InMemoryProducer, clients: Any
) -> None:
    kbri, bank = clients(kbri_failures=5, bank_failures=5)
    lines: list[str] = []
    sim = Simulator(settings, kbri, bank, rate=0, seed=1, mix=NO_DELAY, retry=FAST, out=lines.append)
    assert await sim.run(forever=False, members=5, stop=asyncio.Event()) == 0
    assert any("waiting for the APIs" in line for line in lines)


async def test_retries_connection_errors_and_503_with_the_same_request(
    settings: Settings, producer: InMemoryProducer, clients: Any
) -> None:
    kbri, bank = clients()
    lines: list[str] = []
    sim = Simulator(settings, kbri, bank, rate=0, seed=2, mix=NO_DELAY, retry=FAST, out=lines.append)
    assert await sim.wait_ready(asyncio.Event())
    kbri._transport.failures = 3  # type: ignore[attr-defined]
    producer.failing = "TIMEOUT"  # Kafka not acknowledging: the APIs answer 503

    async def recover() -> None:
        await asyncio.sleep(0.05)
        producer.failing = None

    healer = asyncio.create_task(recover())
    stats, interrupted = await sim.run_round(1, 5, asyncio.Event())
    await healer
    assert not interrupted
    assert stats.retries > 3
    assert stats.ok, stats.line("round")
    assert stats.enrolled == sum(1 for r in producer.records if r.topic == ENROLLMENTS_RAW.name)


async def test_gives_up_when_the_apis_never_answer(settings: Settings, clients: Any) -> None:
    kbri, bank = clients(kbri_failures=10**9)
    lines: list[str] = []
    retry = RetryPolicy(initial_s=0.001, max_s=0.01, ready_deadline_s=0.1)
    sim = Simulator(settings, kbri, bank, rate=0, seed=1, retry=retry, out=lines.append)
    assert await sim.run(forever=False, members=5, stop=asyncio.Event()) == 1
    assert "did not answer" in lines[-1]


async def test_forever_runs_rounds_until_stopped_and_exits_0(
    settings: Settings, producer: InMemoryProducer, clients: Any
) -> None:
    kbri, bank = clients()
    stop = asyncio.Event()
    lines: list[str] = []

    def out(line: str) -> None:
        lines.append(line)
        if line.startswith("round 2"):
            stop.set()

    sim = Simulator(settings, kbri, bank, rate=0, seed=3, mix=NO_DELAY, retry=FAST, out=out)
    assert await sim.run(forever=True, members=4, stop=stop) == 0
    assert [line.split(":")[0] for line in lines[1:]] == ["round 1", "round 2", "total of 2 round(s)"]


async def test_stop_interrupts_a_round_cleanly(settings: Settings, clients: Any) -> None:
    kbri, bank = clients()
    stop = asyncio.Event()
    lines: list[str] = []
    sim = Simulator(settings, kbri, bank, rate=50, seed=4, mix=Mix(pay_delay_max_s=5.0), retry=FAST, out=lines.append)
    asyncio.get_running_loop().call_later(0.3, stop.set)
    assert await sim.run(forever=True, members=500, stop=stop) == 0
    assert any(line.startswith("round 1 (interrupted)") for line in lines)


async def test_unexpected_answers_are_counted_and_fail_a_single_round(settings: Settings) -> None:
    def broken(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/healthz":
            return httpx.Response(200, json={"status": "ok"})
        return httpx.Response(500, json={"reason": "INTERNAL_ERROR", "message": "x"})

    transport = httpx.MockTransport(broken)
    async with (
        httpx.AsyncClient(transport=transport, base_url="http://k") as kbri,
        httpx.AsyncClient(transport=transport, base_url="http://b") as bank,
    ):
        lines: list[str] = []
        sim = Simulator(settings, kbri, bank, rate=0, seed=5, mix=NO_DELAY, retry=FAST, out=lines.append)
        assert await sim.run(forever=False, members=3, stop=asyncio.Event()) == 1
    assert "enrollment:500:INTERNAL_ERROR" in lines[-1]
