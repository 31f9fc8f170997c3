"""`sinergi bench`: the hub's end-to-end throughput and latency against a raw aiokafka baseline.

One run, one broker (the embedded Tansu on 127.0.0.1 unless SINERGI_KAFKA_BOOTSTRAP is set):

a. baseline: a raw aiokafka loop, consume → JSON decode → transform → JSON encode → produce (acks=all),
   over N pre-loaded ~400-byte SNAP payment bodies on a scratch topic;
b. hub backlog: N/2 enrollments then N/2 payments for them, pre-loaded on the raw topics exactly as the
   partner APIs write them (same bytes, same intake headers), then the hub's processes are started
   (registry + the four workers, through services.supervisor) and the bench waits until every member is
   ACTIVE on core.member-records.v1;
c. latency: the real KBRI and bank APIs are started too, and requests are sent at a steady rate (open
   loop); each request's send time is matched with the arrival of the member version it caused on the
   core topic (MemberRecord.caused_by_event_id), giving p50/p99 from HTTP send to core topic.

Everything the bench starts is stopped on exit, Ctrl-C or SIGTERM included. Figures are printed, never
asserted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import random
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from types import FrameType
from typing import Any

import httpx
import orjson

from connectors.bank.snap_signing import sign_transactional_hmac
from connectors.embedded import EmbeddedBroker, free_port, free_port_block
from services.bank_client import PAYMENT_PATH, bank_credentials
from services.config import Settings
from services.domain.dates import wib_date
from services.domain.identity import event_uuid
from services.domain.payment import to_idr
from services.simulation.backlog import CLEAN, Backlog, RawRecord, build_backlog
from services.simulation.generators import (
    COUNTRY_UTC_OFFSET_H,
    kbri_headers,
    office_request_id,
    payment_body,
    plan_member,
    snap_headers,
)
from services.simulator import world_from_settings
from services.supervisor import METRICS_PORTS, WORKERS, Supervisor, enabled_workers, plan

LOOPBACK = "127.0.0.1"
STEADY_RATE_MAX = 200.0  # requests per second, both APIs together
STEADY_RATE_MIN = 20.0
STEADY_RATE_FALLBACK = 50.0  # when (b) produced no throughput figure
STEADY_LOAD = 0.5  # (c) runs at this share of the backlog throughput measured in (b), within the bounds
STEADY_SECONDS = 15.0
PAY_AFTER_S = 1.0  # a member's payment follows its enrollment by this much in phase c
SEED = 20261125

# --- figures --------------------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty sequence."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 100))))
    return ordered[rank - 1]


@dataclass
class Phase:
    name: str
    events: int
    seconds: float
    note: str = ""

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else float("nan")


@dataclass
class Report:
    events: int
    bootstrap: str
    embedded: bool
    log_dir: Path
    phases: list[Phase] = field(default_factory=list)
    stages: list[StageFigures] = field(default_factory=list)
    steady_cpu_ms: dict[str, float] = field(default_factory=dict)  # process group -> CPU ms per request
    latency_ms: list[float] = field(default_factory=list)
    http_ms: list[float] = field(default_factory=list)
    steady_rate: float = 0.0
    steady_sent: int = 0
    steady_refused: int = 0
    dead_letters: int = 0
    exceptions: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)

    def table(self) -> str:
        cpus = os.cpu_count() or 0
        broker = f"embedded Tansu {self.bootstrap}" if self.embedded else f"Kafka {self.bootstrap}"
        lines = [
            "",
            f"sinergi bench: {self.events:,} events | {cpus} CPUs | Python {platform.python_version()} | "
            f"broker: {broker}",
            "",
            f"  {'measurement':<58}{'events':>9}{'seconds':>10}{'events/s':>11}{'vs (a)':>9}",
        ]
        base = self.phases[0].rate if self.phases else float("nan")
        for phase in self.phases:
            ratio = phase.rate / base if base == base and base > 0 else float("nan")
            lines.append(f"  {phase.name:<58}{phase.events:>9,}{phase.seconds:>10.2f}{phase.rate:>11,.0f}{ratio:>9.3f}")
            if phase.note:
                lines.append(f"      {phase.note}")
        if self.stages:
            lines.append("      per stage, between the first and last 0.5 s /metrics poll that saw its input grow:")
            for f in self.stages:
                rate = f"{f.events / f.seconds:,.0f}" if f.seconds > 0 else "-"
                cpu = f"{f.cpu_ms_per_event:.2f} ms CPU/event" if f.cpu_ms_per_event is not None else ""
                lines.append(f"        {f.stage:<24}{f.events:>8,} in {f.seconds:6.2f} s = {rate:>7} events/s   {cpu}")
        if self.steady_sent:
            lat, http = self.latency_ms, self.http_ms
            lines += [
                "",
                f"  (c) steady {self.steady_rate:.0f} requests/s for {STEADY_SECONDS:.0f} s through the KBRI and bank "
                f"APIs: {self.steady_sent:,} sent, {self.steady_refused} not accepted, "
                f"{len(lat):,} matched on the core topic",
                f"      HTTP send -> core topic arrival   p50 {percentile(lat, 50):7.1f} ms   "
                f"p90 {percentile(lat, 90):7.1f} ms   p99 {percentile(lat, 99):7.1f} ms   "
                f"max {max(lat) if lat else float('nan'):7.1f} ms",
                f"      HTTP response (202/200)           p50 {percentile(http, 50):7.1f} ms   "
                f"p90 {percentile(http, 90):7.1f} ms   p99 {percentile(http, 99):7.1f} ms",
            ]
            if self.steady_cpu_ms:
                parts = ", ".join(f"{k} {v:.2f}" for k, v in self.steady_cpu_ms.items())
                lines.append(f"      CPU ms per request sent (process groups): {parts}")
        lines += [
            "",
            f"  dead letters: {self.dead_letters}; reconciliation exceptions: {sum(self.exceptions.values())} "
            f"[{', '.join(f'{k} {v}' for k, v in sorted(self.exceptions.items())) or '-'}]",
            f"  logs: {self.log_dir}",
        ]
        lines += [f"  PROBLEM: {p}" for p in self.problems]
        return "\n".join(lines)


# --- Kafka helpers ----------------------------------------------------------------------------------------


def _create_scratch_topics(bootstrap: str, names: Sequence[str], partitions: int) -> None:
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="sinergi-bench")
    try:
        admin.create_topics([NewTopic(n, num_partitions=partitions, replication_factor=1) for n in names])
    finally:
        admin.close()


def _delete_scratch_topics(bootstrap: str, names: Sequence[str]) -> None:
    from kafka import KafkaAdminClient

    with contextlib.suppress(Exception):
        admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="sinergi-bench")
        try:
            admin.delete_topics(list(names))
        finally:
            admin.close()


def _producer(bootstrap: str) -> Any:
    from aiokafka import AIOKafkaProducer

    return AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=20, max_batch_size=256 * 1024, client_id="sinergi-bench"
    )


async def _preload(bootstrap: str, records: Sequence[RawRecord]) -> float:
    """Produce (acks=all) and wait for every acknowledgement; seconds taken."""
    producer = _producer(bootstrap)
    await producer.start()
    try:
        started = time.monotonic()
        futures = [await producer.send(r.topic, r.value, key=r.key, headers=r.headers or None) for r in records]
        await asyncio.gather(*futures)
        return time.monotonic() - started
    finally:
        await producer.stop()


async def _end_offsets(bootstrap: str, topics: Sequence[str]) -> dict[str, dict[int, int]]:
    """High-water mark of every partition, per topic."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, client_id="sinergi-bench-offsets")
    await consumer.start()
    try:
        out: dict[str, dict[int, int]] = {}
        for topic in topics:
            parts = consumer.partitions_for_topic(topic)
            if parts is None:
                await consumer._client.force_metadata_update()
                parts = consumer.partitions_for_topic(topic) or set()
            tps = [TopicPartition(topic, p) for p in parts]
            ends = await consumer.end_offsets(tps) if tps else {}
            out[topic] = {tp.partition: offset for tp, offset in ends.items()}
        return out
    finally:
        await consumer.stop()


