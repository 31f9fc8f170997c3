"""Statement reconciliation (services/domain/statement_match.py): every decision kind in both arrival orders,
the VA window around WIB midnight, foreign currency, duplicates, late facts, and order-independence."""

from __future__ import annotations

import itertools
import json
import random
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.domain import statement_match
from services.domain.daily_report import TOTAL, build_report
from services.domain.identity import event_uuid
from services.domain.models import EntryDetailStatus, EntryDirection, Payment, StatementEntry, StatementSource
from services.domain.payment import to_idr
from services.domain.statement_match import (
    MATCHES,
    AgeingBucket,
    BankLedger,
    BookedEntry,
    Decision,
    DecisionKind,
    Detail,
    Step,
    ageing_bucket,
    ageing_days,
    apply_entry,
    apply_payment,
    close_day,
    due_closures,
    effective,
    prune,
)
from services.domain.statements._common import make_entry

BANK = "MANDIRI"
PSID = "   88001"
CUSTOMER = "123456789012345678"
D = date(2025, 7, 15)
T = datetime(2025, 7, 15, 3, 0, tzinfo=UTC)  # 10:00 WIB, 15 Jul
CLOSE_AT = datetime(2025, 7, 15, 18, 0, tzinfo=UTC)  # 01:00 WIB, 16 Jul
K = DecisionKind


def pay(
    request_id: str,
    amount_idr: int = 370_000,
    *,
    at: datetime = T,
    customer: str = CUSTOMER,
    partner_ref: str | None = None,
    currency: str = "IDR",
    original: str | None = None,
    fx: str | None = None,
    bank: str = BANK,
    psid: str = PSID,
) -> Payment:
    original_amount = Decimal(original) if original is not None else Decimal(amount_idr).quantize(Decimal("0.01"))
    return Payment(
        event_id=event_uuid("payment", bank, request_id),
        participant_id=customer,
        bank_id=bank,
        partner_service_id=psid,
        virtual_account_no=psid + customer,
        payment_request_id=request_id,
        external_id="1",
        partner_reference_no=partner_ref,
        amount_idr=amount_idr,
        original_amount=original_amount,
        original_currency=currency,
        fx_rate=Decimal(fx) if fx else None,
        trx_time=at,
        trx_utc_offset_minutes=420,
        received_at=at + timedelta(seconds=2),
    )


def entry(
    bank_ref: str | None,
    amount: str = "370000.00",
    *,
    booked: date = D,
    value: date | None = None,
    direction: EntryDirection = EntryDirection.CREDIT,
    status: EntryDetailStatus = EntryDetailStatus.BOOK,
    currency: str = "IDR",
    e2e: str | None = None,
    customer_ref: str | None = None,
    narrative: str | None = None,
    source: StatementSource = StatementSource.CAMT053,
    bank: str = BANK,
    line_no: int = 1,
) -> StatementEntry:
    return make_entry(
        source=source,
        bank_id=bank,
        account="*********5678",
        booking_date=booked,
        value_date=value,
        direction=direction,
        amount=Decimal(amount),
        currency=currency,
        bank_ref=bank_ref,
        end_to_end_id=e2e,
        customer_ref=customer_ref,
        narrative=narrative,
        detail_status=status,
        statement_ref="STMT-1",
        line_no=line_no,
        imported_at=datetime(2025, 7, 15, 17, 30, tzinfo=UTC),
    )


Item = Payment | StatementEntry


def feed(
    items: Iterable[Item], ledger: BankLedger | None = None, bank: str = BANK
) -> tuple[BankLedger, list[Decision]]:
    ledger = ledger or BankLedger.empty(bank)
    out: list[Decision] = []
    for item in items:
        step = apply_payment(ledger, item) if isinstance(item, Payment) else apply_entry(ledger, item)
        ledger = step.ledger
        out.extend(step.decisions)
    return ledger, out


def close(
    ledger: BankLedger, *days: date, now: datetime = CLOSE_AT, bank: str = BANK
) -> tuple[BankLedger, list[Decision]]:
    out: list[Decision] = []
    for day in days:
        step = close_day(ledger, bank, day, now)
        ledger = step.ledger
        out.extend(step.decisions)
    return ledger, out


def run(items: Sequence[Item], *days: date, bank: str = BANK) -> list[Decision]:
    ledger, before = feed(items, bank=bank)
    _, after = close(ledger, *(days or (D,)), bank=bank)
    return before + after


def kinds(decisions: Iterable[Decision]) -> list[DecisionKind]:
    return [d.kind for d in decisions]


def both_orders(a: Item, b: Item) -> list[list[Decision]]:
    return [run([a, b], D, D + timedelta(days=1)), run([b, a], D, D + timedelta(days=1))]


# --- MATCHED_BY_REF --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "ref_field",
    ["bank_ref", "e2e", "customer_ref"],
)
def test_matched_by_ref_in_either_order(ref_field: str) -> None:
    p = pay("PRQ-20250715-7781")
    refs = {"bank_ref": "MDR250715000101", "e2e": None, "customer_ref": None}
    refs[ref_field] = " prq-20250715-7781 " if ref_field != "bank_ref" else "PRQ-20250715-7781"
    e = entry(refs["bank_ref"], e2e=refs["e2e"], customer_ref=refs["customer_ref"])
    first, second = both_orders(p, e)
    assert [x.decision_id for x in first] == [x.decision_id for x in second]
    [d] = first
    assert d.kind is K.MATCHED_BY_REF
    assert (d.payment_event_id, d.entry_id, d.participant_id) == (p.event_id, e.entry_id, CUSTOMER)
    assert (d.business_date, d.amount_idr, d.difference) == (D, 370_000, None)
    assert (d.notified_amount, d.notified_currency) == (Decimal("370000.00"), "IDR")
    assert (d.statement_amount, d.statement_currency) == (Decimal("370000.00"), "IDR")
    assert d.ageing_days is None and d.ageing_bucket is None and d.resolves == ()
    assert d.decision_id == event_uuid("statement-match", "MATCHED_BY_REF", BANK, p.event_id, e.entry_id)


