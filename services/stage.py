"""What every stream processor shares: sending outputs, dead-lettering, counting.

A stage never crashes on bad input: whatever it cannot accept goes to dlq.<stage> with the original
bytes and headers naming the reason and the source coordinates. A send that Kafka refuses does crash
the worker, so that its uncommitted input is processed again after the restart (at-least-once).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar, cast

import faust
import orjson

from services import metrics
from services.app import topic
from services.batches import batches_of, phase, run_to_the_end
from services.catalogue import TopicSpec, dlq
from services.domain.errors import Rejected
from services.domain.models import Enrollment, Payment
from services.outbox import Outbox

log = logging.getLogger(__name__)

Headers = list[tuple[str, bytes]]
Canonical = TypeVar("Canonical", Enrollment, Payment)


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


def batch_of(ctx: Any) -> tuple[int, float]:
    """A stage's batch bound from the settings: (events, seconds)."""
    return ctx.settings.stage_batch_max, ctx.settings.stage_batch_within_ms / 1000.0


class Stage:
    def __init__(self, app: faust.App, name: str) -> None:
        self.app = app
        self.name = name
        self._dlq = topic(app, dlq(name).name)
        self._topics: dict[str, faust.TopicT] = {}
        # labels() validates and looks its child up under a lock (~2 µs); a stage counts every event, so it keeps
        # the children it uses.
        self._in_counters: dict[str, Any] = {}
        self._latency = metrics.PROCESSING_LATENCY.labels(name)

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
        key, value, headers = self._dead_letter_record(event, reason, message, schema_id)
        self._watch(await self._dlq.send(key=key, value=value, headers=headers))

    def dead_letter_into(
        self, outbox: Outbox, event: faust.EventT, reason: str, message: str, schema_id: int | None = None
    ) -> None:
        """As dead_letter, for a batch: the record leaves with the batch's other outputs."""
        outbox.add(self._dlq.get_topic_name(), *self._dead_letter_record(event, reason, message, schema_id))

    def _dead_letter_record(
        self, event: faust.EventT, reason: str, message: str, schema_id: int | None
    ) -> tuple[bytes | None, bytes, Headers]:
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
        metrics.DEAD_LETTERS.labels(self.name, reason).inc()
        log.warning(
            "dead-lettered %s/%s@%s reason=%s",
            msg.topic,
            msg.partition,
            msg.offset,
            reason,
        )
        return key, value, headers

    async def normalize_batches(
        self,
        stream: faust.StreamT,
        out: TopicSpec,
        codec: Any,
        convert: Callable[[dict[str, Any], dict[str, bytes], datetime], Canonical],
        batch: tuple[int, float],
    ) -> None:
        """The normalizers' loop: raw JSON in, one canonical Avro record out, anything refused dead-lettered.

        `convert(body, headers, received_at)` is the one domain call; it raises Rejected for bad input. A batch
        of up to `batch` = (events, seconds) is converted, then its outputs leave as record batches and are
        acknowledged before the batch's inputs can be committed.
        """
        async for events in batches_of(stream, self.name, *batch):
            await run_to_the_end(self.name, self._normalize_batch(events, out, codec, convert))

    async def _normalize_batch(
        self,
        events: list[faust.EventT],
        out: TopicSpec,
        codec: Any,
        convert: Callable[[dict[str, Any], dict[str, bytes], datetime], Canonical],
    ) -> None:
        outbox = Outbox(self.app, self.name)
        accepted_at: list[datetime] = []
        with phase(self.name, "decide"):
            for event in events:
                self.consumed(event)
                converted = self._convert(event, codec, out.value_schema or "", convert, outbox)
                if converted is not None:
                    outbox.add(out.name, *converted[:3])
                    accepted_at.append(converted[3])
        with phase(self.name, "emit"):
            await outbox.send()
        for accepted in accepted_at:
            self.observe_latency(accepted)

    def _convert(
        self,
        event: faust.EventT,
        codec: Any,
        schema: str,
        convert: Callable[[dict[str, Any], dict[str, bytes], datetime], Canonical],
        outbox: Outbox,
    ) -> tuple[bytes, bytes, Headers, datetime] | None:
        msg = event.message
        headers = header_map(msg.headers)
        accepted = received_at(headers, msg.timestamp * 1000 if msg.timestamp else None)
        try:
            body = orjson.loads(msg.value or b"")
            if not isinstance(body, dict):
                raise Rejected("INVALID_JSON", None, "body is not a JSON object")
            record = convert(body, headers, accepted)
        except orjson.JSONDecodeError:
            self.dead_letter_into(outbox, event, "INVALID_JSON", "value is not valid JSON")
            return None
        except Rejected as rejected:
            self.dead_letter_into(outbox, event, rejected.reason, str(rejected))
            return None
        except Exception as exc:  # never crash the worker on one record
            self.dead_letter_into(outbox, event, "UNEXPECTED", type(exc).__name__)
            return None
        # Outside the try: an encoder that cannot reach the schema registry is no fault of the record; the batch
        # fails and is redone after the restart.
        value = codec.encode(schema, record)
        out_headers: Headers = [
            ("sinergi-event-id", record.event_id.encode()),
            ("sinergi-received-at", accepted.isoformat().encode()),
        ]
        return record.participant_id.encode(), value, out_headers, accepted

    def consumed(self, event: faust.EventT) -> None:
        source = event.message.topic
        counter = self._in_counters.get(source)
        if counter is None:
            counter = self._in_counters[source] = metrics.EVENTS_IN.labels(self.name, source)
        counter.inc()

    def observe_latency(self, accepted: datetime) -> None:
        self._latency.observe(max(0.0, time.time() - accepted.timestamp()))
