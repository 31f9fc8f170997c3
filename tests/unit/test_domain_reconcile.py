from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_avro_samples import embedded_registry, started_codec

from connectors.registry.compat import CompatibilityLevel, check_compatibility
from services.domain import reconcile as rc
from services.domain import statement_match as sm
from services.domain.identity import event_uuid
from services.domain.models import (
    Enrollment,
    EntryDetailStatus,
    EntryDirection,
    MemberRecord,
    MemberStatus,
    ParticipantType,
    Payment,
    Program,
    ReconciliationException,
    Sex,
    StatementEntry,
    StatementSource,
)
from services.domain.reconcile import (
    Decision,
    MemberState,
    ReconcilePolicy,
    Reversal,
    current_record,
    on_enrollment,
    on_payment,
    on_reversal,
    on_tick,
)
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
    assert d2 == Decision(outcome="DUPLICATE_NOTIFICATION") and d2.is_empty


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


# --- bills through the reconciler (domain.md 1.3, 7.3), hand-computed ---------------------------------------
# packages M6 108,000 / M12 189,000 / M24 332,500; excess 13,500 a month; PRE 37,500 for PLACED only.
@pytest.mark.parametrize(
    ("rule", "months", "lines"),
    [
        ("NEXT_PACKAGE_UP", 5, [("M6", 108_000)]),
        ("NEXT_PACKAGE_UP", 18, [("M24", 332_500)]),
        ("NEXT_PACKAGE_UP", 36, [("M24", 332_500), ("EXCESS", 162_000)]),  # 494,500: BP2MI Korea notice
        ("LOWER_PACKAGE_PLUS_EXCESS", 5, [("M6", 108_000)]),  # below the smallest package
        ("LOWER_PACKAGE_PLUS_EXCESS", 18, [("M12", 189_000), ("EXCESS", 81_000)]),  # 270,000
        ("LOWER_PACKAGE_PLUS_EXCESS", 36, [("M24", 332_500), ("EXCESS", 162_000)]),
    ],
)
@pytest.mark.parametrize("ptype", [ParticipantType.PLACED, ParticipantType.PERSEORANGAN])
def test_bill_by_rule_length_and_participant_type(
    rule: str, months: int, lines: list[tuple[str, int]], ptype: ParticipantType
) -> None:
    tariff = TARIFF.model_copy(update={"between_packages_rule": rule})
    e = enrollment(months=months).model_copy(update={"participant_type": ptype})
    [r] = on_enrollment(None, e, tariff, VALIDITY).records
    expected = ([("PRE", 37_500)] if ptype == ParticipantType.PLACED else []) + lines
    assert [(line.code, line.amount_idr) for line in r.bill_lines] == expected
    assert r.bill_amount_idr == sum(a for _, a in expected)
    if months == 36 and ptype == ParticipantType.PERSEORANGAN:
        assert r.bill_amount_idr == 494_500


def test_jht_monthly_amount_is_not_part_of_the_up_front_bill() -> None:
    with_jht = enrollment().model_copy(
        update={"programs": [Program.JKK, Program.JKM, Program.JHT], "jht_monthly_amount_idr": 105_000}
    )
    [r] = enroll(e=with_jht).records
    assert r.bill_amount_idr == 370_000 and Program.JHT in r.programs
    assert [line.code for line in r.bill_lines] == ["PRE", "M24"]


# --- matching outcomes ---------------------------------------------------------------------------------------
def outcomes(record: Any) -> list[tuple[str, str, str]]:
    return [(e.kind, e.outcome, e.status) for e in record.lineage]


def test_exact_payment_lineage_and_coverage_periods() -> None:
    d = on_payment(enroll().new_state, payment("P1", 370_000))
    assert d.outcome == "EXACT"
    [r] = d.records
    assert outcomes(r) == [
        ("ENROLLMENT", "BILL_ISSUED", "AWAITING_PAYMENT"),
        ("PAYMENT", "EXACT", "ACTIVE"),
    ]
    assert [(e.event_id, e.amount_idr, e.at) for e in r.lineage] == [
        (enrollment().event_id, 370_000, T0),
        (payment("P1", 0).event_id, 370_000, payment("P1", 0).received_at),
    ]
    assert r.credit_idr == 0 and r.reversal_event_ids == []
    assert [(p.phase, p.programs, p.start, p.end) for p in r.coverage_periods] == [
        ("SEBELUM", ["JKK", "JKM"], date(2025, 8, 15), date(2025, 8, 31)),
        ("SELAMA", ["JKK", "JKM"], date(2025, 9, 1), date(2027, 9, 30)),
        ("SETELAH", ["JKK", "JKM"], date(2027, 10, 1), date(2027, 10, 30)),
    ]


