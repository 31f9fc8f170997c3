"""Issue 7, item 2: two reconcile workers in one consumer group, one of them SIGKILLed and restarted twice
while a mixed stream flows (every kill and every return is a rebalance) → the verifier finds nothing missing,
nothing duplicated, the rupiah in equal to the rupiah recorded, and the group's committed offsets only move
forward and, after the last restart, reach the end of the input.

The second worker is the hub's own command (`python -m services worker reconcile`) in the hub's environment,
on a port of its own, so it joins the same group (sinergi-reconcile) as the hub's reconciler. Which worker is
killed, when, and for how long come from the seed (SINERGI_TEST_SEED); every fault is printed.
"""

from __future__ import annotations

import os
import random
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest
from chaos import Killer, committed_offsets, partition_ends, produce_paced, table_state, verified, worker_port

from connectors.embedded import free_port
from services.catalogue import ENROLLMENTS, PAYMENTS, REVERSALS
from services.domain.verification import VerificationReport
from services.simulation.backlog import build_mixed_stream
from services.supervisor import Child, Supervisor, _sinergi

pytestmark = pytest.mark.integration

MEMBERS = 2_000  # about 2.2 raw records each
PRODUCE_S = 40.0
RESTARTS = 2
GROUP = "sinergi-reconcile"
INPUTS = (ENROLLMENTS.name, PAYMENTS.name, REVERSALS.name)
TABLE = "members"
DEADLINE_S = 150.0
SAMPLE_EVERY_S = 1.0

Offsets = dict[tuple[str, int], int]


@dataclass
class Watch:
    """Samples, from a thread, the group's committed offsets and which partitions each worker owns."""

    hub: Supervisor
    ports: dict[str, int]
    offsets: list[tuple[float, Offsets]] = field(default_factory=list)
    owned: dict[str, set[int]] = field(default_factory=dict)
    error: BaseException | None = None

    def __post_init__(self) -> None:
        self.t0 = time.monotonic()  # sample times count from here
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="offset-watch", daemon=True)

    def start(self) -> Watch:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Idempotent; the sampler's own failure is raised by :meth:`check`."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(30)

    def check(self) -> None:
        if self.error is not None:
            raise self.error

    def _run(self) -> None:
        host, partitions = self.hub.settings.http_host, self.hub.settings.kafka_partitions
        try:
            while not self._stop.wait(SAMPLE_EVERY_S):
                for name, port in self.ports.items():
                    state = table_state(host, port)
                    if state is not None:
                        self.owned.setdefault(name, set()).update(int(p) for p in state[TABLE]["partitions"])
                try:
                    sample = committed_offsets(self.hub.bootstrap, GROUP, INPUTS, partitions)
                except Exception as exc:  # the coordinator is moving with the rebalance: the next sample counts
                    print(f"offsets not read at t={time.monotonic() - self.t0:.1f}s ({type(exc).__name__})")
                    continue
                self.offsets.append((time.monotonic() - self.t0, sample))
        except BaseException as exc:  # reported by stop() on the test's thread
            self.error = exc


def total(sample: Offsets) -> int:
    return sum(max(0, v) for v in sample.values())


@pytest.mark.timeout(int(DEADLINE_S * 2 + PRODUCE_S + 240))  # the hub's start-up counts too
def test_two_reconcilers_one_restarted_twice_lose_and_duplicate_nothing(hub: Supervisor) -> None:
    seed = int(os.environ.get("SINERGI_TEST_SEED") or random.SystemRandom().randrange(1 << 31))
    rng = random.Random(seed)
    stream = build_mixed_stream(hub.settings, MEMBERS, seed, datetime.now(UTC))
    print(f"seed={seed} events={stream.events} payments={stream.payments} cases={stream.cases}")
    host = hub.settings.http_host
    port = free_port(host)
    second = Child("worker-reconcile-2", _sinergi("worker", "reconcile", "--metrics-port", str(port)))
    ports = {"worker-reconcile": worker_port(hub, "reconcile"), second.name: port}
    victims = [rng.choice(sorted(ports)) for _ in range(RESTARTS)]
    # In the supervisor's list while the test runs, so that hub.kill / hub.spawn (the Killer) reach it, and the
    # watcher restarts it like any worker if it exits on its own (a stalled rebalance).
    hub.children = [*hub.children, second]
    watch = Watch(hub, ports)
    try:
        hub.spawn(second, hub.env)
        deadline = time.monotonic() + DEADLINE_S
        watch.start()
        while not all(watch.owned.get(name) for name in ports):  # both in the group, each with partitions
            assert time.monotonic() < deadline, f"the second worker never got a partition: {watch.owned}"
            time.sleep(SAMPLE_EVERY_S)  # poll interval
        print(f"both workers own partitions: {watch.owned}; victims {victims}")

        killer_at = time.monotonic() - watch.t0  # the Killer's fault times count from here
        killer = Killer(hub, victims, RESTARTS, (3.0, PRODUCE_S - 8.0), (1.0, 4.0), rng).start()
        took = produce_paced(hub.bootstrap, stream.records, PRODUCE_S)
        faults = killer.join(timeout_s=PRODUCE_S + 60)
        print(f"produced {stream.events} records in {took:.1f}s; faults {faults}")

        def settled(r: VerificationReport) -> bool:
            return r.ok and r.payments_in == stream.payments and r.payments_missing == 0

        report = verified(hub, stream.customer_nos, settled, DEADLINE_S)
        print(report.summary())
        ends = partition_ends(hub.bootstrap, INPUTS)
        deadline = time.monotonic() + DEADLINE_S
        while not watch.offsets or any(watch.offsets[-1][1].get(tp, -1) < end for tp, end in ends.items()):
            assert time.monotonic() < deadline, f"committed {watch.offsets[-1][1] if watch.offsets else None}"
            time.sleep(SAMPLE_EVERY_S)  # poll interval while the last commits land
    finally:
        watch.stop()
        hub.kill(second.name)
        hub.children = [c for c in hub.children if c is not second]
        assert second.proc is None
    watch.check()

    assert report.problems == {}, report.summary()
    assert report.payments_in == stream.payments
    assert report.enrollments_in == len(stream.enrolled)
    assert report.money_in_idr == stream.money_in_idr == report.money_recorded_idr
    assert report.core_duplicates == 0 and report.contradictions == 0 and report.payments_credited_twice == 0
    assert [f.child for f in faults] == victims

    # Committed offsets only move forward, partition by partition, through every rebalance ...
    for (t0, earlier), (t1, later) in zip(watch.offsets, watch.offsets[1:], strict=False):
        for tp, offset in earlier.items():
            assert later.get(tp, -1) >= offset, f"{tp} committed {offset} at t={t0:.1f}s, {later.get(tp)} at {t1:.1f}s"
    # ... advance after each restart (the load goes on past the last one) ...
    for fault in faults:
        back = killer_at + fault.restarted_at_s
        before = [s for t, s in watch.offsets if t <= back]
        after = [s for t, s in watch.offsets if t > back]
        assert before and after and total(after[-1]) > total(before[-1]), f"no progress after {fault}"
    # ... and reach the end of the input.
    final = watch.offsets[-1][1]
    assert all(final.get(tp, -1) == end for tp, end in ends.items()), f"committed {final}, ends {ends}"
    print(f"committed offsets: {total(watch.offsets[0][1])} → {total(final)} over {len(watch.offsets)} samples")
    # Both workers held partitions (each was the owner of some part of the input at some point).
    assert all(watch.owned.get(name) for name in ports), watch.owned
    print(f"partitions owned at some point: {watch.owned}")
