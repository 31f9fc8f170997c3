"""Bank statement import (domain.md 4.7): SNAP statement JSON, ISO 20022 camt.054/053, SWIFT MT940, CSV.

Pure (standard library and pydantic only). Every parser returns a :class:`ParseResult` whose ``entries``
are :class:`~services.domain.models.StatementEntry` records with deterministic ids and whose ``errors``
are per-line :class:`LineError` (stable reason code, no personal data); one bad line never stops the rest.
"""

from __future__ import annotations

from services.domain.statements._common import (
    MAX_STATEMENT_BYTES,
    Balances,
    Discrepancy,
    LineError,
    ParseResult,
    StatementReason,
    Totals,
)
from services.domain.statements.camt import parse_camt
from services.domain.statements.csv_profile import DEFAULT_CSV_PROFILE, CsvProfile, parse_csv
from services.domain.statements.detect import detect_format, parse_statement
from services.domain.statements.mt940 import parse_mt940
from services.domain.statements.snap import parse_snap_statement
from services.domain.statements.totals import check_totals

__all__ = [
    "DEFAULT_CSV_PROFILE",
    "MAX_STATEMENT_BYTES",
    "Balances",
    "CsvProfile",
    "Discrepancy",
    "LineError",
    "ParseResult",
    "StatementReason",
    "Totals",
    "check_totals",
    "detect_format",
    "parse_camt",
    "parse_csv",
    "parse_mt940",
    "parse_snap_statement",
    "parse_statement",
]
