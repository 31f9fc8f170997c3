"""`sinergi status`: the hub's status page, for when there is no Grafana.

A small FastAPI app scrapes every hub process's /metrics (and /readyz) every few seconds, keeps a minute of
history to turn counters into rates, and serves the result as GET /status.json and as a self-contained HTML
page (GET /status, /) that renders it. Counts, rates, codes and bounded labels only: never a person.

The aggregation (`parse_samples`, `build_status`) is pure, so it is unit-tested without any process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from services.catalogue import office_updates_topic
from services.config import Settings
from services.supervisor import METRICS_PORTS, WORKERS, enabled_workers

log = logging.getLogger(__name__)

SCRAPE_INTERVAL_S = 3.0
HISTORY_S = 60.0  # rates are over (at most) this window
SCRAPE_TIMEOUT_S = 1.5
AGE_BUCKETS = ("LT_1D", "1D_7D", "7D_30D", "GE_30D")
DELIVERY_OUTCOMES = ("delivered", "dead_lettered", "dead_letter_failed", "superseded", "abandoned")
# sinergi_http_requests_total outcome label (connectors/http_common._outcome) -> status class.
CLIENT_ERRORS = ("unauthorized", "rejected")
SERVER_ERRORS = ("unavailable", "error")

_QUIET = logging.getLogger("sinergi.status_page.librdkafka")
_QUIET.setLevel(logging.CRITICAL)

Labels = tuple[tuple[str, str], ...]


# --- what to scrape ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Target:
    name: str  # the supervisor's child name
    kind: str  # api | worker | webhooks
    metrics_url: str
    ready_url: str | None


def worker_metrics_port(settings: Settings, worker: str) -> int:
    """The port `sinergi up` gives a worker's /metrics (its slot in WORKERS, enabled or not)."""
    return settings.metrics_port_base + WORKERS.index(worker)


def webhooks_metrics_port(settings: Settings) -> int:
    return settings.metrics_port_base + METRICS_PORTS - 1


def targets(settings: Settings) -> list[Target]:
    """Every hub process with /metrics, addressed exactly as services/supervisor.plan starts them."""
    host = settings.http_host
    out = [
        Target(name, "api", f"http://{host}:{port}/metrics", f"http://{host}:{port}/readyz")
        for name, port in (("api-bank", settings.bank_api_port), ("api-kbri", settings.kbri_api_port))
    ]
    for worker in enabled_workers(settings):
        port = worker_metrics_port(settings, worker)
        out.append(
            Target(f"worker-{worker}", "worker", f"http://{host}:{port}/metrics", f"http://{host}:{port}/readyz")
        )
    port = webhooks_metrics_port(settings)
    out.append(Target("webhooks", "webhooks", f"http://{host}:{port}/metrics", f"http://{host}:{port}/readyz"))
    return out


def expected_stages(settings: Settings) -> list[str]:
    """Stage label values the running hub reports (a worker's stage is its name; the webhooks service's is
    `webhooks`), in pipeline order, so a stage that has seen nothing yet still gets its row."""
    return [*enabled_workers(settings), "webhooks"]


# --- one scrape -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Sample:
    name: str
    labels: Labels
    value: float

    def label(self, key: str) -> str:
        return dict(self.labels).get(key, "")


@dataclass(frozen=True)
class Scrape:
    at: float  # monotonic seconds
    up: bool
    samples: tuple[Sample, ...] = ()
    ready: bool | None = None  # None: no /readyz there (404) or it did not answer


def parse_samples(text: str) -> tuple[Sample, ...]:
    """Prometheus text exposition -> samples (only sinergi_* ones: process and GC metrics are not shown)."""
    from prometheus_client.parser import text_string_to_metric_families

    out = []
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name.startswith("sinergi_"):
                out.append(Sample(s.name, tuple(sorted(s.labels.items())), float(s.value)))
    return tuple(out)


# --- aggregation (pure) -----------------------------------------------------------------------------
History = Mapping[str, Sequence[Scrape]]  # target name -> its scrapes, oldest first


def _window(scrapes: Sequence[Scrape]) -> tuple[Scrape | None, Scrape | None]:
    """(oldest, newest) successful scrapes; a failed scrape has no samples to compare."""
    ok = [s for s in scrapes if s.up]
    if not ok:
        return None, None
    return ok[0], ok[-1]


