"""Soak: a steady open-loop load on a running hub, its memory and lag sampled, then judged and verified.

The load is a mixed raw stream (services/simulation/backlog.py: every payment case the reconciler knows, as
the partner APIs would have written it) produced straight to the raw topics, ``kbri.enrollments.raw`` and
``bank.payments.raw``: the APIs' own cost is measured by the bench, and going through them would make the
load generator compete with the hub for the same two cores. The stream is built before the clock starts,
and record *i* is produced at ``t0 + i / rate`` whatever the hub's pace (open loop: a slow hub shows as lag,
not as a slower load).

Every ``sample_s`` seconds, until the load has stopped and the lag drained (or the drain deadline passed):

* RSS of each hub process (``/proc/<pid>/status`` VmRSS) and of the broker (reported, never judged: the
  embedded Tansu keeps every record in memory);
* consumer lag of each stage, from the stage's own ``sinergi_consumer_lag_messages`` on its /metrics (the
  worker takes the larger of the listed end offset and its fetch's highwater: Tansu lists the end of a
  multi-record batch as its base offset + 1, so ``end offset - committed`` alone reads far short);
* the exact raw-topic backlog of the two normalizer groups: the end offsets come from this producer's own
  delivery reports, the committed offsets from the broker (OffsetFetch, no group join).

services/domain/soak.py judges the samples; then the verifier must find every input accounted for.
``sinergi soak`` starts its own hub; :func:`run_soak` takes one that is running and starts nothing.
"""

from __future__ import annotations

import logging
import re
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition

from services.catalogue import ENROLLMENTS_RAW, PAYMENTS_RAW
from services.config import Settings
from services.domain.soak import MIB, Bounds, Sample, Verdict, judge, lag_slope_bound
from services.domain.verification import VerificationReport
from services.simulation.backlog import MixedStream, RawRecord, build_mixed_stream

if TYPE_CHECKING:
    from services.supervisor import Supervisor

#: Raw records per member of the mixed stream (measured: 3,000 members -> about 6,600 records).
EVENTS_PER_MEMBER = 2.2
#: What this machine's hub holds while others use the cores, measured with this soak (2026-12-07, load average
#: 5-8): 50 events/s held; at 75/s notify_kbri fell behind by 45 messages/s, at 150/s the reconciler by 85/s
#: (BENCHMARKS.md's 380 events/s is a clean backlog on an idle machine). `make soak` asks for the issue's 1,000/s.
DEFAULT_RATE = 50.0
DEFAULT_SECONDS = 60.0
#: Processes whose memory holds per-member state by design: the reconciler's Faust tables (memory store),
#: notify_kbri's and the core publisher's forwarded versions, the bank API's member read model and the
#: KBRI API's office book. Measured in 9,100-event runs (4,091 members) after the drain: about 13 KB per member
#: in the reconciler and 15 KB in the statement reconciler (its ledger keeps an item per payment entry), 7 KB
#: in the KBRI API; allowed 16 KiB. A leak has to cost more than that per member to be told from state.
STATEFUL = frozenset(
    {
        "worker-reconcile",
        "worker-notify_kbri",
        "worker-core_publisher",
        "worker-reconcile_statements",
        "api-bank",
        "api-kbri",
    }
)
STATE_BYTES_PER_MEMBER = 16 * 1024
#: The raw topics and the groups that consume them (the Faust app id is the group id).
RAW_GROUPS = {ENROLLMENTS_RAW.name: "sinergi-normalize_enrollments", PAYMENTS_RAW.name: "sinergi-normalize_payments"}
JOINED = "Joined group"  # aiokafka's INFO line at every successful group join, Faust workers included
log = logging.getLogger(__name__)
_LAG = re.compile(r'^sinergi_consumer_lag_messages\{[^}]*stage="([^"]+)"[^}]*\}\s+([0-9.eE+-]+)\s*$')


@dataclass(frozen=True)
class SoakConfig:
    rate: float = DEFAULT_RATE
    seconds: float = DEFAULT_SECONDS
    sample_s: float = 5.0
    warmup_s: float | None = None  # default: a quarter of the load, at most 60 s
    drain_s: float = 120.0
    verify_s: float = 300.0
    seed: int = 0

    @property
    def warmup(self) -> float:
        return self.warmup_s if self.warmup_s is not None else min(60.0, self.seconds / 4)

    def bounds(self) -> Bounds:
        return Bounds(
            state_bytes_per_member=STATE_BYTES_PER_MEMBER,
            stateful=STATEFUL,
            lag_slope_per_s=lag_slope_bound(self.rate),
            drain_s=self.drain_s,
        )


