"""The Faust app factory: one app (one consumer group) per service, so each processor runs and scales alone.

The topic catalogue itself lives in services/catalogue.py so that connectors can read it without Faust.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import faust
from faust.tables import recovery as faust_recovery
from faust.transport.drivers import aiokafka as faust_aiokafka

from services.config import Settings

log = logging.getLogger(__name__)

_FETCH_MAX_WAIT_MS = 20


def _patch_fetch_max_wait(max_wait_ms: int) -> None:
    """faust-streaming hard-codes fetch_max_wait_ms=1500 for its consumer.

    With a trickle of events every fetch then waits up to 1.5 s, which is where Faust's default
    1.2 s median latency comes from (shared/perf-notes.md). aiokafka reads the value when the
    consumer starts, so setting it on the freshly built consumer is enough.
    """
    global _FETCH_MAX_WAIT_MS
    _FETCH_MAX_WAIT_MS = max_wait_ms
    thread_cls: Any = faust_aiokafka.AIOKafkaConsumerThread
    if getattr(thread_cls, "_sinergi_patched", False):
        return
    original = thread_cls._create_worker_consumer

    def _create_worker_consumer(self: Any, transport: Any) -> Any:
        consumer = original(self, transport)
        consumer._fetch_max_wait_ms = _FETCH_MAX_WAIT_MS
        return consumer

    thread_cls._create_worker_consumer = _create_worker_consumer
    thread_cls._sinergi_patched = True


def _patch_recovery_seek_order() -> None:
    """Seek stream partitions to their committed offsets *before* resuming them after table recovery.

    faust-streaming 0.15's Recovery.on_recovery_completed resumes the stream partitions first and seeks
    second, while the fetcher is already running. Records fetched in between come from the wrong position:
    killing a reconciler and restarting it skipped one or two records per partition on the embedded
    broker (tests/integration/test_worker_crash.py). Same sequence as upstream, seek moved up.
    """
    recovery_cls: Any = faust_recovery.Recovery
    if getattr(recovery_cls, "_sinergi_patched", False):
        return

    async def on_recovery_completed(self: Any, generation_id: int = 0) -> None:
        consumer = self.app.consumer
        self.log.info("Restore complete!")
        await self.app.on_rebalance_complete.send()
        self._set_recovery_ended()
        callback_coros = [
            asyncio.ensure_future(
                table.on_recovery_completed(self.actives_for_table[table], self.standbys_for_table[table])
            )
            for table in self.tables.values()
        ]
        if callback_coros:
            await asyncio.wait(callback_coros)
        assignment = consumer.assignment()
        streams = {tp for tp in assignment if not self._is_changelog_tp(tp)}
        if self.app.consumer_generation_id != generation_id:
            # A newer rebalance is under way and will seek again; leave the partitions as upstream does.
            self.log.warning(
                "Recovery rebalancing again (generation %s != %s)", self.app.consumer_generation_id, generation_id
            )
            consumer.resume_partitions(streams)
            return
        if assignment:
            self.log.info("Seek stream partitions to committed offsets.")
            await self._wait(consumer.perform_seek(), timeout=self.app.conf.broker_request_timeout)
        consumer.resume_partitions(streams)
        self.completed.set()
        self.app.flow_control.resume()
        consumer.resume_flow()
        await self.app._fetcher.maybe_start()
        self.tables.on_actives_ready()
        if not self.app.assignor.assigned_standbys():
            self.tables.on_standbys_ready()
        self.app.on_rebalance_end()
        self.log.info("Worker ready")

    recovery_cls.on_recovery_completed = on_recovery_completed
    recovery_cls._sinergi_patched = True


def _patch_fetch_snapshot() -> None:
    """Never let aiokafka hand out records for partitions Faust has paused.

    Faust's fetch loop passes its *live* set of active partitions to the consumer thread, where aiokafka's
    Fetcher.fetched_records reads it later; an empty set there means "every assigned partition". When
    recovery pauses the changelog partitions while a fetch is in flight the set becomes empty, aiokafka
    returns (and advances its position past) records of the still-paused stream partitions, and Faust drops
    them. If that happens after the post-recovery seek, those records are never delivered and the
    gap auto-ack later commits past them (tests/integration/test_worker_crash.py). Pass a snapshot instead
    and skip the fetch when it is empty, as Faust itself intends (consumer._wait_next_records).
    """
    thread_cls: Any = faust_aiokafka.AIOKafkaConsumerThread
    if getattr(thread_cls, "_sinergi_snapshot_patched", False):
        return
    original = thread_cls.getmany

    async def getmany(self: Any, active_partitions: Any, timeout: float) -> Any:  # noqa: ASYNC109 (Faust signature)
        if active_partitions is not None:
            active_partitions = set(active_partitions)
            if not active_partitions:
                await asyncio.sleep(min(timeout, 0.05))
                return {}
        return await original(self, active_partitions, timeout)

    thread_cls.getmany = getmany
    thread_cls._sinergi_snapshot_patched = True


def _patch_recovery_highwaters() -> None:
    """Recover each active changelog partition to its real end, not to the end offset the broker lists.

    Faust ends recovery once every active changelog partition reaches the highwater from ListOffsets. The
    embedded broker (Tansu) lists the end of a multi-record batch as its base offset + 1, so a restarted worker
    stopped before the other records of each partition's last batch and its tables missed the newest writes
    (tests/integration/test_state_rebuild.py: 29 of 853 ledger items of one partition). The highwater a fetch
    response carries is right, and recovery has fetched the batch by the time it reaches the listed end: take
    the larger of the two before deciding what remains.
    """
    recovery_cls: Any = faust_recovery.Recovery
    if getattr(recovery_cls, "_sinergi_highwater_patched", False):
        return
    original = recovery_cls.active_remaining

    def active_remaining(self: Any) -> Any:
        highwaters = self.active_highwaters
        for tp, listed in list(highwaters.items()):
            fetched = None
            # Not assigned (any more) or not fetched yet: the listed value stands.
            with contextlib.suppress(Exception):
                fetched = self.app.consumer.highwater(tp)  # the next offset to write, as of the last fetch
            if listed is not None and fetched is not None and fetched - 1 > listed:
                highwaters[tp] = fetched - 1
        return original(self)

    recovery_cls.active_remaining = active_remaining
    recovery_cls._sinergi_highwater_patched = True


def create_app(service: str, settings: Settings, bootstrap: str) -> faust.App:
    _patch_fetch_max_wait(settings.consumer_fetch_max_wait_ms)
    _patch_recovery_seek_order()
    _patch_fetch_snapshot()
    _patch_recovery_highwaters()
    session = settings.consumer_session_timeout_s
    datadir = settings.data_dir / "faust" / service
    datadir.parent.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        f"sinergi-{service}",
        broker=[f"kafka://{host}" for host in bootstrap.split(",")],
        store="memory://",
        key_serializer="raw",
        value_serializer="raw",
        topic_replication_factor=settings.kafka_replication_factor,
        topic_partitions=settings.kafka_partitions,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=session,
        broker_rebalance_timeout=settings.consumer_rebalance_timeout_s,
        broker_heartbeat_interval=settings.consumer_heartbeat_interval_s,
        broker_request_timeout=max(30.0, session * 2),
        broker_max_poll_interval=max(30.0, session * 2),
        broker_max_poll_records=settings.consumer_max_poll_records,
        broker_commit_interval=settings.commit_interval_s,
        producer_acks=-1,
        producer_linger_ms=settings.producer_linger_ms,
        producer_max_batch_size=settings.producer_max_batch_bytes,
        table_cleanup_interval=3600.0,
        web_enabled=False,
        datadir=str(datadir),
        # Tansu has no transactions: at-least-once, and every output is idempotent downstream.
        processing_guarantee="at_least_once",
    )
    return app


def topic(app: faust.App, name: str) -> faust.TopicT:
    return app.topic(name, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")