def _sum(samples: Iterable[Sample], name: str, keys: Sequence[str]) -> dict[tuple[str, ...], float]:
    out: dict[tuple[str, ...], float] = {}
    for s in samples:
        if s.name == name:
            key = tuple(s.label(k) for k in keys)
            out[key] = out.get(key, 0.0) + s.value
    return out


@dataclass
class CounterView:
    total: float = 0.0
    per_s: float | None = None  # None until two scrapes of some process are a window apart


def counters(history: History, name: str, keys: Sequence[str]) -> dict[tuple[str, ...], CounterView]:
    """A counter summed by `keys` over every process: its latest total and its rate over the window.

    Rates are taken per process and then added, so one process restarting (its counters back at zero)
    costs a window of that process only, never a negative rate."""
    out: dict[tuple[str, ...], CounterView] = {}
    for scrapes in history.values():
        old, new = _window(scrapes)
        if new is None:
            continue
        latest = _sum(new.samples, name, keys)
        for key, value in latest.items():
            out.setdefault(key, CounterView()).total += value
        if old is None or new.at - old.at <= 0:
            continue
        dt = new.at - old.at
        before = _sum(old.samples, name, keys)
        for key, value in latest.items():
            delta = value - before.get(key, 0.0)
            if delta < 0:  # the process restarted inside the window
                delta = value
            view = out[key]
            view.per_s = (view.per_s or 0.0) + delta / dt
    for scrapes in history.values():
        old, new = _window(scrapes)
        if old is not None and new is not None and new.at > old.at:
            for view in out.values():  # a process that saw two scrapes makes every rate known (zero if idle)
                if view.per_s is None:
                    view.per_s = 0.0
    return out


def gauges(history: History, name: str, keys: Sequence[str]) -> dict[tuple[str, ...], float]:
    """A gauge summed by `keys` over the latest successful scrape of every process."""
    out: dict[tuple[str, ...], float] = {}
    for scrapes in history.values():
        _, new = _window(scrapes)
        if new is not None:
            for key, value in _sum(new.samples, name, keys).items():
                out[key] = out.get(key, 0.0) + value
    return out


def _buckets(samples: Iterable[Sample], name: str, key: str) -> dict[str, dict[float, float]]:
    out: dict[str, dict[float, float]] = {}
    for s in samples:
        if s.name == f"{name}_bucket":
            le = float(s.label("le"))
            per = out.setdefault(s.label(key), {})
            per[le] = per.get(le, 0.0) + s.value
    return out


def quantile(q: float, buckets: Mapping[float, float]) -> float | None:
    """histogram_quantile: the q-quantile of cumulative bucket counts (upper bound -> count), interpolated
    linearly inside the bucket it falls in; beyond the largest finite bound, that bound."""
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] <= 0:
        return None
    total = buckets[bounds[-1]]
    rank = q * total
    lower, below = 0.0, 0.0
    for upper in bounds:
        count = buckets[upper]
        if count >= rank:
            if math.isinf(upper):
                return lower
            if count == below:
                return upper
            return lower + (upper - lower) * (rank - below) / (count - below)
        lower, below = upper, count
    return lower


def latency(history: History, name: str, key: str) -> dict[str, tuple[float | None, float | None, bool]]:
    """label value -> (p50, p99, recent): over the window when something was observed in it, else since
    the processes started (recent False)."""
    window: dict[str, dict[float, float]] = {}
    lifetime: dict[str, dict[float, float]] = {}
    for scrapes in history.values():
        old, new = _window(scrapes)
        if new is None:
            continue
        latest = _buckets(new.samples, name, key)
        has_window = old is not None and old is not new
        before = _buckets(old.samples, name, key) if has_window and old is not None else {}
        for label, per in latest.items():
            life = lifetime.setdefault(label, {})
            for le, v in per.items():
                life[le] = life.get(le, 0.0) + v
            if not has_window:
                continue
            recent, prior = window.setdefault(label, {}), before.get(label, {})
            restarted = any(v < prior.get(le, 0.0) for le, v in per.items())
            for le, v in per.items():
                recent[le] = recent.get(le, 0.0) + (v if restarted else v - prior.get(le, 0.0))
    out: dict[str, tuple[float | None, float | None, bool]] = {}
    for label, life in lifetime.items():
        recent = window.get(label, {})
        use, is_recent = (recent, True) if recent and max(recent.values()) > 0 else (life, False)
        out[label] = (quantile(0.5, use), quantile(0.99, use), is_recent)
    return out


