"""Bank statement parsers (services.domain.statements): samples, bad lines, ids, XML safety, totals, fuzz."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.domain.models import EntryDetailStatus, EntryDirection, StatementSource
from services.domain.statements import (
    DEFAULT_CSV_PROFILE,
    CsvProfile,
    Discrepancy,
    ParseResult,
    StatementReason,
    check_totals,
    detect_format,
    parse_camt,
    parse_csv,
    parse_mt940,
    parse_snap_statement,
    parse_statement,
)

DATA = Path(__file__).parent / "data" / "statements"
NOW = datetime(2025, 7, 16, 1, 0, tzinfo=UTC)
FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
REASONS = {r.value for r in StatementReason}


def _read(name: str) -> bytes:
    return (DATA / name).read_bytes()


def _summary(result: ParseResult) -> list[tuple[str, Decimal, str]]:
    return [(e.direction.value, e.amount, e.detail_status.value) for e in result.entries]


def _no_full_account(result: ParseResult, account: str) -> None:
    for entry in result.entries:
        assert account not in entry.model_dump_json()
        assert entry.account_ref.endswith(account[-4:])
        assert set(entry.account_ref[:-4]) <= {"*"}
    for err in result.errors:
        assert account not in err.message


# --- MT940 -------------------------------------------------------------------------------------------


def test_mt940_sample_parses_with_exact_amounts_directions_and_reversal():
    result = parse_mt940(_read("bni_20250715.sta"), bank_id="BNI", imported_at=NOW)
    assert result.errors == []
    assert result.source is StatementSource.MT940
    assert _summary(result) == [
        ("CREDIT", Decimal("370000.00"), "BOOK"),
        ("CREDIT", Decimal("494500.00"), "BOOK"),
        ("DEBIT", Decimal("2500.00"), "BOOK"),
        ("DEBIT", Decimal("370000.00"), "REVERSAL"),  # RC: reversal of a credit, booked as a debit
        ("CREDIT", Decimal("105000.00"), "BOOK"),
    ]
    first = result.entries[0]
    assert first.bank_ref == "BNI2507150001"
    assert first.customer_ref == "VA8812300001"
    assert first.statement_ref == "STMT250715001"
    assert first.booking_date == first.value_date == date(2025, 7, 15)
    assert first.currency == "IDR"
    assert first.line_no == 6
    assert result.entries[1].narrative == "BPJSTK PMI VA ************0000 SETORAN IURAN KOREA G TO G 36 BULAN"
    assert result.entries[2].customer_ref is None  # NONREF
    assert result.entries[4].bank_ref is None
    assert result.entries[4].narrative is not None and "9876543210123" not in result.entries[4].narrative
    assert result.balances is not None
    assert (result.balances.opening, result.balances.closing) == (Decimal("15000000.00"), Decimal("15597000.00"))
    assert check_totals(result) == []
    _no_full_account(result, "0123456789")


MT940_WITH_BAD_LINES = """:20:STMT-BAD
:25:0011223344
:28C:1/1
:60F:C250101IDR1000,00
:61:2501020102C100,00NTRFREF1//B1
:86:GOOD ONE
:61:2501020102X100,00NTRFREF2//B2
:86:BAD MARK
:61:2513020102C100,00NTRFREF3//B3
:61:2501020102C100,123NTRFREF4//B4
:86:TOO MANY DECIMALS
:61:2501030103D50,00NTRFREF5//B5
:62F:C250103IDR1050,00
"""


def test_mt940_bad_lines_are_reported_with_line_numbers_and_the_rest_parses():
    result = parse_mt940(MT940_WITH_BAD_LINES, bank_id="BNI", imported_at=NOW)
    assert [(e.bank_ref, e.line_no) for e in result.entries] == [("B1", 5), ("B5", 12)]
    assert [(e.line_no, e.reason) for e in result.errors] == [
        (7, "BAD_LINE"),
        (8, "ORPHAN_DETAIL"),
        (9, "BAD_DATE"),
        (10, "BAD_LINE"),
        (11, "ORPHAN_DETAIL"),
    ]
    assert Discrepancy.LINES_REJECTED in check_totals(result)
    _no_full_account(result, "0011223344")


def test_mt940_balance_mismatch_is_flagged():
    text = MT940_WITH_BAD_LINES.replace(":62F:C250103IDR1050,00", ":62F:C250103IDR1049,99")
    assert Discrepancy.BALANCE_MISMATCH in check_totals(parse_mt940(text, bank_id="BNI", imported_at=NOW))


def test_mt940_entry_date_across_new_year_and_rd_reversal():
    text = ":20:X\n:25:99887766\n:60F:C241231IDR0,00\n:61:2501011231RD10,5NMSCNONREF//R1\n:62F:C250101IDR10,50\n"
    result = parse_mt940(text, bank_id="BNI", imported_at=NOW)
    (entry,) = result.entries
    assert entry.direction is EntryDirection.CREDIT and entry.detail_status is EntryDetailStatus.REVERSAL
    assert (entry.value_date, entry.booking_date, entry.amount) == (
        date(2025, 1, 1),
        date(2024, 12, 31),
        Decimal("10.50"),
    )
    assert check_totals(result) == []


def test_mt940_without_account_or_currency_rejects_lines():
    result = parse_mt940(":20:X\n:61:2501010101C1,00NTRFNONREF\n", bank_id="BNI", imported_at=NOW)
    assert result.entries == [] and [e.reason for e in result.errors] == ["MISSING_ACCOUNT"]


# --- camt --------------------------------------------------------------------------------------------


def test_camt054_sample_parses_credit_debit_book_pdng():
    result = parse_camt(_read("mandiri_camt054.xml"), bank_id="MANDIRI", imported_at=NOW)
    assert result.errors == []
    assert result.source is StatementSource.CAMT054
    assert _summary(result) == [
        ("CREDIT", Decimal("370000.00"), "BOOK"),
        ("DEBIT", Decimal("6500.00"), "BOOK"),
        ("CREDIT", Decimal("494500.00"), "PDNG"),
    ]
    first, second, third = result.entries
    assert first.bank_ref == "MDR250715000101"
    assert first.end_to_end_id == "PRQ-20250715-7781"
    assert first.customer_ref == "   881233817263540192"  # the VA keeps its space-padded prefix
    assert first.narrative == "BPJSTK PMI IURAN JKK JKM"
    assert first.statement_ref == "MDR-NTF-20250715-0001"
    assert second.end_to_end_id is None  # NOTPROVIDED
    assert third.booking_date == date(2025, 7, 15) and third.value_date is None
    assert [e.line_no for e in result.entries] == [1, 2, 3]
    assert result.balances is None and result.totals is None
    assert check_totals(result) == [Discrepancy.NO_DECLARED_TOTALS]
    _no_full_account(result, "1370012345678")


def test_camt053_sample_parses_balances_totals_and_reversal():
    result = parse_camt(_read("bri_camt053.xml"), bank_id="BRI", imported_at=NOW)
    assert result.errors == []
    assert result.source is StatementSource.CAMT053
    assert _summary(result) == [
        ("CREDIT", Decimal("370000.00"), "BOOK"),
        ("CREDIT", Decimal("494500.00"), "BOOK"),
        ("DEBIT", Decimal("2500.00"), "BOOK"),
        ("DEBIT", Decimal("370000.00"), "REVERSAL"),
    ]
    assert result.entries[1].value_date == date(2025, 7, 16)
    assert result.entries[2].narrative == "BIAYA ADMIN"
    assert result.balances is not None
    assert (result.balances.opening, result.balances.closing) == (Decimal("1000000.00"), Decimal("1492000.00"))
    assert result.totals is not None and result.totals.credit_amount == Decimal("864500.00")
    assert check_totals(result) == []
    _no_full_account(result, "034101000123307")


def test_camt053_totals_and_balances_mismatch():
    data = _read("bri_camt053.xml").replace(b"<Sum>864500.00</Sum>", b"<Sum>864500.01</Sum>")
    data = data.replace(b"1492000.00", b"1492000.10")
    codes = check_totals(parse_camt(data, bank_id="BRI", imported_at=NOW))
    assert codes == [Discrepancy.CREDIT_TOTAL_MISMATCH, Discrepancy.BALANCE_MISMATCH]


def test_camt_bad_entries_are_reported_and_good_ones_parse():
    data = _read("mandiri_camt054.xml")
    data = data.replace(b"<CdtDbtInd>DBIT</CdtDbtInd>", b"<CdtDbtInd>XXXX</CdtDbtInd>")
    data = data.replace(b'<Amt Ccy="IDR">494500.00</Amt>', b'<Amt Ccy="IDR">494,500.00</Amt>')
    result = parse_camt(data, bank_id="MANDIRI", imported_at=NOW)
    assert [e.line_no for e in result.entries] == [1]
    assert [(e.line_no, e.reason) for e in result.errors] == [(2, "BAD_DIRECTION"), (3, "BAD_AMOUNT")]


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
]>
<Document><BkToCstmrStmt><GrpHdr><MsgId>&lol3;</MsgId></GrpHdr></BkToCstmrStmt></Document>"""
XXE = b"""<?xml version="1.0"?>
<!doctype Document [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<Document><BkToCstmrDbtCdtNtfctn><GrpHdr><MsgId>&xxe;</MsgId></GrpHdr></BkToCstmrDbtCdtNtfctn></Document>"""
XXE_UTF16 = XXE.decode().replace('version="1.0"', 'version="1.0" encoding="UTF-16"').encode("utf-16")


