"""services.bench_scaleout: the pure parts of the scale-out benchmark (issue 8, target 4).

What a run's outputs must be to count as exact, when two workers share the partitions evenly, how the rates and
their ratio are computed and printed, and how a worker's /metrics and the machine's CPU are read. The
measurement itself needs a broker and is run by `sinergi bench` (or /tmp drivers), never by `make test`.
"""

from __future__ import annotations

import math
import os
import socket
from collections import Counter
from types import ModuleType

import pytest

from services.bench_scaleout import (
    RUN_TOPICS,
    TARGET_RATIO,
    Expected,
    PhaseFigures,
    RunFigures,
    ScaleOutFigures,
    WorkerFigures,
    evenness_problems,
    judge_outputs,
    listening_pid,
    machine_busy_s,
    parse_worker_metrics,
    retarget,
    run_app_id,
    run_prefix,
    scale_ratio,
    shared_machine,
)
from services.catalogue import ENROLLMENTS, FX_RATES, MEMBERS, PAYMENTS
from services.domain.verification import ExceptionFact, RecordFact

RUN_TOPIC = "bench.scaleout.abc.2w.members.v1"
BILL = "2026-12-07T01:00:00+00:00"


def expected(pid: str, amount: int = 1_000) -> Expected:
    return Expected(pid, f"enr-{pid}", f"pay-{pid}", amount)


def rec(
    pid: str,
    version: int,
    *,
    status: str = "ACTIVE",
    paid: int = 1_000,
    payments: tuple[str, ...] | None = None,
    fingerprint: str = "",
) -> RecordFact:
    return RecordFact(
        topic=RUN_TOPIC,  # the run's copy of members.v1: judged as members.v1
        participant_id=pid,
        version=version,
        status=status,
        paid_amount_idr=paid,
        record_id=f"{pid}:{version}",
        enrollment_event_id=f"enr-{pid}",
        bill_issued_at=BILL,
        payment_event_ids=(f"pay-{pid}",) if payments is None else payments,
        fingerprint=fingerprint,
    )


def paid_in_two_steps(pid: str) -> list[RecordFact]:
    """Enrollment first: AWAITING_PAYMENT (v1), then the payment makes it ACTIVE (v2)."""
    return [rec(pid, 1, status="AWAITING_PAYMENT", paid=0, payments=()), rec(pid, 2)]


def held_first(pid: str) -> tuple[RecordFact, ExceptionFact]:
    """Payment first (held, with an exception), then the enrollment: ACTIVE at once (v1)."""
    held = ExceptionFact(f"x-{pid}", pid, "PAYMENT_BEFORE_ENROLLMENT", f"pay-{pid}", 1_000)
    return rec(pid, 1), held


# --- judge_outputs ---------------------------------------------------------------------------------------------


def test_every_member_active_with_its_payment_is_exact_whatever_the_order_of_enrollment_and_payment() -> None:
    want = {p: expected(p) for p in ("a", "b")}
    active_b, held_b = held_first("b")

    j = judge_outputs(want, [*paid_in_two_steps("a"), active_b], [held_b])

    assert j.ok, j.problems
    assert (j.members, j.exact, j.missing, j.wrong_final, j.records, j.repeats) == (2, 2, 0, 0, 3, 0)
    assert j.exceptions == Counter({"PAYMENT_BEFORE_ENROLLMENT": 1})
    assert j.verifier == {}  # no core publisher runs: core_missing is not asked


def test_a_record_sent_again_with_the_same_bytes_is_a_repeat_not_a_fault() -> None:
    records = [*paid_in_two_steps("a"), rec("a", 2)]  # v2 again: an at-least-once re-send

    j = judge_outputs({"a": expected("a")}, records, [])

    assert j.ok, j.problems
    assert (j.repeats, j.contradictions, j.records) == (1, 0, 3)


def test_the_same_record_id_with_other_content_is_contradictory() -> None:
    records = [*paid_in_two_steps("a"), rec("a", 2, paid=2_000, fingerprint="other")]

    j = judge_outputs({"a": expected("a")}, records, [])

    assert not j.ok
    assert j.contradictions == 1
    assert any("other content" in p for p in j.problems)
    assert j.verifier.get("contradictions") == 1