def _rate(view: CounterView | None) -> float | None:
    if view is None:
        return None
    return None if view.per_s is None else round(view.per_s, 3)


def _count(view: CounterView | None) -> int:
    return 0 if view is None else int(view.total)


@dataclass
class Inputs:
    """Everything `build_status` needs; the scraper fills it, a unit test builds it by hand."""

    targets: Sequence[Target]
    history: History
    stages: Sequence[str]
    offices: Sequence[str]
    feed_positions: Mapping[str, int | None] = field(default_factory=dict)  # office -> end offset
    now: datetime = field(default_factory=lambda: datetime.now(UTC))


def build_status(inp: Inputs) -> dict[str, Any]:
    h = inp.history
    processes = []
    for t in inp.targets:
        scrapes = h.get(t.name, ())
        last = scrapes[-1] if scrapes else None
        processes.append(
            {
                "name": t.name,
                "kind": t.kind,
                "up": bool(last and last.up),
                "ready": last.ready if last else None,
                "metrics_url": t.metrics_url,
            }
        )
    windows = [new.at - old.at for old, new in (_window(s) for s in h.values()) if old and new]
    window_s = round(max(windows), 1) if windows else 0.0

    events_in = counters(h, "sinergi_events_in_total", ("stage",))
    events_out = counters(h, "sinergi_events_out_total", ("stage",))
    dead = counters(h, "sinergi_dead_letters_total", ("stage", "reason"))
    lat = latency(h, "sinergi_processing_latency_seconds", "stage")
    seen = {k[0] for k in (*events_in, *events_out, *dead)} | set(lat)
    stage_names = [*inp.stages, *sorted(seen - set(inp.stages))]
    stages = []
    for stage in stage_names:
        p50, p99, recent = lat.get(stage, (None, None, False))
        stages.append(
            {
                "stage": stage,
                "events_in": _count(events_in.get((stage,))),
                "events_out": _count(events_out.get((stage,))),
                "in_per_s": _rate(events_in.get((stage,))),
                "out_per_s": _rate(events_out.get((stage,))),
                "latency_p50_s": p50,
                "latency_p99_s": p99,
                "latency_recent": recent,
                "dead_letters": sum(_count(v) for k, v in dead.items() if k[0] == stage),
            }
        )
    dead_letters = [
        {"stage": stage, "reason": reason, "count": _count(view), "per_s": _rate(view)}
        for (stage, reason), view in sorted(dead.items())
    ]

    unmatched_n = gauges(h, "sinergi_reconcile_unmatched_payments", ("kind",))
    unmatched_idr = gauges(h, "sinergi_reconcile_unmatched_value_idr", ("kind",))
    ageing = gauges(h, "sinergi_reconcile_exception_ageing_payments", ("age",))
    outcomes = counters(h, "sinergi_reconcile_outcomes_total", ("outcome",))
    kinds = sorted({k[0] for k in (*unmatched_n, *unmatched_idr)})
    reconciliation = {
        # Rupiah are whole numbers (far below 2**53), so rounding the float exposition is exact.
        "unmatched": [
            {
                "kind": kind,
                "payments": int(unmatched_n.get((kind,), 0)),
                "value_idr": round(unmatched_idr.get((kind,), 0)),
            }
            for kind in kinds
        ],
        "unmatched_payments": int(sum(unmatched_n.values())),
        "unmatched_value_idr": round(sum(unmatched_idr.values())),
        "ageing": [{"age": age, "payments": int(ageing.get((age,), 0))} for age in AGE_BUCKETS],
        "outcomes": [{"outcome": k[0], "count": _count(v), "per_s": _rate(v)} for k, v in sorted(outcomes.items())],
    }

    deliveries = counters(h, "sinergi_webhook_deliveries_total", ("office", "outcome"))
    backlog = gauges(h, "sinergi_webhook_backlog", ("office",))
    disabled = gauges(h, "sinergi_webhook_endpoint_disabled", ("office",))
    lag = gauges(h, "sinergi_office_feed_lag_updates", ("office",))
    updates_out = counters(h, "sinergi_office_updates_out_total", ("office",))
    webhook_dead = counters(h, "sinergi_webhook_dead_letters_total", ("office",))
    offices = []
    for office in inp.offices:
        done = {outcome: _count(v) for (o, outcome), v in deliveries.items() if o == office}
        offices.append(
            {
                "office": office,
                "topic": office_updates_topic(office),
                "feed_position": inp.feed_positions.get(office),
                "updates_out": _count(updates_out.get((office,))),
                "updates_per_s": _rate(updates_out.get((office,))),
                "deliveries": {
                    o: done.get(o, 0) for o in (*DELIVERY_OUTCOMES, *sorted(set(done) - set(DELIVERY_OUTCOMES)))
                },
                "webhook_dead_letters": _count(webhook_dead.get((office,))),
                "webhook_backlog": int(backlog.get((office,), 0)),
                "endpoint_disabled": bool(disabled.get((office,), 0)),
                # Absent until the office polls the pull feed once: unknown, not zero.
                "feed_lag": int(lag[(office,)]) if (office,) in lag else None,
            }
        )

    requests = counters(h, "sinergi_http_requests_total", ("api", "outcome"))
    apis = []
    for api in sorted({k[0] for k in requests}):
        mine = {outcome: v for (a, outcome), v in requests.items() if a == api}

        def total(outcomes: Iterable[str], mine: dict[str, CounterView] = mine) -> CounterView:
            views = [mine[o] for o in outcomes if o in mine]
            rates = [v.per_s for v in views if v.per_s is not None]
            return CounterView(sum(v.total for v in views), sum(rates) if rates else None)

        every, c4, c5 = total(mine), total(CLIENT_ERRORS), total(SERVER_ERRORS)
        apis.append(
            {
                "api": api,
                "requests": _count(every),
                "per_s": _rate(every),
                "client_errors": _count(c4),
                "client_errors_per_s": _rate(c4),
                "server_errors": _count(c5),
                "server_errors_per_s": _rate(c5),
            }
        )
    return {
        "generated_at": inp.now.isoformat(timespec="seconds"),
        "window_s": window_s,
        "processes": processes,
        "stages": stages,
        "dead_letters": dead_letters,
        "reconciliation": reconciliation,
        "offices": offices,
        "apis": apis,
    }


