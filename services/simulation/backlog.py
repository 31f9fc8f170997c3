"""Raw-topic traffic exactly as the partner APIs store it, built offline: the benchmark's backlog, the crash
tests' and the soak's streams.

Each record has the bytes and intake headers connectors/kbri/app.py or connectors/bank/payment.py would have
produced for an accepted request, so preloading them is the same as the APIs having taken that traffic
(the APIs' own cost is measured separately).

* :func:`build_backlog` -- clean: one enrollment and one exact payment per member (the throughput figure).
* :func:`build_mixed_stream` -- every payment case the reconciler knows, in arrival order: exact, two
  instalments, a bank re-sending a notification (same paymentRequestId, new X-EXTERNAL-ID), over-payment,
  payment before its enrollment, a VA the hub never issued, and foreign currency (IDR, MYR, TWD, ...).
  With ``statements=True`` it also carries the banks' statement files on ``bank.statements.raw`` (one record
  per entry, as connectors/statement_ingest.py stores an upload): :func:`statement_records`.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from services.config import Settings
from services.domain.dates import wib_date
from services.domain.identity import compose_va, event_uuid, participant_id
from services.domain.models import ParticipantType, Program
from services.domain.payment import to_idr
from services.domain.tariff import bill_amount_idr, load_tariffs
from services.fx_rates import pin_to_reference
from services.reference import load_tariff_document
from services.simulation.generators import (
    COUNTRY_UTC_OFFSET_H,
    IDR,
    TYPICAL_BILL_IDR,
    BankRef,
    Case,
    Mix,
    World,
    office_request_id,
    payment_body,
    payment_request_id,
    payment_steps,
    plan_cases,
    plan_member,
    snap_headers,
    unissued_customer_no,
    unknown_va_payment,
)
from services.simulation.statements import (
    ROTATION,
    Break,
    Statement,
    StatementLine,
    build_statement,
    collection_account_no,
    in_booking_order,
    with_breaks,
)
from services.simulator import world_from_settings

Header = tuple[str, bytes]
#: Every member enrolls correctly and pays the bill exactly, once.
CLEAN = Mix(
    bad_enrollment_share=0.0, bad_payment_share=0.0, partial_share=0.0, duplicate_share=0.0, pay_delay_max_s=0.0
)


# --- what the partner APIs write to the raw topics ----------------------------------------------------


@dataclass(frozen=True)
class RawRecord:
    topic: str
    key: bytes
    value: bytes
    headers: list[Header]


def enrollment_intake_record(
    office: str, request_id: str, customer_no: str, value: bytes, received_at: datetime
) -> RawRecord:
    """The record connectors/kbri/app.py produces for an accepted enrollment (key = customer_no)."""
    from connectors.http_common import iso_utc
    from connectors.kbri import app as kbri
    from services.catalogue import ENROLLMENTS_RAW

    headers = [
        (kbri.H_OFFICE, office.encode()),
        (kbri.H_REQUEST_ID, request_id.encode()),
        (kbri.H_EVENT_ID, event_uuid("enrollment", office, request_id).encode()),
        (kbri.H_RECEIVED_AT, iso_utc(received_at).encode()),
        (kbri.H_CHANNEL, kbri.CHANNEL.encode()),
    ]
    return RawRecord(ENROLLMENTS_RAW.name, customer_no.encode(), value, headers)


def payment_intake_record(
    bank_id: str, http_headers: dict[str, str], body: dict[str, Any], value: bytes, received_at: datetime
) -> RawRecord:
    """The record connectors/bank/payment.py produces for an accepted notification (key = customerNo)."""
    from connectors.bank import payment as bank
    from connectors.http_common import iso_utc
    from services.catalogue import PAYMENTS_RAW

    headers = [
        (bank.H_BANK, bank_id.encode()),
        (bank.H_EXTERNAL_ID, http_headers["X-EXTERNAL-ID"].encode()),
        (bank.H_EVENT_ID, event_uuid("payment", bank_id, body["paymentRequestId"]).encode()),
        (bank.H_RECEIVED_AT, iso_utc(received_at).encode()),
        (bank.H_CHANNEL_ID, http_headers["CHANNEL-ID"].encode()),
        (bank.H_X_TIMESTAMP, http_headers["X-TIMESTAMP"].encode()),
    ]
    return RawRecord(PAYMENTS_RAW.name, str(body["customerNo"]).encode(), value, headers)


def statement_entry_records(
    content: bytes, *, bank_id: str, filename: str, external_id: str, imported_at: datetime
) -> list[RawRecord]:
    """The records connectors/statement_ingest.py produces for an uploaded statement file through the bank
    API: one per parsed entry, the entry's JSON, key = bank id, headers naming the file and the line.
    Raises ValueError when a line would be refused: a generated file must go in whole."""
    from connectors import statement_ingest as ingest
    from connectors.http_common import iso_utc
    from services.catalogue import STATEMENTS_RAW

    report = ingest.parse_upload(content, bank_id=bank_id, imported_at=imported_at, filename=filename)
    if report.document_error is not None or report.rejected:
        raise ValueError(f"generated statement {filename} does not parse cleanly: {report.errors[:1]}")
    out = []
    for entry in report.entries:
        headers = [
            (ingest.H_BANK, entry.bank_id.encode()),
            (ingest.H_FILE_ID, report.file_id.encode()),
            (ingest.H_LINE_NO, str(entry.line_no).encode()),
            (ingest.H_ENTRY_ID, entry.entry_id.encode()),
            (ingest.H_FORMAT, entry.source.value.encode()),
            (ingest.H_RECEIVED_AT, iso_utc(entry.imported_at).encode()),
            (ingest.H_ORIGIN, ingest.ORIGIN_API.encode()),
            (ingest.H_EXTERNAL_ID, external_id.encode()),
        ]
        out.append(RawRecord(STATEMENTS_RAW.name, entry.bank_id.encode(), entry.model_dump_json().encode(), headers))
    return out


@dataclass
class Backlog:
    enrollments: list[RawRecord]
    payments: list[RawRecord]
    customer_nos: set[str]

    @property
    def events(self) -> int:
        return len(self.enrollments) + len(self.payments)


def build_backlog(
    settings: Settings, members: int, seed: int, now: datetime, world: World | None = None, *, pin_fx: bool = False
) -> Backlog:
    """``members`` valid enrollments and one payment each covering the bill exactly (mixed offices,
    banks, currencies, participant types and contract lengths), as the APIs would have stored them.
    ``pin_fx``: foreign-currency payments quoted at the simulated reference rates (see build_mixed_stream)."""
    world = world or world_from_settings(settings)
    today = wib_date(now)
    tariff = load_tariffs(load_tariff_document(settings.tariff_file)).tariff_on(today)
    secret = settings.participant_key_secret.get_secret_value().encode()
    rng = random.Random(seed)
    out = Backlog([], [], set())
    while len(out.customer_nos) < members:
        script = plan_member(rng, world, today, CLEAN)
        body = script.enrollment
        customer_no = participant_id(body["nik"], secret, settings.customer_no_digits)
        if customer_no in out.customer_nos:
            continue
        out.customer_nos.add(customer_no)
        office = script.office.code
        request_id = office_request_id(rng, office, today)
        out.enrollments.append(
            enrollment_intake_record(office, request_id, customer_no, json.dumps(body).encode(), now)
        )
        bill = bill_amount_idr(
            tariff,
            ParticipantType(body["participant_type"]),
            body["contract_months"],
            [Program(p) for p in body["programs"]],
        ).total_idr
        pay = payment_body(
            rng,
            bank=script.bank,
            customer_no=customer_no,
            amount_idr=bill,
            currency=script.currency,
            paid_at=now,
            utc_offset_h=COUNTRY_UTC_OFFSET_H.get(script.office.country, 7),
            account_name=body["full_name"],
        )
        if pin_fx:
            pin_to_reference(pay)
        http_headers = snap_headers(rng, script.bank.bank_id, "", now)
        out.payments.append(
            payment_intake_record(script.bank.bank_id, http_headers, pay, json.dumps(pay).encode(), now)
        )
    return out


# --- a mixed stream ------------------------------------------------------------------------------------

#: No malformed requests (the APIs refuse those: they never reach a raw topic) and no FX-off quotes (they
#: need a reference rate published first); every other case at a visible share.
MIXED = Mix(
    bad_enrollment_share=0.0,
    bad_payment_share=0.0,
    partial_share=0.15,
    duplicate_share=0.08,
    overpayment_share=0.04,
    late_enrollment_share=0.04,
    fx_off_share=0.0,
    pay_delay_max_s=0.0,
)
#: How far (in records) a member's payments trail its enrollment in the stream, and how far a
#: PAYMENT_BEFORE_ENROLLMENT member's enrollment trails its payments.
PAY_LAG_RECORDS = 40
LATE_ENROLLMENT_LAG_RECORDS = 300
#: Lines per statement file: a bank's day arrives as several files (intraday MT940 / camt.054 notifications),
#: so that statement traffic runs through the whole stream, not only at its end.
STATEMENT_LINES = 250
#: How far (in members) a statement file trails the last payment it lists.
STATEMENT_LAG_MEMBERS = 60
#: The breaks every statement file carries (statement_match decides both of the first two at once, by
#: reference; the last two wait for their day's close, hours after the test).
STATEMENT_BREAKS = (Break.AMOUNT_MISMATCH, Break.ON_STATEMENT_NOT_NOTIFIED, Break.NOTIFIED_NOT_ON_STATEMENT)


@dataclass
class MixedStream:
    records: list[RawRecord]  # in the order to produce them
    customer_nos: set[str]  # every participant the stream touches, unknown VAs included
    enrolled: set[str]  # those with an enrollment
    money_in_idr: int  # distinct bank transactions (a re-sent notification counted once)
    payments: int  # distinct bank transactions
    cases: dict[str, int] = field(default_factory=dict)  # how many of each case, for the test's report
    statements: StatementTraffic | None = None  # with statements=True

    @property
    def events(self) -> int:
        return len(self.records)


@dataclass
class StatementTraffic:
    """What the statement files of a mixed stream hold, for a test to check the verifier against."""

    files: int = 0
    entry_ids: set[str] = field(default_factory=set)  # every entry id the files put on bank.statements.raw
    formats: dict[str, int] = field(default_factory=dict)
    breaks: dict[str, int] = field(default_factory=dict)  # Break value -> how many
    listed_payments: int = 0  # distinct notified payments a credit line names (the mismatched included)

    @property
    def entries(self) -> int:
        return len(self.entry_ids)

    @property
    def decided_at_once(self) -> int:
        """Entries statement_match decides on arrival: every line naming a notified payment."""
        return self.listed_payments

    @property
    def waiting_for_close(self) -> int:
        """Entries that wait for their day's close (credits no notification explains)."""
        return self.breaks.get(Break.ON_STATEMENT_NOT_NOTIFIED.value, 0)


