"""Pure builders of the end-of-day statement files a partner bank uploads (domain.md 4.7).

One function per format the hub parses (services/domain/statements/): SNAP statement JSON, SWIFT MT940,
the default-profile CSV and ISO 20022 camt.054. Each takes the same `StatementLine`s (one per payment the
bank credited to the hub's collection account) and returns the file bytes, a file name and the
Content-Type to upload them with. Nothing here reads a clock or a file.

Amounts: the collection account is a rupiah account, so every line is the integer-rupiah amount the hub
credited (`to_idr(value, fxRate)` for a foreign-currency payment); the SNAP format also carries the
original amount (`originAmount`). Balances and declared totals add up, so check_totals finds nothing but
camt.054's NO_DECLARED_TOTALS (that message declares none).

References: every format names the payment the way its parser reads a payer-side reference, so that
statement reconciliation matches by reference at once: SNAP `detailInfo.paymentRequestId`, MT940's
16-character customer reference = the notification's partnerReferenceNo, CSV and camt.054 the
end-to-end id = paymentRequestId. CSV and camt.054 carry the VA as customer reference for the VA rule.

Breaks (:func:`with_breaks`, one of each per statement when it has the payments for them): a correction
debit taking one payment back (REVERSAL), a credit booked net of a bank fee (AMOUNT_MISMATCH), a credit
the bank never notified (ON_STATEMENT_NOT_NOTIFIED) and a notified payment left off
(NOTIFIED_NOT_ON_STATEMENT). The last two are decided when the business day closes (the reconciler's close
grace, default noon WIB the next day); the first two at once.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta, timezone
from enum import StrEnum
from typing import Any
from xml.sax.saxutils import escape

WIB = timezone(timedelta(hours=7))
MT940_LINE = 65  # :86: holds up to 6 lines of 65 characters
MT940_REF = 16  # :20:, :61: customer and bank references are 16x


class StatementFormat(StrEnum):
    SNAP_STATEMENT = "SNAP_STATEMENT"
    MT940 = "MT940"
    CSV = "CSV"
    CAMT054 = "CAMT054"


#: The order `sinergi simulate` rotates through, one format per round.
ROTATION = (StatementFormat.SNAP_STATEMENT, StatementFormat.MT940, StatementFormat.CSV, StatementFormat.CAMT054)

_EXTENSION = {
    StatementFormat.SNAP_STATEMENT: ("json", "application/json"),
    StatementFormat.MT940: ("sta", "text/plain"),
    StatementFormat.CSV: ("csv", "text/csv"),
    StatementFormat.CAMT054: ("xml", "application/xml"),
}


CREDIT, DEBIT = "CREDIT", "DEBIT"
SUCCESS, REVERSAL, ERROR_CORRECTION = "SUCCESS", "REVERSAL", "ERROR_CORRECTION"
CORRECTIONS = frozenset({REVERSAL, ERROR_CORRECTION})
#: What a bank keeps of a credit it books net of its charge (the AMOUNT_MISMATCH line).
BANK_FEE_IDR = 6_500


class Break(StrEnum):
    """A statement break a round produces on purpose; the value is statement_match's decision kind."""

    REVERSAL = "REVERSAL"
    AMOUNT_MISMATCH = "AMOUNT_MISMATCH"
    ON_STATEMENT_NOT_NOTIFIED = "ON_STATEMENT_NOT_NOTIFIED"
    NOTIFIED_NOT_ON_STATEMENT = "NOTIFIED_NOT_ON_STATEMENT"


#: The breaks that need a notified payment of their own (ON_STATEMENT_NOT_NOTIFIED needs none).
PAYMENT_BREAKS = (Break.REVERSAL, Break.AMOUNT_MISMATCH, Break.NOTIFIED_NOT_ON_STATEMENT)


@dataclass(frozen=True)
class StatementLine:
    """One movement on the collection account: by default a credit for a payment the bank notified and
    the hub accepted; a DEBIT with a correction status takes such a payment back."""

    amount_idr: int
    booked_at: datetime  # aware; the booking date is its WIB date
    payment_request_id: str
    virtual_account_no: str  # as notified: partnerServiceId space-padded to 8 + customerNo
    origin_value: str  # paidAmount.value as notified
    origin_currency: str
    partner_reference_no: str | None = None  # as notified; MT940 carries it as the customer reference
    direction: str = CREDIT
    status: str = SUCCESS  # SUCCESS, or for a correction debit REVERSAL / ERROR_CORRECTION

    @property
    def booking_date(self) -> date:
        return self.booked_at.astimezone(WIB).date()

    @property
    def is_debit(self) -> bool:
        return self.direction == DEBIT


