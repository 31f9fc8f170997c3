"""`sinergi simulate`: realistic traffic through the public HTTP APIs (KBRI intake, SNAP bank payments).

Each round enrolls ``members`` workers at several offices, then pays every bill at a bank that serves the
office's country (IDR or local currency with an FX rate, sometimes in two instalments, sometimes with a
resent notification) and sends a few malformed requests that must be refused with the documented 4xx
and reason code. One line per round; never any personal value (NIK, passport, name, VA) on the output.

Requests are paced by ``rate`` (requests per second, all endpoints together). Connection errors and 503
(the APIs still starting, or Kafka not acknowledging) are retried with exponential backoff and jitter,
with the same idempotency keys (X-Request-Id, paymentRequestId), until a deadline. SIGINT/SIGTERM stop
the run cleanly (exit 0). The traffic itself comes from the pure generators in
services.simulation.generators.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import re
import secrets
import signal
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx

from services.config import Settings
from services.domain.dates import wib_date
from services.reference import load_banks, load_offices
from services.simulation.generators import (
    ACCEPTED_ENROLLMENT,
    DEFAULT_BANKS,
    DEFAULT_OFFICES,
    BankRef,
    Expect,
    MemberScript,
    Mix,
    World,
    kbri_headers,
    office_request_id,
    payment_steps,
    plan_member,
    snap_headers,
)

ENROLL_PATH = "/v1/enrollments"
PAY_PATH = "/v1.0/transfer-va/payment"
HEALTH_PATH = "/healthz"
SNAP_SUCCESS = "2002500"
_CODE = re.compile(r"[A-Z0-9_]{1,40}")
_RECENT_NIKS_MAX = 200_000


@dataclass(frozen=True)
class RetryPolicy:
    initial_s: float = 0.2
    max_s: float = 5.0
    request_deadline_s: float = 60.0  # per request: connect errors / 503 retried until then
    ready_deadline_s: float = 120.0  # at start: both APIs answer /healthz by then


def _code(value: object) -> str:
    """A reason code from a response, or "?" (never echo anything that is not shaped like a code)."""
    return value if isinstance(value, str) and _CODE.fullmatch(value) else "?"


@dataclass
class RoundStats:
    members: int = 0
    enrolled: int = 0
    warnings: int = 0
    paid: int = 0  # members whose whole bill was accepted
    notifications: Counter[str] = field(default_factory=Counter)  # full, partial, remainder, duplicate
    currencies: Counter[str] = field(default_factory=Counter)
    refused: Counter[str] = field(default_factory=Counter)  # expected refusals by reason code
    unexpected: Counter[str] = field(default_factory=Counter)  # endpoint:status:reason
    retries: int = 0
    gave_up: int = 0
    seconds: float = 0.0

    def add(self, other: RoundStats) -> None:
        for name in ("members", "enrolled", "warnings", "paid", "retries", "gave_up"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.notifications.update(other.notifications)
        self.currencies.update(other.currencies)
        self.refused.update(other.refused)
        self.unexpected.update(other.unexpected)
        self.seconds += other.seconds

    @property
    def ok(self) -> bool:
        return not self.unexpected and not self.gave_up

    def line(self, label: str) -> str:
        def counts(c: Counter[str]) -> str:
            return ", ".join(f"{k} {v}" for k, v in sorted(c.items()))

        parts = [
            f"{label}: {self.members} members in {self.seconds:.1f}s",
            f"enrolled {self.enrolled} (warnings {self.warnings})",
            f"paid {self.paid} [{counts(self.notifications) or '-'}; {counts(self.currencies) or '-'}]",
            f"refused as expected {sum(self.refused.values())} [{counts(self.refused) or '-'}]",
            f"unexpected {sum(self.unexpected.values())}"
            + (f" [{counts(self.unexpected)}]" if self.unexpected else ""),
            f"retries {self.retries}",
            f"gave up {self.gave_up}",
        ]
        return " | ".join(parts)


class RateLimiter:
    """Evenly spaced request starts: at most ``rate`` per second (no bursts). ``rate <= 0``: unlimited."""

    def __init__(self, rate: float) -> None:
        self._interval = 1.0 / rate if rate > 0 else 0.0
        self._next = 0.0

    async def acquire(self) -> None:
        if self._interval == 0.0:
            return
        now = time.monotonic()
        slot = max(now, self._next)
        self._next = slot + self._interval
        if slot > now:
            await asyncio.sleep(slot - now)


def world_from_settings(settings: Settings) -> World:
    """Offices and banks that have a token configured, restricted to the simulator's default selection."""
    offices = load_offices(settings.offices_file)
    banks = load_banks(settings.banks_file)
    offices_doc = {"offices": [{"code": o.code, "country": o.country} for o in offices.values()]}
    banks_doc = {
        "banks": [
            {"bank_id": b.bank_id, "partner_service_id": b.partner_service_id, "currencies": sorted(b.currencies)}
            for b in banks.values()
        ]
    }
    return World.from_reference(
        offices_doc,
        banks_doc,
        office_codes=[c for c in DEFAULT_OFFICES if c in settings.office_tokens],
        bank_ids=[b for b in DEFAULT_BANKS if b in settings.bank_tokens],
    )


