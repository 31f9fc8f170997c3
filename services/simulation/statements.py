"""Pure builders of the end-of-day statement files a partner bank uploads (domain.md 4.7).

One function per format the hub parses (services/domain/statements/): SNAP statement JSON, SWIFT MT940,
the default-profile CSV and ISO 20022 camt.054. Each takes the same `StatementLine`s (one per payment the
bank credited to the hub's collection account) and returns the file bytes, a file name and the
Content-Type to upload them with. Nothing here reads a clock or a file.

Amounts: the collection account is a rupiah account, so every line is the integer-rupiah amount the hub
credited (`to_idr(value, fxRate)` for a foreign-currency payment); the SNAP format also carries the
original amount (`originAmount`). Balances and declared totals add up, so check_totals finds nothing but
camt.054's NO_DECLARED_TOTALS (that message declares none).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
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


@dataclass(frozen=True)
class StatementLine:
    """One credit on the collection account: a payment the bank notified and the hub accepted."""

    amount_idr: int
    booked_at: datetime  # aware; the booking date is its WIB date
    payment_request_id: str
    virtual_account_no: str  # as notified: partnerServiceId space-padded to 8 + customerNo
    origin_value: str  # paidAmount.value as notified
    origin_currency: str

    @property
    def booking_date(self) -> date:
        return self.booked_at.astimezone(WIB).date()


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
    def credited_idr(self) -> int:
        return sum(line.amount_idr for line in self.lines)

    @property
    def closing_idr(self) -> int:
        return self.opening_idr + self.credited_idr


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


def _money(amount_idr: int) -> str:
    return f"{amount_idr}.00"


def _mt_money(amount_idr: int) -> str:
    return f"{amount_idr},00"


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
    details: list[dict[str, Any]] = [
        {
            "amount": {"value": _money(line.amount_idr), "currency": "IDR"},
            "originAmount": {"value": line.origin_value, "currency": line.origin_currency},
            "transactionDate": _iso(line.booked_at),
            "remark": "PEMBAYARAN VA BPJSTK PMI",
            "transactionId": bank_ref(statement.bank_id, line.payment_request_id),
            "type": "CREDIT",
            "transactionDetailStatus": "SUCCESS",
            "detailInfo": {
                "virtualAccountNo": line.virtual_account_no,
                "paymentRequestId": line.payment_request_id,
            },
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
            "numberOfEntries": str(len(statement.lines)),
            "amount": {"value": _money(statement.credited_idr), "currency": "IDR"},
        },
        "totalDebitEntries": {"numberOfEntries": "0", "amount": {"value": "0.00", "currency": "IDR"}},
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
        f":60F:C{day}IDR{_mt_money(statement.opening_idr)}",
    ]
    for line in statement.lines:
        booked = line.booking_date
        customer = line.payment_request_id[-MT940_REF:]
        out.append(
            f":61:{booked:%y%m%d}{booked:%m%d}C{_mt_money(line.amount_idr)}NTRF{customer}"
            f"//{bank_ref(statement.bank_id, line.payment_request_id)}"
        )
        # :86: is 6 lines of 65x: the VA on the first, the bank's payment id on a continuation line
        out.append(f":86:BPJSTK PMI VA {line.virtual_account_no.strip()}"[:MT940_LINE])
        out.append(f"REF {line.payment_request_id}"[:MT940_LINE])
    out.append(f":62F:C{day}IDR{_mt_money(statement.closing_idr)}")
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
                "CR",
                _money(line.amount_idr),
                "IDR",
                bank_ref(statement.bank_id, line.payment_request_id),
                line.virtual_account_no.strip(),
                line.payment_request_id,
                "SETORAN IURAN BPJSTK PMI",
                "SUCCESS",
            ]
        )
    return buffer.getvalue().encode("utf-8")


def camt054_statement(statement: Statement) -> bytes:
    """An ISO 20022 camt.054.001.08 credit notification: one booked Ntry per credit."""
    created = datetime.combine(statement.statement_date, datetime.max.time().replace(microsecond=0), WIB)
    entries: list[str] = []
    for line in statement.lines:
        booked = line.booking_date.isoformat()
        entries.append(
            "      <Ntry>\n"
            f'        <Amt Ccy="IDR">{_money(line.amount_idr)}</Amt>\n'
            "        <CdtDbtInd>CRDT</CdtDbtInd>\n"
            "        <Sts><Cd>BOOK</Cd></Sts>\n"
            f"        <BookgDt><Dt>{booked}</Dt></BookgDt>\n"
            f"        <ValDt><Dt>{booked}</Dt></ValDt>\n"
            f"        <AcctSvcrRef>{escape(bank_ref(statement.bank_id, line.payment_request_id))}</AcctSvcrRef>\n"
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
    """Lines in booking order (a bank lists its day chronologically)."""
    return tuple(sorted(lines, key=lambda line: (line.booked_at, line.payment_request_id)))


__all__ = [
    "ROTATION",
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
    "mt940_statement",
    "snap_statement",
]
