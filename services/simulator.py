"""`sinergi simulate`: realistic traffic through the public HTTP APIs (KBRI intake, SNAP bank endpoints).

Each round enrolls ``members`` workers at several offices, then every bill is paid at a bank that serves
the office's country, the way a bank does it: a B2B access token (cached until shortly before it
expires; the static development token when the bank holds no private key), a VA inquiry that must show
the outstanding amount, then the payment notification(s), each signed HMAC-SHA512 over the exact bytes
sent (IDR or local currency with ``additionalInfo.fxRate``, sometimes two instalments, sometimes a resent
notification). For some members a last inquiry must say the bill is paid. A share of requests is malformed
and must be refused with the documented status and reason code.

At the end of a round, per bank: an inquiry for a VA that was never issued (4042412), a replay of an
accepted notification with its X-EXTERNAL-ID (the stored answer again), the attacks a biller must refuse
(a bad signature and a stale timestamp: 401 4012500; the X-EXTERNAL-ID reused with another body: 409
4092500), and ONE statement upload covering the bank's payments of the round (formats rotate between
rounds: SNAP JSON, MT940, CSV, camt.054), expected 2001400 with every line accepted.

Reconciliation cases, each at least once a round (shares in ``Mix``; counted as "cases" on the round line,
codes only): an OVERPAYMENT (the bill rounded up); a PAYMENT_BEFORE_ENROLLMENT (the worker pays the VA of
an enrollment the office posts only afterwards: the bank API accepts a payment for a customer number it
does not know yet and the reconciler holds it, so the bank takes it without an inquiry, which could only
say 4042412, as a counter working from a paper slip would; the customer number is the hub's keyed hash of
the NIK, which the demo simulator can compute because it shares the hub's settings); an UNKNOWN_VA payment
(a VA never issued, taken the same way; held as PAYMENT_BEFORE_ENROLLMENT); a FX_RATE_OUT_OF_TOLERANCE
payment (rate beyond SINERGI_RECONCILE_FX_TOLERANCE_PCT of the published reference). Each statement
carries a correction debit taking one paid member's payment back (REVERSAL), a credit net of a bank fee
(AMOUNT_MISMATCH), a credit never notified (ON_STATEMENT_NOT_NOTIFIED) and leaves one notified payment
off (NOTIFIED_NOT_ON_STATEMENT). BILL_EXPIRED is not produced: a bill is payable for
SINERGI_BILL_VALIDITY_DAYS (30) after the enrollment, the bank API refuses a payment on an expired bill
before the reconciler sees it (4042519), and the trxDateTime is the real time of the payment.

After every ``report_every`` rounds, per bank, the daily statement-reconciliation report of the current
WIB business date (GET /v1/reports/daily, signed over the empty body) is summarised in one line: matched,
mismatched, unmatched and reversed counts with their rupiah sums. While the stage is off (503
STATEMENT_RECONCILIATION_DISABLED) that is said once and the report is not asked for again.

The read model behind the inquiry is fed asynchronously (reconciler -> members.v1 -> bank API), so a VA
that is unknown right after its enrollment, or still outstanding right after its payment, is asked again
with backoff until ``RetryPolicy.read_model_deadline_s``.

An endpoint that is not deployed (yet) answers FastAPI's 404 {"detail": "Not Found"}, without a SNAP
responseCode: that step is skipped, announced once per run and counted per round ("skipped, endpoint
missing"), so the demo runs against a hub that does not serve every endpoint. A SNAP 404 (with a
responseCode) is an answer like any other.

One line per round (and the daily-report lines); never any personal value (NIK, passport, name, VA) on the
output. Requests are paced by ``rate`` (requests per second, all endpoints together). Connection errors
and 503 (the APIs still starting, Kafka not acknowledging, the read model loading) are retried with
exponential backoff and jitter, with the same idempotency keys (X-Request-Id, X-EXTERNAL-ID,
paymentRequestId), until a deadline. SIGINT/SIGTERM stop the run cleanly (exit 0). The traffic itself
comes from the pure generators in services.simulation.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import secrets
import signal
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx

from connectors.bank.snap_signing import sign_hmac_sha512
from services import fx_rates
from services.bank_client import (
    INQUIRY_PATH,
    JSON,
    PAYMENT_PATH,
    STATEMENT_PATH,
    BankCredentials,
    Prepared,
    SnapAnswer,
    TokenSource,
    TokenUnavailable,
    amount_of,
    bank_credentials,
    encode_json,
    endpoint_url,
    inquiry_body,
    new_external_id,
    read_answer,
    snap_timestamp,
    transactional_request,
    transactional_string_to_sign,
)
from services.config import Settings
from services.domain.dates import wib_date
from services.domain.identity import compose_va, participant_id
from services.domain.payment import to_idr
from services.domain.tariff import load_tariffs
from services.reference import load_banks, load_offices, load_tariff_document
from services.simulation.generators import (
    ACCEPTED_ENROLLMENT,
    ACCEPTED_PAYMENT,
    CHANNEL_IDS,
    DEFAULT_BANKS,
    DEFAULT_OFFICES,
    IDR,
    TYPICAL_BILL_IDR,
    BankRef,
    Case,
    Expect,
    MemberScript,
    Mix,
    PaymentStep,
    World,
    expected_bill_idr,
    fx_off_deviation_pct,
    kbri_headers,
    office_request_id,
    payment_request_id,
    payment_steps,
    plan_cases,
    plan_member,
    requote_off_reference,
    unissued_customer_no,
    unknown_va_payment,
)
from services.simulation.reports import summary_line
from services.simulation.statements import (
    PAYMENT_BREAKS,
    ROTATION,
    Break,
    Statement,
    StatementLine,
    build_statement,
    collection_account_no,
    in_booking_order,
    with_breaks,
)

ENROLL_PATH = "/v1/enrollments"
PAY_PATH = PAYMENT_PATH
HEALTH_PATH = "/healthz"
REPORT_PATH = "/v1/reports/daily"
REPORT_DISABLED = "STATEMENT_RECONCILIATION_DISABLED"
SNAP_SUCCESS = "2002500"
INQUIRY_SUCCESS = "2002400"
STATEMENT_SUCCESS = "2001400"
_CODE = re.compile(r"[A-Z0-9_]{1,40}")
_RECENT_NIKS_MAX = 200_000
PAYING_STEPS = frozenset({"full", "partial", "remainder"})  # a new bank transaction (not a resend)

UNKNOWN_VA = Expect(404, "VA_NOT_FOUND", "4042412")
BILL_PAID = Expect(404, "BILL_PAID", "4042414")
BAD_SIGNATURE = Expect(401, "SIGNATURE_INVALID", "4012500")
STALE_TIMESTAMP = Expect(401, "TIMESTAMP_OUT_OF_WINDOW", "4012500")
EXTERNAL_ID_CONFLICT = Expect(409, "EXTERNAL_ID_CONFLICT", "4092500")
TOKEN_INVALID = "TOKEN_INVALID"  # noqa: S105 (a reason code)
STALE_BY_S = 120  # beyond the API's skew window


@dataclass(frozen=True)
class RetryPolicy:
    initial_s: float = 0.2
    max_s: float = 5.0
    request_deadline_s: float = 60.0  # per request: connect errors / 503 retried until then
    ready_deadline_s: float = 120.0  # at start: both APIs answer /healthz by then
    read_model_deadline_s: float = 30.0  # a new VA known / a paid bill shown as paid by the inquiry by then


def _code(value: object) -> str:
    """A reason code from a response, or "?" (never echo anything that is not shaped like a code)."""
    return value if isinstance(value, str) and _CODE.fullmatch(value) else "?"


@dataclass
class RoundStats:
    members: int = 0
    enrolled: int = 0
    warnings: int = 0
    paid: int = 0  # members whose whole bill was accepted
    inquiries: int = 0  # inquiries answered as expected (bill shown, or the expected refusal)
    read_model_waits: int = 0  # inquiries asked again because the read model had not caught up yet
    statement_entries: int = 0
    tokens: int = 0  # B2B access tokens obtained
    notifications: Counter[str] = field(default_factory=Counter)  # full, partial, remainder, duplicate, replay
    currencies: Counter[str] = field(default_factory=Counter)
    statements: Counter[str] = field(default_factory=Counter)  # uploads accepted, by format
    refused: Counter[str] = field(default_factory=Counter)  # expected refusals by reason code
    skipped: Counter[str] = field(default_factory=Counter)  # steps skipped: endpoint not served (yet)
    unexpected: Counter[str] = field(default_factory=Counter)  # endpoint:status:reason
    cases: Counter[str] = field(default_factory=Counter)  # reconciliation cases produced (Case, Break)
    retries: int = 0
    gave_up: int = 0
    seconds: float = 0.0

    _INTS = (
        "members",
        "enrolled",
        "warnings",
        "paid",
        "inquiries",
        "read_model_waits",
        "statement_entries",
        "tokens",
        "retries",
        "gave_up",
    )
    _COUNTERS = ("notifications", "currencies", "statements", "refused", "skipped", "unexpected", "cases")

    def add(self, other: RoundStats) -> None:
        for name in self._INTS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for name in self._COUNTERS:
            getattr(self, name).update(getattr(other, name))
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
            f"inquiries {self.inquiries} (read model waits {self.read_model_waits})",
            f"paid {self.paid} [{counts(self.notifications) or '-'}; {counts(self.currencies) or '-'}]",
            f"statements {sum(self.statements.values())} [{counts(self.statements) or '-'}; "
            f"{self.statement_entries} entries]",
            f"refused as expected {sum(self.refused.values())} [{counts(self.refused) or '-'}]",
            f"cases {sum(self.cases.values())} [{counts(self.cases) or '-'}]",
        ]
        if self.skipped:
            parts.append(f"skipped, endpoint missing {sum(self.skipped.values())} [{counts(self.skipped)}]")
        parts += [
            f"B2B tokens {self.tokens}",
            f"unexpected {sum(self.unexpected.values())}"
            + (f" [{counts(self.unexpected)}]" if self.unexpected else ""),
            f"retries {self.retries}",
            f"gave up {self.gave_up}",
        ]
        return " | ".join(parts)


@dataclass(frozen=True)
class Accepted:
    """A payment notification the API accepted this round: what the end-of-round checks and the
    statement are built from."""

    external_id: str
    content: bytes
    answer: dict[str, Any]
    body: dict[str, Any]
    amount_idr: int
    accepted_at: datetime
    label: str = "full"  # the PaymentStep label
    case: Case | None = None

    @property
    def ordinary(self) -> bool:
        """The member's only payment, of an ordinary member: a statement break may be about it."""
        return self.case is None and self.label == "full"


