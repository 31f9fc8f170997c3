"""Floors (issue 8): what the frameworks the hub must use cost on this machine before any of sinergi's own work.

`make bench-floor` (``python -m services.bench_floor``), on the embedded broker unless SINERGI_KAFKA_BOOTSTRAP is
set, in one run:

(a)  the raw aiokafka loop of `make bench` (services.bench.baseline), for the ratio;
(f1) Faust floor: a faust-streaming worker built like every stage (services.app.create_app, the hub's worker
     wiring with its probes and /metrics, batches taken through services.batches and sent through
     services.outbox) whose agent forwards each record unchanged: no decoding, validation or Avro. CPU per event
     of that process over a backlog of the bench's payment notifications (4 partitions);
(f2) HTTP floor: a FastAPI app served by uvicorn as the partner APIs are (uvloop, httptools, the same garbage
     collector settings), one POST endpoint that parses the JSON body and answers; then the same endpoint
     answering only once the hub's EdgeProducer has Kafka's acknowledgement. Requests per CPU-second of that
     process, closed loop on 32 keep-alive connections (services.bench_ingest's client).

Then the arithmetic of what targets 1 and 3 leave once the floors are paid. The figures are what `make bench`'s
stages and APIs are compared with in BENCHMARKS.md: a stage's CPU per event above the Faust floor, an API's CPU per
request above the HTTP floor, is sinergi's own work.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response

from services.config import Settings

STAGE = "floor"
PAYMENT_PATH = "/v1.0/transfer-va/payment"
ACCEPTED = orjson.dumps({"responseCode": "2002500", "responseMessage": "Successful"})
HTTP_WARMUP_S = 2.0
HTTP_SECONDS = 8.0
HTTP_CONCURRENCY = 32
FAUST_DEADLINE_S = 180.0
# Faust stage inputs per record of make bench's mixed stream (enrollments, payments, statements): the per-stage
# input counts of (b) over its records, 2026-12-07 (60,929 over 19,889, the core publisher excluded: no Faust).
FAUST_INPUTS_PER_RECORD = 3.06
TARGET1_SHARE = 0.125  # of the raw loop's rate, end to end
TARGET3_PER_CPU_S = 3000.0
CORES = os.cpu_count() or 1


# --- the Faust floor worker (a child process) ----------------------------------------------------------------------


def faust_worker(topic_in: str, topic_out: str, port: int) -> None:
    """A stage that forwards: the hub's app, worker wiring, batches and outbox, nothing else."""
    from services import logs
    from services.app import create_app, topic
    from services.batches import batches_of, run_to_the_end
    from services.outbox import Outbox
    from services.stage import Stage
    from services.worker import run_faust_app
    from services.worker_health import WorkerHealth, serve_probes

    settings = Settings()
    logs.configure(settings.log_level, settings.log_json)
    if settings.kafka_bootstrap is None:
        raise SystemExit("SINERGI_KAFKA_BOOTSTRAP is not set")
    health = WorkerHealth(STAGE, settings.worker_stall_after_s)
    serve_probes(health, port, settings.http_host)
    app = create_app(STAGE, settings, settings.kafka_bootstrap)
    stage = Stage(app, STAGE)
    bound = (settings.stage_batch_max, settings.stage_batch_within_ms / 1000.0)

    async def forward(events: list[Any]) -> None:
        outbox = Outbox(app, STAGE)
        for event in events:
            stage.consumed(event)
            msg = event.message
            outbox.add(topic_out, msg.key, msg.value, list(msg.headers or []))
        await outbox.send()

    @app.agent(topic(app, topic_in), name=STAGE)
    async def floor(stream: Any) -> None:
        async for events in batches_of(stream, STAGE, *bound):
            await run_to_the_end(STAGE, forward(events))

    run_faust_app(app, settings, health)