def test_a_member_without_any_record_is_missing_and_its_payment_too() -> None:
    want = {p: expected(p) for p in ("a", "b")}

    j = judge_outputs(want, paid_in_two_steps("a"), [])

    assert (j.exact, j.missing) == (1, 1)
    assert "1 of 2 members have no record" in j.problems
    assert j.verifier["payments_missing"] == 1
    assert j.verifier["enrollments_missing"] == 1


def test_a_member_left_awaiting_payment_is_not_exact() -> None:
    only_v1 = paid_in_two_steps("a")[:1]

    j = judge_outputs({"a": expected("a")}, only_v1, [])

    assert (j.exact, j.wrong_final) == (0, 1)
    assert not j.ok


def test_the_highest_version_decides_even_when_an_older_one_arrives_last() -> None:
    # v1 after v2 with the content v1 always had is no fault: the final state is v2's.
    v1, v2 = paid_in_two_steps("a")

    j = judge_outputs({"a": expected("a")}, [v1, v2, v1], [])

    assert j.ok, j.problems
    assert (j.exact, j.repeats) == (1, 1)


def test_a_payment_credited_twice_or_another_amount_is_not_exact() -> None:
    twice = rec("a", 2, paid=2_000, payments=("pay-a", "pay-a"))
    short = rec("b", 2, paid=500)

    j = judge_outputs({p: expected(p) for p in ("a", "b")}, [twice, short], [])

    assert (j.exact, j.wrong_final) == (0, 2)
    assert j.verifier["payments_credited_twice"] == 1  # a: listed twice in one record
    assert j.verifier["bills_unbalanced"] == 1  # b: says 500 for a 1,000 payment


def test_records_of_participants_outside_the_backlog_are_a_problem() -> None:
    j = judge_outputs({"a": expected("a")}, [*paid_in_two_steps("a"), rec("stranger", 1)], [])

    assert j.unexpected == 1
    assert not j.ok


def test_nothing_expected_and_nothing_written_judges_nothing() -> None:
    j = judge_outputs({}, [], [])

    assert (j.members, j.records) == (0, 0)


# --- evenness ----------------------------------------------------------------------------------------------------


def test_two_workers_with_two_partitions_each_share_evenly() -> None:
    assert evenness_problems({"w1": {0, 2}, "w2": {1, 3}}, 4) == []


def test_an_odd_partition_count_may_differ_by_one() -> None:
    assert evenness_problems({"w1": {0, 1}, "w2": {2}}, 3) == []


def test_three_and_one_is_uneven() -> None:
    assert evenness_problems({"w1": {0, 1, 2}, "w2": {3}}, 4) == ["uneven shares: w1 3, w2 1"]


def test_a_worker_without_partitions_shares_nothing() -> None:
    problems = evenness_problems({"w1": {0, 1, 2, 3}, "w2": set()}, 4)

    assert "w2 owned no partition" in problems
    assert "uneven shares: w1 4, w2 0" in problems


def test_a_partition_owned_twice_or_by_nobody_is_reported() -> None:
    problems = evenness_problems({"w1": {0, 1}, "w2": {1, 2}}, 4)

    assert "partitions [1] owned by more than one worker" in problems
    assert "partitions [3] owned by no worker" in problems


# --- rates -------------------------------------------------------------------------------------------------------


def test_a_runs_rate_is_its_events_over_the_time_its_phases_spent_working() -> None:
    run = run_figures(2, 15.0)

    assert run.seconds == 15.0
    assert run.rate == pytest.approx(20_000 / 15.0)


def test_a_run_that_stopped_after_one_phase_has_no_rate() -> None:
    run = run_figures(2, 15.0)
    run.phases = run.phases[:1]

    assert math.isnan(run.rate)