@dataclass
class RoundLedger:
    by_bank: dict[str, list[Accepted]] = field(default_factory=dict)

    def add(self, bank_id: str, accepted: Accepted) -> None:
        self.by_bank.setdefault(bank_id, []).append(accepted)


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
    """Offices and banks that can call (office token; bank client secret and private key or static token),
    restricted to the simulator's default selection."""
    offices = load_offices(settings.offices_file)
    banks = load_banks(settings.banks_file)
    offices_doc = {"offices": [{"code": o.code, "country": o.country} for o in offices.values()]}
    banks_doc = {
        "banks": [
            {"bank_id": b.bank_id, "partner_service_id": b.partner_service_id, "currencies": sorted(b.currencies)}
            for b in banks.values()
        ]
    }
    callers = bank_credentials(settings)
    return World.from_reference(
        offices_doc,
        banks_doc,
        office_codes=[c for c in DEFAULT_OFFICES if c in settings.office_tokens],
        bank_ids=[b for b in DEFAULT_BANKS if b in callers],
    )


def amount_idr_of(body: Mapping[str, Any]) -> int:
    """The integer-rupiah amount of a (valid) payment body, by the domain's rule."""
    paid = body["paidAmount"]
    value = Decimal(paid["value"])
    if paid["currency"] == IDR:
        return int(value)
    return to_idr(value, Decimal(body["additionalInfo"]["fxRate"]))


