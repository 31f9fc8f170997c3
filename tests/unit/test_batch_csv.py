"""services.domain.batch_csv: desk-exported CSV -> enrollment bodies and row errors, never a value echoed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from services.domain.batch_csv import (
    NIK_REPEATED_IN_BATCH,
    REQUIRED_COLUMNS,
    BatchRefused,
    BatchRow,
    parse_batch,
)

DATA = Path(__file__).parent / "data" / "batches"
HEADER = ",".join(REQUIRED_COLUMNS)
NIK = "3602045211870001"
PASSPORT = "C1234567"
GOOD = f"{NIK},Siti Aminah,1987-11-12,F,PLACED,{PASSPORT},MY,2027-03-01,2027-03-01,24,JKK;JKM"
SEMI_HEADER = HEADER.replace(",", ";")
SEMI_GOOD = GOOD.replace(",", ";").replace("JKK;JKM", '"JKK;JKM"')
SEMI_PIPE = GOOD.replace(",", ";").replace("JKK;JKM", "JKK|JKM")
LATIN1 = f"{HEADER}\n{GOOD.replace('Siti', 'Sîti')}\n".encode("latin-1")
SITI: dict[str, Any] = {
    "nik": NIK,
    "full_name": "Siti Aminah",
    "date_of_birth": "1987-11-12",
    "sex": "F",
    "participant_type": "PLACED",
    "passport_number": PASSPORT,
    "destination_country": "MY",
    "departure_date": "2027-03-01",
    "contract_start": "2027-03-01",
    "contract_months": 24,
    "programs": ["JKK", "JKM"],
}


def parse(text: str | bytes, *, batch_id: str = "B1", max_rows: int = 100) -> list[BatchRow]:
    raw = text.encode("utf-8") if isinstance(text, str) else text
    return parse_batch(raw, batch_id=batch_id, max_rows=max_rows).rows


def refused(text: str | bytes, **kw: Any) -> BatchRefused:
    with pytest.raises(BatchRefused) as caught:
        parse(text, **kw)
    return caught.value


def leaked(values: list[str], *texts: str) -> list[str]:
    return [v for v in values if any(v in t for t in texts)]


# --- the two desk files ----------------------------------------------------------------------------------
def test_mixed_file_rows_bodies_and_errors() -> None:
    rows = parse((DATA / "mixed.csv").read_bytes(), batch_id="KL-2027-03")
    assert [r.row for r in rows] == [1, 2, 3, 4, 5, 6, 8]  # row 7 is blank: skipped, still counted
    assert [r.request_id for r in rows] == [
        "KL-2027-03#1",
        "KL-2027-03#2",
        "KL-2027-03#3",
        "KL-2027-03#4",
        "KL-2027-03#5",
        None,  # not valid CSV: no id was used
        "KL-2027-03#8",
    ]
    first = rows[0]
    assert first.error is None
    # DD/MM/YYYY padded to ISO, quoted delimiter and doubled quotes kept, the unknown column dropped.
    assert first.body == {**SITI, "employer_name": 'Syarikat "Maju", Sdn Bhd'}
    assert rows[2].body is not None
    assert rows[2].body["programs"] == ["JKK", "JKM", "JHT"]
    assert rows[2].body["jht_monthly_amount_idr"] == 100_000
    assert rows[2].body["date_of_birth"] == "1990-05-15"
    # Domain verdicts are the intake's job: rows 2, 4, 5 still parse (NIK_PROVINCE, UNDER_AGE, MISSING_FIELD).
    assert all(rows[i].error is None for i in (1, 3, 4))
    assert rows[4].body is not None
    assert "passport_number" not in rows[4].body  # empty cell: absent, so the domain says MISSING_FIELD
    malformed = rows[5]
    assert malformed.error is not None
    assert (malformed.error.reason, malformed.error.field) == ("MALFORMED_ROW", None)
    assert malformed.body is None
    assert rows[6].body is not None
    assert rows[6].body["programs"] == ["JKK", "JKM"]
    assert rows[6].body["contract_months"] == 12


def test_semicolon_bom_crlf_excel_header() -> None:
    batch = parse_batch((DATA / "semicolon_bom_crlf.csv").read_bytes(), batch_id="B", max_rows=10)
    assert batch.delimiter == ";"
    first, second = batch.rows
    assert first.request_id == "desk-0001"
    assert first.body == {**SITI, "employer_name": "Syarikat Maju Sdn Bhd"}
    assert second.request_id == "desk-0002"
    assert second.body is not None
    assert second.body["employer_name"] == "Kilang; Johor"
    assert second.body["programs"] == ["JKK", "JKM", "JHT"]
    assert second.body["jht_monthly_amount_idr"] == 100_000
    assert "request_id" not in second.body  # the id is the request's, not a body field


# --- delimiters, BOM, line endings, quotes ------------------------------------------------------------------
@pytest.mark.parametrize(
    "text",
    [
        f"{HEADER}\n{GOOD}\n",
        f"{HEADER}\r\n{GOOD}\r\n",
        f"\ufeff{HEADER}\r\n{GOOD}",
        f"{SEMI_HEADER}\n{SEMI_PIPE}\n",
        f"sep=;\r\n{SEMI_HEADER}\r\n{SEMI_GOOD}\r\n",
        f"\n\n{HEADER}\n{GOOD}\n\n\n",
    ],
    ids=["comma-lf", "comma-crlf", "bom", "semicolon", "excel-sep-line", "blank-lines"],
)
def test_same_body_whatever_the_spelling(text: str) -> None:
    (row,) = parse(text)
    assert row.error is None
    assert row.body == SITI
    assert row.request_id == "B1#1"


def test_quoted_cells() -> None:
    line = GOOD.replace("Siti Aminah", '"Aminah, Siti ""Ami"""')
    (row,) = parse(f"{HEADER}\n{line}\n")
    assert row.body is not None
    assert row.body["full_name"] == 'Aminah, Siti "Ami"'


