"""A Faust worker for tests/integration/test_worker_readiness.py: the real worker entry (run_faust_app) with
one agent on a test-only topic whose handler the test can block and crash.

`python probe_worker_app.py STAGE TOPIC RELEASE_FILE METRICS_PORT`. Values: b"block" waits until
RELEASE_FILE exists (the consumer is stuck mid-record, as a hung downstream call would leave it),
b"crash" raises, anything else is processed at once.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import faust

from services.app import create_app, topic
from services.config import Settings
from services.worker import run_faust_app
from services.worker_health import WorkerHealth, serve_probes


def main() -> None:
    stage, topic_name, release, port = sys.argv[1:5]
    settings = Settings()
    assert settings.kafka_bootstrap is not None
    health = WorkerHealth(stage, settings.worker_stall_after_s, interval_s=0.5)
    serve_probes(health, int(port), settings.http_host)
    app = create_app(stage, settings, settings.kafka_bootstrap)
    release_file = Path(release)

    @app.agent(topic(app, topic_name), name=stage)
    async def handle(stream: faust.StreamT) -> None:
        async for value in stream:
            if value == b"block":
                # the release comes from another process (the test): a file is the simplest shared signal
                while not await asyncio.to_thread(release_file.exists):  # noqa: ASYNC110
                    await asyncio.sleep(0.1)
            elif value == b"crash":
                raise RuntimeError("crash requested by the test")

    run_faust_app(app, settings, health)


if __name__ == "__main__":
    main()