class Simulator:
    def __init__(
        self,
        settings: Settings,
        kbri: httpx.AsyncClient,
        bank: httpx.AsyncClient,
        *,
        rate: float,
        seed: int,
        mix: Mix | None = None,
        retry: RetryPolicy = RetryPolicy(),
        out: Callable[[str], None] = lambda line: print(line, flush=True),
        world: World | None = None,
    ) -> None:
        self.kbri = kbri
        self.bank = bank
        self.seed = seed
        self.mix = mix or Mix()
        self.retry = retry
        self.out = out
        self.world = world or world_from_settings(settings)
        self.office_tokens = {k: v.get_secret_value() for k, v in settings.office_tokens.items()}
        self.bank_tokens = {k: v.get_secret_value() for k, v in settings.bank_tokens.items()}
        self.limiter = RateLimiter(rate)
        self.concurrency = max(4, min(64, int(rate))) if rate > 0 else 32
        self._jitter = random.Random()  # backoff jitter only; traffic comes from the seeded per-member rngs
        self._recent_niks: set[str] = set()

    # --- HTTP ------------------------------------------------------------------------------------------
    async def _post(
        self,
        client: httpx.AsyncClient,
        path: str,
        body: Mapping[str, Any],
        headers: Mapping[str, str],
        stats: RoundStats,
    ) -> httpx.Response | None:
        """POST with pacing; connect errors and 503 retried with backoff until the request deadline."""
        content = json.dumps(body).encode()
        deadline = time.monotonic() + self.retry.request_deadline_s
        delay = self.retry.initial_s
        while True:
            await self.limiter.acquire()
            wait = delay
            try:
                response = await client.post(path, content=content, headers=dict(headers))
            except httpx.TransportError:
                pass
            else:
                if response.status_code != 503:
                    return response
                with contextlib.suppress(ValueError):
                    wait = max(delay, min(float(response.headers.get("Retry-After", "0")), self.retry.max_s))
            wait *= 0.5 + self._jitter.random()
            if time.monotonic() + wait > deadline:
                stats.gave_up += 1
                return None
            stats.retries += 1
            await asyncio.sleep(wait)
            delay = min(delay * 2, self.retry.max_s)

    async def wait_ready(self, stop: asyncio.Event) -> bool:
        """Poll both APIs' /healthz with backoff until they answer or the start-up deadline passes."""
        deadline = time.monotonic() + self.retry.ready_deadline_s
        delay = self.retry.initial_s
        announced = False
        while not stop.is_set():
            ready = True
            for client in (self.kbri, self.bank):
                try:
                    ready = ready and (await client.get(HEALTH_PATH)).status_code == 200
                except httpx.TransportError:
                    ready = False
            if ready:
                return True
            if time.monotonic() + delay > deadline:
                return False
            if not announced:
                self.out("simulator: waiting for the APIs to answer ...")
                announced = True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay * (0.5 + self._jitter.random()))
            delay = min(delay * 2, self.retry.max_s)
        return False

    def _check(self, stats: RoundStats, endpoint: str, response: httpx.Response, expect: Expect) -> bool:
        """Count the outcome; True when the API answered what was expected."""
        try:
            doc = response.json()
        except ValueError:
            doc = {}
        if not isinstance(doc, dict):
            doc = {}
        if expect.status < 300:
            ok = response.status_code == expect.status
            if endpoint == "payment":
                ok = ok and doc.get("responseCode") == SNAP_SUCCESS
            if not ok:
                stats.unexpected[f"{endpoint}:{response.status_code}:{_code(doc.get('reason'))}"] += 1
            return ok
        reason = _code(doc.get("reason"))
        if response.status_code == expect.status and reason == expect.reason:
            stats.refused[reason] += 1
            return True
        stats.unexpected[f"{endpoint}:{response.status_code}:{reason}(expected {expect.reason})"] += 1
        return False

    # --- one worker ------------------------------------------------------------------------------------
    def _plan(self, rng: random.Random, today: Any) -> MemberScript:
        while True:
            script = plan_member(rng, self.world, today, self.mix)
            nik = script.enrollment["nik"]
            if nik not in self._recent_niks:  # one NIK, one participant: avoid accidental re-enrollment
                if len(self._recent_niks) >= _RECENT_NIKS_MAX:
                    self._recent_niks.clear()
                self._recent_niks.add(nik)
                return script

    async def _member(self, rng: random.Random, stats: RoundStats) -> None:
        today = wib_date(datetime.now(UTC))
        script = self._plan(rng, today)
        stats.members += 1
        office = script.office.code
        token = self.office_tokens[office]
        if script.bad_enrollment is not None:
            bad_body, expect = script.bad_enrollment
            headers = kbri_headers(token, office_request_id(rng, office, today))
            response = await self._post(self.kbri, ENROLL_PATH, bad_body, headers, stats)
            if response is None:
                return
            self._check(stats, "enrollment", response, expect)
            if not script.resubmit:
                return
        headers = kbri_headers(token, office_request_id(rng, office, today))
        response = await self._post(self.kbri, ENROLL_PATH, script.enrollment, headers, stats)
        if response is None or not self._check(stats, "enrollment", response, ACCEPTED_ENROLLMENT):
            return
        accepted = response.json()
        bill = accepted.get("bill") or {}
        if not bill.get("virtual_accounts", {}).get(script.bank.bank_id):
            stats.unexpected["enrollment:202:NO_VA_FOR_BANK"] += 1
            return
        stats.enrolled += 1
        stats.warnings += bool(accepted.get("warnings"))
        if script.pay_delay_s > 0:
            await asyncio.sleep(script.pay_delay_s)
        await self._pay(rng, script, str(accepted["customer_no"]), int(bill["amount_idr"]), stats)

    async def _pay(
        self, rng: random.Random, script: MemberScript, customer_no: str, amount_idr: int, stats: RoundStats
    ) -> None:
        bank: BankRef = script.bank
        token = self.bank_tokens[bank.bank_id]
        steps = payment_steps(
            rng, script, self.world, customer_no=customer_no, amount_idr=amount_idr, paid_at=datetime.now(UTC)
        )
        all_ok = True
        for step in steps:
            headers = snap_headers(rng, bank.bank_id, token, datetime.now(UTC))
            response = await self._post(self.bank, PAY_PATH, step.body, headers, stats)
            if response is None:
                return
            ok = self._check(stats, "payment", response, step.expect)
            if step.label != "bad":
                all_ok = all_ok and ok
                if ok:
                    stats.notifications[step.label] += 1
        if all_ok:
            stats.paid += 1
            stats.currencies[script.currency] += 1

    # --- rounds ----------------------------------------------------------------------------------------
    async def run_round(self, number: int, members: int, stop: asyncio.Event) -> tuple[RoundStats, bool]:
        """One round; (stats, interrupted)."""
        stats = RoundStats()
        started = time.monotonic()
        gate = asyncio.Semaphore(self.concurrency)

        async def member(i: int) -> None:
            async with gate:
                await self._member(random.Random(f"{self.seed}/{number}/{i}"), stats)

        tasks = {asyncio.create_task(member(i)) for i in range(members)}
        stopper = asyncio.create_task(stop.wait())
        interrupted = False
        try:
            pending = set(tasks)
            while pending:
                done, _ = await asyncio.wait(pending | {stopper}, return_when=asyncio.FIRST_COMPLETED)
                pending -= done
                if stopper in done:
                    interrupted = True
                    break
        finally:
            stopper.cancel()
            for task in tasks:
                task.cancel()
            results = await asyncio.gather(*tasks, stopper, return_exceptions=True)
        for result in results:
            if isinstance(result, Exception) and not isinstance(result, asyncio.CancelledError):
                stats.unexpected[f"error:{type(result).__name__}"] += 1
        stats.seconds = time.monotonic() - started
        return stats, interrupted

    async def run(self, *, forever: bool, members: int, stop: asyncio.Event) -> int:
        offices = ", ".join(o.code for o in self.world.offices)
        banks = ", ".join(b.bank_id for b in self.world.banks)
        self.out(
            f"simulator: seed {self.seed}, {members} members per round, "
            f"{'forever' if forever else 'one round'}; offices {offices}; banks {banks}"
        )
        if not await self.wait_ready(stop):
            if stop.is_set():
                return 0
            self.out(f"simulator: the APIs did not answer within {self.retry.ready_deadline_s:.0f}s; giving up")
            return 1
        total = RoundStats()
        number = 0
        while not stop.is_set():
            number += 1
            stats, interrupted = await self.run_round(number, members, stop)
            total.add(stats)
            self.out(stats.line(f"round {number}" + (" (interrupted)" if interrupted else "")))
            if not forever:
                break
        if forever or number > 1:
            self.out(total.line(f"total of {number} round(s)"))
        if stop.is_set() or forever:
            return 0
        return 0 if total.ok else 1


