"""The status page's aggregation: /metrics text in, status model out (rates from two scrapes)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from services.config import Settings
from services.metrics import LATENCY_BUCKETS
from services.status_page import (
    Collector,
    Inputs,
    Scrape,
    Target,
    build_status,
    create_status_app,
    parse_samples,
    quantile,
    targets,
)
from services.supervisor import plan

NOW = datetime(2026, 12, 2, 5, 0, tzinfo=UTC)


class Process:
    """One hub process's metrics, registered under the names services/metrics.py uses."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.events_in = Counter("sinergi_events_in_total", "", ["stage", "topic"], registry=r)
        self.events_out = Counter("sinergi_events_out_total", "", ["stage", "topic"], registry=r)
        self.dead = Counter("sinergi_dead_letters_total", "", ["stage", "reason"], registry=r)
        self.latency = Histogram(
            "sinergi_processing_latency_seconds", "", ["stage"], buckets=LATENCY_BUCKETS, registry=r
        )
        self.unmatched = Gauge("sinergi_reconcile_unmatched_payments", "", ["kind"], registry=r)
        self.unmatched_idr = Gauge("sinergi_reconcile_unmatched_value_idr", "", ["kind"], registry=r)
        self.ageing = Gauge("sinergi_reconcile_exception_ageing_payments", "", ["age"], registry=r)
        self.deliveries = Counter("sinergi_webhook_deliveries_total", "", ["office", "outcome"], registry=r)
        self.backlog = Gauge("sinergi_webhook_backlog", "", ["office"], registry=r)
        self.disabled = Gauge("sinergi_webhook_endpoint_disabled", "", ["office"], registry=r)
        self.lag = Gauge("sinergi_office_feed_lag_updates", "", ["office"], registry=r)
        self.requests = Counter(
            "sinergi_http_requests_total", "", ["api", "endpoint", "partner", "outcome"], registry=r
        )

    def scrape(self, at: float, ready: bool | None = None) -> Scrape:
        return Scrape(at, up=True, samples=parse_samples(generate_latest(self.registry).decode()), ready=ready)


def status(history: dict[str, list[Scrape]], **kw: object) -> dict[str, object]:
    names = list(history)
    inp = Inputs(
        targets=[Target(n, "worker", f"http://127.0.0.1/{n}", None) for n in names],
        history=history,
        stages=kw.pop("stages", ["normalize_payments", "reconcile"]),  # type: ignore[arg-type]
        offices=kw.pop("offices", ["KBRI_KUALA_LUMPUR", "KDEI_TAIPEI"]),  # type: ignore[arg-type]
        feed_positions=kw.pop("feed_positions", {}),  # type: ignore[arg-type]
        now=NOW,
    )
    return build_status(inp)


def by(rows: object, key: str) -> dict[str, dict[str, object]]:
    assert isinstance(rows, list)
    return {row[key]: row for row in rows}


def test_parse_keeps_only_sinergi_samples_with_their_labels() -> None:
    p = Process()
    p.events_in.labels("reconcile", "payments.v1").inc(3)
    text = generate_latest(p.registry).decode() + "process_cpu_seconds_total 12.5\n"
    samples = {(s.name, s.labels): s.value for s in parse_samples(text)}
    assert samples[("sinergi_events_in_total", (("stage", "reconcile"), ("topic", "payments.v1")))] == 3.0
    assert not any(name.startswith("process_") for name, _ in samples)


def test_rates_come_from_two_scrapes_and_totals_from_the_latest() -> None:
    p = Process()
    p.events_in.labels("reconcile", "enrollments.v1").inc(100)
    p.events_in.labels("reconcile", "payments.v1").inc(20)
    p.events_out.labels("reconcile", "members.v1").inc(90)
    first = p.scrape(at=1000.0)
    p.events_in.labels("reconcile", "enrollments.v1").inc(40)
    p.events_in.labels("reconcile", "payments.v1").inc(10)
    p.events_out.labels("reconcile", "members.v1").inc(30)
    out = status({"worker-reconcile": [first, p.scrape(at=1010.0)]})
    stage = by(out["stages"], "stage")["reconcile"]
    assert stage["events_in"] == 170 and stage["in_per_s"] == 5.0  # (40 + 10) / 10 s, topics summed
    assert stage["events_out"] == 120 and stage["out_per_s"] == 3.0
    assert out["window_s"] == 10.0
    idle = by(out["stages"], "stage")["normalize_payments"]  # configured stage, nothing seen: still a row
    assert idle["events_in"] == 0 and idle["in_per_s"] is None


def test_one_scrape_gives_totals_but_no_rate() -> None:
    p = Process()
    p.events_in.labels("reconcile", "payments.v1").inc(7)
    stage = by(status({"w": [p.scrape(at=5.0)]})["stages"], "stage")["reconcile"]
    assert stage["events_in"] == 7 and stage["in_per_s"] is None


