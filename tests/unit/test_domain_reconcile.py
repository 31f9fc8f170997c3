from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.domain.identity import event_uuid
from services.domain.models import (
    Enrollment,
    MemberStatus,
    ParticipantType,
    Payment,
    Program,
    Sex,
)
from services.domain.reconcile import Decision, MemberState, current_record, on_enrollment, on_payment
from services.domain.tariff import load_tariffs

TABLE = load_tariffs(json.loads((Path(__file__).resolve().parents[2] / "schemas/reference/tariffs.json").read_text()))
TARIFF = TABLE.tariff_on(date(2025, 8, 1))
PID = "123456789012345678"
T0 = datetime(2025, 8, 15, 3, 0, tzinfo=UTC)  # 15 Aug 2025 10:00 WIB
PII = b"\x00\xffgAAAAA-not-utf8"
VALIDITY = 30


def enrollment(request_id: str = "req-1", *, at: datetime = T0, months: int = 24, pid: str = PID) -> Enrollment:
    return Enrollment(
        event_id=event_uuid("enrollment", "KBRI_KUALA_LUMPUR", request_id),
        participant_id=pid,
        office_code="KBRI_KUALA_LUMPUR",
        office_request_id=request_id,
        pii_encrypted=PII,
        full_name="Siti Aminah",
        date_of_birth=date(1987, 11, 12),
        sex=Sex.F,
        participant_type=ParticipantType.PLACED,
        destination_country="MY",
        departure_date=date(2025, 9, 1),
        contract_start=date(2025, 9, 1),
        contract_months=months,
        programs=[Program.JKK, Program.JKM],
        channel="PERWAKILAN_RI",
        received_at=at,
    )


def payment(request_id: str, amount: int, *, minutes: int = 60, pid: str = PID) -> Payment:
    at = T0 + timedelta(minutes=minutes)
    return Payment(
        event_id=event_uuid("payment", "MANDIRI", request_id),
        participant_id=pid,
        bank_id="MANDIRI",
        partner_service_id="   88001",
        virtual_account_no="   88001" + pid,
        payment_request_id=request_id,
        external_id="1",
        amount_idr=amount,
        original_amount=Decimal(amount).quantize(Decimal("0.01")),
        original_currency="IDR",
        trx_time=at - timedelta(minutes=1),
        trx_utc_offset_minutes=420,
        received_at=at,
    )


def enroll(state: MemberState | None = None, e: Enrollment | None = None) -> Decision:
    return on_enrollment(state, e or enrollment(), TARIFF, VALIDITY)


def test_enrollment_issues_a_bill() -> None:
    d = enroll()
    assert d.new_state is not None and d.exceptions == []
    [r] = d.records
    assert (r.record_id, r.version, r.status) == (f"{PID}:1", 1, MemberStatus.AWAITING_PAYMENT)
    assert r.bill_amount_idr == 370_000 and r.paid_amount_idr == 0  # PRE 37,500 + M24 332,500
    assert r.bill_issued_at == T0 and r.bill_expires_on == date(2025, 9, 14)  # 15 Aug WIB + 30 days
    assert r.customer_no == PID and r.pii_encrypted == PII
    assert r.enrollment_event_id == r.caused_by_event_id == enrollment().event_id
    assert r.updated_at == T0 and r.coverage_start is None and r.payment_event_ids == []
    assert d.new_state.status == MemberStatus.AWAITING_PAYMENT and d.new_state.version == 1


def test_tariff_table_is_accepted() -> None:
    assert on_enrollment(None, enrollment(), TABLE, VALIDITY) == enroll()


def test_full_payment_activates() -> None:
    s1 = enroll().new_state
    p = payment("P1", 370_000)
    d = on_payment(s1, p)
    [r] = d.records
    assert (r.version, r.status, r.paid_amount_idr) == (2, MemberStatus.ACTIVE, 370_000)
    assert (r.coverage_start, r.coverage_end) == (date(2025, 9, 1), date(2027, 9, 30))
    assert r.payment_event_ids == [p.event_id] and r.caused_by_event_id == p.event_id
    assert r.updated_at == p.received_at and r.record_id == f"{PID}:2"
    assert d.exceptions == []


def test_partial_payments_twice() -> None:
    s = enroll().new_state
    d1 = on_payment(s, payment("P1", 200_000))
    [r1] = d1.records
    assert (r1.version, r1.status, r1.paid_amount_idr) == (2, MemberStatus.AWAITING_PAYMENT, 200_000)
    assert d1.exceptions == []
    d2 = on_payment(d1.new_state, payment("P2", 170_000, minutes=120))
    [r2] = d2.records
    assert (r2.version, r2.status, r2.paid_amount_idr) == (3, MemberStatus.ACTIVE, 370_000)
    assert r2.payment_event_ids == [payment("P1", 0).event_id, payment("P2", 0).event_id]