def test_partner_reference_no_matches_too() -> None:
    p = pay("PRQ-1", partner_ref="MIR123")
    e = entry("MDR-X", e2e="MIR123")
    for decisions in both_orders(p, e):
        assert kinds(decisions) == [K.MATCHED_BY_REF]


def test_placeholder_references_never_match() -> None:
    # camt.053 uses NOTPROVIDED for a missing EndToEndId; a bank that also sends it as partnerReferenceNo
    # must not pair every such payment with every such entry.
    p = pay("PRQ-1", partner_ref="NOTPROVIDED")
    e = entry("MDR-X", e2e="NotProvided")
    assert kinds(run([p, e])) == [K.NOTIFIED_NOT_ON_STATEMENT, K.ON_STATEMENT_NOT_NOTIFIED]


def test_ref_match_happens_before_the_day_closes() -> None:
    ledger, decisions = feed([pay("PRQ-1"), entry("PRQ-1")])
    assert kinds(decisions) == [K.MATCHED_BY_REF]
    assert ledger.open_payments == {} and ledger.open_entries == {}
    _, after = close(ledger, D)
    assert after == []


# --- AMOUNT_MISMATCH -------------------------------------------------------------------------------------


def test_amount_mismatch_records_the_difference_in_either_order() -> None:
    p = pay("PRQ-1", 370_000)
    e = entry("PRQ-1", "369000.00")
    for decisions in both_orders(p, e):
        [d] = decisions  # both sides are consumed: no break for either at close
        assert d.kind is K.AMOUNT_MISMATCH and d.detail == Detail.AMOUNT_DIFFERS
        assert d.difference == Decimal("-1000.00")
        assert (d.notified_amount, d.statement_amount, d.amount_idr) == (
            Decimal("370000.00"),
            Decimal("369000.00"),
            370_000,
        )
        assert d.ageing_bucket is AgeingBucket.D0_1


def test_of_two_reference_candidates_the_equal_amount_wins() -> None:
    # two entries carry the payment's reference; the one with the equal amount is the match
    p = pay("PRQ-1")
    wrong, right = entry("PRQ-1", "1.00", line_no=1, e2e=None), entry("BR-2", e2e="PRQ-1", line_no=2)
    _, decisions = feed([wrong, right, p])
    assert [(d.kind, d.entry_id) for d in decisions] == [(K.MATCHED_BY_REF, right.entry_id)]


# --- MATCHED_BY_VA_AMOUNT_DATE ---------------------------------------------------------------------------


def test_va_match_waits_for_the_close_and_works_in_either_order() -> None:
    p = pay("PRQ-1")
    e = entry("MDR250715000101", customer_ref=PSID + CUSTOMER)  # leading spaces as the bank sends them
    for first, second in ((p, e), (e, p)):
        ledger, early = feed([first, second])
        assert early == []  # a reference match could still arrive today
        _, decisions = close(ledger, D)
        [d] = decisions
        assert d.kind is K.MATCHED_BY_VA_AMOUNT_DATE
        assert (d.payment_event_id, d.entry_id, d.amount_idr, d.ageing_days) == (p.event_id, e.entry_id, 370_000, None)


def test_customer_number_in_the_narrative_is_enough() -> None:
    # The statement parsers mask every 10+ digit run of a narrative (clean_narrative), so this only helps an
    # entry whose narrative kept the number; the model itself allows it.
    p = pay("PRQ-1")
    parsed = entry(None, narrative=f"SETORAN IURAN VA {CUSTOMER} JKK JKM")
    assert CUSTOMER not in (parsed.narrative or "")
    e = parsed.model_copy(update={"narrative": f"SETORAN IURAN VA {CUSTOMER} JKK JKM"})
    assert kinds(run([p, e])) == [K.MATCHED_BY_VA_AMOUNT_DATE]


def test_a_masked_or_partial_number_is_not_a_va() -> None:
    p = pay("PRQ-1")
    masked = entry("B1", narrative="SETORAN VA **************5678", line_no=1)
    partial = entry("B2", "370000.00", customer_ref=CUSTOMER[:-1], line_no=2)
    assert Counter(kinds(run([p, masked, partial]))) == Counter(
        {K.NOTIFIED_NOT_ON_STATEMENT: 1, K.ON_STATEMENT_NOT_NOTIFIED: 2}
    )


def test_a_later_reference_match_wins_over_an_earlier_va_candidate() -> None:
    # p1 has only a VA candidate; e names p2 by reference but carries p1's VA. Whatever the order, the
    # reference decides and p1 stays unmatched.
    p1, p2 = pay("PRQ-1", customer=CUSTOMER), pay("PRQ-2", customer="987654321098765432")
    e = entry("PRQ-2", customer_ref=PSID + CUSTOMER)
    items: list[Item] = [p1, p2, e]
    for order in itertools.permutations(items):
        decisions = run(list(order))
        assert sorted((d.kind, d.payment_event_id) for d in decisions) == sorted(
            [(K.MATCHED_BY_REF, p2.event_id), (K.NOTIFIED_NOT_ON_STATEMENT, p1.event_id)]
        )


