"""The edge producer without a broker: configuration, failure mapping, bounded waits, the test double."""

from __future__ import annotations

import asyncio

import pytest

from connectors.embedded import free_port
from connectors.kafka_edge import BrokerUnavailable, EdgeProducer, InMemoryProducer, producer_config
from services.config import Settings
from services.metrics import PRODUCE_FAILURES


def _nowhere() -> str:
    return f"127.0.0.1:{free_port()}"  # bound and released: nothing listens there


def _failures(topic: str, reason: str) -> float:
    return PRODUCE_FAILURES.labels(topic, reason)._value.get()


def test_config_is_idempotent_acks_all() -> None:
    settings = Settings(producer_linger_ms=7, producer_message_timeout_ms=1234)
    cfg = producer_config("h:1", settings)
    assert cfg["bootstrap.servers"] == "h:1"
    assert cfg["acks"] == "all"
    assert cfg["enable.idempotence"] is True
    assert cfg["linger.ms"] == 7
    assert cfg["message.timeout.ms"] == 1234


async def test_send_before_start_is_unavailable() -> None:
    producer = EdgeProducer(Settings(), _nowhere())
    before = _failures("t.edge", "NOT_RUNNING")
    with pytest.raises(BrokerUnavailable) as info:
        await producer.send("t.edge", b"k", b"v", [])
    assert info.value.reason == "NOT_RUNNING"
    assert _failures("t.edge", "NOT_RUNNING") == before + 1


@pytest.mark.timeout(15)  # hang guard: the send must fail, not wait forever
async def test_unreachable_broker_times_out_within_bound() -> None:
    producer = EdgeProducer(Settings(producer_message_timeout_ms=300), _nowhere(), close_timeout_s=1.0)
    producer.start()
    try:
        with pytest.raises(BrokerUnavailable) as info:
            await producer.send("t.edge", b"k", b"v", [("h", b"1")])
        assert info.value.reason in {"TIMEOUT", "TRANSPORT"}
    finally:
        await producer.close()
    assert not producer.running


@pytest.mark.timeout(15)
async def test_full_local_queue_is_unavailable_at_once() -> None:
    producer = EdgeProducer(
        Settings(producer_message_timeout_ms=2000),
        _nowhere(),
        extra_config={"queue.buffering.max.messages": 1},
        close_timeout_s=0.2,
    )
    producer.start()
    first = asyncio.create_task(producer.send("t.edge", b"k", b"v1", []))
    await asyncio.sleep(0.05)
    try:
        with pytest.raises(BrokerUnavailable) as info:
            await producer.send("t.edge", b"k", b"v2", [])
        assert info.value.reason == "QUEUE_FULL"
    finally:
        await producer.close()  # fails the pending first send instead of leaving it hanging
    with pytest.raises(BrokerUnavailable):
        await first


@pytest.mark.timeout(15)  # a 30 s message timeout: close must not wait for it
async def test_close_fails_pending_sends() -> None:
    producer = EdgeProducer(Settings(producer_message_timeout_ms=30_000), _nowhere(), close_timeout_s=0.2)
    producer.start()
    pending = asyncio.create_task(producer.send("t.edge", b"k", b"v", []))
    await asyncio.sleep(0.05)
    await producer.close()
    with pytest.raises(BrokerUnavailable) as info:
        await pending
    assert info.value.reason == "CLOSED"
    with pytest.raises(BrokerUnavailable) as again:
        await producer.send("t.edge", b"k", b"v", [])
    assert again.value.reason == "NOT_RUNNING"


async def test_in_memory_producer_records_and_fails() -> None:
    producer = InMemoryProducer()
    producer.start()
    await producer.send("a", b"k", b"v", [("h", b"x")])
    producer.failing = "TIMEOUT"
    with pytest.raises(BrokerUnavailable) as info:
        await producer.send("a", b"k2", b"v2", [])
    assert info.value.reason == "TIMEOUT"
    assert producer.attempts == 2
    assert len(producer.records) == 1
    rec = producer.records[0]
    assert (rec.topic, rec.key, rec.value, rec.header("h"), rec.header("nope")) == (
        "a",
        b"k",
        b"v",
        b"x",
        None,
    )
    await producer.close()
    assert not producer.started
