"""Issue 7, item 5: a slow or dead downstream never stalls the processors nor makes them rebalance.

(a) Office webhooks: a `sinergi webhooks serve` process on the session broker delivers two offices to a
    receiver on 127.0.0.1 that accepts the connection and never answers, and the other two to one that
    answers 200 only after a long delay. While they hang, enrollments and payments of every office keep
    flowing: every member reaches core.member-records.v1 and its office topic ACTIVE within a deadline, the
    webhook service counts its timeouts and retries, and no hub worker re-joined its group or restarted.
(b) The core system lagging: a consumer group on core.member-records.v1 that takes one record every half
    second, and one that joined and then stopped reading. Same criterion.

The webhook process is this test's (its own group and subscriptions), stopped in a finally; the hub is the
session's. Members are a clean backlog (services/simulation/backlog.py) produced to the raw topics.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import random
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from chaos import produce_paced, verified
from confluent_kafka import Consumer
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from connectors.embedded import free_port
from services.catalogue import CORE_MEMBER_RECORDS, office_updates_topic
from services.domain.verification import VerificationReport
from services.simulation.backlog import Backlog, build_backlog
from services.soak import joins, wait_ready
from services.supervisor import Supervisor
from services.topic_snapshot import read_to_end

pytestmark = pytest.mark.integration

MEMBERS = 240  # two waves of 120: 480 raw events
DEADLINE_S = 180.0
ATTEMPT_TIMEOUT_S = 3.0
SLOW_ANSWER_S = 2.0
HANGING_OFFICES = ("KBRI_KUALA_LUMPUR", "KJRI_JOHOR_BAHRU")
SLOW_OFFICES = ("KDEI_TAIPEI", "KJRI_HONG_KONG")
WORKERS = (
    "worker-normalize_enrollments",
    "worker-normalize_payments",
    "worker-reconcile",
    "worker-core_publisher",
    "worker-notify_kbri",
)


def new_secret() -> str:
    return "whsec_" + base64.b64encode(os.urandom(32)).decode()


class HangingReceiver:
    """Accepts TCP connections on 127.0.0.1 and never reads or answers: a webhook endpoint that hangs."""

    def __init__(self) -> None:
        self._server = socket.create_server(("127.0.0.1", 0), backlog=128)
        self._server.settimeout(0.2)
        self.url = f"http://127.0.0.1:{self._server.getsockname()[1]}/hook"
        self.accepted: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hanging-receiver", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted.append(conn)  # held open, never read: the request waits for an answer forever

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for conn in [*self.accepted, self._server]:
            conn.close()


class SlowReceiver:
    """Answers 200 to every request, but only after ``delay_s``."""

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self.answered = 0
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/hook"
        app = Starlette(routes=[Route("/hook", self._handle, methods=["POST"])])
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="slow-receiver", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            assert time.monotonic() < deadline, "slow receiver did not start"
            time.sleep(0.01)

    async def _handle(self, request: Request) -> Response:
        await request.body()
        await asyncio.sleep(self.delay_s)  # the office system's slowness under test
        self.answered += 1
        return Response(status_code=200)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(10)


class WebhookService:
    """`sinergi webhooks serve` as this test's own process, on the session broker."""

    def __init__(self, hub: Supervisor, tmp_path: Path, subscriptions: dict[str, str]) -> None:
        self.metrics_port = free_port()
        self.log_file = tmp_path / "webhooks.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("SINERGI_")}
        env.update(
            {
                "SINERGI_KAFKA_BOOTSTRAP": hub.bootstrap,
                "SINERGI_DATA_DIR": str(tmp_path),
                "SINERGI_WEBHOOKS_GROUP_ID": f"test-slow-webhooks-{uuid.uuid4().hex[:8]}",
                "SINERGI_WEBHOOKS_ALLOW_PRIVATE": "true",  # the receivers are on loopback
                "SINERGI_WEBHOOKS_ATTEMPT_TIMEOUT_S": str(ATTEMPT_TIMEOUT_S),
                "SINERGI_WEBHOOKS_BACKOFF_BASE_S": "0.2",
                "SINERGI_WEBHOOKS_BACKOFF_CAP_S": "1.0",
                "SINERGI_WEBHOOKS_MAX_ATTEMPTS": "1000",  # keep retrying the hanging offices for the whole test
                "SINERGI_LOG_JSON": "true",
                "SINERGI_OFFICE_WEBHOOKS": json.dumps(
                    {office: {"url": url, "secrets": [new_secret()]} for office, url in subscriptions.items()}
                ),
            }
        )
        with open(self.log_file, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "services", "webhooks", "serve", "--metrics-port", str(self.metrics_port)],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def counter(self, name: str, **labels: str) -> float:
        """Sum of a counter's samples whose labels include ``labels`` (0 until the service answers)."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=3) as resp:
                text = resp.read().decode()
        except OSError:
            return 0.0
        total = 0.0
        for line in text.splitlines():
            m = re.match(rf"^{name}\{{([^}}]*)\}}\s+(\S+)$", line)
            if m and all(f'{k}="{v}"' in m.group(1) for k, v in labels.items()):
                total += float(m.group(2))
        return total

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


class SlowCoreConsumer(threading.Thread):
    """A core-system consumer group that takes one record per ``every_s`` (every_s None: joins, then stops)."""

    def __init__(self, bootstrap: str, every_s: float | None) -> None:
        super().__init__(name="slow-core-consumer", daemon=True)
        self.every_s = every_s
        self.group = f"test-slow-core-{uuid.uuid4().hex[:8]}"
        self.consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": self.group,
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
                "max.poll.interval.ms": 600_000,  # the stopped reader keeps its membership for the test
                # librdkafka prefetches up to 64 MiB per partition whatever the application's pace; keep the
                # read slow at the broker too, as a slow system would fetch.
                "queued.min.messages": 1,
                "queued.max.messages.kbytes": 16,
            }
        )
        self.consumer.subscribe([CORE_MEMBER_RECORDS.name])
        self.read = 0
        self.joined = threading.Event()
        self.stop_event = threading.Event()

    def run(self) -> None:
        while not self.stop_event.is_set():
            msg = self.consumer.poll(0.5)
            if self.consumer.assignment():
                self.joined.set()
            if msg is None or msg.error():
                continue
            self.read += 1
            self.consumer.commit(msg, asynchronous=False)
            if self.every_s is None:
                self.stop_event.wait()  # joined and read one: now it reads nothing more
            else:
                self.stop_event.wait(self.every_s)  # the core system's own slowness under test

    def close(self) -> None:
        self.stop_event.set()
        self.join(10)
        self.consumer.close()


@pytest.fixture
def receivers() -> Iterator[tuple[HangingReceiver, SlowReceiver]]:
    hanging, slow = HangingReceiver(), SlowReceiver(SLOW_ANSWER_S)
    try:
        yield hanging, slow
    finally:
        hanging.stop()
        slow.stop()


def worker_state(hub: Supervisor) -> tuple[dict[str, int], dict[str, int]]:
    """(pid, group joins logged so far) of each processor, once each is ready (joined and consuming)."""
    wait_ready({name: url for name in WORKERS if (url := hub.child(name).url)}, DEADLINE_S)
    pids = {name: hub.child(name).proc.pid for name in WORKERS if hub.child(name).proc is not None}  # type: ignore[union-attr]
    return pids, joins(hub.log_dir, list(WORKERS))


def member_offices(backlog: Backlog) -> dict[str, str]:
    return {r.key.decode(): dict(r.headers)["sinergi-office"].decode() for r in backlog.enrollments}


def active_on_office_topics(bootstrap: str, offices: dict[str, str]) -> set[str]:
    """Customer numbers whose own office's topic carries them ACTIVE."""
    found: set[str] = set()
    topics = sorted({office_updates_topic(o) for o in offices.values()})
    for msg in read_to_end(bootstrap, topics, client="test-slow-downstream"):
        doc: dict[str, Any] = json.loads(msg.value() or b"{}")
        subject = doc.get("subject", "")
        member = doc.get("member") or {}
        if (
            doc.get("type") == "member.updated"
            and subject in offices
            and msg.topic() == office_updates_topic(offices[subject])
            and member.get("status") == "ACTIVE"
        ):
            found.add(subject)
    return found


