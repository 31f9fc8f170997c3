"""The edge producer: partner APIs answer only after Kafka acknowledged the record.

`EdgeProducer` adapts `confluent_kafka.Producer` (librdkafka) to asyncio. librdkafka's idempotent
producer works against the embedded Tansu broker; aiokafka's does not (Tansu refuses InitProducerId
v0). A dedicated daemon thread calls `poll()` so that delivery reports are served promptly; each
report completes an asyncio future on the request's loop via `call_soon_threadsafe`.

A request that gets `BrokerUnavailable` answers 503. The record may still reach Kafka later (a delivery
report can lose the race against our safety timeout); that is acceptable because consumers deduplicate
by the deterministic event id and the partner retries with the same request id.

`InMemoryProducer` is the test double with the same interface.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NoReturn, Protocol

from confluent_kafka import KafkaError, KafkaException, Message
from confluent_kafka import Producer as _KafkaProducer

from services.config import Settings
from services.logs import event
from services.metrics import PRODUCE_FAILURES, PRODUCE_LATENCY

log = logging.getLogger(__name__)

Headers = list[tuple[str, bytes]]

# Extra time granted beyond message.timeout.ms before we stop waiting for librdkafka's own report.
_SAFETY_MARGIN_S = 1.0
_ERROR_LOG_INTERVAL_S = 30.0


class BrokerUnavailable(Exception):
    """Kafka did not acknowledge a record. `reason` is a bounded code (metric label, 503 body)."""

    def __init__(self, topic: str, reason: str, detail: str = "") -> None:
        super().__init__(f"{topic}: {reason}{': ' + detail if detail else ''}")
        self.topic = topic
        self.reason = reason


class EdgeSender(Protocol):
    """What the HTTP connectors need from a producer. The apps call start()/close() in their lifespan."""

    def start(self) -> None: ...

    async def close(self) -> None: ...

    async def send(self, topic: str, key: bytes, value: bytes, headers: Headers) -> None: ...


def _reason_for(err: KafkaError) -> str:
    code = err.code()
    if code == KafkaError._MSG_TIMED_OUT:
        return "TIMEOUT"
    if code in (KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN, KafkaError._RESOLVE):
        return "TRANSPORT"
    if code in (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC, KafkaError._UNKNOWN_PARTITION):
        return "UNKNOWN_TOPIC"
    if err.fatal():
        return "FATAL"
    return "DELIVERY_FAILED"


def producer_config(bootstrap: str, settings: Settings, client_id: str = "sinergi-edge") -> dict[str, Any]:
    """The librdkafka configuration every edge producer uses."""
    return {
        "bootstrap.servers": bootstrap,
        "client.id": client_id,
        "acks": "all",
        "enable.idempotence": True,
        "linger.ms": settings.producer_linger_ms,
        "message.timeout.ms": settings.producer_message_timeout_ms,
        # Bounded local queue: a full queue means the broker is not keeping up → 503, not unbounded memory.
        "queue.buffering.max.messages": 100_000,
        "queue.buffering.max.kbytes": 65_536,
    }


class EdgeProducer:
    """asyncio adapter over an idempotent, acks=all librdkafka producer."""

    def __init__(
        self,
        settings: Settings,
        bootstrap: str,
        *,
        client_id: str = "sinergi-edge",
        extra_config: Mapping[str, Any] | None = None,
        close_timeout_s: float = 10.0,
    ) -> None:
        self._config = producer_config(bootstrap, settings, client_id)
        if extra_config:
            self._config.update(extra_config)
        self._wait_s = settings.producer_message_timeout_ms / 1000 + _SAFETY_MARGIN_S
        self._close_timeout_s = close_timeout_s
        self._producer: _KafkaProducer | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pending: set[asyncio.Future[None]] = set()
        self._closing = False
        self._error_logged: dict[str, float] = {}
        self.fatal_error: str | None = None  # set by librdkafka's fatal error; restart the process

    # --- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> None:
        if self._producer is not None:
            return
        config = dict(self._config)
        config["error_cb"] = self._on_client_error
        config["logger"] = logging.getLogger("sinergi.librdkafka")  # served by poll(), through our masking
        self._producer = _KafkaProducer(config)
        self._stop.clear()
        self._closing = False
        self._thread = threading.Thread(target=self._poll_loop, name="sinergi-edge-poll", daemon=True)
        self._thread.start()
        event(log, "edge producer started", client_id=self._config["client.id"])

    async def close(self) -> None:
        """Stop accepting sends, flush outstanding records (bounded), fail whatever is still pending."""
        producer = self._producer
        if producer is None:
            return
        self._closing = True
        self._stop.set()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 5.0)
        # flush() serves the remaining delivery callbacks itself.
        remaining = await asyncio.to_thread(producer.flush, self._close_timeout_s)
        for fut in list(self._pending):
            if not fut.done():
                fut.set_exception(BrokerUnavailable("*", "CLOSED"))
        self._pending.clear()
        self._producer = None
        self._thread = None
        event(log, "edge producer closed", unflushed=remaining)

    @property
    def running(self) -> bool:
        return self._producer is not None and not self._closing

    def _poll_loop(self) -> None:
        producer = self._producer
        assert producer is not None
        while not self._stop.is_set():
            try:
                producer.poll(0.1)
            except Exception:  # a callback must never kill the thread serving all callbacks
                log.exception("edge producer poll failed")

    def _on_client_error(self, err: KafkaError) -> None:
        # Connection-level problems (broker down, fatal idempotence errors). Codes only, no payloads;
        # the same code at most once per _ERROR_LOG_INTERVAL_S (librdkafka retries every second or so).
        now = time.monotonic()
        name = err.name()
        if err.fatal():
            self.fatal_error = name  # the idempotent producer is unusable now: every send will fail
        if err.fatal() or now - self._error_logged.get(name, -_ERROR_LOG_INTERVAL_S) >= _ERROR_LOG_INTERVAL_S:
            self._error_logged[name] = now
            log.warning("kafka client error %s fatal=%s", name, err.fatal())

    # --- sending -------------------------------------------------------------------------------------
    async def send(self, topic: str, key: bytes, value: bytes, headers: Headers) -> None:
        """Resolve once the broker acknowledged the record (acks=all); raise BrokerUnavailable otherwise."""
        producer = self._producer
        if producer is None or self._closing:
            self._fail(topic, "NOT_RUNNING")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        started = time.perf_counter()

        def on_delivery(err: KafkaError | None, _msg: Message) -> None:  # runs on the poll thread
            try:
                loop.call_soon_threadsafe(_complete, fut, topic, err)
            except RuntimeError:  # the loop is gone; nobody is waiting any more
                pass

        kafka_headers: list[tuple[str, str | bytes | None]] = list(headers)
        try:
            producer.produce(topic, value=value, key=key, headers=kafka_headers, on_delivery=on_delivery)
        except BufferError:
            self._fail(topic, "QUEUE_FULL")
        except KafkaException as exc:
            err = exc.args[0] if exc.args else None
            self._fail(topic, _reason_for(err) if isinstance(err, KafkaError) else "PRODUCE_FAILED")

        self._pending.add(fut)
        try:
            await asyncio.wait_for(fut, timeout=self._wait_s)  # cancels fut on timeout
        except TimeoutError:
            self._fail(topic, "TIMEOUT")
        except BrokerUnavailable as exc:
            PRODUCE_FAILURES.labels(topic, exc.reason).inc()
            raise
        finally:
            self._pending.discard(fut)
        PRODUCE_LATENCY.labels(topic).observe(time.perf_counter() - started)

    @staticmethod
    def _fail(topic: str, reason: str) -> NoReturn:
        PRODUCE_FAILURES.labels(topic, reason).inc()
        raise BrokerUnavailable(topic, reason)


def _complete(fut: asyncio.Future[None], topic: str, err: KafkaError | None) -> None:
    if fut.done():
        return
    if err is None:
        fut.set_result(None)
    else:
        fut.set_exception(BrokerUnavailable(topic, _reason_for(err), err.name()))


# --- test double ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ProducedRecord:
    topic: str
    key: bytes
    value: bytes
    headers: Headers

    def header(self, name: str) -> bytes | None:
        for k, v in self.headers:
            if k == name:
                return v
        return None


class InMemoryProducer:
    """Records acknowledged sends. Set `failing` to a reason code to make every send fail (503)."""

    def __init__(self) -> None:
        self.records: list[ProducedRecord] = []
        self.attempts = 0
        self.failing: str | None = None
        self.started = False

    def start(self) -> None:
        self.started = True

    async def close(self) -> None:
        self.started = False

    async def send(self, topic: str, key: bytes, value: bytes, headers: Headers) -> None:
        self.attempts += 1
        await asyncio.sleep(0)
        if self.failing is not None:
            raise BrokerUnavailable(topic, self.failing)
        self.records.append(ProducedRecord(topic, bytes(key), bytes(value), list(headers)))
