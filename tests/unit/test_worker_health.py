"""The stall decision (pure), the readiness checks and the probe WSGI app in front of /metrics."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any
from wsgiref.util import setup_testing_defaults

import pytest
from prometheus_client import CollectorRegistry, Counter, make_wsgi_app

from services import metrics
from services.worker_health import PartitionOffsets, StallDetector, WorkerHealth, _highwater, probe_app

STALL = 10.0


def po(committed: int, highwater: int, partition: int = 0, topic: str = "t") -> PartitionOffsets:
    return PartitionOffsets(topic, partition, highwater, committed)


def test_no_lag_is_never_stalled_and_has_no_age() -> None:
    d = StallDetector(STALL)
    for now in (0.0, 100.0, 10_000.0):
        (st,) = d.update([po(5, 5)], now)
        assert (st.lag, st.commit_age_s, st.stalled) == (0, 0.0, False)


def test_lag_without_commit_advance_stalls_at_the_threshold() -> None:
    d = StallDetector(STALL)
    d.update([po(5, 8)], 100.0)
    (st,) = d.update([po(5, 9)], 109.9)
    assert (st.lag, st.stalled) == (4, False)
    assert st.commit_age_s == pytest.approx(9.9)
    (st,) = d.update([po(5, 9)], 110.0)
    assert st.stalled and st.commit_age_s == pytest.approx(10.0)


def test_a_commit_advance_resets_the_age_even_with_lag() -> None:
    d = StallDetector(STALL)
    d.update([po(5, 50)], 0.0)
    d.update([po(5, 50)], 9.0)
    (st,) = d.update([po(6, 50)], 12.0)  # slow, but moving: a backlog is not a stall
    assert (st.commit_age_s, st.stalled) == (0.0, False)
    (st,) = d.update([po(6, 50)], 21.9)
    assert not st.stalled
    (st,) = d.update([po(6, 50)], 22.0)
    assert st.stalled


def test_an_idle_partition_that_gets_a_message_starts_counting_then() -> None:
    d = StallDetector(STALL)
    d.update([po(5, 5)], 0.0)
    d.update([po(5, 5)], 3600.0)
    (st,) = d.update([po(5, 6)], 3601.0)  # one new message after an idle hour
    assert (st.commit_age_s, st.stalled) == (0.0, False)
    (st,) = d.update([po(5, 6)], 3611.0)
    assert st.stalled


def test_a_committed_offset_moving_backwards_is_movement() -> None:
    d = StallDetector(STALL)
    d.update([po(9, 20)], 0.0)
    (st,) = d.update([po(7, 20)], 30.0)  # a seek after a rebalance
    assert not st.stalled and st.commit_age_s == 0.0


def test_a_revoked_partition_is_forgotten_and_starts_fresh_when_assigned_again() -> None:
    d = StallDetector(STALL)
    d.update([po(5, 9, partition=0), po(1, 1, partition=1)], 0.0)
    states = d.update([po(1, 1, partition=1)], 5.0)
    assert [(s.partition, s.stalled) for s in states] == [(1, False)]
    (st,) = d.update([po(5, 9, partition=0)], 50.0)
    assert (st.commit_age_s, st.stalled) == (0.0, False)


def test_committed_beyond_highwater_is_no_lag() -> None:
    (st,) = StallDetector(STALL).update([po(12, 10)], 0.0)
    assert st.lag == 0 and not st.stalled


def test_partitions_are_independent() -> None:
    d = StallDetector(STALL)
    d.update([po(0, 3, partition=0), po(0, 3, partition=1)], 0.0)
    states = d.update([po(0, 3, partition=0), po(3, 3, partition=1)], 20.0)
    assert [(s.partition, s.lag, s.stalled) for s in states] == [(0, 3, True), (1, 0, False)]


def test_highwater_takes_the_larger_known_value() -> None:
    assert _highwater(1, 3) == 3  # Tansu lists a batch's end as base + 1; the fetch knows better
    assert _highwater(7, 3) == 7  # a paused partition's fetched highwater is stale
    assert _highwater(None, 4) == 4 and _highwater(4, None) == 4
    assert _highwater(None, None) is None and _highwater(-1, None) is None


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def healthy(stage: str) -> tuple[WorkerHealth, Clock]:
    clock = Clock()
    health = WorkerHealth(stage, STALL, interval_s=1.0, clock=clock)
    health.set_consuming(True)
    health.observe_offsets([po(3, 3)])
    return health, clock


def gauge(metric: Any, *labels: str) -> float:
    return float(metric.labels(*labels)._value.get())


def test_ready_only_when_every_check_holds_and_the_ready_gauge_follows() -> None:
    clock = Clock()
    health = WorkerHealth("unit_ready", STALL, interval_s=1.0, clock=clock)
    body = health.readiness()
    assert body["ready"] is False
    assert body["checks"] == {"loop": True, "consuming": False, "partitions": False, "agents": True}
    health.set_consuming(True)
    health.observe_offsets([po(3, 3)])
    assert health.readiness() == {
        "ready": True,
        "checks": {"loop": True, "consuming": True, "partitions": True, "agents": True},
        "stalled": [],
    }
    assert gauge(metrics.WORKER_READY, "unit_ready") == 1.0


def test_a_stalled_partition_fails_readiness_and_sets_the_gauges() -> None:
    health, clock = healthy("unit_stall")
    health.observe_offsets([po(3, 7)])
    clock.now += STALL
    health.beat()
    health.observe_offsets([po(3, 8)])
    body = health.readiness()
    assert body["ready"] is False and body["checks"]["partitions"] is False
    assert body["stalled"] == [{"topic": "t", "partition": 0, "lag": 5, "commit_age_s": STALL}]
    assert gauge(metrics.CONSUMER_STALLED_PARTITIONS, "unit_stall") == 1.0
    assert gauge(metrics.CONSUMER_LAG, "unit_stall", "t", "0") == 5.0
    assert gauge(metrics.CONSUMER_COMMIT_AGE, "unit_stall", "t", "0") == STALL
    assert gauge(metrics.WORKER_READY, "unit_stall") == 0.0
    health.observe_offsets([po(8, 8)])
    assert health.readiness()["ready"] is True
    assert gauge(metrics.CONSUMER_STALLED_PARTITIONS, "unit_stall") == 0.0
    assert gauge(metrics.CONSUMER_COMMIT_AGE, "unit_stall", "t", "0") == 0.0


def test_a_revoked_partition_leaves_the_lag_gauges() -> None:
    health, _ = healthy("unit_revoke")
    health.observe_offsets([po(1, 4, partition=0), po(1, 4, partition=1)])
    health.observe_offsets([po(1, 4, partition=1)])
    samples = {
        s.labels["partition"] for s in metrics.CONSUMER_LAG.collect()[0].samples if s.labels["stage"] == "unit_revoke"
    }
    assert samples == {"1"}


def test_a_crash_fails_readiness_for_the_stall_window_and_is_counted() -> None:
    health, clock = healthy("unit_crash")
    before = metrics.AGENT_CRASHES.labels("unit_crash")._value.get()
    health.record_crash()
    assert metrics.AGENT_CRASHES.labels("unit_crash")._value.get() == before + 1
    assert health.readiness()["checks"]["agents"] is False
    clock.now += STALL
    health.beat()
    health.observe_offsets([po(3, 3)])
    assert health.readiness()["ready"] is True
    health.record_crash(fatal=True)
    clock.now += 10 * STALL
    health.beat()
    health.observe_offsets([po(3, 3)])
    assert health.readiness()["checks"]["agents"] is False  # the app itself crashed: never ready again


def test_old_offsets_and_a_silent_loop_fail_the_checks() -> None:
    health, clock = healthy("unit_silent")
    clock.now += STALL + 1  # no sample since: the broker may be unreachable
    health.beat()
    assert health.readiness()["checks"]["partitions"] is False
    clock.now += health.liveness_timeout_s + 1
    assert health.alive() is False
    assert health.readiness()["checks"]["loop"] is False


def call(app: Any, path: str) -> tuple[str, dict[str, str], bytes]:
    environ: dict[str, Any] = {"PATH_INFO": path, "REQUEST_METHOD": "GET"}
    setup_testing_defaults(environ)
    environ["PATH_INFO"] = path
    seen: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        seen["status"], seen["headers"] = status, dict(headers)

    body: Iterable[bytes] = app(environ, start_response)
    return seen["status"], seen["headers"], b"".join(body)


def test_probe_paths_answer_json_and_everything_else_is_the_metrics_app_byte_for_byte() -> None:
    registry = CollectorRegistry()
    Counter("sinergi_unit_probe_total", "a counter", ["stage"], registry=registry).labels("x").inc(3)
    plain = make_wsgi_app(registry)
    health, clock = healthy("unit_http")
    app = probe_app(health, plain)

    status, headers, body = call(app, "/healthz")
    assert status.startswith("200") and headers["Content-Type"] == "application/json"
    assert json.loads(body) == {"status": "ok"}
    status, _, body = call(app, "/readyz")
    assert status.startswith("200") and json.loads(body)["ready"] is True

    for path in ("/metrics", "/"):
        assert call(app, path) == call(plain, path)

    health.record_crash()
    status, _, body = call(app, "/readyz")
    assert status.startswith("503") and json.loads(body)["checks"]["agents"] is False
    clock.now += health.liveness_timeout_s + 1
    status, _, body = call(app, "/healthz")
    assert status.startswith("503")
