"""Issue 7, item 2: a mixed stream (enrollments, payments of every case, the banks' statement files) while
every processor is SIGKILLed in turn at a random point and restarted after a random pause; the verifier then
finds nothing missing, nothing duplicated (on the core topic either: the core publisher recovers what it
forwarded), the rupiah in equal to the rupiah recorded, and every statement entry accounted for: each entry
naming a notified payment decided exactly once (a decision re-sent after a crash is the same decision), the
credits no notification explains waiting for their day's close (hours away), and no entry or payment
decided twice. Seed: SINERGI_TEST_SEED; every fault is printed with its time.

`make test` runs it on about 10,000 events (3,000 members) to stay within CI's time; `make chaos` on about
52,000 (SINERGI_CHAOS_MEMBERS=15500, about 3.4 events per member with the statements).
"""

from __future__ import annotations

import os
import random
from datetime import UTC, datetime

import pytest
from chaos import Killer, produce_paced, verified

from services.domain.verification import VerificationReport
from services.simulation.backlog import build_mixed_stream
from services.supervisor import Supervisor

pytestmark = pytest.mark.integration

MEMBERS = int(os.environ.get("SINERGI_CHAOS_MEMBERS", "3000"))  # about 3.3 raw records each
PRODUCE_S = max(20.0, MEMBERS / 400)  # a steady ~500 (make test) to ~1,300 (make chaos) events/s
PROCESSORS = (
    "worker-normalize_enrollments",
    "worker-normalize_payments",
    "worker-normalize_statements",
    "worker-reconcile",
    "worker-core_publisher",
    "worker-reconcile_statements",
    "worker-notify_kbri",
)
DEADLINE_S = 240.0 + MEMBERS / 50


@pytest.mark.timeout(int(DEADLINE_S + PRODUCE_S + 240))
def test_every_processor_killed_in_turn_loses_and_duplicates_nothing(hub: Supervisor) -> None:
    seed = int(os.environ.get("SINERGI_TEST_SEED") or random.SystemRandom().randrange(1 << 31))
    rng = random.Random(seed)
    stream = build_mixed_stream(hub.settings, MEMBERS, seed, datetime.now(UTC), statements=True)
    statements = stream.statements
    assert statements is not None
    print(f"seed={seed} events={stream.events} payments={stream.payments} cases={stream.cases}")
    print(
        f"statement files={statements.files} formats={statements.formats} entries={statements.entries} "
        f"decided at once={statements.decided_at_once} waiting for close={statements.waiting_for_close} "
        f"breaks={statements.breaks}"
    )
    assert stream.events >= MEMBERS * 3
    assert statements.entries > 0.9 * stream.payments and statements.breaks["AMOUNT_MISMATCH"] > 0

    order = list(PROCESSORS)
    rng.shuffle(order)
    killer = Killer(hub, order, len(order), (2.0, PRODUCE_S), (0.5, 5.0), rng).start()
    took = produce_paced(hub.bootstrap, stream.records, PRODUCE_S)
    faults = killer.join(timeout_s=PRODUCE_S + 60)
    print(f"produced {stream.events} records in {took:.1f}s")

    def settled(r: VerificationReport) -> bool:
        return (
            r.ok
            and r.payments_in == stream.payments
            and r.payments_missing == 0
            and r.statement_entries_in == statements.entries
            and r.statement_entries_decided == statements.decided_at_once
        )

    report = verified(hub, stream.customer_nos, settled, DEADLINE_S, entry_ids=statements.entry_ids)
    print(report.summary())
    assert report.problems == {}, report.summary()
    assert report.payments_in == stream.payments
    assert report.enrollments_in == len(stream.enrolled)
    assert report.money_in_idr == stream.money_in_idr == report.money_recorded_idr
    assert report.core_duplicates == 0 and report.contradictions == 0 and report.payments_credited_twice == 0
    # every entry in is decided or waits for its day's close; none decided twice, none contradictory
    assert report.statement_entries_in == statements.entries
    assert report.statement_entries_decided == statements.decided_at_once
    assert report.statement_entries_broken == statements.breaks["AMOUNT_MISMATCH"]
    assert report.statement_entries_waiting == statements.waiting_for_close
    assert report.statement_entries_dead_lettered == 0 and report.statement_entries_undecided == 0
    assert report.statement_entries_decided_twice == 0 and report.statement_payments_decided_twice == 0
    assert report.statement_decisions_contradictory == 0
    assert sorted(f.child for f in faults) == sorted(PROCESSORS)
