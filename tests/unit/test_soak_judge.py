"""The soak's verdict (services/domain/soak.py) and the driver's pure helpers (services/soak.py)."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest

from services.domain.soak import MIB, Bounds, Sample, drained_at, judge, lag_slope_bound, slope
from services.soak import joins, rss_bytes, short, stage_lag

BOUNDS = Bounds(lag_slope_per_s=5.0, drain_s=60.0)
HUB = ("worker-reconcile", "api-bank")


def run(
    load_s: float = 60.0,
    every_s: float = 5.0,
    rss: Callable[[str, float], int] = lambda p, t: 100 * MIB,
    lag: Callable[[float], int] = lambda t: 50 if t <= 60 else 0,
    after_s: float = 10.0,
    pids: Callable[[str, float], int] = lambda p, t: 1000 + len(p),
) -> list[Sample]:
    out = []
    t = 0.0
    while t <= load_s + after_s:
        out.append(
            Sample(
                at_s=t,
                rss={p: rss(p, t) for p in HUB},
                lag={"reconcile": lag(t), "raw:sinergi-normalize_payments": lag(t)},
                produced=int(min(t, load_s) * 100),
                pids={p: pids(p, t) for p in HUB},
            )
        )
        t += every_s
    return out


def test_a_flat_run_passes_and_reports_every_process_and_series() -> None:
    verdict = judge(run(), load_s=60.0, warmup_s=15.0, bounds=BOUNDS)
    assert verdict.ok, verdict.problems
    assert [f.process for f in verdict.rss] == sorted(HUB)
    assert all(f.growth == 0 for f in verdict.rss)
    assert {g.series for g in verdict.lag} == {"reconcile", "raw:sinergi-normalize_payments"}
    assert all(g.slope_per_s == pytest.approx(0.0) and g.drained and g.peak == 50 for g in verdict.lag)
    assert verdict.drained_after_s == 5.0


def test_memory_is_judged_from_the_first_sample_after_the_warm_up_not_from_the_start() -> None:
    # Start-up growth (imports, caches) in the first 15 s: not judged.
    def rss(p: str, t: float) -> int:
        return (40 + min(t, 14) * 10) * MIB if t < 15 else 180 * MIB

    assert judge(run(rss=rss), load_s=60.0, warmup_s=15.0, bounds=BOUNDS).ok


def test_growth_beyond_64_mib_fails_the_process_that_grew_only() -> None:
    def rss(p: str, t: float) -> int:
        return int((100 + (min(t, 60) * 1.5 if p == "worker-reconcile" else 0)) * MIB)  # +67.5 MiB from t=15 to t=60

    verdict = judge(run(rss=rss), load_s=60.0, warmup_s=15.0, bounds=BOUNDS)
    assert [p for p in verdict.problems if "RSS" in p] == [
        "worker-reconcile: RSS grew 67.5 MiB after the warm-up (allowed 64.0 MiB)"
    ]
    assert {f.process: f.ok for f in verdict.rss} == {"api-bank": True, "worker-reconcile": False}


def test_the_allowance_is_half_the_baseline_when_that_is_more_than_64_mib() -> None:
    def rss(p: str, t: float) -> int:
        return int((300 + min(t, 60) * 2) * MIB)  # baseline 330 MiB, +90 MiB: under 50 %

    verdict = judge(run(rss=rss), load_s=60.0, warmup_s=15.0, bounds=BOUNDS)
    assert verdict.ok, verdict.problems
    assert verdict.rss[0].allowed == 165 * MIB


def test_stateful_processes_are_allowed_their_state_per_member_and_no_more() -> None:
    def rss(p: str, t: float) -> int:
        return int((80 + min(t, 60) * 2) * MIB)  # +90 MiB over t=15..60, i.e. 4,500 events

    bounds = Bounds(state_bytes_per_member=20_000, stateful=frozenset({"worker-reconcile"}), drain_s=60.0)
    # 4,500 events * 0.5 members/event * 20,000 B = 42.9 MiB on top of the 64 MiB floor: enough.
    verdict = judge(run(rss=rss), load_s=60.0, warmup_s=15.0, bounds=bounds, members_per_event=0.5)
    assert [f.process for f in verdict.rss if not f.ok] == ["api-bank"]
    reconcile = next(f for f in verdict.rss if f.process == "worker-reconcile")
    assert reconcile.allowed == 64 * MIB + 2250 * 20_000


def test_a_lag_that_climbs_in_the_last_third_fails_even_if_it_drains_later() -> None:
    def lag(t: float) -> int:
        return int(max(0.0, t - 30) * 20) if t <= 60 else 0  # +20 messages/s from t=30

    verdict = judge(run(lag=lag), load_s=60.0, warmup_s=15.0, bounds=BOUNDS)
    assert not verdict.ok
    assert "reconcile: lag grew 20.0 messages/s over the last third of the load (bound 5.0/s)" in verdict.problems
    assert verdict.drained_after_s == 5.0


def test_a_lag_that_jumps_up_and_down_with_batches_is_not_growth() -> None:
    samples = run(lag=lambda t: (400 if int(t) % 10 == 0 else 0) if t < 60 else 0)
    verdict = judge(samples, load_s=60.0, warmup_s=15.0, bounds=BOUNDS)
    assert verdict.ok, verdict.problems


def test_a_lag_not_drained_within_the_deadline_fails() -> None:
    verdict = judge(run(lag=lambda t: 30, after_s=20.0), load_s=60.0, warmup_s=15.0, bounds=BOUNDS)
    assert verdict.drained_after_s is None
    assert any(p.startswith("lag not drained within 60 s") for p in verdict.problems)
    assert not any(g.drained for g in verdict.lag)


def test_drained_late_is_reported_with_its_time_and_fails_beyond_the_deadline() -> None:
    samples = run(lag=lambda t: 0 if t >= 130 else 10, after_s=80.0)  # drained 70 s after the load
    assert drained_at(samples, 60.0) == pytest.approx(70.0)
    assert not judge(samples, load_s=60.0, warmup_s=15.0, bounds=BOUNDS).ok
    assert judge(samples, load_s=60.0, warmup_s=15.0, bounds=Bounds(drain_s=90.0)).ok


def test_a_restarted_process_fails_the_run() -> None:
    verdict = judge(
        run(pids=lambda p, t: 2 if (p == "api-bank" and t > 30) else 1), load_s=60.0, warmup_s=15.0, bounds=BOUNDS
    )
    assert verdict.problems == ["api-bank: restarted during the run (pid changed)"]


def test_too_few_samples_is_a_problem_not_a_pass() -> None:
    verdict = judge(run(every_s=50.0), load_s=60.0, warmup_s=15.0, bounds=BOUNDS)
    assert any("too few samples" in p for p in verdict.problems)


def test_slope_and_its_bound() -> None:
    assert slope([(0, 0), (1, 2), (2, 4)]) == pytest.approx(2.0)
    assert slope([(5, 1)]) is None and slope([(1, 1), (1, 3)]) is None
    assert lag_slope_bound(100) == 10.0 and lag_slope_bound(1000) == 50.0


def test_stage_lag_sums_partitions_per_stage_from_a_metrics_page() -> None:
    page = "\n".join(
        [
            "# HELP sinergi_consumer_lag_messages Messages waiting",
            "# TYPE sinergi_consumer_lag_messages gauge",
            'sinergi_consumer_lag_messages{partition="0",stage="reconcile",topic="payments.v1"} 12.0',
            'sinergi_consumer_lag_messages{partition="1",stage="reconcile",topic="enrollments.v1"} 3.0',
            'sinergi_consumer_commit_age_seconds{partition="1",stage="reconcile",topic="enrollments.v1"} 3.0',
        ]
    )
    assert stage_lag(page) == {"reconcile": 15}
    assert stage_lag("") == {}


def test_rss_of_this_process_and_of_none() -> None:
    mine = rss_bytes(os.getpid())
    assert mine is not None and mine > 10 * MIB
    assert rss_bytes(2**22 + 7) is None  # above pid_max's default: no such process


def test_joins_counts_group_joins_in_each_log(tmp_path: os.PathLike[str]) -> None:
    from pathlib import Path

    log_dir = Path(tmp_path)
    (log_dir / "worker-reconcile.log").write_text("x Joined group 'a' (generation 1)\ny\nJoined group 'a'\n")
    assert joins(log_dir, ["worker-reconcile", "api-bank"]) == {"worker-reconcile": 2, "api-bank": 0}


def test_column_titles_are_short() -> None:
    assert short("worker-normalize_enrollments") == "nor_enr"
    assert short("raw:sinergi-normalize_payments") == "raw:nor_pay"
    assert short("api-bank") == "api-bank"


def test_memory_is_judged_at_the_end_of_the_run_so_growth_during_the_drain_counts() -> None:
    def rss(p: str, t: float) -> int:
        return (100 + (70 if t > 60 else 0)) * MIB  # a hub that was behind builds its state after the load

    verdict = judge(run(rss=rss), load_s=60.0, warmup_s=15.0, bounds=BOUNDS)
    assert {f.process for f in verdict.rss if not f.ok} == set(HUB)
