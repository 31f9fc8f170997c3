"""`sinergi webhooks serve` (the office topics delivered as signed webhooks) and `sinergi webhooks replay` (their
dead letters sent again).

Serve: one aiokafka consumer in group `sinergi-webhooks` over every office topic (kbri.updates.<office>.v1,
one partition each, so a partition is an office). Each record is parsed as an OfficeUpdate and offered to the
WebhookDispatcher with webhook-id = update_id: a record read again after a crash goes out again with the same
id, and the office deduplicates it. Offsets are committed by hand, per partition, only up to the longest prefix
of records that are finished (delivered, superseded, or dead-lettered with the DLQ produce acknowledged; see
OffsetTracker). A crash therefore redelivers; it never skips.

Backpressure: an office whose dispatcher lane is full (QUEUE_FULL) has its partition paused, the records
already read are held until the lane drains, and the other offices' partitions go on. An office whose endpoint
cannot be registered yet (its host does not resolve) is paused the same way and registered again with backoff.
A record that is not an OfficeUpdate of the topic's own office is logged by its coordinates, counted and
committed past: it never stops the partition, and it is never sent to an office it does not belong to.

The dispatcher orders deliveries per "member". Its member key here is the update's type and subject, not the
subject alone: subjects of different types are chosen by different parties (customer numbers by the hub,
request and case ids by the office) and may be equal, and a case's version 2 must not make a rejection with
the same id look stale.

Replay: reads kbri.webhooks.dlq.v1 to its end, skips dead letters already replayed (a marker record with the
same key and the webhook-id follows every successful replay) and those whose member has a newer version on
the office topic (the office has, or will get, that one instead), and re-offers the rest with their own
webhook-id.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import signal
import time
from collections import deque
from collections.abc import Awaitable, Callable, Collection, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Generic, Protocol, TypeVar

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError
from pydantic import SecretStr, ValidationError

from connectors.kafka_edge import EdgeSender, Headers
from connectors.kbri import webhook_policy as policy
from connectors.kbri.webhooks import (
    ENDPOINT_GONE,
    H_OFFICE,
    H_WEBHOOK_ID,
    DeadLetter,
    DeadLetterHandler,
    Finished,
    Offer,
    OfferStatus,
    Outcome,
    WebhookDispatcher,
    WebhookUpdate,
)
from services import metrics
from services.catalogue import WEBHOOK_DEAD_LETTERS, office_updates_topic
from services.config import OfficeWebhook, Settings
from services.domain.office_updates import OfficeUpdate
from services.logs import event

log = logging.getLogger(__name__)

STAGE = "webhooks"
DLQ_TOPIC = WEBHOOK_DEAD_LETTERS.name
H_REPLAYED = "webhook-dlq-replayed"  # on a replay marker: when the dead letter was delivered by a replay

# Input records committed past without a delivery (metric label `reason`).
NO_VALUE = "NO_VALUE"
MALFORMED = "MALFORMED"
OFFICE_MISMATCH = "OFFICE_MISMATCH"
NO_SUBSCRIPTION = "NO_SUBSCRIPTION"
STALE = "STALE"

EXIT_CONFIG = 78  # EX_CONFIG: a subscription the policy refuses; restarting will not help

_FINISHED = frozenset({Outcome.DELIVERED, Outcome.SUPERSEDED, Outcome.DEAD_LETTERED})
_TRANSIENT_REFUSALS = frozenset({policy.HOST_UNRESOLVED})
_REGISTER_RETRY_FIRST_S = 1.0
_REGISTER_RETRY_MAX_S = 30.0
_DLQ_RETRY_FIRST_S = 0.2
_DLQ_RETRY_MAX_S = 10.0

P = TypeVar("P", bound=Hashable)


# --- the commit point ------------------------------------------------------------------------------------------
class OffsetTracker(Generic[P]):
    """Per partition: which offset may be committed so that no unfinished record is ever skipped.

    Records are tracked in the order they were read (increasing offsets; gaps are normal: compaction and
    transaction markers leave holes) and finish in any order. The commit point is one past the longest
    finished prefix, so a restart reads again every unfinished record (and finished ones after the first
    unfinished one: redelivered with the same webhook-id, deduplicated by the office). Pure; one event loop.
    """

    def __init__(self) -> None:
        self._open: dict[P, deque[int]] = {}  # tracked, not yet released, in read order
        self._finished: dict[P, set[int]] = {}  # finished but behind an unfinished one
        self._point: dict[P, int] = {}  # one past the finished prefix
        self._committed: dict[P, int] = {}

    def track(self, partition: P, offset: int) -> bool:
        """Start tracking a record just read; False (ignored) for an offset at or below one already tracked."""
        open_ = self._open.setdefault(partition, deque())
        last = open_[-1] if open_ else self._point.get(partition, 0) - 1
        if offset <= last:
            return False
        open_.append(offset)
        self._finished.setdefault(partition, set())
        return True

    def finish(self, partition: P, offset: int) -> None:
        """Mark a tracked record finished; unknown offsets (a forgotten partition) are ignored."""
        open_ = self._open.get(partition)
        if not open_ or offset < open_[0] or offset > open_[-1]:
            return
        finished = self._finished[partition]
        finished.add(offset)
        while open_ and open_[0] in finished:
            done = open_.popleft()
            finished.discard(done)
            self._point[partition] = done + 1

    def committable(self, partition: P) -> int | None:
        """The offset to commit (the next record to read after a restart), or None when nothing advanced."""
        point = self._point.get(partition)
        if point is None or point <= self._committed.get(partition, -1):
            return None
        return point

    def mark_committed(self, partition: P, offset: int) -> None:
        self._committed[partition] = max(offset, self._committed.get(partition, -1))

    def unfinished(self, partition: P) -> int:
        return len(self._open.get(partition, ())) - len(self._finished.get(partition, ()))

    def forget(self, partition: P) -> None:
        """The partition was revoked or assigned afresh: its next records start a new count."""
        for table in (self._open, self._finished, self._point, self._committed):
            table.pop(partition, None)


# --- subscriptions -------------------------------------------------------------------------------------------------
class SubscriptionRefused(Exception):
    """A configured subscription the webhook policy refuses (bad URL, secret, unknown office)."""

    def __init__(self, office: str, reason: str) -> None:
        super().__init__(f"webhook subscription of {office} refused: {reason}")
        self.office = office
        self.reason = reason


async def register(dispatcher: WebhookDispatcher, office: str, subscription: OfficeWebhook) -> bool:
    """Register one configured subscription, both secrets signing during a rotation. False when it should be
    tried again later (the host does not resolve yet); SubscriptionRefused when configuration must change."""
    secrets: list[SecretStr] = list(subscription.secrets)
    try:
        for secret in secrets:  # all of them first: a bad second secret must not leave a half-registered lane
            policy.decode_secret(secret.get_secret_value())
        await dispatcher.register(office, subscription.url, secrets[-1])
        if len(secrets) > 1:
            dispatcher.rotate_secret(office, secrets[0])  # newest first, the older one still signs
    except policy.WebhookRefused as refused:
        if refused.reason in _TRANSIENT_REFUSALS:
            event(log, "webhook subscription not registered yet", office=office, reason=refused.reason)
            return False
        raise SubscriptionRefused(office, refused.reason) from None
    return True


def member_key(update: OfficeUpdate) -> str:
    return f"{update.type.value}:{update.subject}"


def parse_update(value: bytes | None, office: str) -> tuple[OfficeUpdate | None, str]:
    """The OfficeUpdate of a record of `office`'s topic, or None and the reason it is skipped."""
    if value is None:
        return None, NO_VALUE
    try:
        update = OfficeUpdate.model_validate_json(value)
    except ValidationError:
        return None, MALFORMED
    if update.office != office:
        return None, OFFICE_MISMATCH
    return update, ""


