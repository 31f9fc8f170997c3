"""Bank CSV/H2H files described by a :class:`CsvProfile` (column names, delimiter, date and number style).

The default profile (``DEFAULT_CSV_PROFILE``) expects this header line, columns in any order::

    account_no,booking_date,value_date,direction,amount,currency,bank_ref,customer_ref,end_to_end_id,narrative,status

``direction`` is CR/DB (also C/D, CREDIT/DEBIT), ``amount`` is unsigned with a dot decimal separator, dates are
``YYYY-MM-DD``, ``status`` is a StatementEntry detail status (SUCCESS, ERROR_CORRECTION, REVERSAL, BOOK, ...).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime

from services.domain.models import EntryDetailStatus, EntryDirection, StatementEntry, StatementSource
from services.domain.statements._common import (
    LineRejected,
    ParseResult,
    StatementReason,
    account_ref,
    check_currency,
    decode_text,
    make_entry,
    parse_amount,
)

LOGICAL_COLUMNS = (
    "account_no",
    "booking_date",
    "value_date",
    "direction",
    "amount",
    "currency",
    "bank_ref",
    "customer_ref",
    "end_to_end_id",
    "narrative",
    "status",
)
REQUIRED_COLUMNS = frozenset({"booking_date", "direction", "amount"})


@dataclass(frozen=True)
class CsvProfile:
    """How one bank writes its CSV: ``columns`` maps a logical column to the header name in the file.

    A logical column absent from ``columns`` is not in the file (``account_no`` then comes from the
    caller, ``currency`` from ``default_currency``).
    """

    name: str
    columns: Mapping[str, str] = field(default_factory=lambda: {c: c for c in LOGICAL_COLUMNS})
    delimiter: str = ","
    date_format: str = "%Y-%m-%d"
    decimal_separator: str = "."
    thousands_separator: str = ""
    credit_values: frozenset[str] = frozenset({"CR", "C", "CREDIT", "K"})
    debit_values: frozenset[str] = frozenset({"DB", "DR", "D", "DEBIT"})
    default_currency: str | None = "IDR"


DEFAULT_CSV_PROFILE = CsvProfile(name="sinergi-default")
_STATUSES = {s.value: s for s in EntryDetailStatus}


def _date(text: str | None, profile: CsvProfile, what: str) -> date | None:
    if not text or not text.strip():
        return None
    try:
        return datetime.strptime(text.strip(), profile.date_format).date()
    except ValueError:
        raise LineRejected(StatementReason.BAD_DATE, f"{what} does not match the profile date format") from None


def parse_csv(
    text: str | bytes,
    *,
    bank_id: str,
    imported_at: datetime,
    profile: CsvProfile = DEFAULT_CSV_PROFILE,
    account_no: str | None = None,
    statement_ref: str | None = None,
) -> ParseResult:
    """One entry per data row; ``line_no`` is the physical 1-based line (the header is line 1)."""
    result = ParseResult(StatementSource.CSV, statement_ref=statement_ref)
    decoded = decode_text(text, result)
    if decoded is None:
        return result
    rows = csv.reader(io.StringIO(decoded, newline=""), delimiter=profile.delimiter, strict=True)
    try:
        header = [h.strip() for h in next(rows)]
    except StopIteration:
        result.error(0, StatementReason.NOT_A_STATEMENT, "CSV file is empty")
        return result
    except csv.Error:
        result.error(1, StatementReason.BAD_HEADER, "header line is not valid CSV")
        return result
    positions = {logical: header.index(name) for logical, name in profile.columns.items() if name in header}
    missing = REQUIRED_COLUMNS - positions.keys()
    if missing or ("account_no" not in positions and not account_no):
        result.error(1, StatementReason.BAD_HEADER, "header lacks a required column of the profile")
        return result
    fallback_account: str | None = None
    if account_no:
        try:
            fallback_account = account_ref(account_no)
        except LineRejected as exc:
            result.error(0, exc.reason, exc.message)
            return result

    line_no = 1
    while True:
        try:
            row = next(rows)
        except StopIteration:
            break
        except csv.Error:
            line_no = rows.line_num
            result.error(line_no, StatementReason.BAD_LINE, "line is not valid CSV")
            continue
        line_no = rows.line_num
        if not any(cell.strip() for cell in row):
            continue
        try:
            result.entries.append(
                _row(row, positions, profile, fallback_account, bank_id, statement_ref, line_no, imported_at)
            )
        except LineRejected as exc:
            result.error(line_no, exc.reason, exc.message)
    return result


def _row(
    row: list[str],
    positions: Mapping[str, int],
    profile: CsvProfile,
    fallback_account: str | None,
    bank_id: str,
    statement_ref: str | None,
    line_no: int,
    imported_at: datetime,
) -> StatementEntry:
    def cell(name: str) -> str | None:
        pos = positions.get(name)
        if pos is None or pos >= len(row):
            return None
        return row[pos].strip() or None

    if any(positions[name] >= len(row) for name in REQUIRED_COLUMNS):
        raise LineRejected(StatementReason.BAD_LINE, "line has fewer columns than the header")
    account = account_ref(cell("account_no")) if cell("account_no") else fallback_account
    if account is None:
        raise LineRejected(StatementReason.MISSING_ACCOUNT, "account_no is empty")
    booking = _date(cell("booking_date"), profile, "booking_date")
    if booking is None:
        raise LineRejected(StatementReason.MISSING_FIELD, "booking_date is empty")
    raw_dir = (cell("direction") or "").upper()
    if raw_dir in profile.credit_values:
        direction = EntryDirection.CREDIT
    elif raw_dir in profile.debit_values:
        direction = EntryDirection.DEBIT
    else:
        raise LineRejected(StatementReason.BAD_DIRECTION, "direction is not a credit or debit value of the profile")
    raw_amount = cell("amount")
    if raw_amount is None:
        raise LineRejected(StatementReason.MISSING_FIELD, "amount is empty")
    if profile.thousands_separator:
        raw_amount = raw_amount.replace(profile.thousands_separator, "")
    amount = parse_amount(raw_amount.replace(profile.decimal_separator, "."))
    currency = check_currency(cell("currency") or profile.default_currency)
    raw_status = " ".join((cell("status") or "").upper().split())  # "ERROR CORRECTION" -> ERROR_CORRECTION
    return make_entry(
        source=StatementSource.CSV,
        bank_id=bank_id,
        account=account,
        booking_date=booking,
        value_date=_date(cell("value_date"), profile, "value_date"),
        direction=direction,
        amount=amount,
        currency=currency,
        bank_ref=cell("bank_ref"),
        end_to_end_id=cell("end_to_end_id"),
        customer_ref=cell("customer_ref"),
        narrative=cell("narrative"),
        detail_status=_STATUSES.get(raw_status.replace(" ", "_"), EntryDetailStatus.UNKNOWN),
        statement_ref=statement_ref,
        line_no=line_no,
        imported_at=imported_at,
    )