@pytest.mark.parametrize("payload", [BILLION_LAUGHS, XXE, XXE_UTF16], ids=["billion-laughs", "xxe", "xxe-utf16"])
def test_entity_declarations_are_rejected_before_parsing(payload):
    for result in (
        parse_camt(payload, bank_id="B", imported_at=NOW),
        parse_statement(payload, bank_id="B", imported_at=NOW, filename="x.xml"),
    ):
        assert result.entries == []
        assert result.errors and result.errors[0].reason in {"UNSAFE_XML", "BAD_ENCODING", "UNKNOWN_FORMAT"}
    assert parse_camt(BILLION_LAUGHS, bank_id="B", imported_at=NOW).errors[0].reason == "UNSAFE_XML"
    assert parse_camt(XXE, bank_id="B", imported_at=NOW).errors[0].reason == "UNSAFE_XML"


def test_undeclared_entity_is_malformed_xml():
    result = parse_camt(b"<Document><BkToCstmrStmt>&x;</BkToCstmrStmt></Document>", bank_id="B", imported_at=NOW)
    assert [e.reason for e in result.errors] == ["MALFORMED_XML"]


# --- SNAP ---------------------------------------------------------------------------------------------


def test_snap_statement_sample_keeps_error_correction_and_checks_totals():
    body = json.loads(_read("bni_snap_statement.json"))
    result = parse_snap_statement(body, bank_id="BNI", imported_at=NOW, account_no="0011223344")
    assert result.errors == []
    assert _summary(result) == [
        ("CREDIT", Decimal("370000.00"), "SUCCESS"),
        ("CREDIT", Decimal("494500.00"), "SUCCESS"),
        ("DEBIT", Decimal("370000.00"), "ERROR_CORRECTION"),
    ]
    first = result.entries[0]
    assert first.customer_ref == "   88123381726354019283746"
    assert result.entries[1].customer_ref == "PRQ-20250715-0102"
    assert first.bank_ref == "TRX2507150000101" and first.statement_ref == "2025071500001234"
    assert result.totals is not None
    assert (result.totals.credit_count, result.totals.credit_amount) == (2, Decimal("864500.00"))
    assert check_totals(result) == []
    _no_full_account(result, "0011223344")


