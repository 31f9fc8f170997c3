"""The simulator against the real partner APIs in-process (ASGI transport, in-memory producer).

The bank API's inquiry answers from a read model (MemberBook) that production feeds from members.v1. Here
`ReconcilingProducer` plays the pipeline behind the APIs with the pure domain functions the workers use
(normalize_enrollment / normalize_payment -> on_enrollment / on_payment) and applies every member version
to the book, optionally after a lag, so the simulator meets the same asynchrony as against a real hub.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from connectors.bank import reports
from connectors.bank.app import create_bank_app
from connectors.bank.member_book import MemberBook
from connectors.kafka_edge import Headers, InMemoryProducer
from connectors.kbri.app import create_kbri_app
from services.bank_client import (
    INQUIRY_PATH,
    STATEMENT_PATH,
    bank_sim_call,
    cli_credentials,
    generate_key_pair,
    write_private_keys,
)
from services.catalogue import ENROLLMENTS_RAW, PAYMENTS_RAW
from services.config import Settings
from services.context import build_context
from services.domain.dates import wib_date
from services.domain.enrollment import normalize_enrollment
from services.domain.models import Payment, StatementEntry
from services.domain.payment import normalize_payment
from services.domain.reconcile import FxReference, MemberState, on_enrollment, on_payment
from services.domain.statement_match import BankLedger, Decision, apply_entry, apply_payment, close_day
from services.fx_rates import simulated_rate
from services.simulation.generators import Mix, OfficeRef, enrollment_body, kbri_headers
from services.simulator import RetryPolicy, Simulator

FAST = RetryPolicy(initial_s=0.001, max_s=0.01, request_deadline_s=5.0, ready_deadline_s=5.0, read_model_deadline_s=5.0)
NO_DELAY = Mix(pay_delay_max_s=0.0, late_enrollment_delay_s=0.0)
# no reconciliation cases: every payment follows an inquiry that showed its bill
NO_CASES = Mix(
    pay_delay_max_s=0.0,
    overpayment_share=0.0,
    late_enrollment_share=0.0,
    fx_off_share=0.0,
    unknown_va_payments=0,
    statement_breaks=False,
)
STATEMENTS_RAW = "bank.statements.raw"
STATEMENT_RECONCILIATION_DISABLED = "503 STATEMENT_RECONCILIATION_DISABLED"
BANKS = ("MANDIRI", "BNI", "MAYBANK_MY")


class ReconcilingProducer(InMemoryProducer):
    """Acknowledges like InMemoryProducer, then (after `lag_s`) applies what the workers would make of the
    record to `book`: the reconciler's member versions, as members.v1 would carry them to the bank API."""

    def __init__(
        self, settings: Settings, book: MemberBook, lag_s: float = 0.0, fx_reference: FxReference | None = None
    ) -> None:
        super().__init__()
        self.book = book
        self.lag_s = lag_s
        self.fx_reference = fx_reference
        self.outcomes: Counter[str] = Counter()  # the reconciler's outcome per event
        self.exceptions: Counter[str] = Counter()  # its exception reasons
        self.payments: list[Payment] = []  # normalized, in arrival order
        self._settings = settings
        self._ctx = build_context(settings, codec=None)
        self._states: dict[str, MemberState] = {}
        self._pending: set[asyncio.Task[None]] = set()

    async def send(self, topic: str, key: bytes, value: bytes, headers: Headers) -> None:
        await super().send(topic, key, value, headers)
        if topic in (ENROLLMENTS_RAW.name, PAYMENTS_RAW.name):
            task = asyncio.create_task(self._apply(topic, value, dict(headers)))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    async def _apply(self, topic: str, value: bytes, headers: dict[str, bytes]) -> None:
        if self.lag_s:
            await asyncio.sleep(self.lag_s)
        body = json.loads(value)
        received = datetime.fromisoformat(headers["sinergi-received-at"].decode())
        if topic == ENROLLMENTS_RAW.name:
            enrollment = normalize_enrollment(
                body,
                office_code=headers["sinergi-office"].decode(),
                request_id=headers["sinergi-request-id"].decode(),
                received_at=received,
                known_offices=self._ctx.offices,
                participant_key=self._ctx.participant_key,
                encrypt_pii=self._ctx.encrypt_pii,
                tariff=self._ctx.tariff_on(received),
            )
            pid = enrollment.participant_id
            decision = on_enrollment(
                self._states.get(pid), enrollment, self._ctx.tariff_table, self._settings.bill_validity_days
            )
        else:
            bank = self._ctx.banks[headers["sinergi-bank"].decode()]
            payment = normalize_payment(
                body,
                bank_id=bank.bank_id,
                partner_service_id=bank.partner_service_id,
                allowed_currencies=bank.currencies,
                external_id=headers["sinergi-external-id"].decode(),
                received_at=received,
            )
            pid = payment.participant_id
            self.payments.append(payment)
            decision = on_payment(self._states.get(pid), payment, fx_reference=self.fx_reference)
        self.outcomes[decision.outcome] += 1
        self.exceptions.update(e.reason for e in decision.exceptions)
        if decision.new_state is not None:
            self._states[pid] = decision.new_state
        for record in decision.records:
            self.book.apply(record)


