"""`POST /v1.0/bank-statements` (SNAP service 14): a bank uploads its statement file.

The body is the file itself (MT940, camt.053/054 XML, SNAP statement JSON or profile CSV), signed like every
transactional SNAP call (for a non-JSON body the digest is sha256 of the raw bytes). Query parameters:
`filename` (breaks a format-detection tie by its extension) and `accountNo` (the statement account, for a
SNAP statement JSON or CSV that does not carry it). Every parsed entry goes to `bank.statements.raw`
(connectors.statement_ingest); the answer comes only after Kafka acknowledged all of them.

Response codes (HTTP status + service code 14 + case):

    2001400  Successful                      statement: file_id, format, entries, rejected, errors, totals
    4001400  Bad Request                     not a statement we can read (UNKNOWN_FORMAT, BAD_ENCODING,
                                             MALFORMED_XML, MALFORMED_JSON), or too large (413) / media type (415)
    4001401  Invalid Field Format {name}     readable, refused as a whole (UNSAFE_XML, NOT_A_STATEMENT,
                                             BAD_HEADER, ...), or a malformed header / query parameter
    4001402  Invalid Mandatory Field {name}  X-EXTERNAL-ID or another header missing; no statement account
    4011400  Unauthorized. {why}             partner, timestamp window or signature (4011401: token)
    5001401  Internal Server Error
    5001402  External Server Error           HTTP 503 + Retry-After: Kafka did not acknowledge; upload again

A line that cannot be read does not refuse the file: it is reported in `errors` with its line number and
reason, and the other lines are produced. Why the re-upload after a 503 is safe: entry ids are
deterministic and the normalizer emits each id once, so entries acknowledged before the failure are not
duplicated.
"""

from __future__ import annotations

import logging
import re
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from connectors.bank.context import BankContext
from connectors.bank.errors import (
    SERVICE_STATEMENT,
    SnapProblem,
    from_http,
    internal_error,
    invalid,
    missing,
    refuse,
    snap_code,
)
from connectors.bank.models import SnapError
from connectors.http_common import (
    BROKER_UNAVAILABLE,
    RETRY_AFTER_S,
    UNSUPPORTED_MEDIA_TYPE,
    HttpProblem,
    RequestObservation,
    read_body,
    where_failed,
)
from connectors.kafka_edge import BrokerUnavailable
from connectors.statement_ingest import ORIGIN_API, IngestReport, ingest_statement
from services.domain.errors import Reason
from services.domain.statements import StatementReason
from services.logs import event

log = logging.getLogger(__name__)

PATH = "/v1.0/bank-statements"
ENDPOINT = "bank_statement"

MEDIA_TYPES = (
    "application/json",
    "application/xml",
    "text/xml",
    "text/plain",
    "text/csv",
    "application/octet-stream",
)

_EXTERNAL_ID = re.compile(r"[0-9]{1,36}")
_FILENAME = re.compile(r"[A-Za-z0-9._ ()-]{1,128}")
_ACCOUNT_NO = re.compile(r"[A-Za-z0-9./-]{1,35}")  # MT940 :25: is 35x

# Document-level parser reasons: (case, message). Unlisted reasons are 01 Invalid Field Format.
_UNREADABLE = {
    StatementReason.UNKNOWN_FORMAT.value,
    StatementReason.BAD_ENCODING.value,
    StatementReason.MALFORMED_XML.value,
    StatementReason.MALFORMED_JSON.value,
}
_MANDATORY = {StatementReason.MISSING_ACCOUNT.value: "accountNo", StatementReason.MISSING_CURRENCY.value: "currency"}

REQUEST_BODIES: dict[tuple[str, str], type[BaseModel]] = {}  # the body is a file, documented in openapi_extra


class LineErrorOut(BaseModel):
    line_no: int = Field(description="1-based line (MT940, CSV) or entry index (camt, SNAP); 0 = the file")
    reason: str = Field(description="Stable reason code, e.g. BAD_AMOUNT, BAD_DATE, BAD_DIRECTION")
    message: str = Field(description="What is wrong with the line; never a value from it")