@dataclass(frozen=True)
class _Notified:
    """A distinct bank transaction the stream notifies (a resend is the same transaction), at its position."""

    bank: BankRef
    body: dict[str, Any]
    position: float
    ordinary: bool  # its member's only payment: a statement break on it disturbs nothing else


def build_mixed_stream(
    settings: Settings,
    members: int,
    seed: int,
    now: datetime,
    world: World | None = None,
    mix: Mix = MIXED,
    *,
    statements: bool = False,
    pin_fx: bool = False,
) -> MixedStream:
    """``members`` enrolled workers paying in every way :data:`MIXED` allows, plus one payment to an
    unissued VA per 100 members, about 2.2 records per member. Deterministic for a seed (bar ``now``).

    ``statements``: also the banks' statement files (:func:`statement_records`), about one more record per
    member. The enrollments and payments are the same either way (the files draw from their own generator).

    ``pin_fx``: every foreign-currency payment quoted at the simulated reference rate of its value date
    (services.fx_rates.pin_to_reference, as `make demo`'s simulator does), so that with those rates published the
    reconciler's FX check passes as it would in production; the rupiah amounts are the same either way."""
    world = world or world_from_settings(settings)
    today = wib_date(now)
    tariff = load_tariffs(load_tariff_document(settings.tariff_file)).tariff_on(today)
    secret = settings.participant_key_secret.get_secret_value().encode()
    rng = random.Random(seed)
    cases = plan_cases(rng, members, mix)
    timed: list[tuple[float, int, RawRecord]] = []  # (position, tie-break, record)
    out = MixedStream([], set(), set(), 0, 0)
    counts: dict[str, int] = {}
    notified: list[_Notified] = []

    def put(position: float, record: RawRecord) -> None:
        timed.append((position, len(timed), record))

    i = 0
    while len(out.enrolled) < members:
        case = cases.get(len(out.enrolled))
        script = plan_member(rng, world, today, mix, case)
        body = script.enrollment
        customer_no = participant_id(body["nik"], secret, settings.customer_no_digits)
        if customer_no in out.customer_nos:
            continue
        out.customer_nos.add(customer_no)
        out.enrolled.add(customer_no)
        office = script.office.code
        enrolled_at = i + (LATE_ENROLLMENT_LAG_RECORDS if case is Case.PAYMENT_BEFORE_ENROLLMENT else 0)
        put(
            enrolled_at,
            enrollment_intake_record(
                office, office_request_id(rng, office, today), customer_no, json.dumps(body).encode(), now
            ),
        )
        bill = bill_amount_idr(
            tariff,
            ParticipantType(body["participant_type"]),
            body["contract_months"],
            [Program(p) for p in body["programs"]],
        ).total_idr
        steps = payment_steps(rng, script, world, customer_no=customer_no, amount_idr=bill, paid_at=now)
        label = case.value if case is not None else "+".join(s.label for s in steps)
        counts[label] = counts.get(label, 0) + 1
        seen: set[str] = set()
        distinct = {s.body["paymentRequestId"] for s in steps}
        for step in steps:
            http_headers = snap_headers(rng, script.bank.bank_id, "", now)  # a resend has its own external id
            pay = step.body
            if pin_fx:
                pin_to_reference(pay)
            position = i + rng.uniform(1, PAY_LAG_RECORDS)
            put(
                position,
                payment_intake_record(script.bank.bank_id, http_headers, pay, json.dumps(pay).encode(), now),
            )
            if pay["paymentRequestId"] not in seen:
                seen.add(pay["paymentRequestId"])
                out.payments += 1
                out.money_in_idr += _amount_idr(pay)
                notified.append(_Notified(script.bank, pay, position, len(distinct) == 1 and case is None))
        i += 1
        if i % 100 == 0:
            notified.append(_unknown_va(rng, settings, world, now, i, out, put, pin_fx))
            counts["UNKNOWN_VA"] = counts.get("UNKNOWN_VA", 0) + 1
    if statements:
        out.statements = StatementTraffic()
        for position, record in statement_records(notified, seed, now, settings.customer_no_digits, out.statements):
            put(position, record)
    timed.sort(key=lambda t: (t[0], t[1]))
    out.records = [record for _, _, record in timed]
    out.cases = counts
    return out


