"""Table writes made durable before anything derived from them is published.

A Faust table sends its changelog records through the producer's buffer (``send_soon``), drained by a
background task, while a stage's outputs go to the producer at once. A worker SIGKILLed in between has
published an output whose state never reached the changelog; the restarted worker rebuilds the older state,
may see the inputs of several topics in another interleaving, and publishes a *different* record under the
same version (tests/integration/test_crash_every_processor.py found one). Writing the changelog directly and
awaiting its acknowledgement before the outputs closes that window: after a crash either the state is there
(the replayed input is recognised as applied and the current version is re-sent unchanged) or nothing derived
from it was published.

The embedded broker (Tansu) lists the end of a partition as the base offset of its last record batch + 1: after
a three-record batch at offsets 0-2 it answers 1 (tests/integration/test_acks_broker.py). Faust recovers a table
up to that listed end, so the tail of a multi-record batch can be missing after a restart. ``settle`` therefore
sends the last write of each partition as a one-record batch of its own, after the others: whatever the
interleaving of writers, a partition's last batch after a completed ``settle`` is a single record and its listed
end is exact. A crash in the middle of a settle can leave a multi-record tail, but nothing derived from those
writes was published and their inputs were not committed.
"""

from __future__ import annotations

import asyncio
from typing import Any

from services.acks import acknowledged
from services.outbox import Record, send_record_batches

Write = tuple[int, bytes, bytes | None]


class DurableWrites:
    def __init__(self, table: Any) -> None:
        self.table = table  # a faust Table; its local data is what later events of the batch read
        self._unsent: list[Write] = []

    def put(self, partition: int, key: bytes, value: bytes | None) -> None:
        """Apply locally now; the changelog write (to the input's partition, as Faust does) goes at settle()."""
        if value is not None:
            # A tight copy: orjson's output keeps its over-allocated buffer (a 464-byte value held 4 KiB), and a
            # memory table holds every value for good: 8.8 KiB per member in the reconciler before this.
            value = bytes(memoryview(value))
        if value is None:
            self.table.data.pop(key, None)
        else:
            self.table.data[key] = value
        self._unsent.append((partition, key, value))

    @property
    def unsettled(self) -> int:
        return len(self._unsent)

    async def settle(self) -> None:
        """Send every write so far and return once Kafka acknowledged them all; raises what the producer raised."""
        writes, self._unsent = self._unsent, []
        if not writes:
            return
        app = getattr(self.table, "app", None)
        producer = getattr(getattr(app, "producer", None), "_producer", None)
        if producer is None or not hasattr(producer, "send_batch"):  # not aiokafka (a test double): same order
            last = {partition: i for i, (partition, _, _) in enumerate(writes)}
            ordered = [w for i, w in enumerate(writes) if last[w[0]] != i] + [writes[i] for i in last.values()]
            await acknowledged(app, [await self._send(*w) for w in ordered])
            return
        by_partition: dict[int, list[Record]] = {}
        for partition, key, value in writes:
            by_partition.setdefault(partition, []).append((key, value, ()))
        note = getattr(self.table, "note_changelog_write", None)  # GET /state's bookkeeping (worker_health.py)
        if note is not None:
            for partition, key, value in writes:
                note(key, value, partition)
        # Closed batches, so nothing else joins them: first every partition's head, then each partition's last
        # write alone (aiokafka submits it once the head left), two requests per settle whatever the partitions.
        topic = self.table.changelog_topic.get_topic_name()
        pending: list[asyncio.Future[Any]] = []
        for partition, records in by_partition.items():
            if len(records) > 1:
                pending += await send_record_batches(producer, topic, records[:-1], partition)
        for partition, records in by_partition.items():
            pending += await send_record_batches(producer, topic, records[-1:], partition)
        await acknowledged(app, pending)

    async def _send(self, partition: int, key: bytes, value: bytes | None) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = await self.table.changelog_topic.send(
            key=key,
            value=value,
            partition=partition,
            key_serializer=self.table.key_serializer,
            value_serializer=self.table.value_serializer,
            callback=self.table._on_changelog_sent,  # keeps a persistent store's offsets, as Table.send_changelog
        )
        return future
