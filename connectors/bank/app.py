"""The SNAP biller API for partner banks: the composition root of connectors/bank.

One module per endpoint, each exposing `router(ctx)` and `REQUEST_BODIES` (documentation models for the
endpoints that read the raw body themselves):

    token_grant   POST /v1.0/access-token/b2b        SNAP 73: SHA256withRSA -> short-lived bearer token
    payment       POST /v1.0/transfer-va/payment     SNAP 25: payment notification -> bank.payments.raw

Shared pieces: errors (SNAP codes), partners (registry: profile + secrets), auth (transactional
signature), tokens (issuer), context (what a module gets). Every error body is {"responseCode",
"responseMessage", "reason"}; messages name fields, never values.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI

from connectors.bank import payment, token_grant
from connectors.bank.auth import SnapAuth
from connectors.bank.context import BankContext
from connectors.bank.models import Health
from connectors.bank.partners import PartnerRegistry
from connectors.bank.tokens import TokenIssuer
from connectors.http_common import document_request_bodies
from connectors.kafka_edge import EdgeSender
from services.config import Settings


def build_context(
    settings: Settings, producer: EdgeSender, *, token_clock: Callable[[], float] = time.monotonic
) -> BankContext:
    """Raises SnapKeyError when a configured bank public key is unusable (fail at start-up, not per request)."""
    registry = PartnerRegistry(settings)
    issuer = TokenIssuer(settings.snap_token_ttl_s, token_clock)
    return BankContext(settings, producer, registry, issuer, SnapAuth(settings, registry, issuer))


def create_bank_app(
    settings: Settings, producer: EdgeSender, *, token_clock: Callable[[], float] = time.monotonic
) -> FastAPI:
    """The SNAP biller API. Starts the producer (and any background reader) on startup, closes them on shutdown.

    `token_clock` drives B2B token expiry (monotonic in production; tests inject a fake one).
    """
    ctx = build_context(settings, producer, token_clock=token_clock)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        producer.start()
        started = []
        try:
            for task in ctx.background:
                await task.start()
                started.append(task)
            yield
        finally:
            for task in reversed(started):
                await task.close()
            await producer.close()

    app = FastAPI(
        lifespan=lifespan,
        title="sinergi bank API (SNAP biller)",
        version="1.0.0",
        description="SNAP virtual-account endpoints for partner banks. Error bodies are "
        '{"responseCode", "responseMessage", "reason"}; personal values are never echoed.',
    )
    modules = (token_grant, payment)
    for module in modules:
        app.include_router(module.router(ctx))

    @app.get("/healthz", response_model=Health)
    async def healthz() -> Health:
        return Health()

    bodies = {}
    for module in modules:
        bodies.update(module.REQUEST_BODIES)
    document_request_bodies(app, bodies)
    return app