async def _read_since(
    bootstrap: str, start: dict[str, dict[int, int]], decode: Callable[[str, bytes], Any]
) -> Counter[str]:
    """Read every record written after ``start`` (per topic and partition) until the topics are idle,
    counting ``decode(topic, value)`` results. Reads to idleness rather than to the reported end
    offsets: the embedded Tansu under-reports high-water marks (see BENCHMARKS.md)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    counts: Counter[str] = Counter()
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, client_id="sinergi-bench")
    await consumer.start()
    try:
        tps = {TopicPartition(t, p): o for t, parts in start.items() for p, o in parts.items()}
        if not tps:
            return counts
        consumer.assign(list(tps))
        for tp, offset in tps.items():
            consumer.seek(tp, offset)
        deadline, idle_since = time.monotonic() + 60.0, time.monotonic()
        while time.monotonic() < deadline and time.monotonic() - idle_since < 2.0:
            batches = await consumer.getmany(timeout_ms=300, max_records=5000)
            if batches:
                idle_since = time.monotonic()
            for tp, records in batches.items():
                for rec in records:
                    counts[await decode(tp.topic, rec.value)] += 1
        return counts
    finally:
        await consumer.stop()


# --- (a) the raw aiokafka baseline --------------------------------------------------------------------------


def _transform(doc: dict[str, Any]) -> dict[str, Any]:
    """About what a normalizer does with a payment: amount to rupiah, a few fields renamed."""
    paid = doc["paidAmount"]
    rate = (doc.get("additionalInfo") or {}).get("fxRate")
    amount = Decimal(paid["value"])
    return {
        "participant_id": doc["customerNo"],
        "virtual_account_no": doc["virtualAccountNo"],
        "payment_request_id": doc["paymentRequestId"],
        "amount_idr": to_idr(amount, Decimal(rate)) if rate else int(amount),
        "original_amount": paid["value"],
        "original_currency": paid["currency"],
        "trx_time": doc["trxDateTime"],
    }


async def baseline(
    settings: Settings, bootstrap: str, payloads: Sequence[bytes], deadline_s: float
) -> tuple[Phase, Phase]:
    """(pre-load phase, consume→transform→produce phase) on scratch topics."""
    from aiokafka import AIOKafkaConsumer

    run = uuid.uuid4().hex[:8]
    topic_in, topic_out = f"bench.baseline.in.{run}", f"bench.baseline.out.{run}"
    await asyncio.to_thread(_create_scratch_topics, bootstrap, [topic_in, topic_out], settings.kafka_partitions)
    try:
        records = [RawRecord(topic_in, str(i).encode(), p, []) for i, p in enumerate(payloads)]
        loaded = await _preload(bootstrap, records)
        producer = _producer(bootstrap)
        producer._linger_ms = settings.producer_linger_ms
        consumer = AIOKafkaConsumer(
            topic_in,
            bootstrap_servers=bootstrap,
            group_id=f"bench-baseline-{run}",
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            fetch_max_wait_ms=settings.consumer_fetch_max_wait_ms,
            session_timeout_ms=int(settings.consumer_session_timeout_s * 1000),
            rebalance_timeout_ms=int(settings.consumer_rebalance_timeout_s * 1000),
            heartbeat_interval_ms=int(settings.consumer_heartbeat_interval_s * 1000),
            max_partition_fetch_bytes=4 * 1024 * 1024,
        )
        await producer.start()
        await consumer.start()
        try:
            done = 0
            first: float | None = None
            stop_at = time.monotonic() + deadline_s
            while done < len(payloads) and time.monotonic() < stop_at:
                batches = await consumer.getmany(timeout_ms=500, max_records=5000)
                if not batches:
                    continue
                if first is None:
                    first = time.monotonic()
                futures = []
                for records_in in batches.values():
                    for rec in records_in:
                        out = orjson.dumps(_transform(orjson.loads(rec.value)))
                        futures.append(await producer.send(topic_out, out, key=rec.key))
                await asyncio.gather(*futures)
                await consumer.commit()
                done += len(futures)
            elapsed = time.monotonic() - (first or time.monotonic())
        finally:
            await consumer.stop()
            await producer.stop()
    finally:
        await asyncio.to_thread(_delete_scratch_topics, bootstrap, [topic_in, topic_out])
    size = sum(len(p) for p in payloads) / max(1, len(payloads))
    return (
        Phase("    pre-load: aiokafka produce, acks=all, linger 20 ms", len(payloads), loaded, note=""),
        Phase(
            "(a) raw aiokafka consume→json→transform→json→produce",
            done,
            elapsed,
            note=f"{size:.0f}-byte SNAP payment JSON, acks=all, commit per batch; first record → last ack",
        ),
    )


# --- the core topic watcher -----------------------------------------------------------------------------------


class CoreWatcher:
    """Reads core.member-records.v1 from the current end, decoding each MemberRecord."""

    def __init__(self, bootstrap: str, settings: Settings) -> None:
        self.bootstrap = bootstrap
        self.settings = settings
        self.active: dict[str, float] = {}  # participant id -> arrival (monotonic) of its first ACTIVE
        self.first_arrival: float | None = None
        self.by_cause: dict[str, float] = {}  # event id (cause or credited payment) -> arrival (monotonic)
        self.watch: set[str] = set()
        self._task: asyncio.Task[None] | None = None
        self._consumer: Any = None
        self.codec: Any = None
        self.registry: Any = None

    async def start(self) -> None:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        from services.catalogue import CORE_MEMBER_RECORDS

        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            enable_auto_commit=False,
            fetch_max_wait_ms=10,
            client_id="sinergi-bench-watcher",
        )
        await consumer.start()
        parts = consumer.partitions_for_topic(CORE_MEMBER_RECORDS.name)
        if not parts:
            await consumer._client.force_metadata_update()
            parts = consumer.partitions_for_topic(CORE_MEMBER_RECORDS.name) or set()
        tps = [TopicPartition(CORE_MEMBER_RECORDS.name, p) for p in sorted(parts)]
        consumer.assign(tps)
        await consumer.seek_to_end(*tps)
        for tp in tps:
            await consumer.position(tp)  # resolve the end now, before anything is produced
        self._consumer = consumer

    def use_registry(self, url: str) -> None:
        from services.avro import AvroCodec, RegistryClient, load_schemas

        self.registry = RegistryClient(url)
        self.codec = AvroCodec(self.registry, load_schemas(self.settings.schemas_dir), {})
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        consumer = self._consumer
        while True:
            batches = await consumer.getmany(timeout_ms=200, max_records=5000)
            arrived = time.monotonic()
            for records in batches.values():
                for rec in records:
                    _, value = await self.codec.decode_async(rec.value)
                    pid = value["participant_id"]
                    self.by_cause.setdefault(value["caused_by_event_id"], arrived)
                    # A payment that arrived before its enrollment is credited by the enrollment's version:
                    # it reached the core topic with the first record that lists it.
                    for payment_event_id in value["payment_event_ids"]:
                        self.by_cause.setdefault(payment_event_id, arrived)
                    if pid in self.watch:
                        if self.first_arrival is None:
                            self.first_arrival = arrived
                        if value["status"] == "ACTIVE":
                            self.active.setdefault(pid, arrived)

    async def wait_active(
        self, keys: set[str], timeout_s: float, exited: Callable[[], list[str]], stall_s: float = 60.0
    ) -> float | None:
        """Monotonic time the last of ``keys`` became ACTIVE; None on timeout, when a hub process exited,
        or when nothing new arrived for ``stall_s`` after the first arrival."""
        deadline = time.monotonic() + timeout_s
        seen, progress_at = 0, time.monotonic()
        while time.monotonic() < deadline:
            self._raise_if_failed()
            if exited():
                return None
            if keys <= self.active.keys():
                return max(self.active[k] for k in keys)
            if len(self.active) != seen:
                seen, progress_at = len(self.active), time.monotonic()
            elif seen and time.monotonic() - progress_at > stall_s:
                return None
            await asyncio.sleep(0.05)
        return None

    async def wait_causes(self, event_ids: set[str], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not event_ids <= self.by_cause.keys():
            self._raise_if_failed()
            await asyncio.sleep(0.05)

    def _raise_if_failed(self) -> None:
        if self._task is not None and self._task.done() and self._task.exception() is not None:
            raise RuntimeError("core topic watcher failed") from self._task.exception()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None

    async def close(self) -> None:
        await self.stop()
        if self.registry is not None:
            await self.registry.aclose()


# --- worker metrics (per-stage progress) ----------------------------------------------------------------------

_EVENTS_IN = re.compile(r"^sinergi_events_in_total\{([^}]*)\}\s+([0-9.eE+]+)$", re.MULTILINE)
_STAGE = re.compile(r'stage="([^"]+)"')


def process_cpu_s(pid: int | None) -> float | None:
    """User + system CPU seconds of a process (Linux /proc), or None."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


