"""Partner ingest benchmark (issue 8, target 3): signed SNAP payment notifications per CPU-second of the bank API.

What is measured, against the bank API the bench's Hub started (`hub.start_apis()`):

1. warm-up (not counted): a short closed loop that opens the connections, fetches the bearer token, warms
   the API's code paths and its producer, and estimates the rate so that enough requests are pre-signed;
2. closed loop for `seconds`: CONCURRENCY keep-alive connections, each sending its next pre-signed
   notification as soon as the previous one was answered, so the API is saturated. The figure is
   accepted / CPU seconds of the `api-bank` process (notifications per CPU-second = per core), plus the
   wall rate and p50/p99 of the HTTP latency of accepted requests (at saturation that latency is mostly
   queueing: about CONCURRENCY / rate);
3. open loop at OPEN_LOAD of the closed loop's wall rate for what is left of the BUDGET_S: request i is
   due at t0 + i/rate whatever the answers' pace, and its latency is counted from that due time (a late
   generator or a full connection pool cannot hide the API's slowness). This is the p99 the target speaks of.

Every request is a valid, distinct notification signed exactly like a bank (services.bank_client:
HMAC-SHA512 over METHOD:path:token:hex(sha256(minify(body))):X-TIMESTAMP, a B2B token or the static token),
with its own X-EXTERNAL-ID and paymentRequestId, for a customer number the hub does not know (the API accepts
it: the reconciler holds a payment that precedes its enrollment), so the X-EXTERNAL-ID store never replays and
the member book never refuses. A 2002500 is only sent once Kafka acknowledged the record; the API's own
`sinergi_produce_ack_seconds_count` is compared with the accepted count as a cross-check.

The load generator pre-signs and pre-serialises whole HTTP/1.1 requests before the clock starts and speaks
HTTP/1.1 over asyncio protocols itself: on a 2-core machine the generator shares the cores with the API and
the broker, and aiohttp's ~0.3-0.5 ms of client CPU per request would cost about as much as the API's own
work. Its CPU (this thread's) is reported beside the API's.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import re
import signal
import time
from collections import Counter, deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import httpx
import orjson

from services.bank_client import (
    PAYMENT_PATH,
    BankCredentials,
    TokenSource,
    bank_credentials,
    encode_json,
    snap_timestamp,
    transactional_request,
)
from services.catalogue import PAYMENTS_RAW
from services.config import Settings
from services.reference import load_banks
from services.simulation.generators import CHANNEL_CODES, CHANNEL_IDS, WIB, fx_quote

if TYPE_CHECKING:
    from services.bench import Hub

LOOPBACK = "127.0.0.1"
BUDGET_S = 30.0  # the whole module, warm-up, pre-signing and both loops included
CONCURRENCY = 32  # closed loop: enough in flight to keep one API process busy (linger + ack ~ 6-10 ms each)
WARMUP_S = 1.0
OPEN_LOAD = 0.7  # open loop at this share of the closed loop's wall rate
OPEN_MIN_S = 2.0  # a shorter open loop gives no useful p99: skipped
OPEN_CONNECTIONS_MAX = 256
PRESIGN_MAX = 150_000  # ~40 us each: a cap on the time spent signing ahead
PRESIGN_MARGIN = 1.5  # pre-sign this many times what the warm-up rate predicts for the closed loop
SEED = 20261207
ACCEPTED_CODE = "2002500"

_ACK_COUNT = re.compile(
    r'^sinergi_produce_ack_seconds_count\{[^}]*topic="' + re.escape(PAYMENTS_RAW.name) + r'"[^}]*\}\s+([0-9.eE+]+)$',
    re.MULTILINE,
)


# --- figures --------------------------------------------------------------------------------------------------


@dataclass
class IngestFigures:
    """What measure_ingest found. p50_ms/p99_ms are the closed loop's (at saturation); open_* the open loop's."""

    accepted: int  # closed loop
    refused: int  # every phase: any answer other than 200 2002500, and connection failures
    seconds: float  # closed loop wall time
    api_cpu_s: float  # CPU seconds of the api-bank process during the closed loop
    per_core_rate: float  # accepted / api_cpu_s
    p50_ms: float
    p99_ms: float
    problems: list[str] = field(default_factory=list)
    wall_rate: float = float("nan")
    concurrency: int = CONCURRENCY
    broker_cpu_s: float | None = None  # the embedded broker during the closed loop, when its pid is known
    generator_cpu_s: float = 0.0  # this thread during the closed loop: the load generator's own cost
    presigned: int = 0
    warmup_accepted: int = 0
    machine_busy: float | None = None  # share of all the machine's CPUs busy during the closed loop (any process)
    open_machine_busy: float | None = None
    open_rate: float = 0.0  # target rate of the open loop (0: not run)
    open_sent: int = 0
    open_accepted: int = 0
    open_seconds: float = 0.0
    open_p50_ms: float = float("nan")
    open_p99_ms: float = float("nan")
    open_max_ms: float = float("nan")
    open_api_cpu_s: float = float("nan")
    refusals: Counter[str] = field(default_factory=Counter)
    total_s: float = 0.0
    notes: list[str] = field(default_factory=list)  # printed, not problems

    def lines(self) -> list[str]:
        """Ready-to-print lines, indented 6 spaces like the bench's report."""
        cpu_ms = self.api_cpu_s * 1000 / self.accepted if self.accepted else float("nan")
        busy = f"; machine {self.machine_busy:.0%} busy" if self.machine_busy is not None else ""
        out = [
            f"      closed loop, {self.concurrency} keep-alive connections, {self.seconds:.1f} s: "
            f"{self.accepted:,} accepted (200 {ACCEPTED_CODE}, after Kafka's ack), {self.refused} refused{busy}",
            f"      {self.per_core_rate:,.0f} notifications per CPU-second of the bank API "
            f"({self.api_cpu_s:.2f} CPU s, {cpu_ms:.3f} ms CPU each); wall {self.wall_rate:,.0f}/s",
            f"      HTTP latency at saturation (accepted)   p50 {self.p50_ms:6.1f} ms   p99 {self.p99_ms:6.1f} ms",
        ]
        if self.open_rate > 0:
            open_cpu = (
                f"; API {self.open_api_cpu_s * 1000 / self.open_accepted:.3f} ms CPU each"
                if self.open_accepted and self.open_api_cpu_s == self.open_api_cpu_s
                else ""
            )
            open_busy = f"; machine {self.open_machine_busy:.0%} busy" if self.open_machine_busy is not None else ""
            out.append(
                f"      open loop at {self.open_rate:,.0f}/s ({OPEN_LOAD:.0%} of the wall rate) for "
                f"{self.open_seconds:.1f} s: {self.open_sent:,} sent, {self.open_accepted:,} accepted{open_cpu}"
                f"{open_busy}"
            )
            out.append(
                f"      HTTP latency from the due time (accepted) p50 {self.open_p50_ms:6.1f} ms   "
                f"p99 {self.open_p99_ms:6.1f} ms   max {self.open_max_ms:6.1f} ms"
            )
        broker = (
            f"broker {self.broker_cpu_s * 1000 / self.accepted:.3f} ms, "
            if self.broker_cpu_s is not None and self.accepted
            else ""
        )
        gen = self.generator_cpu_s * 1000 / self.accepted if self.accepted else float("nan")
        out.append(
            f"      CPU per accepted notification, closed loop: {broker}load generator {gen:.3f} ms "
            f"({self.presigned:,} requests pre-signed before timing); module took {self.total_s:.1f} s"
        )
        if self.refusals:
            out.append("      refused: " + ", ".join(f"{k} x{v}" for k, v in self.refusals.most_common()))
        out += [f"      {n}" for n in self.notes]
        out += [f"      PROBLEM: {p}" for p in self.problems]
        return out


