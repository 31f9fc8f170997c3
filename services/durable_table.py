"""Table writes made durable before anything derived from them is published.

A Faust table sends its changelog records through the producer's buffer (``send_soon``), drained by a
background task, while a stage's outputs go to the producer at once. A worker SIGKILLed in between has
published an output whose state never reached the changelog; the restarted worker rebuilds the older state,
may see the inputs of several topics in another interleaving, and publishes a *different* record under the
same version (tests/integration/test_crash_every_processor.py found one). Writing the changelog directly and
awaiting its acknowledgement before the outputs closes that window: after a crash either the state is there
(the replayed input is recognised as applied and the current version is re-sent unchanged) or nothing derived
from it was published.

A stage may collect several writes and settle them together (notify_kbri's forwarded-marks, where a mark lost
in recovery only means an update sent twice), or settle each write alone (the reconciler: Tansu lists the end
of a multi-record batch short, so a recovery could stop before the last writes of a batch).
"""

from __future__ import annotations

import asyncio
from typing import Any


class DurableWrites:
    def __init__(self, table: Any) -> None:
        self.table = table  # a faust Table; its local data is what later events of the batch read
        self._pending: list[asyncio.Future[Any]] = []

    async def put(self, partition: int, key: bytes, value: bytes | None) -> None:
        """Apply locally now and send to the changelog partition (the input's, as Faust itself does)."""
        if value is None:
            self.table.data.pop(key, None)
        else:
            self.table.data[key] = value
        pending = await self.table.changelog_topic.send(
            key=key,
            value=value,
            partition=partition,
            key_serializer=self.table.key_serializer,
            value_serializer=self.table.value_serializer,
            callback=self.table._on_changelog_sent,  # keeps a persistent store's offsets, as Table.send_changelog
        )
        self._pending.append(pending)

    @property
    def unsettled(self) -> int:
        return len(self._pending)

    async def settle(self) -> None:
        """Return once Kafka acknowledged every write so far; raises what the producer raised."""
        pending, self._pending = self._pending, []
        if pending:
            await asyncio.gather(*pending)
