"""SNAP bank statement response (service 14, domain.md 4.7): ``detailData[]`` plus declared totals."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

from services.domain.models import EntryDetailStatus, EntryDirection, StatementEntry, StatementSource
from services.domain.statements._common import (
    Balances,
    LineRejected,
    ParseResult,
    StatementReason,
    Totals,
    account_ref,
    check_currency,
    clean_text,
    make_entry,
    parse_amount,
    parse_iso_date,
)

_DIRECTIONS = {
    "CREDIT": EntryDirection.CREDIT,
    "DEBIT": EntryDirection.DEBIT,
    "C": EntryDirection.CREDIT,
    "D": EntryDirection.DEBIT,
}
_STATUSES = {
    "SUCCESS": EntryDetailStatus.SUCCESS,
    "ERROR CORRECTION": EntryDetailStatus.ERROR_CORRECTION,
    "ERROR_CORRECTION": EntryDetailStatus.ERROR_CORRECTION,
}
# detailInfo keys that carry the payer-side reference of a VA payment (first one present wins)
_CUSTOMER_REF_KEYS = ("virtualAccountNo", "paymentRequestId", "customerReference", "customerNo")
MAX_DETAIL_ENTRIES = 200_000


def _money(raw: object, what: str) -> tuple[Decimal, str]:
    """SNAP amount object ``{"value": "10000.00", "currency": "IDR"}``; value as string (or exact Decimal)."""
    if not isinstance(raw, Mapping):
        raise LineRejected(StatementReason.MISSING_FIELD, f"{what} must be an amount object")
    value = raw.get("value")
    if isinstance(value, bool) or not isinstance(value, (str, int, Decimal)):
        raise LineRejected(StatementReason.BAD_AMOUNT, f"{what}.value must be a decimal string")
    exponent = value.as_tuple().exponent if isinstance(value, Decimal) else 0
    if not isinstance(exponent, int) or not -3 < exponent < 20:
        # NaN/Infinity, or an exponent such as 1E+999999999 that must never be expanded into digits
        raise LineRejected(StatementReason.BAD_AMOUNT, f"{what}.value must be a plain decimal")
    text = format(value, "f") if isinstance(value, Decimal) else str(value)
    return parse_amount(text), check_currency(raw.get("currency") if isinstance(raw.get("currency"), str) else None)


def _signed_balance(raw: object) -> tuple[Decimal, str] | None:
    if not isinstance(raw, Mapping):
        return None
    nested = raw.get("amount")
    inner: Mapping[str, Any] = nested if isinstance(nested, Mapping) else raw
    value = inner.get("value")
    if isinstance(value, str) and value.strip().startswith("-"):
        amount, cur = _money({"value": value.strip()[1:], "currency": inner.get("currency")}, "balance")
        return -amount, cur
    return _money(inner, "balance")


def _count(raw: object) -> int | None:
    if raw is None:
        return None
    if isinstance(raw, int) and not isinstance(raw, bool) and raw >= 0:
        return raw
    if isinstance(raw, str) and raw.strip().isdigit() and len(raw.strip()) <= 15:
        return int(raw.strip())
    raise LineRejected(StatementReason.BAD_TOTALS, "numberOfEntries must be a non-negative integer")


def _totals(body: Mapping[str, Any]) -> Totals | None:
    credit, debit = body.get("totalCreditEntries"), body.get("totalDebitEntries")
    if credit is None and debit is None:
        return None
    out: dict[str, Any] = {"has_more": body.get("hasMore") == "Y"}
    for prefix, raw in (("credit", credit), ("debit", debit)):
        if raw is None:
            continue
        if not isinstance(raw, Mapping):
            raise LineRejected(StatementReason.BAD_TOTALS, "total entries must be an object")
        out[f"{prefix}_count"] = _count(raw.get("numberOfEntries"))
        if raw.get("amount") is not None:
            try:
                out[f"{prefix}_amount"] = _money(raw.get("amount"), "total")[0]
            except LineRejected as exc:
                raise LineRejected(StatementReason.BAD_TOTALS, exc.message) from None
    return Totals(**out)


def _balances(body: Mapping[str, Any]) -> Balances | None:
    raw = body.get("balance")
    if isinstance(raw, list):  # some banks send one balance per currency
        raw = raw[0] if len(raw) == 1 else None
    if not isinstance(raw, Mapping):
        return None
    try:
        opening, closing = _signed_balance(raw.get("startingBalance")), _signed_balance(raw.get("endingBalance"))
    except LineRejected as exc:
        raise LineRejected(StatementReason.BAD_BALANCE, exc.message) from None
    anchor = opening or closing
    if anchor is None:
        return None
    return Balances(
        currency=anchor[1], opening=opening[0] if opening else None, closing=closing[0] if closing else None
    )


def parse_snap_statement(
    json_obj: object, *, bank_id: str, imported_at: datetime, account_no: str | None = None
) -> ParseResult:
    """Every ``detailData`` item as an entry (``line_no`` = 1-based index), plus declared totals and balances.

    The response carries no account number (it was in the request), so pass ``account_no``; an
    ``accountNo`` (or ``additionalInfo.accountNo``) in the body is used when present.
    """
    result = ParseResult(StatementSource.SNAP_STATEMENT)
    if not isinstance(json_obj, Mapping):
        result.error(0, StatementReason.NOT_A_STATEMENT, "SNAP statement must be a JSON object")
        return result
    details = json_obj.get("detailData")
    if not isinstance(details, list):
        result.error(0, StatementReason.NOT_A_STATEMENT, "detailData must be a list")
        return result
    statement_ref = clean_text(json_obj.get("referenceNo")) or clean_text(json_obj.get("partnerReferenceNo"))
    result.statement_ref = statement_ref
    for getter in (_totals, _balances):
        try:
            value = getter(json_obj)
        except LineRejected as exc:
            result.error(0, exc.reason, exc.message)
            continue
        if isinstance(value, Totals):
            result.totals = value
        elif isinstance(value, Balances):
            result.balances = value
    extra = json_obj.get("additionalInfo")
    body_account = json_obj.get("accountNo") or (extra.get("accountNo") if isinstance(extra, Mapping) else None)
    try:
        account = account_ref(body_account if isinstance(body_account, str) else account_no)
    except LineRejected as exc:
        result.error(0, exc.reason, exc.message)
        return result
    if len(details) > MAX_DETAIL_ENTRIES:
        result.error(0, StatementReason.INPUT_TOO_LARGE, "too many detailData items")
        return result

    for index, item in enumerate(details, start=1):
        try:
            result.entries.append(_entry(item, bank_id, account, statement_ref, index, imported_at))
        except LineRejected as exc:
            result.error(index, exc.reason, exc.message)
    return result


def _entry(
    item: object, bank_id: str, account: str, statement_ref: str | None, index: int, imported_at: datetime
) -> StatementEntry:
    if not isinstance(item, Mapping):
        raise LineRejected(StatementReason.BAD_LINE, "detailData item must be an object")
    amount, currency = _money(item.get("amount"), "amount")
    kind = item.get("type")
    if not isinstance(kind, str) or kind.strip().upper() not in _DIRECTIONS:
        raise LineRejected(StatementReason.BAD_DIRECTION, "type must be CREDIT or DEBIT")
    raw_date = item.get("transactionDate")
    booking = parse_iso_date(raw_date if isinstance(raw_date, str) else None, "transactionDate")
    raw_status = item.get("transactionDetailStatus")
    status = (
        _STATUSES.get(" ".join(raw_status.upper().split()), EntryDetailStatus.UNKNOWN)
        if isinstance(raw_status, str)
        else EntryDetailStatus.UNKNOWN
    )
    info = item.get("detailInfo")
    customer_ref = None
    if isinstance(info, Mapping):
        customer_ref = next((v for k in _CUSTOMER_REF_KEYS if isinstance(v := info.get(k), str) and v.strip()), None)
    txid = item.get("transactionId")
    return make_entry(
        source=StatementSource.SNAP_STATEMENT,
        bank_id=bank_id,
        account=account,
        booking_date=booking,
        value_date=None,
        direction=_DIRECTIONS[kind.strip().upper()],
        amount=amount,
        currency=currency,
        bank_ref=str(txid) if isinstance(txid, (str, int)) and not isinstance(txid, bool) else None,
        end_to_end_id=None,
        customer_ref=customer_ref,
        narrative=item.get("remark") if isinstance(item.get("remark"), str) else None,
        detail_status=status,
        statement_ref=statement_ref,
        line_no=index,
        imported_at=imported_at,
    )