def test_a_worker_is_summed_over_the_phases() -> None:
    run = run_figures(2, 15.0)

    assert [(w.name, w.partitions, w.consumed) for w in run.per_worker] == [
        ("w0", (0, 2), 10_000),
        ("w1", (1, 3), 10_000),
    ]
    assert run.workers_cpu_s == pytest.approx(2 * 0.9 * 15.0)
    assert run.redelivered == 0


def test_the_ratio_is_two_workers_over_one() -> None:
    assert scale_ratio(800.0, 1_200.0) == 1.5
    assert math.isnan(scale_ratio(0.0, 1_200.0))
    assert math.isnan(scale_ratio(math.nan, 1_200.0))
    assert math.isnan(scale_ratio(800.0, math.nan))


# --- worker metrics, machine CPU, the broker's process -------------------------------------------------------------

METRICS = """\
# HELP sinergi_events_in_total Events consumed by a stage
# TYPE sinergi_events_in_total counter
sinergi_events_in_total{stage="reconcile",topic="bench.scaleout.abc.2w.enrollments.v1"} 4870.0
sinergi_events_in_total{stage="reconcile",topic="bench.scaleout.abc.2w.payments.v1"} 5012.0
sinergi_events_in_total{stage="other",topic="x"} 7.0
sinergi_events_in_created{stage="reconcile",topic="bench.scaleout.abc.2w.payments.v1"} 1.7650e+09
sinergi_events_out_total{stage="reconcile",topic="bench.scaleout.abc.2w.members.v1"} 7210.0
sinergi_events_out_total{stage="reconcile",topic="bench.scaleout.abc.2w.reconciliation.exceptions.v1"} 3301.0
sinergi_consumer_lag_messages{partition="3",stage="reconcile",topic="bench.scaleout.abc.2w.enrollments.v1"} 12.0
sinergi_consumer_lag_messages{partition="1",stage="reconcile",topic="bench.scaleout.abc.2w.enrollments.v1"} 0.0
sinergi_consumer_lag_messages{partition="1",stage="reconcile",topic="bench.scaleout.abc.2w.payments.v1"} 0.0
sinergi_consumer_lag_messages{partition="0",stage="reconcile",topic="bench.scaleout.abc.1w.enrollments.v1"} 0.0
"""


def test_a_workers_metrics_give_its_counts_and_its_assignment() -> None:
    sample = parse_worker_metrics(METRICS, "reconcile", "bench.scaleout.abc.2w.enrollments.v1")

    assert (sample.consumed, sample.produced) == (9_882, 10_511)
    assert sample.partitions == frozenset({1, 3})


def test_a_worker_that_has_not_started_reports_nothing() -> None:
    sample = parse_worker_metrics("# nothing yet\n", "reconcile", "t")

    assert (sample.consumed, sample.produced, sample.partitions) == (0, 0, frozenset())


def test_machine_busy_time_leaves_out_idle_and_iowait() -> None:
    stat = "cpu  100 20 30 1000 50 5 5 10 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n"

    busy = machine_busy_s(stat)

    assert busy == pytest.approx((100 + 20 + 30 + 5 + 5 + 10) / os.sysconf("SC_CLK_TCK"))
    assert machine_busy_s("garbage") is None


def test_the_process_listening_on_a_loopback_port_is_found() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]

        assert listening_pid(port) == os.getpid()
    assert listening_pid(port) is None


# --- run scoping ------------------------------------------------------------------------------------------------------


def test_a_run_renames_exactly_the_reconcilers_topics_in_the_module_it_is_given() -> None:
    fake = ModuleType("fake_reconcile")
    for spec in RUN_TOPICS:
        setattr(fake, f"SPEC_{spec.name}", spec)
    fake.FX_RATES = FX_RATES  # type: ignore[attr-defined]

    renamed = retarget(fake, run_prefix("abc", 2))

    assert renamed == {spec.name: f"bench.scaleout.abc.2w.{spec.name}" for spec in RUN_TOPICS}
    assert getattr(fake, f"SPEC_{ENROLLMENTS.name}").name == "bench.scaleout.abc.2w.enrollments.v1"
    assert getattr(fake, f"SPEC_{MEMBERS.name}").compacted is False  # every record counted, re-sends too
    assert getattr(fake, f"SPEC_{PAYMENTS.name}").value_schema == PAYMENTS.value_schema
    assert fake.FX_RATES is FX_RATES  # shared reference data stays shared
    assert MEMBERS.name == "members.v1"  # the catalogue itself is untouched


