"""Run one stream processor: a Faust worker (or the core publisher loop) with /metrics on its own port."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

import faust
from prometheus_client import start_http_server

from services import normalize_enrollments, normalize_payments, reconcile
from services.app import create_app
from services.codec import build_codec
from services.config import Settings
from services.context import build_context

log = logging.getLogger(__name__)

FAUST_SERVICES = {
    normalize_enrollments.NAME: normalize_enrollments.register,
    normalize_payments.NAME: normalize_payments.register,
    reconcile.NAME: reconcile.register,
}


def run_worker(service: str, settings: Settings, bootstrap: str, metrics_port: int | None) -> None:
    if metrics_port is not None:
        start_http_server(metrics_port, addr=settings.http_host)
    if service == "core_publisher":
        _run_core_publisher(settings, bootstrap)
        return
    app = create_app(service, settings, bootstrap)
    codec = build_codec(settings)
    FAUST_SERVICES[service](app, build_context(settings, codec))

    @app.task
    async def _quiet_root_logger() -> None:
        # A Faust worker leaves the root logger at DEBUG; every aiokafka log.debug on the send
        # path then builds a record (about 10% of worker CPU, shared/perf-notes.md).
        logging.getLogger().setLevel(settings.log_level)

    worker = faust.Worker(app, loglevel=settings.log_level, quiet=True, override_logging=False)
    worker.execute_from_commandline()


def _run_core_publisher(settings: Settings, bootstrap: str) -> None:
    from connectors.core.publisher import CorePublisher

    codec = build_codec(settings)

    def version_of(value: bytes) -> int:
        _, record = codec.decode(value)
        return int(record["version"])

    publisher = CorePublisher(settings, bootstrap, version_of)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, publisher.stop)
        await publisher.run()

    asyncio.run(main())