@dataclass(frozen=True)
class Statement:
    bank_id: str
    account_no: str  # the hub's collection account at this bank (not a person's account)
    reference: str  # <= 16 characters: MT940 :20:, camt MsgId, SNAP referenceNo
    statement_date: date  # WIB business date
    sequence: int  # MT940 :28C: statement number
    opening_idr: int
    lines: tuple[StatementLine, ...]

    @property
    def credits(self) -> tuple[StatementLine, ...]:
        return tuple(line for line in self.lines if not line.is_debit)

    @property
    def debits(self) -> tuple[StatementLine, ...]:
        return tuple(line for line in self.lines if line.is_debit)

    @property
    def credited_idr(self) -> int:
        return sum(line.amount_idr for line in self.credits)

    @property
    def debited_idr(self) -> int:
        return sum(line.amount_idr for line in self.debits)

    @property
    def closing_idr(self) -> int:
        return self.opening_idr + self.credited_idr - self.debited_idr


@dataclass(frozen=True)
class StatementFile:
    format: StatementFormat
    filename: str
    content_type: str
    content: bytes


def collection_account_no(partner_service_id: str) -> str:
    """The hub's (BPJS TK's) rupiah collection account at the bank with this VA prefix (made up, stable)."""
    digits = "".join(c for c in partner_service_id if c.isdigit())
    return f"137{digits:0>5}0001"


def bank_ref(bank_id: str, payment_request_id: str) -> str:
    """The bank's own 16-character transaction reference of a line: stable for one payment, distinct between
    payments (statement entry ids are derived from it, so two runs must not reuse one)."""
    prefix = "".join(c for c in bank_id.upper() if c.isalnum())[:3]
    digest = hashlib.sha256(f"{bank_id}|{payment_request_id}".encode()).hexdigest().upper()
    return (prefix + digest)[:MT940_REF]


def line_ref(bank_id: str, line: StatementLine) -> str:
    """The bank's reference of a line: a correction is a transaction of its own, not the credit again."""
    if line.is_debit:
        return bank_ref(bank_id, f"{line.payment_request_id}|{line.status}")
    return bank_ref(bank_id, line.payment_request_id)


def _money(amount_idr: int) -> str:
    return f"{amount_idr}.00"


def _mt_money(amount_idr: int) -> str:
    return f"{amount_idr},00"


def _mt_balance(amount_idr: int) -> str:
    return ("D" if amount_idr < 0 else "C") + "{day}IDR" + _mt_money(abs(amount_idr))


def _iso(at: datetime) -> str:
    return at.astimezone(WIB).isoformat(timespec="seconds")


def build_statement(statement: Statement, fmt: StatementFormat) -> StatementFile:
    builders = {
        StatementFormat.SNAP_STATEMENT: snap_statement,
        StatementFormat.MT940: mt940_statement,
        StatementFormat.CSV: csv_statement,
        StatementFormat.CAMT054: camt054_statement,
    }
    content = builders[fmt](statement)
    ext, content_type = _EXTENSION[fmt]
    name = f"{statement.bank_id.lower()}_{statement.statement_date:%Y%m%d}_{statement.reference}.{ext}"
    return StatementFile(fmt, name, content_type, content)


def snap_statement(statement: Statement) -> bytes:
    """A SNAP bank statement response (service 14) with its balances and declared totals."""
    end = max((line.booked_at for line in statement.lines), default=None)
    day_start = datetime.combine(statement.statement_date, datetime.min.time(), WIB)
    day_end = day_start + timedelta(days=1, seconds=-1)
    # SNAP's detail statuses are SUCCESS and ERROR CORRECTION: a reversal is written as the latter.
    # detailInfo.paymentRequestId is the payer-side reference the parser reads; a virtualAccountNo there would
    # be read first, and a VA in the remark is masked by the parser, so this format is matched by reference.
    details: list[dict[str, Any]] = [
        {
            "amount": {"value": _money(line.amount_idr), "currency": "IDR"},
            "originAmount": {"value": line.origin_value, "currency": line.origin_currency},
            "transactionDate": _iso(line.booked_at),
            "remark": "KOREKSI PEMBAYARAN VA BPJSTK PMI" if line.is_debit else "PEMBAYARAN VA BPJSTK PMI",
            "transactionId": line_ref(statement.bank_id, line),
            "type": line.direction,
            "transactionDetailStatus": "ERROR CORRECTION" if line.status in CORRECTIONS else "SUCCESS",
            "detailInfo": {"paymentRequestId": line.payment_request_id},
        }
        for line in statement.lines
    ]
    doc: dict[str, Any] = {
        "responseCode": "2001400",
        "responseMessage": "Successful",
        "referenceNo": statement.reference,
        "partnerReferenceNo": f"SNG-STM-{statement.statement_date:%Y%m%d}-{statement.sequence:02d}",
        "accountNo": statement.account_no,
        "balance": {
            "amount": {"value": _money(statement.closing_idr), "currency": "IDR", "dateTime": _iso(day_end)},
            "startingBalance": {"value": _money(statement.opening_idr), "currency": "IDR", "dateTime": _iso(day_start)},
            "endingBalance": {"value": _money(statement.closing_idr), "currency": "IDR", "dateTime": _iso(day_end)},
        },
        "totalCreditEntries": {
            "numberOfEntries": str(len(statement.credits)),
            "amount": {"value": _money(statement.credited_idr), "currency": "IDR"},
        },
        "totalDebitEntries": {
            "numberOfEntries": str(len(statement.debits)),
            "amount": {"value": _money(statement.debited_idr), "currency": "IDR"},
        },
        "hasMore": "N",
        "detailData": details,
    }
    if end is not None:
        doc["lastRecordDateTime"] = _iso(end)
    return json.dumps(doc, indent=2, ensure_ascii=False).encode("utf-8") + b"\n"