def _api_host(host: str) -> str:
    return "127.0.0.1" if host in ("", "0.0.0.0", "::") else host


async def _main(settings: Settings, *, forever: bool, members: int, rate: float, seed: int) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    host = _api_host(settings.http_host)
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    timeout = httpx.Timeout(30.0, connect=5.0)
    async with (
        httpx.AsyncClient(base_url=f"http://{host}:{settings.kbri_api_port}", limits=limits, timeout=timeout) as kbri,
        httpx.AsyncClient(base_url=f"http://{host}:{settings.bank_api_port}", limits=limits, timeout=timeout) as bank,
    ):
        simulator = Simulator(settings, kbri, bank, rate=rate, seed=seed)
        return await simulator.run(forever=forever, members=members, stop=stop)


def run_simulator(
    settings: Settings, *, forever: bool = False, members: int = 50, rate: float = 20.0, seed: int | None = None
) -> int:
    """Entry point of `sinergi simulate`; the exit status (0: clean; 1: unexpected answers or no API)."""
    if members < 1:
        raise ValueError("members must be at least 1")
    chosen = seed if seed is not None else secrets.randbits(32)
    try:
        return asyncio.run(_main(settings, forever=forever, members=members, rate=rate, seed=chosen))
    except KeyboardInterrupt:  # a second Ctrl-C while shutting down
        return 0
