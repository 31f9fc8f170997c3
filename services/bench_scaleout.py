"""Issue 8, target 4: scale-out of the heaviest service, the reconciler.

Two workers of one consumer group should share the reconciler's partitions evenly and reach at least
:data:`TARGET_RATIO` times one worker's rate on this 2-core machine (a Python worker is bound to one core; the
second core is the headroom), with the output still verified exact. :func:`measure_scaleout` measures it on a
running broker:

1. ``events`` already-normalized inputs (N/2 ``sinergi.Enrollment`` + N/2 ``sinergi.Payment`` covering each
   bill exactly, Avro in the Confluent wire format, keyed by the participant key and partitioned by the
   producer's murmur2 partitioner like the normalizers' outputs) are built once from the bench's clean backlog
   by the normalizers' own domain calls.
2. One reconciler worker, then two workers in one consumer group, each on its own copy of the inputs. A run has
   two phases: the enrollments pre-loaded, the worker(s) started and run to the end, stopped; then the payments
   pre-loaded and the worker(s) started again (the table recovered from its changelog) and run to the end. In
   production a payment follows its enrollment (it needs the VA number); pre-loading both at once leaves their
   order to the consumer's fetch order, which changes from process to process (set order of the assignment) and
   changes the work: one worker once took every payment before its enrollment (each held, then matched,
   0.85 ms of CPU per event) while the two-worker run of the same data held half of them (0.74 ms), and the
   "speed-up" was 2.24x. Two phases give both group sizes the same work.

**Isolation.** The catalogue has no topic prefix and the Faust app id (= consumer group = the table's changelog
name prefix) is ``sinergi-<service>``, both fixed. Rather than add a setting that every stage would have to honour
for a benchmark's sake, the worker processes started here (``python -m services.bench_scaleout``) run the
unchanged ``services.reconcile.register`` with two things replaced in their own process only: the reconciler
module's five topic specs (enrollments, payments, reversals in; members, exceptions out) by run-scoped copies
(``bench.scaleout.<run>.<n>w.<name>``), and the app id by ``sinergi-bench-scaleout-<run>-<n>w``, which gives
a fresh group, changelog and table. So a run sees neither the main bench's data, nor a running hub's, nor the
other run's, and nothing of the hub's sees it. Shared and left as they are: ``fx-rates.v1`` (read only) and
``dlq.reconcile`` (clean inputs send nothing there; a dead letter would show here as a member missing).

**Timing.** A phase runs from the first input consumed, taken from each worker's ``sinergi_events_in_total``
polled every :data:`FAST_POLL_S` (the time of the last poll that saw none: a lower bound, so the rate errs low),
to the last output written: the largest producer timestamp (CreateTime, set when the worker handed the record to
its producer) on the run's output topics, read after the run, so no reader competes with the workers for the
cores. A run's rate is its events over the sum of its phases; start-up, group joins and table recovery are left
out. CPU seconds of every worker, of the broker and of the whole machine come from /proc over the same windows:
what the machine spent beyond the measurement's own processes is someone else's load, and reported.

**Exact.** Every expected member's highest version on the run's members topic is ACTIVE on its own
enrollment with exactly its payment; a record_id seen twice must carry identical bytes (an at-least-once
re-send), and the hub's verifier (services.domain.verification) must find nothing missing, credited twice,
contradictory or unbalanced, and money in equal to money recorded (no core publisher runs here, so its
``core_missing`` is not asked).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import re
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx

from services.catalogue import DEAD_LETTERS, ENROLLMENTS, EXCEPTIONS, FX_RATES, MEMBERS, PAYMENTS, REVERSALS, TopicSpec
from services.config import Settings
from services.domain.verification import (
    MEMBERS_TOPIC,
    EnrollmentFact,
    ExceptionFact,
    Inputs,
    PaymentFact,
    RecordFact,
)
from services.domain.verification import verify as judge_facts

SERVICE = "reconcile"
TARGET_RATIO = 1.4
SEED = 20261207
FAST_POLL_S = 0.1  # until every worker has consumed: the first-consumed time is only as good as this
SLOW_POLL_S = 0.5  # afterwards: the end of a run is read from the outputs' timestamps, not from a poll
SETTLE_S = 1.5  # every input consumed and no output counted for this long: the run is over
JOIN_DEADLINE_S = 90.0  # spawn to first input consumed: imports, group join, recovery of an empty changelog
STALL_S = 30.0  # consuming, then neither input nor output moving for this long (a rebalance takes a few seconds)
STOP_GRACE_S = 15.0
ACTIVE = "ACTIVE"
# The reconciler's topics a run replaces by its own copies (the names the catalogue gives them).
RUN_TOPICS: tuple[TopicSpec, ...] = (ENROLLMENTS, PAYMENTS, REVERSALS, MEMBERS, EXCEPTIONS)
PHASES = 2  # enrollments, then payments (see _one_run)
NOT_JUDGED = frozenset({"core_missing"})  # no core publisher runs in this measurement
# Other processes' average CPU over a run beyond which its rate says more about the neighbours than the hub.
OTHERS_LIMIT_CORES = 0.25


# --- pure parts (tests/unit/test_bench_scaleout.py) -----------------------------------------------------------


@dataclass(frozen=True)
class Expected:
    """What one member of the backlog must end as: ACTIVE on this enrollment with exactly this payment."""

    participant_id: str
    enrollment_event_id: str
    payment_event_id: str
    amount_idr: int


@dataclass
class Judgement:
    members: int = 0  # expected
    exact: int = 0  # highest version ACTIVE with exactly the expected enrollment and payment
    missing: int = 0  # no record at all
    wrong_final: int = 0  # a highest version that is not the expected final state
    unexpected: int = 0  # records of participants not in the backlog
    records: int = 0
    repeats: int = 0  # a record_id seen again with identical bytes (an at-least-once re-send)
    contradictions: int = 0  # a record_id seen again with other bytes
    exceptions: Counter[str] = field(default_factory=Counter)
    verifier: dict[str, int] = field(default_factory=dict)  # the verifier's failing figures, core_missing aside
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def judge_outputs(
    expected: Mapping[str, Expected], records: Sequence[RecordFact], exceptions: Sequence[ExceptionFact]
) -> Judgement:
    """Judge one run's outputs against its backlog. ``records`` in topic order per partition (a participant
    lives on one partition, so that is its order)."""
    j = Judgement(members=len(expected), records=len(records), exceptions=Counter(x.reason for x in exceptions))
    by_id: dict[str, str] = {}
    highest: dict[str, RecordFact] = {}
    unexpected: set[str] = set()
    for r in records:
        if r.participant_id not in expected:
            unexpected.add(r.participant_id)
        seen = by_id.get(r.record_id)
        if seen is None:
            by_id[r.record_id] = r.content()
        elif seen == r.content():
            j.repeats += 1
        else:
            j.contradictions += 1
        top = highest.get(r.participant_id)
        if top is None or r.version > top.version:
            highest[r.participant_id] = r
    j.unexpected = len(unexpected)
    for pid, want in expected.items():
        got = highest.get(pid)
        if got is None:
            j.missing += 1
        elif (
            got.status == ACTIVE
            and got.enrollment_event_id == want.enrollment_event_id
            and got.payment_event_ids == (want.payment_event_id,)
            and got.paid_amount_idr == want.amount_idr
        ):
            j.exact += 1
        else:
            j.wrong_final += 1
    facts = Inputs(
        payments=tuple(PaymentFact(e.payment_event_id, e.participant_id, e.amount_idr) for e in expected.values()),
        enrollments=tuple(EnrollmentFact(e.enrollment_event_id, e.participant_id) for e in expected.values()),
        # The verifier judges the records it finds on members.v1; these are the run's copy of that topic.
        records=tuple(replace(r, topic=MEMBERS_TOPIC) for r in records),
        exceptions=tuple(exceptions),
    )
    report = judge_facts(facts)
    j.verifier = {k: v for k, v in report.problems.items() if k not in NOT_JUDGED}
    if j.missing:
        j.problems.append(f"{j.missing:,} of {j.members:,} members have no record")
    if j.wrong_final:
        j.problems.append(f"{j.wrong_final:,} members' highest version is not ACTIVE with exactly their payment")
    if j.unexpected:
        j.problems.append(f"records of {j.unexpected:,} participants not in the backlog")
    if j.contradictions:
        j.problems.append(f"{j.contradictions:,} record_ids seen again with other content")
    if j.verifier:
        j.problems.append("verifier: " + ", ".join(f"{k} {v:,}" for k, v in sorted(j.verifier.items())))
    return j


def evenness_problems(owned: Mapping[str, Iterable[int]], partitions: int) -> list[str]:
    """Two (or more) workers share ``partitions`` evenly: each owns some, none twice, all owned, counts within one."""
    sets = {name: set(parts) for name, parts in owned.items()}
    problems = [f"{name} owned no partition" for name, parts in sets.items() if not parts]
    counted = Counter(p for parts in sets.values() for p in parts)
    twice = sorted(p for p, n in counted.items() if n > 1)
    if twice:
        problems.append(f"partitions {twice} owned by more than one worker")
    unowned = sorted(set(range(partitions)) - set(counted))
    if unowned:
        problems.append(f"partitions {unowned} owned by no worker")
    sizes = [len(parts) for parts in sets.values()]
    if sizes and max(sizes) - min(sizes) > 1:
        problems.append(f"uneven shares: {', '.join(f'{n} {len(p)}' for n, p in sorted(sets.items()))}")
    return problems


def scale_ratio(one_rate: float, two_rate: float) -> float:
    return two_rate / one_rate if one_rate > 0 and not math.isnan(two_rate) else math.nan


_EVENTS = re.compile(r"^sinergi_events_(in|out)_total\{([^}]*)\}\s+(\S+)$", re.MULTILINE)
_LAG = re.compile(r"^sinergi_consumer_lag_messages\{([^}]*)\}\s+\S+$", re.MULTILINE)
_LABEL = re.compile(r'(\w+)="([^"]*)"')


@dataclass(frozen=True)
class WorkerSample:
    consumed: int
    produced: int
    partitions: frozenset[int]  # the partitions of ``input_topic`` the worker reported lag for (its assignment)


def parse_worker_metrics(text: str, stage: str, input_topic: str) -> WorkerSample:
    """One worker's /metrics: events in and out of ``stage``, and which partitions of ``input_topic`` it holds
    (worker_health sets sinergi_consumer_lag_messages for assigned partitions only, every 2 s)."""
    consumed = produced = 0
    for direction, labels, value in _EVENTS.findall(text):
        if dict(_LABEL.findall(labels)).get("stage") == stage:
            n = int(float(value))
            if direction == "in":
                consumed += n
            else:
                produced += n
    parts = set()
    for labels in _LAG.findall(text):
        found = dict(_LABEL.findall(labels))
        if found.get("stage") == stage and found.get("topic") == input_topic:
            parts.add(int(found["partition"]))
    return WorkerSample(consumed, produced, frozenset(parts))


def run_prefix(run_id: str, workers: int | None = None) -> str:
    """The run's topic prefix; without ``workers``, the prefix of every run of this measurement."""
    return f"bench.scaleout.{run_id}." + (f"{workers}w." if workers is not None else "")