def flow_and_check(hub: Supervisor, seed: int, between_waves: Callable[[], None]) -> VerificationReport:
    """Two waves of members through the raw topics (``between_waves`` runs in between); every member must
    reach the core topic and its office topic ACTIVE, no processor may restart or re-join its group."""
    backlog = build_backlog(hub.settings, MEMBERS, seed, datetime.now(UTC))
    half = MEMBERS // 2
    first = [r for pair in zip(backlog.enrollments[:half], backlog.payments[:half], strict=True) for r in pair]
    second = [r for pair in zip(backlog.enrollments[half:], backlog.payments[half:], strict=True) for r in pair]
    pids_before, joins_before = worker_state(hub)
    started = time.monotonic()
    produce_paced(hub.bootstrap, first, 4.0, chunks=8)
    between_waves()
    second_at = time.monotonic() - started
    produce_paced(hub.bootstrap, second, 4.0, chunks=8)

    def settled(r: VerificationReport) -> bool:
        return r.ok and r.payments_in == MEMBERS and r.enrollments_in == MEMBERS

    report = verified(hub, backlog.customer_nos, settled, DEADLINE_S)
    core_s = time.monotonic() - started
    print(report.summary())
    assert settled(report), report.summary()
    offices = member_offices(backlog)
    deadline = time.monotonic() + 60.0
    while (active := active_on_office_topics(hub.bootstrap, offices)) != set(offices):
        assert time.monotonic() < deadline, f"{len(set(offices) - active)} members not ACTIVE on their office topic"
        time.sleep(1.0)  # poll of a deadline loop
    print(
        f"{MEMBERS} members on core and ACTIVE on their office topics {time.monotonic() - started:.1f} s after "
        f"the first event (core: {core_s:.1f} s; second wave sent at +{second_at:.1f} s)"
    )
    pids_after, joins_after = worker_state(hub)
    assert pids_after == pids_before, "a processor was restarted during the run"
    assert joins_after == joins_before, f"a processor re-joined its group: {joins_before} -> {joins_after}"
    return report


