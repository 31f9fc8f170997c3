"""services.domain.verification: the judgement of a run, on hand-made facts."""

from __future__ import annotations

from services.domain.verification import (
    CORE_TOPIC,
    MEMBERS_TOPIC,
    DeadLetterFact,
    EnrollmentFact,
    ExceptionFact,
    Inputs,
    PaymentFact,
    RawFact,
    RecordFact,
    restrict,
    verify,
)

BILL = "2026-12-01T01:00:00+00:00"


def rec(
    pid: str,
    version: int,
    paid: int,
    payments: tuple[str, ...] = (),
    *,
    status: str = "ACTIVE",
    topic: str = MEMBERS_TOPIC,
    enrollment: str | None = None,
    bill: str = BILL,
) -> RecordFact:
    return RecordFact(
        topic=topic,
        participant_id=pid,
        version=version,
        status=status,
        paid_amount_idr=paid,
        record_id=f"{pid}:{version}",
        enrollment_event_id=enrollment or f"enr-{pid}",
        bill_issued_at=bill,
        payment_event_ids=payments,
    )


def both(*records: RecordFact) -> tuple[RecordFact, ...]:
    """The records on members.v1 and, as the core publisher forwards them, on core.member-records.v1."""
    core = tuple(RecordFact(**{**r.__dict__, "topic": CORE_TOPIC}) for r in records)
    return (*records, *core)


def member(pid: str, amount: int) -> Inputs:
    """One worker enrolled and paid exactly: awaiting (v1), then active (v2)."""
    return Inputs(
        payments=(PaymentFact(f"pay-{pid}", pid, amount),),
        enrollments=(EnrollmentFact(f"enr-{pid}", pid),),
        raw=(
            RawFact("kbri.enrollments.raw", 0, 0, f"enr-{pid}", pid),
            RawFact("bank.payments.raw", 0, 0, f"pay-{pid}", pid),
        ),
        records=both(rec(pid, 1, 0, status="AWAITING_PAYMENT"), rec(pid, 2, amount, (f"pay-{pid}",))),
    )


def merge(*parts: Inputs) -> Inputs:
    return Inputs(
        payments=tuple(p for x in parts for p in x.payments),
        enrollments=tuple(e for x in parts for e in x.enrollments),
        raw=tuple(r for x in parts for r in x.raw),
        records=tuple(r for x in parts for r in x.records),
        exceptions=tuple(e for x in parts for e in x.exceptions),
        dead_letters=tuple(d for x in parts for d in x.dead_letters),
        undecodable=tuple(k for x in parts for k in x.undecodable),
    )


def test_nothing_wrong() -> None:
    report = verify(merge(member("111", 370_000), member("222", 185_000)))
    assert report.ok, report.summary()
    assert (report.payments_in, report.payments_credited, report.enrollments_in) == (2, 2, 2)
    assert report.money_in_idr == report.money_recorded_idr == 555_000
    assert "verdict" in report.summary() and "OK" in report.summary()


def test_missing_payment() -> None:
    lost = Inputs(payments=(PaymentFact("pay-lost", "111", 50_000),))
    report = verify(merge(member("111", 370_000), lost))
    assert not report.ok
    assert report.payments_missing == 1
    assert report.samples["payments_missing"] == ("pay-lost",)
    assert report.money_in_idr - report.money_recorded_idr == 50_000
    assert set(report.problems) == {"payments_missing", "money_difference_idr"}


def test_payment_credited_twice_in_one_record() -> None:
    facts = Inputs(
        payments=(PaymentFact("pay-1", "111", 100),),
        enrollments=(EnrollmentFact("enr-111", "111"),),
        records=both(rec("111", 1, 200, ("pay-1", "pay-1"))),
    )
    report = verify(facts)
    assert report.payments_credited_twice == 1
    assert report.money_credited_idr == 200 and report.money_in_idr == 100
    assert not report.ok


def test_payment_credited_to_two_bills() -> None:
    old, new = "2026-01-01T00:00:00+00:00", "2026-06-01T00:00:00+00:00"
    facts = Inputs(
        payments=(PaymentFact("pay-1", "111", 100),),
        enrollments=(EnrollmentFact("enr-111", "111"),),
        records=both(rec("111", 1, 100, ("pay-1",), bill=old), rec("111", 2, 100, ("pay-1",), bill=new)),
    )
    report = verify(facts)
    assert report.payments_credited_twice == 1
    assert not report.ok


