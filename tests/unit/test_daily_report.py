"""Daily reconciliation report (services/domain/daily_report.py) on hand-computed figures."""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from services.domain.daily_report import (
    CSV_COLUMNS,
    ROW_ORDER,
    TOTAL,
    CategoryLine,
    CurrencyLine,
    DailyReport,
    build_report,
    to_csv,
    to_table,
)
from services.domain.identity import event_uuid
from services.domain.models import EntryDetailStatus, EntryDirection, Payment, StatementEntry, StatementSource
from services.domain.payment import to_idr
from services.domain.statement_match import (
    BankLedger,
    Decision,
    DecisionKind,
    apply_entry,
    apply_payment,
    close_day,
)
from services.domain.statements._common import make_entry

BANK = "MANDIRI"
D = date(2025, 7, 15)
T = datetime(2025, 7, 15, 3, 0, tzinfo=UTC)  # 10:00 WIB
CLOSE_AT = datetime(2025, 7, 15, 18, 0, tzinfo=UTC)
K = DecisionKind


def pay(
    request_id: str, amount_idr: int, *, customer: str, currency: str = "IDR", original: str | None = None
) -> Payment:
    return Payment(
        event_id=event_uuid("payment", BANK, request_id),
        participant_id=customer,
        bank_id=BANK,
        partner_service_id="   88001",
        virtual_account_no="   88001" + customer,
        payment_request_id=request_id,
        external_id="1",
        amount_idr=amount_idr,
        original_amount=Decimal(original) if original else Decimal(amount_idr).quantize(Decimal("0.01")),
        original_currency=currency,
        fx_rate=Decimal("3450.123456") if currency != "IDR" else None,
        trx_time=T,
        trx_utc_offset_minutes=420,
        received_at=T,
    )


def entry(
    bank_ref: str,
    amount: str,
    *,
    currency: str = "IDR",
    direction: EntryDirection = EntryDirection.CREDIT,
    status: EntryDetailStatus = EntryDetailStatus.SUCCESS,
    customer_ref: str | None = None,
    narrative: str | None = None,
    e2e: str | None = None,
) -> StatementEntry:
    return make_entry(
        source=StatementSource.SNAP_STATEMENT,
        bank_id=BANK,
        account="******5678",
        booking_date=D,
        value_date=None,
        direction=direction,
        amount=Decimal(amount),
        currency=currency,
        bank_ref=bank_ref,
        end_to_end_id=e2e,
        customer_ref=customer_ref,
        narrative=narrative,
        detail_status=status,
        statement_ref="STMT-1",
        line_no=1,
        imported_at=CLOSE_AT,
    )


def day_of_decisions() -> list[Decision]:
    """One bank day with every kind; the figures below are worked out by hand from these inputs."""
    items: list[Payment | StatementEntry] = [
        pay("P1", 370_000, customer="100000000000000001"),
        entry("TRX1", "370000.00", e2e="P1"),  # MATCHED_BY_REF
        pay("P2", 494_500, customer="100000000000000002"),
        entry("TRX2", "494500.00", customer_ref="88001100000000000000002"),  # MATCHED_BY_VA_AMOUNT_DATE
        pay("P3", 370_000, customer="100000000000000003"),
        entry("TRX3", "369000.00", e2e="P3"),  # AMOUNT_MISMATCH, -1,000
        pay("P4", 105_000, customer="100000000000000004"),  # NOTIFIED_NOT_ON_STATEMENT
        entry("TRX5", "250000.00"),  # ON_STATEMENT_NOT_NOTIFIED
        pay(
            "P6",
            to_idr(Decimal("107.25"), Decimal("3450.123456")),
            customer="100000000000000006",
            currency="MYR",
            original="107.25",
        ),
        entry("TRX6", "107.25", currency="MYR", e2e="P6"),  # MATCHED_BY_REF in ringgit (Rp370,026)
        entry("TRX7", "50.00", currency="MYR"),  # ON_STATEMENT_NOT_NOTIFIED without a rupiah value
        entry(
            "TRX8",
            "370000.00",
            direction=EntryDirection.DEBIT,
            status=EntryDetailStatus.ERROR_CORRECTION,
            narrative="ERROR CORRECTION TRX1",
        ),  # REVERSAL of P1
        entry("TRX9", "2500.00", direction=EntryDirection.DEBIT, narrative="BIAYA ADMIN"),  # nothing
    ]
    ledger = BankLedger.empty(BANK)
    decisions: list[Decision] = []
    for item in items:
        step = apply_payment(ledger, item) if isinstance(item, Payment) else apply_entry(ledger, item)
        ledger, decisions = step.ledger, decisions + list(step.decisions)
    decisions += close_day(ledger, BANK, D, CLOSE_AT).decisions
    return decisions


def line(category: str, currency: str, n: int, notified: str, s: int, statement: str, diff: str = "0") -> CurrencyLine:
    return CurrencyLine(
        category=category,
        currency=currency,
        notified_count=n,
        notified_amount=Decimal(notified),
        statement_count=s,
        statement_amount=Decimal(statement),
        difference=Decimal(diff),
    )


