"""Enrollment batches as desk systems export them: one CSV file -> one enrollment body per data row.

The file (what `POST /v1/enrollments/batch` receives)::

    UTF-8, optional byte order mark; CRLF or LF; an optional Excel "sep=;" first line
    delimiter "," or ";", detected from the header row (the one that names more enrollment columns)
    header row = the enrollment field names of services.domain.enrollment (case-insensitive; spaces and
    hyphens read as "_"), any order; unknown columns are ignored; an optional request_id column

Cells become the JSON body the single-enrollment endpoint would get, so the domain rules and their
reason codes are the same. Only the CSV spelling of a value is translated, never its meaning:

    empty cell                    the field is absent (a required one then fails MISSING_FIELD)
    date_of_birth, departure_date,
    contract_start                YYYY-MM-DD, also DD/MM/YYYY, DD-MM-YYYY, DD.MM.YYYY (day first, as
                                  Indonesian desks write it) and YYYY/MM/DD; padded to YYYY-MM-DD
    contract_months,
    jht_monthly_amount_idr        an integer; "100.000" or "100,000" read as thousands grouping
    programs                      "JKK;JKM", "JKK|JKM" or "JKK,JKM" (quoted where it holds the delimiter)

A cell that does not fit the pattern goes to the domain unchanged, which refuses it with its own code
(INVALID_FIELD + the field). Row numbers: the header is row 0, data rows count from 1 in file order,
blank rows included (so row n is the spreadsheet's row n + 1); blank rows are skipped, not reported.

Refused as a whole (:class:`BatchRefused`): not UTF-8 text, no enrollment header, missing required
columns (named), a column given twice, no data row, more rows than allowed. Refused per row
(:class:`BatchRow.error`): a line that is not valid CSV or whose cell count differs from the header's
(its cells would land in the wrong fields), a request_id cell that is malformed or names a NIK or
passport of the file, a request id used by two rows (the second would be deduplicated away as a replay
of the first, so every row sharing it is refused). Messages are built from constants, column names and
counts; no value from the file is ever put in one.
"""

from __future__ import annotations

import csv
import io
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from services.domain.errors import Rejected

REQUIRED_COLUMNS = (
    "nik",
    "full_name",
    "date_of_birth",
    "sex",
    "participant_type",
    "passport_number",
    "destination_country",
    "departure_date",
    "contract_start",
    "contract_months",
    "programs",
)
OPTIONAL_COLUMNS = ("employer_name", "jht_monthly_amount_idr", "placement_region")
REQUEST_ID_COLUMN = "request_id"
KNOWN_COLUMNS = frozenset((*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS, REQUEST_ID_COLUMN))
DATE_COLUMNS = frozenset({"date_of_birth", "departure_date", "contract_start"})
INT_COLUMNS = frozenset({"contract_months", "jht_monthly_amount_idr"})
PROGRAMS_COLUMN = "programs"
DELIMITERS = (",", ";")

# A warning on a row whose NIK an earlier row of the same file already carries (accepted: an office may
# resubmit a member, but twice in one file is more often a double export).
NIK_REPEATED_IN_BATCH = "NIK_REPEATED_IN_BATCH"

_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")  # the X-Request-Id rule (connectors/intake.py)
_SEP_LINE = re.compile(r"sep=([,;])[ \t]*(?:\r\n|\n|\r|$)", re.IGNORECASE)
_DAY_FIRST = re.compile(r"([0-9]{1,2})([/.-])([0-9]{1,2})\2([0-9]{4})")
_YEAR_FIRST = re.compile(r"([0-9]{4})([/.-])([0-9]{1,2})\2([0-9]{1,2})")
_INTEGER = re.compile(r"[+-]?[0-9]{1,15}")
_GROUPED = re.compile(r"[0-9]{1,3}(?:\.[0-9]{3})+|[0-9]{1,3}(?:,[0-9]{3})+")
_PROGRAM_SPLIT = re.compile(r"[;|,]")
_HEADER_SPACE = re.compile(r"[\s-]+")


class BatchReason(StrEnum):
    """Stable reason codes of a refused batch or row. Add codes; never rename one."""

    # the file
    INVALID_UTF8 = "INVALID_UTF8"
    NOT_CSV = "NOT_CSV"
    MISSING_COLUMNS = "MISSING_COLUMNS"
    DUPLICATE_COLUMN = "DUPLICATE_COLUMN"
    BATCH_EMPTY = "BATCH_EMPTY"
    BATCH_TOO_LARGE = "BATCH_TOO_LARGE"
    # a row
    MALFORMED_ROW = "MALFORMED_ROW"
    REQUEST_ID_INVALID = "REQUEST_ID_INVALID"
    DUPLICATE_REQUEST_ID = "DUPLICATE_REQUEST_ID"


