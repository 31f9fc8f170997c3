"""Raw-topic traffic exactly as the partner APIs store it, built offline: the benchmark's backlog, the crash
tests' and the soak's streams.

Each record has the bytes and intake headers connectors/kbri/app.py or connectors/bank/payment.py would have
produced for an accepted request, so preloading them is the same as the APIs having taken that traffic
(the APIs' own cost is measured separately).

* :func:`build_backlog` -- clean: one enrollment and one exact payment per member (the throughput figure).
* :func:`build_mixed_stream` -- every payment case the reconciler knows, in arrival order: exact, two
  instalments, a bank re-sending a notification (same paymentRequestId, new X-EXTERNAL-ID), over-payment,
  payment before its enrollment, a VA the hub never issued, and foreign currency (IDR, MYR, TWD, ...).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from services.config import Settings
from services.domain.dates import wib_date
from services.domain.identity import event_uuid, participant_id
from services.domain.models import ParticipantType, Program
from services.domain.payment import to_idr
from services.domain.tariff import bill_amount_idr, load_tariffs
from services.reference import load_tariff_document
from services.simulation.generators import (
    COUNTRY_UTC_OFFSET_H,
    Case,
    Mix,
    World,
    office_request_id,
    payment_body,
    payment_steps,
    plan_cases,
    plan_member,
    snap_headers,
    unissued_customer_no,
    unknown_va_payment,
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


@dataclass
class Backlog:
    enrollments: list[RawRecord]
    payments: list[RawRecord]
    customer_nos: set[str]

    @property
    def events(self) -> int:
        return len(self.enrollments) + len(self.payments)


def build_backlog(settings: Settings, members: int, seed: int, now: datetime, world: World | None = None) -> Backlog:
    """``members`` valid enrollments and one payment each covering the bill exactly (mixed offices,
    banks, currencies, participant types and contract lengths), as the APIs would have stored them."""
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


@dataclass
class MixedStream:
    records: list[RawRecord]  # in the order to produce them
    customer_nos: set[str]  # every participant the stream touches, unknown VAs included
    enrolled: set[str]  # those with an enrollment
    money_in_idr: int  # distinct bank transactions (a re-sent notification counted once)
    payments: int  # distinct bank transactions
    cases: dict[str, int] = field(default_factory=dict)  # how many of each case, for the test's report

    @property
    def events(self) -> int:
        return len(self.records)


def build_mixed_stream(
    settings: Settings, members: int, seed: int, now: datetime, world: World | None = None, mix: Mix = MIXED
) -> MixedStream:
    """``members`` enrolled workers paying in every way :data:`MIXED` allows, plus one payment to an
    unissued VA per 100 members, about 2.5 records per member. Deterministic for a seed (bar ``now``)."""
    world = world or world_from_settings(settings)
    today = wib_date(now)
    tariff = load_tariffs(load_tariff_document(settings.tariff_file)).tariff_on(today)
    secret = settings.participant_key_secret.get_secret_value().encode()
    rng = random.Random(seed)
    cases = plan_cases(rng, members, mix)
    timed: list[tuple[float, int, RawRecord]] = []  # (position, tie-break, record)
    out = MixedStream([], set(), set(), 0, 0)
    counts: dict[str, int] = {}

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
        for step in steps:
            http_headers = snap_headers(rng, script.bank.bank_id, "", now)  # a resend has its own external id
            pay = step.body
            put(
                i + rng.uniform(1, PAY_LAG_RECORDS),
                payment_intake_record(script.bank.bank_id, http_headers, pay, json.dumps(pay).encode(), now),
            )
            if pay["paymentRequestId"] not in seen:
                seen.add(pay["paymentRequestId"])
                out.payments += 1
                out.money_in_idr += _amount_idr(pay)
        i += 1
        if i % 100 == 0:
            _unknown_va(rng, settings, world, now, i, out, put)
            counts["UNKNOWN_VA"] = counts.get("UNKNOWN_VA", 0) + 1
    timed.sort(key=lambda t: (t[0], t[1]))
    out.records = [record for _, _, record in timed]
    out.cases = counts
    return out


def _unknown_va(
    rng: random.Random, settings: Settings, world: World, now: datetime, at: int, out: MixedStream, put: Any
) -> None:
    bank = rng.choice(world.banks)
    customer_no = unissued_customer_no(rng, settings.customer_no_digits)
    pay = unknown_va_payment(rng, bank, customer_no=customer_no, paid_at=now)
    http_headers = snap_headers(rng, bank.bank_id, "", now)
    put(at, payment_intake_record(bank.bank_id, http_headers, pay, json.dumps(pay).encode(), now))
    out.customer_nos.add(customer_no)
    out.payments += 1
    out.money_in_idr += _amount_idr(pay)


def _amount_idr(body: dict[str, Any]) -> int:
    """The rupiah the hub will record for a notification: IDR as sent, a foreign currency at its quoted
    rate (services.domain.payment.to_idr, the normalizer's own conversion)."""
    paid = body["paidAmount"]
    if paid["currency"] == "IDR":
        return int(Decimal(paid["value"]))
    return to_idr(Decimal(paid["value"]), Decimal(body["additionalInfo"]["fxRate"]))