def test_va_needs_the_same_amount() -> None:
    p = pay("PRQ-1")
    e = entry("B1", "369000.00", customer_ref=CUSTOMER)
    assert kinds(run([p, e])) == [K.NOTIFIED_NOT_ON_STATEMENT, K.ON_STATEMENT_NOT_NOTIFIED]


@pytest.mark.parametrize(
    ("trx_time", "value_date", "matches"),
    [
        # 23:59:59 WIB on 15 Jul: WIB date 15 Jul
        (datetime(2025, 7, 15, 16, 59, 59, tzinfo=UTC), date(2025, 7, 14), True),
        (datetime(2025, 7, 15, 16, 59, 59, tzinfo=UTC), date(2025, 7, 16), True),
        (datetime(2025, 7, 15, 16, 59, 59, tzinfo=UTC), date(2025, 7, 17), False),
        # one second later it is 00:00 WIB on 16 Jul although UTC still says 15 Jul
        (datetime(2025, 7, 15, 17, 0, 0, tzinfo=UTC), date(2025, 7, 17), True),
        (datetime(2025, 7, 15, 17, 0, 0, tzinfo=UTC), date(2025, 7, 14), False),
        (datetime(2025, 7, 15, 17, 0, 0, tzinfo=UTC), date(2025, 7, 15), True),
    ],
)
def test_va_date_window_is_one_wib_day_either_side(trx_time: datetime, value_date: date, matches: bool) -> None:
    p = pay("PRQ-1", at=trx_time)
    e = entry("B1", booked=value_date, value=value_date, customer_ref=CUSTOMER)
    days = [date(2025, 7, 13) + timedelta(days=i) for i in range(6)]
    orders: list[list[Item]] = [[p, e], [e, p]]
    for order in orders:
        decisions = run(order, *days)
        if matches:
            assert kinds(decisions) == [K.MATCHED_BY_VA_AMOUNT_DATE]
        else:
            assert sorted(kinds(decisions)) == sorted([K.NOTIFIED_NOT_ON_STATEMENT, K.ON_STATEMENT_NOT_NOTIFIED])


def test_value_date_is_used_before_the_booking_date() -> None:
    p = pay("PRQ-1")  # WIB 15 Jul
    e = entry("B1", booked=date(2025, 7, 18), value=date(2025, 7, 16), customer_ref=CUSTOMER)
    decisions = run([p, e], D, date(2025, 7, 18))
    assert kinds(decisions) == [K.MATCHED_BY_VA_AMOUNT_DATE]


# --- the two unmatched kinds ----------------------------------------------------------------------------


def test_on_statement_not_notified_once_its_day_closes() -> None:
    e = entry("MDR-9", "250000.00")
    ledger, decisions = feed([e])
    assert decisions == []
    ledger, other_day = close(ledger, D - timedelta(days=1))
    assert other_day == []
    _, decisions = close(ledger, D)
    [d] = decisions
    assert d.kind is K.ON_STATEMENT_NOT_NOTIFIED
    assert (d.entry_id, d.payment_event_id, d.participant_id) == (e.entry_id, None, None)
    assert (d.business_date, d.statement_amount, d.amount_idr) == (D, Decimal("250000.00"), 250_000)
    assert (d.ageing_days, d.ageing_bucket) == (1, AgeingBucket.D0_1)  # closed at 01:00 WIB the next day
    assert d.decision_id == event_uuid("statement-match", "ON_STATEMENT_NOT_NOTIFIED", BANK, "-", e.entry_id)


def test_notified_not_on_statement_once_its_wib_day_closes() -> None:
    p = pay("PRQ-1", 105_000, at=datetime(2025, 7, 15, 17, 30, tzinfo=UTC))  # 00:30 WIB on 16 Jul
    ledger, _ = feed([p])
    ledger, decisions = close(ledger, D)
    assert decisions == []  # its WIB date is the 16th
    ledger, decisions = close(ledger, D + timedelta(days=1), now=datetime(2025, 7, 19, 1, 0, tzinfo=UTC))
    [d] = decisions
    assert d.kind is K.NOTIFIED_NOT_ON_STATEMENT
    assert (d.payment_event_id, d.business_date, d.amount_idr) == (p.event_id, date(2025, 7, 16), 105_000)
    assert (d.ageing_days, d.ageing_bucket) == (3, AgeingBucket.D2_3)
    assert close(ledger, D + timedelta(days=1))[1] == []  # closing twice decides nothing new


def test_bank_fees_and_credit_reversals_cause_no_decision() -> None:
    fee = entry("MDR-FEE", "2500.00", direction=EntryDirection.DEBIT, narrative="BIAYA ADMIN")
    # MT940 RD: a reversal of a debit, booked as a credit; it is not a collection
    rd = entry("BNI-RD", "2500.00", status=EntryDetailStatus.REVERSAL, line_no=2)
    assert run([fee, rd]) == []


# --- late facts -------------------------------------------------------------------------------------------


def test_late_notification_resolves_the_statement_break() -> None:
    e = entry("PRQ-1")
    ledger, _ = feed([e])
    ledger, [osnn] = close(ledger, D)
    late = pay("PRQ-1", at=datetime(2025, 7, 15, 10, 0, tzinfo=UTC))
    step = apply_payment(ledger, late, now=datetime(2025, 7, 17, 3, 0, tzinfo=UTC))
    [match] = step.decisions
    assert match.kind is K.MATCHED_BY_REF and match.resolves == (osnn.decision_id,)
    assert effective([osnn, match]) == [match]
    assert step.ledger.open_entries == {}


