"""core-sim: a tiny stand-in for the BPJS core system's case desk, for the demo and the integration tests.

It consumes kbri.cases.v1 (Avro `sinergi.Case`, decoded generically: only case_event_id, case_id and
office_code are read) and answers each case on core.case-updates.v1 with two `sinergi.CaseUpdate` versions,
v1 RECEIVED and v2 ANSWERED with a canned text, keyed by the case event id. The real core system would
take days between the two; here they follow each other.

Idempotent by case_event_id: at start it reads core.case-updates.v1 back to learn which cases already have
their answer, and within a run it remembers every case it answered, so an office filing the same case again
(same case id, same event id) gets no second answer. Input offsets are committed only after Kafka
acknowledged both versions: killed in between, it answers again with the same versions, which notify_kbri
drops as already forwarded.

A plain aiokafka loop, like the core publisher: this is the core system's side, not one of the hub's stages.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition

from services import metrics
from services.catalogue import CORE_CASE_UPDATES, KBRI_CASES
from services.config import Settings
from services.domain.models import CaseStatus, CaseUpdate
from services.logs import event

log = logging.getLogger(__name__)

GROUP_ID = "sinergi-core-sim"
CANNED_ANSWER = (
    "Terima kasih. BPJS Ketenagakerjaan telah menerima dan menjawab kasus ini; "
    "silakan hubungi kantor cabang untuk tindak lanjut. (demo answer from core-sim)"
)
ANSWERED_VERSION = 2
CASE_UPDATE_SCHEMA = CORE_CASE_UPDATES.value_schema or "sinergi.CaseUpdate"


class NotACase(ValueError):
    """A kbri.cases.v1 record without the identifiers core-sim needs."""


def case_identity(record: Mapping[str, Any]) -> tuple[str, str, str]:
    """(case_event_id, case_id, office_code) of a decoded case, whatever else its schema holds."""
    ids = tuple(record.get(name) for name in ("case_event_id", "case_id", "office_code"))
    if not all(isinstance(v, str) and v for v in ids):
        raise NotACase("case_event_id, case_id and office_code must be non-empty strings")
    return ids[0], ids[1], ids[2]  # type: ignore[return-value]  # all str, checked above


def answers(case_event_id: str, case_id: str, office_code: str, now: datetime) -> tuple[CaseUpdate, CaseUpdate]:
    """The two versions core-sim writes for a case: v1 RECEIVED, then v2 ANSWERED with the canned text."""
    at = now.astimezone(UTC).replace(microsecond=now.microsecond // 1000 * 1000)
    common = {"case_event_id": case_event_id, "case_id": case_id, "office_code": office_code, "updated_at": at}
    return (
        CaseUpdate(version=1, status=CaseStatus.RECEIVED, answer=None, **common),
        CaseUpdate(version=ANSWERED_VERSION, status=CaseStatus.ANSWERED, answer=CANNED_ANSWER, **common),
    )


class CoreSim:
    def __init__(self, settings: Settings, bootstrap: str, codec: Any, group_id: str = GROUP_ID) -> None:
        self._settings = settings
        self._bootstrap = bootstrap
        self._codec = codec
        self._group_id = group_id
        self._answered: set[str] = set()
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        self._stopping.set()

    @property
    def answered(self) -> frozenset[str]:
        return frozenset(self._answered)

    async def run(self) -> None:
        s = self._settings
        # No idempotent producer: the embedded broker does not grant producer ids. Order holds anyway, since
        # each version is sent only after the one before it was acknowledged.
        producer = AIOKafkaProducer(bootstrap_servers=self._bootstrap, acks="all", linger_ms=s.producer_linger_ms)
        consumer = AIOKafkaConsumer(
            KBRI_CASES.name,
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
        await producer.start()
        try:
            await self._learn_answered()
            await consumer.start()
            event(log, "core-sim answering cases", answered_before=len(self._answered))
            while not self._stopping.is_set():
                batches = await consumer.getmany(timeout_ms=200, max_records=500)
                for records in batches.values():
                    for rec in records:
                        await self._answer(producer, rec)
                if batches:
                    await consumer.commit()
        finally:
            with contextlib.suppress(Exception):
                await consumer.stop()
            with contextlib.suppress(Exception):
                await producer.stop()

    async def _answer(self, producer: AIOKafkaProducer, rec: ConsumerRecord[bytes, bytes]) -> None:
        try:
            _, record = await self._codec.decode_async(rec.value or b"")
            case_event_id, case_id, office_code = case_identity(record)
        except Exception as exc:  # not ours to dead-letter: the core system reports and moves on
            metrics.CORE_SIM_CASES.labels("undecodable").inc()
            log.warning("core-sim skipped %s/%s@%s: %s", rec.topic, rec.partition, rec.offset, type(exc).__name__)
            return
        if case_event_id in self._answered:
            metrics.CORE_SIM_CASES.labels("duplicate").inc()
            return
        for version in answers(case_event_id, case_id, office_code, datetime.now(UTC)):
            # One at a time: v1 must be on the topic before v2, and both acknowledged before the commit.
            await producer.send_and_wait(
                CORE_CASE_UPDATES.name,
                value=self._codec.encode(CASE_UPDATE_SCHEMA, version),
                key=case_event_id.encode(),
            )
        self._answered.add(case_event_id)
        metrics.CORE_SIM_CASES.labels("answered").inc()
        event(log, "core-sim answered a case", case_event_id=case_event_id, office=office_code)

    async def _learn_answered(self) -> None:
        """Which cases already have their answer on core.case-updates.v1 (read from the start, no group)."""
        reader = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=self._settings.consumer_fetch_max_wait_ms,
        )
        await reader.start()
        try:
            partitions = reader.partitions_for_topic(CORE_CASE_UPDATES.name) or set()
            tps = [TopicPartition(CORE_CASE_UPDATES.name, p) for p in sorted(partitions)]
            if not tps:
                return
            reader.assign(tps)
            await reader.seek_to_beginning(*tps)
            # A lower bound on the embedded broker (connectors/bank/member_book.py): stop at it, or when a
            # fetch comes back empty. Missing an answer only means answering that case again, harmlessly.
            targets = await reader.end_offsets(tps)
            while not self._stopping.is_set():
                batches = await reader.getmany(timeout_ms=500, max_records=2000)
                for records in batches.values():
                    for rec in records:
                        await self._learn(rec)
                if not batches:
                    return
                positions = [await reader.position(tp) for tp in tps]
                if all(pos >= targets.get(tp, 0) for pos, tp in zip(positions, tps, strict=True)):
                    return
        finally:
            with contextlib.suppress(Exception):
                await reader.stop()

    async def _learn(self, rec: ConsumerRecord[bytes, bytes]) -> None:
        try:
            _, record = await self._codec.decode_async(rec.value or b"")
        except Exception:  # someone else's bad record on the core topic is not core-sim's to judge
            return
        case_event_id, version = record.get("case_event_id"), record.get("version")
        if isinstance(case_event_id, str) and isinstance(version, int) and version >= ANSWERED_VERSION:
            self._answered.add(case_event_id)


def run_core_sim(settings: Settings, bootstrap: str) -> None:
    """`sinergi core-sim`: until SIGINT/SIGTERM."""
    import signal

    from services.codec import build_codec

    sim = CoreSim(settings, bootstrap, build_codec(settings))

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, sim.stop)
        await sim.run()

    asyncio.run(main())