# --- pre-signed requests ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Caller:
    """One bank as the load generator signs for it."""

    creds: BankCredentials
    token: str
    currencies: tuple[str, ...]


def payment_wire(
    caller: Caller, rng: random.Random, *, host: str, serial: str, customer_no: str, now: datetime
) -> bytes:
    """One complete HTTP/1.1 request (head and body) of a valid payment notification, signed like the bank.

    `serial` makes X-EXTERNAL-ID and paymentRequestId unique (digits only: X-EXTERNAL-ID is numeric).
    """
    creds = caller.creds
    psid = creds.partner_service_id.rjust(8)
    amount_idr = rng.randrange(150, 2_000) * 500  # bills are in whole hundreds of rupiah
    currency = rng.choice(caller.currencies)
    if currency == "IDR":
        value, fx = f"{amount_idr}.00", None
    else:
        value, fx = fx_quote(rng, amount_idr, currency)
    local = now.astimezone(WIB)
    body: dict[str, Any] = {
        "partnerServiceId": psid,
        "customerNo": customer_no,
        "virtualAccountNo": psid + customer_no,
        "paymentRequestId": f"{creds.bank_id[:3]}-{local:%Y%m%d}-{serial}",
        "paidAmount": {"value": value, "currency": currency},
        "trxDateTime": local.isoformat(timespec="seconds"),
        "channelCode": rng.choice(CHANNEL_CODES),
        "partnerReferenceNo": f"{rng.getrandbits(48):012X}",
    }
    if fx is not None:
        body["additionalInfo"] = {"fxRate": fx}
    content = encode_json(body)
    prepared = transactional_request(
        creds,
        caller.token,
        PAYMENT_PATH,
        content,
        timestamp=snap_timestamp(now),
        external_id=f"{local:%Y%m%d}{serial}",
        channel_id=rng.choice(CHANNEL_IDS),
    )
    head = [f"POST {prepared.target} HTTP/1.1", f"Host: {host}"]
    head += [f"{k}: {v}" for k, v in prepared.headers.items()]
    head.append(f"Content-Length: {len(content)}")
    return ("\r\n".join(head) + "\r\n\r\n").encode("ascii") + content


