"""services.acks: a wait for acknowledgement does not also wait out the producer's linger.

These run against aiokafka's real accumulator (not started, nothing sent), so an aiokafka upgrade that moves
the internals send_lingering_now relies on fails here rather than silently slowing every stage down.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.structs import TopicPartition

from services.acks import acknowledged, send_lingering_now


def app_with(producer: Any) -> Any:
    return SimpleNamespace(producer=SimpleNamespace(_producer=producer))


async def test_open_batches_are_closed_and_the_sender_woken() -> None:
    producer = AIOKafkaProducer(bootstrap_servers="127.0.0.1:9", linger_ms=60_000)
    try:
        accumulator = producer._message_accumulator
        tp = TopicPartition("t", 0)
        await accumulator.add_message(tp, b"k", b"v", timeout=1.0)
        batch = accumulator._batches[tp][0]
        assert batch.remaining_linger() is not None  # would wait up to a minute
        accumulator.drain_by_nodes(ignore_nodes=set(), muted_partitions=set())  # the sender sleeps: fresh waiter
        assert not accumulator._waiter_future.done()

        assert send_lingering_now(app_with(producer)) is True

        assert batch.remaining_linger() is None
        assert accumulator._waiter_future.done()
        assert batch.append(b"k2", b"v2", timestamp_ms=None) is None, "a closed batch takes no more records"
    finally:
        await producer.stop()


async def test_without_an_aiokafka_producer_nothing_is_forced_but_the_wait_still_happens() -> None:
    assert send_lingering_now(SimpleNamespace()) is False
    assert send_lingering_now(None) is False
    done = SimpleNamespace(result=None)

    async def ack() -> None:
        done.result = "acked"

    await acknowledged(None, [ack()])
    assert done.result == "acked"


async def test_a_refusal_is_raised() -> None:
    async def refused() -> None:
        raise RuntimeError("NOT_ENOUGH_REPLICAS")

    try:
        await acknowledged(None, [refused()])
    except RuntimeError as exc:
        assert "NOT_ENOUGH_REPLICAS" in str(exc)
    else:  # pragma: no cover - the assertion is the point
        raise AssertionError("the refusal was swallowed")
