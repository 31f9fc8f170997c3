"""Run one stream processor: a Faust worker (or the core publisher loop) with /metrics, /healthz and /readyz
on its own port (services/worker_health.py)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time

import faust

from services import (
    normalize_enrollments,
    normalize_payments,
    normalize_statements,
    notify_kbri,
    reconcile,
    reconcile_statements,
)
from services.app import create_app
from services.codec import build_codec
from services.config import Settings
from services.context import build_context
from services.diagnostics import dump_tasks
from services.worker_health import WorkerHealth, install_faust, serve_probes, watch_aiokafka

log = logging.getLogger(__name__)

EXIT_STALLED = 75  # EX_TEMPFAIL: try again

FAUST_SERVICES = {
    normalize_enrollments.NAME: normalize_enrollments.register,
    normalize_payments.NAME: normalize_payments.register,
    reconcile.NAME: reconcile.register,
    normalize_statements.NAME: normalize_statements.register,
    notify_kbri.NAME: notify_kbri.register,
    reconcile_statements.NAME: reconcile_statements.register,
}


def run_worker(service: str, settings: Settings, bootstrap: str, metrics_port: int | None) -> None:
    health = WorkerHealth(service, settings.worker_stall_after_s)
    if metrics_port is not None:
        serve_probes(health, metrics_port, settings.http_host)
    if service == "core_publisher":
        _run_core_publisher(settings, bootstrap, health)
        return
    app = create_app(service, settings, bootstrap)
    codec = build_codec(settings)
    FAUST_SERVICES[service](app, build_context(settings, codec))
    run_faust_app(app, settings, health)


def run_faust_app(app: faust.App, settings: Settings, health: WorkerHealth) -> None:
    """Start a Faust app whose agents are registered, with the health checks; returns when it stops."""

    @app.task
    async def _quiet_root_logger() -> None:
        # A Faust worker leaves the root logger at DEBUG; every aiokafka log.debug on the send
        # path then builds a record (about 10% of worker CPU, shared/perf-notes.md).
        logging.getLogger().setLevel(settings.log_level)

    _install_rebalance_watchdog(app, settings.worker_rebalance_stall_s)
    install_faust(app, health)
    worker = faust.Worker(app, loglevel=settings.log_level, quiet=True, override_logging=False)
    worker.execute_from_commandline()


def _install_rebalance_watchdog(app: faust.App, stall_s: float) -> None:
    """Exit when the worker has been rebalancing for longer than `stall_s`.

    Under load on the embedded broker a Faust worker that lost its group membership (a missed heartbeat,
    then UnknownMemberId on commit) was seen to wait in recovery forever with no partitions: alive, but
    consuming nothing. Exiting hands it to the process manager (the supervisor here, Kubernetes in
    production), and the restarted worker resumes from the committed offsets: at-least-once is kept.
    """
    since: list[float] = []

    @app.timer(interval=max(1.0, stall_s / 10))
    async def _rebalance_watchdog() -> None:
        if not app.rebalancing:
            since.clear()
            return
        now = time.monotonic()
        if not since:
            since.append(now)
        elif now - since[0] > stall_s:
            log.error("worker stuck in a rebalance for %.0f s; exiting so that it is restarted", now - since[0])
            log.error("where it waited:\n%s", dump_tasks())
            os._exit(EXIT_STALLED)


def _run_core_publisher(settings: Settings, bootstrap: str, health: WorkerHealth) -> None:
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
        watch = asyncio.create_task(watch_aiokafka(health, lambda: publisher.consumer), name="health")
        try:
            await publisher.run()
        except Exception:
            health.record_crash(fatal=True)  # the process exits next and its manager restarts it
            raise
        finally:
            watch.cancel()

    asyncio.run(main())