def _unknown_va(
    rng: random.Random,
    settings: Settings,
    world: World,
    now: datetime,
    at: int,
    out: MixedStream,
    put: Any,
    pin_fx: bool = False,
) -> _Notified:
    bank = rng.choice(world.banks)
    customer_no = unissued_customer_no(rng, settings.customer_no_digits)
    pay = unknown_va_payment(rng, bank, customer_no=customer_no, paid_at=now)
    if pin_fx:
        pin_to_reference(pay)
    http_headers = snap_headers(rng, bank.bank_id, "", now)
    put(at, payment_intake_record(bank.bank_id, http_headers, pay, json.dumps(pay).encode(), now))
    out.customer_nos.add(customer_no)
    out.payments += 1
    out.money_in_idr += _amount_idr(pay)
    return _Notified(bank, pay, at, False)


# --- the banks' statements of a mixed stream -------------------------------------------------------------


def _business_date(body: dict[str, Any]) -> date:
    return wib_date(datetime.fromisoformat(body["trxDateTime"]))


def _line(n: _Notified) -> StatementLine:
    body = n.body
    return StatementLine(
        amount_idr=_amount_idr(body),
        booked_at=datetime.fromisoformat(body["trxDateTime"]),
        payment_request_id=body["paymentRequestId"],
        virtual_account_no=body["virtualAccountNo"],
        origin_value=body["paidAmount"]["value"],
        origin_currency=body["paidAmount"]["currency"],
        partner_reference_no=body.get("partnerReferenceNo"),
    )