def test_snap_booking_date_is_the_wib_business_date():
    body = json.loads(_read("bni_snap_statement.json"))
    body["detailData"][1]["transactionDate"] = "2025-07-15T17:30:00+00:00"  # 00:30 WIB next day
    result = parse_snap_statement(body, bank_id="BNI", imported_at=NOW, account_no="0011223344")
    assert result.entries[1].booking_date == date(2025, 7, 16)


def test_snap_bad_items_are_reported_and_totals_mismatch():
    body = json.loads(_read("bni_snap_statement.json"))
    body["detailData"].insert(1, {"amount": {"value": 1.5, "currency": "IDR"}, "type": "CREDIT"})
    body["detailData"].append("not an object")
    body["detailData"].append({"amount": {"value": "1.00", "currency": "IDR"}, "type": "SIDEWAYS"})
    body["hasMore"] = "Y"
    result = parse_snap_statement(body, bank_id="BNI", imported_at=NOW, account_no="0011223344")
    assert [e.line_no for e in result.entries] == [1, 3, 4]
    assert [(e.line_no, e.reason) for e in result.errors] == [(2, "BAD_AMOUNT"), (5, "BAD_LINE"), (6, "BAD_DIRECTION")]
    assert check_totals(result) == [Discrepancy.LINES_REJECTED, Discrepancy.HAS_MORE_PAGES]
    body["totalCreditEntries"]["numberOfEntries"] = "3"
    body["totalCreditEntries"]["amount"]["value"] = "864500.01"
    codes = check_totals(parse_snap_statement(body, bank_id="BNI", imported_at=NOW, account_no="0011223344"))
    assert Discrepancy.CREDIT_COUNT_MISMATCH in codes and Discrepancy.CREDIT_TOTAL_MISMATCH in codes