class BatchRefused(Exception):
    """The file as a whole. ``columns`` names missing (or duplicated) enrollment columns, never a value."""

    def __init__(self, reason: BatchReason, message: str, columns: tuple[str, ...] = ()) -> None:
        super().__init__(reason.value, message)
        self.reason = reason.value
        self.message = message
        self.columns = columns


@dataclass(frozen=True)
class BatchRow:
    """One data row: a body to submit under ``request_id``, or an ``error`` (then ``body`` is None).

    ``request_id`` is None when the row's own id cell could not be used (it is then not echoed).
    """

    row: int
    request_id: str | None
    body: dict[str, Any] | None = field(default=None, repr=False)  # personal data: never in a repr or log
    error: Rejected | None = None
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class Batch:
    delimiter: str
    rows: list[BatchRow] = field(default_factory=list)


def default_request_id(batch_id: str, row: int) -> str:
    """The request id of a row without a request_id cell: re-sending the batch repeats it.

    "#" is outside the X-Request-Id alphabet (and the request_id cell's), so a default id can never equal an
    id the office chose for a single enrollment or a cell: those would be dropped downstream as duplicates.
    """
    return f"{batch_id}#{row}"


def parse_batch(raw: bytes, *, batch_id: str, max_rows: int) -> Batch:
    """Read a batch file (see the module docstring). Raises :class:`BatchRefused` for the file as a whole."""
    text = _decode(raw)
    forced, text = _sep_line(text)
    delimiter = forced or _detect_delimiter(text)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    header = _header(reader)
    positions = _positions(header)

    cells_by_row: list[tuple[int, list[str] | None]] = []  # None: not valid CSV
    row = 0
    data_rows = 0
    while True:
        row += 1
        try:
            cells: list[str] | None = next(reader)
        except StopIteration:
            break
        except csv.Error:
            cells = None
        if cells is not None and not any(cell.strip() for cell in cells):
            continue
        data_rows += 1
        if data_rows > max_rows:
            raise BatchRefused(BatchReason.BATCH_TOO_LARGE, f"a batch holds at most {max_rows} rows")
        cells_by_row.append((row, cells))
    if not cells_by_row:
        raise BatchRefused(BatchReason.BATCH_EMPTY, "the file has a header but no data row")

    rows = [_row(number, cells, positions, len(header), batch_id) for number, cells in cells_by_row]
    return Batch(delimiter, _check_request_ids(rows))


# --- the file ------------------------------------------------------------------------------------------
def _decode(raw: bytes) -> str:
    if raw.startswith(b"PK\x03\x04") or b"\x00" in raw:  # a spreadsheet (xlsx is a zip) or UTF-16 text
        raise BatchRefused(BatchReason.NOT_CSV, "the body is a binary file; export the sheet as CSV UTF-8")
    try:
        text = raw.decode("utf-8", errors="strict")
    except UnicodeDecodeError:
        raise BatchRefused(BatchReason.INVALID_UTF8, "the file is not UTF-8; export the sheet as CSV UTF-8") from None
    return text.removeprefix("\ufeff")


def _sep_line(text: str) -> tuple[str | None, str]:
    """Excel's optional first line "sep=;" names the delimiter and is not part of the table."""
    match = _SEP_LINE.match(text)
    if match is None:
        return None, text
    return match.group(1), text[match.end() :]


def _column_name(cell: str) -> str:
    return _HEADER_SPACE.sub("_", cell.strip().lower())


def _first_record(text: str, delimiter: str) -> list[str]:
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        for record in reader:
            if any(cell.strip() for cell in record):
                return record
    except csv.Error:
        return []
    return []


def _detect_delimiter(text: str) -> str:
    """The delimiter under which the header names more enrollment columns (a tie keeps ",")."""
    best, best_known = DELIMITERS[0], -1
    for delimiter in DELIMITERS:
        known = len({_column_name(c) for c in _first_record(text, delimiter)} & KNOWN_COLUMNS)
        if known > best_known:
            best, best_known = delimiter, known
    return best


def _header(reader: Iterator[list[str]]) -> list[str]:
    try:
        for record in reader:
            if any(cell.strip() for cell in record):
                return [_column_name(cell) for cell in record]
    except csv.Error:
        pass
    raise BatchRefused(BatchReason.NOT_CSV, "no enrollment header row found", REQUIRED_COLUMNS)