def bare_faust_worker(topic_in: str, port: int) -> None:
    """faust-streaming as its documentation shows it, with nothing of the hub: an agent iterating its stream, no
    output, no batches; only the group timeouts are the hub's (Tansu answers a join after about half of them)."""
    import logging

    import faust
    from prometheus_client import start_http_server

    from services import metrics

    settings = Settings()
    if settings.kafka_bootstrap is None:
        raise SystemExit("SINERGI_KAFKA_BOOTSTRAP is not set")
    start_http_server(port, settings.http_host)
    app = faust.App(
        f"sinergi-bare-floor-{os.getpid()}",
        broker=[f"kafka://{host}" for host in settings.kafka_bootstrap.split(",")],
        store="memory://",
        broker_session_timeout=settings.consumer_session_timeout_s,
        broker_rebalance_timeout=settings.consumer_rebalance_timeout_s,
        broker_heartbeat_interval=settings.consumer_heartbeat_interval_s,
        consumer_auto_offset_reset="earliest",
        web_enabled=False,
        datadir=str(Path(settings.data_dir) / "bare-floor"),
    )
    counted = metrics.EVENTS_IN.labels(STAGE, topic_in)
    source = app.topic(topic_in, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")

    @app.agent(source, name=STAGE)
    async def floor(stream: Any) -> None:
        async for _event in stream.events():
            counted.inc()

    @app.task
    async def quiet_root_logger() -> None:
        logging.getLogger().setLevel(logging.WARNING)  # shared/perf-notes.md: a worker leaves it at DEBUG

    faust.Worker(app, loglevel="warning", quiet=True).execute_from_commandline()


# --- the HTTP floor app (a child process) --------------------------------------------------------------------------


def http_app(producer: Any | None, topic: str) -> FastAPI:
    """One POST endpoint: parse the JSON body, (with a producer) wait for Kafka's acknowledgement, answer."""
    app = FastAPI()

    @app.post(PAYMENT_PATH)
    async def payment(request: Request) -> Response:
        body = orjson.loads(await request.body())
        if producer is not None:
            await producer.send(topic, b"floor", orjson.dumps(body), [])
        return Response(ACCEPTED, media_type="application/json")

    return app


def http_server(port: int, topic: str | None) -> None:
    import uvicorn

    from connectors.serve import calm_garbage_collector

    settings = Settings()
    producer = None
    if topic is not None:
        from connectors.kafka_edge import EdgeProducer

        if settings.kafka_bootstrap is None:
            raise SystemExit("SINERGI_KAFKA_BOOTSTRAP is not set")
        producer = EdgeProducer(settings, settings.kafka_bootstrap, client_id="sinergi-floor")
        producer.start()
    app = http_app(producer, topic or "")
    calm_garbage_collector()
    uvicorn.run(app, host=settings.http_host, port=port, log_level="warning", access_log=False)


# --- figures -------------------------------------------------------------------------------------------------------


@dataclass
class FaustFloor:
    events: int
    seconds: float
    cpu_s: float

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0

    @property
    def us_per_event(self) -> float:
        return self.cpu_s * 1e6 / self.events if self.events else 0.0


@dataclass
class HttpFloor:
    label: str
    accepted: int
    refused: int
    wall_s: float
    cpu_s: float
    p50_ms: float
    p99_ms: float

    @property
    def per_cpu_s(self) -> float:
        return self.accepted / self.cpu_s if self.cpu_s > 0 else 0.0

    @property
    def us_per_request(self) -> float:
        return self.cpu_s * 1e6 / self.accepted if self.accepted else 0.0


def budget_lines(
    raw_rate: float, faust: FaustFloor | None, bare: FaustFloor | None, http: HttpFloor | None
) -> list[str]:
    """What targets 1 and 3 leave for sinergi's own work once the frameworks' floors are paid."""
    lines: list[str] = []
    if raw_rate > 0 and faust is not None and faust.events:
        wanted = TARGET1_SHARE * raw_rate
        per_record_us = CORES * 1e6 / wanted
        lines.append(
            f"target 1 wants {wanted:,.0f} records/s end to end = {per_record_us:,.0f} µs of CPU per record on "
            f"{CORES} cores for everything (stages, broker, the core publisher); a record crosses "
            f"{FAUST_INPUTS_PER_RECORD} Faust stage inputs"
        )
        for label, floor in (("the stage floor", faust), ("faust-streaming alone", bare)):
            if floor is None or not floor.events:
                continue
            floor_us = FAUST_INPUTS_PER_RECORD * floor.us_per_event
            left = per_record_us - floor_us
            verdict = (
                f"leaving {left:,.0f} µs per record for decoding, validation, Avro, state and the broker"
                if left > 0
                else f"{-left:,.0f} µs more than the whole budget before any work"
            )
            product = f"{FAUST_INPUTS_PER_RECORD} x {floor.us_per_event:,.0f} = {floor_us:,.0f} µs"
            lines.append(f"  {label}: {product}, {verdict}")
    if http is not None and http.accepted:
        budget_us = 1e6 / TARGET3_PER_CPU_S
        left = budget_us - http.us_per_request
        lines.append(
            f"target 3 wants {TARGET3_PER_CPU_S:,.0f} notifications per CPU-second = {budget_us:,.0f} µs each; "
            f"the HTTP + Kafka floor takes {http.us_per_request:,.0f} µs"
        )
        lines.append(
            f"  leaving {left:,.0f} µs for the SNAP signature and token checks, validation, idempotency and metrics"
            if left > 0
            else f"  {-left:,.0f} µs more than the whole budget before any SNAP work: not reachable with this stack"
        )
    return lines


# --- the measurement -----------------------------------------------------------------------------------------------


def _spawn(args: Sequence[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(  # noqa: S603 - this interpreter, this module, arguments we build
            [sys.executable, "-m", "services.bench_floor", *args], env=env, stdout=out, stderr=subprocess.STDOUT
        )


async def measure_faust(
    settings: Settings, bootstrap: str, records: Sequence[Any], root: Path, bare: bool = False
) -> FaustFloor:
    from connectors.embedded import free_port
    from services.bench import (
        EVENTS_IN_ONLY,
        RawRecord,
        _create_scratch_topics,
        _delete_scratch_topics,
        _preload,
        _stop_process,
        process_cpu_s,
        stage_events_in,
    )

    run = f"{os.getpid()}-{int(time.time())}"
    topic_in, topic_out = f"bench.floor.in.{run}", f"bench.floor.out.{run}"
    await asyncio.to_thread(_create_scratch_topics, bootstrap, [topic_in, topic_out], settings.kafka_partitions)
    try:
        await _preload(bootstrap, [RawRecord(topic_in, r.key, r.value, r.headers) for r in records])
        port = free_port(settings.http_host)
        env = dict(os.environ, SINERGI_KAFKA_BOOTSTRAP=bootstrap, SINERGI_DATA_DIR=str(root / "faust"))
        args = ["bare-faust-worker", topic_in, str(port)] if bare else ["faust-worker", topic_in, topic_out, str(port)]
        proc = _spawn(args, env, root / f"{args[0]}.log")
        url = f"http://{settings.http_host}:{port}/metrics"
        first: tuple[float, int, float] | None = None
        last: tuple[float, int, float] | None = None
        try:
            async with httpx.AsyncClient(timeout=2.0) as client:
                deadline = time.monotonic() + FAUST_DEADLINE_S
                while time.monotonic() < deadline and proc.poll() is None:
                    try:
                        count = stage_events_in((await client.get(url, params=EVENTS_IN_ONLY)).text, STAGE)
                    except httpx.HTTPError:
                        count = 0
                    sample = (time.monotonic(), count, process_cpu_s(proc.pid) or 0.0)
                    if count and first is None:
                        first = sample
                    if last is None or count > last[1]:
                        last = sample
                    if count >= len(records):
                        break
                    await asyncio.sleep(0.2)
        finally:
            await _stop_process(proc)
    finally:
        await asyncio.to_thread(_delete_scratch_topics, bootstrap, [topic_in, topic_out])
    if first is None or last is None or last[1] < len(records):
        got = last[1] if last else 0
        raise RuntimeError(f"the Faust floor worker consumed {got} of {len(records)} records (see its log in {root})")
    return FaustFloor(last[1] - first[1], last[0] - first[0], last[2] - first[2])


async def measure_http(settings: Settings, bootstrap: str | None, root: Path, wire: bytes) -> HttpFloor:
    from connectors.embedded import free_port
    from services.bench import (
        _create_scratch_topics,
        _delete_scratch_topics,
        _stop_process,
        percentile,
        process_cpu_s,
    )
    from services.bench_ingest import Tally, closed_loop, connect

    port = free_port(settings.http_host)
    topic = f"bench.floor.http.{os.getpid()}" if bootstrap else None
    if bootstrap and topic:
        await asyncio.to_thread(_create_scratch_topics, bootstrap, [topic], settings.kafka_partitions)
    env = dict(os.environ, SINERGI_KAFKA_BOOTSTRAP=bootstrap or "")
    args = ["http", str(port), *([topic] if topic else [])]
    proc = _spawn(args, env, root / "http.log")

    def requests() -> Iterator[bytes]:
        while True:
            yield wire

    try:
        for _ in range(150):
            try:
                (await connect(settings.http_host, port)).close()
                break
            except OSError:
                await asyncio.sleep(0.1)
        await closed_loop(settings.http_host, port, requests(), HTTP_WARMUP_S, HTTP_CONCURRENCY, Tally(Counter()))
        tally = Tally(Counter())
        before = process_cpu_s(proc.pid) or 0.0
        wall = await closed_loop(settings.http_host, port, requests(), HTTP_SECONDS, HTTP_CONCURRENCY, tally)
        cpu = (process_cpu_s(proc.pid) or 0.0) - before
    finally:
        await _stop_process(proc)
        if bootstrap and topic:
            await asyncio.to_thread(_delete_scratch_topics, bootstrap, [topic])
    ms = [v * 1000 for v in tally.latencies]
    return HttpFloor(
        "answered after Kafka's ack" if topic else "no Kafka",
        len(ms),
        sum(tally.refusals.values()),
        wall,
        cpu,
        percentile(ms, 50) if ms else 0.0,
        percentile(ms, 99) if ms else 0.0,
    )


def payment_wire(host: str, body: bytes) -> bytes:
    """An HTTP/1.1 request the size of a signed SNAP notification (its headers carry no valid signature: the floor
    endpoint checks none)."""
    head = [
        f"POST {PAYMENT_PATH} HTTP/1.1",
        f"Host: {host}",
        "Content-Type: application/json",
        "Authorization: Bearer " + "t" * 64,
        "X-TIMESTAMP: 2026-12-07T10:00:00+07:00",
        "X-SIGNATURE: " + "s" * 88,
        "X-PARTNER-ID: FLOOR",
        "X-EXTERNAL-ID: 1234567890",
        "CHANNEL-ID: 95231",
        f"Content-Length: {len(body)}",
    ]
    return ("\r\n".join(head) + "\r\n\r\n").encode("ascii") + body


@dataclass
class Floors:
    raw_rate: float  # (a) of the same run, events/s
    faust: FaustFloor
    bare: FaustFloor
    plain: HttpFloor
    acked: HttpFloor

    def lines(self, indent: str = "  ") -> list[str]:
        def of_raw(floor: FaustFloor) -> str:
            ratio = floor.rate / self.raw_rate if self.raw_rate else float("nan")
            return f"{floor.rate:>8,.0f}/s  {floor.us_per_event:5.0f} µs CPU/event  {ratio:.3f} of (a)"

        out = [
            f"(f1) Faust floor: a stage that forwards          {self.faust.events:>8,} in {self.faust.seconds:6.2f} s "
            f"= {of_raw(self.faust)}",
            f"     faust-streaming alone: an agent that counts {self.bare.events:>8,} in {self.bare.seconds:6.2f} s "
            f"= {of_raw(self.bare)}",
        ]
        for h in (self.plain, self.acked):
            out.append(
                f"(f2) HTTP floor, FastAPI on uvicorn, {h.label:<27} {h.per_cpu_s:>8,.0f} per CPU-s "
                f"({h.us_per_request:4.0f} µs each; {h.accepted:,} in {h.wall_s:.1f} s, refused {h.refused}; "
                f"p50 {h.p50_ms:.1f} ms, p99 {h.p99_ms:.1f} ms at {HTTP_CONCURRENCY} connections)"
            )
        out += budget_lines(self.raw_rate, self.faust, self.bare, self.acked)
        return [indent + line for line in out]


async def measure_floors(
    settings: Settings, bootstrap: str, root: Path, records: Sequence[Any], raw_rate: float
) -> Floors:
    """(f1) and (f2) over ``records`` (raw payment notifications, RawRecord-like), ``raw_rate`` from (a)."""
    await asyncio.to_thread(root.mkdir, parents=True, exist_ok=True)
    faust = await measure_faust(settings, bootstrap, records, root)
    bare = await measure_faust(settings, bootstrap, records, root, bare=True)
    wire = payment_wire(settings.http_host, records[0].value)
    plain = await measure_http(settings, None, root, wire)
    acked = await measure_http(settings, bootstrap, root, wire)
    return Floors(raw_rate, faust, bare, plain, acked)


async def _measure(settings: Settings, bootstrap: str, root: Path, events: int) -> list[str]:
    from services.bench import SEED, baseline, cycled, mixed_members
    from services.simulation.backlog import build_mixed_stream

    stream = build_mixed_stream(settings, mixed_members(events), SEED, datetime.now(UTC))
    records = cycled([r for r in stream.records if r.topic == "bank.payments.raw"], events)
    print("bench-floor: (a) raw aiokafka loop ...", flush=True)
    _, raw = await baseline(settings, bootstrap, [r.value for r in records], deadline_s=120.0)
    raw_rate = raw.events / raw.seconds if raw.seconds > 0 else 0.0
    print("bench-floor: (f1) Faust floor, (f2) HTTP floor ...", flush=True)
    floors = await measure_floors(settings, bootstrap, root, records, raw_rate)
    return [
        f"sinergi bench-floor: {events:,} payment notifications | {CORES} CPUs | broker {bootstrap}",
        "",
        f"  (a)  raw aiokafka consume→json→transform→json→produce {raw.events:>8,} in {raw.seconds:6.2f} s "
        f"= {raw_rate:>8,.0f}/s",
        *floors.lines(),
    ]


def run(events: int) -> int:
    from connectors.embedded import EmbeddedBroker

    settings = Settings()
    root = Path(settings.data_dir) / "bench-floor"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    broker = None
    bootstrap = settings.kafka_bootstrap
    try:
        if bootstrap is None:
            broker = EmbeddedBroker(log_file=root / "broker.log")
            broker.start()
            bootstrap = broker.bootstrap
        lines = asyncio.run(_measure(settings, bootstrap, root, events))
    except KeyboardInterrupt:
        print("\nbench-floor: interrupted", file=sys.stderr)
        return 130
    finally:
        if broker is not None:
            broker.stop()
    print("\n".join(lines), flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="services.bench_floor", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command")
    measure = sub.add_parser("run", help="measure (the default)")
    measure.add_argument("--events", type=int, default=30_000)
    bare = sub.add_parser("bare-faust-worker")
    bare.add_argument("topic_in")
    bare.add_argument("port", type=int)
    worker = sub.add_parser("faust-worker")
    worker.add_argument("topic_in")
    worker.add_argument("topic_out")
    worker.add_argument("port", type=int)
    server = sub.add_parser("http")
    server.add_argument("port", type=int)
    server.add_argument("topic", nargs="?")
    args = parser.parse_args(argv)
    if args.command == "bare-faust-worker":
        bare_faust_worker(args.topic_in, args.port)
    elif args.command == "faust-worker":
        faust_worker(args.topic_in, args.topic_out, args.port)
    elif args.command == "http":
        http_server(args.port, args.topic)
    else:
        sys.exit(run(getattr(args, "events", 30_000)))


if __name__ == "__main__":
    main()