class Presigner:
    """Distinct signed notifications, round-robin over the banks, made ahead of the clock.

    The seed fixes the mix (bank, currency, amount, channel); `nonce` makes ids and customer numbers new on
    every run, so that a second run against the same broker is not deduplicated downstream as the first.
    """

    def __init__(self, callers: Sequence[Caller], *, host: str, seed: int, nonce: int, customer_digits: int) -> None:
        if not callers:
            raise ValueError("no bank can call: a client secret and a token are needed")
        self.callers = list(callers)
        self.host = host
        self.rng = random.Random(seed)
        self.ids = random.Random(nonce)
        self.nonce = nonce % 10**8
        self.digits = customer_digits
        self.made = 0

    def take(self, count: int, now: datetime | None = None) -> list[bytes]:
        at = now or datetime.now(UTC)
        out: list[bytes] = []
        for _ in range(count):
            caller = self.callers[self.made % len(self.callers)]
            serial = f"{self.nonce:08d}{self.made:08d}"  # 16 digits: 24 with the date, within 36
            customer = f"{self.ids.randrange(10**self.digits):0{self.digits}d}"
            out.append(payment_wire(caller, self.rng, host=self.host, serial=serial, customer_no=customer, now=at))
            self.made += 1
        return out


async def bank_callers(settings: Settings, base_url: str) -> list[Caller]:
    """Every bank that can call, with its bearer token (B2B when it holds a private key, else static)."""
    banks = load_banks(settings.banks_file)
    callers: list[Caller] = []
    async with httpx.AsyncClient(base_url=base_url, timeout=10.0) as http:
        for bank_id, creds in sorted(bank_credentials(settings).items()):
            token = await TokenSource(http, creds).get()
            callers.append(Caller(creds, token, tuple(sorted(banks[bank_id].currencies))))
    return callers


# --- a minimal HTTP/1.1 client ----------------------------------------------------------------------------------


class ResponseError(ConnectionError):
    """The connection closed or sent something this client does not read (no Content-Length)."""