def _unnotified(bank: BankRef, booked_at: datetime, digits: int) -> Any:
    """A credit booked to a VA the hub never issued, with references no notification carries."""

    def line(rng: random.Random) -> StatementLine:
        return StatementLine(
            amount_idr=TYPICAL_BILL_IDR,
            booked_at=booked_at,
            payment_request_id=payment_request_id(rng, bank.bank_id, booked_at),
            virtual_account_no=compose_va(bank.partner_service_id, unissued_customer_no(rng, digits)),
            origin_value=f"{TYPICAL_BILL_IDR}.00",
            origin_currency=IDR,
            partner_reference_no=f"{rng.getrandbits(48):012X}",
        )

    return line


def statement_records(
    notified: list[_Notified], seed: int, now: datetime, customer_no_digits: int, traffic: StatementTraffic
) -> list[tuple[float, RawRecord]]:
    """The statement files the banks upload for ``notified`` (distinct transactions, in stream order), as
    (stream position, raw record) pairs, filling ``traffic``.

    Per bank and WIB business date, the transactions in order, :data:`STATEMENT_LINES` to a file, the formats
    in :data:`~services.simulation.statements.ROTATION`; each file with :data:`STATEMENT_BREAKS` (the
    mismatched and left-off payments taken among members with one payment). A file goes
    :data:`STATEMENT_LAG_MEMBERS` after the last payment it lists. Its own generator: the rest of the stream
    does not change with it."""
    rng = random.Random(f"statements:{seed}")
    groups: dict[tuple[str, date], list[_Notified]] = {}
    for n in notified:
        groups.setdefault((n.bank.bank_id, _business_date(n.body)), []).append(n)
    out: list[tuple[float, RawRecord]] = []
    balances: dict[str, int] = {}
    for (bank_id, day), items in sorted(groups.items()):
        for start in range(0, len(items), STATEMENT_LINES):
            chunk = items[start : start + STATEMENT_LINES]
            bank = chunk[0].bank
            traffic.files += 1
            number = traffic.files
            broken = with_breaks(
                rng,
                [_line(n) for n in chunk],
                candidates=[n.body["paymentRequestId"] for n in chunk if n.ordinary],
                wanted=STATEMENT_BREAKS,
                corrected_at=now,
                unnotified=_unnotified(bank, max(_line(n).booked_at for n in chunk), customer_no_digits),
            )
            statement = Statement(
                bank_id=bank_id,
                account_no=collection_account_no(bank.partner_service_id),
                reference=f"MIX{seed % 1_000_000:06d}F{number:04d}",
                statement_date=day,
                sequence=number,
                opening_idr=balances.get(bank_id, 0),
                lines=in_booking_order(broken.lines),
            )
            balances[bank_id] = statement.closing_idr
            fmt = ROTATION[number % len(ROTATION)]
            upload = build_statement(statement, fmt)
            records = statement_entry_records(
                upload.content,
                bank_id=bank_id,
                filename=upload.filename,
                external_id=str(rng.getrandbits(60)),
                imported_at=now,
            )
            if len(records) != len(statement.lines):
                raise ValueError(
                    f"statement {upload.filename}: {len(records)} entries for {len(statement.lines)} lines"
                )
            traffic.entry_ids.update(_entry_id(r) for r in records)
            traffic.formats[fmt.value] = traffic.formats.get(fmt.value, 0) + 1
            for kind in broken.breaks:
                traffic.breaks[kind.value] = traffic.breaks.get(kind.value, 0) + 1
            left_off = 1 if Break.NOTIFIED_NOT_ON_STATEMENT in broken.breaks else 0
            traffic.listed_payments += len(chunk) - left_off
            at = max(n.position for n in chunk) + STATEMENT_LAG_MEMBERS
            out += [(at, r) for r in records]
    return out


def _entry_id(record: RawRecord) -> str:
    from connectors.statement_ingest import H_ENTRY_ID

    return next(v.decode() for k, v in record.headers if k == H_ENTRY_ID)


def _amount_idr(body: dict[str, Any]) -> int:
    """The rupiah the hub will record for a notification: IDR as sent, a foreign currency at its quoted
    rate (services.domain.payment.to_idr, the normalizer's own conversion)."""
    paid = body["paidAmount"]
    if paid["currency"] == "IDR":
        return int(Decimal(paid["value"]))
    return to_idr(Decimal(paid["value"]), Decimal(body["additionalInfo"]["fxRate"]))