def test_partial_then_completed_by_partials() -> None:
    d1 = on_payment(enroll().new_state, payment("P1", 200_000))
    assert d1.outcome == "PARTIAL" and d1.records[0].bill_amount_idr - d1.records[0].paid_amount_idr == 170_000
    assert d1.records[0].coverage_periods == [] and d1.records[0].coverage_start is None
    d2 = on_payment(d1.new_state, payment("P2", 170_000, minutes=120))
    assert d2.outcome == "COMPLETED_BY_PARTIALS" and d2.exceptions == []
    assert [o for _, o, _ in outcomes(d2.records[0])] == ["BILL_ISSUED", "PARTIAL", "COMPLETED_BY_PARTIALS"]


def test_overpayment_is_recorded_as_credit() -> None:
    d = on_payment(on_payment(enroll().new_state, payment("P1", 300_000)).new_state, payment("P2", 100_000, minutes=70))
    assert d.outcome == "OVERPAYMENT"
    [r] = d.records
    assert (r.status, r.paid_amount_idr, r.credit_idr) == (MemberStatus.ACTIVE, 400_000, 30_000)
    assert d.new_state is not None and d.new_state.credit_idr == 30_000
    assert [(x.reason, x.amount_idr) for x in d.exceptions] == [("OVERPAYMENT", 30_000)]


def test_same_bank_transaction_under_another_event_id_is_counted_once() -> None:
    first = payment("P1", 100_000)
    s = on_payment(enroll().new_state, first).new_state
    again = first.model_copy(
        update={"event_id": "another-id", "external_id": "2", "received_at": T0 + timedelta(hours=3)}
    )
    d = on_payment(s, again)
    assert d.outcome == "DUPLICATE_NOTIFICATION" and d.records == []
    [x] = d.exceptions
    assert (x.reason, x.event_id, x.related_event_id) == ("DUPLICATE_NOTIFICATION", "another-id", first.event_id)
    assert d.new_state is not None and d.new_state.paid_amount_idr == 100_000
    assert d.new_state.payment_event_ids == (first.event_id,)
    # another bank may reuse the request id: a different transaction
    other_bank = first.model_copy(update={"event_id": "bni-id", "bank_id": "BNI"})
    assert on_payment(s, other_bank).outcome == "PARTIAL"


def test_unknown_va_is_not_credited() -> None:
    wrong = payment("P1", 370_000).model_copy(update={"virtual_account_no": "   88001999999999999999999"})
    d = on_payment(enroll().new_state, wrong)
    assert d.outcome == "UNKNOWN_VA" and d.records == []
    assert [x.reason for x in d.exceptions] == ["UNKNOWN_VA"]
    assert d.new_state is not None and d.new_state.paid_amount_idr == 0
    assert on_payment(d.new_state, wrong).is_empty


def test_an_applied_event_redelivered_gets_its_exceptions_back_from_the_state() -> None:
    # The worker may die after storing the state and before the exception reached Kafka: an exception-only
    # outcome (unknown VA) has no member record to re-send, so the state keeps it with its cause.
    wrong = payment("P1", 370_000).model_copy(update={"virtual_account_no": "   88001999999999999999999"})
    d = on_payment(None, wrong)
    assert d.new_state is not None
    assert rc.exceptions_caused_by(d.new_state, wrong.event_id) == d.exceptions
    assert rc.exceptions_caused_by(d.new_state, "another-event") == []
    again = MemberState.from_json(json.loads(json.dumps(d.new_state.to_json())))  # through the changelog
    assert on_payment(again, wrong).is_empty
    assert rc.exceptions_caused_by(again, wrong.event_id) == d.exceptions
    # bounded: only the latest RECENT_EXCEPTIONS are kept
    state = d.new_state
    for i in range(rc.RECENT_EXCEPTIONS + 3):
        other = wrong.model_copy(update={"event_id": f"e{i}", "payment_request_id": f"R{i}"})
        nxt = on_payment(state, other).new_state
        assert nxt is not None
        state = nxt
    assert len(state.recent_exceptions) == rc.RECENT_EXCEPTIONS
    assert rc.exceptions_caused_by(state, wrong.event_id) == []
    assert [x.event_id for x in rc.exceptions_caused_by(state, f"e{rc.RECENT_EXCEPTIONS + 2}")] == [
        f"e{rc.RECENT_EXCEPTIONS + 2}"
    ]


