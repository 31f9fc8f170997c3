"""GET /v1/reports/daily?bank=&date=: a bank reads its own daily statement reconciliation (not SNAP).

Placed on the bank API rather than an ops app because a bank already has credentials here: the call is
authenticated like every transactional call, over the empty body (the signature's body digest is
sha256(b"")), and the `bank` parameter must be the authenticated partner: a bank never sees another's.

The decisions are read from reconciliation.statements.v1 on each call (services.report_cli, in a thread):
a daily report is asked for rarely, and a read model would hold every bank's decisions in every API process.
Tests replace :func:`read_decisions`.

Refusals (service code 00: not a SNAP service): 400xx02 MISSING_FIELD (bank or date absent), 400xx01
INVALID_FIELD (date not YYYY-MM-DD), 401xx00/01 as for every signed call, 403xx01 OTHER_BANK (`bank` is not
the caller), 503 (500xx02) REPORT_UNAVAILABLE (no broker configured or the topic could not be read).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import JSONResponse

from connectors.bank.context import BankContext
from connectors.bank.errors import SnapProblem, missing, refuse, snap_code
from connectors.bank.models import SnapError
from connectors.http_common import RequestObservation
from services.config import Settings
from services.domain.daily_report import build_report
from services.domain.errors import Reason
from services.domain.statement_match import Decision
from services.logs import event

log = logging.getLogger("connectors.bank")

PATH = "/v1/reports/daily"
ENDPOINT = "reports_daily"
SERVICE = "00"  # not a SNAP service: SnapAuth needs a code for its refusals
OTHER_BANK = "OTHER_BANK"
REPORT_UNAVAILABLE = "REPORT_UNAVAILABLE"
RECONCILIATION_DISABLED = "STATEMENT_RECONCILIATION_DISABLED"
REQUEST_BODIES: dict[str, Any] = {}
ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": SnapError, "description": "bank or date missing or malformed"},
    401: {"model": SnapError, "description": "token, timestamp or signature refused"},
    403: {"model": SnapError, "description": "bank is not the authenticated partner"},
    503: {
        "model": SnapError,
        "description": "REPORT_UNAVAILABLE: the decisions topic could not be read; STATEMENT_RECONCILIATION_DISABLED: "
        "the reconcile_statements worker is not enabled (SINERGI_STATEMENT_RECONCILIATION_ENABLED)",
    },
}


async def read_decisions(settings: Settings, bank: str) -> Sequence[Decision]:
    """Every decision of ``bank`` on reconciliation.statements.v1 (blocking read, off the event loop)."""
    from services.report_cli import decisions_of, read_topic

    bootstrap = settings.kafka_bootstrap
    if bootstrap is None:
        raise RuntimeError("no broker configured")
    records = await asyncio.to_thread(read_topic, bootstrap)
    return decisions_of(records, bank)[0]


def router(ctx: BankContext) -> APIRouter:
    api = APIRouter()

    @api.get(PATH, responses=ERRORS, summary="Daily statement reconciliation of the calling bank (WIB date)")
    async def daily_report(
        request: Request,
        bank: Annotated[str | None, Query(description="The calling bank's id")] = None,
        day: Annotated[str | None, Query(alias="date", description="WIB business date, YYYY-MM-DD")] = None,
        authorization: Annotated[str | None, Header(description="Bearer <bank token>")] = None,
        x_signature: Annotated[
            str | None, Header(alias="X-SIGNATURE", description="HMAC-SHA512 over the empty body")
        ] = None,
    ) -> JSONResponse:
        del authorization, x_signature  # documented here; SnapAuth reads them from the request
        obs = RequestObservation("bank", ENDPOINT)
        try:
            auth = ctx.auth.verify(request, b"", SERVICE, obs)
            if not bank:
                raise missing("bank", SERVICE, Reason.MISSING_FIELD.value)
            if not day:
                raise missing("date", SERVICE, Reason.MISSING_FIELD.value)
            try:
                business_date = date.fromisoformat(day)
            except ValueError:
                raise SnapProblem(
                    400, snap_code(400, "01", SERVICE), "Invalid Field Format date", Reason.INVALID_FIELD.value
                ) from None
            if bank != auth.partner.bank_id:
                raise SnapProblem(403, snap_code(403, "01", SERVICE), "Feature Not Allowed", OTHER_BANK)
        except SnapProblem as problem:
            return refuse(obs, problem, "report refused")
        if not ctx.settings.statement_reconciliation_enabled:
            # No stage writes the decisions: an empty report would read as "nothing to reconcile".
            off = SnapProblem(503, snap_code(500, "02", SERVICE), "External Server Error", RECONCILIATION_DISABLED)
            return refuse(obs, off, "report refused")
        try:
            decisions = await read_decisions(ctx.settings, bank)
        except Exception as exc:
            event(log, "report unavailable", bank=obs.partner, reason=REPORT_UNAVAILABLE, error=type(exc).__name__)
            unavailable = SnapProblem(503, snap_code(500, "02", SERVICE), "External Server Error", REPORT_UNAVAILABLE)
            return refuse(obs, unavailable, "report refused")
        report = build_report(decisions, bank, business_date)
        obs.done(200)
        return JSONResponse(report.model_dump(mode="json"), status_code=200)

    return api