def test_snap_without_account_is_a_document_error():
    body = json.loads(_read("bni_snap_statement.json"))
    result = parse_snap_statement(body, bank_id="BNI", imported_at=NOW)
    assert result.entries == [] and [(e.line_no, e.reason) for e in result.errors] == [(0, "MISSING_ACCOUNT")]


# --- CSV ---------------------------------------------------------------------------------------------


def test_csv_sample_parses_with_the_default_profile():
    result = parse_csv(_read("cimb_statement.csv"), bank_id="CIMB", imported_at=NOW)
    assert result.errors == []
    assert _summary(result) == [
        ("CREDIT", Decimal("370000.00"), "SUCCESS"),
        ("CREDIT", Decimal("494500.00"), "SUCCESS"),
        ("DEBIT", Decimal("370000.00"), "ERROR_CORRECTION"),
        ("DEBIT", Decimal("2500.00"), "SUCCESS"),
    ]
    assert [e.line_no for e in result.entries] == [2, 3, 4, 5]
    assert result.entries[0].narrative == "SETORAN IURAN PMI, JKK JKM"
    assert result.entries[2].value_date is None
    _no_full_account(result, "800123456789")


def test_csv_bad_lines_and_custom_profile():
    profile = CsvProfile(
        name="semicolon-id",
        columns={"booking_date": "Tanggal", "direction": "D/K", "amount": "Jumlah", "bank_ref": "Ref"},
        delimiter=";",
        date_format="%d/%m/%Y",
        decimal_separator=",",
        thousands_separator=".",
        credit_values=frozenset({"K"}),
        debit_values=frozenset({"D"}),
    )
    text = (
        "Tanggal;D/K;Jumlah;Ref\n15/07/2025;K;370.000,00;R1\n31/02/2025;K;1,00;R2\n"
        "15/07/2025;X;1,00;R3\n\n15/07/2025;D;2.500,00;R4\n"
    )
    result = parse_csv(text, bank_id="BCA", imported_at=NOW, profile=profile, account_no="5556667778")
    assert [(e.bank_ref, e.amount, e.line_no) for e in result.entries] == [
        ("R1", Decimal("370000.00"), 2),
        ("R4", Decimal("2500.00"), 6),
    ]
    assert [(e.line_no, e.reason) for e in result.errors] == [(3, "BAD_DATE"), (4, "BAD_DIRECTION")]
    assert result.entries[0].account_ref == "******7778"


def test_csv_header_without_required_columns_is_rejected():
    result = parse_csv("date,amount\n2025-07-15,1.00\n", bank_id="B", imported_at=NOW)
    assert result.entries == [] and [(e.line_no, e.reason) for e in result.errors] == [(1, "BAD_HEADER")]


# --- detection, dispatch, ids -------------------------------------------------------------------------

SAMPLE_FILES = {
    "bni_20250715.sta": "MT940",
    "mandiri_camt054.xml": "CAMT054",
    "bri_camt053.xml": "CAMT053",
    "bni_snap_statement.json": "SNAP_STATEMENT",
    "cimb_statement.csv": "CSV",
}


@pytest.mark.parametrize("name", sorted(SAMPLE_FILES))
def test_detect_and_parse_statement_dispatch(name):
    data = _read(name)
    assert detect_format(data) == SAMPLE_FILES[name]
    result = parse_statement(data, bank_id="BNI", imported_at=NOW, filename=name, account_no="0011223344")
    assert result.source.value == SAMPLE_FILES[name]
    assert result.entries and result.errors == []


@pytest.mark.parametrize("name", sorted(SAMPLE_FILES))
def test_same_file_twice_gives_identical_entry_ids(name):
    later = datetime(2025, 7, 17, tzinfo=UTC)
    first = parse_statement(_read(name), bank_id="BNI", imported_at=NOW, account_no="0011223344")
    again = parse_statement(_read(name), bank_id="BNI", imported_at=later, account_no="0011223344")
    ids = [e.entry_id for e in first.entries]
    assert ids == [e.entry_id for e in again.entries]
    assert len(set(ids)) == len(ids)
    other_bank = parse_statement(_read(name), bank_id="BRI", imported_at=NOW, account_no="0011223344")
    assert not set(ids) & {e.entry_id for e in other_bank.entries}