class _NoToken(Exception):
    """No bearer token for this bank (already counted)."""


class _BankSession:
    """One simulated bank: its credentials and its token source."""

    def __init__(self, http: httpx.AsyncClient, creds: BankCredentials, out: Callable[[str], None]) -> None:
        self.creds = creds
        self.tokens = TokenSource(http, creds)
        self._out = out
        self._b2b_refused = False

    async def token(self, stats: RoundStats) -> str:
        if self._b2b_refused:
            if self.creds.static_token is None:
                raise _NoToken()
            return self.creds.static_token
        try:
            return await self.tokens.get()
        except TokenUnavailable as exc:
            answer = exc.answer
            status = answer.status if answer else 0
            reason = _code(answer.reason if answer else None)
            stats.unexpected[f"token:{status}:{reason}"] += 1
            self._b2b_refused = True
            fallback = "using the static token" if self.creds.static_token else "no static token either"
            self._out(f"simulator: {self.creds.bank_id} B2B token refused ({status} {reason}); {fallback}")
            if self.creds.static_token is None:
                raise _NoToken() from None
            return self.creds.static_token

    def invalidate(self, token: str) -> None:
        self.tokens.invalidate(token)


Build = Callable[[RoundStats], Awaitable[Prepared]]


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
        credentials: Mapping[str, BankCredentials] | None = None,
        report_every: int = 1,
    ) -> None:
        self.kbri = kbri
        self.bank = bank
        self.seed = seed
        self.mix = mix or Mix()
        self.retry = retry
        self.out = out
        self.world = world or world_from_settings(settings)
        self.office_tokens = {k: v.get_secret_value() for k, v in settings.office_tokens.items()}
        creds = credentials if credentials is not None else bank_credentials(settings)
        self.sessions = {b.bank_id: _BankSession(bank, creds[b.bank_id], out) for b in self.world.banks}
        self.skew_s = settings.snap_timestamp_skew_s
        self.customer_no_digits = settings.customer_no_digits
        self.participant_secret = settings.participant_key_secret.get_secret_value().encode("utf-8")
        self.tariffs = load_tariffs(load_tariff_document(settings.tariff_file))
        self.fx_tolerance_pct = settings.reconcile_fx_tolerance_pct
        self.report_every = report_every
        self._reports_off = False
        self.limiter = RateLimiter(rate)
        self.concurrency = max(4, min(64, int(rate))) if rate > 0 else 32
        self._jitter = random.Random()  # backoff jitter only; traffic comes from the seeded per-member rngs
        self._recent_niks: set[str] = set()
        self._announced_missing: set[str] = set()
        self._balances: dict[str, int] = {}  # per bank: the collection account's closing balance so far

    # --- HTTP ------------------------------------------------------------------------------------------
    async def _send(
        self, client: httpx.AsyncClient, build: Build, stats: RoundStats, *, renew_token: bool = False
    ) -> httpx.Response | None:
        """Send with pacing; connect errors and 503 retried with backoff until the request deadline.

        `build` is called for every attempt: a retry carries a fresh X-TIMESTAMP and signature but the same
        body and idempotency keys. With `renew_token`, a TOKEN_INVALID answer (the API restarted and forgot
        its B2B tokens) gets the token renewed and the request sent once more.
        """
        deadline = time.monotonic() + self.retry.request_deadline_s
        delay = self.retry.initial_s
        renewed = not renew_token
        while True:
            await self.limiter.acquire()
            wait = delay
            try:
                request = await build(stats)
                response = await client.request(
                    request.method, request.target, content=request.content, headers=request.headers
                )
            except _NoToken:
                return None
            except httpx.TransportError:
                pass
            else:
                if response.status_code == 401 and not renewed and read_answer(response).reason == TOKEN_INVALID:
                    renewed = True
                    token = request.headers.get("Authorization", "").removeprefix("Bearer ")
                    bank_id = request.headers.get("X-PARTNER-ID", "")
                    if bank_id in self.sessions:
                        self.sessions[bank_id].invalidate(token)
                    continue
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

    @staticmethod
    def _plain(path: str, body: Mapping[str, Any], headers: Mapping[str, str]) -> Build:
        request = Prepared("POST", path, dict(headers), encode_json(body))

        async def build(_stats: RoundStats) -> Prepared:
            return request

        return build

    def _signed(
        self,
        session: _BankSession,
        path: str,
        content: bytes,
        *,
        external_id: str,
        channel_id: str | None,
        content_type: str = JSON,
        query: Mapping[str, str] | None = None,
        clock_offset_s: float = 0.0,
        secret: bytes | None = None,
    ) -> Build:
        async def build(stats: RoundStats) -> Prepared:
            token = await session.token(stats)
            now = datetime.now(UTC) + timedelta(seconds=clock_offset_s)
            return transactional_request(
                session.creds,
                token,
                path,
                content,
                timestamp=snap_timestamp(now),
                external_id=external_id,
                channel_id=channel_id,
                content_type=content_type,
                query=query,
                secret=secret,
            )

        return build

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
        answer = read_answer(response)
        doc = answer.body
        if expect.status < 300:
            ok = response.status_code == expect.status and (not expect.code or doc.get("responseCode") == expect.code)
            if not ok:
                stats.unexpected[f"{endpoint}:{response.status_code}:{_code(doc.get('reason'))}"] += 1
            return ok
        reason = _code(doc.get("reason"))
        code_ok = not expect.code or answer.code == expect.code
        if response.status_code == expect.status and reason == expect.reason and code_ok:
            stats.refused[reason] += 1
            return True
        stats.unexpected[f"{endpoint}:{response.status_code}:{reason}(expected {expect.reason})"] += 1
        return False

    def _missing(self, stats: RoundStats, endpoint: str, path: str, answer: SnapAnswer, method: str = "POST") -> bool:
        """True (and counted, announced once per run) when the endpoint is not served at all."""
        if not answer.endpoint_missing:
            return False
        stats.skipped[endpoint] += 1
        if endpoint not in self._announced_missing:
            self._announced_missing.add(endpoint)
            self.out(
                f"simulator: {method} {path} answers 404 without a SNAP responseCode: endpoint not deployed; "
                f"skipping {endpoint} steps (counted per round)"
            )
        return True

    async def _backoff(self, delay: float) -> float:
        await asyncio.sleep(delay * (0.5 + self._jitter.random()))
        return min(delay * 2, self.retry.max_s)

    # --- one worker ------------------------------------------------------------------------------------
    def _plan(self, rng: random.Random, today: Any, case: Case | None = None) -> MemberScript:
        while True:
            script = plan_member(rng, self.world, today, self.mix, case)
            nik = script.enrollment["nik"]
            if nik not in self._recent_niks:  # one NIK, one participant: avoid accidental re-enrollment
                if len(self._recent_niks) >= _RECENT_NIKS_MAX:
                    self._recent_niks.clear()
                self._recent_niks.add(nik)
                return script

    async def _member(
        self, rng: random.Random, stats: RoundStats, ledger: RoundLedger, case: Case | None = None
    ) -> None:
        today = wib_date(datetime.now(UTC))
        script = self._plan(rng, today, case)
        stats.members += 1
        if script.case is Case.PAYMENT_BEFORE_ENROLLMENT:
            await self._pay_before_enrollment(rng, script, stats, ledger)
            return
        office = script.office.code
        token = self.office_tokens[office]
        if script.bad_enrollment is not None:
            bad_body, expect = script.bad_enrollment
            headers = kbri_headers(token, office_request_id(rng, office, today))
            response = await self._send(self.kbri, self._plain(ENROLL_PATH, bad_body, headers), stats)
            if response is None:
                return
            self._check(stats, "enrollment", response, expect)
            if not script.resubmit:
                return
        headers = kbri_headers(token, office_request_id(rng, office, today))
        response = await self._send(self.kbri, self._plain(ENROLL_PATH, script.enrollment, headers), stats)
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
        await self._pay(rng, script, str(accepted["customer_no"]), int(bill["amount_idr"]), stats, ledger)

    async def _pay(
        self,
        rng: random.Random,
        script: MemberScript,
        customer_no: str,
        amount_idr: int,
        stats: RoundStats,
        ledger: RoundLedger,
    ) -> None:
        bank: BankRef = script.bank
        session = self.sessions[bank.bank_id]
        steps = payment_steps(
            rng, script, self.world, customer_no=customer_no, amount_idr=amount_idr, paid_at=datetime.now(UTC)
        )
        for step in steps:
            if step.label in PAYING_STEPS:  # a duplicate shares its body: re-quoted with it
                fx_rates.pin_to_reference(step.body)
        if script.case is Case.FX_RATE_OUT_OF_TOLERANCE:
            steps = [self._off_reference(rng, step) for step in steps]
        # Under the HOLD policy an FX case is not credited: its bill would rightly still read as open.
        ask_when_paid = rng.random() < self.mix.paid_inquiry_share and script.case is not Case.FX_RATE_OUT_OF_TOLERANCE
        all_ok = True
        paid_idr = 0
        for step in steps:
            step_idr = amount_idr_of(step.body) if step.label in PAYING_STEPS else 0
            if step.label in PAYING_STEPS:
                # The read model may not have applied an earlier instalment yet: either amount is right.
                outstanding = {amount_idr - paid_idr, amount_idr}
                if not await self._inquire_bill(rng, session, step.body, outstanding, stats):
                    return  # a bank takes no payment for a bill it cannot show
            external_id = new_external_id(rng, datetime.now(UTC))
            content = encode_json(step.body)
            channel = rng.choice(CHANNEL_IDS)
            build = self._signed(session, PAY_PATH, content, external_id=external_id, channel_id=channel)
            response = await self._send(self.bank, build, stats, renew_token=True)
            if response is None:
                return
            ok = self._check(stats, "payment", response, step.expect)
            if step.label == "bad":
                continue
            all_ok = all_ok and ok
            if ok:
                stats.notifications[step.label] += 1
                if step.label in PAYING_STEPS:
                    paid_idr += step_idr
                    answer = read_answer(response).body
                    at = datetime.now(UTC)
                    accepted = Accepted(external_id, content, answer, step.body, step_idr, at, step.label, script.case)
                    ledger.add(bank.bank_id, accepted)
        if all_ok:
            stats.paid += 1
            stats.currencies[script.currency] += 1
            if script.case is not None:
                stats.cases[script.case.value] += 1
            if ask_when_paid and paid_idr >= amount_idr:
                await self._inquire_paid(rng, session, steps[-1].body, stats)

    def _off_reference(self, rng: random.Random, step: PaymentStep) -> PaymentStep:
        """The step re-quoted at a rate beyond the FX tolerance of the day's simulated reference rate."""
        body = step.body
        currency = body["paidAmount"]["currency"]
        if step.label not in PAYING_STEPS or currency not in fx_rates.SIMULATED_CENTRE:
            return step
        day = wib_date(datetime.fromisoformat(body["trxDateTime"]))
        deviation = fx_off_deviation_pct(rng, self.fx_tolerance_pct, self.mix.fx_off_margin_pct)
        off = requote_off_reference(body, fx_rates.simulated_rate(currency, day), deviation)
        return PaymentStep(step.label, off, step.expect)

    async def _pay_before_enrollment(
        self, rng: random.Random, script: MemberScript, stats: RoundStats, ledger: RoundLedger
    ) -> None:
        """PAYMENT_BEFORE_ENROLLMENT: the worker pays at once, the office posts the enrollment afterwards.

        The bank takes the payment without an inquiry (it could only answer 4042412: the hub does not know the
        VA yet) and the bank API accepts it; the reconciler holds it until the enrollment arrives, then credits
        it, so the bill must read as paid (4042414) once the read model caught up."""
        today = wib_date(datetime.now(UTC))
        bank = script.bank
        session = self.sessions[bank.bank_id]
        customer_no = participant_id(script.enrollment["nik"], self.participant_secret, self.customer_no_digits)
        amount_idr = expected_bill_idr(self.tariffs, script.enrollment, today)
        (step,) = payment_steps(
            rng, script, self.world, customer_no=customer_no, amount_idr=amount_idr, paid_at=datetime.now(UTC)
        )
        fx_rates.pin_to_reference(step.body)
        external_id = new_external_id(rng, datetime.now(UTC))
        content = encode_json(step.body)
        build = self._signed(session, PAY_PATH, content, external_id=external_id, channel_id=rng.choice(CHANNEL_IDS))
        response = await self._send(self.bank, build, stats, renew_token=True)
        if response is None or not self._check(stats, "payment", response, ACCEPTED_PAYMENT):
            return
        stats.notifications[step.label] += 1
        paid = amount_idr_of(step.body)
        answer = read_answer(response).body
        accepted = Accepted(
            external_id, content, answer, step.body, paid, datetime.now(UTC), step.label, Case.PAYMENT_BEFORE_ENROLLMENT
        )
        ledger.add(bank.bank_id, accepted)
        if self.mix.late_enrollment_delay_s > 0:
            await asyncio.sleep(self.mix.late_enrollment_delay_s)
        office = script.office.code
        headers = kbri_headers(self.office_tokens[office], office_request_id(rng, office, today))
        response = await self._send(self.kbri, self._plain(ENROLL_PATH, script.enrollment, headers), stats)
        if response is None or not self._check(stats, "enrollment", response, ACCEPTED_ENROLLMENT):
            return
        enrolled = response.json()
        stats.enrolled += 1
        stats.warnings += bool(enrolled.get("warnings"))
        # A hub with another participant key (or tariff) than the simulator's would leave the payment held.
        if str(enrolled.get("customer_no")) != customer_no:
            stats.unexpected["enrollment:202:CUSTOMER_NO_DIFFERS"] += 1
            return
        if int((enrolled.get("bill") or {}).get("amount_idr", -1)) != paid:
            stats.unexpected["enrollment:202:BILL_DIFFERS"] += 1
            return
        stats.paid += 1
        stats.currencies[script.currency] += 1
        stats.cases[Case.PAYMENT_BEFORE_ENROLLMENT.value] += 1
        await self._inquire_paid(rng, session, step.body, stats)

    async def _pay_unknown_va(self, rng: random.Random, bank: BankRef, stats: RoundStats, ledger: RoundLedger) -> None:
        """UNKNOWN_VA: a payment to a VA the hub never issued, taken without an inquiry; accepted and held."""
        session = self.sessions[bank.bank_id]
        customer_no = unissued_customer_no(rng, self.customer_no_digits)
        body = unknown_va_payment(rng, bank, customer_no=customer_no, paid_at=datetime.now(UTC))
        fx_rates.pin_to_reference(body)
        external_id = new_external_id(rng, datetime.now(UTC))
        content = encode_json(body)
        build = self._signed(session, PAY_PATH, content, external_id=external_id, channel_id=rng.choice(CHANNEL_IDS))
        response = await self._send(self.bank, build, stats, renew_token=True)
        if response is None or not self._check(stats, "payment", response, ACCEPTED_PAYMENT):
            return
        stats.cases[Case.UNKNOWN_VA.value] += 1
        answer = read_answer(response).body
        at = datetime.now(UTC)
        ledger.add(
            bank.bank_id, Accepted(external_id, content, answer, body, amount_idr_of(body), at, "full", Case.UNKNOWN_VA)
        )

    def _inquiry(self, rng: random.Random, session: _BankSession, body: Mapping[str, Any]) -> Build:
        # A new X-EXTERNAL-ID for every ask: asking again is a new request, not a replay of the last answer.
        return self._signed(
            session,
            INQUIRY_PATH,
            encode_json(body),
            external_id=new_external_id(rng, datetime.now(UTC)),
            channel_id=rng.choice(CHANNEL_IDS),
        )

    @staticmethod
    def _inquiry_for(payment: Mapping[str, Any]) -> dict[str, Any]:
        return inquiry_body(
            partner_service_id=payment["partnerServiceId"],
            customer_no=payment["customerNo"],
            inquiry_request_id=payment["paymentRequestId"],  # SNAP: paymentRequestId = inquiryRequestId
            trx_date_init=payment["trxDateTime"],
            channel_code=payment.get("channelCode", "6011"),
        )

    async def _inquire_bill(
        self,
        rng: random.Random,
        session: _BankSession,
        payment: Mapping[str, Any],
        outstanding: set[int],
        stats: RoundStats,
    ) -> bool:
        """Inquiry before a payment: 2002400 with one of the `outstanding` rupiah amounts. A VA the read
        model does not know yet is asked again until the read-model deadline. False: do not pay."""
        body = self._inquiry_for(payment)
        deadline = time.monotonic() + self.retry.read_model_deadline_s
        delay = self.retry.initial_s
        while True:
            response = await self._send(self.bank, self._inquiry(rng, session, body), stats, renew_token=True)
            if response is None:
                return False
            answer = read_answer(response)
            if self._missing(stats, "inquiry", INQUIRY_PATH, answer):
                return True
            if answer.status == 200 and answer.code == INQUIRY_SUCCESS:
                shown = amount_of(answer)
                if shown is None or shown[1] != IDR or shown[0] not in {Decimal(a) for a in outstanding}:
                    stats.unexpected["inquiry:200:AMOUNT_MISMATCH"] += 1
                else:
                    stats.inquiries += 1
                return True
            lagging = answer.status == 404 and answer.reason == UNKNOWN_VA.reason
            if lagging and time.monotonic() + delay < deadline:
                stats.read_model_waits += 1
                delay = await self._backoff(delay)
                continue
            stats.unexpected[f"inquiry:{answer.status}:{_code(answer.reason)}"] += 1
            return False

    async def _inquire_paid(
        self, rng: random.Random, session: _BankSession, payment: Mapping[str, Any], stats: RoundStats
    ) -> None:
        """After the bill was paid in full the inquiry must answer 4042414 once the read model caught up
        (with the bill, or at all: a member enrolled after the payment)."""
        body = self._inquiry_for({**payment, "paymentRequestId": f"{payment['paymentRequestId']}-CHK"})
        deadline = time.monotonic() + self.retry.read_model_deadline_s
        delay = self.retry.initial_s
        while True:
            response = await self._send(self.bank, self._inquiry(rng, session, body), stats, renew_token=True)
            if response is None:
                return
            answer = read_answer(response)
            if self._missing(stats, "inquiry", INQUIRY_PATH, answer):
                return
            if answer.status == BILL_PAID.status and answer.reason == BILL_PAID.reason:
                stats.inquiries += self._check(stats, "inquiry", response, BILL_PAID)
                return
            still_open = answer.status == 200 and answer.code == INQUIRY_SUCCESS
            # A VA enrolled after its payment may not be in the read model yet: lagging too, not refused.
            unknown_yet = answer.status == UNKNOWN_VA.status and answer.reason == UNKNOWN_VA.reason
            if (still_open or unknown_yet) and time.monotonic() + delay < deadline:
                stats.read_model_waits += 1
                delay = await self._backoff(delay)
                continue
            reason = "STILL_OUTSTANDING" if still_open else _code(answer.reason)
            stats.unexpected[f"inquiry:{answer.status}:{reason}(expected {BILL_PAID.reason})"] += 1
            return

    # --- the end of a round, per bank --------------------------------------------------------------------
    async def _bank_checks(
        self, rng: random.Random, bank: BankRef, accepted: list[Accepted], stats: RoundStats
    ) -> None:
        session = self.sessions[bank.bank_id]
        unknown = "9" + "".join(str(rng.randrange(10)) for _ in range(self.customer_no_digits - 1))
        body = inquiry_body(
            partner_service_id=bank.partner_service_id,
            customer_no=unknown,
            inquiry_request_id=f"CHK-{rng.getrandbits(64):016x}",
            trx_date_init=snap_timestamp(datetime.now(UTC)),
        )
        response = await self._send(self.bank, self._inquiry(rng, session, body), stats, renew_token=True)
        if response is not None and not self._missing(stats, "inquiry", INQUIRY_PATH, read_answer(response)):
            stats.inquiries += self._check(stats, "inquiry", response, UNKNOWN_VA)
        if not accepted:
            return
        first = accepted[0]
        channel = rng.choice(CHANNEL_IDS)

        async def attempt(build: Build, expect: Expect, renew: bool = False) -> httpx.Response | None:
            response = await self._send(self.bank, build, stats, renew_token=renew)
            if response is not None:
                self._check(stats, "payment", response, expect)
            return response

        # Replays and conflicts only within the WIB day of the original: X-EXTERNAL-ID is unique per day.
        if wib_date(datetime.now(UTC)) == wib_date(first.accepted_at):
            replay = self._signed(session, PAY_PATH, first.content, external_id=first.external_id, channel_id=channel)
            response = await self._send(self.bank, replay, stats, renew_token=True)
            if response is not None:
                same = read_answer(response).body == first.answer
                if response.status_code == 200 and same:
                    stats.notifications["replay"] += 1
                else:
                    stats.unexpected[f"payment:{response.status_code}:{_code(read_answer(response).reason)}"] += 1
            other = encode_json({**first.body, "partnerReferenceNo": f"{rng.getrandbits(48):012X}"})
            conflict = self._signed(session, PAY_PATH, other, external_id=first.external_id, channel_id=channel)
            await attempt(conflict, EXTERNAL_ID_CONFLICT, renew=True)
        # The attacks resend an accepted body: were one accepted wrongly, it would still be a duplicate.
        wrong = session.creds.client_secret + b"-not-the-secret"
        fresh = new_external_id(rng, datetime.now(UTC))
        forged = self._signed(session, PAY_PATH, first.content, external_id=fresh, channel_id=channel, secret=wrong)
        await attempt(forged, BAD_SIGNATURE)
        fresh = new_external_id(rng, datetime.now(UTC))
        late = -(self.skew_s + STALE_BY_S)
        stale = self._signed(
            session, PAY_PATH, first.content, external_id=fresh, channel_id=channel, clock_offset_s=late
        )
        await attempt(stale, STALE_TIMESTAMP)

    def _unnotified_line(self, bank: BankRef) -> Callable[[random.Random], StatementLine]:
        """A credit the bank booked to a VA but never notified (its notification was lost on the bank's side)."""

        def line(rng: random.Random) -> StatementLine:
            now = datetime.now(UTC)
            customer_no = unissued_customer_no(rng, self.customer_no_digits)
            amount = TYPICAL_BILL_IDR
            return StatementLine(
                amount_idr=amount,
                booked_at=now,
                payment_request_id=payment_request_id(rng, bank.bank_id, now),
                virtual_account_no=compose_va(bank.partner_service_id, customer_no),
                origin_value=f"{amount}.00",
                origin_currency=IDR,
                partner_reference_no=f"{rng.getrandbits(48):012X}",
            )

        return line

    async def _statement(
        self,
        rng: random.Random,
        bank: BankRef,
        number: int,
        lines: list[Accepted],
        stats: RoundStats,
        wanted: tuple[Break, ...] = (),
    ) -> None:
        """ONE upload per bank and round: every new payment the API accepted from this bank in the round,
        with the ``wanted`` breaks."""
        if not lines:
            return
        fmt = ROTATION[(number - 1) % len(ROTATION)]
        opening = self._balances.get(bank.bank_id, 0)
        credits = [
            StatementLine(
                amount_idr=a.amount_idr,
                booked_at=a.accepted_at,
                payment_request_id=a.body["paymentRequestId"],
                virtual_account_no=a.body["virtualAccountNo"],
                origin_value=a.body["paidAmount"]["value"],
                origin_currency=a.body["paidAmount"]["currency"],
                partner_reference_no=a.body.get("partnerReferenceNo"),
            )
            for a in lines
        ]
        broken = with_breaks(
            rng,
            credits,
            candidates=[a.body["paymentRequestId"] for a in lines if a.ordinary],
            wanted=wanted,
            corrected_at=datetime.now(UTC),
            unnotified=self._unnotified_line(bank),
        )
        statement = Statement(
            bank_id=bank.bank_id,
            account_no=collection_account_no(bank.partner_service_id),
            reference=f"SIM{self.seed % 1_000_000:06d}R{number:04d}",
            statement_date=wib_date(datetime.now(UTC)),
            sequence=number,
            opening_idr=opening,
            lines=in_booking_order(broken.lines),
        )
        upload = build_statement(statement, fmt)
        build = self._signed(
            self.sessions[bank.bank_id],
            STATEMENT_PATH,
            upload.content,
            external_id=new_external_id(rng, datetime.now(UTC)),
            channel_id=None,
            content_type=upload.content_type,
            query={"filename": upload.filename},
        )
        response = await self._send(self.bank, build, stats, renew_token=True)
        if response is None:
            return
        answer = read_answer(response)
        if self._missing(stats, "statement", STATEMENT_PATH, answer):
            return
        if not self._check(stats, "statement", response, Expect(200, code=STATEMENT_SUCCESS)):
            return
        report = answer.body.get("statement")
        report = report if isinstance(report, dict) else {}
        if report.get("entries") != len(statement.lines) or report.get("rejected") != 0:
            stats.unexpected["statement:200:ENTRIES_MISMATCH"] += 1
            return
        self._balances[bank.bank_id] = statement.closing_idr
        stats.statements[fmt.value] += 1
        stats.statement_entries += len(statement.lines)
        stats.cases.update(kind.value for kind in broken.breaks)

    def _wanted_breaks(self, index: int) -> tuple[Break, ...]:
        """Every bank's statement wants every break; each bank puts another first, so that when payments are
        scarce the round still gets each break at some bank."""
        if not self.mix.statement_breaks:
            return ()
        shift = index % len(PAYMENT_BREAKS)
        return (*PAYMENT_BREAKS[shift:], *PAYMENT_BREAKS[:shift], Break.ON_STATEMENT_NOT_NOTIFIED)

    async def _end_of_round(self, number: int, ledger: RoundLedger, stats: RoundStats) -> None:
        banks = self.world.banks
        unknown_at = {
            banks[(number - 1 + k) % len(banks)].bank_id for k in range(min(self.mix.unknown_va_payments, len(banks)))
        }

        async def one(index: int, bank: BankRef) -> None:
            rng = random.Random(f"{self.seed}/{number}/bank/{bank.bank_id}")
            accepted = ledger.by_bank.get(bank.bank_id, [])
            await self._bank_checks(rng, bank, accepted, stats)
            if bank.bank_id in unknown_at:
                await self._pay_unknown_va(rng, bank, stats, ledger)
                accepted = ledger.by_bank.get(bank.bank_id, [])
            await self._statement(rng, bank, number, accepted, stats, self._wanted_breaks(index))

        await asyncio.gather(*(one(i, bank) for i, bank in enumerate(banks)))

    # --- rounds ----------------------------------------------------------------------------------------
    async def run_round(self, number: int, members: int, stop: asyncio.Event) -> tuple[RoundStats, bool]:
        """One round; (stats, interrupted)."""
        stats = RoundStats()
        ledger = RoundLedger()
        started = time.monotonic()
        tokens_before = self._tokens_issued()
        gate = asyncio.Semaphore(self.concurrency)

        cases = plan_cases(random.Random(f"{self.seed}/{number}/cases"), members, self.mix)

        async def member(i: int) -> None:
            async with gate:
                await self._member(random.Random(f"{self.seed}/{number}/{i}"), stats, ledger, cases.get(i))

        tasks = {asyncio.create_task(member(i)) for i in range(members)}
        interrupted = await self._until_done_or_stopped(tasks, stop, stats)
        if not interrupted:
            closing = {asyncio.create_task(self._end_of_round(number, ledger, stats))}
            interrupted = await self._until_done_or_stopped(closing, stop, stats)
        stats.tokens = self._tokens_issued() - tokens_before
        stats.seconds = time.monotonic() - started
        return stats, interrupted

    def _tokens_issued(self) -> int:
        return sum(session.tokens.issued for session in self.sessions.values())

    @staticmethod
    async def _until_done_or_stopped(tasks: set[asyncio.Task[None]], stop: asyncio.Event, stats: RoundStats) -> bool:
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
        return interrupted

    async def run(self, *, forever: bool, members: int, stop: asyncio.Event) -> int:
        offices = ", ".join(o.code for o in self.world.offices)
        banks = ", ".join(
            f"{b.bank_id} ({'B2B token' if self.sessions[b.bank_id].tokens.uses_b2b else 'static token'})"
            for b in self.world.banks
        )
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
            if not interrupted and self.report_every > 0 and number % self.report_every == 0:
                total.add(await self.daily_reports())
            if not forever:
                break
        if forever or number > 1:
            self.out(total.line(f"total of {number} round(s)"))
        if stop.is_set() or forever:
            return 0
        return 0 if total.ok else 1

    # --- the daily report, per bank ------------------------------------------------------------------------
    async def daily_reports(self) -> RoundStats:
        """Ask every bank's daily report of today (WIB) and print one summary line per bank. One attempt each:
        a report is a view, so a refusal is said rather than retried."""
        stats = RoundStats()
        if self._reports_off:
            return stats
        day = wib_date(datetime.now(UTC))
        results = await asyncio.gather(*(self._daily_report(bank, day, stats) for bank in self.world.banks))
        for line in results:
            if line is not None:
                self.out(line)
        return stats

    async def _daily_report(self, bank: BankRef, day: Any, stats: RoundStats) -> str | None:
        session = self.sessions[bank.bank_id]
        query = f"bank={bank.bank_id}&date={day.isoformat()}"
        try:
            token = await session.token(stats)
        except _NoToken:
            return None
        timestamp = snap_timestamp(datetime.now(UTC))
        url = endpoint_url(REPORT_PATH, query, session.creds.endpoint_url)
        sts = transactional_string_to_sign("GET", url, token, b"", timestamp)
        headers = {
            "Authorization": f"Bearer {token}",
            "X-PARTNER-ID": bank.bank_id,
            "X-EXTERNAL-ID": new_external_id(self._jitter, datetime.now(UTC)),
            "X-TIMESTAMP": timestamp,
            "X-SIGNATURE": sign_hmac_sha512(session.creds.client_secret, sts),
        }
        await self.limiter.acquire()
        try:
            response = await self.bank.get(f"{REPORT_PATH}?{query}", headers=headers)
        except httpx.TransportError:
            return f"daily report {bank.bank_id} {day.isoformat()}: bank API not reachable"
        answer = read_answer(response)
        if self._missing(stats, "report", REPORT_PATH, answer, method="GET"):
            return None
        if response.status_code == 200 and isinstance(answer.body, dict):
            return summary_line(bank.bank_id, day.isoformat(), answer.body)
        reason = _code(answer.reason)
        if response.status_code == 503 and reason == REPORT_DISABLED:
            if not self._reports_off:
                self._reports_off = True
                self.out(
                    f"simulator: daily report: 503 {REPORT_DISABLED} (statement reconciliation is off, "
                    "SINERGI_STATEMENT_RECONCILIATION_ENABLED); not asked again"
                )
            return None
        if response.status_code == 503:  # the decisions topic could not be read just now
            return f"daily report {bank.bank_id} {day.isoformat()}: unavailable ({reason})"
        stats.unexpected[f"report:{response.status_code}:{reason}"] += 1
        return f"daily report {bank.bank_id} {day.isoformat()}: refused ({response.status_code} {reason})"


def _api_host(host: str) -> str:
    return "127.0.0.1" if host in ("", "0.0.0.0", "::") else host


async def _main(
    settings: Settings, *, forever: bool, members: int, rate: float, seed: int, report_every: int = 1
) -> int:
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
        simulator = Simulator(settings, kbri, bank, rate=rate, seed=seed, report_every=report_every)
        return await simulator.run(forever=forever, members=members, stop=stop)


def run_simulator(
    settings: Settings,
    *,
    forever: bool = False,
    members: int = 50,
    rate: float = 20.0,
    seed: int | None = None,
    report_every: int = 1,
) -> int:
    """Entry point of `sinergi simulate`; the exit status (0: clean; 1: unexpected answers or no API)."""
    if members < 1:
        raise ValueError("members must be at least 1")
    chosen = seed if seed is not None else secrets.randbits(32)
    fx_rates.publish_simulated(settings)
    try:
        return asyncio.run(
            _main(settings, forever=forever, members=members, rate=rate, seed=chosen, report_every=report_every)
        )
    except KeyboardInterrupt:  # a second Ctrl-C while shutting down
        return 0


__all__ = ["RetryPolicy", "RoundStats", "Simulator", "amount_idr_of", "run_simulator", "world_from_settings"]