def test_a_restarted_process_counts_from_zero_never_a_negative_rate() -> None:
    before, after = Process(), Process()
    before.events_in.labels("reconcile", "payments.v1").inc(500)
    after.events_in.labels("reconcile", "payments.v1").inc(20)  # the same process, restarted
    stage = by(status({"w": [before.scrape(at=0.0), after.scrape(at=10.0)]})["stages"], "stage")["reconcile"]
    assert stage["events_in"] == 20 and stage["in_per_s"] == 2.0


def test_processes_are_summed_and_a_failed_scrape_is_down_but_keeps_no_rate_of_its_own() -> None:
    a, b = Process(), Process()
    a.events_in.labels("notify_kbri", "members.v1").inc(10)
    b.events_in.labels("notify_kbri", "members.v1").inc(4)
    a0, b0 = a.scrape(at=0.0), b.scrape(at=0.0, ready=True)
    a.events_in.labels("notify_kbri", "members.v1").inc(20)
    history = {"a": [a0, a.scrape(at=4.0)], "b": [b0, Scrape(4.0, up=False)]}
    out = status(history, stages=["notify_kbri"])
    stage = by(out["stages"], "stage")["notify_kbri"]
    assert stage["events_in"] == 34  # b's last good scrape still counts
    assert stage["in_per_s"] == 5.0  # a: 20 in 4 s; b has only one good scrape
    procs = by(out["processes"], "name")
    assert procs["a"]["up"] is True and procs["b"]["up"] is False and procs["b"]["ready"] is None


def test_readiness_is_passed_through_as_true_false_or_unknown() -> None:
    p = Process()
    out = status({"r": [p.scrape(0.0, ready=True)], "n": [p.scrape(0.0, ready=False)], "u": [p.scrape(0.0)]})
    procs = by(out["processes"], "name")
    assert (procs["r"]["ready"], procs["n"]["ready"], procs["u"]["ready"]) == (True, False, None)


def test_quantile_interpolates_inside_the_bucket_like_histogram_quantile() -> None:
    buckets = {0.01: 0.0, 0.1: 50.0, 1.0: 100.0, float("inf"): 100.0}
    assert quantile(0.5, buckets) == pytest.approx(0.1)
    assert quantile(0.25, buckets) == pytest.approx(0.01 + 0.09 * 0.5)
    assert quantile(0.99, buckets) == pytest.approx(0.1 + 0.9 * 0.98)
    assert quantile(0.99, {0.1: 1.0, float("inf"): 2.0}) == 0.1  # beyond the last finite bound
    assert quantile(0.5, {0.1: 0.0, float("inf"): 0.0}) is None


def test_latency_is_over_the_window_when_something_was_observed_in_it() -> None:
    p = Process()
    for _ in range(100):
        p.latency.labels("reconcile").observe(4.0)  # slow, before the window
    first = p.scrape(0.0)
    for _ in range(10):
        p.latency.labels("reconcile").observe(0.003)
    stage = by(status({"w": [first, p.scrape(10.0)]})["stages"], "stage")["reconcile"]
    assert 0.0025 < stage["latency_p50_s"] <= 0.005 and stage["latency_p99_s"] <= 0.005  # type: ignore[operator]
    assert stage["latency_recent"] is True
    idle = by(status({"w": [first, first]})["stages"], "stage")["reconcile"]  # nothing new: since start
    assert 2.5 < idle["latency_p50_s"] <= 5.0 and idle["latency_recent"] is False  # type: ignore[operator]


def test_dead_letters_by_stage_and_reason() -> None:
    p = Process()
    p.dead.labels("normalize_enrollments", "INVALID_JSON").inc(2)
    first = p.scrape(0.0)
    p.dead.labels("normalize_enrollments", "INVALID_JSON").inc(3)
    p.dead.labels("normalize_payments", "UNKNOWN_BANK").inc(1)
    out = status({"w": [first, p.scrape(5.0)]})
    rows = {(d["stage"], d["reason"]): d for d in out["dead_letters"]}  # type: ignore[attr-defined]
    assert rows[("normalize_enrollments", "INVALID_JSON")]["count"] == 5
    assert rows[("normalize_enrollments", "INVALID_JSON")]["per_s"] == 0.6
    assert rows[("normalize_payments", "UNKNOWN_BANK")]["count"] == 1
    assert by(out["stages"], "stage")["normalize_enrollments"]["dead_letters"] == 5


