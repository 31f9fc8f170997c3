"""A batch's outputs, handed to Kafka as one record batch per topic-partition.

Faust's ``Topic.send`` costs a stage tens of microseconds of CPU per record (key and value preparation, header
conversion, callbacks, an aiokafka future and its bookkeeping) and a wait whenever the partition's open batch is
full or in flight. A stage that already works a batch at a time (services/batches.py) collects its outputs here
and sends them with aiokafka's ``create_batch``/``send_batch``: one append per record, one submission per
topic-partition, one wait for Kafka's acknowledgement of them all.

Partitions are chosen by the producer's own partitioner (murmur2 of the key, as ``Topic.send`` does), so
co-partitioning of the participant key is unchanged. Records of one topic-partition keep the order they were
added in: aiokafka sends a partition's batches one after the other.

With a producer that is not aiokafka's (a test double) every record goes through ``Topic.send`` instead.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from aiokafka.partitioner import murmur2

from services import metrics
from services.acks import acknowledged

Headers = Sequence[tuple[str, bytes]]
Record = tuple[bytes | None, bytes | None, Headers]


def default_partition(key: bytes, partitions: int) -> int:
    """The partition the default producer partitioner (murmur2 of the key, as Kafka's Java client) gives ``key``
    among ``partitions``: where every keyed record of the hub lands."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


class Outbox:
    def __init__(self, app: Any, stage: str) -> None:
        self.app = app
        self.stage = stage
        self._by_topic: dict[str, list[Record]] = {}

    def add(self, topic: str, key: bytes | None, value: bytes | None, headers: Headers = ()) -> None:
        self._by_topic.setdefault(topic, []).append((key, value, headers))

    def __len__(self) -> int:
        return sum(len(records) for records in self._by_topic.values())

    async def send(self) -> None:
        """Send everything added so far; return once Kafka acknowledged it all, or raise what the producer raised."""
        by_topic, self._by_topic = self._by_topic, {}
        if not by_topic:
            return
        producer = getattr(getattr(self.app, "producer", None), "_producer", None)
        pending: list[asyncio.Future[Any]] = []
        for topic, records in by_topic.items():
            if producer is None or not hasattr(producer, "send_batch"):
                pending += [await self._send_one_by_one(topic, key, value, headers) for key, value, headers in records]
            else:
                pending += await send_record_batches(producer, topic, records)
            metrics.EVENTS_OUT.labels(self.stage, topic).inc(len(records))
        await acknowledged(self.app, pending)

    async def _send_one_by_one(
        self, topic: str, key: bytes | None, value: bytes | None, headers: Headers
    ) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = await self.app.topic(
            topic, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
        ).send(key=key, value=value, headers=list(headers))
        return future


async def send_record_batches(
    producer: Any, topic: str, records: Sequence[Record], partition: int | None = None
) -> list[asyncio.Future[Any]]:
    """Submit ``records`` as closed record batches of ``producer`` (aiokafka), to ``partition`` or, when None, to
    each key's partition by the producer's partitioner; returns the futures of their acknowledgements."""
    await producer.client._wait_on_metadata(topic)
    by_partition: dict[int, list[Record]] = {}
    for record in records:
        key, value, _ = record
        p = partition if partition is not None else producer._partition(topic, None, None, None, key, value)
        by_partition.setdefault(p, []).append(record)
    pending: list[asyncio.Future[Any]] = []
    for p, in_partition in by_partition.items():
        batch = producer.create_batch()
        for key, value, headers in in_partition:
            if batch.append(key=key, value=value, timestamp=None, headers=list(headers)) is not None:
                continue
            if batch.record_count():
                batch.close()
                pending.append(await producer.send_batch(batch, topic, partition=p))
                batch = producer.create_batch()
                if batch.append(key=key, value=value, timestamp=None, headers=list(headers)) is not None:
                    continue
            # Larger than a whole batch: the producer's own path knows the request size limit and says so.
            pending.append(await producer.send(topic, value=value, key=key, partition=p, headers=list(headers)))
        if batch.record_count():
            batch.close()
            pending.append(await producer.send_batch(batch, topic, partition=p))
    return pending