class Connection(asyncio.Protocol):
    """One keep-alive connection, one request at a time (as a bank's client would), response by Content-Length."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        waiter = self.waiter
        if waiter is None or waiter.done():
            return
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self.buffer[:end]).lower()
        at = head.find(b"\r\ncontent-length:")
        if at < 0:
            self._fail("response without Content-Length")
            return
        stop = head.find(b"\r\n", at + 2)
        try:
            length = int(head[at + 17 : stop if stop >= 0 else len(head)])
            status = int(head[9:12])
        except ValueError:
            self._fail("unreadable response head")
            return
        total = end + 4 + length
        if len(self.buffer) < total:
            return
        body = bytes(self.buffer[end + 4 : total])
        del self.buffer[:total]
        if b"\r\nconnection: close" in head:
            self.closed = True  # the server will close it after this answer: no further request on it
        waiter.set_result((status, body))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail("connection closed")

    def _fail(self, why: str) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ResponseError(why))
        if self.transport is not None:
            self.transport.close()

    async def request(self, wire: bytes) -> tuple[int, bytes]:
        if self.closed or self.transport is None:
            raise ResponseError("connection closed")
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(wire)
        return await self.waiter

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


async def connect(host: str, port: int) -> Connection:
    _, protocol = await asyncio.get_running_loop().create_connection(Connection, host, port)
    return protocol


class Tally:
    """Outcomes of one phase: accepted latencies (seconds) and refusals by status and SNAP code."""

    def __init__(self, refusals: Counter[str]) -> None:
        self.latencies: list[float] = []
        self.refusals = refusals
        self.sent = 0

    def answer(self, status: int, body: bytes, latency_s: float) -> None:
        self.sent += 1
        code: object = None
        reason: object = None
        with contextlib.suppress(orjson.JSONDecodeError):
            doc = orjson.loads(body)
            if isinstance(doc, dict):
                code, reason = doc.get("responseCode"), doc.get("reason")
        if status == 200 and code == ACCEPTED_CODE:
            self.latencies.append(latency_s)
            return
        # Status, SNAP code and sinergi's reason code only: bounded, never a value from the request.
        self.refusals[f"HTTP {status} {code if isinstance(code, str) else '-'}{f' {reason}' if reason else ''}"] += 1

    def failed(self, exc: BaseException) -> None:
        self.sent += 1
        self.refusals[f"no answer ({type(exc).__name__})"] += 1


async def closed_loop(
    host: str, port: int, requests: Iterator[bytes], seconds: float, concurrency: int, tally: Tally
) -> float:
    """Each connection sends its next request as soon as it has the previous answer; returns the wall seconds
    from the first send to the last answer (shorter than `seconds` if the pre-signed requests ran out)."""
    connections = [await connect(host, port) for _ in range(concurrency)]
    started = time.perf_counter()
    deadline = started + seconds

    async def run(conn: Connection) -> None:
        for wire in requests:
            at = time.perf_counter()
            try:
                status, body = await conn.request(wire)
            except ConnectionError as exc:
                tally.failed(exc)
            else:
                tally.answer(status, body, time.perf_counter() - at)
            if time.perf_counter() >= deadline:
                break
            if conn.closed:
                try:
                    conn = await connect(host, port)
                except OSError as exc:  # the API went away: this connection's share ends, counted, not raised
                    tally.failed(exc)
                    return
        conn.close()

    try:
        await asyncio.gather(*(run(c) for c in connections))
    finally:
        for c in connections:
            c.close()
    return time.perf_counter() - started


async def open_loop(host: str, port: int, requests: Sequence[bytes], rate: float, tally: Tally) -> float:
    """Request i goes out at t0 + i/rate on a free connection (a new one when none is free, up to
    OPEN_CONNECTIONS_MAX); latency counts from the due time. Returns the seconds from t0 to the last answer."""
    free: deque[Connection] = deque([await connect(host, port) for _ in range(16)])
    opened = len(free)
    released = asyncio.Event()
    pending: set[asyncio.Task[None]] = set()
    everything: list[Connection] = list(free)

    async def one(conn: Connection, wire: bytes, due: float) -> None:
        try:
            status, body = await conn.request(wire)
        except ConnectionError as exc:
            tally.failed(exc)
            return
        tally.answer(status, body, time.perf_counter() - due)
        if not conn.closed:
            free.append(conn)
            released.set()

    t0 = time.perf_counter() + 0.05
    for i, wire in enumerate(requests):
        due = t0 + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        while not free:
            if opened < OPEN_CONNECTIONS_MAX:
                conn = await connect(host, port)
                everything.append(conn)
                opened += 1
                free.append(conn)
            else:
                released.clear()
                await released.wait()
        task = asyncio.create_task(one(free.popleft(), wire, due))
        pending.add(task)
        task.add_done_callback(pending.discard)
    if pending:
        await asyncio.gather(*pending)
    for c in everything:
        c.close()
    return time.perf_counter() - t0


# --- the measurement ----------------------------------------------------------------------------------------------


async def _produced(url: str) -> float | None:
    """The bank API's count of Kafka acknowledgements on bank.payments.raw (its /metrics), or None."""
    try:
        async with httpx.AsyncClient(timeout=5.0) as http:
            text = (await http.get(url)).text
    except httpx.HTTPError:
        return None
    found = _ACK_COUNT.findall(text)
    return sum(float(v) for v in found) if found else None