def test_reconciliation_exceptions_are_integer_rupiah_with_every_age_bucket() -> None:
    p = Process()
    p.unmatched.labels("HELD").set(3)
    p.unmatched_idr.labels("HELD").set(1_110_000)
    p.unmatched.labels("FX_HELD").set(1)
    p.unmatched_idr.labels("FX_HELD").set(370_000)
    p.ageing.labels("LT_1D").set(3)
    p.ageing.labels("GE_30D").set(1)
    rec = status({"w": [p.scrape(0.0)]})["reconciliation"]
    assert isinstance(rec, dict)
    assert rec["unmatched"] == [
        {"kind": "FX_HELD", "payments": 1, "value_idr": 370_000},
        {"kind": "HELD", "payments": 3, "value_idr": 1_110_000},
    ]
    assert rec["unmatched_value_idr"] == 1_480_000 and isinstance(rec["unmatched_value_idr"], int)
    assert [a["age"] for a in rec["ageing"]] == ["LT_1D", "1D_7D", "7D_30D", "GE_30D"]
    assert [a["payments"] for a in rec["ageing"]] == [3, 0, 0, 1]


def test_every_configured_office_has_a_row_with_feed_and_webhook_health() -> None:
    webhooks, kbri = Process(), Process()
    webhooks.deliveries.labels("KDEI_TAIPEI", "delivered").inc(8)
    webhooks.deliveries.labels("KDEI_TAIPEI", "dead_lettered").inc(1)
    webhooks.backlog.labels("KDEI_TAIPEI").set(4)
    webhooks.disabled.labels("KDEI_TAIPEI").set(1)
    kbri.lag.labels("KDEI_TAIPEI").set(12)
    out = status(
        {"webhooks": [webhooks.scrape(0.0)], "api-kbri": [kbri.scrape(0.0)]},
        feed_positions={"KDEI_TAIPEI": 42, "KBRI_KUALA_LUMPUR": 0},
    )
    offices = by(out["offices"], "office")
    assert list(offices) == ["KBRI_KUALA_LUMPUR", "KDEI_TAIPEI"]
    tpe = offices["KDEI_TAIPEI"]
    assert tpe["feed_position"] == 42 and tpe["webhook_backlog"] == 4 and tpe["endpoint_disabled"] is True
    assert tpe["deliveries"]["delivered"] == 8 and tpe["deliveries"]["dead_lettered"] == 1  # type: ignore[index]
    assert tpe["feed_lag"] == 12 and tpe["topic"] == "kbri.updates.KDEI_TAIPEI.v1"
    kl = offices["KBRI_KUALA_LUMPUR"]
    assert kl["feed_lag"] is None  # never polled: unknown, not zero
    assert kl["endpoint_disabled"] is False and kl["deliveries"]["delivered"] == 0  # type: ignore[index]


def test_api_requests_by_api_with_4xx_and_5xx() -> None:
    p = Process()
    r = p.requests
    first = p.scrape(0.0)
    r.labels("bank", "payment", "MANDIRI", "accepted").inc(16)
    r.labels("bank", "inquiry", "BNI", "rejected").inc(2)
    r.labels("bank", "payment", "unknown", "unauthorized").inc(2)
    r.labels("bank", "payment", "BNI", "unavailable").inc(1)
    r.labels("kbri", "enrollments", "KDEI_TAIPEI", "error").inc(1)
    apis = by(status({"api": [first, p.scrape(2.0)]})["apis"], "api")
    bank = apis["bank"]
    assert (bank["requests"], bank["per_s"]) == (21, 10.5)
    assert (bank["client_errors"], bank["client_errors_per_s"]) == (4, 2.0)
    assert (bank["server_errors"], bank["server_errors_per_s"]) == (1, 0.5)
    assert (apis["kbri"]["requests"], apis["kbri"]["server_errors"], apis["kbri"]["client_errors"]) == (1, 1, 0)


def test_targets_are_the_supervisor_children_urls() -> None:
    settings = Settings(metrics_port_base=9500, statement_reconciliation_enabled=True)
    planned = {c.name: c.url for c in plan(settings, simulate=True, embedded_registry=True) if c.url}
    for t in targets(settings):
        if t.kind in ("worker", "webhooks"):
            assert planned[t.name] == t.metrics_url
        else:
            assert planned[t.name].removesuffix("/docs") == t.metrics_url.removesuffix("/metrics")
    assert planned["status"] == f"http://127.0.0.1:{settings.status_port}/status"
    off = {t.name for t in targets(Settings(statement_reconciliation_enabled=False))}
    assert "worker-reconcile_statements" not in off  # an optional worker off: not scraped, not "down"


def test_the_app_serves_json_and_a_self_contained_page() -> None:
    collector = Collector(Settings(metrics_port_base=9500), bootstrap=None)
    with TestClient(create_status_app(collector, scrape=False)) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        doc = client.get("/status.json").json()
        assert {"processes", "stages", "dead_letters", "reconciliation", "offices", "apis"} <= set(doc)
        assert len(doc["offices"]) == 9  # schemas/reference/offices.json
        for path in ("/status", "/"):
            page = client.get(path)
            assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
            assert "/status.json" in page.text
            assert "src=" not in page.text and "href=" not in page.text  # no external script or stylesheet