def _positions(header: list[str]) -> dict[str, int]:
    """Known column -> cell index. Unknown names are ignored (and never echoed: they may be data)."""
    counts = Counter(name for name in header if name in KNOWN_COLUMNS)
    twice = tuple(sorted(name for name, n in counts.items() if n > 1))
    if twice:
        raise BatchRefused(BatchReason.DUPLICATE_COLUMN, "column(s) given twice: " + ", ".join(twice), twice)
    missing = tuple(name for name in REQUIRED_COLUMNS if name not in counts)
    if len(missing) == len(REQUIRED_COLUMNS):
        raise BatchRefused(BatchReason.NOT_CSV, "no enrollment header row found", missing)
    if missing:
        raise BatchRefused(
            BatchReason.MISSING_COLUMNS, "the header lacks required column(s): " + ", ".join(missing), missing
        )
    return {name: index for index, name in enumerate(header) if name in KNOWN_COLUMNS}


# --- a row ---------------------------------------------------------------------------------------------
def _row(row: int, cells: list[str] | None, positions: dict[str, int], width: int, batch_id: str) -> BatchRow:
    if cells is None:
        return BatchRow(row, None, error=Rejected(BatchReason.MALFORMED_ROW, None, "the line is not valid CSV"))
    if len(cells) != width:
        return BatchRow(
            row,
            None,
            error=Rejected(
                BatchReason.MALFORMED_ROW,
                None,
                f"the row has {len(cells)} cells, the header {width}; quote cells that contain the delimiter",
            ),
        )
    body: dict[str, Any] = {}
    request_id = default_request_id(batch_id, row)
    for name, index in positions.items():
        cell = cells[index].strip()
        if not cell:
            continue
        if name == REQUEST_ID_COLUMN:
            if _REQUEST_ID.fullmatch(cell) is None:
                return _request_id_refused(row)
            request_id = cell
        else:
            body[name] = _value(name, cell)
    return BatchRow(row, request_id, body)


def _request_id_refused(row: int) -> BatchRow:
    # The cell itself is not echoed: it failed the id rule or names a NIK/passport.
    return BatchRow(
        row,
        None,
        error=Rejected(
            BatchReason.REQUEST_ID_INVALID,
            REQUEST_ID_COLUMN,
            "must be 1-64 characters of A-Z a-z 0-9 . _ - and not a NIK or passport number",
        ),
    )


def _value(name: str, cell: str) -> Any:
    if name in DATE_COLUMNS:
        return _date(cell)
    if name in INT_COLUMNS:
        return _integer(cell)
    if name == PROGRAMS_COLUMN:
        return [item.strip() for item in _PROGRAM_SPLIT.split(cell) if item.strip()]
    return cell


def _date(cell: str) -> str:
    day_first = _DAY_FIRST.fullmatch(cell)
    if day_first is not None:
        day, _, month, year = day_first.groups()
        return f"{year}-{int(month):02d}-{int(day):02d}"
    year_first = _YEAR_FIRST.fullmatch(cell)
    if year_first is not None:
        year, _, month, day = year_first.groups()
        return f"{year}-{int(month):02d}-{int(day):02d}"
    return cell


def _integer(cell: str) -> int | str:
    if _INTEGER.fullmatch(cell) is not None:
        return int(cell)
    if _GROUPED.fullmatch(cell) is not None:
        return int(cell.replace(".", "").replace(",", ""))
    return cell


def _check_request_ids(rows: list[BatchRow]) -> list[BatchRow]:
    """Refuse every row whose request id another row also uses, and any id naming a NIK or passport of the
    file; warn on a NIK seen in an earlier row."""
    personal: set[str] = set()
    for r in rows:
        if r.body is not None:
            personal.update(str(r.body.get(k, "")).upper() for k in ("nik", "passport_number"))
    personal.discard("")
    ids = Counter(r.request_id for r in rows if r.error is None)
    seen_niks: set[str] = set()
    out: list[BatchRow] = []
    for r in rows:
        if r.error is not None or r.body is None or r.request_id is None:
            out.append(r)
            continue
        if r.request_id.upper() in personal:  # it travels in a Kafka header and the answer
            out.append(_request_id_refused(r.row))
            continue
        if ids[r.request_id] > 1:
            out.append(
                BatchRow(
                    r.row,
                    r.request_id,
                    error=Rejected(
                        BatchReason.DUPLICATE_REQUEST_ID,
                        REQUEST_ID_COLUMN,
                        "another row of this file has the same request id; give each row its own",
                    ),
                )
            )
            continue
        nik = r.body.get("nik")
        warnings: tuple[str, ...] = ()
        if isinstance(nik, str):
            if nik in seen_niks:
                warnings = (NIK_REPEATED_IN_BATCH,)
            seen_niks.add(nik)
        out.append(BatchRow(r.row, r.request_id, r.body, warnings=warnings))
    return out