# --- serve -----------------------------------------------------------------------------------------------------------
class Consumer(Protocol):
    """What the service needs of aiokafka's AIOKafkaConsumer (a fake implements it in the component tests)."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def subscribe(self, topics: Sequence[str], *, listener: ConsumerRebalanceListener) -> None: ...

    async def getmany(
        self, *partitions: TopicPartition, timeout_ms: int = 0, max_records: int | None = None
    ) -> dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]: ...

    def pause(self, *partitions: TopicPartition) -> None: ...

    def resume(self, *partitions: TopicPartition) -> None: ...

    async def commit(self, offsets: dict[TopicPartition, int]) -> None: ...


class ServiceStopping(Exception):
    """A dead letter could not be produced before the service stopped: its record stays uncommitted."""


@dataclass(eq=False)
class _Partition:
    office: str
    generation: int
    backlog: deque[ConsumerRecord[bytes, bytes]] = field(default_factory=deque)  # read, not yet offered
    paused: bool = False


DispatcherFactory = Callable[[DeadLetterHandler], WebhookDispatcher]


class WebhookService:
    def __init__(
        self,
        settings: Settings,
        consumer: Consumer,
        producer: EdgeSender,
        offices: Collection[str],
        *,
        dispatcher_factory: DispatcherFactory | None = None,
        poll_timeout_ms: int = 200,
        max_records: int = 500,
    ) -> None:
        self._settings = settings
        self._consumer = consumer
        self._producer = producer
        self._offices = frozenset(offices)
        factory = dispatcher_factory or (
            lambda handler: WebhookDispatcher(settings, on_dead_letter=handler, offices=self._offices)
        )
        self.dispatcher = factory(self._dead_letter)
        self._topic_office = {office_updates_topic(code): code for code in self._offices}
        self._poll_timeout_ms = poll_timeout_ms
        self._max_records = max_records
        self.tracker: OffsetTracker[TopicPartition] = OffsetTracker()
        self._partitions: dict[TopicPartition, _Partition] = {}
        self._generation = 0
        self._pending: dict[str, tuple[float, float]] = {}  # office -> (next attempt, delay) to register
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        self._stopping.set()

    def paused(self, office: str) -> bool:
        return any(s.paused for s in self._partitions.values() if s.office == office)

    # --- lifecycle -----------------------------------------------------------------------------------------------
    async def run(self) -> None:
        """Until `stop`. Raises SubscriptionRefused (before consuming anything) for a subscription to fix."""
        try:
            await self._register_all()
            await self._consumer.start()
            try:
                self._consumer.subscribe(sorted(self._topic_office), listener=_Rebalance(self))
                event(log, "webhook service started", offices=len(self._offices), subscribed=len(self._subs()))
                next_commit = time.monotonic() + self._settings.commit_interval_s
                while not self._stopping.is_set():
                    batches = await self._consumer.getmany(
                        timeout_ms=self._poll_timeout_ms, max_records=self._max_records
                    )
                    for tp, records in batches.items():
                        self._take(tp, records)
                    await self._retry_registrations()
                    for tp, state in list(self._partitions.items()):
                        self._drain(tp, state)
                    if time.monotonic() >= next_commit:
                        await self.commit()
                        next_commit = time.monotonic() + self._settings.commit_interval_s
                with contextlib.suppress(Exception):
                    await self.commit()
            finally:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._consumer.stop(), 10.0)
        finally:
            self._stopping.set()
            await self.dispatcher.close()  # unfinished updates are abandoned: uncommitted, they come again
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _subs(self) -> dict[str, OfficeWebhook]:
        return self._settings.office_webhooks

    async def _register_all(self) -> None:
        for office, subscription in sorted(self._subs().items()):
            if not await register(self.dispatcher, office, subscription):
                self._pending[office] = (time.monotonic() + _REGISTER_RETRY_FIRST_S, _REGISTER_RETRY_FIRST_S)

    async def _retry_registrations(self) -> None:
        now = time.monotonic()
        for office, (due, delay) in list(self._pending.items()):
            if now < due:
                continue
            if await register(self.dispatcher, office, self._subs()[office]):
                del self._pending[office]
                event(log, "webhook subscription registered", office=office)
            else:
                delay = min(delay * 2, _REGISTER_RETRY_MAX_S)
                self._pending[office] = (now + delay, delay)

    # --- partitions ---------------------------------------------------------------------------------------------
    def assigned(self, partitions: Iterable[TopicPartition]) -> None:
        for tp in partitions:
            office = self._topic_office.get(tp.topic)
            if office is None:
                continue
            self._generation += 1
            self.tracker.forget(tp)
            self._partitions[tp] = _Partition(office, self._generation)
            self._gauges(tp)
        event(log, "webhook partitions assigned", partitions=len(self._partitions))

    async def revoked(self, partitions: Iterable[TopicPartition]) -> None:
        revoked = [tp for tp in partitions if tp in self._partitions]
        with contextlib.suppress(Exception):  # the new owner re-reads from the last commit: nothing is lost
            await self.commit(revoked)
        for tp in revoked:
            state = self._partitions.pop(tp)
            self.tracker.forget(tp)
            metrics.WEBHOOK_INPUT_PAUSED.labels(state.office).set(0)
            metrics.WEBHOOK_INPUT_UNFINISHED.labels(state.office).set(0)

    def _take(self, tp: TopicPartition, records: list[ConsumerRecord[bytes, bytes]]) -> None:
        state = self._partitions.get(tp)
        if state is None:
            return
        for rec in records:
            if self.tracker.track(tp, rec.offset):
                state.backlog.append(rec)
                metrics.EVENTS_IN.labels(STAGE, rec.topic).inc()
        self._gauges(tp)

    def _drain(self, tp: TopicPartition, state: _Partition) -> None:
        """Offer the partition's records in order; pause it at the first one its lane cannot take yet."""
        if not state.backlog:
            return
        if state.office in self._pending:
            self._pause(tp, state)
            return
        while state.backlog:
            if not self._offer(tp, state, state.backlog[0]):
                self._pause(tp, state)
                return
            state.backlog.popleft()
        if state.paused:
            state.paused = False
            self._consumer.resume(tp)
            metrics.WEBHOOK_INPUT_PAUSED.labels(state.office).set(0)

    def _pause(self, tp: TopicPartition, state: _Partition) -> None:
        if not state.paused:
            state.paused = True
            self._consumer.pause(tp)
            metrics.WEBHOOK_INPUT_PAUSED.labels(state.office).set(1)
            event(log, "webhook input paused", office=state.office, held=len(state.backlog))

    def _offer(self, tp: TopicPartition, state: _Partition, rec: ConsumerRecord[bytes, bytes]) -> bool:
        """Hand one record to the dispatcher (or settle it); False when it must be offered again later."""
        update, reason = parse_update(rec.value, state.office)
        if update is None or rec.value is None:
            self._skip(tp, state, rec, reason, logged=True)
            return True
        try:
            offer = self.dispatcher.offer(
                WebhookUpdate(
                    office=state.office,
                    member_key=member_key(update),
                    version=update.sequence,
                    payload=rec.value,
                    webhook_id=update.update_id,
                )
            )
        except (ValueError, UnicodeDecodeError):  # an id the spec does not allow, a negative sequence
            self._skip(tp, state, rec, MALFORMED, logged=True)
            return True
        status = offer.status
        if status in (OfferStatus.ACCEPTED, OfferStatus.DUPLICATE):
            self._watch(tp, state.generation, rec.offset, offer)
        elif status is OfferStatus.STALE:  # a version at or below one delivered or in flight
            self._skip(tp, state, rec, STALE)
        elif status is OfferStatus.NO_ENDPOINT:
            self._skip(tp, state, rec, NO_SUBSCRIPTION)
        elif status is OfferStatus.ENDPOINT_DISABLED:
            self._spawn(self._dead_letter_refused(tp, state, rec.offset, update, rec.value))
        else:  # QUEUE_FULL, CLOSED
            return False
        return True

    def _skip(
        self,
        tp: TopicPartition,
        state: _Partition,
        rec: ConsumerRecord[bytes, bytes],
        reason: str,
        logged: bool = False,
    ) -> None:
        metrics.WEBHOOK_INPUT_SKIPPED.labels(state.office, reason).inc()
        if logged:
            log.warning(
                "webhook input skipped",
                extra={
                    "fields": {"topic": rec.topic, "partition": rec.partition, "offset": rec.offset, "reason": reason}
                },
            )
        self._finish(tp, state.generation, rec.offset)

    def _watch(self, tp: TopicPartition, generation: int, offset: int, offer: Offer) -> None:
        done = offer.done
        assert done is not None  # ACCEPTED and DUPLICATE carry the queued update's future

        def settled(future: asyncio.Future[Finished]) -> None:
            if future.cancelled():
                return
            # ABANDONED, DEAD_LETTER_FAILED: only when stopping; left uncommitted, read again after a restart.
            if future.result().outcome in _FINISHED:
                self._finish(tp, generation, offset)

        done.add_done_callback(settled)

    def _finish(self, tp: TopicPartition, generation: int, offset: int) -> None:
        state = self._partitions.get(tp)
        if state is None or state.generation != generation:
            return  # revoked since: the partition's next owner reads it again
        self.tracker.finish(tp, offset)
        self._gauges(tp)

    def _gauges(self, tp: TopicPartition) -> None:
        state = self._partitions.get(tp)
        if state is not None:
            metrics.WEBHOOK_INPUT_UNFINISHED.labels(state.office).set(self.tracker.unfinished(tp))

    async def commit(self, partitions: Iterable[TopicPartition] | None = None) -> dict[TopicPartition, int]:
        """Commit every partition's finished prefix; returns what was committed."""
        offsets: dict[TopicPartition, int] = {}
        for tp in self._partitions if partitions is None else partitions:
            point = self.tracker.committable(tp)
            if point is not None:
                offsets[tp] = point
        if not offsets:
            return {}
        try:
            await self._consumer.commit(offsets)
        except KafkaError as exc:  # a rebalance under way: the next commit (or the next owner) catches up
            log.warning("webhook offsets not committed: %s", type(exc).__name__)
            return {}
        for tp, point in offsets.items():
            self.tracker.mark_committed(tp, point)
        return offsets

    # --- dead letters --------------------------------------------------------------------------------------------
    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _dead_letter(self, record: DeadLetter) -> None:
        """The dispatcher's on_dead_letter: returns once Kafka acknowledged the record, however long that takes
        (the input offset waits for it), or raises ServiceStopping."""
        delay = _DLQ_RETRY_FIRST_S
        while True:
            try:
                await self._producer.send(DLQ_TOPIC, record.kafka_key(), record.payload, record.kafka_headers())
                return
            except Exception as exc:
                if self._stopping.is_set():
                    raise ServiceStopping(record.webhook_id) from exc
                log.warning(
                    "webhook dead letter not acknowledged yet",
                    extra={
                        "fields": {
                            "office": record.office,
                            "webhook_id": record.webhook_id,
                            "error": type(exc).__name__,
                        }
                    },
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)
            delay = min(delay * 2, _DLQ_RETRY_MAX_S)

    async def _dead_letter_refused(
        self, tp: TopicPartition, state: _Partition, offset: int, update: OfficeUpdate, payload: bytes
    ) -> None:
        """An update for an endpoint that answered 410 Gone: straight to the DLQ, for a replay once the office
        has registered again."""
        record = DeadLetter(
            office=state.office,
            webhook_id=update.update_id,
            member_key_hash=policy.member_key_hash(member_key(update)),
            version=update.sequence,
            attempts=0,
            last_status=None,
            last_reason="",
            cause=ENDPOINT_GONE,
            failed_at=round(time.time(), 3),
            payload=payload,
        )
        metrics.WEBHOOK_DEAD_LETTERS.labels(state.office, ENDPOINT_GONE).inc()
        try:
            await self._dead_letter(record)
        except ServiceStopping:
            return
        self._finish(tp, state.generation, offset)


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, service: WebhookService) -> None:
        self._service = service

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        await self._service.revoked(revoked)

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        self._service.assigned(assigned)