@pytest.mark.timeout(420)
def test_a_hanging_and_a_slow_office_webhook_do_not_stall_the_processors(
    hub: Supervisor, receivers: tuple[HangingReceiver, SlowReceiver], tmp_path: Path
) -> None:
    seed = int(os.environ.get("SINERGI_TEST_SEED") or random.SystemRandom().randrange(1 << 31))
    print(f"seed={seed} members={MEMBERS}")
    hanging, slow = receivers
    subscriptions = {o: hanging.url for o in HANGING_OFFICES} | {o: slow.url for o in SLOW_OFFICES}
    service = WebhookService(hub, tmp_path, subscriptions)
    try:

        def hang_in_effect() -> None:
            # The second wave goes out only once the webhook service is stuck on a hanging office.
            deadline = time.monotonic() + DEADLINE_S
            while service.counter("sinergi_webhook_attempts_total", reason="TIMEOUT") < 1:
                assert service.proc.poll() is None, service.log_file.read_text()[-3000:]
                assert time.monotonic() < deadline, "no webhook attempt timed out"
                time.sleep(0.2)  # poll of a deadline loop

        flow_and_check(hub, seed, hang_in_effect)
        assert service.proc.poll() is None, service.log_file.read_text()[-3000:]
        timeouts = {
            o: service.counter("sinergi_webhook_attempts_total", office=o, reason="TIMEOUT") for o in HANGING_OFFICES
        }
        delivered = {
            o: service.counter("sinergi_webhook_deliveries_total", office=o, outcome="delivered") for o in SLOW_OFFICES
        }
        hung_delivered = sum(
            service.counter("sinergi_webhook_deliveries_total", office=o, outcome="delivered") for o in HANGING_OFFICES
        )
        print(f"hanging receiver: {len(hanging.accepted)} connections, timeouts {timeouts}, delivered {hung_delivered}")
        print(f"slow receiver ({SLOW_ANSWER_S} s per answer): {slow.answered} answered, delivered {delivered}")
    finally:
        service.stop()
    assert sum(timeouts.values()) >= 2, "the webhook service retried the hanging office"
    assert len(hanging.accepted) >= 2  # every retry is a new connection: the timed-out one was dropped
    assert hung_delivered == 0
    assert sum(delivered.values()) >= 1 and slow.answered >= 1


@pytest.mark.timeout(360)
def test_a_lagging_core_consumer_does_not_slow_the_processors(hub: Supervisor) -> None:
    seed = int(os.environ.get("SINERGI_TEST_SEED") or random.SystemRandom().randrange(1 << 31))
    print(f"seed={seed} members={MEMBERS}")
    slow, stopped = SlowCoreConsumer(hub.bootstrap, 0.5), SlowCoreConsumer(hub.bootstrap, None)
    slow.start()
    stopped.start()
    try:
        deadline = time.monotonic() + DEADLINE_S
        while not (slow.joined.is_set() and stopped.joined.is_set()):  # lagging from before the first event
            assert time.monotonic() < deadline, "the core consumers did not join"
            time.sleep(0.2)  # poll of a deadline loop
        report = flow_and_check(hub, seed, lambda: None)
        core_records = report.records_seen.get(CORE_MEMBER_RECORDS.name, 0)
        print(
            f"core records of this run: {core_records}; slow core consumer read {slow.read}, stopped one {stopped.read}"
        )
    finally:
        slow.close()
        stopped.close()
    assert stopped.read <= 1
    assert slow.read < core_records  # it was still behind when every member had arrived
