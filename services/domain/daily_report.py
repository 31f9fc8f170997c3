"""The daily reconciliation report per bank and WIB business date, built from statement-match decisions.

:func:`build_report` counts the :func:`~services.domain.statement_match.effective` decisions (each once,
resolved breaks left out) of one bank and date. Two views:

* **categories** -- per decision kind: how many decisions and their rupiah value (``amount_idr``: what was
  credited to members, or an IDR entry's amount); ``idr_unknown`` counts foreign-currency entries no
  notification explains, which have no rupiah value.
* **currencies** -- per decision kind and ISO currency, exact Decimal sums of each side: the notified side in
  the payment's original currency, the statement side in the entry's currency, and the differences of
  mismatches and partial reversals (in the statement currency). A MYR payment credited to an IDR account
  adds to the MYR notified line and the IDR statement line.

``TOTAL`` sums the five reconciliation kinds (every notification and every credit entry is in exactly one of
them). ``REVERSAL`` comes after it and outside it: a reversing debit is a second movement of money that
is already counted above.

:func:`to_table` renders fixed-width text, :func:`to_csv` one CSV (header row, stable column order, one
``section`` column telling the two views apart). Both contain only codes, dates and amounts.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from datetime import date
from decimal import Decimal

from pydantic import BaseModel, ConfigDict

from services.domain.statement_match import Decision, DecisionKind, effective

TOTAL = "TOTAL"
RECONCILED = (
    DecisionKind.MATCHED_BY_REF.value,
    DecisionKind.MATCHED_BY_VA_AMOUNT_DATE.value,
    DecisionKind.AMOUNT_MISMATCH.value,
    DecisionKind.NOTIFIED_NOT_ON_STATEMENT.value,
    DecisionKind.ON_STATEMENT_NOT_NOTIFIED.value,
)
ROW_ORDER = (*RECONCILED, TOTAL, DecisionKind.REVERSAL.value)
CSV_COLUMNS = (
    "bank_id",
    "business_date",
    "section",
    "category",
    "currency",
    "decisions",
    "amount_idr",
    "idr_unknown",
    "notified_count",
    "notified_amount",
    "statement_count",
    "statement_amount",
    "difference",
)
_ZERO = Decimal("0.00")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class CategoryLine(_Frozen):
    category: str
    decisions: int = 0
    amount_idr: int = 0
    idr_unknown: int = 0


class CurrencyLine(_Frozen):
    category: str
    currency: str
    notified_count: int = 0
    notified_amount: Decimal = _ZERO
    statement_count: int = 0
    statement_amount: Decimal = _ZERO
    difference: Decimal = _ZERO


class DailyReport(_Frozen):
    bank_id: str
    business_date: date
    categories: tuple[CategoryLine, ...]  # every ROW_ORDER row, zeros included
    currencies: tuple[CurrencyLine, ...]  # only currencies that occur; IDR first, then alphabetical

    def category(self, name: str) -> CategoryLine:
        return next(line for line in self.categories if line.category == name)

    def currency_line(self, category: str, currency: str) -> CurrencyLine | None:
        return next((c for c in self.currencies if c.category == category and c.currency == currency), None)


class _CurrencySums:
    def __init__(self) -> None:
        self.notified_count = 0
        self.notified_amount = _ZERO
        self.statement_count = 0
        self.statement_amount = _ZERO
        self.difference = _ZERO

    def add(self, other: _CurrencySums) -> None:
        self.notified_count += other.notified_count
        self.notified_amount += other.notified_amount
        self.statement_count += other.statement_count
        self.statement_amount += other.statement_amount
        self.difference += other.difference


def _currency_order(currency: str) -> tuple[bool, str]:
    return (currency != "IDR", currency)


def build_report(decisions: Iterable[Decision], bank: str, business_date: date) -> DailyReport:
    """The report of ``bank`` for ``business_date``. Pass every decision you have (any bank, any date):
    a break is left out when any of them resolves it."""
    chosen = [d for d in effective(decisions) if d.bank_id == bank and d.business_date == business_date]
    counts = {name: [0, 0, 0] for name in ROW_ORDER}  # decisions, amount_idr, idr_unknown
    sums: dict[tuple[str, str], _CurrencySums] = {}

    def line(category: str, currency: str) -> _CurrencySums:
        return sums.setdefault((category, currency), _CurrencySums())

    for d in chosen:
        category = d.kind.value
        rows = (category, TOTAL) if category in RECONCILED else (category,)
        for row in rows:
            tally = counts[row]
            tally[0] += 1
            if d.amount_idr is None:
                tally[2] += 1
            else:
                tally[1] += d.amount_idr
        if d.notified_amount is not None and d.notified_currency is not None:
            side = line(category, d.notified_currency)
            side.notified_count += 1
            side.notified_amount += d.notified_amount
        if d.statement_amount is not None and d.statement_currency is not None:
            side = line(category, d.statement_currency)
            side.statement_count += 1
            side.statement_amount += d.statement_amount
            if d.difference is not None:
                side.difference += d.difference

    for (category, currency), value in list(sums.items()):
        if category in RECONCILED:
            line(TOTAL, currency).add(value)

    currencies = sorted({cur for _, cur in sums}, key=_currency_order)
    return DailyReport(
        bank_id=bank,
        business_date=business_date,
        categories=tuple(
            CategoryLine(category=name, decisions=c[0], amount_idr=c[1], idr_unknown=c[2]) for name, c in counts.items()
        ),
        currencies=tuple(
            CurrencyLine(
                category=name,
                currency=cur,
                notified_count=s.notified_count,
                notified_amount=s.notified_amount,
                statement_count=s.statement_count,
                statement_amount=s.statement_amount,
                difference=s.difference,
            )
            for name in ROW_ORDER
            for cur in currencies
            if (s := sums.get((name, cur))) is not None
        ),
    )


_CATEGORY_HEAD = ("CATEGORY", "DECISIONS", "AMOUNT IDR", "IDR UNKNOWN")
_CATEGORY_WIDTHS = (-25, 10, 20, 12)
_CURRENCY_HEAD = ("CATEGORY", "CCY", "NOTIFIED", "NOTIFIED AMOUNT", "ON STMT", "STATEMENT AMOUNT", "DIFFERENCE")
# a sum wider than its column widens that row instead of being cut
_CURRENCY_WIDTHS = (-25, -3, 8, 21, 7, 21, 18)


def _row(cells: Iterable[str], widths: Iterable[int]) -> str:
    # a negative width is left-aligned (text), a positive one right-aligned (numbers)
    return "  ".join(cell.ljust(-w) if w < 0 else cell.rjust(w) for cell, w in zip(cells, widths, strict=True)).rstrip()


def to_table(report: DailyReport) -> str:
    """Fixed-width text: a title, the category view, a blank line, the currency view."""
    out = [f"RECONCILIATION {report.bank_id} {report.business_date.isoformat()} (WIB business date)", ""]
    out.append(_row(_CATEGORY_HEAD, _CATEGORY_WIDTHS))
    for c in report.categories:
        out.append(_row((c.category, str(c.decisions), f"{c.amount_idr:,}", str(c.idr_unknown)), _CATEGORY_WIDTHS))
    out += ["", _row(_CURRENCY_HEAD, _CURRENCY_WIDTHS)]
    for line in report.currencies:
        cells = (
            line.category,
            line.currency,
            str(line.notified_count),
            f"{line.notified_amount:,.2f}",
            str(line.statement_count),
            f"{line.statement_amount:,.2f}",
            f"{line.difference:,.2f}",
        )
        out.append(_row(cells, _CURRENCY_WIDTHS))
    if not report.currencies:
        out.append("(no amounts)")
    return "\n".join(out) + "\n"


def _plain(amount: Decimal) -> str:
    return format(amount.quantize(_ZERO), "f")


def to_csv(report: DailyReport) -> str:
    """CSV with :data:`CSV_COLUMNS`: ``CATEGORY`` rows then ``CURRENCY`` rows; a column that does not
    apply to a section is empty. Amounts are plain decimals with 2 places, rupiah values integers."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    head = (report.bank_id, report.business_date.isoformat())
    for c in report.categories:
        writer.writerow(
            (*head, "CATEGORY", c.category, "", c.decisions, c.amount_idr, c.idr_unknown, "", "", "", "", "")
        )
    for line in report.currencies:
        writer.writerow(
            (
                *head,
                "CURRENCY",
                line.category,
                line.currency,
                "",
                "",
                "",
                line.notified_count,
                _plain(line.notified_amount),
                line.statement_count,
                _plain(line.statement_amount),
                _plain(line.difference),
            )
        )
    return buffer.getvalue()