class Switchable(httpx.AsyncBaseTransport):
    """Refuses the first `failures` connections, answers FastAPI's bare 404 for `missing` paths, and lets
    a test swap the app behind it (an API restart), else delegates."""

    def __init__(self, inner: httpx.AsyncBaseTransport, failures: int = 0, missing: frozenset[str] = frozenset()):
        self.inner = inner
        self.failures = failures
        self.missing = missing

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.failures > 0:
            self.failures -= 1
            raise httpx.ConnectError("connection refused", request=request)
        if request.url.path in self.missing:
            return httpx.Response(404, json={"detail": "Not Found"})
        return await self.inner.handle_async_request(request)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    # An own data directory: key files of a running `make demo` must not leak into the test.
    return Settings(data_dir=tmp_path)


@pytest.fixture
def book() -> MemberBook:
    book = MemberBook()
    book.mark_ready()
    return book


@pytest.fixture
def producer(settings: Settings, book: MemberBook) -> ReconcilingProducer:
    return ReconcilingProducer(settings, book)


Clients = Callable[..., tuple[httpx.AsyncClient, httpx.AsyncClient]]


@pytest.fixture
async def clients(settings: Settings, producer: ReconcilingProducer, book: MemberBook) -> AsyncIterator[Clients]:
    opened: list[httpx.AsyncClient] = []

    def make(
        kbri_failures: int = 0,
        bank_failures: int = 0,
        missing: frozenset[str] = frozenset(),
        bank_settings: Settings | None = None,
    ) -> tuple[httpx.AsyncClient, httpx.AsyncClient]:
        kbri_app = create_kbri_app(settings, producer)
        bank_app = create_bank_app(bank_settings or settings, producer, book=book)
        kbri = httpx.AsyncClient(
            transport=Switchable(httpx.ASGITransport(app=kbri_app), kbri_failures), base_url="http://kbri.test"
        )
        bank = httpx.AsyncClient(
            transport=Switchable(httpx.ASGITransport(app=bank_app), bank_failures, missing),
            base_url="http://bank.test",
        )
        opened.extend((kbri, bank))
        return kbri, bank

    yield make
    for client in opened:
        await client.aclose()


def _personal_values(producer: InMemoryProducer) -> set[str]:
    values: set[str] = set()
    for record in producer.records:
        if record.topic == ENROLLMENTS_RAW.name:
            body = json.loads(record.value)
            values |= {body["nik"], body["passport_number"], body["full_name"]}
        elif record.topic == PAYMENTS_RAW.name:
            body = json.loads(record.value)
            values |= {body["virtualAccountNo"].strip(), body["customerNo"]}
    return values


def _round_line(lines: list[str], number: int = 1) -> str:
    (line,) = [line for line in lines if line.startswith(f"round {number}:")]
    return line