def test_payment_after_the_bill_expired_is_not_credited() -> None:
    s = enroll().new_state  # bill payable until 14 Sep 2025 (WIB)
    late = payment("P1", 370_000).model_copy(
        update={
            "trx_time": datetime(2025, 9, 14, 17, 0, tzinfo=UTC),  # 15 Sep 00:00 WIB
            "received_at": datetime(2025, 9, 14, 17, 1, tzinfo=UTC),
        }
    )
    d = on_payment(s, late)
    assert d.outcome == "BILL_EXPIRED" and d.records == []
    [x] = d.exceptions
    assert (x.reason, x.amount_idr) == ("BILL_EXPIRED", 370_000)
    in_time = late.model_copy(update={"trx_time": datetime(2025, 9, 14, 16, 59, tzinfo=UTC)})  # 23:59 WIB
    assert on_payment(s, in_time).outcome == "EXACT"


def test_held_payment_ages_out_on_tick_at_its_own_deadline() -> None:
    policy = ReconcilePolicy(held_payment_max_age_days=30)
    p = payment("P1", 370_000, minutes=-30)
    held = on_payment(None, p, policy=policy).new_state
    deadline = p.received_at + timedelta(days=30)
    assert on_tick(held, deadline - timedelta(seconds=1), policy=policy).outcome == "NOTHING_DUE"
    d = on_tick(held, deadline + timedelta(days=3), policy=policy)
    assert d.outcome == "HELD_PAYMENT_AGED_OUT" and d.records == []
    [x] = d.exceptions
    assert (x.reason, x.event_id, x.occurred_at) == ("HELD_PAYMENT_AGED_OUT", p.event_id, deadline)
    assert d.new_state is not None and d.new_state.held_payments == ()
    assert on_tick(d.new_state, deadline + timedelta(days=9), policy=policy).is_empty
    assert on_payment(d.new_state, p, policy=policy).is_empty  # still remembered: never credited later

    # the enrollment after the deadline, with or without a tick in between, ends the same way
    late = enrollment(at=deadline + timedelta(days=1))
    via_tick = on_enrollment(d.new_state, late, TARIFF, VALIDITY, policy=policy)
    lazily = on_enrollment(held, late, TARIFF, VALIDITY, policy=policy)
    # Same member state either way; only the re-send memory differs (lazily, the event that applied the
    # deadline is the exceptions' cause; a tick has no event to redeliver).
    assert via_tick.new_state is not None and lazily.new_state is not None
    assert via_tick.new_state.model_copy(update={"recent_exceptions": ()}) == lazily.new_state.model_copy(
        update={"recent_exceptions": ()}
    )
    assert via_tick.records == lazily.records
    assert lazily.exceptions == [x]
    assert lazily.records[0].paid_amount_idr == 0 and lazily.records[0].status == MemberStatus.AWAITING_PAYMENT


def test_held_payment_within_the_age_is_matched() -> None:
    policy = ReconcilePolicy(held_payment_max_age_days=30)
    p = payment("P1", 370_000, minutes=-30)
    s = on_payment(None, p, policy=policy).new_state
    d = on_enrollment(s, enrollment(at=p.received_at + timedelta(days=29)), TARIFF, VALIDITY, policy=policy)
    assert d.records[0].status == MemberStatus.ACTIVE and d.exceptions == []
    assert outcomes(d.records[0]) == [("ENROLLMENT", "BILL_ISSUED", "AWAITING_PAYMENT"), ("PAYMENT", "EXACT", "ACTIVE")]