def test_report_figures_by_hand() -> None:
    decisions = day_of_decisions()
    assert sorted(d.kind.value for d in decisions) == sorted(
        [
            "MATCHED_BY_REF",
            "MATCHED_BY_REF",
            "MATCHED_BY_VA_AMOUNT_DATE",
            "AMOUNT_MISMATCH",
            "NOTIFIED_NOT_ON_STATEMENT",
            "ON_STATEMENT_NOT_NOTIFIED",
            "ON_STATEMENT_NOT_NOTIFIED",
            "REVERSAL",
        ]
    )
    report = build_report(decisions, BANK, D)
    assert report.categories == (
        CategoryLine(category="MATCHED_BY_REF", decisions=2, amount_idr=740_026),  # 370,000 + 370,026
        CategoryLine(category="MATCHED_BY_VA_AMOUNT_DATE", decisions=1, amount_idr=494_500),
        CategoryLine(category="AMOUNT_MISMATCH", decisions=1, amount_idr=370_000),
        CategoryLine(category="NOTIFIED_NOT_ON_STATEMENT", decisions=1, amount_idr=105_000),
        CategoryLine(category="ON_STATEMENT_NOT_NOTIFIED", decisions=2, amount_idr=250_000, idr_unknown=1),
        # 740,026 + 494,500 + 370,000 + 105,000 + 250,000
        CategoryLine(category="TOTAL", decisions=7, amount_idr=1_959_526, idr_unknown=1),
        CategoryLine(category="REVERSAL", decisions=1, amount_idr=370_000),
    )
    assert report.currencies == (
        line("MATCHED_BY_REF", "IDR", 1, "370000.00", 1, "370000.00"),
        line("MATCHED_BY_REF", "MYR", 1, "107.25", 1, "107.25"),
        line("MATCHED_BY_VA_AMOUNT_DATE", "IDR", 1, "494500.00", 1, "494500.00"),
        line("AMOUNT_MISMATCH", "IDR", 1, "370000.00", 1, "369000.00", "-1000.00"),
        line("NOTIFIED_NOT_ON_STATEMENT", "IDR", 1, "105000.00", 0, "0"),
        line("ON_STATEMENT_NOT_NOTIFIED", "IDR", 0, "0", 1, "250000.00"),
        line("ON_STATEMENT_NOT_NOTIFIED", "MYR", 0, "0", 1, "50.00"),
        # notified 370,000 + 494,500 + 370,000 + 105,000; on statement 370,000 + 494,500 + 369,000 + 250,000
        line(TOTAL, "IDR", 4, "1339500.00", 4, "1483500.00", "-1000.00"),
        line(TOTAL, "MYR", 1, "107.25", 2, "157.25"),
        line("REVERSAL", "IDR", 1, "370000.00", 1, "370000.00"),
    )


def test_table_is_fixed_width() -> None:
    text = to_table(build_report(day_of_decisions(), BANK, D))
    assert text == EXPECTED_TABLE
    assert "\t" not in text


EXPECTED_TABLE = """\
RECONCILIATION MANDIRI 2025-07-15 (WIB business date)

CATEGORY                    DECISIONS            AMOUNT IDR   IDR UNKNOWN
MATCHED_BY_REF                      2               740,026             0
MATCHED_BY_VA_AMOUNT_DATE           1               494,500             0
AMOUNT_MISMATCH                     1               370,000             0
NOTIFIED_NOT_ON_STATEMENT           1               105,000             0
ON_STATEMENT_NOT_NOTIFIED           2               250,000             1
TOTAL                               7             1,959,526             1
REVERSAL                            1               370,000             0

CATEGORY                   CCY  NOTIFIED        NOTIFIED AMOUNT  ON STMT       STATEMENT AMOUNT          DIFFERENCE
MATCHED_BY_REF             IDR         1             370,000.00        1             370,000.00                0.00
MATCHED_BY_REF             MYR         1                 107.25        1                 107.25                0.00
MATCHED_BY_VA_AMOUNT_DATE  IDR         1             494,500.00        1             494,500.00                0.00
AMOUNT_MISMATCH            IDR         1             370,000.00        1             369,000.00           -1,000.00
NOTIFIED_NOT_ON_STATEMENT  IDR         1             105,000.00        0                   0.00                0.00
ON_STATEMENT_NOT_NOTIFIED  IDR         0                   0.00        1             250,000.00                0.00
ON_STATEMENT_NOT_NOTIFIED  MYR         0                   0.00        1                  50.00                0.00
TOTAL                      IDR         4           1,339,500.00        4           1,483,500.00           -1,000.00
TOTAL                      MYR         1                 107.25        2                 157.25                0.00
REVERSAL                   IDR         1             370,000.00        1             370,000.00                0.00
"""