def test_duplicate_payment_is_a_no_op() -> None:
    s = enroll().new_state
    d1 = on_payment(s, payment("P1", 100_000))
    d2 = on_payment(d1.new_state, payment("P1", 100_000, minutes=500))  # re-sent notification
    assert d2 == Decision() and d2.is_empty


def test_overpayment() -> None:
    d = on_payment(enroll().new_state, payment("P1", 400_000))
    assert d.records[0].status == MemberStatus.ACTIVE and d.records[0].paid_amount_idr == 400_000
    [x] = d.exceptions
    assert (x.reason, x.amount_idr, x.bank_id) == ("OVERPAYMENT", 30_000, "MANDIRI")
    assert x.exception_id == event_uuid("OVERPAYMENT", payment("P1", 0).event_id)
    assert x.occurred_at == payment("P1", 0).received_at


def test_payment_on_paid_bill_is_not_credited() -> None:
    s = on_payment(enroll().new_state, payment("P1", 370_000)).new_state
    d = on_payment(s, payment("P2", 370_000, minutes=90))
    assert d.records == [] and d.new_state is not None
    [x] = d.exceptions
    assert (x.reason, x.amount_idr) == ("PAYMENT_ON_PAID_BILL", 370_000)
    assert d.new_state.paid_amount_idr == 370_000 and d.new_state.version == 2
    assert on_payment(d.new_state, payment("P2", 370_000, minutes=95)).is_empty


def test_payment_before_enrollment_then_enrollment_activates() -> None:
    p = payment("P1", 370_000, minutes=-30)
    d1 = on_payment(None, p)
    assert d1.records == [] and d1.new_state is not None
    assert d1.new_state.status is None and d1.new_state.status_name == "PENDING_ENROLLMENT"
    [x] = d1.exceptions
    assert (x.reason, x.event_id, x.amount_idr) == ("PAYMENT_BEFORE_ENROLLMENT", p.event_id, 370_000)
    assert on_payment(d1.new_state, p).is_empty

    d2 = enroll(d1.new_state)
    [r] = d2.records
    assert (r.version, r.status, r.paid_amount_idr) == (1, MemberStatus.ACTIVE, 370_000)
    assert r.payment_event_ids == [p.event_id] and r.caused_by_event_id == enrollment().event_id
    assert r.updated_at == T0 and d2.exceptions == []
    assert d2.new_state is not None and d2.new_state.held_payments == ()


def test_held_payments_beyond_the_bill() -> None:
    s = on_payment(None, payment("P1", 300_000, minutes=-30)).new_state
    s = on_payment(s, payment("P2", 100_000, minutes=-20)).new_state
    s = on_payment(s, payment("P3", 50_000, minutes=-10)).new_state
    d = enroll(s)
    [r] = d.records
    assert r.paid_amount_idr == 400_000 and r.status == MemberStatus.ACTIVE
    assert [(x.reason, x.amount_idr) for x in d.exceptions] == [
        ("OVERPAYMENT", 30_000),
        ("PAYMENT_ON_PAID_BILL", 50_000),
    ]


def test_enrollment_redelivery_and_second_enrollment() -> None:
    s = enroll().new_state
    assert enroll(s).is_empty
    other = enrollment("req-2", at=T0 + timedelta(days=1))
    d = enroll(s, other)
    assert d.records == [] and d.new_state is not None
    [x] = d.exceptions
    assert (x.reason, x.event_id) == ("ENROLLMENT_ALREADY_OPEN", other.event_id)
    assert x.exception_id == event_uuid("ENROLLMENT_ALREADY_OPEN", other.event_id)
    assert enroll(d.new_state, other).is_empty


def test_closed_membership_gets_a_new_bill_and_refuses_payments() -> None:
    s = on_payment(enroll().new_state, payment("P1", 370_000)).new_state
    assert s is not None
    expired = s.model_copy(update={"status": MemberStatus.EXPIRED})
    d = on_payment(expired, payment("P2", 10_000, minutes=200))
    assert d.records == [] and [x.reason for x in d.exceptions] == ["PAYMENT_ON_CLOSED_BILL"]
    d = enroll(expired, enrollment("req-2", at=T0 + timedelta(days=400), months=12))
    [r] = d.records
    assert (r.version, r.status, r.paid_amount_idr, r.bill_amount_idr) == (
        3,
        MemberStatus.AWAITING_PAYMENT,
        0,
        226_500,
    )
    assert r.payment_event_ids == [] and r.coverage_start is None