def machine_jiffies() -> tuple[int, int] | None:
    """(busy, total) CPU jiffies of the whole machine (/proc/stat), or None off Linux.

    The machine is shared: how busy it was during a phase tells whether other work competed with the API.
    """
    try:
        with open("/proc/stat", encoding="ascii") as f:
            values = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    return sum(values) - idle, sum(values)


def busy_share(before: tuple[int, int] | None, after: tuple[int, int] | None) -> float | None:
    if before is None or after is None or after[1] <= before[1]:
        return None
    return (after[0] - before[0]) / (after[1] - before[1])


async def measure_ingest(
    hub: Hub,
    seconds: float,
    *,
    concurrency: int = CONCURRENCY,
    warmup_s: float = WARMUP_S,
    budget_s: float = BUDGET_S,
    seed: int = SEED,
) -> IngestFigures:
    """Closed loop for `seconds` against the bank API, then an open loop at OPEN_LOAD of its rate for what
    the budget leaves (at most `seconds`). Figures are reported, never asserted; refusals are PROBLEMs.

    Raises OSError only when the API cannot be connected to at the start of a phase.
    """
    # Imported here: services.bench imports this module to call measure_ingest.
    from services.bench import percentile, process_cpu_s

    began = time.monotonic()
    s = hub.settings
    host, port = LOOPBACK, s.bank_api_port  # the bench's hub listens on loopback only
    base = f"http://{host}:{port}"
    problems: list[str] = []
    refusals: Counter[str] = Counter()
    broker_pid: int | None = getattr(hub, "broker_pid", None)

    callers = await bank_callers(s, base)
    presigner = Presigner(
        callers, host=f"{host}:{port}", seed=seed, nonce=time.time_ns(), customer_digits=s.customer_no_digits
    )
    acks_before = await _produced(f"{base}/metrics")

    # Warm-up: not counted; its rate sizes the pre-signing of the closed loop.
    warm = presigner.take(max(500, int(3_000 * warmup_s)))
    warm_tally = Tally(refusals)
    warm_s = await closed_loop(host, port, iter(warm), warmup_s, concurrency, warm_tally)
    warm_rate = len(warm_tally.latencies) / warm_s if warm_s > 0 else 0.0
    want = int(max(warm_rate, 500.0) * seconds * PRESIGN_MARGIN) + 1_000
    batch = presigner.take(min(PRESIGN_MAX, want))

    tally = Tally(refusals)
    api_before = hub.cpu_of("api-bank")
    broker_before = process_cpu_s(broker_pid)
    gen_before = time.thread_time()
    machine_before = machine_jiffies()
    wall = await closed_loop(host, port, iter(batch), seconds, concurrency, tally)
    machine_after = machine_jiffies()
    gen_cpu = time.thread_time() - gen_before
    api_after = hub.cpu_of("api-bank")
    broker_after = process_cpu_s(broker_pid)
    if tally.sent >= len(batch):
        problems.append(f"the {len(batch):,} pre-signed requests ran out after {wall:.1f} s (closed loop cut short)")

    accepted = len(tally.latencies)
    api_cpu = api_after - api_before if api_before is not None and api_after is not None else float("nan")
    if api_cpu != api_cpu:
        problems.append("no CPU figure for the api-bank process (not spawned by this hub?)")
    latencies_ms = [x * 1000 for x in tally.latencies]
    figures = IngestFigures(
        accepted=accepted,
        refused=0,
        seconds=wall,
        api_cpu_s=api_cpu,
        per_core_rate=accepted / api_cpu if api_cpu > 0 else float("nan"),
        p50_ms=percentile(latencies_ms, 50),
        p99_ms=percentile(latencies_ms, 99),
        problems=problems,
        wall_rate=accepted / wall if wall > 0 else float("nan"),
        concurrency=concurrency,
        broker_cpu_s=broker_after - broker_before if broker_before is not None and broker_after is not None else None,
        generator_cpu_s=gen_cpu,
        presigned=len(warm) + len(batch),
        warmup_accepted=len(warm_tally.latencies),
        machine_busy=busy_share(machine_before, machine_after),
        refusals=refusals,
    )

    # Open loop with what the budget leaves: pre-signing costs about as much per request as the API's
    # answer, so it is counted in; the loop itself is at most `seconds` long.
    left = budget_s - (time.monotonic() - began) - 1.0
    rate = OPEN_LOAD * figures.wall_rate if figures.wall_rate == figures.wall_rate else 0.0
    open_s = min(seconds, left / (1 + rate * 40e-6)) if rate > 0 else 0.0
    if open_s >= min(OPEN_MIN_S, seconds):
        requests = presigner.take(int(rate * open_s))
        figures.presigned += len(requests)
        open_tally = Tally(refusals)
        cpu0, jiffies0 = hub.cpu_of("api-bank"), machine_jiffies()
        figures.open_seconds = await open_loop(host, port, requests, rate, open_tally)
        cpu1, jiffies1 = hub.cpu_of("api-bank"), machine_jiffies()
        figures.open_machine_busy = busy_share(jiffies0, jiffies1)
        open_ms = [x * 1000 for x in open_tally.latencies]
        figures.open_rate = rate
        figures.open_sent = open_tally.sent
        figures.open_accepted = len(open_ms)
        figures.open_p50_ms = percentile(open_ms, 50)
        figures.open_p99_ms = percentile(open_ms, 99)
        figures.open_max_ms = max(open_ms) if open_ms else float("nan")
        if cpu0 is not None and cpu1 is not None:
            figures.open_api_cpu_s = cpu1 - cpu0
    else:
        why = f"{max(0.0, left):.1f} s left of the {budget_s:.0f} s budget" if rate > 0 else "no closed-loop rate"
        figures.notes.append(f"open loop skipped: {why}")

    figures.refused = sum(refusals.values())
    if figures.refused:
        problems.append(
            f"{figures.refused:,} request(s) not accepted: "
            + ", ".join(f"{k} x{v}" for k, v in refusals.most_common(5))
        )
    acks_after = await _produced(f"{base}/metrics")
    total_accepted = figures.warmup_accepted + accepted + figures.open_accepted
    if acks_before is not None and acks_after is not None:
        acked = int(acks_after - acks_before)
        if acked < total_accepted:
            problems.append(f"{total_accepted:,} accepted but the API counted only {acked:,} Kafka acknowledgements")
    figures.total_s = time.monotonic() - began
    return figures


