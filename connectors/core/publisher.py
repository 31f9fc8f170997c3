"""Outbound to the BPJS core system: members.v1 → core.member-records.v1.

A plain aiokafka loop (a connector holds no Faust code): consume a batch, forward each member version
that is newer than the last one forwarded for that participant, wait for Kafka's acknowledgement,
then commit. At-least-once; the core system deduplicates on `record_id` (participant_id:version),
and versions never go backwards on the core topic within a run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord

from services import metrics
from services.catalogue import CORE_MEMBER_RECORDS, MEMBERS, dlq
from services.config import Settings

log = logging.getLogger(__name__)
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