def test_payment_after_its_day_closed_is_decided_on_arrival() -> None:
    ledger, _ = close(BankLedger.empty(BANK), D)
    step = apply_payment(ledger, pay("PRQ-1"), now=datetime(2025, 7, 20, 3, 0, tzinfo=UTC))
    [d] = step.decisions
    assert d.kind is K.NOTIFIED_NOT_ON_STATEMENT and (d.ageing_days, d.ageing_bucket) == (5, AgeingBucket.D4_7)
    # the entry turns up on the next day's statement with the VA only: it waits for its own day to close
    step2 = apply_entry(step.ledger, entry("MDR-2", booked=D + timedelta(days=1), customer_ref=CUSTOMER))
    assert step2.decisions == ()
    _, [match] = close(step2.ledger, D + timedelta(days=1))
    assert match.kind is K.MATCHED_BY_VA_AMOUNT_DATE and match.resolves == (d.decision_id,)


def test_entry_for_a_closed_day_is_decided_on_arrival() -> None:
    p = pay("PRQ-1")
    ledger, _ = feed([p])
    ledger, [nnos] = close(ledger, D)
    step = apply_entry(ledger, entry("B1", customer_ref=CUSTOMER))  # booked on the closed 15th
    [match] = step.decisions
    assert match.kind is K.MATCHED_BY_VA_AMOUNT_DATE and match.resolves == (nnos.decision_id,)
    orphan = apply_entry(step.ledger, entry("B2", "1000.00"))
    assert kinds(orphan.decisions) == [K.ON_STATEMENT_NOT_NOTIFIED]


# --- REVERSAL -------------------------------------------------------------------------------------------


def test_error_correction_naming_the_credit_reverses_the_payment_in_any_order() -> None:
    # SNAP statement: the ERROR CORRECTION debit names the credit's transactionId in its remark
    p = pay("PRQ-20250715-0101")
    credit = entry("TRX2507150000101", customer_ref="PRQ-20250715-0101", source=StatementSource.SNAP_STATEMENT)
    debit = entry(
        "TRX2507150000103",
        booked=date(2025, 7, 16),
        direction=EntryDirection.DEBIT,
        status=EntryDetailStatus.ERROR_CORRECTION,
        narrative="ERROR CORRECTION TRX2507150000101",
        source=StatementSource.SNAP_STATEMENT,
        line_no=3,
    )
    results = set()
    items: list[Item] = [p, credit, debit]
    for order in itertools.permutations(items):
        decisions = run(list(order), D, date(2025, 7, 16))
        assert kinds(decisions) == [K.MATCHED_BY_REF, K.REVERSAL], order
        results.add(tuple(d.decision_id for d in decisions))
        rev = decisions[1]
        assert (rev.payment_event_id, rev.entry_id, rev.business_date) == (
            p.event_id,
            debit.entry_id,
            date(2025, 7, 16),
        )
        assert (rev.detail, rev.amount_idr, rev.difference) == (Detail.REVERSED_BY_ENTRY_REF, 370_000, None)
    assert len(results) == 1


def test_mt940_reversal_repeating_the_customer_reference_and_amount() -> None:
    p = pay("PRQ-1")
    credit = entry("BNI2507150001", customer_ref="VA8812300001", e2e="PRQ-1", source=StatementSource.MT940)
    rc = entry(
        "BNI2507150004",
        direction=EntryDirection.DEBIT,
        status=EntryDetailStatus.REVERSAL,
        customer_ref="VA8812300001",
        source=StatementSource.MT940,
        line_no=4,
    )
    smaller = rc.model_copy(update={"entry_id": "other", "amount": Decimal("1.00"), "bank_ref": "BNI2507150005"})
    decisions = run([p, credit, smaller, rc])
    assert kinds(decisions) == [K.MATCHED_BY_REF, K.REVERSAL]
    assert decisions[1].entry_id == rc.entry_id and decisions[1].detail == Detail.REVERSED_BY_CUSTOMER_REF


def test_debit_naming_the_payment_reverses_a_payment_not_on_any_statement() -> None:
    p = pay("PRQ-1")
    debit = entry("RV-1", "100000.00", direction=EntryDirection.DEBIT, e2e="PRQ-1")
    orders: list[list[Item]] = [[p, debit], [debit, p]]
    for order in orders:
        decisions = run(order)
        assert sorted(kinds(decisions)) == sorted([K.REVERSAL, K.NOTIFIED_NOT_ON_STATEMENT])
        [rev] = [d for d in decisions if d.kind is K.REVERSAL]
        # partial: the difference is recorded and the rupiah value is the debit's
        assert (rev.detail, rev.difference, rev.amount_idr) == (Detail.REVERSED_BY_REF, Decimal("-270000.00"), 100_000)


def test_va_and_amount_reverse_once() -> None:
    p = pay("PRQ-1")
    credit = entry("CIMB0715000001", e2e="PRQ-1", source=StatementSource.CSV)
    first = entry(
        "CIMB0715000003",
        direction=EntryDirection.DEBIT,
        status=EntryDetailStatus.ERROR_CORRECTION,
        customer_ref="88001" + CUSTOMER,
        source=StatementSource.CSV,
        line_no=3,
    )
    again = first.model_copy(update={"entry_id": "second-correction", "bank_ref": "CIMB0715000009"})
    ledger, decisions = feed([p, credit, first, again])
    assert kinds(decisions) == [K.MATCHED_BY_REF, K.REVERSAL]
    assert decisions[1].detail == Detail.REVERSED_BY_VA_AMOUNT
    assert list(ledger.debits) == ["second-correction"]  # waits: nothing else to take back