def kafka_consumer(settings: Settings, bootstrap: str) -> AIOKafkaConsumer:
    s = settings
    return AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        client_id="sinergi-webhooks",
        group_id=s.webhooks_group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=int(s.consumer_session_timeout_s * 1000),
        rebalance_timeout_ms=int(s.consumer_rebalance_timeout_s * 1000),
        heartbeat_interval_ms=int(s.consumer_heartbeat_interval_s * 1000),
        max_poll_interval_ms=int(max(30.0, s.consumer_session_timeout_s * 2) * 1000),
        fetch_max_wait_ms=s.consumer_fetch_max_wait_ms,
    )


def serve(settings: Settings, bootstrap: str, metrics_port: int | None) -> int:
    """The `sinergi webhooks serve` process; returns its exit status."""
    from prometheus_client import start_http_server

    from connectors.kafka_edge import EdgeProducer
    from services.reference import load_offices

    if metrics_port is not None:
        start_http_server(metrics_port, addr=settings.http_host)
    offices = load_offices(settings.offices_file)

    async def main() -> int:
        producer = EdgeProducer(settings, bootstrap, client_id="sinergi-webhooks")
        producer.start()
        service = WebhookService(settings, kafka_consumer(settings, bootstrap), producer, offices)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, service.stop)
        try:
            await service.run()
        except SubscriptionRefused as refused:
            log.error(
                "webhook subscription refused", extra={"fields": {"office": refused.office, "reason": refused.reason}}
            )
            return EXIT_CONFIG
        finally:
            await producer.close()
        return 0

    return asyncio.run(main())