# --- reversals -----------------------------------------------------------------------------------------------
def reversal(event_id: str, target: Payment, *, hours: int = 5, **extra: Any) -> Reversal:
    return Reversal(
        event_id=event_id,
        participant_id=PID,
        bank_id=target.bank_id,
        reverses_event_id=target.event_id,
        received_at=T0 + timedelta(hours=hours),
        **extra,
    )


def statement_entry(
    bank_ref: str | None, amount: str, status: EntryDetailStatus, currency: str = "IDR"
) -> StatementEntry:
    return StatementEntry(
        entry_id=f"entry-{bank_ref}-{amount}",
        bank_id="MANDIRI",
        source=StatementSource.SNAP_STATEMENT,
        account_ref="****6789",
        booking_date=date(2025, 8, 16),
        direction=EntryDirection.DEBIT,
        amount=Decimal(amount),
        currency=currency,
        bank_ref=bank_ref,
        detail_status=status,
        line_no=3,
        imported_at=T0 + timedelta(days=1),
    )


def test_reversal_sends_an_active_member_back_to_awaiting_payment() -> None:
    p1 = payment("P1", 370_000)
    s = on_payment(enroll().new_state, p1).new_state
    d = on_reversal(s, reversal("R1", p1))
    assert d.outcome == "REVERSAL"
    [r] = d.records
    assert (r.version, r.status, r.paid_amount_idr, r.payment_event_ids) == (3, MemberStatus.AWAITING_PAYMENT, 0, [])
    assert r.coverage_start is None and r.coverage_end is None and r.coverage_periods == []
    assert r.reversal_event_ids == ["R1"] and r.caused_by_event_id == "R1"
    assert outcomes(r)[-1] == ("REVERSAL", "REVERSAL", "AWAITING_PAYMENT")
    [x] = d.exceptions
    assert (x.reason, x.event_id, x.related_event_id, x.amount_idr) == ("REVERSAL", "R1", p1.event_id, 370_000)
    assert on_reversal(d.new_state, reversal("R1", p1)).is_empty  # re-delivered
    # the bank's repeat of the reversed notification is not credited again; a new payment is
    assert on_payment(d.new_state, p1).is_empty
    again = on_payment(d.new_state, payment("P2", 370_000, minutes=600))
    assert again.outcome == "EXACT" and again.records[0].status == MemberStatus.ACTIVE


def test_reversal_that_leaves_the_bill_covered_keeps_the_member_active() -> None:
    p1, p2 = payment("P1", 10_000), payment("P2", 370_000, minutes=70)
    s = on_payment(on_payment(enroll().new_state, p1).new_state, p2).new_state
    assert s is not None and s.credit_idr == 10_000
    d = on_reversal(s, reversal("R1", p1))
    [r] = d.records
    assert (r.status, r.paid_amount_idr, r.credit_idr, r.payment_event_ids) == (
        MemberStatus.ACTIVE,
        370_000,
        0,
        [p2.event_id],
    )
    assert r.coverage_start == date(2025, 9, 1)


def test_statement_error_correction_reverses_by_bank_reference() -> None:
    p1 = payment("MDR-REF-1", 370_000)
    s = on_payment(enroll().new_state, p1).new_state
    entry = statement_entry("MDR-REF-1", "370000.00", EntryDetailStatus.ERROR_CORRECTION)
    rev = Reversal.of_statement_entry(entry, PID)
    assert (rev.event_id, rev.bank_refs, rev.amount, rev.currency) == (
        entry.entry_id,
        ["MDR-REF-1"],
        Decimal("370000.00"),
        "IDR",
    )
    d = on_reversal(s, rev)
    assert d.outcome == "REVERSAL" and d.records[0].status == MemberStatus.AWAITING_PAYMENT
    assert d.exceptions[0].related_event_id == p1.event_id