# --- duplicates ----------------------------------------------------------------------------------------


def test_same_notification_again_is_a_duplicate() -> None:
    p = pay("PRQ-1")
    ledger, _ = feed([p])
    step = apply_payment(ledger, p)
    assert step == Step(ledger, (), duplicate=True)
    after_close, [nnos] = close(ledger, D)
    again = apply_payment(after_close, p)
    assert again.duplicate and again.decisions == () and nnos.kind is K.NOTIFIED_NOT_ON_STATEMENT


def test_duplicate_statement_upload_decides_nothing_new() -> None:
    statement = [
        entry("PRQ-1", line_no=1),
        entry("MDR-2", "494500.00", customer_ref=CUSTOMER, line_no=2),
        entry("MDR-3", "2500.00", direction=EntryDirection.DEBIT, line_no=3),
    ]
    ledger, _ = feed([pay("PRQ-1"), pay("PRQ-2", 494_500, customer=CUSTOMER)])
    ledger, first = feed(statement, ledger)
    ledger, closing = close(ledger, D)
    assert kinds(first + closing) == [K.MATCHED_BY_REF, K.MATCHED_BY_VA_AMOUNT_DATE]
    for e in statement:
        step = apply_entry(ledger, e)
        assert step.duplicate and step.decisions == () and step.ledger is ledger


def test_same_transaction_in_another_format_is_a_duplicate() -> None:
    intraday = entry("MDR250715000101", source=StatementSource.CAMT054)
    day_end = entry("MDR250715000101", source=StatementSource.MT940, line_no=7)
    assert intraday.entry_id != day_end.entry_id
    ledger, _ = feed([intraday])
    assert apply_entry(ledger, day_end).duplicate
    other = entry("MDR250715000101", "1.00", source=StatementSource.MT940)
    assert not apply_entry(ledger, other).duplicate


# --- foreign currency ----------------------------------------------------------------------------------


def myr(request_id: str, value: str = "107.25", rate: str = "3450.123456") -> Payment:
    amount_idr = to_idr(Decimal(value), Decimal(rate))
    return pay(request_id, amount_idr, currency="MYR", original=value, fx=rate, bank="MAYBANK_MY", psid="   88003")


def test_myr_pair_compares_in_ringgit() -> None:
    p = myr("MBB-1")
    assert p.amount_idr == 370_026  # 107.25 * 3450.123456 = 370,025.79 rounded half-up
    ok = entry("MBB-1", "107.25", currency="MYR", bank="MAYBANK_MY")
    [d] = run([ok, p], bank="MAYBANK_MY")
    assert (d.kind, d.statement_currency, d.notified_currency, d.amount_idr) == (
        K.MATCHED_BY_REF,
        "MYR",
        "MYR",
        370_026,
    )
    short = entry("MBB-1", "107.20", currency="MYR", bank="MAYBANK_MY")
    [m] = run([p, short], bank="MAYBANK_MY")
    assert (m.kind, m.difference, m.statement_currency) == (K.AMOUNT_MISMATCH, Decimal("-0.05"), "MYR")


def test_myr_payment_credited_to_an_idr_account_compares_in_rupiah() -> None:
    p = myr("MBB-1")
    assert kinds(run([p, entry("MBB-1", "370026.00", bank="MAYBANK_MY")], bank="MAYBANK_MY")) == [K.MATCHED_BY_REF]
    [m] = run([p, entry("MBB-1", "370000.00", bank="MAYBANK_MY")], bank="MAYBANK_MY")
    assert (m.kind, m.difference, m.statement_currency, m.notified_currency) == (
        K.AMOUNT_MISMATCH,
        Decimal("-26.00"),
        "IDR",
        "MYR",
    )
    va = entry("B1", "107.25", currency="MYR", customer_ref="88003" + CUSTOMER, bank="MAYBANK_MY")
    assert kinds(run([p, va], bank="MAYBANK_MY")) == [K.MATCHED_BY_VA_AMOUNT_DATE]


def test_a_third_currency_is_a_currency_mismatch() -> None:
    p = myr("MBB-1")
    [d] = run([p, entry("MBB-1", "107.25", currency="SGD", bank="MAYBANK_MY")], bank="MAYBANK_MY")
    assert (d.kind, d.detail, d.difference) == (K.AMOUNT_MISMATCH, Detail.CURRENCY_DIFFERS, None)
    orphan = entry("B9", "50.00", currency="MYR", bank="MAYBANK_MY")
    [o] = run([orphan], bank="MAYBANK_MY")
    assert (o.kind, o.amount_idr) == (K.ON_STATEMENT_NOT_NOTIFIED, None)  # no rate for an unexplained MYR entry


# --- ledger mechanics -----------------------------------------------------------------------------------