def _with_b2b_keys(settings: Settings, tmp_path: Path) -> tuple[Settings, Settings]:
    """(simulator settings with a private key per bank, API settings with the matching public keys)."""
    pairs = {bank: generate_key_pair() for bank in BANKS}
    write_private_keys(tmp_path / "keys", pairs)
    api = settings.model_copy(update={"bank_public_keys": {b: [p.public_pem] for b, p in pairs.items()}})
    sim = settings.model_copy(update={"bank_sim_key_dir": tmp_path / "keys"})
    return sim, api


async def test_a_round_inquires_pays_attacks_and_uploads_one_statement_per_bank(
    settings: Settings, producer: ReconcilingProducer, clients: Clients, tmp_path: Path
) -> None:
    sim_settings, api_settings = _with_b2b_keys(settings, tmp_path)
    kbri, bank = clients(bank_settings=api_settings)
    lines: list[str] = []
    mix = Mix(
        pay_delay_max_s=0.0,
        bad_enrollment_share=0.2,
        bad_payment_share=0.2,
        partial_share=0.3,
        duplicate_share=0.3,
        paid_inquiry_share=0.5,
        late_enrollment_delay_s=0.0,
    )
    sim = Simulator(sim_settings, kbri, bank, rate=0, seed=7, mix=mix, retry=FAST, out=lines.append)
    status = await sim.run(forever=False, members=60, stop=asyncio.Event())

    assert status == 0, lines
    assert lines[0].startswith("simulator: seed 7, 60 members per round")
    assert "MANDIRI (B2B token)" in lines[0]
    line = _round_line(lines)
    assert "unexpected 0" in line and "gave up 0" in line, line
    for code in ("NIK_", "AMOUNT_FORMAT", "VA_MISMATCH", "partial", "duplicate", "replay", "IDR"):
        assert code in line, line
    # the checks every bank gets at the end of the round, and the bills read as paid afterwards
    for reason, per_bank in (
        ("VA_NOT_FOUND", 1),
        ("SIGNATURE_INVALID", 1),
        ("TIMESTAMP_OUT_OF_WINDOW", 1),
        ("EXTERNAL_ID_CONFLICT", 1),
    ):
        assert f"{reason} {per_bank * len(BANKS)}" in line, line
    assert "BILL_PAID" in line
    assert f"B2B tokens {len(BANKS)}" in line  # one per bank: cached for the whole round
    assert f"statements {len(BANKS)} [SNAP_STATEMENT {len(BANKS)};" in line
    assert "skipped" not in line

    enrollments = [r for r in producer.records if r.topic == ENROLLMENTS_RAW.name]
    payments = [r for r in producer.records if r.topic == PAYMENTS_RAW.name]
    assert 40 < len(enrollments) <= 60
    assert len(payments) > len(enrollments)  # instalments and resends
    currencies = {json.loads(p.value)["paidAmount"]["currency"] for p in payments}
    assert {"IDR", "MYR"} <= currencies and currencies & {"HKD", "TWD"}
    foreign = [json.loads(p.value) for p in payments if json.loads(p.value)["paidAmount"]["currency"] != "IDR"]
    assert all("fxRate" in p["additionalInfo"] for p in foreign)

    # one statement per bank covering the bank's distinct accepted payments of the round, with its breaks:
    # one left off, one correction debit and one credit never notified
    distinct = {(dict(r.headers)["sinergi-bank"], json.loads(r.value)["paymentRequestId"]) for r in payments}
    entries = [json.loads(r.value) for r in producer.records if r.topic == STATEMENTS_RAW]
    expected = Counter(bank.decode() for bank, _ in distinct)
    expected.update(BANKS)
    assert Counter(e["bank_id"] for e in entries) == expected
    assert f"{len(entries)} entries]" in line
    assert {e["source"] for e in entries} == {"SNAP_STATEMENT"}

    # every member the simulator paid in full reads as paid in the bank API's read model
    paid_members = int(line.split("| paid ")[1].split(" ")[0])
    assert sum(1 for e in enrollments if _fully_paid(producer.book, e)) >= paid_members

    output = "\n".join(lines)
    leaked = [v for v in _personal_values(producer) if v in output]
    assert not leaked