@dataclass
class StageFigures:
    stage: str
    events: int  # input events counted between the first and the last poll that saw progress
    seconds: float
    cpu_ms_per_event: float | None


class StageProgress:
    """Polls each worker's /metrics (and its process CPU): per stage, the first and last poll that saw
    its input counter grow, so rates and CPU per event exclude start-up and idle time."""

    def __init__(self, urls: dict[str, str], cpu: Callable[[str], float | None]) -> None:
        self.urls = urls
        self.cpu = cpu
        self.first: dict[str, tuple[float, int, float | None]] = {}  # time, count, cpu
        self.last: dict[str, tuple[float, int, float | None]] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        async with httpx.AsyncClient(timeout=2.0) as client:
            while True:
                for stage, url in self.urls.items():
                    try:
                        text = (await client.get(url)).text
                    except httpx.HTTPError:
                        continue
                    total = sum(
                        int(float(v))
                        for labels, v in _EVENTS_IN.findall(text)
                        if (m := _STAGE.search(labels)) and m.group(1) == stage
                    )
                    sample = (time.monotonic(), total, self.cpu(stage))
                    if total > 0 and stage not in self.first:
                        self.first[stage] = sample
                    if total > self.last.get(stage, (0.0, 0, None))[1]:
                        self.last[stage] = sample
                await asyncio.sleep(0.5)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task

    def summary(self) -> list[StageFigures]:
        out: list[StageFigures] = []
        for stage in self.urls:
            if stage not in self.first or stage not in self.last:
                continue
            (t0, n0, c0), (t1, n1, c1) = self.first[stage], self.last[stage]
            events = n1 - n0
            cpu = (c1 - c0) * 1000 / events if events > 0 and c0 is not None and c1 is not None else None
            out.append(StageFigures(stage, events, t1 - t0, cpu))
        return out


