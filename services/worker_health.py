"""Liveness, readiness and stalled-consumer detection of a stream processor, served beside /metrics.

A worker is *live* while its event loop ticks (a heartbeat task). It is *ready* while it consumes: the
loop ticks, it is not rebalancing, no agent crashed within the last `stall_after_s`, and no assigned input
partition has messages waiting (lag = highwater - committed > 0) without its committed offset advancing
for `stall_after_s`. The offsets are sampled by a timer every few seconds, never on the record path.

The HTTP side is prometheus_client's own WSGI app and threading wsgiref server (what start_http_server
runs), with /healthz and /readyz in front: every other path is answered by the metrics app unchanged, so
/metrics stays byte-for-byte what scrapers read before.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import hashlib
import json
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIServer, make_server

from prometheus_client import make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer, _SilentHandler

from services import metrics
from services.outbox import default_partition

if TYPE_CHECKING:
    import faust
    from aiokafka import AIOKafkaConsumer

log = logging.getLogger(__name__)

# How often the loop beats and offsets are sampled; the stall threshold is far above it.
DEFAULT_INTERVAL_S = 2.0
SAMPLE_TIMEOUT_S = 10.0


# --- the pure decision -----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class PartitionOffsets:
    """One sample of an assigned input partition. `committed` is the next offset to process."""

    topic: str
    partition: int
    highwater: int
    committed: int


@dataclass(frozen=True, slots=True)
class PartitionState:
    topic: str
    partition: int
    lag: int
    commit_age_s: float
    stalled: bool


@dataclass(slots=True)
class _Seen:
    committed: int
    lag: int
    since: float  # when the committed offset last advanced, or lag was first seen positive


class StallDetector:
    """Per partition: lag, seconds the commit has not advanced while messages wait, and whether that is a stall.

    The age counts from the later of the last commit advance and the moment lag was first seen positive,
    so a partition idle for an hour that receives one message is not stalled at once. A partition absent
    from a sample (revoked) is forgotten; a committed offset that moved backwards (a seek after a
    rebalance) counts as movement.
    """

    def __init__(self, stall_after_s: float) -> None:
        self.stall_after_s = stall_after_s
        self._seen: dict[tuple[str, int], _Seen] = {}

    def update(self, samples: Iterable[PartitionOffsets], now: float) -> list[PartitionState]:
        states: list[PartitionState] = []
        seen: dict[tuple[str, int], _Seen] = {}
        for s in samples:
            key = (s.topic, s.partition)
            lag = max(0, s.highwater - s.committed)
            prev = self._seen.get(key)
            if prev is None or prev.committed != s.committed or prev.lag == 0 or lag == 0:
                entry = _Seen(s.committed, lag, now)
            else:
                entry = _Seen(prev.committed, lag, prev.since)
            seen[key] = entry
            age = now - entry.since if lag > 0 else 0.0
            states.append(PartitionState(s.topic, s.partition, lag, age, lag > 0 and age >= self.stall_after_s))
        self._seen = seen
        return states


# --- state shared by the event loop (writer) and the HTTP threads (readers) --------------------------------
class WorkerHealth:
    """The probes' view of one worker process. Thread-safe: the loop writes, the HTTP server threads read."""

    def __init__(
        self,
        stage: str,
        stall_after_s: float,
        *,
        interval_s: float = DEFAULT_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stage = stage
        self.stall_after_s = stall_after_s
        self.interval_s = interval_s
        # A blocked loop answers no heartbeat; a few missed ticks are load, many are a hang.
        self.liveness_timeout_s = max(30.0, 10 * interval_s)
        self._clock = clock
        self._lock = threading.Lock()
        self._detector = StallDetector(stall_after_s)
        self._last_beat = clock()
        self._consuming = False
        self._offsets_at: float | None = None
        self._partitions: list[PartitionState] = []
        self._labelled: set[tuple[str, str]] = set()
        self._last_crash: float | None = None
        self._crashed_for_good = False
        # The /state digest: set by install_faust; None (404) for a worker without tables.
        self.state_source: Callable[[], tuple[int, dict[str, Any]]] | None = None
        metrics.WORKER_READY.labels(stage).set(0)
        metrics.CONSUMER_STALLED_PARTITIONS.labels(stage).set(0)
        metrics.AGENT_CRASHES.labels(stage)  # present at 0 from the start, so rate() sees the first crash

    # --- written from the event loop ---------------------------------------------------------------------
    def beat(self) -> None:
        with self._lock:
            self._last_beat = self._clock()

    def set_consuming(self, consuming: bool) -> None:
        with self._lock:
            self._consuming = consuming

    def record_crash(self, *, fatal: bool = False) -> None:
        metrics.AGENT_CRASHES.labels(self.stage).inc()
        with self._lock:
            self._last_crash = self._clock()
            self._crashed_for_good = self._crashed_for_good or fatal

    def observe_offsets(self, samples: Iterable[PartitionOffsets]) -> list[PartitionState]:
        now = self._clock()
        with self._lock:
            states = self._detector.update(samples, now)
            self._partitions = states
            self._offsets_at = now
        labelled = set()
        for st in states:
            labels = (st.topic, str(st.partition))
            labelled.add(labels)
            metrics.CONSUMER_LAG.labels(self.stage, *labels).set(st.lag)
            metrics.CONSUMER_COMMIT_AGE.labels(self.stage, *labels).set(round(st.commit_age_s, 3))
        for labels in self._labelled - labelled:  # revoked: another worker reports it now
            with contextlib.suppress(KeyError):
                metrics.CONSUMER_LAG.remove(self.stage, *labels)
                metrics.CONSUMER_COMMIT_AGE.remove(self.stage, *labels)
        self._labelled = labelled
        metrics.CONSUMER_STALLED_PARTITIONS.labels(self.stage).set(sum(st.stalled for st in states))
        self.readiness()  # keeps sinergi_worker_ready current between probe requests
        return states

    # --- read from anywhere --------------------------------------------------------------------------------
    def alive(self) -> bool:
        with self._lock:
            return self._clock() - self._last_beat <= self.liveness_timeout_s

    def readiness(self) -> dict[str, Any]:
        """{"ready": bool, "checks": {name: bool}, "stalled": [...]}; also sets sinergi_worker_ready."""
        now = self._clock()
        with self._lock:
            recent_crash = self._last_crash is not None and now - self._last_crash < self.stall_after_s
            offsets_fresh = self._offsets_at is not None and now - self._offsets_at <= self.stall_after_s
            stalled = [st for st in self._partitions if st.stalled]
            checks = {
                "loop": now - self._last_beat <= self.liveness_timeout_s,
                "consuming": self._consuming,
                "partitions": offsets_fresh and not stalled,
                "agents": not recent_crash and not self._crashed_for_good,
            }
        ready = all(checks.values())
        metrics.WORKER_READY.labels(self.stage).set(1 if ready else 0)
        return {
            "ready": ready,
            "checks": checks,
            "stalled": [
                {"topic": st.topic, "partition": st.partition, "lag": st.lag, "commit_age_s": round(st.commit_age_s, 1)}
                for st in stalled
            ],
        }


# --- HTTP ------------------------------------------------------------------------------------------------
WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def probe_app(health: WorkerHealth, metrics_app: WsgiApp | None = None) -> WsgiApp:
    """/healthz and /readyz; anything else goes to prometheus_client's metrics app untouched."""
    fallback = metrics_app or make_wsgi_app()

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/healthz":
            ok = health.alive()
            return _json(start_response, 200 if ok else 503, {"status": "ok" if ok else "stalled"})
        if path == "/readyz":
            body = health.readiness()
            return _json(start_response, 200 if body["ready"] else 503, body)
        if path == "/state":
            source = health.state_source
            if source is None:
                return _json(start_response, 404, {"error": "NO_TABLES"})
            status, state = source()
            return _json(start_response, status, state)
        return fallback(environ, start_response)

    return app


def _json(start_response: Callable[..., Any], status: int, body: Mapping[str, Any]) -> list[bytes]:
    raw = json.dumps(body).encode()
    reason = {200: "OK", 404: "Not Found"}.get(status, "Service Unavailable")
    start_response(
        f"{status} {reason}",
        [("Content-Type", "application/json"), ("Content-Length", str(len(raw))), ("Cache-Control", "no-store")],
    )
    return [raw]


def serve_probes(health: WorkerHealth, port: int, host: str) -> tuple[WSGIServer, threading.Thread]:
    """What prometheus_client.start_http_server does (daemon thread, threading wsgiref), plus the probes."""
    server = make_server(host, port, probe_app(health), ThreadingWSGIServer, handler_class=_SilentHandler)
    thread = threading.Thread(target=server.serve_forever, name=f"probes:{port}", daemon=True)
    thread.start()
    return server, thread


# --- Faust wiring ------------------------------------------------------------------------------------------
def faust_input_topics(app: faust.App) -> set[str]:
    """The topics the agents consume: changelog partitions are read only in recovery and never committed."""
    names: set[str] = set()
    for agent in app.agents.values():
        names.update(getattr(agent.channel, "topics", None) or ())
    return names - set(app.tables.changelog_topics)


async def sample_faust(app: faust.App, topics: set[str]) -> list[PartitionOffsets]:
    consumer: Any = app.consumer
    tps = sorted((tp for tp in consumer.assignment() if tp.topic in topics), key=lambda tp: (tp.topic, tp.partition))
    if not tps:
        return []
    highwaters = await consumer.highwaters(*tps)
    # Faust's own record of what it committed (next offset to process); None until the first commit.
    committed_by_tp: Mapping[Any, int | None] = consumer._committed_offset
    missing = [tp for tp in tps if committed_by_tp.get(tp) is None]
    earliest = await consumer.earliest_offsets(*missing) if missing else {}
    out = []
    for tp in tps:
        high = _highwater(highwaters.get(tp), consumer.highwater(tp))
        if high is None:
            continue
        committed = committed_by_tp.get(tp)
        base = committed if committed is not None else earliest.get(tp, 0)
        out.append(PartitionOffsets(tp.topic, tp.partition, int(high), int(base or 0)))
    return out


def install_faust(app: faust.App, health: WorkerHealth) -> None:
    """Heartbeat task, offset-sampling timer and crash accounting on a Faust app (call before it starts)."""
    for agent in app.agents.values():
        _count_crashes(agent, health)
    if app.tables:
        digests = TableDigests(app)

        @app.task
        async def _state_digest_source() -> None:
            # Computed on the event loop (between two records), never on an HTTP thread reading live dicts.
            health.state_source = digests.serve_from(asyncio.get_running_loop())

    @app.task
    async def _health_heartbeat() -> None:
        while True:
            health.beat()
            await asyncio.sleep(health.interval_s)

    topics: set[str] = set()

    @app.timer(interval=health.interval_s)
    async def _health_sample() -> None:
        if app.crashed:
            health.record_crash(fatal=True)
        consuming = app.rebalancing_count > 0 and not app.rebalancing
        health.set_consuming(consuming)
        if not consuming:
            return  # the assignment is in flux; the next tick after the rebalance samples again
        if not topics:
            topics.update(faust_input_topics(app))
        try:
            samples = await asyncio.wait_for(sample_faust(app, topics), SAMPLE_TIMEOUT_S)
        except Exception as exc:  # broker unreachable: readiness goes false once the last sample is too old
            log.warning("worker %s: offsets not sampled (%s)", health.stage, type(exc).__name__)
            return
        _log_changes(health, health.observe_offsets(samples))


def _count_crashes(agent: Any, health: WorkerHealth) -> None:
    # Faust hands an agent's exception to on_error, then its supervisor restarts the actor.
    previous: Callable[[Any, BaseException], Awaitable[None]] | None = agent._on_error

    async def on_error(failed: Any, exc: BaseException) -> None:
        health.record_crash()
        # The type only: an exception message can quote the record it failed on.
        log.error("worker %s: agent %s crashed (%s); restarting it", health.stage, failed.name, type(exc).__name__)
        if previous is not None:
            await previous(failed, exc)

    agent._on_error = on_error


_was_stalled: dict[str, set[tuple[str, int]]] = {}


def _log_changes(health: WorkerHealth, states: list[PartitionState]) -> None:
    """One line when a partition starts or stops being stalled, not one per tick."""
    now_stalled = {(st.topic, st.partition) for st in states if st.stalled}
    before = _was_stalled.get(health.stage, set())
    for st in states:
        key = (st.topic, st.partition)
        if key in now_stalled and key not in before:
            log.error(
                "worker %s: %s/%s stalled: lag %s, no commit for %.0f s",
                health.stage,
                st.topic,
                st.partition,
                st.lag,
                st.commit_age_s,
            )
    for topic, partition in sorted(before - now_stalled):
        log.warning("worker %s: %s/%s no longer stalled", health.stage, topic, partition)
    _was_stalled[health.stage] = now_stalled


# --- the core publisher (a plain aiokafka group consumer) ---------------------------------------------------
async def sample_aiokafka(consumer: AIOKafkaConsumer) -> list[PartitionOffsets]:
    tps = sorted(consumer.assignment(), key=lambda tp: (tp.topic, tp.partition))
    if not tps:
        return []
    highwaters = await consumer.end_offsets(tps)
    out = []
    for tp in tps:
        committed = await consumer.committed(tp)
        if committed is None:
            committed = (await consumer.beginning_offsets([tp])).get(tp, 0)
        high = _highwater(highwaters.get(tp), consumer.highwater(tp)) or 0
        out.append(PartitionOffsets(tp.topic, tp.partition, high, int(committed)))
    return out


def _highwater(listed: int | None, fetched: int | None) -> int | None:
    """The larger of the broker's listed end offset and the highwater its last fetch response carried.

    Either alone can be short: a fetched highwater is stale once a partition is paused, and the embedded
    broker (Tansu) lists the end of a multi-record batch as its base offset + 1 (three records produced in
    one batch: ListOffsets says 1, a fetch says 3).
    """
    known = [int(v) for v in (listed, fetched) if v is not None and v >= 0]
    return max(known) if known else None


async def watch_aiokafka(health: WorkerHealth, consumer_of: Callable[[], AIOKafkaConsumer | None]) -> None:
    """Heartbeat and offset sampling for a loop that owns an aiokafka group consumer (run as a task)."""
    while True:
        health.beat()
        consumer = consumer_of()
        joined = consumer is not None and _joined(consumer)
        health.set_consuming(joined)
        if consumer is not None and joined:
            try:
                states = health.observe_offsets(await asyncio.wait_for(sample_aiokafka(consumer), SAMPLE_TIMEOUT_S))
                _log_changes(health, states)
            except Exception as exc:
                log.warning("worker %s: offsets not sampled (%s)", health.stage, type(exc).__name__)
        await asyncio.sleep(health.interval_s)


def _joined(consumer: AIOKafkaConsumer) -> bool:
    """The group handed this consumer an assignment (possibly empty: a replica beyond the partition count)."""
    subscription = getattr(getattr(consumer, "_subscription", None), "subscription", None)
    return subscription is not None and subscription.assignment is not None


# --- table-state digest (GET /state) -------------------------------------------------------------------------
# What a worker holds in its tables, per active partition, as a key count and a hash: two workers (or one worker
# before and after a rebuild from the changelog) hold the same state exactly when the digests are equal. Only
# counts and hashes leave the process, never a key or a value.
STATE_TIMEOUT_S = 5.0


def canonical_bytes(obj: Any) -> bytes:
    """One byte string per key or value: raw bytes as they are (every table here is raw), anything else as
    sorted JSON, so equal values hash equally whichever process holds them."""
    if isinstance(obj, bytes | bytearray | memoryview):
        return bytes(obj)
    if isinstance(obj, str):
        return obj.encode()
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()


def partition_digests(
    items: Iterable[tuple[Any, Any]], partition_of: Callable[[Any], int | None], partitions: Iterable[int]
) -> dict[int, dict[str, Any]]:
    """{partition: {"keys": n, "sha256": hex}} over the key → value pairs of ``partitions``, pairs sorted by key.

    A key with a None value is a deletion Faust has not dropped yet, not state. Each key and value is
    length-prefixed, so no two different tables can concatenate to the same bytes. Every partition in
    ``partitions`` is present, an empty one too: a partition that lost all its keys must not look unchanged.
    """
    wanted = set(partitions)
    by_partition: dict[int, list[tuple[bytes, bytes]]] = {p: [] for p in wanted}
    for key, value in items:
        if value is None:
            continue
        p = partition_of(key)
        if p in wanted:
            by_partition[p].append((canonical_bytes(key), canonical_bytes(value)))
    out: dict[int, dict[str, Any]] = {}
    for p in sorted(by_partition):
        digest = hashlib.sha256()
        pairs = sorted(by_partition[p])
        for k, v in pairs:
            digest.update(len(k).to_bytes(8, "big") + k + len(v).to_bytes(8, "big") + v)
        out[p] = {"keys": len(pairs), "sha256": digest.hexdigest()}
    return out


def _recovered_at(table: Any, key: Any) -> int | None:
    """The changelog partition a memory store recovered ``key`` from (Faust's ``_key_partition``), if it did."""
    p = getattr(table.data, "_key_partition", {}).get(key)
    return None if p is None else int(p)


def _murmur2_partition(key: Any, partitions: int) -> int | None:
    # The default producer partitioner's choice, for a key Faust recorded no partition for.
    if not isinstance(key, bytes) or partitions <= 0:
        return None
    return default_partition(key, partitions)


class TableDigests:
    """The digests of a Faust app's tables over this worker's active partitions, for GET /state.

    Which partition a key belongs to is the changelog partition Faust wrote it to. A memory store records it
    for keys it recovered from the changelog (``_key_partition``) but not for keys written since, so every
    table's ``send_changelog`` is wrapped to note the partition of each write (the statement ledger's keys
    are written to their *event's* partition, which the key alone does not tell). A table that says where its
    keys belong (``partition_of_key``: the statement ledger's items go to their bank's partition) is noted only
    for writes that went elsewhere. A table can hold keys of other partitions (standby replicas, keys of a
    revoked partition): they are left out.
    """

    def __init__(self, app: faust.App) -> None:
        self.app = app
        self._written: dict[str, dict[Any, int]] = {}
        for table in app.tables.values():
            self._track(table)

    def _track(self, table: Any) -> None:
        written = self._written.setdefault(table.name, {})
        # A table whose service knows each key's partition (``partition_of_key``) is noted only where a write went
        # elsewhere: the statement ledger's notes were an entry per item, ~1.3 MB per 24,000 items held.
        derived: Callable[[Any], int | None] | None = getattr(table, "partition_of_key", None)

        def note(key: Any, value: Any, partition: Any) -> None:
            try:  # bookkeeping for the probe: never the reason a write fails
                if value is None:
                    written.pop(key, None)
                elif partition is not None:
                    p = int(partition)
                    # ... and where the store does not remember another partition for it (recovered from there)
                    if derived is not None and derived(key) == p and _recovered_at(table, key) in (None, p):
                        written.pop(key, None)  # where its service says it belongs: nothing to remember
                    else:
                        written[key] = p
            except Exception:  # pragma: no cover - defensive (an unhashable key)
                log.debug("state digest: partition of a changelog write not recorded", exc_info=True)

        original = table.send_changelog

        def send_changelog(
            partition: int | None, key: Any, value: Any, key_serializer: Any = None, value_serializer: Any = None
        ) -> Any:
            fut = original(partition, key, value, key_serializer, value_serializer)
            # Set at once: Faust partitions changelog sends eagerly.
            note(key, value, getattr(getattr(fut, "message", None), "partition", partition))
            return fut

        table.send_changelog = send_changelog
        # Writers that send to the changelog themselves (services/durable_table.py) name the partition: through
        # the changelog topic's send, or, for a write sent as a batch of its own, by calling this.
        table.note_changelog_write = note
        topic = getattr(table, "changelog_topic", None)
        topic_send = getattr(topic, "send", None)
        if topic is None or topic_send is None:
            return

        async def send(**kwargs: Any) -> Any:
            note(kwargs.get("key"), kwargs.get("value"), kwargs.get("partition"))
            return await topic_send(**kwargs)

        topic.send = send

    def partition_of(self, table: Any, key: Any) -> int | None:
        p = self._written.get(table.name, {}).get(key)
        if p is None:
            p = _recovered_at(table, key)
        derived = getattr(table, "partition_of_key", None)
        if p is None and derived is not None:
            p = derived(key)
        if p is None:
            p = _murmur2_partition(key, int(getattr(table, "partitions", None) or 0))
        return p

    def snapshot(self) -> tuple[int, dict[str, Any]]:
        """(HTTP status, body); 503 while the worker has not joined or is rebalancing (recovery included)."""
        app: Any = self.app
        if app.rebalancing or app.rebalancing_count == 0:
            return 503, {"ready": False, "reason": "REBALANCING"}
        actives = app.assignor.assigned_actives()
        tables: dict[str, Any] = {}
        for table in app.tables.values():
            changelog = table.changelog_topic_name
            partitions = {tp.partition for tp in actives if tp.topic == changelog}
            data = table.data
            items = list(data.items()) if hasattr(data, "items") else []
            digests = partition_digests(items, functools.partial(self.partition_of, table), partitions)
            tables[table.name] = {"partitions": {str(p): d for p, d in digests.items()}}
        return 200, {"ready": True, "generation": int(app.consumer_generation_id or 0), "tables": tables}

    def serve_from(self, loop: asyncio.AbstractEventLoop) -> Callable[[], tuple[int, dict[str, Any]]]:
        """A callable for the HTTP threads: runs :meth:`snapshot` on ``loop`` and waits for it (bounded)."""

        def source() -> tuple[int, dict[str, Any]]:
            done: concurrent.futures.Future[tuple[int, dict[str, Any]]] = concurrent.futures.Future()

            def run() -> None:
                if not done.set_running_or_notify_cancel():
                    return
                try:
                    done.set_result(self.snapshot())
                except BaseException as exc:
                    done.set_exception(exc)

            try:
                loop.call_soon_threadsafe(run)
                return done.result(STATE_TIMEOUT_S)
            except TimeoutError:
                done.cancel()
                return 503, {"ready": False, "reason": "BUSY"}
            except Exception as exc:  # a closed loop (shutting down), or the snapshot failed
                return 503, {"ready": False, "reason": type(exc).__name__}

        return source