def test_ledger_round_trips_through_json_and_is_never_mutated() -> None:
    va_entry = entry("B1", customer_ref=CUSTOMER)
    items: list[Item] = [pay("PRQ-1"), va_entry, pay("PRQ-2", 1000)]
    ledger, _ = feed(items)
    snapshot = json.dumps(ledger.to_json(), sort_keys=True)
    restored = BankLedger.from_json(json.loads(snapshot))
    assert restored == ledger
    assert "ref_keys" not in snapshot and "digit_runs" not in snapshot  # derived again on load
    a = close_day(ledger, BANK, D, CLOSE_AT)
    b = close_day(restored, BANK, D, CLOSE_AT)
    assert a.decisions == b.decisions and a.ledger == b.ledger
    assert json.dumps(ledger.to_json(), sort_keys=True) == snapshot  # the step left its input alone
    assert kinds(a.decisions) == [K.MATCHED_BY_VA_AMOUNT_DATE, K.NOTIFIED_NOT_ON_STATEMENT]
    assert a.decisions[0].entry_id == va_entry.entry_id


def test_records_of_another_bank_are_refused() -> None:
    ledger = BankLedger.empty(BANK)
    with pytest.raises(ValueError, match="another bank"):
        apply_payment(ledger, pay("PRQ-1", bank="BNI"))
    with pytest.raises(ValueError, match="another bank"):
        apply_entry(ledger, entry("B1", bank="BNI"))
    with pytest.raises(ValueError, match="another bank"):
        close_day(ledger, "BNI", D, CLOSE_AT)


def test_naive_now_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        close_day(BankLedger.empty(BANK), BANK, D, datetime(2025, 7, 16))


@pytest.mark.parametrize(
    ("days", "bucket"),
    [
        (0, AgeingBucket.D0_1),
        (1, AgeingBucket.D0_1),
        (2, AgeingBucket.D2_3),
        (3, AgeingBucket.D2_3),
        (4, AgeingBucket.D4_7),
        (7, AgeingBucket.D4_7),
        (8, AgeingBucket.OVER_7),
        (400, AgeingBucket.OVER_7),
    ],
)
def test_ageing_buckets(days: int, bucket: AgeingBucket) -> None:
    assert ageing_bucket(days) is bucket


def test_ageing_counts_wib_days() -> None:
    with pytest.raises(ValueError):
        ageing_bucket(-1)
    assert ageing_days(D, datetime(2025, 7, 15, 16, 59, 59, tzinfo=UTC)) == 0  # 23:59:59 WIB
    assert ageing_days(D, datetime(2025, 7, 15, 17, 0, 0, tzinfo=UTC)) == 1  # 00:00 WIB next day
    assert ageing_days(D, datetime(2025, 7, 1, tzinfo=UTC)) == 0  # never negative
    d = run([pay("PRQ-1")])[0]
    assert d.age(datetime(2025, 7, 23, 17, 0, tzinfo=UTC)) == 9


def test_due_closures_after_the_grace() -> None:
    ledger, _ = feed([pay("PRQ-1"), entry("B2", booked=D + timedelta(days=1))])
    end_of_15th = datetime(2025, 7, 15, 17, 0, tzinfo=UTC)
    grace = timedelta(hours=6)
    assert due_closures(ledger, end_of_15th + grace - timedelta(seconds=1), grace) == ()
    assert due_closures(ledger, end_of_15th + grace, grace) == (D,)
    assert due_closures(ledger, end_of_15th + timedelta(days=1) + grace, grace) == (D, D + timedelta(days=1))
    closed, _ = close(ledger, D)
    assert due_closures(closed, end_of_15th + timedelta(days=1) + grace, grace) == (D + timedelta(days=1),)


def test_prune_forgets_closed_days_only() -> None:
    old_open = pay("PRQ-OLD", at=datetime(2025, 7, 1, 3, 0, tzinfo=UTC))
    ledger, _ = feed([pay("PRQ-1"), entry("PRQ-1"), entry("B2", "5.00", line_no=2), old_open])
    ledger, _ = close(ledger, D)
    pruned = prune(ledger, D + timedelta(days=1))
    assert pruned.settled == {} and pruned.open_entries == {} and pruned.closed_days == ()
    assert list(pruned.open_payments) == [old_open.event_id]  # its day never closed: still to be decided
    assert set(pruned.seen_events) == {old_open.event_id}
    assert prune(ledger, D) == ledger  # nothing before the 15th is closed


# --- properties -----------------------------------------------------------------------------------------

FATES = ("ref", "ref_other_amount", "va", "va_too_far", "none")
DAYS = [date(2025, 7, 14) + timedelta(days=i) for i in range(4)]  # the 14th .. 17th


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[list[Payment], list[StatementEntry]]:
    count = draw(st.integers(min_value=0, max_value=7))
    payments: list[Payment] = []
    entries: list[StatementEntry] = []
    for i in range(count):
        customer = f"{i + 1:018d}"
        day = draw(st.integers(min_value=1, max_value=2))  # 15th or 16th
        minute = draw(st.integers(min_value=0, max_value=24 * 60 - 1))
        at = datetime(2025, 7, 13, 17, 0, tzinfo=UTC) + timedelta(days=day, minutes=minute)  # WIB midnight + m
        if draw(st.booleans()):
            cents = draw(st.integers(min_value=100, max_value=99_999))
            value = f"{cents // 100}.{cents % 100:02d}"
            p = pay(
                f"PRQ-{i}",
                to_idr(Decimal(value), Decimal("3450.5")),
                at=at,
                customer=customer,
                currency="MYR",
                original=value,
                fx="3450.5",
            )
        else:
            p = pay(f"PRQ-{i}", draw(st.integers(min_value=1, max_value=10**9)), at=at, customer=customer)
        payments.append(p)
        fate = draw(st.sampled_from(FATES))
        pday = DAYS[day]
        amount = format(p.original_amount, "f")
        if fate == "ref":
            entries.append(entry(f"PRQ-{i}", amount, booked=pday, currency=p.original_currency, line_no=i))
        elif fate == "ref_other_amount":
            other = format(p.original_amount + Decimal("0.01"), "f")
            entries.append(entry(f"BR-{i}", other, booked=pday, e2e=f"prq-{i}", currency=p.original_currency))
        elif fate in ("va", "va_too_far"):
            shift = draw(st.sampled_from([-1, 0, 1])) if fate == "va" else 2
            booked = pday + timedelta(days=shift)
            entries.append(
                entry(f"BR-{i}", amount, booked=booked, customer_ref=PSID + customer, currency=p.original_currency)
            )
    for j in range(draw(st.integers(min_value=0, max_value=3))):
        booked = draw(st.sampled_from(DAYS))
        entries.append(entry(f"NOISE-{j}", f"{draw(st.integers(min_value=1, max_value=10**6))}.00", booked=booked))
    for j in range(draw(st.integers(min_value=0, max_value=2))):
        entries.append(entry(f"FEE-{j}", "2500.00", direction=EntryDirection.DEBIT, booked=draw(st.sampled_from(DAYS))))
    return payments, entries


PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
RECONCILED_KINDS = MATCHES | {K.AMOUNT_MISMATCH, K.NOTIFIED_NOT_ON_STATEMENT, K.ON_STATEMENT_NOT_NOTIFIED}
ALL_DAYS = [DAYS[0] - timedelta(days=1), *DAYS, DAYS[-1] + timedelta(days=1)]


def _sums(pairs: Iterable[tuple[str, Decimal]]) -> dict[str, Decimal]:
    out: dict[str, Decimal] = defaultdict(Decimal)
    for currency, amount in pairs:
        out[currency] += amount
    return {k: v for k, v in out.items() if v}


def assert_each_input_decided_once(
    payments: list[Payment], entries: list[StatementEntry], decisions: list[Decision]
) -> None:
    reconciled = [d for d in effective(decisions) if d.kind in RECONCILED_KINDS]
    credits = [e for e in entries if e.direction is EntryDirection.CREDIT]
    assert Counter(d.payment_event_id for d in reconciled if d.payment_event_id) == Counter(
        p.event_id for p in payments
    )
    assert Counter(d.entry_id for d in reconciled if d.entry_id) == Counter(e.entry_id for e in credits)
    # the daily reports add up to the inputs, per original currency and in rupiah
    reports = [build_report(decisions, BANK, day) for day in ALL_DAYS]
    totals = [line for r in reports for line in r.currencies if line.category == TOTAL]
    assert _sums((t.currency, t.notified_amount) for t in totals) == _sums(
        (p.original_currency, p.original_amount) for p in payments
    )
    assert _sums((t.currency, t.statement_amount) for t in totals) == _sums((e.currency, e.amount) for e in credits)
    assert sum(t.notified_count for t in totals) == len(payments)
    assert sum(t.statement_count for t in totals) == len(credits)
    idr = sum(r.category(TOTAL).amount_idr for r in reports)
    orphan_idr = sum(d.amount_idr or 0 for d in reconciled if d.kind is K.ON_STATEMENT_NOT_NOTIFIED)
    assert idr == sum(p.amount_idr for p in payments) + orphan_idr


@PROPERTY
@given(scenarios(), st.randoms(use_true_random=False))
def test_any_interleaving_decides_every_input_once_and_the_same_way(
    scenario: tuple[list[Payment], list[StatementEntry]], rnd: random.Random
) -> None:
    payments, entries = scenario
    items: list[Item] = [*payments, *entries]
    canonical = run(items, *ALL_DAYS)
    shuffled = list(items)
    rnd.shuffle(shuffled)
    decisions = run(shuffled, *ALL_DAYS)
    assert_each_input_decided_once(payments, entries, decisions)
    assert {d.decision_id for d in decisions} == {d.decision_id for d in canonical}
    assert all(d.resolves == () for d in decisions)  # nothing arrived late


@PROPERTY
@given(scenarios(), st.randoms(use_true_random=False), st.lists(st.sampled_from(ALL_DAYS), max_size=6))
def test_closing_days_early_still_decides_every_input_once(
    scenario: tuple[list[Payment], list[StatementEntry]], rnd: random.Random, early: list[date]
) -> None:
    payments, entries = scenario
    events: list[Item | date] = [*payments, *entries, *early]
    rnd.shuffle(events)
    ledger = BankLedger.empty(BANK)
    decisions: list[Decision] = []
    for event in [*events, *ALL_DAYS]:
        if isinstance(event, date):
            step = close_day(ledger, BANK, event, CLOSE_AT)
        elif isinstance(event, Payment):
            step = apply_payment(ledger, event)
        else:
            step = apply_entry(ledger, event)
        for d in step.decisions:
            emitted = {x.decision_id: x for x in decisions}
            assert all(
                r in emitted and emitted[r].kind in {K.NOTIFIED_NOT_ON_STATEMENT, K.ON_STATEMENT_NOT_NOTIFIED}
                for r in d.resolves
            )
        decisions.extend(step.decisions)
        ledger = step.ledger
    assert_each_input_decided_once(payments, entries, decisions)
    assert all(p.break_id for p in ledger.open_payments.values())
    assert all(e.break_id for e in ledger.open_entries.values())


