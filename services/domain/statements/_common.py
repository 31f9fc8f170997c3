"""Shared pieces of the statement parsers: results, reason codes, amounts, dates, ids, masking, XML guard.

Every parser returns a :class:`ParseResult`; a bad line becomes a :class:`LineError` with a stable reason
code and a message built from constants only (never an account number, name or other value from the file),
and parsing goes on with the next line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from enum import StrEnum

from services.domain.identity import event_uuid, mask_tail
from services.domain.models import EntryDetailStatus, EntryDirection, StatementEntry, StatementSource

MAX_STATEMENT_BYTES = 32 * 1024 * 1024
NARRATIVE_MAX = 256
REF_MAX = 140
WIB = timezone(timedelta(hours=7))
CENT = Decimal("0.01")
# decimal(18,2): at most 16 integer digits
MAX_AMOUNT = Decimal("9999999999999999.99")

_LONG_DIGITS = re.compile(r"(?<![0-9A-Za-z])[0-9]{10,}(?![0-9A-Za-z])")
# Lone surrogates too: a JSON "\ud800" escape decodes to one, and it cannot be written as UTF-8 (entry id, Kafka).
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")
_CURRENCY = re.compile(r"[A-Z]{3}")
_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_UNSAFE_XML = re.compile(r"<!\s*(DOCTYPE|ENTITY)", re.IGNORECASE)


class StatementReason(StrEnum):
    """Stable reason codes of statement line errors. Add codes; never rename one."""

    INPUT_TOO_LARGE = "INPUT_TOO_LARGE"
    BAD_ENCODING = "BAD_ENCODING"
    UNKNOWN_FORMAT = "UNKNOWN_FORMAT"
    UNSAFE_XML = "UNSAFE_XML"
    MALFORMED_XML = "MALFORMED_XML"
    MALFORMED_JSON = "MALFORMED_JSON"
    NOT_A_STATEMENT = "NOT_A_STATEMENT"
    BAD_HEADER = "BAD_HEADER"
    BAD_LINE = "BAD_LINE"
    MISSING_FIELD = "MISSING_FIELD"
    MISSING_ACCOUNT = "MISSING_ACCOUNT"
    MISSING_CURRENCY = "MISSING_CURRENCY"
    BAD_AMOUNT = "BAD_AMOUNT"
    BAD_CURRENCY = "BAD_CURRENCY"
    BAD_DATE = "BAD_DATE"
    BAD_DIRECTION = "BAD_DIRECTION"
    BAD_REFERENCE = "BAD_REFERENCE"
    BAD_BALANCE = "BAD_BALANCE"
    BAD_TOTALS = "BAD_TOTALS"
    ORPHAN_DETAIL = "ORPHAN_DETAIL"


class Discrepancy(StrEnum):
    """Codes returned by :func:`services.domain.statements.check_totals`."""

    NO_DECLARED_TOTALS = "NO_DECLARED_TOTALS"
    CREDIT_COUNT_MISMATCH = "CREDIT_COUNT_MISMATCH"
    CREDIT_TOTAL_MISMATCH = "CREDIT_TOTAL_MISMATCH"
    DEBIT_COUNT_MISMATCH = "DEBIT_COUNT_MISMATCH"
    DEBIT_TOTAL_MISMATCH = "DEBIT_TOTAL_MISMATCH"
    BALANCE_MISMATCH = "BALANCE_MISMATCH"
    CURRENCY_MISMATCH = "CURRENCY_MISMATCH"
    LINES_REJECTED = "LINES_REJECTED"
    HAS_MORE_PAGES = "HAS_MORE_PAGES"


@dataclass(frozen=True)
class LineError:
    """A rejected line: ``line_no`` is 1-based (0 = the document as a whole); no personal data inside."""

    line_no: int
    reason: str
    message: str


@dataclass(frozen=True)
class Balances:
    """Declared balances, signed (a debit balance is negative). camt.053 OPBD/CLBD, MT940 60F/62F, SNAP."""

    currency: str
    opening: Decimal | None = None
    closing: Decimal | None = None
    opening_date: date | None = None
    closing_date: date | None = None


@dataclass(frozen=True)
class Totals:
    """Declared entry totals: SNAP totalCreditEntries/totalDebitEntries, camt.053 TxsSummry."""

    credit_count: int | None = None
    credit_amount: Decimal | None = None
    debit_count: int | None = None
    debit_amount: Decimal | None = None
    has_more: bool = False


@dataclass
class ParseResult:
    source: StatementSource
    entries: list[StatementEntry] = field(default_factory=list)
    errors: list[LineError] = field(default_factory=list)
    balances: Balances | None = None
    totals: Totals | None = None
    statement_ref: str | None = None

    def error(self, line_no: int, reason: StatementReason, message: str) -> None:
        self.errors.append(LineError(line_no, reason.value, message))


class LineRejected(Exception):
    """Raised inside a parser for one line; caught by the line loop and turned into a LineError."""

    def __init__(self, reason: StatementReason, message: str) -> None:
        self.reason = reason
        self.message = message
        super().__init__(reason.value, message)


def parse_amount(text: str, *, comma_decimal: bool = False) -> Decimal:
    """A non-negative amount with at most 2 decimals, quantized to cents; no floats, no exponent."""
    raw = text.strip()
    if comma_decimal:
        raw = raw.replace(",", ".")
    if not re.fullmatch(r"[0-9]{1,16}(\.[0-9]{0,2})?|\.[0-9]{1,2}", raw):
        raise LineRejected(StatementReason.BAD_AMOUNT, "amount must be digits with at most 2 decimals")
    try:
        value = Decimal(raw if not raw.endswith(".") else raw[:-1] or "0")
    except InvalidOperation:  # pragma: no cover - the regex admits only valid decimals
        raise LineRejected(StatementReason.BAD_AMOUNT, "amount is not a number") from None
    if value > MAX_AMOUNT:
        raise LineRejected(StatementReason.BAD_AMOUNT, "amount exceeds decimal(18,2)")
    return value.quantize(CENT)


def check_currency(text: str | None) -> str:
    if not text:
        raise LineRejected(StatementReason.MISSING_CURRENCY, "currency is missing")
    cur = text.strip().upper()
    if _CURRENCY.fullmatch(cur) is None:
        raise LineRejected(StatementReason.BAD_CURRENCY, "currency must be an ISO 4217 code")
    return cur


def parse_iso_date(text: str | None, what: str) -> date:
    """``YYYY-MM-DD`` or an ISO datetime; a datetime with an offset gives its WIB business date."""
    if not text or not isinstance(text, str):
        raise LineRejected(StatementReason.BAD_DATE, f"{what} is missing")
    raw = text.strip()
    try:
        if len(raw) == 10:
            if _ISO_DATE.fullmatch(raw) is None:
                raise ValueError(raw)
            return date.fromisoformat(raw)
        moment = datetime.fromisoformat(raw)
    except ValueError:
        raise LineRejected(StatementReason.BAD_DATE, f"{what} is not an ISO date") from None
    if moment.tzinfo is None:
        return moment.date()
    try:
        return moment.astimezone(WIB).date()
    except OverflowError:  # e.g. 9999-12-31T23:00:00-05:00: its WIB day lies past year 9999
        raise LineRejected(StatementReason.BAD_DATE, f"{what} is out of range") from None


def clean_text(value: object, max_len: int = REF_MAX) -> str | None:
    """Stripped single-line text without control characters, cut to ``max_len``; blank is None."""
    if not isinstance(value, str):
        return None
    text = _CONTROL.sub(" ", value).replace("\r", " ").replace("\n", " ").strip()
    text = re.sub(r"\s{2,}", " ", text)
    return text[:max_len] or None


def clean_ref(value: object) -> str | None:
    """A reference kept as sent except trailing blanks and control characters: a SNAP VA number starts with
    the space-padded partnerServiceId, so leading spaces are significant."""
    if not isinstance(value, str) or not value.strip():
        return None
    text = _CONTROL.sub("", value).replace("\r", "").replace("\n", "").rstrip()
    return text[:REF_MAX] or None


def clean_narrative(value: object) -> str | None:
    """Narrative for an event: digit runs of 10+ (account numbers) masked to the last 4, at most 256 chars."""
    text = clean_text(value, max_len=4096)
    if text is None:
        return None
    text = _LONG_DIGITS.sub(lambda m: mask_tail(m.group(0)), text)
    return text[:NARRATIVE_MAX] or None


def account_ref(account_no: str | None) -> str:
    """The account number masked to its last 4 characters (``"******6789"``)."""
    text = clean_text(account_no, max_len=64)
    if text is None:
        raise LineRejected(StatementReason.MISSING_ACCOUNT, "statement account is missing")
    return mask_tail(text.replace("*", "#"))


def _id_part(value: str) -> str:
    return value.replace("%", "%25").replace("|", "%7C")


def make_entry(
    *,
    source: StatementSource,
    bank_id: str,
    account: str,
    booking_date: date,
    value_date: date | None,
    direction: EntryDirection,
    amount: Decimal,
    currency: str,
    bank_ref: str | None,
    end_to_end_id: str | None,
    customer_ref: str | None,
    narrative: str | None,
    detail_status: EntryDetailStatus,
    statement_ref: str | None,
    line_no: int,
    imported_at: datetime,
) -> StatementEntry:
    """Build one entry with its deterministic id (see the StatementEntry schema doc for the id's parts)."""
    bank_ref = clean_text(bank_ref)
    parts = [bank_id, source.value, account, bank_ref or "", booking_date.isoformat(), str(amount), direction.value]
    if not bank_ref:
        parts += [statement_ref or "", str(line_no)]
    entry_id = event_uuid(*(_id_part(p) for p in parts))
    return StatementEntry(
        entry_id=entry_id,
        bank_id=bank_id,
        source=source,
        account_ref=account,
        booking_date=booking_date,
        value_date=value_date,
        direction=direction,
        amount=amount,
        currency=currency,
        bank_ref=bank_ref,
        end_to_end_id=clean_text(end_to_end_id),
        customer_ref=clean_ref(customer_ref),
        narrative=clean_narrative(narrative),
        detail_status=detail_status,
        statement_ref=clean_text(statement_ref),
        line_no=line_no,
        imported_at=imported_at,
    )


def decode_text(data: bytes | str, result: ParseResult) -> str | None:
    """UTF-8 (BOM tolerated) text of an upload, or None with a document-level error."""
    if isinstance(data, str):
        text = data
    else:
        if len(data) > MAX_STATEMENT_BYTES:
            result.error(0, StatementReason.INPUT_TOO_LARGE, "statement exceeds the size limit")
            return None
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            result.error(0, StatementReason.BAD_ENCODING, "statement must be UTF-8")
            return None
    if len(text) > MAX_STATEMENT_BYTES:
        result.error(0, StatementReason.INPUT_TOO_LARGE, "statement exceeds the size limit")
        return None
    return text.lstrip("\ufeff")


def is_unsafe_xml(text: str) -> bool:
    """True when the document declares a DTD or entities (XXE, billion laughs): such input is never parsed."""
    return _UNSAFE_XML.search(text) is not None