def test_columns_in_any_order_and_unknown_ignored() -> None:
    header = [*reversed(REQUIRED_COLUMNS), "catatan"]
    cells = [*reversed(GOOD.split(",")), "do not read me"]
    (row,) = parse(",".join(header) + "\n" + ",".join(cells) + "\n")
    assert row.body == SITI


# --- cell spellings ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("cell", "value"),
    [
        ("1987-11-12", "1987-11-12"),
        ("12/11/1987", "1987-11-12"),
        ("12-11-1987", "1987-11-12"),
        ("12.11.1987", "1987-11-12"),
        ("2/3/1987", "1987-03-02"),
        ("1987/11/12", "1987-11-12"),
        ("1987-1-2", "1987-01-02"),
        ("31/02/1987", "1987-02-31"),  # padded only: the domain refuses the calendar date by field
        ("12/11/87", "12/11/87"),  # two-digit year: ambiguous century, left for the domain to refuse
        ("12/11-1987", "12/11-1987"),
        ("11/1987", "11/1987"),
        ("12 Nov 1987", "12 Nov 1987"),
    ],
)
def test_dates(cell: str, value: str) -> None:
    (row,) = parse(f"{HEADER}\n{GOOD.replace('1987-11-12', cell)}\n")
    assert row.body is not None
    assert row.body["date_of_birth"] == value


@pytest.mark.parametrize(
    ("cell", "value"),
    [
        ('"JKK;JKM"', ["JKK", "JKM"]),
        ("JKK|JKM", ["JKK", "JKM"]),
        ('"JKK, JKM, JHT"', ["JKK", "JKM", "JHT"]),
        ("JKK | JKM ||", ["JKK", "JKM"]),
        ("JKK", ["JKK"]),
        ("jkk;jkm", ["jkk", "jkm"]),  # case is meaning: the domain decides (INVALID_FIELD)
    ],
)
def test_programs(cell: str, value: list[str]) -> None:
    (row,) = parse(f"{HEADER}\n{GOOD.replace('JKK;JKM', cell)}\n")
    assert row.body is not None
    assert row.body["programs"] == value


@pytest.mark.parametrize(
    ("cell", "value"),
    [
        ("24", 24),
        ("024", 24),
        ("-1", -1),
        ("1.000", 1000),
        ('"1,000"', 1000),
        ("24.5", "24.5"),
        ("24.0", "24.0"),
        ("1.00", "1.00"),
        ("twelve", "twelve"),
        ("9" * 20, "9" * 20),
    ],
)
def test_integers(cell: str, value: int | str) -> None:
    (row,) = parse(f"{HEADER}\n{GOOD.replace(',24,', f',{cell},')}\n")
    assert row.body is not None
    assert row.body["contract_months"] == value


def test_empty_cells_are_absent_fields() -> None:
    header = HEADER + ",employer_name,jht_monthly_amount_idr,placement_region"
    (row,) = parse(f"{header}\n{GOOD.replace('Siti Aminah', '  ')},, ,\n")
    assert row.body is not None
    assert set(row.body) == set(REQUIRED_COLUMNS) - {"full_name"}


# --- malformed lines: reported by row, never by value ----------------------------------------------------------
def test_malformed_lines_reported_by_row_without_values() -> None:
    secret_name = "Tuti Handayani"
    lines = [
        GOOD,
        GOOD.replace("Siti Aminah", f'"Tuti" {secret_name}'),  # stray quote
        GOOD + ",extra cell",  # cell count differs: the values would land in the wrong fields
        GOOD.rsplit(",", 1)[0],
        GOOD,
    ]
    rows = parse(HEADER + "\n" + "\n".join(lines) + "\n")
    assert [(r.row, r.error.reason if r.error else None) for r in rows] == [
        (1, None),
        (2, "MALFORMED_ROW"),
        (3, "MALFORMED_ROW"),
        (4, "MALFORMED_ROW"),
        (5, None),
    ]
    for r in rows[1:4]:
        assert r.body is None and r.request_id is None
        assert r.error is not None
        assert not leaked([NIK, PASSPORT, secret_name, "extra cell", "Siti"], str(r.error), repr(r))
    assert rows[2].error is not None
    assert "12 cells" in rows[2].error.message