class StatementReport(BaseModel):
    file_id: str = Field(description="hex sha256 of the uploaded bytes")
    format: str = Field(description="MT940, CAMT053, CAMT054, SNAP_STATEMENT or CSV")
    entries: int = Field(description="entries recorded (acknowledged by Kafka)")
    rejected: int = Field(description="lines refused (listed in errors)")
    errors: list[LineErrorOut]
    totals: list[str] = Field(
        description="discrepancies against the totals/balances the file declares, e.g. BALANCE_MISMATCH, "
        "LINES_REJECTED, NO_DECLARED_TOTALS; empty when everything adds up"
    )


class StatementUploadResponse(BaseModel):
    responseCode: str = "2001400"
    responseMessage: str = "Successful"
    statement: StatementReport


def _media_type(request: Request) -> None:
    ctype = request.headers.get("content-type")
    if ctype is None:
        return  # RFC 9110: the recipient may treat it as application/octet-stream
    media = ctype.split(";", 1)[0].strip().lower()
    if media not in MEDIA_TYPES:
        raise HttpProblem(415, UNSUPPORTED_MEDIA_TYPE, "Content-Type must be a statement file type")


def _optional(value: str | None, name: str, pattern: re.Pattern[str]) -> str | None:
    if value is None:
        return None
    if pattern.fullmatch(value) is None:
        raise invalid(name, SERVICE_STATEMENT, Reason.INVALID_FIELD.value)
    return value


def document_problem(report: IngestReport) -> SnapProblem | None:
    """The 400 for a file refused as a whole, or None."""
    err = report.document_error
    if err is None:
        return None
    if err.reason == StatementReason.INPUT_TOO_LARGE.value:
        return SnapProblem(413, snap_code(400, "00", SERVICE_STATEMENT), "Bad Request", err.reason)
    if err.reason in _UNREADABLE:
        return SnapProblem(400, snap_code(400, "00", SERVICE_STATEMENT), "Bad Request", err.reason)
    if err.reason in _MANDATORY:
        return missing(_MANDATORY[err.reason], SERVICE_STATEMENT, err.reason)
    return invalid("statement", SERVICE_STATEMENT, err.reason)


class StatementUpload:
    def __init__(self, ctx: BankContext) -> None:
        self.ctx = ctx

    async def upload(
        self,
        request: Request,
        obs: RequestObservation,
        external_id: str | None,
        filename: str | None,
        account_no: str | None,
    ) -> StatementUploadResponse:
        _media_type(request)
        raw = await read_body(request, self.ctx.settings.statement_max_bytes)
        auth = self.ctx.auth.verify(request, raw, SERVICE_STATEMENT, obs)
        bank_id = auth.partner.bank_id
        if not external_id:
            raise missing("X-EXTERNAL-ID", SERVICE_STATEMENT)
        if _EXTERNAL_ID.fullmatch(external_id) is None:
            raise invalid("X-EXTERNAL-ID", SERVICE_STATEMENT)
        filename = _optional(filename, "filename", _FILENAME)
        account_no = _optional(account_no, "accountNo", _ACCOUNT_NO)
        report = await ingest_statement(
            raw,
            bank_id=bank_id,
            producer=self.ctx.producer,
            origin=ORIGIN_API,
            filename=filename,
            account_no=account_no,
            external_id=external_id,
        )
        problem = document_problem(report)
        if problem is not None:
            raise problem
        return StatementUploadResponse(statement=StatementReport.model_validate(report.to_json()))


def _doc(text: str) -> dict[str, Any]:
    return {"model": SnapError, "description": text}