def _fully_paid(book: MemberBook, record: Any) -> bool:
    view = book.get(record.key.decode())
    return view is not None and view.outstanding_idr == 0


async def test_statement_formats_rotate_between_rounds(
    settings: Settings, producer: ReconcilingProducer, clients: Clients
) -> None:
    kbri, bank = clients()
    stop = asyncio.Event()
    lines: list[str] = []

    def out(line: str) -> None:
        lines.append(line)
        if line.startswith("round 4"):
            stop.set()

    sim = Simulator(settings, kbri, bank, rate=0, seed=11, mix=NO_DELAY, retry=FAST, out=out)
    assert await sim.run(forever=True, members=12, stop=stop) == 0
    for number, fmt in enumerate(("SNAP_STATEMENT", "MT940", "CSV", "CAMT054"), start=1):
        line = _round_line(lines, number)
        assert "unexpected 0" in line, line
        assert "[" + fmt + " " in line.split("| statements ")[1], line
    sources = Counter(json.loads(r.value)["source"] for r in producer.records if r.topic == STATEMENTS_RAW)
    assert set(sources) == {"SNAP_STATEMENT", "MT940", "CSV", "CAMT054"}
    assert "B2B tokens 0" in lines[-1]  # no private key: the static development tokens


async def test_endpoints_that_are_not_deployed_are_skipped_and_counted(
    settings: Settings, producer: ReconcilingProducer, clients: Clients
) -> None:
    """FastAPI's bare 404 (no SNAP responseCode) means "not deployed": inquiries and statement uploads are
    skipped with one announcement each and a count per round; payments still flow; the run is clean."""
    kbri, bank = clients(missing=frozenset({INQUIRY_PATH, STATEMENT_PATH}))
    stop = asyncio.Event()
    lines: list[str] = []

    def out(line: str) -> None:
        lines.append(line)
        if line.startswith("round 2"):
            stop.set()

    sim = Simulator(settings, kbri, bank, rate=0, seed=5, mix=NO_DELAY, retry=FAST, out=out)
    assert await sim.run(forever=True, members=10, stop=stop) == 0
    notices = [line for line in lines if "without a SNAP responseCode" in line]
    assert len(notices) == 2 and any(INQUIRY_PATH in n for n in notices) and any(STATEMENT_PATH in n for n in notices)
    for number in (1, 2):
        line = _round_line(lines, number)
        assert "unexpected 0" in line, line
        skipped = line.split("skipped, endpoint missing ")[1].split(" |")[0]
        assert f"statement {len(BANKS)}" in skipped and "inquiry " in skipped, line
        assert "inquiries 0 " in line and "statements 0 " in line
        assert "VA_NOT_FOUND" not in line
    assert any(r.topic == PAYMENTS_RAW.name for r in producer.records)
    assert not any(r.topic == STATEMENTS_RAW for r in producer.records)


async def test_a_snap_404_is_an_answer_not_a_missing_endpoint(settings: Settings, clients: Clients) -> None:
    """A VA the read model never learns: inquiry keeps answering 4042412 (a SNAP 404), the simulator asks
    again until the read-model deadline, then reports it and takes no payment for that bill."""
    quiet = InMemoryProducer()  # nothing reaches the read model
    book = MemberBook()
    book.mark_ready()
    kbri = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_kbri_app(settings, quiet)), base_url="http://kbri.test"
    )
    bank = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_bank_app(settings, quiet, book=book)), base_url="http://bank.test"
    )
    retry = RetryPolicy(initial_s=0.001, max_s=0.005, request_deadline_s=5.0, read_model_deadline_s=0.05)
    lines: list[str] = []
    async with kbri, bank:
        sim = Simulator(settings, kbri, bank, rate=0, seed=3, mix=NO_CASES, retry=retry, out=lines.append)
        assert await sim.run(forever=False, members=3, stop=asyncio.Event()) == 1
    line = _round_line(lines)
    assert "inquiry:404:VA_NOT_FOUND 3" in line and "skipped" not in line, line
    assert "read model waits 0" not in line
    assert not any(r.topic == PAYMENTS_RAW.name for r in quiet.records)


