"""`POST /v1/enrollments/batch`: an office uploads a CSV of enrollments as its desk system exports it.

The file format is services/domain/batch_csv.py's. Each data row goes through the SAME path as a single
enrollment (connectors/intake.py EnrollmentIntake.submit: domain validation, produce to
`kbri.enrollments.raw`, answer only after Kafka acknowledged), with the request id of its `request_id`
cell, else "<batch id>#<row>", so re-sending a batch is idempotent row by row (same event ids; consumers
deduplicate). The raw record is the row as a JSON body; it also carries `sinergi-batch-id` and
`sinergi-batch-row` (traceability only; no consumer decides on them).

The answer is 200 with one result per data row: ACCEPTED (event id, customer number, bill, warnings) or
REJECTED (reason code + field, never the value). Good rows are accepted when others fail. A row Kafka did
not acknowledge is REJECTED with BROKER_UNAVAILABLE; the answer then sets `resend` and Retry-After, and
the office re-sends the same file with the same X-Request-Id. After the first unacknowledged row the
remaining rows are still validated but no longer produced, so a broker outage costs one producer timeout,
not one per row.

Rows are produced with bounded concurrency (Settings.kbri_batch_concurrency); rows with the same NIK are
produced one after another in file order, so a member's later row is also the later record.

Order of checks: office key (401) → X-Request-Id = batch id (400) → Content-Type (415) → body size (413
BODY_TOO_LARGE) → the file (400 INVALID_UTF8, NOT_CSV, MISSING_COLUMNS, DUPLICATE_COLUMN, BATCH_EMPTY;
413 BATCH_TOO_LARGE) → rows → 200.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
from collections import Counter
from collections.abc import Sequence
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from connectors.http_common import (
    BROKER_UNAVAILABLE,
    INTERNAL_ERROR,
    RETRY_AFTER_S,
    UNSUPPORTED_MEDIA_TYPE,
    ErrorBody,
    HttpProblem,
    RequestObservation,
    problem_response,
    read_body,
    where_failed,
)
from connectors.intake import OFFICE, EnrollmentIntake, Submitter, check_request_id, count
from connectors.kafka_edge import BrokerUnavailable, EdgeSender, Headers
from connectors.kbri.context import KbriContext
from connectors.kbri.models import BillOut
from services.domain.batch_csv import REQUIRED_COLUMNS, BatchReason, BatchRefused, BatchRow, parse_batch
from services.domain.errors import Rejected
from services.logs import event

log = logging.getLogger(__name__)

API = "kbri"
ENDPOINT = "enrollments_batch"
PATH = "/v1/enrollments/batch"

H_BATCH_ID = "sinergi-batch-id"
H_BATCH_ROW = "sinergi-batch-row"
NOT_ATTEMPTED = "NOT_ATTEMPTED"

# What desk systems and browsers send for a .csv file (Excel on Windows: application/vnd.ms-excel).
MEDIA_TYPES = ("text/csv", "application/csv", "text/plain", "application/vnd.ms-excel")
_CHARSETS = ("utf-8", "utf8", "us-ascii")

REQUEST_BODIES: dict[tuple[str, str], type[BaseModel]] = {}  # the body is a CSV file: see OPENAPI_BODY


class BatchRowResult(BaseModel):
    row: int = Field(description="1-based data row in file order (the header is row 0; blank rows count)")
    status: Literal["ACCEPTED", "REJECTED"]
    request_id: str | None = Field(
        description="The row's request id (its request_id cell, else <batch id>#<row>); null when the cell "
        "itself was refused (REQUEST_ID_INVALID) or the row could not be read (MALFORMED_ROW)"
    )
    event_id: str | None = Field(None, description="ACCEPTED: deterministic, the same on every re-send")
    customer_no: str | None = Field(None, description="ACCEPTED: participant id, the VA customer number")
    bill: BillOut | None = Field(None, description="ACCEPTED: what the member pays")
    warnings: list[str] = Field(description="Warning codes, e.g. NIK_DOB_MISMATCH, NIK_REPEATED_IN_BATCH")
    reason: str | None = Field(
        None,
        description="REJECTED: a domain code (MISSING_FIELD, INVALID_FIELD, NIK_PROVINCE, UNDER_AGE, ...), "
        "MALFORMED_ROW, REQUEST_ID_INVALID, DUPLICATE_REQUEST_ID, BROKER_UNAVAILABLE or INTERNAL_ERROR",
    )
    field: str | None = Field(None, description="REJECTED: the offending column; never its value")
    message: str | None = Field(None, description="REJECTED: why; never contains a value from the file")


class BatchReport(BaseModel):
    batch_id: str = Field(description="The X-Request-Id of the upload")
    rows: int = Field(description="Data rows read (blank rows skipped)")
    accepted: int
    rejected: int
    resend: bool = Field(
        description="True when some row was not stored (BROKER_UNAVAILABLE): send the same file again with "
        "the same X-Request-Id after Retry-After seconds; accepted rows are not duplicated"
    )
    results: list[BatchRowResult]


class BatchErrorBody(ErrorBody):
    missing_columns: list[str] = Field(
        default_factory=list,
        description="MISSING_COLUMNS / NOT_CSV: the required columns the header lacks; DUPLICATE_COLUMN: the "
        "columns given twice",
    )


ERRORS: dict[int | str, dict[str, Any]] = {
    400: {
        "model": BatchErrorBody,
        "description": "The file as a whole: REQUEST_ID_MISSING, REQUEST_ID_INVALID (X-Request-Id = batch id), "
        "INVALID_UTF8, NOT_CSV, MISSING_COLUMNS (named in missing_columns), DUPLICATE_COLUMN, BATCH_EMPTY",
    },
    401: {"model": ErrorBody, "description": "UNAUTHORIZED: missing or unknown office key"},
    413: {
        "model": BatchErrorBody,
        "description": "BODY_TOO_LARGE (Settings.kbri_batch_max_bytes) or BATCH_TOO_LARGE (more data rows "
        "than Settings.kbri_batch_max_rows); nothing stored",
    },
    415: {"model": ErrorBody, "description": "UNSUPPORTED_MEDIA_TYPE: not CSV, or a charset other than UTF-8"},
    500: {"model": ErrorBody, "description": "INTERNAL_ERROR"},
}

OK_HEADERS = {
    "Retry-After": {
        "description": "Present when resend is true: seconds to wait before re-sending the batch",
        "schema": {"type": "string"},
    }
}

OPENAPI_BODY = {
    "requestBody": {
        "required": True,
        "description": "CSV, UTF-8 (optional BOM), ',' or ';' delimited, CRLF or LF. Header row: "
        + ",".join(REQUIRED_COLUMNS)
        + " (required), employer_name, jht_monthly_amount_idr, placement_region, request_id (optional), any "
        "order; other columns are ignored. Dates YYYY-MM-DD or DD/MM/YYYY; programs JKK;JKM or JKK|JKM.",
        "content": {media: {"schema": {"type": "string"}} for media in MEDIA_TYPES},
    }
}


def _require_csv(request: Request) -> None:
    ctype = request.headers.get("content-type")
    if ctype is None:
        return  # RFC 9110: the recipient may guess; the parser decides whether it is a batch
    media, _, params = ctype.partition(";")
    if media.strip().lower() not in MEDIA_TYPES:
        raise HttpProblem(415, UNSUPPORTED_MEDIA_TYPE, "Content-Type must be text/csv")
    for param in params.split(";"):
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset" and value.strip().strip('"').lower() not in _CHARSETS:
            raise HttpProblem(415, UNSUPPORTED_MEDIA_TYPE, "the CSV must be UTF-8")


class _StopAfterFailure:
    """One batch's view of the producer: after the first unacknowledged row, later rows fail at once.

    Without it every remaining row would wait out the producer timeout while Kafka is down.
    """

    def __init__(self, producer: EdgeSender) -> None:
        self._producer = producer
        self.failed = False

    def start(self) -> None:  # the app's lifespan owns the producer
        pass

    async def close(self) -> None:
        pass

    async def send(self, topic: str, key: bytes, value: bytes, headers: Headers) -> None:
        if self.failed:
            raise BrokerUnavailable(topic, NOT_ATTEMPTED)
        try:
            await self._producer.send(topic, key, value, headers)
        except BrokerUnavailable:
            self.failed = True
            raise


def _refused(row: BatchRow, reason: str, field: str | None, message: str) -> BatchRowResult:
    # Every field of a refusal is set (field may be null), so exclude_unset keeps them and drops the
    # acceptance fields.
    return BatchRowResult(
        row=row.row,
        status="REJECTED",
        request_id=row.request_id,
        warnings=list(row.warnings),
        reason=reason,
        field=field,
        message=message,
    )


class BatchUpload:
    def __init__(self, ctx: KbriContext) -> None:
        self.ctx = ctx

    async def upload(self, request: Request, obs: RequestObservation, x_request_id: str | None) -> BatchReport:
        office = self.ctx.auth.office(request, obs)
        batch_id = check_request_id(x_request_id)
        _require_csv(request)
        raw = await read_body(request, self.ctx.settings.kbri_batch_max_bytes)
        batch = parse_batch(raw, batch_id=batch_id, max_rows=self.ctx.settings.kbri_batch_max_rows)
        results = await self._submit_all(batch.rows, office, batch_id)
        accepted = sum(1 for r in results if r.status == "ACCEPTED")
        return BatchReport(
            batch_id=batch_id,
            rows=len(results),
            accepted=accepted,
            rejected=len(results) - accepted,
            resend=any(r.reason == BROKER_UNAVAILABLE for r in results),
            results=results,
        )

    async def _submit_all(self, rows: Sequence[BatchRow], office: str, batch_id: str) -> list[BatchRowResult]:
        # A shallow copy shares the reference data; only the producer differs, per batch.
        intake = copy.copy(self.ctx.intake)
        intake.producer = _StopAfterFailure(self.ctx.producer)
        slots = asyncio.Semaphore(self.ctx.settings.kbri_batch_concurrency)
        results: dict[int, BatchRowResult] = {}

        async def chain(group: list[BatchRow]) -> None:
            async with slots:
                for row in group:
                    results[row.row] = await self._submit(intake, row, office, batch_id)

        groups: dict[str, list[BatchRow]] = {}
        for row in rows:
            if row.error is not None:
                results[row.row] = _refused(row, row.error.reason, row.error.field, row.error.message)
                continue
            assert row.body is not None  # a row without an error has a body (BatchRow)
            nik = row.body.get("nik")
            groups.setdefault(nik if isinstance(nik, str) else f"row:{row.row}", []).append(row)
        await asyncio.gather(*(chain(group) for group in groups.values()))
        for row in rows:
            count(OFFICE, office, results[row.row].reason)
        return [results[row.row] for row in rows]

    async def _submit(self, intake: EnrollmentIntake, row: BatchRow, office: str, batch_id: str) -> BatchRowResult:
        assert row.body is not None and row.request_id is not None
        raw = json.dumps(row.body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        try:
            accepted = await intake.submit(
                raw,
                row.body,
                submitter=Submitter(OFFICE, office),
                office=office,
                request_id=row.request_id,
                warnings=row.warnings,
                extra_headers=[(H_BATCH_ID, batch_id.encode()), (H_BATCH_ROW, str(row.row).encode())],
            )
        except Rejected as rejected:
            return _refused(row, rejected.reason, rejected.field, rejected.message)
        except BrokerUnavailable:
            return _refused(
                row,
                BROKER_UNAVAILABLE,
                None,
                "the event store did not acknowledge this row; send the batch again (accepted rows are not duplicated)",
            )
        except Exception as exc:
            log.error("enrollment batch row failed: %s", where_failed(exc))
            return _refused(row, INTERNAL_ERROR, None, "internal error")
        return BatchRowResult(
            row=row.row,
            status="ACCEPTED",
            request_id=row.request_id,
            event_id=accepted.event_id,
            customer_no=accepted.customer_no,
            bill=accepted.bill,
            warnings=accepted.warnings,
        )


def _file_problem(refused: BatchRefused) -> JSONResponse:
    status = 413 if refused.reason == BatchReason.BATCH_TOO_LARGE else 400
    named = refused.reason in (BatchReason.MISSING_COLUMNS, BatchReason.DUPLICATE_COLUMN)
    body = BatchErrorBody(
        reason=refused.reason,
        field=refused.columns[0] if named else None,
        message=refused.message,
        missing_columns=list(refused.columns),
    )
    return JSONResponse(body.model_dump(), status_code=status)


def _reasons(report: BatchReport) -> str:
    counts = Counter(r.reason for r in report.results if r.reason is not None)
    return ",".join(f"{reason}:{n}" for reason, n in sorted(counts.items()))


def router(ctx: KbriContext) -> APIRouter:
    uploads = BatchUpload(ctx)
    api = APIRouter()

    @api.post(
        PATH,
        response_model=BatchReport,
        responses={200: {"headers": OK_HEADERS}, **ERRORS},
        openapi_extra=OPENAPI_BODY,
        summary="Submit a CSV of PMI enrollments; a per-row report once each row is stored or refused",
    )
    async def post_enrollment_batch(
        request: Request,
        authorization: Annotated[str | None, Header(description="Bearer <office API key>")] = None,
        x_request_id: Annotated[
            str | None,
            Header(
                description="The batch id, 1-64 of [A-Za-z0-9._-]; rows without a request_id cell get "
                "<batch id>#<row>, so re-sending the same batch is idempotent"
            ),
        ] = None,
    ) -> Response:
        del authorization  # documented here; OfficeAuth reads it from the request
        obs = RequestObservation(API, ENDPOINT)
        try:
            report = await uploads.upload(request, obs, x_request_id)
        except HttpProblem as problem:
            obs.done(problem.status, problem.reason)
            event(log, "enrollment batch refused", office=obs.partner, reason=problem.reason)
            return problem_response(problem)
        except BatchRefused as refused:
            response = _file_problem(refused)
            obs.done(response.status_code, refused.reason)
            event(log, "enrollment batch refused", office=obs.partner, reason=refused.reason)
            return response
        except Exception as exc:
            log.error("enrollment batch failed: %s", where_failed(exc))
            obs.done(500, INTERNAL_ERROR)
            return problem_response(HttpProblem(500, INTERNAL_ERROR, "internal error"))
        obs.done(200)
        event(
            log,
            "enrollment batch processed",
            office=obs.partner,
            batch_id=report.batch_id,
            rows=report.rows,
            accepted=report.accepted,
            rejected=report.rejected,
            reasons=_reasons(report),
        )
        headers = {"Retry-After": str(RETRY_AFTER_S)} if report.resend else None
        return JSONResponse(report.model_dump(mode="json", exclude_unset=True), status_code=200, headers=headers)

    return api
