"""A real Faust worker on the real broker: /readyz turns 503 and the stall gauges move while its consumer is
stuck mid-record, and it is ready again once the record finishes; a crashing agent is counted and makes it
not ready for a while. The worker is tests/integration/probe_worker_app.py (run_faust_app, the production
entry, with one test-only agent); nothing in the check is mocked.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic
from prometheus_client.parser import text_string_to_metric_families

from connectors.embedded import EmbeddedBroker, free_port
from services.config import REPO_ROOT

pytestmark = pytest.mark.integration

STALL_AFTER_S = 3.0
DEADLINE_S = 120.0


class Probe:
    def __init__(self, port: int, stage: str, topic: str) -> None:
        self.base, self.stage, self.topic = f"http://127.0.0.1:{port}", stage, topic

    def get(self, path: str) -> httpx.Response:
        return httpx.get(self.base + path, timeout=5)

    def ready(self) -> tuple[int, dict[str, Any]]:
        resp = self.get("/readyz")
        return resp.status_code, resp.json()

    def sample(self, name: str, **labels: str) -> float | None:
        for family in text_string_to_metric_families(self.get("/metrics").text):
            for s in family.samples:
                if s.name == name and all(s.labels.get(k) == v for k, v in {"stage": self.stage, **labels}.items()):
                    return float(s.value)
        return None

    def partition(self, name: str) -> float | None:
        return self.sample(name, topic=self.topic, partition="0")


def until(what: str, check: Callable[[], Any]) -> Any:
    deadline = time.monotonic() + DEADLINE_S
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except httpx.HTTPError as exc:  # the worker is still starting its server
            last = exc
        else:
            if last:
                return last
        time.sleep(0.2)
    raise AssertionError(f"not within {DEADLINE_S}s: {what} (last: {last!r})")


@pytest.fixture
def probe_worker(broker: EmbeddedBroker, tmp_path: Path) -> Iterator[tuple[Probe, Producer, Path]]:
    tag = uuid.uuid4().hex[:8]
    stage, topic = f"probe_{tag}", f"test.stall.{tag}"
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    for fut in admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)]).values():
        fut.result(30)
    port = free_port()
    release = tmp_path / "release"
    env = {
        **os.environ,
        "SINERGI_KAFKA_BOOTSTRAP": broker.bootstrap,
        "SINERGI_DATA_DIR": str(tmp_path),
        "SINERGI_WORKER_STALL_AFTER_S": str(STALL_AFTER_S),
        "SINERGI_LOG_JSON": "true",
    }
    log = tmp_path / "worker.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                str(Path(__file__).with_name("probe_worker_app.py")),
                stage,
                topic,
                str(release),
                str(port),
            ],
            env=env,
            cwd=REPO_ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    producer = Producer({"bootstrap.servers": broker.bootstrap})
    try:
        yield Probe(port, stage, topic), producer, release
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        print(f"----- worker.log (tail) -----\n{log.read_text(errors='replace')[-4000:]}")


def send(producer: Producer, topic: str, *values: bytes) -> None:
    for value in values:
        producer.produce(topic, key=b"k", value=value, partition=0)
    assert producer.flush(30) == 0


def test_a_stuck_consumer_makes_the_worker_not_ready_and_it_recovers(
    probe_worker: tuple[Probe, Producer, Path],
) -> None:
    probe, producer, release = probe_worker
    until("worker ready", lambda: probe.ready()[0] == 200)
    assert probe.get("/healthz").json() == {"status": "ok"}
    # /metrics is prometheus_client's exposition, as before the probes existed
    metrics_page = probe.get("/metrics")
    assert metrics_page.headers["content-type"].startswith("text/plain")
    assert probe.sample("sinergi_worker_ready") == 1.0

    send(producer, probe.topic, b"one", b"two")
    until("first records committed", lambda: probe.partition("sinergi_consumer_lag_messages") == 0.0)
    assert probe.sample("sinergi_consumer_stalled_partitions") == 0.0

    started = time.monotonic()
    send(producer, probe.topic, b"block", b"after-1", b"after-2")
    _, body = until("worker not ready", lambda: (r := probe.ready())[0] == 503 and r)
    waited = time.monotonic() - started
    assert waited >= STALL_AFTER_S - 0.5  # not before the threshold
    assert body["ready"] is False
    assert body["checks"]["partitions"] is False
    assert body["checks"]["loop"] is True and body["checks"]["agents"] is True
    (stalled,) = body["stalled"]
    assert stalled["topic"] == probe.topic and stalled["partition"] == 0
    assert stalled["lag"] == 3  # the blocked record and the two behind it
    assert stalled["commit_age_s"] >= STALL_AFTER_S
    assert until("stall gauge", lambda: probe.sample("sinergi_consumer_stalled_partitions") == 1.0)
    assert probe.partition("sinergi_consumer_lag_messages") == 3.0
    assert (probe.partition("sinergi_consumer_commit_age_seconds") or 0.0) >= STALL_AFTER_S
    assert probe.sample("sinergi_worker_ready") == 0.0
    assert probe.get("/healthz").status_code == 200  # stuck on a record is not dead: no restart

    release.touch()
    until("ready again", lambda: probe.ready()[0] == 200)
    assert probe.sample("sinergi_consumer_stalled_partitions") == 0.0
    assert until("lag back to 0", lambda: probe.partition("sinergi_consumer_lag_messages") == 0.0)
    assert probe.partition("sinergi_consumer_commit_age_seconds") == 0.0
    assert probe.sample("sinergi_worker_ready") == 1.0


def test_a_crashing_agent_is_counted_and_not_ready_until_it_has_kept_running(
    probe_worker: tuple[Probe, Producer, Path],
) -> None:
    probe, producer, _ = probe_worker
    until("worker ready", lambda: probe.ready()[0] == 200)
    assert probe.sample("sinergi_agent_crashes_total") == 0.0

    send(producer, probe.topic, b"crash")
    _, body = until("not ready after the crash", lambda: (r := probe.ready())[0] == 503 and r)
    assert body["checks"]["agents"] is False
    assert probe.sample("sinergi_agent_crashes_total") == 1.0

    # Faust restarts the actor: later records are processed, and readiness returns after the window.
    send(producer, probe.topic, b"after-crash")
    until("ready after the crash window", lambda: probe.ready()[0] == 200)
    assert until("caught up", lambda: probe.partition("sinergi_consumer_lag_messages") == 0.0)
    assert probe.sample("sinergi_agent_crashes_total") == 1.0