def run_app_id(run_id: str, workers: int | None = None) -> str:
    """The run's Faust app id (group, changelog and internal topics); without ``workers``, their common prefix."""
    return f"sinergi-bench-scaleout-{run_id}-" + (f"{workers}w" if workers is not None else "")


def run_specs(prefix: str) -> dict[str, TopicSpec]:
    """Catalogue name -> the run's copy. Not compacted: the judgement counts every record, re-sends included."""
    return {spec.name: replace(spec, name=prefix + spec.name, compacted=False) for spec in RUN_TOPICS}


def retarget(module: ModuleType, prefix: str) -> dict[str, str]:
    """Replace, in ``module``'s globals, every topic spec of :data:`RUN_TOPICS` by the run's copy; returns
    {catalogue name: new name}. The caller checks that all were found: a reconciler that names its topics
    some other way must fail loudly, not write to the hub's topics."""
    copies = run_specs(prefix)
    renamed: dict[str, str] = {}
    for attr, value in list(vars(module).items()):
        if isinstance(value, TopicSpec) and value.name in copies:
            setattr(module, attr, copies[value.name])
            renamed[value.name] = copies[value.name].name
    return renamed


def listening_pid(port: int, host: str = "127.0.0.1") -> int | None:
    """The process listening on host:port (IPv4), found through /proc; None when not visible to this user."""
    want = "".join(f"{int(octet):02X}" for octet in reversed(host.split("."))) + f":{port:04X}"
    inode = None
    with contextlib.suppress(OSError):
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            cols = line.split()
            if len(cols) > 9 and cols[1] == want and cols[3] == "0A":  # 0A: LISTEN
                inode = cols[9]
                break
    if inode is None:
        return None
    target = f"socket:[{inode}]"
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in (proc / "fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) == target:
                        return int(proc.name)
    return None


# --- figures ----------------------------------------------------------------------------------------------------


@dataclass
class WorkerFigures:
    name: str
    partitions: tuple[int, ...]
    consumed: int
    cpu_s: float | None
    busy_s: float | None = None  # from the first poll that saw it consume to the first that saw its final count


@dataclass
class PhaseFigures:
    """One start of the run's worker(s) over one input: the enrollments, or the payments for them."""

    name: str
    events: int
    seconds: float  # first input consumed -> last output written
    started_s: float  # spawn -> first input consumed (imports, group join, table recovery)
    per_worker: list[WorkerFigures] = field(default_factory=list)
    broker_cpu_s: float | None = None
    bench_cpu_s: float | None = None
    machine_cpu_s: float | None = None  # every core's busy time over the phase, whoever used it
    rebalanced: bool = False

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else math.nan


def _total(values: Iterable[float | None]) -> float | None:
    found = list(values)
    return sum(v for v in found if v is not None) if found and None not in found else None


@dataclass
class RunFigures:
    """One group size: its phases back to back, and the judgement of what it wrote."""

    workers: int
    events: int
    phases: list[PhaseFigures] = field(default_factory=list)
    judgement: Judgement = field(default_factory=Judgement)
    problems: list[str] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return sum(p.seconds for p in self.phases)

    @property
    def rate(self) -> float:
        done = len(self.phases) == PHASES and all(p.seconds > 0 for p in self.phases)
        return self.events / self.seconds if done else math.nan

    @property
    def per_worker(self) -> list[WorkerFigures]:
        """Each worker over every phase (its partitions as of the last one)."""
        out: list[WorkerFigures] = []
        for i in range(self.workers):
            mine = [p.per_worker[i] for p in self.phases if i < len(p.per_worker)]
            if not mine:
                continue
            out.append(
                WorkerFigures(
                    mine[-1].name,
                    mine[-1].partitions,
                    sum(w.consumed for w in mine),
                    _total(w.cpu_s for w in mine),
                    _total(w.busy_s for w in mine),
                )
            )
        return out

    @property
    def redelivered(self) -> int:
        return max(0, sum(w.consumed for w in self.per_worker) - self.events)

    @property
    def rebalanced(self) -> bool:
        return any(p.rebalanced for p in self.phases)

    @property
    def workers_cpu_s(self) -> float | None:
        return _total(w.cpu_s for w in self.per_worker) if self.per_worker else None

    @property
    def broker_cpu_s(self) -> float | None:
        return _total(p.broker_cpu_s for p in self.phases)

    @property
    def bench_cpu_s(self) -> float | None:
        return _total(p.bench_cpu_s for p in self.phases)

    @property
    def machine_cpu_s(self) -> float | None:
        return _total(p.machine_cpu_s for p in self.phases)

    @property
    def others_cpu_s(self) -> float | None:
        """Busy time of processes this measurement did not start (others' tests, a build): it shares the cores."""
        parts = (self.machine_cpu_s, self.workers_cpu_s, self.broker_cpu_s, self.bench_cpu_s)
        if any(p is None for p in parts):
            return None
        machine, workers, broker, bench = (p or 0.0 for p in parts)
        return max(0.0, machine - workers - broker - bench)


def shared_machine(run: RunFigures, limit_cores: float = OTHERS_LIMIT_CORES) -> bool:
    """Whether processes outside the measurement took more than ``limit_cores`` on average during the run."""
    others = run.others_cpu_s
    return others is not None and run.seconds > 0 and others / run.seconds > limit_cores


def _cores(cpu_s: float | None, seconds: float) -> str:
    return f"{cpu_s / seconds:.2f}" if cpu_s is not None and seconds > 0 else "-"


def _share(cpu_s: float | None, seconds: float, cpus: int) -> str:
    if cpu_s is None or seconds <= 0 or cpus <= 0:
        return "-"
    return f"{100 * cpu_s / seconds / cpus:.0f}%"


@dataclass
class ScaleOutFigures:
    service: str
    one_rate: float
    two_rate: float
    ratio: float
    verified: bool
    problems: list[str]
    runs: list[RunFigures] = field(default_factory=list)
    events: int = 0
    partitions: int = 0
    seconds: float = 0.0  # the whole measurement, set-up and clean-up included
    notes: list[str] = field(default_factory=list)  # conditions that make a figure doubtful without failing it

    @property
    def target_met(self) -> bool:
        return not math.isnan(self.ratio) and self.ratio >= TARGET_RATIO

    def lines(self) -> list[str]:
        pad = " " * 6
        cpus = os.cpu_count() or 0
        out = [
            f"{pad}{self.service} scale-out over {self.events:,} normalized events on fresh topics ({self.partitions} "
            f"partitions), a fresh group per run: {self.events // 2:,} enrollments, then the payments for them "
            f"({self.seconds:.0f} s in all)"
        ]
        for run in self.runs:
            label = "1 worker " if run.workers == 1 else f"{run.workers} workers"
            ratio = ""
            if run.workers > 1 and not math.isnan(self.ratio):
                verdict = "met" if self.target_met else "NOT met"
                ratio = f" = {self.ratio:.2f}x one worker (target >= {TARGET_RATIO:.1f}x: {verdict})"
            out.append(f"{pad}  {label}: {run.events:>8,} in {run.seconds:6.2f} s = {run.rate:>7,.0f} events/s{ratio}")
            phases = "; ".join(
                f"{p.name} {p.events:,} in {p.seconds:.2f} s ({p.rate:,.0f}/s, first input {p.started_s:.1f} s after "
                "the spawn)"
                for p in run.phases
            )
            out.append(f"{pad}    {phases}")
            workers_cpu = run.workers_cpu_s
            per_event = f", {workers_cpu * 1000 / run.events:.2f} ms/event" if workers_cpu and run.events else ""
            out.append(
                f"{pad}    cores over the run: workers {_cores(workers_cpu, run.seconds)}{per_event}; broker "
                f"{_cores(run.broker_cpu_s, run.seconds)} ({_share(run.broker_cpu_s, run.seconds, cpus)} of {cpus} "
                f"cores); this process {_cores(run.bench_cpu_s, run.seconds)}; other processes "
                f"{_cores(run.others_cpu_s, run.seconds)}"
            )
            for w in run.per_worker:
                parts = ",".join(str(p) for p in w.partitions) or "-"
                busy = f"consuming for {w.busy_s:.1f} s, " if w.busy_s is not None else ""
                out.append(
                    f"{pad}    {w.name}: partitions {parts}, {w.consumed:,} events, {busy}"
                    f"{_cores(w.cpu_s, run.seconds)} core"
                )
            j = run.judgement
            exceptions = ", ".join(f"{k} {v:,}" for k, v in sorted(j.exceptions.items())) or "-"
            out.append(
                f"{pad}    output: {j.exact:,} of {j.members:,} members ACTIVE with exactly their payment, "
                f"{j.missing} missing, {j.wrong_final} other, {j.contradictions} contradictory; {j.records:,} member "
                f"records ({j.repeats} re-sent), {run.redelivered} inputs redelivered"
                f"{', a rebalance during the run' if run.rebalanced else ''}; exceptions [{exceptions}]"
            )
        out.append(f"{pad}  verified exact: {'yes' if self.verified else 'NO'}")
        out += [f"{pad}  scale-out NOTE: {n}" for n in self.notes]
        out += [f"{pad}  scale-out PROBLEM: {p}" for p in self.problems]
        return out


# --- inputs ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Canonical:
    topic: str  # the catalogue name (enrollments.v1 or payments.v1)
    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]