def test_reversal_refusals() -> None:
    p1 = payment("MDR-REF-1", 370_000)
    s = on_payment(enroll().new_state, p1).new_state
    wrong_amount = Reversal.of_statement_entry(
        statement_entry("MDR-REF-1", "37000.00", EntryDetailStatus.REVERSAL), PID
    )
    d = on_reversal(s, wrong_amount)
    assert d.outcome == "REVERSAL_AMOUNT_MISMATCH" and d.records == []
    assert d.new_state is not None and d.new_state.paid_amount_idr == 370_000
    unmatched = Reversal.of_statement_entry(statement_entry("NOPE", "370000.00", EntryDetailStatus.REVERSAL), PID)
    d = on_reversal(s, unmatched)
    assert d.outcome == "REVERSAL_UNMATCHED" and [x.reason for x in d.exceptions] == ["REVERSAL_UNMATCHED"]
    other_currency = Reversal.of_statement_entry(
        statement_entry("MDR-REF-1", "370000.00", EntryDetailStatus.REVERSAL, currency="MYR"), PID
    )
    assert on_reversal(s, other_currency).outcome == "REVERSAL_AMOUNT_MISMATCH"
    with pytest.raises(ValueError):
        Reversal.of_statement_entry(statement_entry("MDR-REF-1", "370000.00", EntryDetailStatus.SUCCESS), PID)
    with pytest.raises(ValueError):
        Reversal.of_statement_entry(statement_entry(None, "370000.00", EntryDetailStatus.REVERSAL), PID)
    assert on_reversal(None, unmatched).outcome == "REVERSAL_UNMATCHED"


def test_reversal_of_a_held_payment_drops_it() -> None:
    p = payment("P1", 370_000, minutes=-30)
    d = on_reversal(on_payment(None, p).new_state, reversal("R1", p))
    assert d.outcome == "REVERSAL" and d.records == []
    assert d.new_state is not None and d.new_state.held_payments == ()
    [r] = enroll(d.new_state).records
    assert (r.status, r.paid_amount_idr) == (MemberStatus.AWAITING_PAYMENT, 0)


# --- foreign currency --------------------------------------------------------------------------------------
def myr_payment(rate: str) -> Payment:
    base = payment("MYR-1", 0)
    amount = Decimal("107.25")
    return base.model_copy(
        update={
            "original_amount": amount,
            "original_currency": "MYR",
            "fx_rate": Decimal(rate),
            "amount_idr": int((amount * Decimal(rate)).quantize(Decimal(1))),
        }
    )


def reference(rate: str | None) -> Any:
    asked: list[tuple[str, date]] = []

    def lookup(currency: str, value_date: date) -> Decimal | None:
        asked.append((currency, value_date))
        return Decimal(rate) if rate is not None else None

    lookup.asked = asked  # type: ignore[attr-defined]
    return lookup


@pytest.mark.parametrize(("rate", "flagged"), [("3450", False), ("3468", False), ("3468.01", True), ("3300", True)])
def test_fx_rate_is_checked_against_the_reference_of_its_value_date(rate: str, flagged: bool) -> None:
    lookup = reference("3400")  # 2% of 3400 is 68: 3332 to 3468 is within
    d = on_payment(enroll().new_state, myr_payment(rate), fx_reference=lookup)
    assert lookup.asked == [("MYR", date(2025, 8, 15))]
    assert [x.reason for x in d.exceptions if x.reason.startswith("FX")] == (
        ["FX_RATE_OUT_OF_TOLERANCE"] if flagged else []
    )
    assert d.records and d.records[0].paid_amount_idr == myr_payment(rate).amount_idr  # credited at the bank's rate


def test_fx_out_of_tolerance_can_hold_instead() -> None:
    policy = ReconcilePolicy(fx_out_of_tolerance="HOLD")
    d = on_payment(enroll().new_state, myr_payment("3300"), fx_reference=reference("3400"), policy=policy)
    assert d.outcome == "FX_RATE_OUT_OF_TOLERANCE" and d.records == []
    assert d.new_state is not None and d.new_state.paid_amount_idr == 0
    assert [h.event_id for h in d.new_state.fx_held] == [myr_payment("3300").event_id]
    tighter = ReconcilePolicy(fx_tolerance_pct=Decimal("0.5"))
    assert on_payment(
        enroll().new_state, myr_payment("3450"), fx_reference=reference("3400"), policy=tighter
    ).exceptions


def test_fx_reference_missing_is_flagged_and_idr_is_never_checked() -> None:
    d = on_payment(enroll().new_state, myr_payment("3450"), fx_reference=reference(None))
    assert [x.reason for x in d.exceptions if x.reason.startswith("FX")] == ["FX_REFERENCE_RATE_MISSING"]
    assert d.records and d.records[0].paid_amount_idr == 370_012  # 107.25 MYR at the bank's 3450, credited
    lookup = reference("1")
    assert on_payment(enroll().new_state, payment("P1", 370_000), fx_reference=lookup).exceptions == []
    assert lookup.asked == []


