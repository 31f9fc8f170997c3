"""ISO 20022 camt.054 (debit/credit notification) and camt.053 (statement, with balances) entries.

Namespace-agnostic (any camt.05x version): elements are matched by local name. A document with a
DOCTYPE or ENTITY declaration is rejected before parsing (XXE, billion laughs).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import date, datetime
from decimal import Decimal

from services.domain.models import EntryDetailStatus, EntryDirection, StatementEntry, StatementSource
from services.domain.statements._common import (
    Balances,
    LineRejected,
    ParseResult,
    StatementReason,
    Totals,
    account_ref,
    check_currency,
    decode_text,
    is_unsafe_xml,
    make_entry,
    parse_amount,
    parse_iso_date,
)

_DIRECTIONS = {"CRDT": EntryDirection.CREDIT, "DBIT": EntryDirection.DEBIT}
_STATUSES = {"BOOK": EntryDetailStatus.BOOK, "PDNG": EntryDetailStatus.PDNG, "INFO": EntryDetailStatus.INFO}
_OPENING = ("OPBD", "PRCD")
_CLOSING = ("CLBD",)


def _local(tag: object) -> str:
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


def _child(elem: ET.Element | None, *path: str) -> ET.Element | None:
    for name in path:
        if elem is None:
            return None
        elem = next((c for c in elem if _local(c.tag) == name), None)
    return elem


def _children(elem: ET.Element | None, name: str) -> list[ET.Element]:
    return [] if elem is None else [c for c in elem if _local(c.tag) == name]


def _text(elem: ET.Element | None, *path: str) -> str | None:
    found = _child(elem, *path)
    if found is None or found.text is None:
        return None
    return found.text.strip() or None


def _date_of(elem: ET.Element | None) -> date | None:
    """``<X><Dt>`` or ``<X><DtTm>`` (WIB business date of a timestamp)."""
    if elem is None:
        return None
    raw = _text(elem, "Dt") or _text(elem, "DtTm")
    return parse_iso_date(raw, "date") if raw else None


def _amount(elem: ET.Element | None) -> tuple[Decimal, str]:
    amt = _child(elem, "Amt")
    if amt is None or not amt.text:
        raise LineRejected(StatementReason.MISSING_FIELD, "Amt is missing")
    return parse_amount(amt.text), check_currency(amt.get("Ccy"))


def _direction(elem: ET.Element | None) -> EntryDirection:
    ind = _text(elem, "CdtDbtInd")
    if ind not in _DIRECTIONS:
        raise LineRejected(StatementReason.BAD_DIRECTION, "CdtDbtInd must be CRDT or DBIT")
    return _DIRECTIONS[ind]


def _status(entry: ET.Element) -> EntryDetailStatus:
    if (_text(entry, "RvslInd") or "").lower() in {"true", "1"}:
        return EntryDetailStatus.REVERSAL
    sts = _text(entry, "Sts") or _text(entry, "Sts", "Cd") or ""
    return _STATUSES.get(sts.upper(), EntryDetailStatus.UNKNOWN)


def _account(block: ET.Element) -> str | None:
    acct = _child(block, "Acct", "Id")
    return _text(acct, "IBAN") or _text(acct, "Othr", "Id")


def parse_camt(xml_bytes: bytes | str, *, bank_id: str, imported_at: datetime) -> ParseResult:
    """camt.054 notifications or camt.053 statements: one entry per ``Ntry``; ``line_no`` is the entry's
    1-based index in the document. From camt.053 also the OPBD/CLBD balances and TxsSummry totals."""
    result = ParseResult(StatementSource.UNKNOWN)
    text = decode_text(xml_bytes, result)
    if text is None:
        return result
    if is_unsafe_xml(text):
        result.error(0, StatementReason.UNSAFE_XML, "DOCTYPE and ENTITY declarations are not accepted")
        return result
    try:
        # DTD/ENTITY declarations were refused above, so no entity can expand (defusedxml is not allowed here)
        root = ET.fromstring(text)  # noqa: S314
    except (ET.ParseError, ValueError):
        result.error(0, StatementReason.MALFORMED_XML, "document is not well-formed XML")
        return result

    body = next(iter(root), None) if _local(root.tag) == "Document" else root
    kind = _local(body.tag) if body is not None else ""
    if kind == "BkToCstmrDbtCdtNtfctn":
        result.source, block_name = StatementSource.CAMT054, "Ntfctn"
    elif kind == "BkToCstmrStmt":
        result.source, block_name = StatementSource.CAMT053, "Stmt"
    else:
        result.error(0, StatementReason.NOT_A_STATEMENT, "root is not a camt.053 or camt.054 message")
        return result
    msg_id = _text(body, "GrpHdr", "MsgId")
    result.statement_ref = msg_id
    index = 0
    blocks = _children(body, block_name)
    for block in blocks:
        account: str | None = None
        try:
            account = account_ref(_account(block))
        except LineRejected as exc:
            result.error(index + 1, exc.reason, exc.message)
        if result.source is StatementSource.CAMT053 and len(blocks) == 1:
            _balances(block, result, index + 1)
        for entry in _children(block, "Ntry"):
            index += 1
            if account is None:
                result.error(index, StatementReason.MISSING_ACCOUNT, "statement account is missing")
                continue
            try:
                result.entries.append(_entry(entry, result.source, bank_id, account, msg_id, index, imported_at))
            except LineRejected as exc:
                result.error(index, exc.reason, exc.message)
    return result


def _entry(
    entry: ET.Element,
    source: StatementSource,
    bank_id: str,
    account: str,
    msg_id: str | None,
    index: int,
    imported_at: datetime,
) -> StatementEntry:
    amount, currency = _amount(entry)
    direction = _direction(entry)
    booking = _date_of(_child(entry, "BookgDt"))
    value = _date_of(_child(entry, "ValDt"))
    if booking is None:
        booking = value
    if booking is None:
        raise LineRejected(StatementReason.BAD_DATE, "BookgDt and ValDt are missing")
    tx = _child(entry, "NtryDtls", "TxDtls")
    refs = _child(tx, "Refs")
    e2e = _text(refs, "EndToEndId")
    if e2e is not None and e2e.upper() == "NOTPROVIDED":
        e2e = None
    rmt = _child(tx, "RmtInf")
    ustrd = " ".join(t for t in (_text(u) for u in _children(rmt, "Ustrd")) if t) or None
    ref_elem = _child(rmt, "Strd", "CdtrRefInf", "Ref")
    creditor_ref = ref_elem.text if ref_elem is not None else None  # unstripped: a VA's prefix is space-padded
    return make_entry(
        source=source,
        bank_id=bank_id,
        account=account,
        booking_date=booking,
        value_date=value,
        direction=direction,
        amount=amount,
        currency=currency,
        bank_ref=_text(entry, "AcctSvcrRef") or _text(refs, "AcctSvcrRef"),
        end_to_end_id=e2e,
        customer_ref=creditor_ref,
        narrative=ustrd or _text(entry, "AddtlNtryInf"),
        detail_status=_status(entry),
        statement_ref=msg_id,
        line_no=index,
        imported_at=imported_at,
    )


def _signed(bal: ET.Element) -> tuple[Decimal, str]:
    amount, currency = _amount(bal)
    return (-amount if _direction(bal) is EntryDirection.DEBIT else amount), currency


def _balances(stmt: ET.Element, result: ParseResult, line_no: int) -> None:
    opening: tuple[Decimal, str, date | None] | None = None
    closing: tuple[Decimal, str, date | None] | None = None
    for bal in _children(stmt, "Bal"):
        code = _text(bal, "Tp", "CdOrPrtry", "Cd")
        try:
            if code in _OPENING and opening is None:
                opening = (*_signed(bal), _date_of(_child(bal, "Dt")))
            elif code in _CLOSING:
                closing = (*_signed(bal), _date_of(_child(bal, "Dt")))
        except LineRejected as exc:
            result.error(line_no, StatementReason.BAD_BALANCE, exc.message)
    anchor = opening or closing
    if anchor is not None:
        result.balances = Balances(
            currency=anchor[1],
            opening=opening[0] if opening else None,
            closing=closing[0] if closing else None,
            opening_date=opening[2] if opening else None,
            closing_date=closing[2] if closing else None,
        )
    summary = _child(stmt, "TxsSummry")
    if summary is not None:
        try:
            result.totals = Totals(
                credit_count=_count(_text(summary, "TtlCdtNtries", "NbOfNtries")),
                credit_amount=_sum(_text(summary, "TtlCdtNtries", "Sum")),
                debit_count=_count(_text(summary, "TtlDbtNtries", "NbOfNtries")),
                debit_amount=_sum(_text(summary, "TtlDbtNtries", "Sum")),
            )
        except LineRejected as exc:
            result.error(line_no, StatementReason.BAD_TOTALS, exc.message)


def _count(text: str | None) -> int | None:
    if text is None:
        return None
    if not text.isdigit() or len(text) > 15:
        raise LineRejected(StatementReason.BAD_TOTALS, "NbOfNtries must be digits")
    return int(text)


def _sum(text: str | None) -> Decimal | None:
    return None if text is None else parse_amount(text)
