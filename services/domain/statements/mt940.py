"""SWIFT MT940 customer statement (domain.md 4.7): :20: :25: :28C: :60F/M: (:61: [:86:])* :62F/M: [:64:]."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal

from services.domain.models import EntryDetailStatus, EntryDirection, StatementSource
from services.domain.statements._common import (
    Balances,
    LineRejected,
    ParseResult,
    StatementReason,
    account_ref,
    decode_text,
    make_entry,
    parse_amount,
)

_TAG = re.compile(r":([0-9]{2}[A-Z]?):(.*)")
# value date, [entry date MMDD], mark, [funds code], amount, type code, customer ref [//bank ref]
_LINE61 = re.compile(
    r"(?P<vdate>[0-9]{6})(?P<edate>[0-9]{4})?(?P<mark>RC|RD|C|D)(?P<funds>[A-Z])?"
    r"(?P<amount>[0-9]{1,15},[0-9]{0,2})(?P<ttype>[NSF][A-Z0-9]{3})(?P<rest>.*)"
)
_BALANCE = re.compile(r"(?P<mark>[CD])(?P<date>[0-9]{6})(?P<cur>[A-Z]{3})(?P<amount>[0-9]{1,15},[0-9]{0,2})")
_MARKS = {
    "C": (EntryDirection.CREDIT, EntryDetailStatus.BOOK),
    "D": (EntryDirection.DEBIT, EntryDetailStatus.BOOK),
    # RC = reversal of a credit (booked as a debit), RD = reversal of a debit (booked as a credit)
    "RC": (EntryDirection.DEBIT, EntryDetailStatus.REVERSAL),
    "RD": (EntryDirection.CREDIT, EntryDetailStatus.REVERSAL),
}


@dataclass(frozen=True)
class _Line61:
    value: date
    booking: date
    direction: EntryDirection
    status: EntryDetailStatus
    amount: Decimal
    customer_ref: str | None
    bank_ref: str | None
    supplementary: str | None


def _yymmdd(text: str) -> date:
    try:
        return date(2000 + int(text[0:2]), int(text[2:4]), int(text[4:6]))
    except ValueError:
        raise LineRejected(StatementReason.BAD_DATE, "date must be a real YYMMDD date") from None


def _entry_date(value_date: date, mmdd: str) -> date:
    month, day = int(mmdd[0:2]), int(mmdd[2:4])
    year = value_date.year
    if month == 12 and value_date.month == 1:
        year -= 1
    elif month == 1 and value_date.month == 12:
        year += 1
    try:
        return date(year, month, day)
    except ValueError:
        raise LineRejected(StatementReason.BAD_DATE, "entry date must be a real MMDD date") from None


def _balance(text: str) -> tuple[Decimal, date, str]:
    m = _BALANCE.fullmatch(text.strip())
    if m is None:
        raise LineRejected(StatementReason.BAD_BALANCE, "balance must be mark, YYMMDD, currency, amount")
    amount = parse_amount(m["amount"], comma_decimal=True)
    return (-amount if m["mark"] == "D" else amount), _yymmdd(m["date"]), m["cur"]


@dataclass
class _Field:
    tag: str
    line_no: int
    lines: list[str] = field(default_factory=list)


def _fields(text: str) -> list[_Field]:
    """Tagged fields with their continuation lines; SWIFT block wrappers ({1:..}{4: and -}) are dropped."""
    out: list[_Field] = []
    for no, raw in enumerate(text.splitlines(), start=1):
        line = raw.rstrip()
        if "{4:" in line:
            line = line.split("{4:", 1)[1]
        if not line or line in {"-", "-}"} or line.startswith("{"):
            continue
        m = _TAG.match(line)
        if m is not None:
            out.append(_Field(m[1], no, [m[2]]))
        elif out:
            out[-1].lines.append(line)
        else:
            out.append(_Field("", no, [line]))
    return out


def parse_mt940(text: str | bytes, *, bank_id: str, imported_at: datetime) -> ParseResult:
    """Every :61: line (with its :86:) as a StatementEntry; opening 60F of the first and closing 62F of the
    last statement as balances when the file covers one account."""
    result = ParseResult(StatementSource.MT940)
    decoded = decode_text(text, result)
    if decoded is None:
        return result
    fields = _fields(decoded)
    if not any(f.tag == "61" or f.tag == "20" for f in fields):
        result.error(0, StatementReason.NOT_A_STATEMENT, "no MT940 :20: or :61: field found")
        return result

    account: str | None = None
    accounts: set[str] = set()
    statement_ref: str | None = None
    currency: str | None = None
    opening: tuple[Decimal, date, str] | None = None
    closing: tuple[Decimal, date, str] | None = None
    pending: tuple[_Field, _Line61] | None = None  # a :61: waiting for its :86:

    def flush(narrative: str | None) -> None:
        nonlocal pending
        if pending is None:
            return
        fld, parts = pending
        pending = None
        try:
            if account is None:
                raise LineRejected(StatementReason.MISSING_ACCOUNT, "no :25: account before this line")
            if currency is None:
                raise LineRejected(StatementReason.MISSING_CURRENCY, "no :60F: balance currency before this line")
            result.entries.append(
                make_entry(
                    source=StatementSource.MT940,
                    bank_id=bank_id,
                    account=account,
                    booking_date=parts.booking,
                    value_date=parts.value,
                    direction=parts.direction,
                    amount=parts.amount,
                    currency=currency,
                    bank_ref=parts.bank_ref,
                    end_to_end_id=None,
                    customer_ref=parts.customer_ref,
                    narrative=narrative or parts.supplementary,
                    detail_status=parts.status,
                    statement_ref=statement_ref,
                    line_no=fld.line_no,
                    imported_at=imported_at,
                )
            )
        except LineRejected as exc:
            result.error(fld.line_no, exc.reason, exc.message)

    for fld in fields:
        if fld.tag != "86":
            flush(None)
        try:
            if fld.tag == "20":
                statement_ref = fld.lines[0].strip()[:16] or None
                result.statement_ref = result.statement_ref or statement_ref
            elif fld.tag == "25":
                account = account_ref(fld.lines[0])
                accounts.add(account)
            elif fld.tag in {"60F", "60M"}:
                bal = _balance(fld.lines[0])
                currency = bal[2]
                if fld.tag == "60F" and opening is None:
                    opening = bal
            elif fld.tag in {"62F", "62M"}:
                bal = _balance(fld.lines[0])
                if fld.tag == "62F":
                    closing = bal
            elif fld.tag == "61":
                pending = (fld, _line61(fld))
            elif fld.tag == "86":
                if pending is None:
                    raise LineRejected(StatementReason.ORPHAN_DETAIL, ":86: without a preceding :61:")
                flush(" ".join(part.strip() for part in fld.lines))
            elif fld.tag == "":
                raise LineRejected(StatementReason.BAD_LINE, "text outside a tagged field")
        except LineRejected as exc:
            result.error(fld.line_no, exc.reason, exc.message)
    flush(None)

    anchor = opening or closing
    if len(accounts) == 1 and anchor is not None:
        cur = anchor[2]
        result.balances = Balances(
            currency=cur,
            opening=opening[0] if opening else None,
            closing=closing[0] if closing else None,
            opening_date=opening[1] if opening else None,
            closing_date=closing[1] if closing else None,
        )
    return result


def _line61(fld: _Field) -> _Line61:
    m = _LINE61.fullmatch(fld.lines[0].strip())
    if m is None:
        raise LineRejected(StatementReason.BAD_LINE, ":61: does not match the statement line layout")
    value_date = _yymmdd(m["vdate"])
    booking = _entry_date(value_date, m["edate"]) if m["edate"] else value_date
    direction, status = _MARKS[m["mark"]]
    amount = parse_amount(m["amount"], comma_decimal=True)
    rest = m["rest"]
    customer, _, bank = rest.partition("//")
    customer = customer.strip()[:16]
    bank = bank.strip()[:16]
    return _Line61(
        value=value_date,
        booking=booking,
        direction=direction,
        status=status,
        amount=amount,
        customer_ref=None if customer.upper() in {"", "NONREF"} else customer,
        bank_ref=bank or None,
        supplementary=" ".join(part.strip() for part in fld.lines[1:]) or None,
    )