def canonical_inputs(
    settings: Settings, codec: Any, events: int, now: datetime
) -> tuple[list[Canonical], dict[str, Expected]]:
    """The bench's clean backlog, normalized by the normalizers' own calls and encoded as they encode it."""
    from services import normalize_enrollments
    from services.context import build_context
    from services.domain.payment import normalize_payment
    from services.simulation.backlog import build_backlog
    from services.stage import header_map, header_str, received_at

    ctx = build_context(settings, codec)
    # Quoted at the simulated reference rates, which `make bench` has published by then (its (b)): no payment is
    # flagged FX_REFERENCE_RATE_MISSING unless this runs alone.
    backlog = build_backlog(settings, max(1, events // 2), SEED, now, pin_fx=True)
    out: list[Canonical] = []
    enrolled: dict[str, str] = {}
    paid: dict[str, tuple[str, int]] = {}
    for raw in backlog.enrollments:
        headers = header_map(raw.headers)
        accepted = received_at(headers)
        enrollment = normalize_enrollments.convert(ctx, _json(raw.value), headers, accepted)
        enrolled[enrollment.participant_id] = enrollment.event_id
        out.append(_canonical(ENROLLMENTS, codec, enrollment, accepted))
    for raw in backlog.payments:
        headers = header_map(raw.headers)
        accepted = received_at(headers)
        bank_id = header_str(headers, "sinergi-bank")
        bank = ctx.banks[bank_id]
        payment = normalize_payment(
            _json(raw.value),
            bank_id=bank_id,
            partner_service_id=bank.partner_service_id,
            allowed_currencies=bank.currencies,
            external_id=header_str(headers, "sinergi-external-id"),
            received_at=accepted,
        )
        paid[payment.participant_id] = (payment.event_id, payment.amount_idr)
        out.append(_canonical(PAYMENTS, codec, payment, accepted))
    expected = {pid: Expected(pid, enrollment_id, *paid[pid]) for pid, enrollment_id in enrolled.items() if pid in paid}
    return out, expected


def _json(value: bytes) -> dict[str, Any]:
    import orjson

    body = orjson.loads(value)
    if not isinstance(body, dict):
        raise ValueError("a backlog record is not a JSON object")
    return body


def _canonical(spec: TopicSpec, codec: Any, model: Any, accepted: datetime) -> Canonical:
    # What Stage sends for a normalized record: key = participant key, the event id and acceptance time as headers.
    return Canonical(
        spec.name,
        model.participant_id.encode(),
        codec.encode(spec.value_schema or "", model),
        [("sinergi-event-id", model.event_id.encode()), ("sinergi-received-at", accepted.isoformat().encode())],
    )


# --- the worker process ------------------------------------------------------------------------------------------


def worker_main(argv: Sequence[str] | None = None) -> None:
    """``python -m services.bench_scaleout --prefix P --app-id A --metrics-port N``: the reconciler on a run's
    own topics and group (module docstring), with the hub's worker wiring (probes, watchdog, health)."""
    parser = argparse.ArgumentParser(prog="services.bench_scaleout")
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--app-id", required=True)
    parser.add_argument("--metrics-port", type=int, required=True)
    args = parser.parse_args(argv)

    from services import logs, reconcile
    from services.app import create_app
    from services.codec import build_codec
    from services.context import build_context
    from services.worker import run_faust_app
    from services.worker_health import WorkerHealth, serve_probes

    settings = Settings()
    logs.configure(settings.log_level, settings.log_json)
    if settings.kafka_bootstrap is None:
        raise SystemExit("SINERGI_KAFKA_BOOTSTRAP is not set")
    renamed = retarget(reconcile, args.prefix)
    if set(renamed) != {spec.name for spec in RUN_TOPICS}:
        raise SystemExit(f"services.reconcile names its topics otherwise: only {sorted(renamed)} could be replaced")
    health = WorkerHealth(reconcile.NAME, settings.worker_stall_after_s)
    serve_probes(health, args.metrics_port, settings.http_host)
    app = create_app(reconcile.NAME, settings, settings.kafka_bootstrap)
    app.conf.id = args.app_id  # before register(): the group id and the changelog's name are read from it later
    reconcile.register(app, build_context(settings, build_codec(settings)))
    run_faust_app(app, settings, health)


# --- the measurement ----------------------------------------------------------------------------------------------


@dataclass
class _Sample:
    at: float  # wall clock (time.time()): comparable with the outputs' producer timestamps
    workers: list[WorkerSample | None]
    cpu: list[float | None]
    broker_cpu: float | None
    bench_cpu: float
    machine_busy: float | None  # CPU seconds all cores spent busy since boot: what others took shows too


def machine_busy_s(stat: str | None = None) -> float | None:
    """CPU seconds every core spent busy since boot (/proc/stat: all but idle and iowait), or None."""
    try:
        text = stat if stat is not None else Path("/proc/stat").read_text()
        ticks = [int(v) for v in text.splitlines()[0].split()[1:]]
    except (OSError, ValueError, IndexError):
        return None
    if len(ticks) < 4:
        return None
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)
    # guest time is already counted in user and nice
    return (sum(ticks[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _bench_cpu_s() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class _Phase:
    """The worker processes of one phase of one run: spawned, watched until their input is done, stopped."""

    def __init__(self, run: _RunSetup, name: str, events: int) -> None:
        self.run = run
        self.name = name
        self.events = events  # inputs this phase must consume
        self.children: list[Any] = []
        self.samples: list[_Sample] = []
        self.spawned_at = 0.0  # wall clock

    def spawn(self) -> None:
        from connectors.embedded import free_port
        from services.supervisor import Child

        run, s = self.run, self.run.hub.settings
        for i in range(1, run.workers + 1):
            port = free_port(s.http_host)
            argv = [sys.executable, "-m", "services.bench_scaleout", "--prefix", run.prefix, "--app-id", run.app_id]
            name = f"scaleout-{run.workers}w-{i}"
            child = Child(name, [*argv, "--metrics-port", str(port)], f"http://{s.http_host}:{port}/metrics")
            # A data directory per worker: two workers of one app on one machine must not share Faust's files.
            child.env = {"SINERGI_DATA_DIR": str(run.root / name)}
            self.children.append(child)
            run.hub.supervisor.children.append(child)  # so that Hub.stop() ends it whatever happens here
        self.spawned_at = time.time()
        for child in self.children:
            run.hub.supervisor.spawn(child, run.hub.env)

    def exited(self) -> list[str]:
        return [
            f"{c.name} exited with {c.proc.returncode}" for c in self.children if c.proc and c.proc.poll() is not None
        ]

    async def sample(self, client: httpx.AsyncClient) -> _Sample:
        from services.bench import process_cpu_s

        topic = self.run.specs[ENROLLMENTS.name].name

        async def one(url: str) -> WorkerSample | None:
            try:
                return parse_worker_metrics((await client.get(url)).text, SERVICE, topic)
            except httpx.HTTPError:
                return None  # not serving yet, or gone

        found = await asyncio.gather(*(one(c.url) for c in self.children))
        cpu = [process_cpu_s(c.proc.pid if c.proc else None) for c in self.children]
        broker = process_cpu_s(self.run.broker_pid)
        sample = _Sample(time.time(), list(found), cpu, broker, _bench_cpu_s(), machine_busy_s())
        self.samples.append(sample)
        return sample

    async def watch(self, deadline_s: float) -> list[str]:
        """Poll until every input is consumed and no output has been counted for SETTLE_S; problems found."""
        now = time.monotonic()
        deadline, join_by = now + deadline_s, now + JOIN_DEADLINE_S
        progress, progress_at = (-1, -1), now
        async with httpx.AsyncClient(timeout=2.0) as client:
            while True:
                if gone := self.exited():
                    return gone
                sample = await self.sample(client)
                now = time.monotonic()
                consumed = sum(w.consumed for w in sample.workers if w is not None)
                counts = (consumed, sum(w.produced for w in sample.workers if w is not None))
                if counts != progress:
                    progress, progress_at = counts, now
                if consumed >= self.events and now - progress_at >= SETTLE_S:
                    return []
                if consumed == 0 and now > join_by:
                    return [f"nothing consumed {JOIN_DEADLINE_S:.0f} s after the spawn"]
                if consumed and now - progress_at > STALL_S:
                    return [
                        f"stalled: {consumed:,} of {self.events:,} inputs consumed, nothing more for {STALL_S:.0f} s"
                    ]
                if now > deadline:
                    return [f"only {consumed:,} of {self.events:,} inputs consumed within {deadline_s:.0f} s"]
                everyone = all(w is not None and w.consumed > 0 for w in sample.workers)
                await asyncio.sleep(SLOW_POLL_S if everyone else FAST_POLL_S)

    async def stop(self) -> None:
        """SIGTERM: Faust commits what it processed and leaves the group (the next phase joins a clean group)."""
        for child in self.children:
            if child.proc is not None and child.proc.poll() is None:
                child.proc.terminate()
        for child in self.children:
            if child.proc is None:
                continue
            try:
                await asyncio.to_thread(child.proc.wait, STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                child.proc.kill()
                await asyncio.to_thread(child.proc.wait, 5.0)

    def figures(self, last_output: float | None) -> tuple[PhaseFigures, list[str]]:
        samples, problems = self.samples, []
        first = next((i for i, s in enumerate(samples) if _consumed(s) > 0), None)
        # The last poll that saw nothing consumed: the first input came after it (a lower bound: errs slow).
        start = samples[first - 1] if first else None
        if first == 0:
            problems.append(f"{self.name}: inputs consumed before the first poll: no start time")
        if last_output is None and samples:
            problems.append(f"{self.name}: no output")
        # The first poll after the last output: CPU is counted to there.
        end = next((s for s in samples if last_output is not None and s.at >= last_output), None)
        end = end or (samples[-1] if samples else None)
        seconds = max(0.0, last_output - start.at) if start is not None and last_output is not None else 0.0
        per_worker = []
        for i, child in enumerate(self.children):
            seen = [(s.at, w) for s in samples if (w := s.workers[i]) is not None]
            final = seen[-1][1] if seen else None
            count = final.consumed if final is not None else 0
            first_at = next((at for at, w in seen if w.consumed > 0), None)
            done_at = next((at for at, w in seen if count and w.consumed >= count), None)
            per_worker.append(
                WorkerFigures(
                    child.name,
                    tuple(sorted(final.partitions)) if final is not None else (),
                    count,
                    _delta(start.cpu[i] if start else None, end.cpu[i] if end else None),
                    busy_s=_delta(first_at, done_at),
                )
            )
        # Every distinct assignment a worker reported: more than one means the group rebalanced during the phase.
        assignments = [
            {w.partitions for s in samples if (w := s.workers[i]) and w.partitions} for i in range(len(per_worker))
        ]
        return (
            PhaseFigures(
                name=self.name,
                events=self.events,
                seconds=seconds,
                started_s=start.at - self.spawned_at if start is not None else 0.0,
                per_worker=per_worker,
                broker_cpu_s=_delta(start.broker_cpu if start else None, end.broker_cpu if end else None),
                bench_cpu_s=_delta(start.bench_cpu if start else None, end.bench_cpu if end else None),
                machine_cpu_s=_delta(start.machine_busy if start else None, end.machine_busy if end else None),
                rebalanced=any(len(seen) > 1 for seen in assignments),
            ),
            problems,
        )


@dataclass
class _RunSetup:
    hub: Any  # services.bench.Hub
    root: Path
    run_id: str
    workers: int
    broker_pid: int | None

    @property
    def prefix(self) -> str:
        return run_prefix(self.run_id, self.workers)

    @property
    def app_id(self) -> str:
        return run_app_id(self.run_id, self.workers)

    @property
    def specs(self) -> dict[str, TopicSpec]:
        return run_specs(self.prefix)

    def records(self, inputs: Iterable[Canonical], catalogue_topic: str) -> list[Any]:
        from services.simulation.backlog import RawRecord

        name = self.specs[catalogue_topic].name
        return [RawRecord(name, c.key, c.value, c.headers) for c in inputs if c.topic == catalogue_topic]


def _consumed(sample: _Sample) -> int:
    return sum(w.consumed for w in sample.workers if w is not None)


def _delta(before: float | None, after: float | None) -> float | None:
    return after - before if before is not None and after is not None else None


def _read_outputs(
    bootstrap: str, codec: Any, specs: Mapping[str, TopicSpec]
) -> tuple[list[RecordFact], list[ExceptionFact], list[float]]:
    """Every record of the run's members and exceptions topics, and every output's producer timestamp (s)."""
    from services.topic_snapshot import read_to_end
    from services.verify import exception_fact, record_fact

    members, exceptions = specs[MEMBERS.name].name, specs[EXCEPTIONS.name].name
    records: list[RecordFact] = []
    raised: list[ExceptionFact] = []
    stamps: list[float] = []
    for msg in read_to_end(bootstrap, [members, exceptions], timeout_s=30.0, client="sinergi-bench-scaleout"):
        value = msg.value()
        if not value:
            continue
        kind, stamp = msg.timestamp()
        if kind != 0 and stamp > 0:  # 0: TIMESTAMP_NOT_AVAILABLE
            stamps.append(stamp / 1000.0)
        _, datum = codec.decode(value)
        if msg.topic() == members:
            records.append(record_fact(members, datum, value))
        else:
            raised.append(exception_fact(datum))
    return records, raised, stamps


def _delete_run_topics(bootstrap: str, prefixes: Sequence[str]) -> None:
    """The runs' topics, the Faust changelogs and internal topics included (Tansu keeps every record in memory)."""
    from kafka import KafkaAdminClient

    with contextlib.suppress(Exception):
        admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="sinergi-bench-scaleout")
        try:
            names = [t for t in admin.list_topics() if t.startswith(tuple(prefixes))]
            if names:
                admin.delete_topics(names)
        finally:
            admin.close()


async def _one_run(
    run: _RunSetup, inputs: Sequence[Canonical], expected: Mapping[str, Expected], codec: Any
) -> RunFigures:
    """The enrollments (pre-loaded already), then, with the worker(s) stopped, the payments pre-loaded and the
    worker(s) started again. In production a payment follows its enrollment (it needs the VA number); pre-loading
    both at once would leave their order to the consumer's fetch order, which differs from run to run and changes
    the work (a payment held for want of its enrollment costs more), so the two group sizes would not do the same."""
    from services.bench import _preload

    bootstrap = run.hub.settings.kafka_bootstrap
    figures = RunFigures(run.workers, len(inputs))
    boundaries: list[float] = []  # wall clock at each phase's spawn: outputs before it belong to earlier phases
    phases: list[_Phase] = []
    print(f"bench: scale-out, {run.workers} reconciler worker(s) over {len(inputs):,} events ...", flush=True)
    for name, topic in (("enrollments", ENROLLMENTS.name), ("payments", PAYMENTS.name)):
        if topic == PAYMENTS.name:
            await _preload(bootstrap, run.records(inputs, topic))
        phase = _Phase(run, name, sum(1 for c in inputs if c.topic == topic))  # new processes count from 0
        phases.append(phase)
        phase.spawn()
        boundaries.append(phase.spawned_at)
        try:
            problems = await phase.watch(JOIN_DEADLINE_S + 30.0 + len(inputs) / 150)
        finally:
            await phase.stop()
        if problems:
            figures.problems += [f"{name}: {p}" for p in problems]
            break
    # Judged whatever happened, so that a failed run still says what reached the output. Outputs a settle window
    # did not show yet are read again, a bounded number of times.
    for attempt in range(1 if figures.problems else 5):
        if attempt:
            await asyncio.sleep(2.0)
        records, raised, stamps = await asyncio.to_thread(_read_outputs, bootstrap, codec, run.specs)
        figures.judgement = judge_outputs(expected, records, raised)
        if figures.judgement.missing == 0 and figures.judgement.wrong_final == 0:
            break
    figures.problems += figures.judgement.problems
    for i, phase in enumerate(phases):
        until = boundaries[i + 1] if i + 1 < len(boundaries) else math.inf
        last = max((t for t in stamps if boundaries[i] <= t < until), default=None)
        phase_figures, problems = phase.figures(last)
        figures.phases.append(phase_figures)
        figures.problems += problems
        if run.workers > 1:
            figures.problems += [
                f"{phase.name}: {p}"
                for p in evenness_problems(
                    {w.name: w.partitions for w in phase_figures.per_worker}, run.hub.settings.kafka_partitions
                )
            ]
    return figures


async def measure_scaleout(
    settings: Settings, bootstrap: str, root: Path, events: int, *, broker_pid: int | None = None
) -> ScaleOutFigures:
    """One reconciler worker, then two in one group, each over its own copy of ``events`` normalized inputs on the
    running broker at ``bootstrap``; logs and worker data under ``root``/scaleout. Starts the embedded schema
    registry when ``settings`` names none. ``broker_pid`` (for the broker's CPU share) is found from the
    listening port when not given and the broker is on this machine."""
    from services.bench import Hub, _preload, _wait_http
    from services.codec import build_codec
    from services.topics import create_topics
    from services.verify import reading_codec

    began = time.monotonic()
    if events < 2:
        raise ValueError("events must be at least 2")
    base = root / "scaleout"
    base.mkdir(parents=True, exist_ok=True)
    if broker_pid is None:
        host, _, port = bootstrap.split(",")[0].rpartition(":")
        if host in ("127.0.0.1", "localhost") and port.isdigit():
            broker_pid = listening_pid(int(port))
    run_id = uuid.uuid4().hex[:8]
    hub = Hub.prepare(settings, bootstrap, base)
    runs = [_RunSetup(hub, base, run_id, n, broker_pid) for n in (1, 2)]
    figures = ScaleOutFigures(
        SERVICE, math.nan, math.nan, math.nan, False, [], partitions=hub.settings.kafka_partitions
    )
    try:
        specs = [FX_RATES, *DEAD_LETTERS] + [s for run in runs for s in run.specs.values()]
        await asyncio.to_thread(create_topics, bootstrap, hub.settings, tuple(specs))
        if hub.embedded_registry:
            hub._spawn(["registry"])
            await _wait_http(f"{hub.settings.schema_registry_url}/subjects", 30.0)
        codec = await asyncio.to_thread(build_codec, hub.settings)
        print(f"bench: scale-out, normalizing {events:,} events ...", flush=True)
        inputs, expected = await asyncio.to_thread(canonical_inputs, hub.settings, codec, events, datetime.now(UTC))
        figures.events = len(inputs)
        await _preload(bootstrap, [r for run in runs for r in run.records(inputs, ENROLLMENTS.name)])
        reader = reading_codec(str(hub.settings.schema_registry_url), hub.settings)
        for run in runs:
            figures.runs.append(await _one_run(run, inputs, expected, reader))
    except Exception as exc:  # the bench goes on with its other figures; this one says why it has none
        figures.problems.append(f"the measurement failed: {type(exc).__name__}: {exc}"[:300])
    finally:
        await asyncio.to_thread(hub.stop)
        await asyncio.to_thread(_delete_run_topics, bootstrap, [run_prefix(run_id), run_app_id(run_id)])
    if len(figures.runs) == len(runs):
        one, two = figures.runs
        figures.one_rate, figures.two_rate = one.rate, two.rate
        figures.ratio = scale_ratio(one.rate, two.rate)
    figures.problems += [f"{r.workers} worker(s): {p}" for r in figures.runs for p in r.problems]
    figures.verified = len(figures.runs) == len(runs) and all(
        r.judgement.ok and r.judgement.members > 0 for r in figures.runs
    )
    for done in figures.runs:
        if shared_machine(done):
            others = (done.others_cpu_s or 0.0) / done.seconds
            figures.notes.append(
                f"{done.workers} worker(s): other processes used {others:.2f} cores during the run (others' tests?): "
                "the machine was shared, so the rates and their ratio understate this hub"
            )
    figures.seconds = time.monotonic() - began
    return figures


if __name__ == "__main__":
    worker_main()
