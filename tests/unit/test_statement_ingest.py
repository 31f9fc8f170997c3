"""Statement ingest (connectors.statement_ingest), the normalizer's record check, the CLI and the bootstrap file.

Production goes through InMemoryProducer: what would reach bank.statements.raw, with which key and headers,
and what is claimed when Kafka does not acknowledge.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Coroutine, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from prometheus_client import REGISTRY

from connectors.kafka_edge import BrokerUnavailable, Headers, InMemoryProducer
from connectors.statement_ingest import (
    EXIT_DOCUMENT_ERROR,
    EXIT_OK,
    ORIGIN_CLI,
    IngestReport,
    format_report,
    import_file,
    ingest_statement,
    parse_upload,
    produce_entries,
)
from services.__main__ import cli
from services.catalogue import STATEMENTS_RAW
from services.config import Settings, get_settings
from services.domain.errors import Rejected
from services.domain.models import EntryDetailStatus, StatementEntry
from services.normalize_statements import entry_from_raw
from services.supervisor import Supervisor, bootstrap_file, read_bootstrap_file, write_bootstrap_file

DATA = Path(__file__).parent / "data" / "statements"
MT940 = DATA / "bni_20250715.sta"
BAD_LINE_CSV = DATA / "cimb_one_bad_line.csv"
BANKS = {"BNI": object(), "MANDIRI": object()}


def _sample(name: str, labels: dict[str, str]) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def _ingest(path: Path, producer: InMemoryProducer, **kw: Any) -> Coroutine[Any, Any, IngestReport]:
    defaults: dict[str, Any] = {"bank_id": "BNI", "origin": ORIGIN_CLI, "filename": path.name}
    defaults.update(kw)
    return ingest_statement(path.read_bytes(), producer=producer, **defaults)


# --- ingest -------------------------------------------------------------------------------------------
async def test_every_entry_is_produced_as_its_json_keyed_by_bank_with_file_and_line_headers() -> None:
    producer = InMemoryProducer()
    before = _sample("sinergi_statement_entries_ingested_total", {"bank": "BNI", "format": "MT940"})
    report = await _ingest(MT940, producer, external_id="123")

    assert report.document_error is None
    assert report.produced == len(report.entries) == 5 == len(producer.records)
    assert report.file_id == hashlib.sha256(MT940.read_bytes()).hexdigest()
    for entry, record in zip(report.entries, producer.records, strict=True):
        assert record.topic == STATEMENTS_RAW.name
        assert record.key == b"BNI"
        assert StatementEntry.model_validate_json(record.value) == entry
        assert json.loads(record.value)["amount"] == str(entry.amount)  # a decimal string, never a float
        assert record.header("sinergi-file-id") == report.file_id.encode()
        assert record.header("sinergi-line-no") == str(entry.line_no).encode()
        assert record.header("sinergi-entry-id") == entry.entry_id.encode()
        assert record.header("sinergi-bank") == b"BNI"
        assert record.header("sinergi-format") == b"MT940"
        assert record.header("sinergi-origin") == b"cli"
        assert record.header("sinergi-external-id") == b"123"
    assert [e.line_no for e in report.entries] == sorted(e.line_no for e in report.entries)
    after = _sample("sinergi_statement_entries_ingested_total", {"bank": "BNI", "format": "MT940"})
    assert after - before == 5


async def test_the_same_file_imported_twice_gives_the_same_entry_ids() -> None:
    producer = InMemoryProducer()
    first = await _ingest(MT940, producer, imported_at=datetime(2025, 7, 16, 1, tzinfo=UTC))
    again = await _ingest(MT940, producer, imported_at=datetime(2025, 7, 17, 9, tzinfo=UTC))
    ids = [json.loads(r.value)["entry_id"] for r in producer.records]
    assert ids[:5] == ids[5:] == [e.entry_id for e in first.entries] == [e.entry_id for e in again.entries]
    assert len(set(ids)) == 5
    assert {json.loads(r.value)["imported_at"] for r in producer.records} == {
        "2025-07-16T01:00:00Z",
        "2025-07-17T09:00:00Z",
    }


async def test_a_bad_line_is_reported_by_number_and_reason_and_the_rest_is_produced() -> None:
    producer = InMemoryProducer()
    before = _sample("sinergi_statement_line_errors_total", {"bank": "BNI", "reason": "BAD_AMOUNT"})
    report = await _ingest(BAD_LINE_CSV, producer)

    assert report.document_error is None
    assert [(e.line_no, e.reason) for e in report.errors] == [(3, "BAD_AMOUNT")]
    assert report.rejected == 1 and report.produced == 2
    assert [json.loads(r.value)["line_no"] for r in producer.records] == [2, 4]
    assert "LINES_REJECTED" in report.totals
    body = json.dumps(report.to_json())
    for value in ("98765432", "800123456789", "88123381726354019283746"):
        assert value not in body
    assert report.to_json()["errors"] == [
        {"line_no": 3, "reason": "BAD_AMOUNT", "message": "amount must be digits with at most 2 decimals"}
    ]
    assert _sample("sinergi_statement_line_errors_total", {"bank": "BNI", "reason": "BAD_AMOUNT"}) - before == 1


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"hello, this is not a statement", "UNKNOWN_FORMAT"),
        ((DATA / "unsafe_camt054.xml").read_bytes(), "UNSAFE_XML"),
        ((DATA / "bni_snap_statement.json").read_bytes(), "MISSING_ACCOUNT"),  # no accountNo anywhere
        (b"booking_date,direction,amount\n2025-07-15,CR,1.00\n", "BAD_HEADER"),  # no account anywhere
    ],
)
async def test_a_file_refused_as_a_whole_produces_nothing(data: bytes, reason: str) -> None:
    producer = InMemoryProducer()
    report = await ingest_statement(data, bank_id="BNI", producer=producer, origin=ORIGIN_CLI)
    assert report.document_error is not None and report.document_error.reason == reason
    assert report.produced == 0 and producer.attempts == 0


async def test_a_file_with_only_bad_lines_is_not_a_document_error() -> None:
    data = b"account_no,booking_date,direction,amount\n123,2025-07-15,CR,1.234\n123,2025-13-01,CR,1.00\n"
    report = await ingest_statement(data, bank_id="BNI", producer=InMemoryProducer(), origin=ORIGIN_CLI)
    assert report.document_error is None
    assert [(e.line_no, e.reason) for e in report.errors] == [(2, "BAD_AMOUNT"), (3, "BAD_DATE")]


async def test_broker_failure_raises_and_counts_nothing_as_ingested() -> None:
    producer = InMemoryProducer()
    producer.failing = "TIMEOUT"
    labels = {"bank": "MANDIRI", "format": "MT940"}
    before = _sample("sinergi_statement_entries_ingested_total", labels)
    with pytest.raises(BrokerUnavailable):
        await _ingest(MT940, producer, bank_id="MANDIRI")
    assert producer.records == []
    assert _sample("sinergi_statement_entries_ingested_total", labels) == before


class _FailsOnce(InMemoryProducer):
    """Acknowledges everything except the n-th send."""

    def __init__(self, fail_at: int) -> None:
        super().__init__()
        self.fail_at = fail_at

    async def send(self, topic: str, key: bytes, value: bytes, headers: Headers) -> None:
        if self.attempts + 1 == self.fail_at:
            self.attempts += 1
            raise BrokerUnavailable(topic, "TIMEOUT")
        await super().send(topic, key, value, headers)


async def test_a_failed_window_lets_its_other_sends_settle_and_starts_no_further_window() -> None:
    report = parse_upload(MT940.read_bytes(), bank_id="BNI", imported_at=datetime(2025, 7, 16, tzinfo=UTC))
    producer = _FailsOnce(fail_at=1)
    with pytest.raises(BrokerUnavailable):
        await produce_entries(report, producer, origin=ORIGIN_CLI, window=2)
    # window 1 = entries 1-2: the first failed, the second was still sent; windows 2 and 3 never started
    assert producer.attempts == 2 and len(producer.records) == 1


# --- report -------------------------------------------------------------------------------------------
def test_the_cli_report_lists_every_line_with_its_outcome_and_no_reference_or_narrative() -> None:
    report = parse_upload(BAD_LINE_CSV.read_bytes(), bank_id="BNI", imported_at=datetime(2025, 7, 16, tzinfo=UTC))
    text = format_report(report, dry_run=True)
    rows = [line.split() for line in text.splitlines() if line.strip()[:1].isdigit()]
    assert [(r[0], r[1]) for r in rows] == [("2", "OK"), ("3", "REJECTED"), ("4", "OK")]
    assert rows[1][2] == "BAD_AMOUNT"
    assert "not produced (--dry-run)" in text
    for value in ("800123456789", "88123381726354019283746", "SETORAN", "CIMB0716000001"):
        assert value not in text


def test_import_dry_run_parses_only_and_exits_by_document_outcome(tmp_path: Path) -> None:
    out: list[str] = []
    code = import_file(Settings(), MT940, bank_id="BNI", account_no=None, dry_run=True, bootstrap=None, echo=out.append)
    assert code == EXIT_OK and "5 parsed" in out[0]
    unknown = tmp_path / "notes.txt"
    unknown.write_bytes(b"nothing to see")
    code = import_file(
        Settings(), unknown, bank_id="BNI", account_no=None, dry_run=True, bootstrap=None, echo=out.append
    )
    assert code == EXIT_DOCUMENT_ERROR and "UNKNOWN_FORMAT" in out[1]


@pytest.fixture
def cli_process_state() -> Iterator[None]:
    """The CLI caches Settings and configures the root logger for the process: undo both."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.usefixtures("cli_process_state")