def test_state_json_round_trip() -> None:
    s = on_payment(None, payment("P0", 1_000, minutes=-5)).new_state
    s = enroll(s).new_state
    s = on_payment(s, payment("P1", 500_000)).new_state
    assert s is not None
    wire = json.loads(json.dumps(s.model_dump(mode="json")))
    back = MemberState.model_validate(wire)
    assert back == s and back.enrollment is not None and back.enrollment.pii_encrypted == PII
    assert MemberState.from_json(s.to_json()) == s
    later = payment("P2", 5, minutes=300)
    assert on_payment(back, later) == on_payment(s, later)


def test_key_mismatch_is_a_programming_error() -> None:
    s = enroll().new_state
    with pytest.raises(ValueError):
        on_payment(s, payment("P1", 1, pid="999"))
    with pytest.raises(ValueError):
        enroll(s, enrollment("req-9", pid="999"))


def _run(state: MemberState | None, events: list[Enrollment | Payment]) -> tuple[MemberState | None, list[Decision]]:
    decisions = []
    for event in events:
        d = enroll(state, event) if isinstance(event, Enrollment) else on_payment(state, event)
        decisions.append(d)
        if d.new_state is not None:
            state = d.new_state
    return state, decisions


def test_replay_is_deterministic_and_idempotent() -> None:
    events: list[Enrollment | Payment] = [
        payment("P0", 100_000, minutes=-10),
        enrollment(),
        payment("P1", 100_000),
        payment("P1", 100_000),
        payment("P2", 200_000, minutes=70),
        payment("P3", 5_000, minutes=80),
    ]
    final1, out1 = _run(None, events)
    final2, out2 = _run(None, events)
    assert out1 == out2 and final1 == final2
    _, again = _run(final1, events)
    assert all(d.is_empty for d in again)


@st.composite
def _sequences(draw: Any) -> tuple[list[int], list[Enrollment | Payment]]:
    amounts = draw(st.lists(st.integers(min_value=1, max_value=400_000), min_size=1, max_size=5))
    events: list[Enrollment | Payment] = [enrollment()]
    events += [payment(f"P{i}", a, minutes=i) for i, a in enumerate(amounts)]
    order = draw(st.permutations(events))
    dupes = draw(st.lists(st.sampled_from(events), max_size=6))
    for event in dupes:
        order.insert(draw(st.integers(min_value=0, max_value=len(order))), event)
    return amounts, order


@settings(max_examples=200, deadline=None)
@given(_sequences())
def test_property_interleavings_and_duplicates(case: tuple[list[int], list[Enrollment | Payment]]) -> None:
    amounts, events = case
    by_id = {payment(f"P{i}", a, minutes=i).event_id: a for i, a in enumerate(amounts)}
    final, decisions = _run(None, events)
    assert final is not None and final.enrollment is not None and final.held_payments == ()

    versions = [r.version for d in decisions for r in d.records]
    assert versions == list(range(1, len(versions) + 1))
    assert all(r.record_id == f"{PID}:{r.version}" for d in decisions for r in d.records)

    credited = list(final.payment_event_ids)
    assert len(credited) == len(set(credited))
    assert final.paid_amount_idr == sum(by_id[e] for e in credited)
    refused = [x.event_id for d in decisions for x in d.exceptions if x.reason == "PAYMENT_ON_PAID_BILL"]
    assert sorted(credited + refused) == sorted(by_id)  # each distinct payment settled exactly once
    bill = final.bill
    assert bill is not None and bill.amount_idr == 370_000
    assert (final.status == MemberStatus.ACTIVE) == (final.paid_amount_idr >= bill.amount_idr)
    if credited:
        assert final.paid_amount_idr - by_id[credited[-1]] < bill.amount_idr  # nothing credited after paid
    overpaid = [x.amount_idr for d in decisions for x in d.exceptions if x.reason == "OVERPAYMENT"]
    assert overpaid == ([final.paid_amount_idr - bill.amount_idr] if final.paid_amount_idr > bill.amount_idr else [])
    last = [r for d in decisions for r in d.records][-1]
    assert (last.paid_amount_idr, last.payment_event_ids, last.status) == (
        final.paid_amount_idr,
        credited,
        final.status,
    )

    assert _run(None, events) == (final, decisions)  # deterministic
    assert all(d.is_empty for d in _run(final, events)[1])  # idempotent


def test_current_record_re_emits_exactly_the_last_version() -> None:
    assert current_record(None) is None
    d1 = enroll()
    assert current_record(d1.new_state) == d1.records[0]
    d2 = on_payment(d1.new_state, payment("P1", 370_000))
    assert current_record(d2.new_state) == d2.records[0]
    # survives the table round trip, which is where the reconciler reads it from after a restart
    stored = MemberState.from_json(json.loads(json.dumps(d2.new_state.to_json())))
    assert current_record(stored) == d2.records[0]


def test_current_record_of_a_state_with_only_held_payments_is_none() -> None:
    held = on_payment(None, payment("P1", 1_000)).new_state
    assert current_record(held) is None