def test_a_step_does_not_copy_what_the_ledger_holds() -> None:
    # Settled payments and seen ids are kept for 8 days; a step that copied them cost O(items held) per input
    # (1.4 ms per pair at 20,000 pairs in one bank, growing linearly). A step's peak allocation must not depend
    # on that size.
    import tracemalloc

    ledger, _ = feed(
        item
        for i in range(4_000)
        for item in (pay(f"BULK{i:06d}", customer=f"{i:018d}"), entry(f"BULK{i:06d}", line_no=i + 1))
    )
    assert len(ledger.settled) == 4_000 and len(ledger.seen_entries) >= 4_000
    payment, credit = pay("ONEMORE", customer="9" * 18), entry("ONEMORE", line_no=99_999)
    tracemalloc.start()
    try:
        step = apply_payment(ledger, payment)
        step = apply_entry(step.ledger, credit)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert kinds(step.decisions) == [K.MATCHED_BY_REF]
    assert peak < 100_000, peak  # copying the collections alone took more than 400 KB


def test_a_settled_pair_is_held_in_little_memory() -> None:
    # The ledger keeps every settled pair for 8 days, so its size per pair is the stage's memory per payment.
    # 4.8 KB per pair when each item had its own set of field names (728 bytes for 13), each derived key set
    # (empty or of one key) 216 bytes and a settlement the whole credit entry with its key sets; 1.6 KB now.
    import gc
    import tracemalloc

    items = [
        item
        for i in range(2_000)
        for item in (
            pay(f"MEM{i:06d}", customer=f"{i:018d}"),
            entry(f"MEM{i:06d}", line_no=i + 1, narrative=f"PMI {i:018d} IURAN"),
        )
    ]
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        ledger = feed(items)[0]  # the decisions are dropped: only the ledger is measured
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(ledger.settled) == 2_000
    assert held / 2_000 < 2_200, held / 2_000


def test_items_of_one_shape_share_their_field_name_set() -> None:
    ledger, _ = feed([pay("SHARE1", customer="1" * 18), pay("SHARE2", customer="2" * 18)])
    first, second = ledger.open_payments.values()
    assert first.model_fields_set is second.model_fields_set
    broken = first.model_copy(update={"break_id": "some-decision"})
    # the copy's names are its own; the shared set the others hold is unchanged
    assert "break_id" in broken.model_fields_set and "break_id" not in second.model_fields_set
    assert broken.model_dump(exclude_unset=True)["break_id"] == "some-decision"
    assert "break_id" not in second.model_dump(exclude_unset=True)


def test_a_settlement_stored_with_the_whole_entry_still_loads() -> None:
    # Settlements stored before SettledCredit hold the whole credit entry; a rebuild must read them.
    credit = entry("OLDLAYOUT", narrative="PMI 123456789012345678 IURAN", customer_ref="CUST-9")
    ledger, decisions = feed([pay("OLDLAYOUT"), credit])
    assert kinds(decisions) == [K.MATCHED_BY_REF]
    stored = ledger.to_json()
    (event_id,) = stored["settled"]
    stored["settled"][event_id]["entry"] = BookedEntry.of(credit).model_dump(mode="json")
    assert BankLedger.from_json(stored) == ledger
    # and the debit that names the credit's customer reference still reverses it
    debit = entry(None, direction=EntryDirection.DEBIT, customer_ref="CUST-9", line_no=2)
    step = apply_entry(BankLedger.from_json(stored), debit)
    assert [(d.kind, d.detail) for d in step.decisions] == [(K.REVERSAL, Detail.REVERSED_BY_CUSTOMER_REF.value)]


def test_a_reference_match_looks_its_keys_up_instead_of_scanning_the_open_items() -> None:
    # Entries that arrive before their notifications wait as open items; each notification compared its
    # references with every one of them (N² over a statement: matching 4,000 waiting entries took 0.49 ms per
    # payment in-process, 0.17 ms with the index). Counted here as the set comparisons a step makes.
    import sys

    ledger, _ = feed(entry(f"WAIT{i:05d}", line_no=i + 1) for i in range(2_000))
    assert len(ledger.open_entries) == 2_000
    (waiting,) = [e.entry_id for e in ledger.open_entries.values() if e.bank_ref == "WAIT01234"]
    comparisons = 0

    def count(frame: object, event: str, arg: object) -> None:
        nonlocal comparisons
        if event == "c_call" and getattr(arg, "__name__", "") == "isdisjoint":
            comparisons += 1

    sys.setprofile(count)
    try:
        step = apply_payment(ledger, pay("WAIT01234", customer="5" * 18))
    finally:
        sys.setprofile(None)
    assert kinds(step.decisions) == [K.MATCHED_BY_REF] and step.decisions[0].entry_id == waiting
    assert comparisons < 10, comparisons  # one per waiting entry before the index: 2,000


@PROPERTY
@given(scenarios(), st.randoms(use_true_random=False), st.integers(min_value=0, max_value=len(ALL_DAYS)))
def test_prune_that_finds_nothing_old_returns_the_ledger_itself(
    scenario: tuple[list[Payment], list[StatementEntry]], rnd: random.Random, closed: int
) -> None:
    payments, entries = scenario
    items: list[Item] = [*payments, *entries]
    rnd.shuffle(items)
    ledger, _ = close(feed(items)[0], *ALL_DAYS[:closed])
    for keep_from in [*ALL_DAYS, ALL_DAYS[-1] + timedelta(days=1)]:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(statement_match, "_prunable", lambda *_: True)  # the whole walk, every time
            walked = prune(ledger, keep_from)
        pruned = prune(ledger, keep_from)
        assert pruned == walked
        if walked == ledger:  # nothing was old: the stage writes nothing and keeps its layered collections
            assert pruned is ledger