def test_payment_credited_to_an_earlier_bill_stays_accounted() -> None:
    """A lapse opens a new bill at 0: the payment of the first bill is still credited there."""
    old, new = "2026-01-01T00:00:00+00:00", "2026-06-01T00:00:00+00:00"
    facts = Inputs(
        payments=(PaymentFact("pay-1", "111", 100),),
        enrollments=(EnrollmentFact("enr-111", "111"),),
        records=both(rec("111", 1, 100, ("pay-1",), bill=old), rec("111", 2, 0, bill=new, status="LAPSED_REREGISTER")),
    )
    report = verify(facts)
    assert report.ok, report.summary()
    assert report.money_credited_idr == 100


def test_lower_version_after_higher_is_a_contradiction() -> None:
    base = member("111", 370_000)
    stale = rec("111", 1, 5, status="ACTIVE")  # version 1 again, but not the record version 1 was
    report = verify(merge(base, Inputs(records=(stale,))))
    assert report.contradictions == 1
    assert report.samples["contradictions"] == ("111:1",)
    assert report.problems == {"contradictions": 1}


def test_unseen_lower_version_after_higher_is_a_contradiction() -> None:
    facts = Inputs(enrollments=(EnrollmentFact("enr-111", "111"),), records=both(rec("111", 3, 0), rec("111", 2, 0)))
    report = verify(facts)
    assert report.contradictions == 2  # once on each topic


def test_two_records_with_one_version_are_a_contradiction() -> None:
    facts = Inputs(
        enrollments=(EnrollmentFact("enr-111", "111"),),
        records=(rec("111", 1, 0, status="AWAITING_PAYMENT"), rec("111", 1, 0, status="CANCELLED")),
    )
    report = verify(facts)
    assert report.contradictions == 1


def test_identical_re_emission_is_a_repeat_on_members_and_a_duplicate_on_core() -> None:
    base = member("111", 370_000)
    again = rec("111", 1, 0, status="AWAITING_PAYMENT")
    on_members = verify(merge(base, Inputs(records=(again,))))
    assert on_members.ok, on_members.summary()
    assert on_members.members_repeats == 1
    on_core = verify(merge(base, Inputs(records=(RecordFact(**{**again.__dict__, "topic": CORE_TOPIC}),))))
    assert on_core.core_duplicates == 1 and not on_core.ok


def test_latest_version_not_on_core() -> None:
    facts = Inputs(
        enrollments=(EnrollmentFact("enr-111", "111"),),
        records=(
            rec("111", 1, 0, status="AWAITING_PAYMENT"),
            rec("111", 1, 0, status="AWAITING_PAYMENT", topic=CORE_TOPIC),
            rec("111", 2, 0, status="CANCELLED"),
        ),
    )
    report = verify(facts)
    assert report.core_missing == 1 and report.samples["core_missing"] == ("111",)


def test_money_mismatch_when_a_record_says_more_than_its_payments() -> None:
    facts = Inputs(
        payments=(PaymentFact("pay-1", "111", 370_000),),
        enrollments=(EnrollmentFact("enr-111", "111"),),
        records=both(rec("111", 1, 370_001, ("pay-1",))),
    )
    report = verify(facts)
    assert report.bills_unbalanced == 1
    assert report.money_recorded_idr - report.money_in_idr == 1
    assert set(report.problems) == {"bills_unbalanced", "money_difference_idr"}


def test_duplicate_notification_counts_once() -> None:
    # The bank sent the same transaction twice: the same event id twice on payments.v1.
    base = member("111", 370_000)
    facts = merge(base, Inputs(payments=(PaymentFact("pay-111", "111", 370_000),)))
    report = verify(facts)
    assert report.ok, report.summary()
    assert (report.payments_in, report.duplicate_notifications) == (1, 1)
    assert report.money_in_idr == 370_000


def test_same_bank_transaction_under_another_id_counts_once() -> None:
    base = member("111", 370_000)
    other = Inputs(
        payments=(PaymentFact("pay-111-again", "111", 370_000),),
        exceptions=(ExceptionFact("x1", "111", "DUPLICATE_NOTIFICATION", "pay-111-again", 370_000, "pay-111"),),
    )
    report = verify(merge(base, other))
    assert report.ok, report.summary()
    assert report.payments_counted_once == 1
    assert report.money_in_idr == report.money_recorded_idr == 370_000


