"""The edge producer: partner APIs answer only after Kafka acknowledged the record.

`EdgeProducer` adapts `confluent_kafka.Producer` (librdkafka) to asyncio. librdkafka's idempotent
producer works against the embedded Tansu broker; aiokafka's does not (Tansu refuses InitProducerId
v0). A dedicated daemon thread calls `poll()` so that delivery reports are served promptly; each
report completes an asyncio future on the request's loop via `call_soon_threadsafe`.

A request that gets `BrokerUnavailable` answers 503. The record may still reach Kafka later (a delivery
report can lose the race against our safety timeout); that is acceptable because consumers deduplicate
by the deterministic event id and the partner retries with the same request id.

A fatal librdkafka error leaves the idempotent producer unusable for good. It happens when a broker comes
back without the producer's state (a restarted broker with memory storage, an expired producer id:
UNKNOWN_PRODUCER_ID, "unable to retry without risking duplication"). The next send then replaces the
librdkafka producer with a fresh one (new producer id) instead of answering 503 until the process is
restarted; what the old one still held fails as 503 and is retried by the partner.

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


def _is_fatal(err: KafkaError) -> bool:
    return bool(err.fatal()) or err.code() == KafkaError._FATAL


def _reason_for(err: KafkaError) -> str:
    code = err.code()
    if _is_fatal(err):
        return "FATAL"
    if code == KafkaError._MSG_TIMED_OUT:
        return "TIMEOUT"
    if code in (KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN, KafkaError._RESOLVE):
        return "TRANSPORT"
    if code in (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC, KafkaError._UNKNOWN_PARTITION):
        return "UNKNOWN_TOPIC"
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
        self.fatal_error: str | None = None  # set by librdkafka's fatal error; the next send replaces the producer
        self.replacements = 0  # producers replaced after a fatal error or a stall (observability, tests)
        self._last_success = time.monotonic()
        self._replaced_at = float("-inf")

    # --- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> None:
        if self._producer is not None:
            return
        self._closing = False
        self._open()
        event(log, "edge producer started", client_id=self._config["client.id"])

    def _open(self) -> None:
        """A new librdkafka producer with its own poll thread and stop flag (replaceable after a fatal error)."""
        producer: _KafkaProducer | None = None

        def on_error(err: KafkaError) -> None:
            # A replaced producer's late errors must not mark its successor fatal.
            if producer is not None and producer is self._producer:
                self._on_client_error(err)

        config = dict(self._config)
        config["error_cb"] = on_error
        config["logger"] = logging.getLogger("sinergi.librdkafka")  # served by poll(), through our masking
        producer = _KafkaProducer(config)
        stop = threading.Event()
        self._producer, self._stop, self.fatal_error = producer, stop, None
        self._thread = threading.Thread(
            target=self._poll_loop, args=(producer, stop), name="sinergi-edge-poll", daemon=True
        )
        self._thread.start()

    def _replace_after_fatal(self) -> None:
        """Swap in a fresh producer; the old one is drained off the event loop. Synchronous on purpose: no
        await between the check in send() and the swap, so concurrent requests replace it once."""
        old, old_stop, old_thread, reason = self._producer, self._stop, self._thread, self.fatal_error
        self._open()
        self.replacements += 1
        self._replaced_at = time.monotonic()
        log.warning("edge producer replaced after fatal kafka error %s", reason)
        if old is not None:
            threading.Thread(
                target=_discard, args=(old, old_stop, old_thread), name="sinergi-edge-discard", daemon=True
            ).start()

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

    @staticmethod
    def _poll_loop(producer: _KafkaProducer, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                producer.poll(0.1)
            except Exception:  # a callback must never kill the thread serving all callbacks
                log.exception("edge producer poll failed")

    def _on_client_error(self, err: KafkaError) -> None:
        # Connection-level problems (broker down, fatal idempotence errors). Codes only, no payloads;
        # the same code at most once per _ERROR_LOG_INTERVAL_S (librdkafka retries every second or so).
        now = time.monotonic()
        name = err.name()
        # confluent-kafka reports a fatal error to error_cb (when it does) as code _FATAL with fatal() False.
        fatal = _is_fatal(err)
        if fatal:
            self.fatal_error = name  # the idempotent producer is unusable now: the next send replaces it
        if fatal or now - self._error_logged.get(name, -_ERROR_LOG_INTERVAL_S) >= _ERROR_LOG_INTERVAL_S:
            self._error_logged[name] = now
            log.warning("kafka client error %s fatal=%s", name, fatal)

    # --- sending -------------------------------------------------------------------------------------
    async def send(self, topic: str, key: bytes, value: bytes, headers: Headers) -> None:
        """Resolve once the broker acknowledged the record (acks=all); raise BrokerUnavailable otherwise."""
        if self._producer is None or self._closing:
            self._fail(topic, "NOT_RUNNING")
        if self.fatal_error is not None:
            self._replace_after_fatal()
        producer = self._producer
        assert producer is not None
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        started = time.perf_counter()

        def on_delivery(err: KafkaError | None, _msg: Message) -> None:  # runs on the poll thread
            if err is not None and err.code() == KafkaError.UNKNOWN_PRODUCER_ID and producer is self._producer:
                self.fatal_error = err.name()  # a broker that lost our producer id: only a new producer helps
            try:
                loop.call_soon_threadsafe(_complete, fut, topic, err)
            except RuntimeError:  # the loop is gone; nobody is waiting any more
                pass

        kafka_headers: list[tuple[str, str | bytes | None]] = list(headers)
        for attempt in (1, 2):
            try:
                producer.produce(topic, value=value, key=key, headers=kafka_headers, on_delivery=on_delivery)
                break
            except BufferError:
                self._fail(topic, "QUEUE_FULL")
            except KafkaException as exc:
                err = exc.args[0] if exc.args else None
                if attempt == 1 and isinstance(err, KafkaError) and _is_fatal(err):
                    # librdkafka does not always call error_cb for a fatal error; produce() refusing is the
                    # reliable sign. Nothing was queued, so producing once more on a fresh producer is safe.
                    self.fatal_error = err.name()
                    self._replace_after_fatal()
                    producer = self._producer
                    assert producer is not None
                    continue
                self._fail(topic, _reason_for(err) if isinstance(err, KafkaError) else "PRODUCE_FAILED")

        self._pending.add(fut)
        began = time.monotonic()
        try:
            await asyncio.wait_for(fut, timeout=self._wait_s)  # cancels fut on timeout
        except TimeoutError:
            self._note_failure(began)
            self._fail(topic, "TIMEOUT")
        except BrokerUnavailable as exc:
            self._note_failure(began)
            PRODUCE_FAILURES.labels(topic, exc.reason).inc()
            raise
        finally:
            self._pending.discard(fut)
        self._last_success = time.monotonic()
        PRODUCE_LATENCY.labels(topic).observe(time.perf_counter() - started)

    def _note_failure(self, began: float) -> None:
        """After a broker restart librdkafka can loop on UNKNOWN_PRODUCER_ID, bumping an epoch the new broker
        never issued, without ever raising a fatal error. A send that failed with no success since it began
        therefore replaces the producer on the next send, at most once per message timeout."""
        now = time.monotonic()
        if self._last_success < began and now - self._replaced_at >= self._wait_s and self.fatal_error is None:
            self.fatal_error = "STALLED"

    @staticmethod
    def _fail(topic: str, reason: str) -> NoReturn:
        PRODUCE_FAILURES.labels(topic, reason).inc()
        raise BrokerUnavailable(topic, reason)


def _discard(producer: _KafkaProducer, stop: threading.Event, thread: threading.Thread | None) -> None:
    """Retire a producer after a fatal error: fail what it still holds (each waiting request answers 503)."""
    stop.set()
    if thread is not None:
        thread.join(5.0)
    try:
        producer.purge()  # queued and in-flight records get _PURGE_* delivery reports
        producer.flush(1.0)  # serves those reports
    except Exception:  # a retired producer's trouble must not reach anyone
        log.exception("retiring the edge producer failed")


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