async def test_waits_for_a_read_model_that_lags_behind(settings: Settings, book: MemberBook, clients: Clients) -> None:
    producer = ReconcilingProducer(settings, book, lag_s=0.03)
    kbri = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_kbri_app(settings, producer)), base_url="http://kbri.test"
    )
    bank = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_bank_app(settings, producer, book=book)), base_url="http://bank.test"
    )
    lines: list[str] = []
    mix = Mix(pay_delay_max_s=0.0, paid_inquiry_share=1.0, partial_share=0.5)
    async with kbri, bank:
        sim = Simulator(settings, kbri, bank, rate=0, seed=8, mix=mix, retry=FAST, out=lines.append)
        assert await sim.run(forever=False, members=6, stop=asyncio.Event()) == 0, lines
    line = _round_line(lines)
    assert "read model waits 0" not in line and "unexpected 0" in line, line
    assert "BILL_PAID" in line


async def test_b2b_token_is_renewed_after_the_api_forgot_it(
    settings: Settings, producer: ReconcilingProducer, book: MemberBook, clients: Clients, tmp_path: Path
) -> None:
    sim_settings, api_settings = _with_b2b_keys(settings, tmp_path)
    kbri, bank = clients(bank_settings=api_settings)
    lines: list[str] = []
    sim = Simulator(sim_settings, kbri, bank, rate=0, seed=9, mix=NO_DELAY, retry=FAST, out=lines.append)
    assert await sim.wait_ready(asyncio.Event())
    first, _ = await sim.run_round(1, 6, asyncio.Event())
    assert first.ok and first.tokens == len(BANKS), first.line("round 1")

    # A restarted bank API: same configuration, an empty token table.
    bank._transport.inner = httpx.ASGITransport(app=create_bank_app(api_settings, producer, book=book))  # type: ignore[attr-defined]
    second, _ = await sim.run_round(2, 6, asyncio.Event())
    assert second.ok, second.line("round 2")
    assert second.tokens == len(BANKS)  # renewed once per bank after TOKEN_INVALID, then cached again


async def test_same_seed_same_traffic(settings: Settings) -> None:
    def bodies(producer: InMemoryProducer) -> list[bytes]:
        return sorted(r.value for r in producer.records if r.topic == ENROLLMENTS_RAW.name)

    runs = []
    for _ in range(2):
        book = MemberBook()
        book.mark_ready()
        producer = ReconcilingProducer(settings, book)
        kbri = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=create_kbri_app(settings, producer)), base_url="http://kbri.test"
        )
        bank = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=create_bank_app(settings, producer, book=book)),
            base_url="http://bank.test",
        )
        async with kbri, bank:
            sim = Simulator(settings, kbri, bank, rate=0, seed=99, mix=NO_DELAY, retry=FAST, out=lambda _: None)
            assert await sim.run(forever=False, members=10, stop=asyncio.Event()) == 0
        runs.append(bodies(producer))
    assert runs[0] == runs[1]


async def test_waits_for_apis_that_are_still_starting(settings: Settings, clients: Clients) -> None:
    kbri, bank = clients(kbri_failures=5, bank_failures=5)
    lines: list[str] = []
    sim = Simulator(settings, kbri, bank, rate=0, seed=1, mix=NO_DELAY, retry=FAST, out=lines.append)
    assert await sim.run(forever=False, members=5, stop=asyncio.Event()) == 0, lines
    assert any("waiting for the APIs" in line for line in lines)


