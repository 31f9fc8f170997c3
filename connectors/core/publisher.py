"""Outbound to the BPJS core system: members.v1 → core.member-records.v1.

A plain aiokafka loop (a connector holds no Faust code): consume a batch, forward each member version
that is newer than the last one forwarded for that participant, wait for Kafka's acknowledgement,
then commit.

Each version reaches the core topic once, across restarts too: before it consumes, the publisher reads
its own output (core.member-records.v1, every partition to its end) and starts from the highest version
already forwarded per participant. A SIGKILL between a forward and its commit, or a consumer group reset
to the earliest offset, therefore redelivers members.v1 records without forwarding any of them again.
The core topic is the publisher's memory, so there is nothing else to lose; the cost is one read of it at
start (about 250,000 records/s to decode). The core system may still deduplicate on `record_id`
(participant_id:version), e.g. for two publishers racing through a rebalance.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition

from services import metrics
from services.catalogue import CORE_MEMBER_RECORDS, MEMBERS, dlq
from services.config import Settings

log = logging.getLogger(__name__)
RECOVERY_SETTLE_MS = 500
RECOVERY_STALL_S = 120.0
STAGE = "core_publisher"
DLQ = dlq(STAGE).name


def _dead_letter_headers(rec: ConsumerRecord[bytes, bytes], message: str) -> list[tuple[str, bytes]]:
    return [
        *[(k, v) for k, v in (rec.headers or []) if not k.startswith("dlq-")],
        ("dlq-source-topic", rec.topic.encode()),
        ("dlq-source-partition", str(rec.partition).encode()),
        ("dlq-source-offset", str(rec.offset).encode()),
        ("dlq-stage", STAGE.encode()),
        ("dlq-reason", b"UNDECODABLE"),
        ("dlq-message", message.encode()),
        ("dlq-time", datetime.now(UTC).isoformat().encode()),
    ]


class CorePublisher:
    def __init__(
        self,
        settings: Settings,
        bootstrap: str,
        version_of: Callable[[bytes], int],
        group_id: str = "sinergi-core-publisher",
    ) -> None:
        self._settings = settings
        self._bootstrap = bootstrap
        self._version_of = version_of
        self._group_id = group_id
        self._last_version: dict[bytes, int] = {}
        self._stopping = asyncio.Event()
        self.consumer: AIOKafkaConsumer | None = None  # while running: the worker's health check reads its offsets

    def stop(self) -> None:
        self._stopping.set()

    async def recover(self) -> int:
        """Seed the last forwarded version per participant from the core topic; returns records read."""
        reader = AIOKafkaConsumer(bootstrap_servers=self._bootstrap, enable_auto_commit=False)
        await reader.start()
        read = 0
        try:
            partitions = reader.partitions_for_topic(CORE_MEMBER_RECORDS.name) or set()
            if not partitions:
                await reader.force_metadata_update()  # a fresh client may not have the topic's metadata yet
                partitions = reader.partitions_for_topic(CORE_MEMBER_RECORDS.name) or set()
            tps = [TopicPartition(CORE_MEMBER_RECORDS.name, p) for p in sorted(partitions)]
            if not tps:
                return 0
            reader.assign(tps)
            await reader.seek_to_beginning(*tps)
            # The listed ends are a lower bound on the embedded broker (services/topic_snapshot.py): read
            # until they are reached and then until a fetch comes back empty.
            ends = await reader.end_offsets(tps)
            stalled_at = time.monotonic() + RECOVERY_STALL_S
            while True:
                if time.monotonic() > stalled_at:  # the process manager restarts us; better than waiting blind
                    raise TimeoutError(f"{CORE_MEMBER_RECORDS.name} not read to its end in {RECOVERY_STALL_S:.0f}s")
                batches = await reader.getmany(*tps, timeout_ms=RECOVERY_SETTLE_MS, max_records=5000)
                for tp, records in batches.items():
                    for rec in records:
                        read += 1
                        key = rec.key or b""
                        try:
                            version = self._version_of(rec.value or b"")
                        except Exception:  # cannot be: only decoded values are forwarded; never fatal here
                            log.warning("core publisher: undecodable record on its own output at %s@%s", tp, rec.offset)
                            continue
                        if version > self._last_version.get(key, 0):
                            self._last_version[key] = version
                if batches:
                    stalled_at = time.monotonic() + RECOVERY_STALL_S
                elif all([await reader.position(tp) >= ends.get(tp, 0) for tp in tps]):
                    break
        finally:
            await reader.stop()
        log.info("core publisher recovered %d forwarded records, %d participants", read, len(self._last_version))
        return read

    async def run(self) -> None:
        s = self._settings
        consumer = AIOKafkaConsumer(
            MEMBERS.name,
            bootstrap_servers=self._bootstrap,
            group_id=self._group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=int(s.consumer_session_timeout_s * 1000),
            rebalance_timeout_ms=int(s.consumer_rebalance_timeout_s * 1000),
            heartbeat_interval_ms=int(s.consumer_heartbeat_interval_s * 1000),
            max_poll_interval_ms=int(max(30.0, s.consumer_session_timeout_s * 2) * 1000),
            fetch_max_wait_ms=s.consumer_fetch_max_wait_ms,
        )
        await self.recover()  # before consuming: what was forwarded before a crash is not forwarded again
        producer = AIOKafkaProducer(bootstrap_servers=self._bootstrap, acks="all", linger_ms=s.producer_linger_ms)
        await producer.start()
        await consumer.start()
        self.consumer = consumer
        try:
            while not self._stopping.is_set():
                batches = await consumer.getmany(timeout_ms=200, max_records=2000)
                pending = []
                forwarded = 0
                for records in batches.values():
                    for rec in records:
                        metrics.EVENTS_IN.labels(STAGE, MEMBERS.name).inc()
                        key = rec.key or b""
                        value = rec.value or b""
                        try:
                            version = self._version_of(value)
                        except Exception as exc:  # undecodable: park it with its coordinates, keep going
                            pending.append(
                                await producer.send(
                                    DLQ, value=value, key=key, headers=_dead_letter_headers(rec, type(exc).__name__)
                                )
                            )
                            metrics.DEAD_LETTERS.labels(STAGE, "UNDECODABLE").inc()
                            log.warning(
                                "core publisher dead-lettered %s/%s@%s: %s",
                                rec.topic,
                                rec.partition,
                                rec.offset,
                                type(exc).__name__,
                            )
                            continue
                        if version <= self._last_version.get(key, 0):
                            continue  # already forwarded: a redelivery after a restart upstream
                        self._last_version[key] = version
                        forwarded += 1
                        headers = list(rec.headers or [])
                        pending.append(
                            await producer.send(CORE_MEMBER_RECORDS.name, value=value, key=key, headers=headers)
                        )
                if pending:
                    await asyncio.gather(*pending)
                    metrics.EVENTS_OUT.labels(STAGE, CORE_MEMBER_RECORDS.name).inc(forwarded)
                if batches:
                    await consumer.commit()
        finally:
            self.consumer = None
            with contextlib.suppress(Exception):
                await consumer.stop()
            with contextlib.suppress(Exception):
                await producer.stop()
