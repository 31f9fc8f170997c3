"""services.acks and services.durable_table against the embedded broker: an acknowledgement comes back although
the producer's linger is a minute, so the stages that wait for one do not pay the linger per wait; and writes
sent alone leave the broker's listed end of each partition exact, which table recovery relies on."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.structs import TopicPartition

from connectors.embedded import EmbeddedBroker
from services.acks import acknowledged
from services.durable_table import DurableWrites

pytestmark = pytest.mark.integration


async def test_acknowledged_does_not_wait_for_the_linger(broker: EmbeddedBroker) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, acks="all", linger_ms=60_000)
    await producer.start()
    try:
        app = SimpleNamespace(producer=SimpleNamespace(_producer=producer))
        for round_ in range(3):  # again after a batch was sent: the sender sleeps on a fresh waiter
            pending = [
                await producer.send("sinergi-acks-test", f"v{round_}-{i}".encode(), partition=0) for i in range(5)
            ]
            # The deadline is far below the linger: without the push the sends would still be lingering.
            await asyncio.wait_for(acknowledged(app, pending), timeout=20.0)
            offsets = [p.result().offset for p in pending]
            assert offsets == sorted(offsets) and len(set(offsets)) == 5
    finally:
        await producer.stop()


class Changelog:
    """What DurableWrites uses of a Faust changelog topic, on a real producer."""

    def __init__(self, producer: AIOKafkaProducer, name: str) -> None:
        self.producer, self.name = producer, name

    def get_topic_name(self) -> str:
        return self.name

    async def send(self, *, key: bytes, value: bytes | None, partition: int, **_: object) -> asyncio.Future[object]:
        future: asyncio.Future[object] = await self.producer.send(self.name, value, key=key, partition=partition)
        return future


def table_on(producer: AIOKafkaProducer, topic: str) -> SimpleNamespace:
    """What DurableWrites uses of a Faust table, around a real producer."""
    return SimpleNamespace(
        app=SimpleNamespace(producer=SimpleNamespace(_producer=producer)),
        data={},
        changelog_topic=Changelog(producer, topic),
        key_serializer="raw",
        value_serializer="raw",
        _on_changelog_sent=None,
    )


async def listed_ends(bootstrap: str, topic: str, partitions: int) -> dict[int, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in range(partitions)])
        return {tp.partition: offset for tp, offset in ends.items()}
    finally:
        await consumer.stop()


async def test_after_settle_the_listed_end_of_every_partition_is_exact(broker: EmbeddedBroker) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        # What the broker does with an ordinary burst: one multi-record batch, its end listed short.
        burst = [await producer.send("sinergi-acks-burst", b"v", partition=0) for _ in range(5)]
        await asyncio.gather(*burst)
        assert [f.result().offset for f in burst] == [0, 1, 2, 3, 4]
        assert (await listed_ends(broker.bootstrap, "sinergi-acks-burst", 1))[0] < 5, (
            "the broker now lists a batch's end exactly: settle's last-write-alone may no longer be needed"
        )

        admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap)
        await admin.start()
        try:
            await admin.create_topics([NewTopic("sinergi-acks-alone", num_partitions=3, replication_factor=1)])
        finally:
            await admin.close()
        table = table_on(producer, "sinergi-acks-alone")
        writes = DurableWrites(table)
        sent = 0
        for round_ in range(4):  # interleaved partitions, as a reconciler batch writes them; several settles
            for i in range(50 + round_):
                writes.put(i % 3, f"k{i % 17}".encode(), f"v{round_}-{i}".encode())
            sent += 50 + round_
            await writes.settle()
            ends = await listed_ends(broker.bootstrap, "sinergi-acks-alone", 3)
            assert sum(ends.values()) == sent, f"settle {round_}: the listed ends {ends} miss writes"
        assert table.data[b"k16"] == b"v3-50"
    finally:
        await producer.stop()
