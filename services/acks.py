"""Waiting for Kafka's acknowledgement without also waiting out the producer's linger.

The producer holds each batch for ``producer_linger_ms`` (5 ms) so that concurrent sends share a request:
that is what keeps the embedded broker's CPU per event low. A stage that must wait for an acknowledgement
before going on (a state change before its outputs, a statement entry before its ledger mark) would pay that
linger on every wait: 7.1 ms per acknowledged send against 1.1 ms with the batch sent at once (one aiokafka
producer on the embedded broker, this machine). So before waiting, close the open batches and wake the sender,
as aiokafka's own ``flush_for_commit`` does; sends that nobody waits for keep their linger.

Only aiokafka's accumulator is touched. With another producer (a test double, a future driver) nothing is
forced and the wait is merely slower.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterable
from typing import Any


def send_lingering_now(app: Any) -> bool:
    """Ask the app's producer to send every open batch now; False when it is not an aiokafka producer."""
    producer = getattr(getattr(app, "producer", None), "_producer", None)
    accumulator = getattr(producer, "_message_accumulator", None)
    batches = getattr(accumulator, "_batches", None)
    waiter = getattr(accumulator, "_waiter_future", None)
    if batches is None or waiter is None:
        return False
    for queue in batches.values():
        for batch in queue:
            batch._builder.close()  # a closed batch no longer lingers; later sends open a new one
    if not waiter.done():
        waiter.set_result(None)  # the sender routine sleeps on this until data or a linger deadline
    return True


async def acknowledged(app: Any, pending: Iterable[Awaitable[Any]]) -> None:
    """Return once Kafka acknowledged every pending send; raises what the producer raised."""
    waits = list(pending)
    if not waits:
        return
    send_lingering_now(app)
    await asyncio.gather(*waits)