# --- the hub ------------------------------------------------------------------------------------------------------


async def _wait_http(url: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient(timeout=1.0) as client:
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(url)).status_code < 500:
                    return
            await asyncio.sleep(0.1)
    raise TimeoutError(f"{url} did not answer within {timeout_s:.0f}s")


@dataclass
class Hub:
    """The hub's processes, spawned through services.supervisor (own ports, own data dir)."""

    settings: Settings
    env: dict[str, str]
    supervisor: Any
    broker_pid: int | None = None

    @classmethod
    def prepare(cls, settings: Settings, bootstrap: str, root: Path) -> Hub:
        updates: dict[str, Any] = {
            "kafka_bootstrap": bootstrap,
            "http_host": LOOPBACK,
            "bank_api_port": free_port(),
            "kbri_api_port": free_port(),
            "registry_port": free_port(),
            "metrics_port_base": free_port_block(METRICS_PORTS),
            "data_dir": root / "hub",
        }
        if settings.schema_registry_url is None:
            updates["schema_registry_url"] = f"http://{LOOPBACK}:{updates['registry_port']}"
        hub_settings = settings.model_copy(update=updates)
        env = dict(os.environ)
        for name in (
            "kafka_bootstrap",
            "http_host",
            "bank_api_port",
            "kbri_api_port",
            "registry_port",
            "metrics_port_base",
            "data_dir",
            "schema_registry_url",
        ):
            if name in updates:
                env[f"SINERGI_{name.upper()}"] = str(updates[name])
        supervisor = Supervisor(hub_settings, simulate=False)
        supervisor.log_dir = root / "logs"
        supervisor.log_dir.mkdir(parents=True, exist_ok=True)
        return cls(hub_settings, env, supervisor)

    @property
    def embedded_registry(self) -> bool:
        return self.settings.schema_registry_url == f"http://{LOOPBACK}:{self.settings.registry_port}"

    def _spawn(self, names: Sequence[str]) -> None:
        for child in plan(self.settings, False, self.embedded_registry):
            if child.name in names:
                self.supervisor.children.append(child)
                self.supervisor.spawn(child, self.env)

    async def start_processors(self) -> None:
        if self.embedded_registry:
            self._spawn(["registry"])
            await _wait_http(f"{self.settings.schema_registry_url}/subjects", 30.0)
        self._spawn([f"worker-{w}" for w in enabled_workers(self.settings)])

    async def start_apis(self) -> None:
        self._spawn(["api-bank", "api-kbri"])
        s = self.settings
        for port in (s.kbri_api_port, s.bank_api_port):
            await _wait_http(f"http://{LOOPBACK}:{port}/healthz", 60.0)

    async def restart_workers(self) -> None:
        for child in self.supervisor.children:
            if not child.name.startswith("worker-") or child.proc is None:
                continue
            child.proc.terminate()
            try:
                await asyncio.to_thread(child.proc.wait, 15.0)
            except subprocess.TimeoutExpired:
                child.proc.kill()
                await asyncio.to_thread(child.proc.wait, 5.0)
            self.supervisor.spawn(child, self.env)

    def metrics_urls(self) -> dict[str, str]:
        base = self.settings.metrics_port_base
        enabled = enabled_workers(self.settings)
        return {w: f"http://{LOOPBACK}:{base + i}/metrics" for i, w in enumerate(WORKERS) if w in enabled}

    def cpu_of(self, name: str) -> float | None:
        child = next((c for c in self.supervisor.children if c.name == name), None)
        return process_cpu_s(child.proc.pid if child is not None and child.proc is not None else None)

    def cpu_groups(self) -> dict[str, float]:
        """CPU seconds so far: the APIs, the four workers, the broker (embedded only), this process."""
        import resource

        groups: dict[str, float] = {"APIs": 0.0, "workers": 0.0}
        for child in self.supervisor.children:
            cpu = process_cpu_s(child.proc.pid if child.proc is not None else None) or 0.0
            if child.name.startswith("api-"):
                groups["APIs"] += cpu
            elif child.name.startswith("worker-"):
                groups["workers"] += cpu
        if self.broker_pid is not None:
            groups["broker"] = process_cpu_s(self.broker_pid) or 0.0
        usage = resource.getrusage(resource.RUSAGE_SELF)
        groups["bench process"] = usage.ru_utime + usage.ru_stime
        return groups

    async def dump_stacks(self) -> str:
        """Ask every live Faust worker for a stack dump of all threads and tasks (mode's SIGUSR1 handler)."""
        from services.worker import FAUST_SERVICES  # the core publisher is no Faust worker: no handler

        dumped = []
        for child in self.supervisor.children:
            faust_worker = child.name.removeprefix("worker-") in FAUST_SERVICES
            if faust_worker and child.proc is not None and child.proc.poll() is None:
                with contextlib.suppress(OSError):
                    os.kill(child.proc.pid, signal.SIGUSR1)
                    dumped.append(child.name)
        if not dumped:
            return "no worker to ask for a stack dump"
        await asyncio.sleep(2.0)
        return f"stack dumps (SIGUSR1) in {', '.join(f'{n}.log' for n in dumped)}"

    def exited(self) -> list[str]:
        return [
            f"{c.name} exited with {c.proc.returncode}"
            for c in self.supervisor.children
            if c.proc is not None and c.proc.poll() is not None
        ]

    def log_problems(self) -> list[str]:
        found: list[str] = []
        for log in sorted(self.supervisor.log_dir.glob("*.log")):
            text = log.read_text(errors="replace")
            errors = [
                line
                for line in text.splitlines()
                if "Traceback" in line or '"level": "ERROR"' in line or " ERROR " in line
            ]
            if errors:
                found.append(f"{log.name}: {len(errors)} error line(s), first: {errors[0][:200]}")
        return found

    def stop(self) -> None:
        self.supervisor.shutdown()


