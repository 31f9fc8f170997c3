"""The KBRI API for representation offices (KBRI/KJRI/KRI/KDEI): the composition root of connectors/kbri.

One module per endpoint, each exposing `router(ctx)` and `REQUEST_BODIES` (documentation models for the
endpoints that read the raw body themselves):

    enrollments   POST /v1/enrollments     one enrollment -> kbri.enrollments.raw (202 after Kafka acked)
    batch         POST /v1/enrollments/batch  a CSV of enrollments, each row as above; a per-row report
    inquiry       GET /v1/members/{customer_no}, POST /v1/members/search   one of the office's own members
    feed          GET /v1/updates          the office's updates from a cursor (pull feed)
    cases         POST /v1/cases           a consultation case -> kbri.cases.v1 (202 after Kafka acked)

Inquiry and the feed answer from the office book (connectors/kbri/office_book.py), a read model of the
office topics that a background reader loads beside the server (readiness check "office_book").

Shared pieces: auth (office API keys, hashed at rest), context (what a module gets), connectors/intake.py
(validation + produce, shared with the bank API). Every error body is {reason, field, message}; personal
values are never echoed. Every request is scoped to the calling office.
"""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import FastAPI

from connectors.http_common import Background, add_probes, app_lifespan, document_request_bodies
from connectors.intake import (
    CHANNEL_OFFICE,
    H_CHANNEL,
    H_EVENT_ID,
    H_OFFICE,
    H_RECEIVED_AT,
    H_REQUEST_ID,
    REQUEST_ID_INVALID,
    REQUEST_ID_MISSING,
    EnrollmentIntake,
)
from connectors.kafka_edge import EdgeSender
from connectors.kbri import batch, cases, enrollments, feed, inquiry
from connectors.kbri.auth import OfficeAuth
from connectors.kbri.context import KbriContext, RecordEncoder
from connectors.kbri.office_book import OfficeBook
from services.config import Settings

# The header names and reason codes stay importable from here (services.bench builds intake records).
__all__ = [
    "CHANNEL",
    "H_CHANNEL",
    "H_EVENT_ID",
    "H_OFFICE",
    "H_RECEIVED_AT",
    "H_REQUEST_ID",
    "REQUEST_ID_INVALID",
    "REQUEST_ID_MISSING",
    "build_context",
    "create_kbri_app",
]

CHANNEL = CHANNEL_OFFICE


def build_context(
    settings: Settings,
    producer: EdgeSender,
    *,
    background: Sequence[Background] = (),
    book: OfficeBook | None = None,
    codec: RecordEncoder | None = None,
) -> KbriContext:
    """Without a `book` the app gets an empty one that never becomes ready (inquiry and feed answer 503):
    only a process with a reader feeding it (connectors.serve) knows members. Without a `codec`, case
    intake answers 503 until something (connectors.kbri.cases.CodecLoader) sets one."""
    intake = EnrollmentIntake(settings, producer)
    book = book if book is not None else OfficeBook(intake.office_codes, settings.office_feed_max_updates)
    ctx = KbriContext(settings, producer, OfficeAuth(settings), intake, book=book, codec=codec)
    ctx.background.extend(background)

    async def book_ready() -> bool:
        return book.ready

    ctx.readiness["office_book"] = book_ready
    return ctx


def create_kbri_app(
    settings: Settings,
    producer: EdgeSender,
    *,
    background: Sequence[Background] = (),
    ctx: KbriContext | None = None,
    book: OfficeBook | None = None,
    codec: RecordEncoder | None = None,
) -> FastAPI:
    """The KBRI API. Starts the producer (and any background reader) on startup, closes them on shutdown."""
    if ctx is None:
        ctx = build_context(settings, producer, background=background, book=book, codec=codec)

    app = FastAPI(
        lifespan=app_lifespan(producer, ctx.background),
        title="sinergi KBRI API",
        version="1.0.0",
        description="API for Indonesian representation offices (KBRI/KJRI/KRI/KDEI): enrollment intake and "
        "the office's own members' updates. Every error body is {reason, field, message}; personal values "
        "are never echoed.",
    )
    modules = (enrollments, batch, inquiry, feed, cases)
    for module in modules:
        app.include_router(module.router(ctx))

    add_probes(app, ctx.readiness, "every background dependency (the office read model) is ready")

    bodies = {}
    for module in modules:
        bodies.update(module.REQUEST_BODIES)
    document_request_bodies(app, bodies)
    return app