def mt940_statement(statement: Statement) -> bytes:
    """A SWIFT MT940 with :60F:/:62F: balances and one :61:/:86: pair per credit (IDR)."""
    day = f"{statement.statement_date:%y%m%d}"
    out = [
        f":20:{statement.reference[:MT940_REF]}",
        f":25:{statement.account_no}",
        f":28C:{statement.sequence:05d}/1",
        ":60F:" + _mt_balance(statement.opening_idr).format(day=day),
    ]
    for line in statement.lines:
        booked = line.booking_date
        customer = (line.partner_reference_no or line.payment_request_id)[-MT940_REF:]
        # RC: reversal of a credit (MT940 has no separate mark for an error correction); D any other debit
        mark = ("RC" if line.status in CORRECTIONS else "D") if line.is_debit else "C"
        out.append(
            f":61:{booked:%y%m%d}{booked:%m%d}{mark}{_mt_money(line.amount_idr)}NTRF{customer}"
            f"//{line_ref(statement.bank_id, line)}"
        )
        # :86: is 6 lines of 65x: the VA on the first, the bank's payment id on a continuation line
        out.append(f":86:BPJSTK PMI VA {line.virtual_account_no.strip()}"[:MT940_LINE])
        out.append(f"REF {line.payment_request_id}"[:MT940_LINE])
    out.append(":62F:" + _mt_balance(statement.closing_idr).format(day=day))
    out.append("-")
    return ("\r\n".join(out) + "\r\n").encode("ascii")


def csv_statement(statement: Statement) -> bytes:
    """The default CSV profile (services/domain/statements/csv_profile.py), one row per credit."""
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(
        [
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
        ]
    )
    for line in statement.lines:
        writer.writerow(
            [
                statement.account_no,
                line.booking_date.isoformat(),
                line.booking_date.isoformat(),
                "DR" if line.is_debit else "CR",
                _money(line.amount_idr),
                "IDR",
                line_ref(statement.bank_id, line),
                line.virtual_account_no.strip(),
                line.payment_request_id,
                "KOREKSI SETORAN IURAN BPJSTK PMI" if line.is_debit else "SETORAN IURAN BPJSTK PMI",
                line.status,
            ]
        )
    return buffer.getvalue().encode("utf-8")