ERRORS: dict[int | str, dict[str, Any]] = {
    400: _doc(
        "4001400 Bad Request (UNKNOWN_FORMAT, BAD_ENCODING, MALFORMED_XML, MALFORMED_JSON); 4001401 Invalid Field "
        "Format (UNSAFE_XML, NOT_A_STATEMENT, BAD_HEADER, HEADER_INVALID; INVALID_FIELD: filename or accountNo); "
        "4001402 Invalid Mandatory Field "
        "(HEADER_MISSING, MISSING_ACCOUNT)"
    ),
    401: _doc(
        "4011400 Unauthorized (UNKNOWN_PARTNER, TIMESTAMP_OUT_OF_WINDOW, SIGNATURE_INVALID); "
        "4011401 Invalid Token (TOKEN_INVALID)"
    ),
    413: _doc("4001400 Bad Request (BODY_TOO_LARGE): larger than statement_max_bytes"),
    415: _doc("4001400 Bad Request (UNSUPPORTED_MEDIA_TYPE)"),
    500: _doc("5001401 Internal Server Error (INTERNAL_ERROR)"),
    503: _doc(
        "5001402 External Server Error (BROKER_UNAVAILABLE): not recorded; upload the same file again after "
        "Retry-After seconds (entries already recorded are not duplicated)"
    ),
}

_FILE_BODY = {"type": "string", "format": "binary"}
OPENAPI_BODY = {
    "requestBody": {
        "required": True,
        "description": "The statement file, byte for byte as signed: MT940, camt.053/054, SNAP statement JSON "
        "or CSV (header account_no,booking_date,value_date,direction,amount,currency,bank_ref,customer_ref,"
        "end_to_end_id,narrative,status)",
        "content": {media: {"schema": _FILE_BODY} for media in MEDIA_TYPES},
    }
}


def router(ctx: BankContext) -> APIRouter:
    intake = StatementUpload(ctx)
    api = APIRouter()

    @api.post(
        PATH,
        response_model=StatementUploadResponse,
        responses=ERRORS,
        openapi_extra=OPENAPI_BODY,
        summary="Bank statement upload (SNAP service 14); 2001400 once every entry is durably recorded",
    )
    async def bank_statement(
        request: Request,
        filename: Annotated[
            str | None, Query(description="The file's name; its extension breaks a format tie (.sta, .csv, ...)")
        ] = None,
        account_no: Annotated[
            str | None,
            Query(alias="accountNo", description="Statement account, when the file does not carry it (SNAP JSON)"),
        ] = None,
        authorization: Annotated[str | None, Header(description="Bearer <bank token>")] = None,
        x_partner_id: Annotated[str | None, Header(alias="X-PARTNER-ID", description="The bank id")] = None,
        x_external_id: Annotated[
            str | None, Header(alias="X-EXTERNAL-ID", description="Numeric, <= 36, unique per day")
        ] = None,
        x_timestamp: Annotated[str | None, Header(alias="X-TIMESTAMP", description="ISO-8601 with offset")] = None,
        x_signature: Annotated[
            str | None, Header(alias="X-SIGNATURE", description="HMAC-SHA512 over the raw file bytes")
        ] = None,
    ) -> Response:
        # The header parameters document the contract; SnapAuth reads them from the request itself.
        del authorization, x_partner_id, x_timestamp, x_signature
        obs = RequestObservation("bank", ENDPOINT)
        try:
            result = await intake.upload(request, obs, x_external_id, filename, account_no)
        except SnapProblem as problem:
            return refuse(obs, problem, "statement refused")
        except HttpProblem as problem:
            return refuse(obs, from_http(problem, SERVICE_STATEMENT), "statement refused")
        except BrokerUnavailable as exc:
            event(log, "statement not recorded", bank=obs.partner, reason=exc.reason)
            unavailable = SnapProblem(
                503,
                snap_code(500, "02", SERVICE_STATEMENT),
                "External Server Error",
                BROKER_UNAVAILABLE,
                headers={"Retry-After": str(RETRY_AFTER_S)},
            )
            return refuse(obs, unavailable, "statement refused")
        except Exception as exc:
            log.error("statement upload failed: %s", where_failed(exc))
            return refuse(obs, internal_error(SERVICE_STATEMENT), "statement refused")
        obs.done(200)
        return JSONResponse(result.model_dump(mode="json"), status_code=200)

    return api