# --- replay ----------------------------------------------------------------------------------------------------------
class KafkaRecord(Protocol):
    @property
    def value(self) -> bytes | None: ...

    @property
    def headers(self) -> Sequence[tuple[str, bytes]]: ...


def _header(record: KafkaRecord, name: str) -> str | None:
    for key, raw in record.headers or ():
        if key == name:
            return raw.decode("utf-8", errors="replace")
    return None


def latest_sequences(records: Iterable[KafkaRecord], office: str) -> dict[str, int]:
    """member_key_hash -> the highest sequence on an office topic (what the dispatcher's dead letters name)."""
    latest: dict[str, int] = {}
    for record in records:
        update, _ = parse_update(record.value, office)
        if update is None:
            continue
        member = policy.member_key_hash(member_key(update))
        latest[member] = max(update.sequence, latest.get(member, -1))
    return latest


@dataclass
class ReplayPlan:
    to_send: list[DeadLetter]
    already_replayed: int = 0
    superseded: int = 0
    unreadable: int = 0
    not_selected: int = 0


def plan_replay(
    records: Iterable[KafkaRecord],
    latest: Mapping[str, Mapping[str, int]],
    *,
    office: str | None = None,
    since: float | None = None,
) -> ReplayPlan:
    """Which dead letters to send again: once per webhook-id, never one a replay already delivered, never one
    whose member has a newer version on its office topic (`latest`: office -> member hash -> sequence)."""
    records = list(records)
    replayed = {
        webhook_id
        for record in records
        if _header(record, H_REPLAYED) is not None and (webhook_id := _header(record, H_WEBHOOK_ID)) is not None
    }
    plan = ReplayPlan(to_send=[])
    chosen: set[str] = set()
    for record in records:
        if _header(record, H_REPLAYED) is not None:
            continue
        try:
            letter = DeadLetter.from_kafka(record.value or b"", record.headers or [])
        except ValueError:
            plan.unreadable += 1
            continue
        if (office is not None and letter.office != office) or (since is not None and letter.failed_at < since):
            plan.not_selected += 1
        elif letter.webhook_id in replayed or letter.webhook_id in chosen:
            plan.already_replayed += 1
        elif latest.get(letter.office, {}).get(letter.member_key_hash, -1) > letter.version:
            plan.superseded += 1
        else:
            chosen.add(letter.webhook_id)
            plan.to_send.append(letter)
    plan.to_send.sort(key=lambda d: (d.office, d.member_key_hash, d.version))
    return plan