def test_cli_statements_import_refuses_an_unknown_bank_and_needs_a_broker_unless_dry_run(tmp_path: Path) -> None:
    env = {"SINERGI_DATA_DIR": str(tmp_path), "SINERGI_KAFKA_BOOTSTRAP": ""}
    runner = CliRunner()
    unknown = runner.invoke(cli, ["statements", "import", str(MT940), "--bank", "NOPE", "--dry-run"], env=env)
    assert unknown.exit_code == 2 and "--bank" in unknown.output
    no_broker = runner.invoke(cli, ["statements", "import", str(MT940), "--bank", "BNI"], env=env)
    assert no_broker.exit_code == 2 and "no broker" in no_broker.output
    dry = runner.invoke(cli, ["statements", "import", str(MT940), "--bank", "BNI", "--dry-run"], env=env)
    assert dry.exit_code == 0, dry.output
    assert "REVERSAL" in dry.output


# --- the bootstrap file of `sinergi up` -------------------------------------------------------------------
def test_bootstrap_file_is_written_atomically_read_back_and_removed_on_shutdown(tmp_path: Path) -> None:
    assert read_bootstrap_file(tmp_path) is None
    path = write_bootstrap_file(tmp_path, "127.0.0.1:19092")
    assert path == bootstrap_file(tmp_path) == tmp_path / "run" / "kafka.bootstrap"
    assert read_bootstrap_file(tmp_path) == "127.0.0.1:19092"
    assert not list(path.parent.glob("*.tmp"))

    supervisor = Supervisor(Settings(data_dir=tmp_path), simulate=False)
    supervisor.bootstrap_file = path
    supervisor.shutdown()
    assert not path.exists() and read_bootstrap_file(tmp_path) is None