async def test_retries_connection_errors_and_503_with_the_same_request(
    settings: Settings, producer: ReconcilingProducer, clients: Clients
) -> None:
    kbri, bank = clients()
    lines: list[str] = []
    sim = Simulator(settings, kbri, bank, rate=0, seed=2, mix=NO_DELAY, retry=FAST, out=lines.append)
    assert await sim.wait_ready(asyncio.Event())
    kbri._transport.failures = 3  # type: ignore[attr-defined]
    producer.failing = "TIMEOUT"  # Kafka not acknowledging: the APIs answer 503

    async def recover() -> None:
        await asyncio.sleep(0.05)
        producer.failing = None

    healer = asyncio.create_task(recover())
    stats, interrupted = await sim.run_round(1, 5, asyncio.Event())
    await healer
    assert not interrupted
    assert stats.retries > 3
    assert stats.ok, stats.line("round")
    assert stats.enrolled == sum(1 for r in producer.records if r.topic == ENROLLMENTS_RAW.name)


async def test_gives_up_when_the_apis_never_answer(settings: Settings, clients: Clients) -> None:
    kbri, bank = clients(kbri_failures=10**9)
    lines: list[str] = []
    retry = RetryPolicy(initial_s=0.001, max_s=0.01, ready_deadline_s=0.1)
    sim = Simulator(settings, kbri, bank, rate=0, seed=1, retry=retry, out=lines.append)
    assert await sim.run(forever=False, members=5, stop=asyncio.Event()) == 1
    assert "did not answer" in lines[-1]


async def test_forever_runs_rounds_until_stopped_and_exits_0(settings: Settings, clients: Clients) -> None:
    # statement reconciliation switched off at the bank API: the simulator says so once and stops asking
    kbri, bank = clients(bank_settings=settings.model_copy(update={"statement_reconciliation_enabled": False}))
    stop = asyncio.Event()
    lines: list[str] = []

    def out(line: str) -> None:
        lines.append(line)
        if line.startswith("round 2"):
            stop.set()

    sim = Simulator(settings, kbri, bank, rate=0, seed=3, mix=NO_DELAY, retry=FAST, out=out)
    assert await sim.run(forever=True, members=4, stop=stop) == 0
    rounds = [line.split(":")[0] for line in lines[1:] if not line.startswith("simulator:")]
    assert rounds == ["round 1", "round 2", "total of 2 round(s)"]
    assert sum(STATEMENT_RECONCILIATION_DISABLED in line for line in lines) == 1  # said once, then not asked


async def test_stop_interrupts_a_round_cleanly(settings: Settings, clients: Clients) -> None:
    kbri, bank = clients()
    stop = asyncio.Event()
    lines: list[str] = []
    sim = Simulator(settings, kbri, bank, rate=50, seed=4, mix=Mix(pay_delay_max_s=5.0), retry=FAST, out=lines.append)
    asyncio.get_running_loop().call_later(0.3, stop.set)
    assert await sim.run(forever=True, members=500, stop=stop) == 0
    assert any(line.startswith("round 1 (interrupted)") for line in lines)


