"""Format detection and the one entry point :func:`parse_statement` that dispatches on it."""

from __future__ import annotations

import json
import re
from datetime import datetime
from decimal import Decimal

from services.domain.models import StatementSource
from services.domain.statements._common import MAX_STATEMENT_BYTES, ParseResult, StatementReason
from services.domain.statements.camt import parse_camt
from services.domain.statements.csv_profile import DEFAULT_CSV_PROFILE, CsvProfile, parse_csv
from services.domain.statements.mt940 import parse_mt940
from services.domain.statements.snap import parse_snap_statement

_HEAD = 8192
_MT940_TAGS = re.compile(r"^:(20|25|28C|60F|61):", re.MULTILINE)
_BY_EXTENSION = {
    ".sta": StatementSource.MT940,
    ".mt940": StatementSource.MT940,
    ".940": StatementSource.MT940,
    ".json": StatementSource.SNAP_STATEMENT,
    ".csv": StatementSource.CSV,
}


def _head(data: bytes) -> str:
    text = data[:_HEAD].decode("utf-8", errors="replace").lstrip("\ufeff \t\r\n")
    return text


def detect_format(data: bytes, profile: CsvProfile = DEFAULT_CSV_PROFILE) -> str:
    """The StatementSource value of ``data`` from its first bytes: MT940, CAMT054, CAMT053, SNAP_STATEMENT,
    CSV (when the first line holds the profile's required columns) or UNKNOWN."""
    head = _head(data)
    if head.startswith("<"):
        if "BkToCstmrDbtCdtNtfctn" in head or "camt.054" in head:
            return StatementSource.CAMT054.value
        if "BkToCstmrStmt" in head or "camt.053" in head:
            return StatementSource.CAMT053.value
        return StatementSource.UNKNOWN.value
    if len(set(_MT940_TAGS.findall(head))) >= 2:
        return StatementSource.MT940.value
    if head.startswith("{") and '"detailData"' in data.decode("utf-8", errors="replace"):
        return StatementSource.SNAP_STATEMENT.value
    first = head.splitlines()[0] if head else ""
    names = {cell.strip().strip('"') for cell in first.split(profile.delimiter)}
    wanted = {profile.columns[c] for c in ("booking_date", "direction", "amount") if c in profile.columns}
    if wanted and wanted <= names:
        return StatementSource.CSV.value
    return StatementSource.UNKNOWN.value


def parse_statement(
    data: bytes,
    *,
    bank_id: str,
    imported_at: datetime,
    filename: str | None = None,
    account_no: str | None = None,
    profile: CsvProfile = DEFAULT_CSV_PROFILE,
) -> ParseResult:
    """Detect the format (the file name's extension only breaks a tie) and parse. Never raises on bad input:
    an unknown or unreadable file is a ParseResult with one document-level error (line 0)."""
    if len(data) > MAX_STATEMENT_BYTES:
        result = ParseResult(StatementSource.UNKNOWN)
        result.error(0, StatementReason.INPUT_TOO_LARGE, "statement exceeds the size limit")
        return result
    fmt = StatementSource(detect_format(data, profile))
    if fmt is StatementSource.UNKNOWN and filename:
        ext = "." + filename.rsplit(".", 1)[-1].lower() if "." in filename else ""
        fmt = _BY_EXTENSION.get(ext, StatementSource.UNKNOWN)
    if fmt in {StatementSource.CAMT053, StatementSource.CAMT054}:
        return parse_camt(data, bank_id=bank_id, imported_at=imported_at)
    if fmt is StatementSource.MT940:
        return parse_mt940(data, bank_id=bank_id, imported_at=imported_at)
    if fmt is StatementSource.CSV:
        return parse_csv(data, bank_id=bank_id, imported_at=imported_at, profile=profile, account_no=account_no)
    if fmt is StatementSource.SNAP_STATEMENT:
        result = ParseResult(StatementSource.SNAP_STATEMENT)
        try:
            obj = json.loads(data.decode("utf-8-sig"), parse_float=Decimal)
        except (UnicodeDecodeError, ValueError, RecursionError):
            result.error(0, StatementReason.MALFORMED_JSON, "statement is not valid UTF-8 JSON")
            return result
        return parse_snap_statement(obj, bank_id=bank_id, imported_at=imported_at, account_no=account_no)
    result = ParseResult(StatementSource.UNKNOWN)
    result.error(0, StatementReason.UNKNOWN_FORMAT, "not a SNAP statement, camt.053/054, MT940 or profile CSV")
    return result
