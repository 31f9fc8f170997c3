"""services.outbox without an aiokafka producer (a test double): every record goes through Topic.send, in order,
and the wait covers them all."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from services.outbox import Outbox


class FakeTopic:
    def __init__(self, name: str, log: list[tuple[str, Any, Any, Any]], fail: bool) -> None:
        self.name, self.log, self.fail = name, log, fail

    async def send(self, *, key: Any, value: Any, headers: Any) -> asyncio.Future[None]:
        self.log.append((self.name, key, value, headers))
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.fail:
            future.set_exception(RuntimeError("refused"))
        else:
            future.set_result(None)
        return future


def app_with(log: list[tuple[str, Any, Any, Any]], fail: bool = False) -> SimpleNamespace:
    return SimpleNamespace(producer=None, topic=lambda name, **_: FakeTopic(name, log, fail))


async def test_without_aiokafka_each_record_is_sent_in_order() -> None:
    log: list[tuple[str, Any, Any, Any]] = []
    outbox = Outbox(app_with(log), "unit")
    outbox.add("t1", b"k1", b"v1", [("h", b"1")])
    outbox.add("t2", b"k2", b"v2")
    outbox.add("t1", None, b"v3")
    await outbox.send()
    assert log == [("t1", b"k1", b"v1", [("h", b"1")]), ("t1", None, b"v3", []), ("t2", b"k2", b"v2", [])]
    assert len(outbox) == 0
    await outbox.send()  # nothing left: nothing sent again
    assert len(log) == 3


async def test_a_refused_record_fails_the_send() -> None:
    outbox = Outbox(app_with([], fail=True), "unit")
    outbox.add("t1", b"k", b"v")
    with pytest.raises(RuntimeError, match="refused"):
        await outbox.send()