async def test_unexpected_answers_are_counted_and_fail_a_single_round(settings: Settings) -> None:
    def broken(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/healthz":
            return httpx.Response(200, json={"status": "ok"})
        return httpx.Response(500, json={"reason": "INTERNAL_ERROR", "message": "x"})

    transport = httpx.MockTransport(broken)
    async with (
        httpx.AsyncClient(transport=transport, base_url="http://k") as kbri,
        httpx.AsyncClient(transport=transport, base_url="http://b") as bank,
    ):
        lines: list[str] = []
        sim = Simulator(settings, kbri, bank, rate=0, seed=5, mix=NO_DELAY, retry=FAST, out=lines.append)
        assert await sim.run(forever=False, members=3, stop=asyncio.Event()) == 1
    assert "enrollment:500:INTERNAL_ERROR" in _round_line(lines)
    reports = [line for line in lines if line.startswith("daily report ")]
    assert len(reports) == len(BANKS) and all("refused (500 INTERNAL_ERROR)" in line for line in reports)


async def _poll(check: Callable[[], Any], deadline_s: float = 5.0) -> Any:
    """Poll `check` (async) until it returns something truthy or the deadline passes."""
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline_s
    while True:
        result = await check()
        if result or loop.time() > end:
            return result
        await asyncio.sleep(0.01)


async def test_bank_sim_commands_send_requests_the_bank_api_accepts(
    settings: Settings, producer: ReconcilingProducer, book: MemberBook, tmp_path: Path
) -> None:
    """`sinergi bank-sim token | inquire | pay | statement` against the in-process bank API."""
    sim_settings, api_settings = _with_b2b_keys(settings, tmp_path)
    bank = httpx.ASGITransport(app=create_bank_app(api_settings, producer, book=book))
    creds = cli_credentials(sim_settings, "MANDIRI", secret=None, key_file=None, token=None)
    assert creds.private_key_pem is not None

    text, ok = await bank_sim_call("http://bank.test", creds, "token", transport=bank)
    assert ok and '"responseCode": "2007300"' in text and "> X-CLIENT-KEY: MANDIRI" in text

    office = OfficeRef("KBRI_KUALA_LUMPUR", "MY")
    body = enrollment_body(random.Random(4), office, wib_date(datetime.now(UTC)), Mix(jht_share=0.0))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_kbri_app(settings, producer)), base_url="http://kbri.test"
    ) as kbri:
        enrolled = await kbri.post("/v1/enrollments", json=body, headers=kbri_headers("dev-token-kbri-kl", "KL-1"))
    assert enrolled.status_code == 202, enrolled.text
    va = enrolled.json()["bill"]["virtual_accounts"]["MANDIRI"].strip()  # as typed in a shell
    amount = f"{enrolled.json()['bill']['amount_idr']}.00"

    async def inquire(expected: str) -> str | None:
        text, _ = await bank_sim_call("http://bank.test", creds, "inquire", transport=bank, va=va)
        return text if f'"responseCode": "{expected}"' in text else None

    shown = await _poll(lambda: inquire("2002400"))
    assert shown is not None and f'"value": "{amount}"' in shown and "> X-SIGNATURE: " in shown
    text, ok = await bank_sim_call("http://bank.test", creds, "pay", transport=bank, va=va, amount=amount)
    assert ok and '"responseCode": "2002500"' in text, text
    assert await _poll(lambda: inquire("4042414")) is not None

    mt940 = Path(__file__).parents[1] / "unit" / "data" / "statements" / "bni_20250715.sta"
    text, ok = await bank_sim_call(
        "http://bank.test", creds, "statement", transport=bank, content=mt940.read_bytes(), filename=mt940.name
    )
    assert ok and '"responseCode": "2001400"' in text and "> CHANNEL-ID" not in text, text
    assert f"> POST {STATEMENT_PATH}?filename={mt940.name}" in text


# --- reconciliation cases -------------------------------------------------------------------------------
CASE_CODES = (
    "OVERPAYMENT",
    "PAYMENT_BEFORE_ENROLLMENT",
    "UNKNOWN_VA",
    "FX_RATE_OUT_OF_TOLERANCE",
    "REVERSAL",
    "AMOUNT_MISMATCH",
    "ON_STATEMENT_NOT_NOTIFIED",
    "NOTIFIED_NOT_ON_STATEMENT",
)


def _cases(line: str) -> dict[str, int]:
    inside = line.split("| cases ")[1].split("[")[1].split("]")[0]
    return {code: int(n) for code, n in (part.rsplit(" ", 1) for part in inside.split(", "))}


