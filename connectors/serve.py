"""Serve a partner API or the embedded registry with uvicorn (`sinergi api ...`, `sinergi registry`)."""

from __future__ import annotations

import uvicorn
from fastapi import FastAPI

from services.config import Settings


def serve_api(which: str, settings: Settings, bootstrap: str) -> None:
    from connectors.kafka_edge import EdgeProducer

    producer = EdgeProducer(settings, bootstrap)
    app: FastAPI
    if which == "bank":
        from connectors.bank.app import create_bank_app
        from connectors.bank.member_book import MemberBook, MemberBookReader

        # VA inquiry answers from members.v1: the reader loads the book beside the server, never before it.
        book = MemberBook(settings.va_name_display)
        reader = MemberBookReader(settings, bootstrap, book)
        app, port = create_bank_app(settings, producer, book=book, background=[reader]), settings.bank_api_port
    else:
        from connectors.kbri.app import build_context, create_kbri_app
        from connectors.kbri.cases import CodecLoader
        from connectors.kbri.office_book import OfficeBook, OfficeBookReader
        from services.reference import load_offices

        # Inquiry and the feed answer from the office topics; cases need the registry. Both load beside the
        # server, never before it: enrollments are served meanwhile.
        office_book = OfficeBook(load_offices(settings.offices_file), settings.office_feed_max_updates)
        office_reader = OfficeBookReader(settings, bootstrap, office_book)
        ctx = build_context(settings, producer, book=office_book, background=[office_reader])
        loader = CodecLoader(settings, ctx)
        ctx.background.append(loader)
        # Not a readiness check: without the registry only cases answer 503 CASES_UNAVAILABLE; enrollments,
        # inquiry and the feed go on, so a registry outage must not take the pod out of the load balancer.
        app, port = create_kbri_app(settings, producer, ctx=ctx), settings.kbri_api_port
    _mount_metrics(app)
    calm_garbage_collector()
    uvicorn.run(app, host=settings.http_host, port=port, log_level="warning", access_log=False)


def calm_garbage_collector() -> None:
    """Fewer, not longer, collector pauses on the request path.

    Under load the bank API ran a full collection every 2-3 s, each scanning the whole growing heap (idempotency
    answers, the member book) for 27 to 92 ms and freeing almost nothing: that was the notifications' p99. What
    exists at start (imports, app, settings) is frozen out of every scan, and young collections run less often;
    the reference cycles a request leaves still die in the young generations.
    """
    import gc

    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, 20, 100)


GC_YOUNG_THRESHOLD = 50_000  # allocations between young collections (CPython's default 700)


def serve_registry(settings: Settings) -> None:
    from connectors.registry.app import create_registry_app
    from connectors.registry.store import SchemaStore, preload

    store = SchemaStore()
    preload(store, settings.schemas_dir)
    app = create_registry_app(store)
    uvicorn.run(app, host=settings.http_host, port=settings.registry_port, log_level="warning", access_log=False)


def _mount_metrics(app: FastAPI) -> None:
    """GET /metrics answered directly (a mounted sub-app answers /metrics with a 307 to /metrics/)."""
    from fastapi.responses import Response
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