def test_unknown_and_malformed_inputs_are_document_errors():
    assert detect_format(b"hello world") == "UNKNOWN"
    assert parse_statement(b"hello", bank_id="B", imported_at=NOW).errors[0].reason == "UNKNOWN_FORMAT"
    bad_json = parse_statement(b'{"detailData": [', bank_id="B", imported_at=NOW)
    assert bad_json.errors[0].reason == "MALFORMED_JSON"
    assert parse_mt940(b"\xff\xfe\x00", bank_id="B", imported_at=NOW).errors[0].reason == "BAD_ENCODING"


# --- fuzz: never raises, errors carry known reason codes -----------------------------------------------


def _assert_clean(result: ParseResult) -> None:
    assert isinstance(result, ParseResult)
    for err in result.errors:
        assert err.reason in REASONS and err.line_no >= 0


@FUZZ
@given(st.binary(max_size=2000))
def test_fuzz_parse_statement_bytes(data):
    _assert_clean(parse_statement(data, bank_id="B", imported_at=NOW, account_no="1234567890"))
    assert detect_format(data) in {s.value for s in StatementSource}


_MT940_LINES = st.sampled_from(
    [
        ":20:REF",
        ":25:1234567890",
        ":28C:1/1",
        ":60F:C250101IDR1,00",
        ":61:2501010101C1,00NTRFNONREF//X",
        ":61:2501019999RC5,NMSC",
        ":86:TEXT",
        ":62F:D250101IDR0,00",
        "-}",
        "{4:",
        " cont",
    ]
)


@FUZZ
@given(st.lists(st.one_of(_MT940_LINES, st.text(max_size=40)), max_size=30))
def test_fuzz_mt940(lines):
    _assert_clean(parse_mt940("\n".join(lines), bank_id="B", imported_at=NOW))


_XML_BITS = st.sampled_from(
    [
        "<Document>",
        "</Document>",
        "<BkToCstmrStmt>",
        "</BkToCstmrStmt>",
        "<BkToCstmrDbtCdtNtfctn>",
        "<Stmt>",
        "</Stmt>",
        "<Ntfctn>",
        "<Ntry>",
        "</Ntry>",
        '<Amt Ccy="IDR">1.00</Amt>',
        "<Amt>x</Amt>",
        "<CdtDbtInd>CRDT</CdtDbtInd>",
        "<BookgDt><Dt>2025-02-30</Dt></BookgDt>",
        "<Acct><Id><IBAN>ID1</IBAN></Id></Acct>",
        "<Bal><Tp><CdOrPrtry><Cd>OPBD</Cd></CdOrPrtry></Tp></Bal>",
        "<TxsSummry><TtlCdtNtries><NbOfNtries>x",
        "</NbOfNtries></TtlCdtNtries></TxsSummry>",
        "&amp;",
        "<!DOCTYPE",
    ]
)


@FUZZ
@given(st.lists(st.one_of(_XML_BITS, st.text(max_size=10)), max_size=40))
def test_fuzz_camt(bits):
    _assert_clean(parse_camt("".join(bits).encode("utf-8", "surrogatepass"), bank_id="B", imported_at=NOW))


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20) | st.decimals(allow_nan=True),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "detailData",
                    "amount",
                    "value",
                    "currency",
                    "type",
                    "transactionDate",
                    "transactionDetailStatus",
                    "totalCreditEntries",
                    "numberOfEntries",
                    "balance",
                    "startingBalance",
                    "detailInfo",
                    "transactionId",
                    "remark",
                    "accountNo",
                ]
            )
            | st.text(max_size=5),
            inner,
            max_size=6,
        )
    ),
    max_leaves=30,
)


@FUZZ
@given(_JSON)
def test_fuzz_snap(obj):
    _assert_clean(parse_snap_statement(obj, bank_id="B", imported_at=NOW, account_no="1234567890"))
    _assert_clean(
        parse_snap_statement(
            {"detailData": [obj], "totalCreditEntries": obj}, bank_id="B", imported_at=NOW, account_no="1234567890"
        )
    )


@FUZZ
@given(st.text(max_size=600))
def test_fuzz_csv(text):
    header = ",".join(DEFAULT_CSV_PROFILE.columns.values()) + "\n"
    _assert_clean(parse_csv(header + text, bank_id="B", imported_at=NOW))
    _assert_clean(parse_csv(text, bank_id="B", imported_at=NOW, account_no="1234567890"))