def _statement_decisions(producer: ReconcilingProducer) -> list[Decision]:
    """statement_match over what the round put on the raw topics, each bank's day closed at the end."""
    ledgers: dict[str, BankLedger] = {}
    decisions: list[Decision] = []

    def ledger(bank: str) -> BankLedger:
        return ledgers.setdefault(bank, BankLedger.empty(bank))

    for payment in producer.payments:
        step = apply_payment(ledger(payment.bank_id), payment)
        ledgers[payment.bank_id] = step.ledger
        decisions += list(step.decisions)
    for record in producer.records:
        if record.topic == STATEMENTS_RAW:
            entry = StatementEntry.model_validate_json(record.value)
            step = apply_entry(ledger(entry.bank_id), entry)
            ledgers[entry.bank_id] = step.ledger
            decisions += list(step.decisions)
    today = wib_date(datetime.now(UTC))
    for bank, value in list(ledgers.items()):
        step = close_day(value, bank, today, datetime.now(UTC) + timedelta(days=2))
        decisions += list(step.decisions)
    return decisions


async def test_a_round_produces_every_reconciliation_case(
    settings: Settings, book: MemberBook, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each case once or more, counted on the round line, and what the hub makes of it: the reconciler's
    outcomes (domain functions on what the APIs produced), statement_match's breaks over the uploaded
    statements, and the daily report the simulator reads back through the bank API."""
    producer = ReconcilingProducer(settings, book, fx_reference=simulated_rate)
    api_settings = settings.model_copy(update={"statement_reconciliation_enabled": True})

    async def decided(_settings: Settings, bank: str) -> Sequence[Decision]:
        return [d for d in _statement_decisions(producer) if d.bank_id == bank]

    monkeypatch.setattr(reports, "read_decisions", decided)
    kbri = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_kbri_app(settings, producer)), base_url="http://kbri.test"
    )
    bank = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_bank_app(api_settings, producer, book=book)),
        base_url="http://bank.test",
    )
    lines: list[str] = []
    async with kbri, bank:
        sim = Simulator(settings, kbri, bank, rate=0, seed=21, mix=NO_DELAY, retry=FAST, out=lines.append)
        assert await sim.run(forever=False, members=30, stop=asyncio.Event()) == 0, lines

    line = _round_line(lines)
    assert "unexpected 0" in line, line
    cases = _cases(line)
    assert all(cases.get(code, 0) >= 1 for code in CASE_CODES), line
    # the reconciler: the over-payment credited with an excess, the early payment and the unknown VA held,
    # the off-rate payment flagged (and credited: the default CREDIT_AND_FLAG policy)
    assert producer.outcomes["OVERPAYMENT"] == cases["OVERPAYMENT"]
    assert producer.outcomes["PAYMENT_BEFORE_ENROLLMENT"] == cases["PAYMENT_BEFORE_ENROLLMENT"] + cases["UNKNOWN_VA"]
    assert producer.exceptions["FX_RATE_OUT_OF_TOLERANCE"] == cases["FX_RATE_OUT_OF_TOLERANCE"]
    assert producer.exceptions["FX_REFERENCE_RATE_MISSING"] == 0
    # statement reconciliation: every break the line counts, and nothing else broke
    kinds = Counter(d.kind.value for d in _statement_decisions(producer))
    for code in ("REVERSAL", "AMOUNT_MISMATCH", "ON_STATEMENT_NOT_NOTIFIED", "NOTIFIED_NOT_ON_STATEMENT"):
        assert kinds[code] == cases[code], (code, kinds)
    assert kinds["MATCHED_BY_VA_AMOUNT_DATE"] == 0  # every format names the payment: matched by reference
    # the daily report, read back per bank: the same counts
    report_lines = [line for line in lines if line.startswith("daily report ")]
    assert len(report_lines) == len(BANKS)
    reversed_total = sum(int(r.split("| reversed ")[1].split(" ")[0]) for r in report_lines)
    mismatched_total = sum(int(r.split("| mismatched ")[1].split(" ")[0]) for r in report_lines)
    assert reversed_total == cases["REVERSAL"] and mismatched_total == cases["AMOUNT_MISMATCH"]
    assert all("matched " in r and "(IDR " in r for r in report_lines)
    output = "\n".join(lines)
    assert not [v for v in _personal_values(producer) if v in output]
