"""Statement ingest, shared by `POST /v1.0/bank-statements` and `sinergi statements import`.

parse (services.domain.statements.parse_statement) -> produce every entry to `bank.statements.raw` -> report.

Each entry travels as one record: the StatementEntry model's JSON (amount as a decimal string), key = bank id,
headers naming the file (`sinergi-file-id`, the sha256 of the bytes) and the line. Nothing is claimed until
Kafka acknowledged every entry; when it does not, the caller gets BrokerUnavailable and the bank re-uploads.
A re-upload (or a partial first attempt) cannot duplicate anything: entry ids are deterministic and the
normalizer (services/normalize_statements.py) emits each id once.

The report names line numbers and reason codes only: parser messages are built from constants, never from a
value in the file (account numbers, names, VA numbers stay out of responses, logs and metric labels).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from connectors.http_common import iso_utc, utc_now_ms
from connectors.kafka_edge import BrokerUnavailable, EdgeProducer, EdgeSender, Headers
from services.catalogue import STATEMENTS_RAW
from services.config import Settings
from services.domain.models import StatementEntry
from services.domain.statements import LineError, StatementReason, check_totals, parse_statement
from services.logs import event
from services.metrics import STATEMENT_ENTRIES_INGESTED, STATEMENT_LINE_ERRORS

log = logging.getLogger(__name__)

H_BANK = "sinergi-bank"
H_FILE_ID = "sinergi-file-id"
H_LINE_NO = "sinergi-line-no"
H_ENTRY_ID = "sinergi-entry-id"
H_FORMAT = "sinergi-format"
H_RECEIVED_AT = "sinergi-received-at"
H_ORIGIN = "sinergi-origin"
H_EXTERNAL_ID = "sinergi-external-id"

ORIGIN_API = "api"
ORIGIN_CLI = "cli"

# Sends in flight at once: enough to fill librdkafka's batches, far below its 100,000-message local queue.
SEND_WINDOW = 1000

EXIT_OK = 0
EXIT_DOCUMENT_ERROR = 65  # EX_DATAERR: the file as a whole was refused
EXIT_UNAVAILABLE = 69  # EX_UNAVAILABLE: Kafka did not acknowledge; run the import again


@dataclass(frozen=True)
class IngestReport:
    file_id: str
    format: str
    entries: tuple[StatementEntry, ...]  # parsed
    errors: tuple[LineError, ...]
    totals: tuple[str, ...]  # discrepancy codes of check_totals
    produced: int = 0  # acknowledged by Kafka

    @property
    def rejected(self) -> int:
        """Lines refused; line 0 errors are about the file (e.g. declared totals), not a line."""
        return sum(1 for err in self.errors if err.line_no > 0)

    @property
    def document_error(self) -> LineError | None:
        """Why the file as a whole was refused: no usable entry and an error about the document
        (line 0: unknown format, unsafe XML, bad encoding, no account; or a CSV header the profile rejects)."""
        if self.entries:
            return None
        return next(
            (e for e in self.errors if e.line_no == 0 or e.reason == StatementReason.BAD_HEADER.value),
            None,
        )

    def to_json(self) -> dict[str, Any]:
        """The `statement` object of the 2001400 answer."""
        return {
            "file_id": self.file_id,
            "format": self.format,
            "entries": self.produced,
            "rejected": self.rejected,
            "errors": [{"line_no": e.line_no, "reason": e.reason, "message": e.message} for e in self.errors],
            "totals": list(self.totals),
        }


def file_id_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def parse_upload(
    data: bytes,
    *,
    bank_id: str,
    imported_at: datetime,
    filename: str | None = None,
    account_no: str | None = None,
) -> IngestReport:
    """Parse only (the CLI's --dry-run, and the first half of every ingest)."""
    result = parse_statement(data, bank_id=bank_id, imported_at=imported_at, filename=filename, account_no=account_no)
    return IngestReport(
        file_id=file_id_of(data),
        format=result.source.value,
        entries=tuple(result.entries),
        errors=tuple(result.errors),
        totals=tuple(check_totals(result)),
    )


def _headers(report: IngestReport, entry: StatementEntry, origin: str, external_id: str | None) -> Headers:
    headers: Headers = [
        (H_BANK, entry.bank_id.encode()),
        (H_FILE_ID, report.file_id.encode()),
        (H_LINE_NO, str(entry.line_no).encode()),
        (H_ENTRY_ID, entry.entry_id.encode()),
        (H_FORMAT, entry.source.value.encode()),
        (H_RECEIVED_AT, iso_utc(entry.imported_at).encode()),
        (H_ORIGIN, origin.encode()),
    ]
    if external_id is not None:
        headers.append((H_EXTERNAL_ID, external_id.encode()))
    return headers


async def produce_entries(
    report: IngestReport,
    producer: EdgeSender,
    *,
    origin: str,
    external_id: str | None = None,
    window: int = SEND_WINDOW,
) -> int:
    """Send every entry and wait for all acknowledgements; BrokerUnavailable if any was not acknowledged.

    Sends within a window run concurrently (each `send` enqueues before its first await, so the order on
    the partition is the file's order); a failed window stops the ingest after its other sends settled, so
    no send is left running behind the caller's answer.
    """
    entries: Sequence[StatementEntry] = report.entries
    for start in range(0, len(entries), window):
        chunk = entries[start : start + window]
        results = await asyncio.gather(
            *(
                producer.send(
                    STATEMENTS_RAW.name,
                    entry.bank_id.encode(),
                    entry.model_dump_json().encode(),
                    _headers(report, entry, origin, external_id),
                )
                for entry in chunk
            ),
            return_exceptions=True,
        )
        failure = next((r for r in results if isinstance(r, BaseException)), None)
        if failure is not None:
            raise failure
    return len(entries)


async def ingest_statement(
    data: bytes,
    *,
    bank_id: str,
    producer: EdgeSender,
    origin: str,
    filename: str | None = None,
    account_no: str | None = None,
    external_id: str | None = None,
    imported_at: datetime | None = None,
) -> IngestReport:
    """Parse and produce. A document-level refusal produces nothing (see IngestReport.document_error)."""
    report = parse_upload(
        data,
        bank_id=bank_id,
        imported_at=imported_at or utc_now_ms(),
        filename=filename,
        account_no=account_no,
    )
    produced = 0
    if report.document_error is None:
        produced = await produce_entries(report, producer, origin=origin, external_id=external_id)
        STATEMENT_ENTRIES_INGESTED.labels(bank_id, report.format).inc(produced)
        event(
            log,
            "statement ingested",
            bank=bank_id,
            origin=origin,
            file_id=report.file_id,
            format=report.format,
            entries=produced,
            rejected=report.rejected,
        )
    for err in report.errors:
        STATEMENT_LINE_ERRORS.labels(bank_id, err.reason).inc()
    return IngestReport(report.file_id, report.format, report.entries, report.errors, report.totals, produced)


# --- the CLI side ------------------------------------------------------------------------------------
def format_report(report: IngestReport, *, dry_run: bool) -> str:
    """A per-line table for an operator: line, outcome, entry id or reason. Never a reference or narrative
    (they can hold a VA or account number); amounts and statuses are what an operator checks."""
    produced = "not produced (--dry-run)" if dry_run else f"{report.produced} produced"
    lines = [
        f"file      {report.file_id}",
        f"format    {report.format}",
        f"entries   {len(report.entries)} parsed, {produced}",
        f"rejected  {report.rejected}",
        f"totals    {', '.join(report.totals) or 'consistent'}",
        "",
        f"{'line':>6}  {'outcome':<8}  {'entry_id / reason':<36}  {'direction':<9}  {'amount':>19}  {'ccy':<3}  status",
    ]
    rows: list[tuple[int, str]] = []
    for e in report.entries:
        rows.append(
            (
                e.line_no,
                f"{e.line_no:>6}  {'OK':<8}  {e.entry_id:<36}  {e.direction.value:<9}  {e.amount:>19}  "
                f"{e.currency:<3}  {e.detail_status.value}",
            )
        )
    for err in report.errors:
        rows.append((err.line_no, f"{err.line_no:>6}  {'REJECTED':<8}  {err.reason:<36}  {err.message}"))
    lines += [text for _, text in sorted(rows, key=lambda row: row[0])]
    return "\n".join(lines)


def import_file(
    settings: Settings,
    path: Path,
    *,
    bank_id: str,
    account_no: str | None,
    dry_run: bool,
    bootstrap: str | None,
    echo: Callable[[str], None] = print,
) -> int:
    """`sinergi statements import`: the same ingest as the API, producing with an EdgeProducer.

    Exit status: 0, EXIT_DOCUMENT_ERROR (file refused as a whole), EXIT_UNAVAILABLE (Kafka did not
    acknowledge every entry: nothing is lost by running it again).
    """
    data = path.read_bytes()
    if dry_run:
        report = parse_upload(
            data, bank_id=bank_id, imported_at=utc_now_ms(), filename=path.name, account_no=account_no
        )
        echo(format_report(report, dry_run=True))
        return EXIT_DOCUMENT_ERROR if report.document_error is not None else EXIT_OK
    if bootstrap is None:
        raise ValueError("a bootstrap address is needed unless dry_run")
    broker = bootstrap

    async def run() -> IngestReport:
        producer = EdgeProducer(settings, broker, client_id="sinergi-statements-cli")
        producer.start()
        try:
            return await ingest_statement(
                data,
                bank_id=bank_id,
                producer=producer,
                origin=ORIGIN_CLI,
                filename=path.name,
                account_no=account_no,
            )
        finally:
            await producer.close()

    try:
        report = asyncio.run(run())
    except BrokerUnavailable as exc:
        echo(f"Kafka did not acknowledge the entries ({exc.reason}); nothing is lost by importing again")
        return EXIT_UNAVAILABLE
    echo(format_report(report, dry_run=False))
    return EXIT_DOCUMENT_ERROR if report.document_error is not None else EXIT_OK