@dataclass
class ReplaySummary:
    delivered: int = 0
    failed: int = 0
    superseded: int = 0
    already_replayed: int = 0
    unreadable: int = 0
    not_selected: int = 0
    failures: dict[str, int] = field(default_factory=dict)  # reason code -> count

    def fail(self, reason: str) -> None:
        self.failed += 1
        self.failures[reason] = self.failures.get(reason, 0) + 1

    def line(self) -> str:
        reasons = ", ".join(f"{r} {n}" for r, n in sorted(self.failures.items()))
        return (
            f"webhook replay: delivered {self.delivered}, failed {self.failed}"
            + (f" ({reasons})" if reasons else "")
            + f", superseded {self.superseded}, already replayed {self.already_replayed}, "
            f"unreadable {self.unreadable}, not selected {self.not_selected}"
        )


def replay_marker(letter: DeadLetter, now: float) -> tuple[bytes, bytes, Headers]:
    """Key, value and headers of the record saying this dead letter was delivered by a replay."""
    headers: Headers = [
        (H_OFFICE, letter.office.encode()),
        (H_WEBHOOK_ID, letter.webhook_id.encode()),
        (H_REPLAYED, f"{now:.3f}".encode()),
    ]
    return letter.kafka_key(), b"", headers


async def replay_dead_letters(
    plan: ReplayPlan,
    dispatcher: WebhookDispatcher,
    producer: EdgeSender,
    *,
    unavailable: Mapping[str, str] | None = None,
    clock: Callable[[], float] = time.time,
) -> ReplaySummary:
    """Send the plan's dead letters again (offices in `unavailable` -> failed with that reason) and mark each
    delivered one in the DLQ topic, so a second replay leaves it alone."""
    summary = ReplaySummary(
        superseded=plan.superseded,
        already_replayed=plan.already_replayed,
        unreadable=plan.unreadable,
        not_selected=plan.not_selected,
    )
    unavailable = unavailable or {}
    queue: deque[DeadLetter] = deque()
    for letter in plan.to_send:
        if letter.office in unavailable:
            summary.fail(unavailable[letter.office])
        else:
            queue.append(letter)
    outstanding: dict[asyncio.Future[Finished], DeadLetter] = {}
    while queue or outstanding:
        while queue:
            (offer,) = dispatcher.replay([queue[0]])
            if offer.status is OfferStatus.QUEUE_FULL and outstanding:
                break  # wait for room
            letter = queue.popleft()
            if offer.status in (OfferStatus.ACCEPTED, OfferStatus.DUPLICATE) and offer.done is not None:
                if offer.done in outstanding:  # the same member version under another id: sent once
                    summary.already_replayed += 1
                else:
                    outstanding[offer.done] = letter
            elif offer.status is OfferStatus.STALE:
                summary.superseded += 1
            else:
                summary.fail(offer.status.value)
        if not outstanding:
            continue
        done, _ = await asyncio.wait(list(outstanding), return_when=asyncio.FIRST_COMPLETED)
        for future in done:
            letter = outstanding.pop(future)
            finished = future.result()
            if finished.outcome is Outcome.SUPERSEDED:
                summary.superseded += 1
            elif finished.outcome is not Outcome.DELIVERED:
                summary.fail(finished.last_reason or finished.outcome.value.upper())
            else:
                key, value, headers = replay_marker(letter, clock())
                try:
                    await producer.send(DLQ_TOPIC, key, value, headers)
                except Exception as exc:  # delivered, not marked: a later replay sends it again (same id)
                    summary.fail("MARKER_" + getattr(exc, "reason", type(exc).__name__))
                else:
                    summary.delivered += 1
    return summary