@dataclass
class SoakTarget:
    """A running hub: where to produce, what to sample."""

    bootstrap: str
    registry_url: str
    pids: Callable[[], dict[str, int]]  # hub process -> pid, of those running now
    metrics_urls: Mapping[str, str]  # stage -> /metrics
    log_dir: Path | None = None
    broker_pid: int | None = None


def target_of(hub: Supervisor, broker_pid: int | None = None) -> SoakTarget:
    def pids() -> dict[str, int]:
        return {c.name: c.proc.pid for c in hub.children if c.proc is not None and c.proc.poll() is None}

    urls = {c.name.removeprefix("worker-"): c.url for c in hub.children if c.name.startswith("worker-") and c.url}
    return SoakTarget(
        bootstrap=hub.bootstrap,
        registry_url=hub.env.get("SINERGI_SCHEMA_REGISTRY_URL") or str(hub.settings.schema_registry_url),
        pids=pids,
        metrics_urls=urls,
        log_dir=hub.log_dir,
        broker_pid=broker_pid if broker_pid is not None else (hub.broker.pid if hub.broker else None),
    )


# --- measurements ----------------------------------------------------------------------------------------
def rss_bytes(pid: int) -> int | None:
    """Resident set of a process (VmRSS), None when it is gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024  # kB
    except (FileNotFoundError, ProcessLookupError, ValueError):
        return None
    return None


def stage_lag(metrics_text: str) -> dict[str, int]:
    """Sum of sinergi_consumer_lag_messages per stage in a /metrics page."""
    out: dict[str, int] = {}
    for line in metrics_text.splitlines():
        m = _LAG.match(line)
        if m:
            out[m.group(1)] = out.get(m.group(1), 0) + int(float(m.group(2)))
    return out


def _scrape(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=3) as resp:  # noqa: S310 - loopback URLs the supervisor built
            return bytes(resp.read()).decode("utf-8", "replace")
    except OSError:
        return None


def wait_ready(metrics_urls: Mapping[str, str], timeout_s: float) -> None:
    """Until every stage's /readyz answers 200 (joined its group, consuming): a run that starts while a
    worker still joins for the first time would count that join as a re-join, its catch-up as lag."""
    waiting = dict(metrics_urls)
    deadline = time.monotonic() + timeout_s
    while waiting:
        for stage, url in list(waiting.items()):
            try:
                with urllib.request.urlopen(url.removesuffix("/metrics") + "/readyz", timeout=3) as resp:  # noqa: S310
                    if resp.status == 200:
                        del waiting[stage]
            except OSError:  # 503 (HTTPError is an OSError) or not listening yet
                pass
        if waiting and time.monotonic() > deadline:
            raise TimeoutError(f"not ready after {timeout_s:.0f} s: {sorted(waiting)}")
        if waiting:
            time.sleep(0.5)  # poll of a deadline loop


def joins(log_dir: Path | None, names: list[str]) -> dict[str, int]:
    """Group joins each process has logged so far (its log is appended to across restarts)."""
    out: dict[str, int] = {}
    for name in names:
        try:
            out[name] = (log_dir / f"{name}.log").read_text(errors="replace").count(JOINED) if log_dir else 0
        except FileNotFoundError:
            out[name] = 0
    return out


class RawBacklog:
    """Exact backlog of the raw topics' groups: ends from the delivery reports, committed from the broker."""

    def __init__(self, bootstrap: str) -> None:
        self._ends: dict[tuple[str, int], int] = {}
        self._lock = threading.Lock()
        self._consumers = {
            topic: Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
            for topic, group in RAW_GROUPS.items()
        }

    def delivered(self, topic: str, partition: int, offset: int) -> None:
        with self._lock:
            key = (topic, partition)
            self._ends[key] = max(self._ends.get(key, 0), offset + 1)

    def sample(self) -> dict[str, int]:
        with self._lock:
            ends = dict(self._ends)
        out: dict[str, int] = {}
        for topic, consumer in self._consumers.items():
            tps = [TopicPartition(t, p) for t, p in ends if t == topic]
            if not tps:
                continue
            try:
                committed = consumer.committed(tps, timeout=5)
            except Exception as exc:  # the broker busy past the timeout: this sample has no such series
                log.debug("committed offsets of %s not read (%s)", RAW_GROUPS[topic], type(exc).__name__)
                continue
            # No commit yet (negative offset): the group has consumed nothing of what we produced there.
            out[f"raw:{RAW_GROUPS[topic]}"] = sum(
                max(0, ends[(tp.topic, tp.partition)] - max(tp.offset, 0)) for tp in committed
            )
        return out

    def close(self) -> None:
        for consumer in self._consumers.values():
            consumer.close()