def camt054_statement(statement: Statement) -> bytes:
    """An ISO 20022 camt.054.001.08 credit notification: one booked Ntry per credit."""
    created = datetime.combine(statement.statement_date, datetime.max.time().replace(microsecond=0), WIB)
    entries: list[str] = []
    for line in statement.lines:
        booked = line.booking_date.isoformat()
        reversal = "        <RvslInd>true</RvslInd>\n" if line.is_debit and line.status in CORRECTIONS else ""
        entries.append(
            "      <Ntry>\n"
            f'        <Amt Ccy="IDR">{_money(line.amount_idr)}</Amt>\n'
            f"        <CdtDbtInd>{'DBIT' if line.is_debit else 'CRDT'}</CdtDbtInd>\n"
            + reversal
            + "        <Sts><Cd>BOOK</Cd></Sts>\n"
            f"        <BookgDt><Dt>{booked}</Dt></BookgDt>\n"
            f"        <ValDt><Dt>{booked}</Dt></ValDt>\n"
            f"        <AcctSvcrRef>{escape(line_ref(statement.bank_id, line))}</AcctSvcrRef>\n"
            "        <NtryDtls><TxDtls>\n"
            f"          <Refs><EndToEndId>{escape(line.payment_request_id)}</EndToEndId></Refs>\n"
            "          <RmtInf>\n"
            "            <Ustrd>BPJSTK PMI IURAN</Ustrd>\n"
            f"            <Strd><CdtrRefInf><Ref>{escape(line.virtual_account_no)}</Ref></CdtrRefInf></Strd>\n"
            "          </RmtInf>\n"
            "        </TxDtls></NtryDtls>\n"
            "      </Ntry>\n"
        )
    doc = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.054.001.08">\n'
        "  <BkToCstmrDbtCdtNtfctn>\n"
        "    <GrpHdr>\n"
        f"      <MsgId>{escape(statement.reference)}</MsgId>\n"
        f"      <CreDtTm>{_iso(created)}</CreDtTm>\n"
        "    </GrpHdr>\n"
        "    <Ntfctn>\n"
        f"      <Id>{escape(statement.reference)}-{statement.sequence}</Id>\n"
        f"      <CreDtTm>{_iso(created)}</CreDtTm>\n"
        f"      <Acct><Id><Othr><Id>{escape(statement.account_no)}</Id></Othr></Id><Ccy>IDR</Ccy></Acct>\n"
        + "".join(entries)
        + "    </Ntfctn>\n  </BkToCstmrDbtCdtNtfctn>\n</Document>\n"
    )
    return doc.encode("utf-8")


def in_booking_order(lines: Sequence[StatementLine]) -> tuple[StatementLine, ...]:
    """Lines in booking order (a bank lists its day chronologically; a correction after its credit)."""
    return tuple(sorted(lines, key=lambda line: (line.booked_at, line.payment_request_id, line.is_debit)))


@dataclass(frozen=True)
class Broken:
    """A statement's lines with its breaks, and which payment (paymentRequestId) each break is about."""

    lines: tuple[StatementLine, ...]
    breaks: Mapping[Break, str]


def with_breaks(
    rng: random.Random,
    lines: Sequence[StatementLine],
    *,
    candidates: Sequence[str],
    wanted: Sequence[Break],
    corrected_at: datetime,
    unnotified: Callable[[random.Random], StatementLine],
) -> Broken:
    """The statement a bank sends when its day did not go to plan: for each ``wanted`` break in order,

    - REVERSAL: one payment credited, then taken back by a correction debit of the same amount booked at
      ``corrected_at`` (or just after the credit): REVERSAL or ERROR_CORRECTION, naming the payment;
    - AMOUNT_MISMATCH: one payment credited net of :data:`BANK_FEE_IDR`;
    - NOTIFIED_NOT_ON_STATEMENT: one payment left off;
    - ON_STATEMENT_NOT_NOTIFIED: the credit ``unnotified(rng)`` that the bank never notified.

    The payment breaks take distinct payments from ``candidates`` (paymentRequestIds of ``lines`` whose
    payment is the member's only one); a break without a candidate left is skipped.
    """
    by_id = {line.payment_request_id: line for line in lines if not line.is_debit}
    free = [c for c in candidates if c in by_id]
    rng.shuffle(free)
    out = {line.payment_request_id: line for line in lines}
    extra: list[StatementLine] = []
    done: dict[Break, str] = {}
    for kind in wanted:
        if kind is Break.ON_STATEMENT_NOT_NOTIFIED:
            line = unnotified(rng)
            extra.append(line)
            done[kind] = line.payment_request_id
            continue
        if not free:
            continue
        prid = free.pop()
        credit = by_id[prid]
        if kind is Break.REVERSAL:
            at = max(corrected_at, credit.booked_at + timedelta(seconds=1))
            status = rng.choice((REVERSAL, ERROR_CORRECTION))
            extra.append(replace(credit, booked_at=at, direction=DEBIT, status=status))
        elif kind is Break.AMOUNT_MISMATCH:
            out[prid] = replace(credit, amount_idr=credit.amount_idr - min(BANK_FEE_IDR, credit.amount_idr // 2))
        else:
            del out[prid]
        done[kind] = prid
    return Broken(in_booking_order([*out.values(), *extra]), done)


__all__ = [
    "BANK_FEE_IDR",
    "PAYMENT_BREAKS",
    "ROTATION",
    "Break",
    "Broken",
    "Statement",
    "StatementFile",
    "StatementFormat",
    "StatementLine",
    "bank_ref",
    "build_statement",
    "camt054_statement",
    "collection_account_no",
    "csv_statement",
    "in_booking_order",
    "line_ref",
    "mt940_statement",
    "snap_statement",
    "with_breaks",
]