# --- the scraper ------------------------------------------------------------------------------------
class Collector:
    """Scrapes every target every SCRAPE_INTERVAL_S and keeps HISTORY_S of scrapes per target."""

    def __init__(self, settings: Settings, bootstrap: str | None) -> None:
        from services.reference import load_offices

        self.settings = settings
        self.targets = targets(settings)
        self.stages = expected_stages(settings)
        self.offices = sorted(load_offices(settings.offices_file))
        self.history: dict[str, deque[Scrape]] = {t.name: deque() for t in self.targets}
        self.feed_positions: dict[str, int | None] = {}
        self._bootstrap = bootstrap
        self._consumer: Any = None

    def status(self) -> dict[str, Any]:
        return build_status(Inputs(self.targets, self.history, self.stages, self.offices, dict(self.feed_positions)))

    async def scrape_once(self, client: Any) -> None:
        results = await asyncio.gather(*(self._scrape(client, t) for t in self.targets))
        for target, scrape in zip(self.targets, results, strict=True):
            scrapes = self.history[target.name]
            scrapes.append(scrape)
            while scrapes and scrape.at - scrapes[0].at > HISTORY_S:
                scrapes.popleft()
        if self._bootstrap is not None:
            self.feed_positions = await asyncio.to_thread(self._positions)

    async def _scrape(self, client: Any, target: Target) -> Scrape:
        import httpx

        at = time.monotonic()
        try:
            resp = await client.get(target.metrics_url)
            resp.raise_for_status()
            samples = parse_samples(resp.text)
        except (httpx.HTTPError, ValueError):
            return Scrape(at, up=False)
        ready: bool | None = None
        if target.ready_url is not None:
            with contextlib.suppress(httpx.HTTPError):
                probe = await client.get(target.ready_url)
                if probe.status_code != 404:  # 404: this process has no readiness probe (unknown)
                    ready = probe.status_code == 200
        return Scrape(at, up=True, samples=samples, ready=ready)

    def _positions(self) -> dict[str, int | None]:
        """office -> end offset of its update topic (summed over partitions); None where Kafka did not say."""
        from confluent_kafka import Consumer, KafkaException, TopicPartition

        if self._consumer is None:
            self._consumer = Consumer(
                {
                    "bootstrap.servers": self._bootstrap,
                    "group.id": "sinergi-status-page",  # librdkafka wants one; nothing is consumed or committed
                    "enable.auto.commit": False,
                    "logger": _QUIET,
                }
            )
        out: dict[str, int | None] = {}
        for office in self.offices:
            topic = office_updates_topic(office)
            try:
                meta = self._consumer.list_topics(topic, timeout=2.0).topics.get(topic)
                if meta is None or meta.error is not None:
                    out[office] = None
                    continue
                out[office] = sum(
                    self._consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=1.0, cached=False)[1]
                    for p in meta.partitions
                )
            except KafkaException:
                out[office] = None
        return out

    async def run(self, stop: asyncio.Event) -> None:
        import httpx

        async with httpx.AsyncClient(timeout=SCRAPE_TIMEOUT_S, trust_env=False) as client:
            while not stop.is_set():
                started = time.monotonic()
                try:
                    await self.scrape_once(client)
                except Exception:  # the page must keep serving whatever one scrape ran into
                    log.exception("status scrape failed")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), max(0.1, SCRAPE_INTERVAL_S - (time.monotonic() - started)))

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None