# --- (c) steady rate ------------------------------------------------------------------------------------------------


async def steady(hub: Hub, watcher: CoreWatcher, report: Report, rate: float, seconds: float) -> None:
    """Open loop: member i enrolls at start + i * 2/rate and pays PAY_AFTER_S later, whatever the answers' pace.

    The load generator is aiohttp (a dependency of faust-streaming): at about 0.5 ms of CPU per request
    it leaves the two cores to the hub; httpx needed several times that here and became the bottleneck.
    """
    import aiohttp

    s = hub.settings
    world = world_from_settings(s)
    offices = {k: v.get_secret_value() for k, v in s.office_tokens.items()}
    banks = {k: v.get_secret_value() for k, v in s.bank_tokens.items()}
    client_secrets = {b: c.client_secret for b, c in bank_credentials(s).items()}
    members = int(rate / 2 * seconds)
    interval = 2.0 / rate
    sent: dict[str, float] = {}
    kbri_url = f"http://{LOOPBACK}:{s.kbri_api_port}/v1/enrollments"
    bank_url = f"http://{LOOPBACK}:{s.bank_api_port}/v1.0/transfer-va/payment"
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=512), timeout=timeout) as session:

        async def post(url: str, body: dict[str, Any], headers: dict[str, str], ok: int) -> tuple[Any, float]:
            report.steady_sent += 1
            at = time.monotonic()
            try:
                async with session.post(url, data=json.dumps(body).encode(), headers=headers) as response:
                    raw = await response.read()
                    status = response.status
            except (aiohttp.ClientError, TimeoutError):
                report.steady_refused += 1
                return None, at
            report.http_ms.append((time.monotonic() - at) * 1000)
            if status != ok:
                report.steady_refused += 1
                return None, at
            return json.loads(raw), at

        start = time.monotonic() + 0.5

        async def member(i: int) -> None:
            rng = random.Random(f"steady/{SEED}/{i}")
            today = wib_date(datetime.now(UTC))
            script = plan_member(rng, world, today, CLEAN)
            office = script.office.code
            await asyncio.sleep(max(0.0, start + i * interval - time.monotonic()))
            headers = kbri_headers(offices[office], office_request_id(rng, office, today))
            doc, at = await post(kbri_url, script.enrollment, headers, 202)
            if doc is None:
                return
            sent[doc["event_id"]] = at
            await asyncio.sleep(max(0.0, start + i * interval + PAY_AFTER_S - time.monotonic()))
            pay = payment_body(
                rng,
                bank=script.bank,
                customer_no=doc["customer_no"],
                amount_idr=doc["bill"]["amount_idr"],
                currency=script.currency,
                paid_at=datetime.now(UTC),
                utc_offset_h=COUNTRY_UTC_OFFSET_H.get(script.office.country, 7),
            )
            bank_id = script.bank.bank_id
            headers = snap_headers(rng, bank_id, banks[bank_id], datetime.now(UTC))
            raw = json.dumps(pay).encode()  # the exact bytes post() sends: the signature covers them
            headers["X-SIGNATURE"] = sign_transactional_hmac(
                client_secrets[bank_id], "POST", PAYMENT_PATH, banks[bank_id], raw, headers["X-TIMESTAMP"]
            )
            paid, at = await post(bank_url, pay, headers, 200)
            if paid is not None:
                sent[event_uuid("payment", bank_id, pay["paymentRequestId"])] = at

        await asyncio.gather(*(member(i) for i in range(members)))
    await watcher.wait_causes(set(sent), 30.0)
    report.latency_ms = [(watcher.by_cause[e] - at) * 1000 for e, at in sent.items() if e in watcher.by_cause]
    missing = len(sent) - len(report.latency_ms)
    if missing:
        report.problems.append(f"(c) {missing} accepted request(s) never reached the core topic within 30 s")


