"""Integration tier: a real broker (embedded Tansu on a free loopback port) and the hub's real processes."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from connectors.embedded import EmbeddedBroker, free_port, free_port_block
from services.config import Settings
from services.supervisor import METRICS_PORTS, Supervisor


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    log_file = tmp_path_factory.mktemp("broker") / "tansu.log"
    with EmbeddedBroker(log_file=log_file) as b:
        yield b


@pytest.fixture(scope="session")
def hub(broker: EmbeddedBroker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Supervisor]:
    """Registry, both APIs and every processor as separate processes, like `sinergi up`."""
    data_dir: Path = tmp_path_factory.mktemp("hub")
    overrides = {
        "SINERGI_KAFKA_BOOTSTRAP": broker.bootstrap,
        "SINERGI_BANK_API_PORT": str(free_port()),
        "SINERGI_KBRI_API_PORT": str(free_port()),
        "SINERGI_REGISTRY_PORT": str(free_port()),
        "SINERGI_STATUS_PORT": str(free_port()),
        "SINERGI_METRICS_PORT_BASE": str(free_port_block(METRICS_PORTS)),
        "SINERGI_DATA_DIR": str(data_dir),
    }
    saved = {k: os.environ.get(k) for k in overrides}
    os.environ.update(overrides)
    supervisor = Supervisor(Settings(), simulate=False)
    try:
        supervisor.start()
        supervisor.watch_children()  # a worker that exits (a stalled rebalance) is restarted, as in production
        yield supervisor
    finally:
        supervisor.shutdown()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        for log in sorted((data_dir / "logs").glob("*.log")):
            tail = log.read_text(errors="replace")[-3000:]
            print(f"----- {log.name} (tail) -----\n{tail}")