def test_csv_has_a_stable_header_and_every_row() -> None:
    text = to_csv(build_report(day_of_decisions(), BANK, D))
    rows = list(csv.reader(io.StringIO(text)))
    assert tuple(rows[0]) == CSV_COLUMNS == (
        "bank_id", "business_date", "section", "category", "currency", "decisions", "amount_idr", "idr_unknown",
        "notified_count", "notified_amount", "statement_count", "statement_amount", "difference",
    )  # fmt: skip
    assert rows[1] == [
        "MANDIRI",
        "2025-07-15",
        "CATEGORY",
        "MATCHED_BY_REF",
        "",
        "2",
        "740026",
        "0",
        "",
        "",
        "",
        "",
        "",
    ]
    assert [r[3] for r in rows[1:8]] == list(ROW_ORDER)
    assert rows[8:] == [
        ["MANDIRI", "2025-07-15", "CURRENCY", cat, cur, "", "", "", n, notified, s, statement, diff]
        for cat, cur, n, notified, s, statement, diff in [
            ("MATCHED_BY_REF", "IDR", "1", "370000.00", "1", "370000.00", "0.00"),
            ("MATCHED_BY_REF", "MYR", "1", "107.25", "1", "107.25", "0.00"),
            ("MATCHED_BY_VA_AMOUNT_DATE", "IDR", "1", "494500.00", "1", "494500.00", "0.00"),
            ("AMOUNT_MISMATCH", "IDR", "1", "370000.00", "1", "369000.00", "-1000.00"),
            ("NOTIFIED_NOT_ON_STATEMENT", "IDR", "1", "105000.00", "0", "0.00", "0.00"),
            ("ON_STATEMENT_NOT_NOTIFIED", "IDR", "0", "0.00", "1", "250000.00", "0.00"),
            ("ON_STATEMENT_NOT_NOTIFIED", "MYR", "0", "0.00", "1", "50.00", "0.00"),
            ("TOTAL", "IDR", "4", "1339500.00", "4", "1483500.00", "-1000.00"),
            ("TOTAL", "MYR", "1", "107.25", "2", "157.25", "0.00"),
            ("REVERSAL", "IDR", "1", "370000.00", "1", "370000.00", "0.00"),
        ]
    ]
    assert text.endswith("\r\n") and text.count("\r\n") == len(rows)


def test_only_the_bank_and_date_asked_for_and_each_decision_once() -> None:
    decisions = day_of_decisions()
    other_day = [d.model_copy(update={"business_date": D + timedelta(days=1), "decision_id": "x"}) for d in decisions]
    other_bank = [d.model_copy(update={"bank_id": "BNI", "decision_id": "y" + d.decision_id}) for d in decisions]
    redelivered = decisions + decisions  # at-least-once: the same decision twice counts once
    assert build_report(redelivered + other_day + other_bank, BANK, D) == build_report(decisions, BANK, D)


def test_a_resolved_break_leaves_the_report() -> None:
    p = pay("P1", 370_000, customer="100000000000000001")
    closing = close_day(apply_payment(BankLedger.empty(BANK), p).ledger, BANK, D, CLOSE_AT)
    [nnos] = closing.decisions
    ledger = closing.ledger
    before = build_report([nnos], BANK, D)
    assert before.category("NOTIFIED_NOT_ON_STATEMENT").decisions == 1
    late = apply_entry(ledger, entry("TRX1", "370000.00", e2e="P1"))
    after = build_report([nnos, *late.decisions], BANK, D)
    assert after.category("NOTIFIED_NOT_ON_STATEMENT").decisions == 0
    assert after.category("MATCHED_BY_REF").decisions == 1 and after.category(TOTAL).amount_idr == 370_000


def test_myr_payment_on_an_idr_account_counts_each_side_in_its_currency() -> None:
    p = pay("P6", 370_026, customer="100000000000000006", currency="MYR", original="107.25")
    ledger = apply_payment(BankLedger.empty(BANK), p).ledger
    decisions = list(apply_entry(ledger, entry("TRX6", "370000.00", e2e="P6")).decisions)
    report = build_report(decisions, BANK, D)
    assert report.currency_line("AMOUNT_MISMATCH", "MYR") == line("AMOUNT_MISMATCH", "MYR", 1, "107.25", 0, "0")
    assert report.currency_line("AMOUNT_MISMATCH", "IDR") == line(
        "AMOUNT_MISMATCH", "IDR", 0, "0", 1, "370000.00", "-26.00"
    )
    assert report.category("AMOUNT_MISMATCH").amount_idr == 370_026


def test_an_empty_day_has_every_category_at_zero() -> None:
    report = build_report([], BANK, D)
    assert report == DailyReport(
        bank_id=BANK, business_date=D, categories=tuple(CategoryLine(category=c) for c in ROW_ORDER), currencies=()
    )
    assert to_table(report).endswith("(no amounts)\n")
    assert to_csv(report).count("\r\n") == 1 + len(ROW_ORDER)