# --- standalone driver ---------------------------------------------------------------------------------------------


def run_standalone(seconds: float = 10.0, settings: Settings | None = None) -> IngestFigures:
    """Embedded broker + topics + the bench's Hub with both APIs (no workers), one measurement, everything stopped.

    For developing and profiling this module (`python -m services.bench_ingest [seconds]`); `sinergi bench`
    calls measure_ingest with its own hub. Set SINERGI_BENCH_INGEST_PAUSE_S to keep the API running that many
    seconds before the measurement (time to attach py-spy to the printed pid).
    """
    import shutil
    from pathlib import Path

    from connectors.embedded import EmbeddedBroker
    from services.bench import Hub, _wait_http
    from services.topics import create_topics

    settings = settings or Settings()
    root = Path(settings.data_dir) / "bench-ingest"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    broker = EmbeddedBroker(log_file=root / "broker.log")
    broker.start()
    hub: Hub | None = None
    try:
        hub = Hub.prepare(settings, broker.bootstrap, root)
        hub.broker_pid = broker.pid
        create_topics(broker.bootstrap, hub.settings)

        async def main() -> IngestFigures:
            assert hub is not None
            main_task = asyncio.current_task()
            assert main_task is not None
            # `kill PID` stops everything: cancelling unwinds to the `finally` below.
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
            if hub.embedded_registry:
                # As in the bench: without a registry the API's member-book reader retries its codec meanwhile.
                hub._spawn(["registry"])
                await _wait_http(f"{hub.settings.schema_registry_url}/subjects", 30.0)
            await hub.start_apis()
            api = next(c for c in hub.supervisor.children if c.name == "api-bank")
            pause = float(os.environ.get("SINERGI_BENCH_INGEST_PAUSE_S", "0"))
            print(f"bench-ingest: broker {broker.bootstrap}, api-bank pid {api.proc.pid}", flush=True)
            if pause > 0:
                await asyncio.sleep(pause)
            return await measure_ingest(hub, seconds)

        figures = asyncio.run(main())
        figures.problems += hub.log_problems()
    finally:
        if hub is not None:
            hub.stop()
        broker.stop()
    return figures


if __name__ == "__main__":
    import sys

    result = run_standalone(float(sys.argv[1]) if len(sys.argv) > 1 else 10.0)
    print("\n".join(result.lines()), flush=True)
    sys.exit(1 if result.problems else 0)