def test_unterminated_quote_swallows_the_rest_into_one_row() -> None:
    rows = parse(f'{HEADER}\n{GOOD}\n"{GOOD}\n{GOOD}\n')
    assert [(r.row, r.error.reason if r.error else None) for r in rows] == [(1, None), (2, "MALFORMED_ROW")]


def test_repr_never_shows_the_body() -> None:
    (row,) = parse(f"{HEADER}\n{GOOD}\n")
    assert NIK not in repr(row) and PASSPORT not in repr(row)


# --- the file as a whole -----------------------------------------------------------------------------------
def test_missing_columns_named() -> None:
    header = HEADER.replace("passport_number,", "").replace(",programs", "")
    err = refused(f"{header}\n{GOOD}\n")
    assert err.reason == "MISSING_COLUMNS"
    assert err.columns == ("passport_number", "programs")
    assert "passport_number" in err.message and "programs" in err.message


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", "NOT_CSV"),
        (b"\n\n", "NOT_CSV"),
        (b'{"nik": "3602045211870001"}', "NOT_CSV"),
        (f"{GOOD}\n{GOOD}\n".encode(), "NOT_CSV"),  # no header row: the first row's values are not echoed
        (b"PK\x03\x04\x14\x00\x06\x00", "NOT_CSV"),  # an .xlsx
        ("nik,full_name\n".encode("utf-16"), "NOT_CSV"),
        (LATIN1, "INVALID_UTF8"),
        (f"{HEADER}\n".encode(), "BATCH_EMPTY"),
        (f"{HEADER}\n,,,,,,,,,,\n\n".encode(), "BATCH_EMPTY"),
        (f"{HEADER},NIK\n{GOOD},x\n".encode(), "DUPLICATE_COLUMN"),
    ],
    ids=["empty", "blank", "json", "no-header", "xlsx", "utf16", "latin1", "header-only", "blank-rows", "dup-col"],
)
def test_file_refused(raw: bytes, reason: str) -> None:
    err = refused(raw)
    assert err.reason == reason
    assert not leaked([NIK, PASSPORT, "Siti"], err.message, repr(err.columns))


def test_no_header_lists_every_required_column() -> None:
    err = refused(f"{GOOD}\n")
    assert err.columns == REQUIRED_COLUMNS


def test_row_limit() -> None:
    rows = "\n".join(GOOD for _ in range(3))
    assert len(parse(f"{HEADER}\n{rows}\n\n\n", max_rows=3)) == 3  # blank rows do not count
    err = refused(f"{HEADER}\n{rows}\n{GOOD}\n", max_rows=3)
    assert err.reason == "BATCH_TOO_LARGE"


# --- request ids ------------------------------------------------------------------------------------------------
def test_request_id_cell_or_default() -> None:
    header = HEADER + ",request_id"
    rows = parse(f"{header}\n{GOOD},desk-1\n{GOOD},\n{GOOD}, desk-3 \n", batch_id="b.7")
    assert [r.request_id for r in rows] == ["desk-1", "b.7#2", "desk-3"]
    assert all(r.error is None for r in rows)


@pytest.mark.parametrize("cell", ["has space", "a" * 65, "semi:colon", NIK, PASSPORT.lower(), "3171011505900003"])
def test_bad_request_id_cell_refused_and_not_echoed(cell: str) -> None:
    other = GOOD.replace(NIK, "3171011505900003")
    rows = parse(f"{HEADER},request_id\n{GOOD},{cell}\n{other},other-1\n")
    first = rows[0]
    assert first.error is not None
    assert (first.error.reason, first.error.field) == ("REQUEST_ID_INVALID", "request_id")
    assert first.request_id is None
    assert cell not in str(first.error)
    assert rows[1].error is None


def test_duplicate_request_ids_refuse_every_row_sharing_one() -> None:
    # Rows 2 and 4 claim "same". Row 3's own id "B1.1" looks like the old default id of row 1, but defaults
    # use "#", outside the cell alphabet, so the two can never clash.
    rows = parse(f"{HEADER},request_id\n{GOOD},\n{GOOD},same\n{GOOD},B1.1\n{GOOD},same\n{GOOD},\n")
    verdicts = [(r.row, r.request_id, r.error.reason if r.error else None) for r in rows]
    assert verdicts == [
        (1, "B1#1", None),
        (2, "same", "DUPLICATE_REQUEST_ID"),
        (3, "B1.1", None),
        (4, "same", "DUPLICATE_REQUEST_ID"),
        (5, "B1#5", None),
    ]
    assert rows[1].body is None and rows[3].body is None and rows[0].body is not None


def test_repeated_nik_warns_from_the_second_row() -> None:
    other = GOOD.replace(NIK, "3171011505900003")
    rows = parse(f"{HEADER}\n{GOOD}\n{other}\n{GOOD}\n{GOOD}\n")
    assert [r.warnings for r in rows] == [(), (), (NIK_REPEATED_IN_BATCH,), (NIK_REPEATED_IN_BATCH,)]