def test_a_module_naming_its_topics_otherwise_is_not_retargeted() -> None:
    assert retarget(ModuleType("empty"), run_prefix("abc", 1)) == {}


def test_each_run_has_its_own_topics_and_group_and_one_prefix_covers_both() -> None:
    assert run_prefix("abc", 1) != run_prefix("abc", 2)
    assert run_app_id("abc", 1) != run_app_id("abc", 2)
    assert run_prefix("abc", 1).startswith(run_prefix("abc"))
    assert run_app_id("abc", 2).startswith(run_app_id("abc"))
    assert not run_app_id("abc", 1).startswith("sinergi-reconcile")  # never the hub's own group


# --- figures --------------------------------------------------------------------------------------------------------


def run_figures(workers: int, seconds: float, *, others: float = 0.0) -> RunFigures:
    """Two phases of equal length; each worker busy ~0.9 core, the broker 0.2, this process 0.01."""
    phases = []
    for name in ("enrollments", "payments"):
        half = seconds / 2
        per = [
            WorkerFigures(f"w{i}", (i, i + 2) if workers == 2 else (0, 1, 2, 3), 5_000 * 2 // workers, 0.9 * half, half)
            for i in range(workers)
        ]
        phases.append(
            PhaseFigures(
                name,
                10_000,
                half,
                6.0,
                per,
                broker_cpu_s=0.2 * half,
                bench_cpu_s=0.01 * half,
                machine_cpu_s=(0.9 * workers + 0.21 + others) * half,
            )
        )
    return RunFigures(workers=workers, events=20_000, phases=phases)


def test_other_processes_cpu_is_what_the_machine_spent_beyond_the_measurement() -> None:
    quiet, busy = run_figures(2, 10.0), run_figures(2, 10.0, others=0.8)

    assert quiet.others_cpu_s == pytest.approx(0.0, abs=1e-9)
    assert busy.others_cpu_s == pytest.approx(8.0)
    assert not shared_machine(quiet)
    assert shared_machine(busy)


def test_the_printed_figures_give_both_rates_the_ratio_and_the_verdict() -> None:
    one, two = run_figures(1, 25.0), run_figures(2, 15.0)
    figures = ScaleOutFigures("reconcile", one.rate, two.rate, scale_ratio(one.rate, two.rate), True, [], [one, two])
    figures.events, figures.partitions = 20_000, 4

    lines = figures.lines()
    text = "\n".join(lines)

    assert all(line.startswith(" " * 6) for line in lines)
    assert "1 worker :   20,000 in  25.00 s =     800 events/s" in text
    assert f"= 1.67x one worker (target >= {TARGET_RATIO:.1f}x: met)" in text
    assert "w1: partitions 1,3, 10,000 events, consuming for 15.0 s, 0.90 core" in text
    assert "enrollments 10,000 in 7.50 s (1,333/s, first input 6.0 s after the spawn)" in text
    assert "verified exact: yes" in text
    assert figures.target_met


def test_a_ratio_below_the_target_and_problems_are_printed_as_such() -> None:
    one, two = run_figures(1, 25.0), run_figures(2, 20.0)
    ratio = scale_ratio(one.rate, two.rate)
    figures = ScaleOutFigures("reconcile", one.rate, two.rate, ratio, False, ["2 worker(s): uneven shares"], [one, two])

    text = "\n".join(figures.lines())

    assert not figures.target_met
    assert "NOT met" in text
    assert "verified exact: NO" in text
    assert "scale-out PROBLEM: 2 worker(s): uneven shares" in text


def test_figures_of_a_run_that_never_finished_still_print() -> None:
    figures = ScaleOutFigures("reconcile", math.nan, math.nan, math.nan, False, ["nothing consumed"])

    assert "scale-out PROBLEM: nothing consumed" in "\n".join(figures.lines())
    assert not figures.target_met