_DURATION = re.compile(r"(\d{1,9})([smhd])")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(text: str, now: float) -> float:
    """Unix seconds of `--since`: a duration back from now ("90m", "6h", "2d") or an ISO date/time (UTC unless
    it carries an offset). Raises ValueError."""
    duration = _DURATION.fullmatch(text.strip())
    if duration is not None:
        return now - int(duration.group(1)) * _UNIT_S[duration.group(2)]
    when = datetime.fromisoformat(text.strip())
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


async def read_topic(
    settings: Settings, bootstrap: str, topic: str, *, idle_ms: int = 500, within_s: float = 120.0
) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record of `topic`, read without a group until the end offsets are reached and a poll comes back
    empty (Tansu's end offsets are only a lower bound, BENCHMARKS.md)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        client_id="sinergi-webhooks-replay",
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=settings.consumer_fetch_max_wait_ms,
    )
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            return []
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        out: list[ConsumerRecord[bytes, bytes]] = []
        deadline = time.monotonic() + within_s
        while True:
            batches = await consumer.getmany(timeout_ms=idle_ms, max_records=5000)
            for records in batches.values():
                out.extend(records)
            if not batches and all([await consumer.position(tp) >= ends[tp] for tp in tps]):
                return out
            if time.monotonic() > deadline:
                raise TimeoutError(f"{topic} was not read to its end within {within_s:.0f}s")
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(consumer.stop(), 10.0)


