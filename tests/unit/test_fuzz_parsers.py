"""Fuzzing the parsers that read partner input: hostile bytes in, a parse or the documented refusal out.

Bounded (each property runs a few hundred examples at most, the file well under 30 s on two loaded cores).
Inputs are arbitrary bytes/text and, to get past the first byte, mutations of the real sample files in
tests/unit/data (byte flips, splices, truncations, digit and date substitutions) plus structure-aware JSON.

Contracts checked (each module's docstring):
- statements (services.domain.statements, connectors.statement_ingest): never raise; every entry is a valid
  StatementEntry that Kafka (JSON) and Avro can carry; every error has a StatementReason and no account-like
  digits in its message.
- KBRI batch CSV (services.domain.batch_csv): a Batch, or BatchRefused; row errors are Rejected with a
  BatchReason; nothing else escapes.
- connectors.http_common.parse_json_strict: a value equal to json.loads, or HttpProblem with its reason code.
- NIK (services.domain.nik): valid iff the rule of domain.md 2.1 / 7.3 (written out independently below) says
  so, with the same reason code; masking never shows the NIK.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import fastavro
from hypothesis import event, example, given, settings
from hypothesis import strategies as st

from connectors.http_common import (
    DUPLICATE_KEY,
    INVALID_JSON,
    INVALID_UTF8,
    JSON_TOO_DEEP,
    NON_FINITE_NUMBER,
    HttpProblem,
    parse_json_strict,
)
from connectors.kafka_edge import InMemoryProducer
from connectors.statement_ingest import ORIGIN_API, format_report, ingest_statement, parse_upload
from services.avro import load_schemas, to_datum
from services.config import Settings
from services.domain.batch_csv import Batch, BatchReason, BatchRefused, parse_batch
from services.domain.errors import Reason, Rejected
from services.domain.identity import mask_tail
from services.domain.models import Sex, StatementEntry
from services.domain.nik import check_nik
from services.domain.statements import (
    Discrepancy,
    ParseResult,
    StatementReason,
    check_totals,
    parse_camt,
    parse_csv,
    parse_mt940,
    parse_snap_statement,
    parse_statement,
)
from services.logs import mask_text

DATA = Path(__file__).resolve().parent / "data"
STATEMENT_SEEDS = {p.name: p.read_bytes() for p in sorted((DATA / "statements").iterdir()) if p.is_file()}
BATCH_SEEDS = {p.name: p.read_bytes() for p in sorted((DATA / "batches").iterdir()) if p.is_file()}
IMPORTED_AT = datetime(2025, 7, 16, 1, 0, tzinfo=UTC)
ENTRY_SCHEMA = load_schemas(Settings().schemas_dir)["sinergi.StatementEntry"]
STATEMENT_REASONS = {r.value for r in StatementReason}
DISCREPANCIES = {d.value for d in Discrepancy}
_ACCOUNT_LIKE = re.compile(r"[0-9]{10,}")

FUZZ = settings(max_examples=150, deadline=None)
SLOW_FUZZ = settings(max_examples=60, deadline=None)


# --- mutation of seed files ------------------------------------------------------------------------------

_TOKENS = [
    b"",
    b"\x00",
    b"\xff",
    b"\xc3",
    b"\xef\xbb\xbf",
    b"\r\n",
    b"\n",
    b",",
    b";",
    b'"',
    b"\\",
    b"{",
    b"}",
    b"[",
    b"]",
    b"<",
    b">",
    b"</",
    b"&amp;",
    b"&#0;",
    b"<!DOCTYPE x>",
    b"-",
    b"9" * 40,
    b"1E+999999999",
    b"NaN",
    b"-0.00",
    b"0000-00-00",
    b"9999-12-31T23:59:59-12:00",
    b"0001-01-01T00:00:00+14:00",
    b"2025-02-29",
    b"991399",
    b"\\ud800",
    b":61:",
    b":86:",
    b":25:",
    b":60F:",
    b":62F:",
    b"C250715",
    b"RC",
    b"NONREF//",
    b"CRDT",
    b"DBIT",
    b"<Ntry>",
    b"</Ntry>",
    b'"detailData"',
    b"null",
    b"true",
    b"12345678901234567890",
    "é\u2028\u0085".encode(),
]


@st.composite
def mutated(draw: st.DrawFn, seeds: dict[str, bytes]) -> bytes:
    """A seed file with up to 6 random edits: the parser gets far enough to meet the broken part."""
    data = bytearray(seeds[draw(st.sampled_from(sorted(seeds)))])
    for _ in range(draw(st.integers(1, 6))):
        at = draw(st.integers(0, len(data)))
        kind = draw(st.integers(0, 6))
        if kind == 0 and data:  # flip a byte
            i = min(at, len(data) - 1)
            data[i] ^= draw(st.integers(1, 255))
        elif kind == 1:  # insert a token the formats care about
            data[at:at] = draw(st.sampled_from(_TOKENS))
        elif kind == 2:  # insert random bytes
            data[at:at] = draw(st.binary(max_size=8))
        elif kind == 3:  # delete a slice
            del data[at : at + draw(st.integers(1, 40))]
        elif kind == 4:  # duplicate a slice (repeated tags, entries, lines)
            end = min(len(data), at + draw(st.integers(1, 200)))
            data[at:at] = data[at:end]
        elif kind == 5:  # truncate
            del data[at:]
        else:  # replace a digit run (amounts, dates, counts) with other digits
            runs = list(re.finditer(rb"[0-9]+", bytes(data)))
            if runs:
                m = runs[draw(st.integers(0, len(runs) - 1))]
                data[m.start() : m.end()] = draw(st.from_regex(rb"\A[0-9]{0,20}\Z"))
    return bytes(data)


# --- statements ----------------------------------------------------------------------------------------------


def check_statement_result(result: ParseResult) -> None:
    """The documented shape of any ParseResult, whatever the input."""
    assert isinstance(result, ParseResult)
    for err in result.errors:
        assert err.reason in STATEMENT_REASONS, err
        assert err.line_no >= 0
        assert _ACCOUNT_LIKE.search(err.message) is None, err.message  # messages are built from constants
    for entry in result.entries:
        assert isinstance(entry, StatementEntry)
        again = StatementEntry.model_validate_json(entry.model_dump_json().encode("utf-8"))  # the raw topic
        assert again == entry
        body = io.BytesIO()
        fastavro.schemaless_writer(body, ENTRY_SCHEMA.parsed, to_datum(ENTRY_SCHEMA, entry))  # statement-entries.v1
        if entry.narrative is not None:
            assert re.search(r"(?<![0-9A-Za-z])[0-9]{10,}(?![0-9A-Za-z])", entry.narrative) is None
    codes = check_totals(result)
    assert set(codes) <= DISCREPANCIES


def _parse_any(data: bytes, filename: str | None = None) -> ParseResult:
    return parse_statement(data, bank_id="BNI", imported_at=IMPORTED_AT, filename=filename, account_no="1234567890")


_SNAP_HEAD = b'{"accountNo":"1234567890","detailData":[{"amount":{"value":"10.00","currency":"IDR"},"type":"C",'


@settings(max_examples=400, deadline=None)
@given(data=mutated(STATEMENT_SEEDS), filename=st.sampled_from([None, "x.sta", "x.json", "x.csv", "x.xml", "x"]))
@example(data=_SNAP_HEAD + b'"transactionDate":"9999-12-31T23:00:00-05:00"}]}', filename=None)  # fixed: OverflowError
@example(data=_SNAP_HEAD + b'"transactionDate":"0001-01-01T00:00:00+05:00"}]}', filename=None)  # fixed: OverflowError
@example(data=_SNAP_HEAD + b'"transactionDate":"2025-07-15","remark":"\\ud800"}]}', filename=None)  # fixed
@example(data=_SNAP_HEAD + b'"transactionDate":"2025-07-15","transactionId":"\\udc00x"}]}', filename=None)  # fixed
@example(data=_SNAP_HEAD.replace(b"1234567890", b"12345\\ud800") + b'"transactionDate":"2025-07-15"}]}', filename=None)
@example(
    data=b"<Document><BkToCstmrDbtCdtNtfctn><Ntfctn><Acct><Id><Othr><Id>1234567890</Id></Othr></Id></Acct>"
    b'<Ntry><Amt Ccy="IDR">1.00</Amt><CdtDbtInd>CRDT</CdtDbtInd><BookgDt><DtTm>9999-12-31T23:59:59-01:00</DtTm>'
    b"</BookgDt></Ntry></Ntfctn></BkToCstmrDbtCdtNtfctn></Document>",
    filename=None,
)  # fixed: OverflowError in camt too
def test_statement_files_never_raise(data: bytes, filename: str | None) -> None:
    result = _parse_any(data, filename)
    check_statement_result(result)
    event(f"{result.source.value}: {'entries' if result.entries else 'no entries'}, {len(result.errors) > 0} errors")


@FUZZ
@given(data=st.binary(max_size=300))
def test_statement_arbitrary_bytes_never_raise(data: bytes) -> None:
    check_statement_result(_parse_any(data))


_TEXT = st.text(max_size=40)  # includes lone surrogates: the parsers also take str
_LINES = st.lists(
    st.sampled_from(
        [":20:", ":25:", ":28C:", ":60F:", ":60M:", ":61:", ":86:", ":62F:", ":62M:", ":64:", "", "-}"]
    ).flatmap(
        lambda tag: st.builds(
            lambda v: tag + v,
            _TEXT | st.from_regex(r"\A[CDR]{1,2}[0-9]{6,10}[A-Z]{0,3}[0-9,]{1,20}[NSF][A-Z0-9]{3}.{0,30}\Z"),
        )
    ),
    max_size=12,
)


@FUZZ
@given(lines=_LINES, newline=st.sampled_from(["\n", "\r\n", "\r"]))
def test_mt940_structured_text_never_raises(lines: list[str], newline: str) -> None:
    text = newline.join(lines)
    check_statement_result(parse_mt940(text, bank_id="BNI", imported_at=IMPORTED_AT))
    check_statement_result(parse_mt940(text.encode("utf-8", "surrogatepass"), bank_id="BNI", imported_at=IMPORTED_AT))


@FUZZ
@given(text=_TEXT, cells=st.lists(st.lists(_TEXT, max_size=12), max_size=6), delimiter=st.sampled_from([",", ";"]))
def test_csv_statement_never_raises(text: str, cells: list[list[str]], delimiter: str) -> None:
    header = (
        "account_no,booking_date,value_date,direction,amount,currency,bank_ref,customer_ref,end_to_end_id,"
        "narrative,status"
    )
    body = "\n".join([header, *(",".join(row) for row in cells), text])
    check_statement_result(parse_csv(body, bank_id="BNI", imported_at=IMPORTED_AT))
    check_statement_result(parse_csv(text, bank_id="BNI", imported_at=IMPORTED_AT, account_no=text or None))


_JSON_LEAF = (
    st.none()
    | st.booleans()
    | st.integers(-(10**30), 10**30)
    | st.decimals(allow_nan=True, allow_infinity=True)
    | st.floats()
    | _TEXT
    | st.sampled_from(["10.00", "-5.00", "1E+3", "2025-07-15", "2025-07-15T09:12:44+07:00", "CREDIT", "D", "Y"])
)
_JSON = st.recursive(
    _JSON_LEAF, lambda c: st.lists(c, max_size=3) | st.dictionaries(_TEXT, c, max_size=3), max_leaves=8
)
_SNAP_KEYS = ["amount", "type", "transactionDate", "transactionDetailStatus", "transactionId", "remark", "detailInfo"]


@st.composite
def snap_items(draw: st.DrawFn) -> Any:
    if draw(st.integers(0, 9)) == 0:
        return draw(_JSON)
    item: dict[str, Any] = {}
    for key in draw(st.lists(st.sampled_from(_SNAP_KEYS), unique=True)):
        if key == "amount":
            item[key] = draw(st.fixed_dictionaries({}, optional={"value": _JSON_LEAF, "currency": _JSON_LEAF}) | _JSON)
        elif key == "detailInfo":
            item[key] = draw(st.dictionaries(st.sampled_from(["virtualAccountNo", "paymentRequestId", "x"]), _JSON))
        else:
            item[key] = draw(_JSON_LEAF)
    return item


@FUZZ
@given(
    items=st.lists(snap_items(), max_size=5),
    top=st.dictionaries(
        st.sampled_from(["accountNo", "referenceNo", "totalCreditEntries", "totalDebitEntries", "balance", "hasMore"]),
        _JSON,
    ),
)
def test_snap_statement_objects_never_raise(items: list[Any], top: dict[str, Any]) -> None:
    body = {"accountNo": "1234567890", **top, "detailData": items}
    check_statement_result(parse_snap_statement(body, bank_id="BNI", imported_at=IMPORTED_AT, account_no="9876543210"))
    try:
        raw = json.dumps(body, default=str).encode()
    except ValueError:
        return
    check_statement_result(_parse_any(raw))


_CAMT_TAGS = [
    f"<{t}>" if i % 2 == 0 else f"</{t}>"
    for t in ("Ntry", "CdtDbtInd", "BookgDt", "ValDt", "Dt", "DtTm", "Bal", "TxsSummry", "Stmt", "Ntfctn", "Acct")
    for i in range(2)
] + ['<Amt Ccy="IDR">', "</Amt>", "<Id><Othr><Id>1234567890</Id></Othr></Id>", "CRDT", "DBIT", "2025-07-15"]


@SLOW_FUZZ
@given(xml=st.lists(st.sampled_from(_CAMT_TAGS) | _TEXT, max_size=25))
def test_camt_fragments_never_raise(xml: list[str]) -> None:
    for root in ("BkToCstmrStmt", "BkToCstmrDbtCdtNtfctn"):
        doc = f"<Document><{root}>{''.join(xml)}</{root}></Document>"
        check_statement_result(parse_camt(doc, bank_id="BNI", imported_at=IMPORTED_AT))


@SLOW_FUZZ
@given(data=mutated(STATEMENT_SEEDS))
def test_statement_ingest_produces_only_what_it_parsed(data: bytes) -> None:
    report = parse_upload(data, bank_id="BNI", imported_at=IMPORTED_AT, filename="upload.sta")
    assert isinstance(format_report(report, dry_run=True), str)
    producer = InMemoryProducer()
    report = asyncio.run(
        ingest_statement(data, bank_id="BNI", producer=producer, origin=ORIGIN_API, imported_at=IMPORTED_AT)
    )
    if report.document_error is not None:
        assert producer.records == []
        return
    assert report.produced == len(report.entries) == len(producer.records)
    for record, entry in zip(producer.records, report.entries, strict=True):
        assert StatementEntry.model_validate_json(record.value) == entry
        assert record.key == b"BNI"
    assert _ACCOUNT_LIKE.search(json.dumps(report.to_json()["errors"])) is None


# --- KBRI batch CSV --------------------------------------------------------------------------------------------

BATCH_REASONS = {r.value for r in BatchReason}
DOMAIN_REASONS = {r.value for r in Reason}


def check_batch(raw: bytes) -> None:
    try:
        batch = parse_batch(raw, batch_id="B1", max_rows=50)
    except BatchRefused as refused:
        assert refused.reason in BATCH_REASONS
        assert _ACCOUNT_LIKE.search(refused.message) is None
        return
    assert isinstance(batch, Batch)
    assert batch.delimiter in {",", ";"}
    for row in batch.rows:
        assert row.row >= 1
        if row.error is not None:
            assert isinstance(row.error, Rejected)
            assert row.error.reason in BATCH_REASONS | DOMAIN_REASONS
            assert _ACCOUNT_LIKE.search(str(row.error)) is None
            assert row.body is None
        else:
            assert isinstance(row.body, dict)
            for value in row.body.values():
                assert isinstance(value, str | int | list)
    json.dumps([r.body for r in batch.rows])  # bodies are JSON, as the single-enrollment endpoint gets them


@FUZZ
@given(raw=mutated(BATCH_SEEDS))
def test_batch_csv_mutations_parse_or_refuse(raw: bytes) -> None:
    check_batch(raw)


@FUZZ
@given(raw=st.binary(max_size=200) | st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")))
@example(raw=b"sep=;")
@example(raw=b'nik,full_name\n"unterminated')
def test_batch_csv_arbitrary_input_parses_or_refuses(raw: bytes) -> None:
    check_batch(raw)


# --- strict JSON ------------------------------------------------------------------------------------------------

JSON_REASONS = {INVALID_UTF8, INVALID_JSON, NON_FINITE_NUMBER, DUPLICATE_KEY, JSON_TOO_DEEP}


def check_json(raw: bytes) -> None:
    try:
        value = parse_json_strict(raw)
    except HttpProblem as problem:
        assert problem.status == 400
        assert problem.reason in JSON_REASONS, problem.reason
        if problem.field is not None:
            assert re.fullmatch(r"[A-Za-z_]{1,64}", problem.field)
        return
    assert value == json.loads(raw.decode("utf-8"))  # strict parsing never changes what a value means


_VALID_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=5), c, max_size=4),
    max_leaves=20,
)


@FUZZ
@given(raw=st.binary(max_size=120))
@example(raw=b"[" * 100_000)
@example(raw=b'{"a":1,"a":2}')
@example(raw=b"[NaN, Infinity]")
@example(raw=b"1e400")
@example(raw=b"9" * 5000)
@example(raw=b'"\\ud800"')
@example(raw=b"\xef\xbb\xbf{}")
def test_json_strict_arbitrary_bytes(raw: bytes) -> None:
    check_json(raw)


@FUZZ
@given(value=_VALID_JSON, indent=st.sampled_from([None, 0, 2]), cut=st.integers(0, 60), data=st.data())
def test_json_strict_valid_and_mutated_documents(value: Any, indent: int | None, cut: int, data: st.DataObject) -> None:
    raw = json.dumps(value, indent=indent, ensure_ascii=data.draw(st.booleans())).encode()
    check_json(raw)
    check_json(raw[:cut])
    check_json(raw + data.draw(st.sampled_from([b"", b" ", b",", b"}", b"]", b"NaN", b"\xff"])))


# --- NIK -----------------------------------------------------------------------------------------------------------

# Kemendagri province codes (domain.md 2.1), written out here rather than imported from the code under test.
PROVINCE_CODES = frozenset(
    "11 12 13 14 15 16 17 18 19 21 31 32 33 34 35 36 51 52 53 61 62 63 64 65 "
    "71 72 73 74 75 76 81 82 91 92 93 94 95 96".split()
)
_DAYS = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]


def _leap(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


def _is_date(year: int, month: int, day: int) -> bool:
    if not 1 <= year <= 9999:
        return False
    return 1 <= day <= (29 if month == 2 and _leap(year) else _DAYS[month - 1])


def nik_rule(nik: str, dob: date | None, sex: Sex | None) -> tuple[str | None, tuple[str, ...]]:
    """(reason code or None, warnings) per domain.md 7.3, in the order the rules are listed there."""
    if len(nik) != 16 or any(c not in "0123456789" for c in nik):
        return "NIK_FORMAT", ()
    if nik[:2] not in PROVINCE_CODES:
        return "NIK_PROVINCE", ()
    dd, mm, yy = int(nik[6:8]), int(nik[8:10]), int(nik[10:12])
    if 1 <= dd <= 31:
        nik_sex, day = Sex.M, dd
    elif 41 <= dd <= 71:
        nik_sex, day = Sex.F, dd - 40
    else:
        return "NIK_DATE", ()
    if not 1 <= mm <= 12:
        return "NIK_DATE", ()
    if dob is None:
        if not (_is_date(1900 + yy, mm, day) or _is_date(2000 + yy, mm, day)):
            return "NIK_DATE", ()
        resolved = None
    else:
        # the century that brings yy closest to the declared year; a tie takes the earlier (older) year
        candidates = [c + yy for c in range(dob.year // 100 * 100 - 100, dob.year // 100 * 100 + 101, 100)]
        year = sorted(candidates, key=lambda y: (abs(y - dob.year), y))[0]
        if not _is_date(year, mm, day):
            return "NIK_DATE", ()
        resolved = date(year, mm, day)
    if nik[12:] == "0000":
        return "NIK_SERIAL", ()
    warnings = []
    if dob is not None and resolved != dob:
        warnings.append("NIK_DOB_MISMATCH")
    if sex in (Sex.M, Sex.F) and sex != nik_sex:
        warnings.append("NIK_SEX_MISMATCH")
    return None, tuple(warnings)


def _two(lo: int, hi: int) -> st.SearchStrategy[str]:
    return st.integers(lo, hi).map(lambda n: f"{n:02d}")


NIKS = st.builds(
    lambda *parts: "".join(parts),
    st.sampled_from(sorted(PROVINCE_CODES)) | _two(0, 99),
    _two(0, 99),
    _two(0, 99),
    _two(0, 31) | _two(40, 72) | _two(0, 99),
    _two(0, 13) | _two(0, 99),
    _two(0, 99),
    st.sampled_from(["0000", "0001", "9999"]) | st.from_regex(r"\A[0-9]{4}\Z"),
)
DECLARED = st.none() | st.dates() | st.dates(date(1940, 1, 1), date(2010, 12, 31))


def _classify(nik: str, dob: date | None, sex: Sex | None) -> tuple[str | None, tuple[str, ...]]:
    try:
        info = check_nik(nik, declared_dob=dob, declared_sex=sex)
    except Rejected as rejected:
        assert rejected.field == "nik"
        if len(nik) == 16:
            assert nik not in str(rejected) and nik not in repr(rejected)  # never the value that failed
        return rejected.reason, ()
    return None, info.warnings


@settings(max_examples=400, deadline=None)
@given(nik=NIKS, dob=DECLARED, sex=st.none() | st.sampled_from(list(Sex)))
@example(nik="3602041211870001", dob=date(1987, 11, 12), sex=Sex.M)  # domain.md's worked example
@example(nik="3602045211870001", dob=date(1987, 11, 12), sex=Sex.M)  # a woman's day +40, declared male
@example(nik="3602042902000001", dob=None, sex=None)  # 29 Feb: 2000 was a leap year
@example(nik="3602042902000001", dob=date(1900, 3, 1), sex=None)  # ... 1900 was not
@example(nik="3602043112990001", dob=date(1, 1, 1), sex=None)  # a century below year 1
@example(nik="3602043112000001", dob=date(9999, 12, 31), sex=None)  # a century above year 9999
def test_nik_classified_exactly_as_the_rule_says(nik: str, dob: date | None, sex: Sex | None) -> None:
    got = _classify(nik, dob, sex)
    assert got == nik_rule(nik, dob, sex)
    assert _classify(nik, dob, sex) == got  # deterministic


@FUZZ
@given(text=st.text(max_size=20) | st.from_regex(r"\A[0-9\uff10-\uff19\u0660-\u0669]{15,17}\Z"))
def test_nik_arbitrary_text_is_refused_or_classified(text: str) -> None:
    assert _classify(text, None, None) == nik_rule(text, None, None)


@FUZZ
@given(nik=st.from_regex(r"\A[0-9]{16}\Z"), before=st.text(max_size=10), after=st.text(max_size=10))
def test_masked_nik_never_shows_the_nik(nik: str, before: str, after: str) -> None:
    assert nik not in mask_tail(nik)
    assert mask_tail(nik).endswith(nik[-4:])
    line = f"{before} nik={nik} {after}"
    assert nik not in mask_text(line)
    assert nik not in mask_text(nik)
