"""The SNAP biller API for partner banks: the composition root of connectors/bank.

One module per endpoint, each exposing `router(ctx)` and `REQUEST_BODIES` (documentation models for the
endpoints that read the raw body themselves):

    token_grant   POST /v1.0/access-token/b2b        SNAP 73: SHA256withRSA -> short-lived bearer token
    inquiry       POST /v1.0/transfer-va/inquiry     SNAP 24: the outstanding bill, from the member book
    payment       POST /v1.0/transfer-va/payment     SNAP 25: payment notification -> bank.payments.raw
    statements    POST /v1.0/bank-statements         SNAP 14: statement file -> bank.statements.raw
    enrollments   POST /v1/bank/enrollments          not SNAP: a bank enrolls a worker -> kbri.enrollments.raw
    reports       GET  /v1/reports/daily             not SNAP: the bank's own daily statement reconciliation

Shared pieces: errors (SNAP codes), partners (registry: profile + secrets), auth (transactional
signature), tokens (issuer), context (what a module gets). Every error body is {"responseCode",
"responseMessage", "reason"}; messages name fields, never values.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from fastapi import FastAPI

from connectors.bank import enrollments, inquiry, payment, reports, statements, token_grant
from connectors.bank.auth import SnapAuth
from connectors.bank.context import BankContext
from connectors.bank.member_book import MemberBook
from connectors.bank.partners import PartnerRegistry
from connectors.bank.tokens import TokenIssuer
from connectors.http_common import Background, add_probes, app_lifespan, document_request_bodies
from connectors.kafka_edge import EdgeSender
from services.config import Settings


def build_context(
    settings: Settings,
    producer: EdgeSender,
    *,
    token_clock: Callable[[], float] = time.monotonic,
    book: MemberBook | None = None,
    background: Sequence[Background] = (),
) -> BankContext:
    """Raises SnapKeyError when a configured bank public key is unusable (fail at start-up, not per request).

    Without a `book` the app gets an empty one that never becomes ready (inquiry answers 503): only a
    process with a reader feeding it (connectors.serve) knows members.
    """
    registry = PartnerRegistry(settings)
    issuer = TokenIssuer(settings.snap_token_ttl_s, token_clock)
    book = book if book is not None else MemberBook(settings.va_name_display)
    ctx = BankContext(settings, producer, registry, issuer, SnapAuth(settings, registry, issuer), book)
    ctx.background.extend(background)

    async def book_ready() -> bool:
        return book.ready

    ctx.readiness["member_book"] = book_ready
    return ctx


def create_bank_app(
    settings: Settings,
    producer: EdgeSender,
    *,
    token_clock: Callable[[], float] = time.monotonic,
    book: MemberBook | None = None,
    background: Sequence[Background] = (),
) -> FastAPI:
    """The SNAP biller API. Starts the producer (and any background reader) on startup, closes them on shutdown.

    `token_clock` drives B2B token expiry (monotonic in production; tests inject a fake one).
    """
    ctx = build_context(settings, producer, token_clock=token_clock, book=book, background=background)

    app = FastAPI(
        lifespan=app_lifespan(producer, ctx.background),
        title="sinergi bank API (SNAP biller)",
        version="1.0.0",
        description="SNAP virtual-account endpoints for partner banks. Error bodies are "
        '{"responseCode", "responseMessage", "reason"}; personal values are never echoed.',
    )
    modules = (token_grant, inquiry, payment, statements, enrollments, reports)
    for module in modules:
        app.include_router(module.router(ctx))

    add_probes(app, ctx.readiness, "every background dependency (the inquiry read model) is ready")

    bodies = {}
    for module in modules:
        bodies.update(module.REQUEST_BODIES)
    document_request_bodies(app, bodies)
    return app