# --- the normalizer's check of a raw record ----------------------------------------------------------------
def _raw(**changes: Any) -> dict[str, Any]:
    report = parse_upload(MT940.read_bytes(), bank_id="BNI", imported_at=datetime(2025, 7, 16, tzinfo=UTC))
    body = json.loads(report.entries[3].model_dump_json())
    body.update(changes)
    return body


def test_a_raw_entry_validates_to_the_same_model_and_keeps_its_reversal_status() -> None:
    entry = entry_from_raw(json.dumps(_raw()).encode(), "BNI", BANKS)
    assert entry.detail_status is EntryDetailStatus.REVERSAL
    assert entry == StatementEntry.model_validate(_raw())


@pytest.mark.parametrize(
    ("value", "header", "reason", "field"),
    [
        (b"{not json", "BNI", "INVALID_JSON", None),
        (b"[1, 2]", "BNI", "INVALID_JSON", None),
        (json.dumps(_raw(amount=370000.0)).encode(), "BNI", "AMOUNT_FORMAT", "amount"),
        (json.dumps(_raw(booking_date="2025-02-30")).encode(), "BNI", "INVALID_ENTRY", "booking_date"),
        (json.dumps(_raw(account_ref="0123456789")).encode(), "BNI", "INVALID_ENTRY", "account_ref"),
        (json.dumps(_raw(entry_id="not-a-uuid")).encode(), "BNI", "INVALID_ENTRY", "entry_id"),
        (json.dumps(_raw(bank_id="BRI")).encode(), "BRI", "UNKNOWN_BANK", "bank_id"),
        (json.dumps(_raw()).encode(), "MANDIRI", "BANK_MISMATCH", "bank_id"),
    ],
)
def test_a_bad_raw_entry_is_rejected_with_a_reason(value: bytes, header: str, reason: str, field: str | None) -> None:
    with pytest.raises(Rejected) as caught:
        entry_from_raw(value, header, BANKS)
    assert caught.value.reason == reason
    assert caught.value.field == field


def test_a_rejection_names_fields_never_values() -> None:
    hostile = _raw(account_ref="0123456789", **{"3201011203900001": "x"})
    with pytest.raises(Rejected) as caught:
        entry_from_raw(json.dumps(hostile).encode(), "BNI", BANKS)
    text = str(caught.value)
    assert "account_ref" in text and "(field)" in text
    assert "0123456789" not in text and "3201011203900001" not in text
