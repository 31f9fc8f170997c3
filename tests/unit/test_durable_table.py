"""DurableWrites: local state at once; settle() sends to the input's changelog partition, each partition's last
write after the others, and waits for the acks."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from services.durable_table import DurableWrites


class FakeChangelog:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.futures: list[asyncio.Future[Any]] = []

    async def send(self, **kwargs: Any) -> asyncio.Future[Any]:
        self.sent.append(kwargs)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.futures.append(fut)
        return fut


class FakeTable:
    key_serializer = "raw"
    value_serializer = "raw"

    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {b"gone": b"old"}
        self.changelog_topic = FakeChangelog()

    def _on_changelog_sent(self, fut: Any) -> None:  # pragma: no cover - only handed over
        pass


async def test_writes_apply_locally_at_once_and_go_to_the_changelog_at_settle() -> None:
    table = FakeTable()
    writes = DurableWrites(table)
    writes.put(3, b"k", b"v1")
    writes.put(1, b"gone", None)
    writes.put(3, b"k", b"v2")
    writes.put(3, b"j", b"v3")
    assert table.data == {b"k": b"v2", b"j": b"v3"}
    assert table.changelog_topic.sent == [] and writes.unsettled == 4
    settling = asyncio.ensure_future(writes.settle())
    await asyncio.sleep(0)
    # In order within each partition; every partition's last write after the others (on Kafka, a batch of its own).
    sent = [(m["partition"], m["key"], m["value"]) for m in table.changelog_topic.sent]
    assert [w for w in sent if w[0] == 3] == [(3, b"k", b"v1"), (3, b"k", b"v2"), (3, b"j", b"v3")]
    assert [w for w in sent if w[0] == 1] == [(1, b"gone", None)]
    assert sent[:2] == [(3, b"k", b"v1"), (3, b"k", b"v2")]
    for fut in table.changelog_topic.futures:
        fut.set_result("ack")
    await asyncio.wait_for(settling, 1.0)
    assert writes.unsettled == 0


async def test_settle_returns_only_after_every_write_is_acknowledged() -> None:
    table = FakeTable()
    writes = DurableWrites(table)
    writes.put(0, b"a", b"1")
    writes.put(1, b"b", b"2")
    settling = asyncio.ensure_future(writes.settle())
    await asyncio.sleep(0)
    table.changelog_topic.futures[1].set_result("ack b")
    await asyncio.sleep(0)
    assert not settling.done()  # one write still unacknowledged: nothing derived may be published yet
    table.changelog_topic.futures[0].set_result("ack a")
    await asyncio.wait_for(settling, 1.0)
    assert writes.unsettled == 0


async def test_a_refused_write_raises_from_settle() -> None:
    table = FakeTable()
    writes = DurableWrites(table)
    writes.put(0, b"a", b"1")
    settling = asyncio.ensure_future(writes.settle())
    await asyncio.sleep(0)
    table.changelog_topic.futures[0].set_exception(RuntimeError("NotEnoughReplicas"))
    with pytest.raises(RuntimeError, match="NotEnoughReplicas"):
        await settling


def test_a_stored_value_holds_its_size_not_the_encoders_buffer() -> None:
    """orjson's output keeps an over-allocated buffer (about 4 KiB for a 464-byte document here); a memory table
    holds its values for good, so put() stores a tight copy."""
    import tracemalloc

    import orjson

    table = FakeTable()
    writes = DurableWrites(table)
    doc = {"state": "x" * 400, "credits": list(range(20))}
    size = len(orjson.dumps(doc))
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(2000):
            writes.put(0, str(i).encode(), orjson.dumps(doc))
        per_value = (tracemalloc.get_traced_memory()[0] - before) / 2000
    finally:
        tracemalloc.stop()
    assert table.data[b"7"] == orjson.dumps(doc)
    # value + key + dict slot + the pending changelog write: well under a second copy of the value; the encoder's
    # buffer alone would be ~4 KiB per value
    assert per_value < size + 512, per_value