def test_over_payment_is_recorded_once_in_paid_amount() -> None:
    facts = Inputs(
        payments=(PaymentFact("pay-1", "111", 400_000),),
        enrollments=(EnrollmentFact("enr-111", "111"),),
        records=both(rec("111", 1, 0, status="AWAITING_PAYMENT"), rec("111", 2, 400_000, ("pay-1",))),
        exceptions=(ExceptionFact("x1", "111", "OVERPAYMENT", "pay-1", 400_000),),
    )
    report = verify(facts)
    assert report.ok, report.summary()
    assert report.payments_credited == 1
    assert report.money_credited_idr == report.money_in_idr == 400_000


def test_reversal_moves_the_money_from_credited_to_reversed() -> None:
    facts = Inputs(
        payments=(PaymentFact("pay-1", "111", 370_000), PaymentFact("pay-2", "111", 370_000)),
        enrollments=(EnrollmentFact("enr-111", "111"),),
        records=both(
            rec("111", 1, 0, status="AWAITING_PAYMENT"),
            rec("111", 2, 370_000, ("pay-1",)),
            rec("111", 3, 0, status="AWAITING_PAYMENT"),  # reversed by the bank
            rec("111", 4, 370_000, ("pay-2",)),
        ),
        exceptions=(ExceptionFact("x1", "111", "REVERSAL", "rev-1", 370_000, "pay-1"),),
    )
    report = verify(facts)
    assert report.ok, report.summary()
    assert (report.payments_credited, report.payments_reversed) == (1, 1)
    assert report.money_credited_idr == report.money_reversed_idr == 370_000
    assert report.money_in_idr == report.money_recorded_idr == 740_000


def test_refused_held_and_dead_lettered_payments_are_accounted() -> None:
    facts = merge(
        member("111", 370_000),
        Inputs(
            payments=(
                PaymentFact("pay-va", "111", 10),
                PaymentFact("pay-held", "333", 20),
                PaymentFact("pay-dlq", "111", 30),
            ),
            exceptions=(
                ExceptionFact("x1", "111", "UNKNOWN_VA", "pay-va", 10),
                ExceptionFact("x2", "333", "PAYMENT_BEFORE_ENROLLMENT", "pay-held", 20),
            ),
            dead_letters=(DeadLetterFact("reconcile", "DECODE", "payments.v1", 0, 9, "pay-dlq", "111"),),
        ),
    )
    report = verify(facts)
    assert report.ok, report.summary()
    assert (report.payments_held_or_refused, report.payments_dead_lettered) == (2, 1)
    assert report.money_held_or_refused_idr == 30 and report.money_dead_lettered_idr == 30


def test_raw_record_must_become_canonical_or_dead_letter() -> None:
    lost = Inputs(
        raw=(
            RawFact("bank.payments.raw", 1, 7, "pay-nowhere", "111"),
            RawFact("bank.payments.raw", 1, 8, None, "111"),  # garbage without headers, dead-lettered
        ),
        dead_letters=(DeadLetterFact("normalize_payments", "NOT_JSON", "bank.payments.raw", 1, 8, None, "111"),),
    )
    report = verify(merge(member("111", 370_000), lost))
    assert report.raw_unaccounted == 1
    assert report.samples["raw_unaccounted"] == ("bank.payments.raw:1:7",)


def test_missing_enrollment() -> None:
    report = verify(Inputs(enrollments=(EnrollmentFact("enr-9", "999"),)))
    assert report.enrollments_missing == 1 and not report.ok


def test_restrict_keeps_only_the_named_traffic() -> None:
    lost = Inputs(payments=(PaymentFact("pay-lost", "222", 50_000),))
    facts = merge(member("111", 370_000), lost, Inputs(undecodable=("222",)))
    assert not verify(facts).ok
    mine = verify(restrict(facts, participants={"111"}))
    assert mine.ok, mine.summary()
    assert mine.payments_in == 1
    by_event = verify(restrict(facts, event_ids={"pay-lost"}))
    assert by_event.payments_missing == 1 and by_event.undecodable == 1


def test_report_dict_and_summary_name_no_person() -> None:
    report = verify(merge(member("111", 370_000), Inputs(payments=(PaymentFact("pay-lost", "111", 1),))))
    data = report.to_dict()
    assert data["ok"] is False and data["payments_missing"] == 1
    assert data["money_in_idr"] == 370_001 and data["money_recorded_idr"] == 370_000
    assert "pay-lost" in report.summary()