# --- the app ----------------------------------------------------------------------------------------
def create_status_app(collector: Collector, scrape: bool = True) -> Any:
    from fastapi import FastAPI
    from fastapi.responses import HTMLResponse, JSONResponse

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        stop = asyncio.Event()
        task = asyncio.create_task(collector.run(stop)) if scrape else None
        try:
            yield
        finally:
            stop.set()
            if task is not None:
                await task
            await asyncio.to_thread(collector.close)

    app = FastAPI(title="sinergi status", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/status.json")
    async def status_json() -> JSONResponse:
        return JSONResponse(collector.status(), headers={"Cache-Control": "no-store"})

    @app.get("/status", response_class=HTMLResponse)
    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def status_page() -> HTMLResponse:
        return HTMLResponse(PAGE, headers={"Cache-Control": "no-store"})

    return app


def serve_status(settings: Settings) -> None:
    import uvicorn

    from services.supervisor import read_bootstrap_file

    bootstrap = settings.kafka_bootstrap or read_bootstrap_file(settings.data_dir)
    app = create_status_app(Collector(settings, bootstrap))
    uvicorn.run(app, host=settings.http_host, port=settings.status_port, log_level="warning", access_log=False)


# Self-contained: no CDN, no external asset. The script builds the tables with textContent only.
PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>sinergi status</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222;background:#fafafa}
h1{font-size:1.3em;margin:0 0 .2em}h2{font-size:1.05em;margin:1.4em 0 .4em}
table{border-collapse:collapse;background:#fff;min-width:30em}
th,td{border:1px solid #ddd;padding:.25em .6em;text-align:right}
th:first-child,td:first-child{text-align:left}th{background:#eee}
.ok{color:#107010;font-weight:600}.bad{color:#b00020;font-weight:600}.unk{color:#888}
#meta{color:#666}
</style></head>
<body data-rendered="0">
<h1>sinergi status</h1>
<div id="meta">loading&hellip;</div>
<h2>Processes</h2><table id="processes"></table>
<h2>Stages</h2><table id="stages"></table>
<h2>Dead letters</h2><table id="dead-letters"></table>
<h2>Reconciliation exceptions</h2><table id="unmatched"></table>
<h2>Exception ageing</h2><table id="ageing"></table>
<h2>Offices</h2><table id="offices"></table>
<h2>APIs</h2><table id="apis"></table>
<script>
"use strict";
const REFRESH_MS = 3000;
function fmt(v, digits) {
  if (v === null || v === undefined) return "-";
  if (typeof v === "number") return digits === undefined ? String(v) : v.toFixed(digits);
  return String(v);
}
function ms(v) { return v === null || v === undefined ? "-" : (v * 1000).toFixed(1) + " ms"; }
function flag(v, yes, no) {
  const span = document.createElement("span");
  span.className = v === null || v === undefined ? "unk" : (v ? "ok" : "bad");
  span.textContent = v === null || v === undefined ? "unknown" : (v ? yes : no);
  return span;
}
function table(id, head, rows, keyName) {
  const t = document.getElementById(id);
  t.replaceChildren();
  const hr = t.insertRow();
  for (const h of head) { const th = document.createElement("th"); th.textContent = h; hr.appendChild(th); }
  if (rows.length === 0) {
    const td = t.insertRow().insertCell(); td.colSpan = head.length; td.textContent = "none"; td.className = "unk";
  }
  for (const [key, cells] of rows) {
    const tr = t.insertRow();
    if (keyName) tr.dataset[keyName] = key;
    for (const c of cells) {
      const td = tr.insertCell();
      if (c instanceof Node) td.appendChild(c); else td.textContent = fmt(c);
    }
  }
}
function render(s) {
  document.getElementById("meta").textContent =
    "generated " + s.generated_at + " \\u00b7 rates over " + s.window_s + " s \\u00b7 refreshes every " +
    (REFRESH_MS / 1000) + " s";
  table("processes", ["process", "kind", "up", "ready"],
    s.processes.map(p => [p.name, [p.name, p.kind, flag(p.up, "up", "down"), flag(p.ready, "ready", "not ready")]]),
    "process");
  table("stages", ["stage", "events in", "in/s", "events out", "out/s", "p50", "p99", "dead letters"],
    s.stages.map(x => [x.stage, [x.stage, x.events_in, fmt(x.in_per_s, 2), x.events_out, fmt(x.out_per_s, 2),
      ms(x.latency_p50_s), ms(x.latency_p99_s), x.dead_letters]]), "stage");
  table("dead-letters", ["stage", "reason", "count", "per s"],
    s.dead_letters.map(d => [d.stage + "/" + d.reason, [d.stage, d.reason, d.count, fmt(d.per_s, 2)]]), "deadLetter");
  const r = s.reconciliation;
  table("unmatched", ["kind", "payments held", "value (Rp)"],
    r.unmatched.map(u => [u.kind, [u.kind, u.payments, u.value_idr.toLocaleString("en-US")]]), "kind");
  table("ageing", ["age", "open payment exceptions"], r.ageing.map(a => [a.age, [a.age, a.payments]]), "age");
  table("offices", ["office", "feed position", "updates out", "delivered", "dead-lettered", "other outcomes",
      "webhook backlog", "endpoint", "feed lag"],
    s.offices.map(o => {
      const d = o.deliveries;
      const other = Object.keys(d).filter(k => k !== "delivered" && k !== "dead_lettered")
        .reduce((n, k) => n + d[k], 0);
      return [o.office, [o.office, o.feed_position, o.updates_out, d.delivered, d.dead_lettered, other,
        o.webhook_backlog, flag(!o.endpoint_disabled, "enabled", "disabled"), o.feed_lag]];
    }), "office");
  table("apis", ["api", "requests", "per s", "4xx", "4xx/s", "5xx", "5xx/s"],
    s.apis.map(a => [a.api, [a.api, a.requests, fmt(a.per_s, 2), a.client_errors, fmt(a.client_errors_per_s, 2),
      a.server_errors, fmt(a.server_errors_per_s, 2)]]), "api");
  document.body.dataset.rendered = String(Number(document.body.dataset.rendered) + 1);
}
async function refresh() {
  try {
    const resp = await fetch("/status.json", {cache: "no-store"});
    if (resp.ok) render(await resp.json());
    else document.getElementById("meta").textContent = "status.json answered " + resp.status;
  } catch (e) {
    document.getElementById("meta").textContent = "status.json did not answer";
  } finally {
    setTimeout(refresh, REFRESH_MS);
  }
}
refresh();
</script>
</body></html>
"""