async def _ignore_dead_letter(_record: DeadLetter) -> None:
    """A replay that fails again stays where it is: the DLQ already holds it."""


async def run_replay(
    settings: Settings,
    bootstrap: str,
    *,
    office: str | None,
    since: float | None,
    attempts: int,
    producer: EdgeSender | None = None,
) -> ReplaySummary:
    from connectors.kafka_edge import EdgeProducer
    from services.reference import load_offices

    known = load_offices(settings.offices_file)
    records = await read_topic(settings, bootstrap, DLQ_TOPIC)
    candidates = plan_replay(records, {}, office=office, since=since)
    latest = {
        code: latest_sequences(await read_topic(settings, bootstrap, office_updates_topic(code)), code)
        for code in sorted({d.office for d in candidates.to_send} & set(known))
    }
    plan = plan_replay(records, latest, office=office, since=since)
    event(log, "webhook replay planned", to_send=len(plan.to_send), already_replayed=plan.already_replayed)
    own_producer = producer is None
    sender: EdgeSender = producer or EdgeProducer(settings, bootstrap, client_id="sinergi-webhooks-replay")
    sender.start()
    replay_settings = settings.model_copy(update={"webhooks_max_attempts": attempts})
    try:
        async with WebhookDispatcher(replay_settings, on_dead_letter=_ignore_dead_letter, offices=known) as dispatcher:
            unavailable: dict[str, str] = {}
            for code in sorted({d.office for d in plan.to_send}):
                subscription = settings.office_webhooks.get(code)
                if subscription is None:
                    unavailable[code] = NO_SUBSCRIPTION
                    continue
                try:
                    if not await register(dispatcher, code, subscription):
                        unavailable[code] = policy.HOST_UNRESOLVED
                except SubscriptionRefused as refused:
                    unavailable[code] = refused.reason
            return await replay_dead_letters(plan, dispatcher, sender, unavailable=unavailable)
    finally:
        if own_producer:
            await sender.close()