# --- lapse and re-registration -------------------------------------------------------------------------------
JAN = datetime(2025, 1, 10, 3, 0, tzinfo=UTC)  # 10 Jan 2025 10:00 WIB


def lapsing() -> MemberState:
    """PLACED, paid 10 Jan 2025, embarking 1 Aug 2025: the pre-work cover ends 9 Jun, lapse on 10 Jun."""
    e = enrollment(at=JAN).model_copy(update={"departure_date": date(2025, 8, 1), "contract_start": date(2025, 8, 1)})
    p = payment("P1", 370_000).model_copy(
        update={"trx_time": JAN + timedelta(minutes=5), "received_at": JAN + timedelta(minutes=6)}
    )
    s = on_payment(on_enrollment(None, e, TARIFF, VALIDITY).new_state, p).new_state
    assert s is not None and s.lapse_on == date(2025, 6, 10)
    return s


LAPSE_AT = datetime(2025, 6, 9, 17, 0, tzinfo=UTC)  # 10 Jun 2025 00:00 WIB


def test_not_departed_within_the_pre_work_cover_lapses() -> None:
    s = lapsing()
    assert on_tick(s, LAPSE_AT - timedelta(seconds=1)).outcome == "NOTHING_DUE"
    d = on_tick(s, LAPSE_AT + timedelta(days=2))
    assert d.outcome == "LAPSED_REREGISTER" and d.exceptions == []
    [r] = d.records
    assert (r.version, r.status, r.bill_amount_idr, r.paid_amount_idr) == (3, MemberStatus.LAPSED_REREGISTER, 37_500, 0)
    assert [line.code for line in r.bill_lines] == ["PRE"] and r.bill_issued_at == LAPSE_AT == r.updated_at
    assert r.bill_expires_on == date(2025, 7, 10) and r.payment_event_ids == []
    assert outcomes(r) == [("LAPSE", "LAPSED_REREGISTER", "LAPSED_REREGISTER")]
    assert [p.phase for p in r.coverage_periods] == ["SEBELUM", "SELAMA", "SETELAH"]  # the bought cover stays
    assert on_tick(d.new_state, LAPSE_AT + timedelta(days=3)).is_empty

    # paying the re-registration bill restores ACTIVE with a new pre-work cover up to embarkation
    p2 = payment("P2", 37_500).model_copy(
        update={"trx_time": LAPSE_AT + timedelta(days=2), "received_at": LAPSE_AT + timedelta(days=2, minutes=1)}
    )
    d2 = on_payment(d.new_state, p2)
    [r2] = d2.records
    assert (r2.version, r2.status, r2.paid_amount_idr) == (4, MemberStatus.ACTIVE, 37_500)
    assert [(p.phase, p.start, p.end) for p in r2.coverage_periods] == [
        ("SEBELUM", date(2025, 1, 10), date(2025, 6, 9)),
        ("SEBELUM", date(2025, 6, 12), date(2025, 7, 31)),
        ("SELAMA", date(2025, 8, 1), date(2027, 8, 31)),
        ("SETELAH", date(2027, 9, 1), date(2027, 9, 30)),
    ]
    assert d2.new_state is not None and d2.new_state.lapse_on is None
    # reversing the re-registration payment goes back to LAPSED_REREGISTER, not AWAITING_PAYMENT
    d3 = on_reversal(d2.new_state, reversal("R2", p2, hours=24 * 200))
    assert d3.records[0].status == MemberStatus.LAPSED_REREGISTER
    assert [p.phase for p in d3.records[0].coverage_periods] == ["SEBELUM", "SELAMA", "SETELAH"]


def test_lapse_is_applied_before_a_later_event_even_without_a_tick() -> None:
    s = lapsing()
    p2 = payment("P2", 37_500).model_copy(
        update={"trx_time": LAPSE_AT + timedelta(days=2), "received_at": LAPSE_AT + timedelta(days=2, minutes=1)}
    )
    lazily = on_payment(s, p2)
    ticked = on_tick(s, LAPSE_AT + timedelta(days=1))
    after_tick = on_payment(ticked.new_state, p2)
    assert [r.status for r in lazily.records] == [MemberStatus.LAPSED_REREGISTER, MemberStatus.ACTIVE]
    assert lazily.records == ticked.records + after_tick.records
    assert lazily.new_state == after_tick.new_state