# --- the run --------------------------------------------------------------------------------------------------------


async def _run(settings: Settings, hub: Hub, report: Report, events: int) -> None:
    from services.catalogue import DEAD_LETTERS, EXCEPTIONS

    bootstrap = report.bootstrap
    members = max(1, events // 2)
    now = datetime.now(UTC)
    print(f"bench: generating {members:,} members ({2 * members:,} events) ...", flush=True)
    backlog = build_backlog(settings, members, SEED, now)
    payloads = [r.value for r in backlog.payments]
    while len(payloads) < events:  # the baseline runs over N payment bodies
        payloads.extend(payloads[: events - len(payloads)])

    print("bench: (a) raw aiokafka baseline ...", flush=True)
    preload, base = await baseline(settings, bootstrap, payloads[:events], deadline_s=120.0)
    report.phases += [base, preload]
    if base.events < events:
        report.problems.append(f"(a) only {base.events} of {events} events processed before the deadline")

    print("bench: (b) pre-loading the raw topics, then starting the hub ...", flush=True)
    watched = [t.name for t in (*DEAD_LETTERS, EXCEPTIONS)]
    before = await _end_offsets(bootstrap, watched)
    watcher = CoreWatcher(bootstrap, settings)
    await watcher.start()
    try:
        await _hub_backlog(hub, watcher, report, backlog)
        hub_rate = next((p.rate for p in report.phases if p.name.startswith("(b)")), STEADY_RATE_FALLBACK / STEADY_LOAD)
        report.steady_rate = max(STEADY_RATE_MIN, min(STEADY_RATE_MAX, round(hub_rate * STEADY_LOAD / 10) * 10))
        print(
            f"bench: (c) starting the APIs; {report.steady_rate:.0f} requests/s for {STEADY_SECONDS:.0f} s ...",
            flush=True,
        )
        await hub.start_apis()
        cpu_before = hub.cpu_groups()
        await steady(hub, watcher, report, report.steady_rate, STEADY_SECONDS)
        cpu_after = hub.cpu_groups()
        if report.steady_sent:
            report.steady_cpu_ms = {
                k: (cpu_after[k] - cpu_before.get(k, 0.0)) * 1000 / report.steady_sent for k in cpu_after
            }
        await watcher.stop()

        async def classify(topic: str, value: bytes) -> str:
            if topic != EXCEPTIONS.name:
                return "DLQ"
            _, record = await watcher.codec.decode_async(value)
            return str(record.get("reason", "?"))

        counts = await _read_since(bootstrap, before, classify)
        report.dead_letters = counts.pop("DLQ", 0)
        report.exceptions = counts
    finally:
        await watcher.close()


async def _hub_backlog(hub: Hub, watcher: CoreWatcher, report: Report, backlog: Backlog) -> None:
    members = len(backlog.customer_nos)
    watcher.watch = backlog.customer_nos
    await _preload(report.bootstrap, backlog.enrollments + backlog.payments)
    progress = StageProgress(hub.metrics_urls(), lambda stage: hub.cpu_of(f"worker-{stage}"))
    spawned = time.monotonic()
    try:
        await hub.start_processors()
        watcher.use_registry(str(hub.settings.schema_registry_url))
        progress.start()
        timeout = 120.0 + backlog.events / 200
        last = await watcher.wait_active(backlog.customer_nos, timeout, hub.exited)
        await asyncio.sleep(0.6)  # one more metrics poll
    finally:
        await progress.stop()
    report.stages = progress.summary()
    first_in = min((t for t, _, _ in progress.first.values()), default=None)
    if last is None:
        dumps = await hub.dump_stacks()
        got = len(backlog.customer_nos & watcher.active.keys())
        stuck = ", ".join(f"{f.stage} {n:,}" for f in report.stages if (n := progress.last[f.stage][1]))
        report.problems.append(
            f"(b) only {got:,} of {members:,} members ACTIVE after {time.monotonic() - spawned:.0f} s "
            f"(input events per stage: {stuck or '-'}); {'; '.join(hub.exited()) or 'no process exited'}; "
            f"{dumps}"
        )
        # Restart the workers (what an operator would do) so that (c) can still measure latency: they
        # resume from their committed offsets; (c) starts once the backlog has drained.
        print("bench: (b) stalled; restarting the workers and waiting for the backlog to drain ...", flush=True)
        await hub.restart_workers()
        drained = await watcher.wait_active(backlog.customer_nos, 150.0, hub.exited, stall_s=45.0)
        if drained is None:
            got = len(backlog.customer_nos & watcher.active.keys())
            report.problems.append(f"(b) still {members - got:,} members not ACTIVE after restarting the workers")
        else:
            report.problems.append("(b) all members ACTIVE after restarting the workers")
        return
    if first_in is not None:
        report.phases.append(
            Phase(
                "(b) hub backlog: first input consumed → last ACTIVE on core",
                backlog.events,
                last - first_in,
                note=f"{members:,} enrollments + {members:,} payments → {members:,} ACTIVE member records "
                "(first input seen by a 0.5 s /metrics poll)",
            )
        )
    report.phases.append(
        Phase(
            "    hub backlog incl. start-up: spawn → last ACTIVE",
            backlog.events,
            last - spawned,
            note="registry + 4 worker processes started after the pre-load; includes imports and group joins",
        )
    )


class _Interrupted(Exception):
    pass


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise _Interrupted()


async def _cancellable(settings: Settings, hub: Hub, report: Report, events: int) -> None:
    """_run with SIGTERM cancelling it (inside the loop an exception from a signal handler could land in
    any task; cancelling the main task unwinds every `finally` in order)."""
    main = asyncio.current_task()
    assert main is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main.cancel)
    await _run(settings, hub, report, events)


