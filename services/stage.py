"""What every stream processor shares: sending outputs, dead-lettering, counting.

A stage never crashes on bad input: whatever it cannot accept goes to dlq.<stage> with the original
bytes and headers naming the reason and the source coordinates. A send that Kafka refuses does crash
the worker, so that its uncommitted input is processed again after the restart (at-least-once).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, cast

import faust

from services import metrics
from services.app import topic
from services.catalogue import dlq

log = logging.getLogger(__name__)

Headers = list[tuple[str, bytes]]


def header_map(headers: Any) -> dict[str, bytes]:
    """Faust hands headers over as a list of pairs or a mapping; give callers one shape."""
    if not headers:
        return {}
    items: Iterable[tuple[str, Any]] = headers.items() if isinstance(headers, Mapping) else headers
    return {k: (v if isinstance(v, bytes) else str(v).encode()) for k, v in items}


def header_str(headers: Mapping[str, bytes], name: str, default: str = "") -> str:
    value = headers.get(name)
    return value.decode("utf-8", "replace") if value is not None else default


def received_at(headers: Mapping[str, bytes], fallback_ms: float | None = None) -> datetime:
    """When the edge accepted the event, to the millisecond (what Avro timestamp-millis keeps)."""
    raw = headers.get("sinergi-received-at")
    parsed: datetime | None = None
    if raw:
        try:
            parsed = datetime.fromisoformat(raw.decode())
        except ValueError:
            parsed = None
    if parsed is None or parsed.tzinfo is None:
        parsed = datetime.fromtimestamp(fallback_ms / 1000.0 if fallback_ms else time.time(), UTC)
    parsed = parsed.astimezone(UTC)
    return parsed.replace(microsecond=parsed.microsecond // 1000 * 1000)


class Stage:
    def __init__(self, app: faust.App, name: str) -> None:
        self.app = app
        self.name = name
        self._dlq = topic(app, dlq(name).name)
        self._topics: dict[str, faust.TopicT] = {}

    def out(self, name: str) -> faust.TopicT:
        if name not in self._topics:
            self._topics[name] = topic(self.app, name)
        return self._topics[name]

    async def send(self, topic_name: str, key: bytes, value: bytes, headers: Headers | None = None) -> None:
        self._watch(await self.out(topic_name).send(key=key, value=value, headers=headers or []))
        metrics.EVENTS_OUT.labels(self.name, topic_name).inc()

    def _watch(self, pending: Any) -> None:
        # Faust returns the producer's future: it settles when Kafka acknowledged or refused.
        cast("asyncio.Future[Any]", pending).add_done_callback(self._on_sent)

    def _on_sent(self, fut: asyncio.Future[Any]) -> None:
        exc = fut.exception() if not fut.cancelled() else None
        if exc is not None:
            log.error("stage %s: Kafka refused an output (%s); crashing so the input is redone", self.name, exc)
            self.app._crash(exc)

    async def dead_letter(self, event: faust.EventT, reason: str, message: str, schema_id: int | None = None) -> None:
        msg = event.message
        original = header_map(msg.headers)
        headers: Headers = [(k, v) for k, v in original.items() if not k.startswith("dlq-")]
        headers += [
            ("dlq-source-topic", msg.topic.encode()),
            ("dlq-source-partition", str(msg.partition).encode()),
            ("dlq-source-offset", str(msg.offset).encode()),
            ("dlq-stage", self.name.encode()),
            ("dlq-reason", reason.encode()),
            ("dlq-message", message.encode()[:1000]),
            ("dlq-time", datetime.now(UTC).isoformat().encode()),
        ]
        if schema_id is not None:
            headers.append(("dlq-schema-id", str(schema_id).encode()))
        value = msg.value if isinstance(msg.value, bytes) else bytes(msg.value or b"")
        key = msg.key if isinstance(msg.key, bytes) or msg.key is None else bytes(msg.key)
        self._watch(await self._dlq.send(key=key, value=value, headers=headers))
        metrics.DEAD_LETTERS.labels(self.name, reason).inc()
        log.warning(
            "dead-lettered %s/%s@%s reason=%s",
            msg.topic,
            msg.partition,
            msg.offset,
            reason,
        )

    def consumed(self, event: faust.EventT) -> None:
        metrics.EVENTS_IN.labels(self.name, event.message.topic).inc()

    def observe_latency(self, accepted: datetime) -> None:
        metrics.PROCESSING_LATENCY.labels(self.name).observe(max(0.0, time.time() - accepted.timestamp()))