# --- the transition table ------------------------------------------------------------------------------------
def test_unknown_status_is_an_illegal_transition_not_a_silent_change() -> None:
    s = enroll().new_state
    assert s is not None
    odd = s.model_copy(update={"status": MemberStatus.UNKNOWN})
    p = payment("P1", 370_000)
    d = on_payment(odd, p)
    assert d.outcome == "ILLEGAL_TRANSITION" and d.records == []
    [x] = d.exceptions
    assert (x.reason, x.event_id) == ("ILLEGAL_TRANSITION", p.event_id)
    assert "UNKNOWN x PAYMENT" in x.detail
    assert d.new_state == odd.model_copy(
        update={
            "seen_event_ids": (*odd.seen_event_ids, p.event_id),
            "recent_exceptions": (rc.RecentException(cause=p.event_id, exception=x),),  # nothing else changed
        }
    )
    assert on_payment(d.new_state, p).is_empty


def test_a_transition_missing_from_the_table_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(rc.TRANSITIONS, ("AWAITING_PAYMENT", rc.EventKind.PAYMENT), frozenset({"AWAITING_PAYMENT"}))
    s = enroll().new_state
    partial = on_payment(s, payment("P1", 100_000))
    assert partial.outcome == "PARTIAL"  # AWAITING_PAYMENT -> AWAITING_PAYMENT is still allowed
    d = on_payment(partial.new_state, payment("P2", 270_000, minutes=70))
    assert d.outcome == "ILLEGAL_TRANSITION" and d.records == []
    assert "AWAITING_PAYMENT x PAYMENT -> ACTIVE" in d.exceptions[0].detail
    assert d.new_state is not None and d.new_state.paid_amount_idr == 100_000


def test_leaving_active_for_an_unpaid_bill_is_only_by_reversal() -> None:
    for (before, kind), after in rc.TRANSITIONS.items():
        if before == "ACTIVE" and "AWAITING_PAYMENT" in after:
            assert kind == rc.EventKind.REVERSAL
        assert "PENDING_ENROLLMENT" not in after or before == "PENDING_ENROLLMENT"


# --- state and contract --------------------------------------------------------------------------------------
def test_rich_state_survives_the_table_round_trip() -> None:
    policy = ReconcilePolicy(fx_out_of_tolerance="HOLD")
    s = on_payment(None, payment("P0", 1_000, minutes=-5)).new_state
    s = enroll(s).new_state
    s = on_payment(s, myr_payment("3300"), fx_reference=reference("3400"), policy=policy).new_state
    p1 = payment("P1", 500_000)
    s = on_payment(s, p1).new_state
    s = on_reversal(s, reversal("R1", p1)).new_state
    assert s is not None and s.fx_held and s.reversals and s.lineage and s.payment_keys
    back = MemberState.from_json(json.loads(json.dumps(s.to_json())))
    assert back == s and current_record(back) == current_record(s)
    assert MemberState.from_json_bytes(s.to_json_bytes()) == s and json.loads(s.to_json_bytes()) == s.to_json()
    nxt = payment("P2", 369_000, minutes=900)
    assert on_payment(back, nxt) == on_payment(s, nxt)


def test_a_state_stored_before_this_version_still_loads() -> None:
    s = on_payment(enroll().new_state, payment("P1", 200_000)).new_state
    assert s is not None
    old = s.to_json()
    for key in ("credits", "fx_held", "payment_keys", "reversals", "lineage", "coverage_periods", "lapse_on"):
        old.pop(key)
    for key in ("lines", "kind", "rules", "validity_days", "reregistration_idr", "base_periods"):
        old["bill"].pop(key)
    loaded = MemberState.from_json(old)
    assert MemberState.from_json_bytes(json.dumps(old).encode()) == loaded  # as the table holds it
    d = on_payment(loaded, payment("P2", 170_000, minutes=90))
    assert d.records[0].status == MemberStatus.ACTIVE and d.records[0].paid_amount_idr == 370_000


SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"
HISTORY = Path(__file__).resolve().parent / "data" / "schema_history"


@pytest.mark.parametrize("name", ["sinergi.MemberRecord", "sinergi.ReconciliationException"])
def test_schemas_stay_full_transitive_with_their_registered_history(name: str) -> None:
    earlier = sorted(HISTORY.glob(f"{name}.v*.avsc"))
    assert earlier, f"no registered history for {name}"
    current = (SCHEMAS / f"{name}.avsc").read_text()
    assert check_compatibility(current, [p.read_text() for p in earlier], CompatibilityLevel.FULL_TRANSITIVE) == []


async def test_records_with_lineage_round_trip_through_avro() -> None:
    p1 = payment("P1", 300_000)
    s = on_payment(enroll().new_state, p1).new_state
    d = on_payment(s, payment("P2", 100_000, minutes=70))
    d2 = on_reversal(d.new_state, reversal("R1", p1))
    _, registry = embedded_registry()
    try:
        codec = await started_codec(registry)
        for record in [*d.records, *d2.records]:
            assert record.lineage and record.bill_lines
            back = codec.decode_model(codec.encode("sinergi.MemberRecord", record), MemberRecord)
            assert back == record
        for x in [*d.exceptions, *d2.exceptions]:
            back_x = codec.decode_model(codec.encode("sinergi.ReconciliationException", x), ReconciliationException)
            assert back_x == x
        assert d2.exceptions[0].related_event_id == p1.event_id
    finally:
        await registry.aclose()


# --- statement reversals reach the member (statement_match.reversal_of -> on_reversal) -------------------------
def _statement_reversal(p: Payment, amount: str) -> sm.Decision:
    """The REVERSAL decision the statement reconciler takes for a debit naming payment ``p`` by reference."""
    debit = statement_entry(p.payment_request_id, amount, EntryDetailStatus.REVERSAL)
    ledger = sm.apply_payment(sm.BankLedger.empty("MANDIRI"), p).ledger
    step = sm.apply_entry(ledger, debit, now=T0 + timedelta(days=1))
    [d] = [d for d in step.decisions if d.kind is sm.DecisionKind.REVERSAL]
    return d


def test_a_statement_reversal_of_the_whole_payment_sends_the_member_back() -> None:
    p1 = payment("MDR-REF-9", 370_000)
    s = on_payment(enroll().new_state, p1).new_state
    decision = _statement_reversal(p1, "370000.00")
    rev = sm.reversal_of(decision)
    assert rev is not None
    assert (rev.event_id, rev.participant_id, rev.reverses_event_id, rev.amount, rev.currency) == (
        decision.decision_id,
        PID,
        p1.event_id,
        Decimal("370000.00"),
        "IDR",
    )
    d = on_reversal(s, rev)
    assert d.outcome == "REVERSAL" and d.records[0].status == MemberStatus.AWAITING_PAYMENT
    assert d.records[0].reversal_event_ids == [decision.decision_id]
    assert on_reversal(d.new_state, sm.reversal_of(decision)).is_empty  # the decision re-sent after a crash


def test_a_partial_statement_reversal_is_flagged_not_applied() -> None:
    p1 = payment("MDR-REF-8", 370_000)
    s = on_payment(enroll().new_state, p1).new_state
    rev = sm.reversal_of(_statement_reversal(p1, "100000.00"))
    assert rev is not None and rev.amount == Decimal("100000.00")
    d = on_reversal(s, rev)
    assert d.outcome == "REVERSAL_AMOUNT_MISMATCH" and d.records == []


def test_only_reversal_decisions_naming_a_payment_become_reversals() -> None:
    p1 = payment("MDR-REF-7", 370_000)
    matched = sm.apply_entry(
        sm.apply_payment(sm.BankLedger.empty("MANDIRI"), p1).ledger,
        statement_entry("MDR-REF-7", "370000.00", EntryDetailStatus.BOOK).model_copy(
            update={"direction": EntryDirection.CREDIT}
        ),
    ).decisions
    assert [d.kind for d in matched] == [sm.DecisionKind.MATCHED_BY_REF]
    assert sm.reversal_of(matched[0]) is None