def run_bench(settings: Settings, events: int) -> int:
    """Entry point of `sinergi bench`; 0 when every phase completed, 1 on a problem, 130 when interrupted."""
    if events < 2:
        raise ValueError("events must be at least 2")
    root = Path(settings.data_dir) / "bench"
    shutil.rmtree(root, ignore_errors=True)  # the previous bench run's logs and data only
    root.mkdir(parents=True)
    broker: EmbeddedBroker | None = None
    hub: Hub | None = None
    report: Report | None = None
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        bootstrap = settings.kafka_bootstrap
        if bootstrap is None:
            broker = EmbeddedBroker(log_file=root / "broker.log")
            broker.start()
            bootstrap = broker.bootstrap
        print(f"bench: broker {bootstrap}; logs in {root}", flush=True)
        from services.topics import create_topics

        hub = Hub.prepare(settings, bootstrap, root)
        hub.broker_pid = broker.pid if broker is not None else None
        create_topics(bootstrap, hub.settings)
        report = Report(events=events, bootstrap=bootstrap, embedded=broker is not None, log_dir=hub.supervisor.log_dir)
        try:
            asyncio.run(_cancellable(settings, hub, report, events))
        finally:
            signal.signal(signal.SIGTERM, _on_sigterm)  # the loop left SIGTERM at its default on close
    except (KeyboardInterrupt, _Interrupted, asyncio.CancelledError):
        print("\nbench: interrupted; stopping everything ...", file=sys.stderr, flush=True)
        report = None
    finally:
        # A second Ctrl-C or SIGTERM must not cut the clean-up short (the supervisor kills after 15 s).
        saved_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            if hub is not None:
                if report is not None:
                    report.problems += hub.log_problems()
                hub.stop()
            if broker is not None:
                broker.stop()
        finally:
            signal.signal(signal.SIGINT, saved_int)
            signal.signal(signal.SIGTERM, previous)
    if report is None:
        return 130
    print(report.table(), flush=True)
    return 0 if not report.problems else 1


__all__ = ["Backlog", "RawRecord", "build_backlog", "percentile", "run_bench"]
