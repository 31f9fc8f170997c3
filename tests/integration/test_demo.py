"""`make demo` is `sinergi up --simulate`: it prints its URLs, the simulator's traffic reaches the core
topic, and Ctrl-C (SIGINT) stops every process it started, broker included."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from hubclient import poll_topic

from connectors.embedded import free_port, free_port_block
from services.catalogue import CORE_MEMBER_RECORDS
from services.supervisor import METRICS_PORTS

pytestmark = pytest.mark.integration


def _children_of(pid: int) -> set[int]:
    """Every descendant of pid, read from /proc (Linux)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            parents[int(stat.parent.name)] = int(fields[1])
        except (OSError, IndexError, ValueError):
            continue
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_sinergi_up_with_simulator_prints_urls_feeds_the_core_topic_and_stops_cleanly(tmp_path: Path) -> None:
    registry_port = free_port()
    env = {
        **os.environ,
        "SINERGI_BANK_API_PORT": str(free_port()),
        "SINERGI_KBRI_API_PORT": str(free_port()),
        "SINERGI_STATUS_PORT": str(free_port()),
        "SINERGI_REGISTRY_PORT": str(registry_port),
        "SINERGI_METRICS_PORT_BASE": str(free_port_block(METRICS_PORTS)),
        "SINERGI_DATA_DIR": str(tmp_path),
    }
    for inherited in ("SINERGI_KAFKA_BOOTSTRAP", "SINERGI_SCHEMA_REGISTRY_URL"):
        env.pop(inherited, None)  # the demo starts its own broker and registry
    proc = subprocess.Popen(
        [sys.executable, "-m", "services", "up", "--simulate"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group, like a terminal's foreground job
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)  # type: ignore[union-attr]
    reader.start()
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not any("Ctrl-C stops everything" in line for line in lines):
            assert proc.poll() is None, "".join(lines)
            time.sleep(0.2)
        output = "".join(lines)
        assert "Ctrl-C stops everything" in output, output
        for url_part in ("/docs", "/subjects", "/metrics"):
            assert url_part in output
        bootstrap = re.search(r"kafka://(127\.0\.0\.1:\d+)", output)
        assert bootstrap is not None, output

        registry = SchemaRegistryClient({"url": f"http://127.0.0.1:{registry_port}"})
        records = poll_topic(
            bootstrap.group(1),
            CORE_MEMBER_RECORDS.name,
            lambda ms: sum(m.value()["status"] == "ACTIVE" for m in ms) >= 3,
            deserializer=AvroDeserializer(registry),
        )
        offices = {m.value()["office_code"] for m in records}
        assert len(offices) >= 2, offices
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not any("[core.member-records.v1]" in line for line in lines):
            time.sleep(0.2)
        descendants = _children_of(proc.pid)
        assert len(descendants) >= 8  # broker, registry, 2 APIs, 4 workers, simulator
    finally:
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: every process of the group
        try:
            code = proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert code == 0, "".join(lines)
    assert "stopped." in "".join(lines)
    assert "restarting in" not in "".join(lines)
    assert "[core.member-records.v1]" in "".join(lines)  # the demo shows the core topic filling up
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_alive(pid) for pid in descendants):
        time.sleep(0.2)
    assert not [pid for pid in descendants if _alive(pid)], "orphan processes left behind"