class OpenLoopProducer(threading.Thread):
    """Record *i* at ``t0 + i / rate``, whatever the broker's or the hub's pace."""

    def __init__(self, bootstrap: str, records: list[RawRecord], rate: float, backlog: RawBacklog) -> None:
        super().__init__(name="soak-producer", daemon=True)
        self.records, self.rate, self._backlog = records, rate, backlog
        self._producer = Producer(
            {"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True, "linger.ms": 5}
        )
        self.sent = 0
        self.failed = 0
        self.behind_s = 0.0  # the most the producer itself fell behind the schedule
        self.started_at = 0.0
        self.error: BaseException | None = None

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self.failed += 1
        else:
            self._backlog.delivered(msg.topic() or "", msg.partition() or 0, msg.offset() or 0)

    def run(self) -> None:
        try:
            self.started_at = time.monotonic()
            total = len(self.records)
            while self.sent < total:
                now = time.monotonic()
                due = min(total, int((now - self.started_at) * self.rate) + 1)
                if due - self.sent > self.rate:  # more than a second's worth waiting: we are the bottleneck
                    self.behind_s = max(self.behind_s, (due - self.sent) / self.rate)
                while self.sent < due:
                    r = self.records[self.sent]
                    try:
                        self._producer.produce(
                            r.topic,
                            key=r.key,
                            value=r.value,
                            headers=cast(list[tuple[str, str | bytes | None]], r.headers),
                            on_delivery=self._on_delivery,
                        )
                    except BufferError:
                        self._producer.poll(0.05)  # librdkafka's queue is full: let it drain, then go on
                        continue
                    self.sent += 1
                self._producer.poll(0)
                nxt = self.started_at + (self.sent + 1) / self.rate
                time.sleep(max(0.0, min(0.02, nxt - time.monotonic())))  # pacing the load, not waiting for it
            if self._producer.flush(60) != 0:
                self.failed += len(self._producer)
        except BaseException as exc:  # reported by the driver
            self.error = exc


class Sampler(threading.Thread):
    def __init__(self, target: SoakTarget, backlog: RawBacklog, producer: OpenLoopProducer, every_s: float) -> None:
        super().__init__(name="soak-sampler", daemon=True)
        self.target, self.backlog, self.producer, self.every_s = target, backlog, producer, every_s
        self.samples: list[Sample] = []
        self.stop_event = threading.Event()

    def sample(self) -> Sample:
        pids = self.target.pids()
        rss = {name: b for name, pid in pids.items() if (b := rss_bytes(pid)) is not None}
        lag: dict[str, int] = {}
        for stage, url in self.target.metrics_urls.items():
            text = _scrape(url)
            if text is not None:
                lag.update({s: v for s, v in stage_lag(text).items() if s == stage})
        lag.update(self.backlog.sample())
        broker = rss_bytes(self.target.broker_pid) if self.target.broker_pid else None
        at = time.monotonic() - self.producer.started_at
        return Sample(round(at, 1), rss, lag, self.producer.sent, broker, pids)

    def run(self) -> None:
        while not self.stop_event.is_set():
            began = time.monotonic()
            self.samples.append(self.sample())
            self.stop_event.wait(max(0.0, self.every_s - (time.monotonic() - began)))


# --- the run ---------------------------------------------------------------------------------------------
@dataclass
class SoakResult:
    config: SoakConfig
    events: int
    members: int
    produced: int
    failed: int
    load_s: float
    producer_behind_s: float
    samples: list[Sample]
    verdict: Verdict
    rejoins: dict[str, int]
    report: VerificationReport | None = None
    cases: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.verdict.ok and self.failed == 0 and self.report is not None and self.report.ok

    @property
    def achieved_rate(self) -> float:
        return self.produced / self.load_s if self.load_s else 0.0


def build_stream(settings: Settings, config: SoakConfig) -> MixedStream:
    members = max(1, round(config.rate * config.seconds / EVENTS_PER_MEMBER))
    return build_mixed_stream(settings, members, config.seed, datetime.now(UTC))


def run_soak(
    target: SoakTarget, settings: Settings, config: SoakConfig, echo: Callable[[str], None] = print
) -> SoakResult:
    """Produce, sample, judge and verify against a running hub; starts no process."""
    from services.verify import reading_codec, verify

    began = time.monotonic()
    stream = build_stream(settings, config)
    echo(
        f"soak: seed={config.seed} rate={config.rate:g}/s for {config.seconds:g} s: {stream.events} raw events "
        f"({len(stream.enrolled)} members, {stream.payments} payments) built in {time.monotonic() - began:.1f} s; "
        f"cases {stream.cases}"
    )
    wait_ready(target.metrics_urls, config.drain_s)
    names = sorted(target.pids())
    joins_before = joins(target.log_dir, names)
    backlog = RawBacklog(target.bootstrap)
    producer = OpenLoopProducer(target.bootstrap, stream.records, config.rate, backlog)
    sampler = Sampler(target, backlog, producer, config.sample_s)
    producer.start()
    while not producer.started_at:
        time.sleep(0.01)  # the sampler's clock is the producer's t0
    sampler.start()
    try:
        producer.join()
        load_s = time.monotonic() - producer.started_at
        if producer.error is not None:
            raise producer.error
        echo(f"soak: load done: {producer.sent} produced in {load_s:.1f} s, {producer.failed} not acknowledged")
        deadline = time.monotonic() + config.drain_s
        while time.monotonic() < deadline:
            last = sampler.samples[-1] if sampler.samples else None
            if last is not None and last.at_s >= load_s and last.lag and not any(last.lag.values()):
                break
            time.sleep(0.5)  # poll of a deadline loop: the sampler takes the samples
    finally:
        sampler.stop_event.set()
        sampler.join(30)
        backlog.close()
    samples = list(sampler.samples)
    joins_after = joins(target.log_dir, names)
    rejoins = {n: joins_after[n] - joins_before[n] for n in names if joins_after[n] > joins_before[n]}
    members_per_event = len(stream.enrolled) / max(1, stream.events)
    verdict = judge(
        samples, load_s=load_s, warmup_s=config.warmup, bounds=config.bounds(), members_per_event=members_per_event
    )
    verdict.problems += [f"{n}: re-joined its consumer group {k} time(s) during the run" for n, k in rejoins.items()]
    if producer.behind_s > 1.0:
        verdict.problems.append(f"the load generator fell {producer.behind_s:.1f} s behind its schedule")
    result = SoakResult(
        config,
        stream.events,
        len(stream.enrolled),
        producer.sent,
        producer.failed,
        load_s,
        producer.behind_s,
        samples,
        verdict,
        rejoins,
        cases=stream.cases,
    )
    echo(samples_table(samples))
    echo(verdict_text(result))

    codec = reading_codec(target.registry_url, settings)
    # Drained: what is missing now will not arrive, bar records in flight: poll to a deadline. Not drained:
    # one reading shows how far behind the hub is (waiting for a hub that cannot keep up proves nothing).
    verify_deadline = time.monotonic() + (config.verify_s if verdict.drained_after_s is not None else 0.0)
    while True:
        report = verify(
            target.bootstrap, target.registry_url, participants=stream.customer_nos, codec=codec, timeout_s=30.0
        )
        if (report.ok and report.payments_in == stream.payments) or time.monotonic() > verify_deadline:
            break
        time.sleep(2.0)  # poll of a deadline loop
    result.report = report
    echo("verifier:\n" + report.summary())
    echo(f"soak: {'PASS' if result.ok else 'FAIL'}")
    return result


# --- printing --------------------------------------------------------------------------------------------
def short(name: str) -> str:
    """A column title: "worker-normalize_enrollments" -> "nor_enr", "raw:sinergi-normalize_payments" ->
    "raw:nor_pay"."""
    prefix = "raw:" if name.startswith("raw:") else ""
    base = name.removeprefix("raw:").removeprefix("sinergi-").removeprefix("worker-")
    parts = base.split("_")
    return prefix + ("_".join(part[:3] for part in parts) if len(parts) > 1 else base)


def samples_table(samples: list[Sample]) -> str:
    if not samples:
        return "(no samples)"
    processes = sorted({p for s in samples for p in s.rss})
    series = sorted({n for s in samples for n in s.lag})
    head = f"{'t s':>7} {'produced':>9} " + " ".join(f"{short(p)[:8]:>8}" for p in processes) + f" {'broker':>8}"
    lines = ["RSS, MiB:", head]
    for s in samples:
        cells = " ".join(f"{_mib(s.rss.get(p)):>8}" for p in processes)
        lines.append(f"{s.at_s:>7.1f} {s.produced:>9} {cells} {_mib(s.broker_rss):>8}")
    lines += ["consumer lag, messages:", f"{'t s':>7} " + " ".join(f"{short(n)[:11]:>11}" for n in series)]
    for s in samples:
        lines.append(f"{s.at_s:>7.1f} " + " ".join(f"{_num(s.lag.get(n)):>11}" for n in series))
    return "\n".join(lines)


def verdict_text(result: SoakResult) -> str:
    v, c = result.verdict, result.config
    lines = [
        f"load: {result.produced} events in {result.load_s:.1f} s = {result.achieved_rate:.0f} events/s "
        f"(asked {c.rate:g}/s); warm-up {c.warmup:.0f} s; not acknowledged {result.failed}",
        "memory (first sample after the warm-up -> last sample of the run):",
    ]
    for f in v.rss:
        lines.append(
            f"  {f.process:<30} {f.baseline / MIB:7.1f} -> {f.last / MIB:7.1f} MiB  growth {f.growth / MIB:+7.1f}"
            f"  allowed {f.allowed / MIB:7.1f}  {'ok' if f.ok else 'TOO MUCH'}"
        )
    broker = [s.broker_rss for s in result.samples if s.broker_rss]
    if broker:
        lines.append(f"  {'broker (not judged)':<30} {broker[0] / MIB:7.1f} -> {broker[-1] / MIB:7.1f} MiB")
    lines.append(f"lag (slope over the last third of the load; bound {c.bounds().lag_slope_per_s:.1f} messages/s):")
    for g in v.lag:
        k = "n/a" if g.slope_per_s is None else f"{g.slope_per_s:+.1f}/s"
        lines.append(f"  {g.series:<36} slope {k:>9}  peak {g.peak:>8}  {'drained' if g.drained else 'NOT DRAINED'}")
    drained = "never" if v.drained_after_s is None else f"{v.drained_after_s:.1f} s after the load"
    lines.append(f"all lag zero: {drained} (deadline {c.drain_s:.0f} s); group re-joins: {result.rejoins or 'none'}")
    lines += [f"PROBLEM: {p}" for p in v.problems]
    return "\n".join(lines)


def _mib(v: int | None) -> str:
    return "-" if v is None else f"{v / MIB:.1f}"


def _num(v: int | None) -> str:
    return "-" if v is None else str(v)


# --- `sinergi soak` --------------------------------------------------------------------------------------
def soak_command(settings: Settings, config: SoakConfig) -> int:
    """Start a hub (embedded broker unless SINERGI_KAFKA_BOOTSTRAP is set) on free loopback ports, soak it,
    stop it. Exit status 0 when the run passed, 1 when not."""
    import os

    from connectors.embedded import free_port, free_port_block
    from services.supervisor import METRICS_PORTS, Supervisor

    data_dir = Path(settings.data_dir) / "soak"
    overrides: dict[str, Any] = {
        "bank_api_port": free_port(),
        "kbri_api_port": free_port(),
        "registry_port": free_port(),
        "status_port": free_port(),
        "metrics_port_base": free_port_block(METRICS_PORTS),
        "data_dir": data_dir,
    }
    env = {f"SINERGI_{k.upper()}": str(v) for k, v in overrides.items()}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # the children read their settings from the environment
    hub = Supervisor(settings.model_copy(update=overrides), simulate=False)
    try:
        hub.start()
        hub.watch_children()
        print(f"soak: hub started, logs in {hub.log_dir}", flush=True)
        result = run_soak(target_of(hub), hub.settings, config, echo=lambda s: print(s, flush=True))
        return 0 if result.ok else 1
    finally:
        hub.shutdown()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


__all__ = [
    "SoakConfig",
    "SoakResult",
    "SoakTarget",
    "joins",
    "rss_bytes",
    "run_soak",
    "soak_command",
    "stage_lag",
    "target_of",
    "wait_ready",
]
