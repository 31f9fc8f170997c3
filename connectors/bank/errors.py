"""SNAP refusals shared by every bank endpoint (domain.md 4.6): HTTP status + service code + case code.

A response code is 7 digits: the HTTP family (3), the SNAP service code (2: 24 inquiry, 25 payment,
73 B2B token, 14 statement) and the case (2). Every error body is {"responseCode", "responseMessage",
"reason"}: the message names a field, never its value, and `reason` is sinergi's stable code.
"""

from __future__ import annotations

import logging

from fastapi.responses import JSONResponse

from connectors.bank.models import SnapError
from connectors.http_common import HttpProblem, RequestObservation
from services.domain.errors import Reason, Rejected
from services.logs import event

log = logging.getLogger("connectors.bank")

SERVICE_STATEMENT = "14"
SERVICE_INQUIRY = "24"
SERVICE_PAYMENT = "25"
SERVICE_TOKEN = "73"  # noqa: S105 (a SNAP service code)

HEADER_MISSING = "HEADER_MISSING"
HEADER_INVALID = "HEADER_INVALID"
EXTERNAL_ID_CONFLICT = "EXTERNAL_ID_CONFLICT"

# Domain reasons that are not a field-format problem: (HTTP status, case, message).
_REASON_CODES: dict[str, tuple[int, str, str]] = {
    Reason.MISSING_FIELD: (400, "02", "Invalid Mandatory Field"),
    Reason.VA_MISMATCH: (404, "12", "Invalid Bill/Virtual Account"),
    Reason.CURRENCY_NOT_ALLOWED: (404, "13", "Invalid Amount"),
}


def snap_code(family: int, case: str, service: str) -> str:
    """HTTP family (3) + service code (2) + case (2), e.g. snap_code(400, "01", "25") == "4002501"."""
    return f"{family}{service}{case}"


class SnapProblem(Exception):
    """A refusal in SNAP terms: HTTP status, SNAP response code and message, and our reason code."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        reason: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(f"{code} {reason}")
        self.status = status
        self.code = code
        self.message = message
        self.reason = reason
        self.headers = headers or {}

    def response(self) -> JSONResponse:
        body = SnapError(responseCode=self.code, responseMessage=self.message, reason=self.reason)
        return JSONResponse(body.model_dump(), status_code=self.status, headers=self.headers)


def from_http(problem: HttpProblem, service: str) -> SnapProblem:
    """Transport-level refusals from connectors.http_common (body size, JSON, content type): 400xx00."""
    if problem.status < 500:
        return SnapProblem(problem.status, snap_code(400, "00", service), "Bad Request", problem.reason)
    return SnapProblem(problem.status, snap_code(500, "00", service), "General Error", problem.reason)


def from_rejected(rejected: Rejected, service: str) -> SnapProblem:
    status, case, text = _REASON_CODES.get(rejected.reason, (400, "01", "Invalid Field Format"))
    message = f"{text} {rejected.field}" if rejected.field else text
    return SnapProblem(status, snap_code(status, case, service), message, rejected.reason)


def missing(name: str, service: str, reason: str = HEADER_MISSING) -> SnapProblem:
    return SnapProblem(400, snap_code(400, "02", service), f"Invalid Mandatory Field {name}", reason)


def invalid(name: str, service: str, reason: str = HEADER_INVALID) -> SnapProblem:
    return SnapProblem(400, snap_code(400, "01", service), f"Invalid Field Format {name}", reason)


def unauthorized(why: str, reason: str, service: str, case: str = "00") -> SnapProblem:
    """401xx00 Unauthorized (signature, timestamp, partner) or 401xx01 Invalid Token (B2B)."""
    return SnapProblem(
        401, snap_code(401, case, service), f"Unauthorized. {why}", reason, headers={"WWW-Authenticate": "Bearer"}
    )


def conflict(service: str, reason: str = EXTERNAL_ID_CONFLICT) -> SnapProblem:
    """409xx00 Conflict: X-EXTERNAL-ID already used today by this partner for a different request."""
    return SnapProblem(409, snap_code(409, "00", service), "Conflict", reason)


def internal_error(service: str, reason: str = "INTERNAL_ERROR") -> SnapProblem:
    return SnapProblem(500, snap_code(500, "01", service), "Internal Server Error", reason)


def refuse(obs: RequestObservation, problem: SnapProblem, what: str) -> JSONResponse:
    """Count the refusal once, log it (reason and code only) and build the SNAP body."""
    obs.done(problem.status, problem.reason)
    if problem.status < 500:
        event(log, what, bank=obs.partner, reason=problem.reason, code=problem.code)
    return problem.response()
