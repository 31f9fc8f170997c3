"""Fault injection for the crash tests: a paced producer of a prebuilt raw stream, a killer that SIGKILLs
hub processes at seeded random times and restarts them after a random pause, and a verifier poll.

Every fault is printed with its time since the stream started, so a failing run can be replayed with
SINERGI_TEST_SEED and compared.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
from confluent_kafka import Consumer, Producer, TopicPartition

from services.domain.verification import VerificationReport
from services.simulation.backlog import RawRecord
from services.supervisor import Supervisor
from services.verify import reading_codec, verify


def produce_paced(bootstrap: str, records: Sequence[RawRecord], seconds: float, chunks: int = 40) -> float:
    """Produce ``records`` in order, spread over about ``seconds`` (a steady partner load, not a burst);
    every chunk is flushed (acks=all) before the next. Returns the seconds it took."""
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True, "linger.ms": 5})
    started = time.monotonic()
    size = max(1, -(-len(records) // chunks))
    for n, at in enumerate(range(0, len(records), size)):
        for r in records[at : at + size]:
            producer.produce(r.topic, key=r.key, value=r.value, headers=r.headers)
            producer.poll(0)
        assert producer.flush(30) == 0, "the broker did not take the stream"
        ahead = started + seconds * (n + 1) / chunks - time.monotonic()
        if ahead > 0:
            time.sleep(ahead)  # pacing the load, not waiting for anything
    return time.monotonic() - started


@dataclass
class Fault:
    child: str
    killed_at_s: float
    restarted_at_s: float


@dataclass
class Killer:
    """SIGKILLs ``targets`` in turn, ``kills`` times in all, at random times in ``window_s`` after
    :meth:`start`; each comes back after a pause drawn from ``pause_s``."""

    hub: Supervisor
    targets: Sequence[str]
    kills: int
    window_s: tuple[float, float]
    pause_s: tuple[float, float]
    rng: random.Random
    faults: list[Fault] = field(default_factory=list)
    error: BaseException | None = None

    def start(self) -> Killer:
        self._t0 = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="chaos-killer", daemon=True)
        self._thread.start()
        return self

    def join(self, timeout_s: float = 120.0) -> list[Fault]:
        self._thread.join(timeout_s)
        assert not self._thread.is_alive(), "the killer did not finish"
        if self.error is not None:
            raise self.error
        return self.faults

    def _run(self) -> None:
        try:
            times = sorted(self.rng.uniform(*self.window_s) for _ in range(self.kills))
            for n, at in enumerate(times):
                name = self.targets[n % len(self.targets)]
                wait = self._t0 + at - time.monotonic()
                if wait > 0:
                    time.sleep(wait)  # the fault's scheduled time
                child = self.hub.kill(name)  # kept down until spawned again below
                killed = time.monotonic() - self._t0
                time.sleep(self.rng.uniform(*self.pause_s))  # the outage, as long as the seed says
                self.hub.spawn(child, self.hub.env)
                fault = Fault(name, round(killed, 2), round(time.monotonic() - self._t0, 2))
                self.faults.append(fault)
                print(f"fault {n + 1}: SIGKILL {name} at t={fault.killed_at_s}s, back at t={fault.restarted_at_s}s")
        except BaseException as exc:  # reported by join() on the test's thread
            self.error = exc


def verified(
    hub: Supervisor,
    participants: set[str],
    done: Callable[[VerificationReport], bool],
    deadline_s: float,
    entry_ids: set[str] | None = None,
) -> VerificationReport:
    """Poll the verifier over ``participants`` (and the statement entries ``entry_ids``) until ``done(report)``
    holds; the last report either way."""
    url = hub.env["SINERGI_SCHEMA_REGISTRY_URL"]
    codec = reading_codec(url)
    deadline = time.monotonic() + deadline_s
    while True:
        report = verify(hub.bootstrap, url, participants=participants, entry_ids=entry_ids, codec=codec, timeout_s=20.0)
        if done(report):
            return report
        if time.monotonic() > deadline:
            print_reconcile_progress(hub)
            return report
        time.sleep(1.0)  # poll interval of a deadline loop, not a synchronisation


# --- a worker's tables and a group's committed offsets, for the state and rebalance tests --------------------
TopicPartitionKey = tuple[str, int]


def worker_port(hub: Supervisor, worker: str) -> int:
    """The metrics/probe port the supervisor gave ``worker`` (base + its index in WORKERS)."""
    from services.supervisor import WORKERS

    return hub.settings.metrics_port_base + WORKERS.index(worker)


def table_state(host: str, port: int) -> dict[str, Any] | None:
    """GET /state of a Faust worker: {table: {"partitions": {p: {"keys", "sha256"}}}}, or None while it is
    down, rebalancing or recovering (anything but a 200)."""
    try:
        answer = httpx.get(f"http://{host}:{port}/state", timeout=10.0)
    except httpx.HTTPError:
        return None
    if answer.status_code != 200:
        return None
    tables: dict[str, Any] = answer.json()["tables"]
    return tables


def committed_offsets(
    bootstrap: str, group: str, topics: Sequence[str], partitions: int
) -> dict[TopicPartitionKey, int]:
    """The group's committed offset (next offset to process) per partition; -1 where nothing is committed.
    Read without joining the group (OffsetFetch only), so the reading disturbs no assignment."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False, "client.id": "sinergi-test"}
    )
    try:
        asked = [TopicPartition(t, p) for t in topics for p in range(partitions)]
        return {(tp.topic, tp.partition): tp.offset for tp in consumer.committed(asked, timeout=15.0)}
    finally:
        consumer.close()


def partition_ends(bootstrap: str, topics: Sequence[str]) -> dict[TopicPartitionKey, int]:
    """One past the last record of each partition that has any, read to idleness: Tansu's listed end offsets
    can be short after batched writes."""
    from services.topic_snapshot import read_to_end

    ends: dict[TopicPartitionKey, int] = {}
    for msg in read_to_end(bootstrap, topics, timeout_s=30.0):
        key = (msg.topic() or "", msg.partition() or 0)
        ends[key] = max(ends.get(key, 0), (msg.offset() or 0) + 1)
    return ends


def print_reconcile_progress(hub: Supervisor) -> None:
    """For a run that did not settle: where the reconciler's group stands against its inputs, so the failure
    tells a stuck or skipped partition (committed at the end, record missing) from a slow one (lag left)."""
    from services.catalogue import ENROLLMENTS, PAYMENTS, REVERSALS

    topics = [ENROLLMENTS.name, PAYMENTS.name, REVERSALS.name]
    try:
        committed = committed_offsets(hub.bootstrap, "sinergi-reconcile", topics, hub.settings.kafka_partitions)
        ends = partition_ends(hub.bootstrap, topics)
    except Exception as exc:  # a diagnostic must not hide the assertion that follows
        print(f"reconcile progress unavailable: {exc!r}")
        return
    for tp in sorted(set(committed) | set(ends)):
        print(f"reconcile group {tp[0]}[{tp[1]}]: committed {committed.get(tp, -1)} end {ends.get(tp, 0)}")
