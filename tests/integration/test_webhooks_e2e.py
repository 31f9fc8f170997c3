"""`sinergi webhooks serve` and `sinergi webhooks replay` as real processes against the embedded broker, delivering
to real local receivers (uvicorn on 127.0.0.1) that verify every request with standardwebhooks.

The office topics are shared with the rest of the session (other tests' updates are on them too), so each test
uses its own consumer group and its own subjects, and asserts about those; the isolation check (an office's
receiver only ever gets that office's updates) covers every request a receiver got.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
import uvicorn
from confluent_kafka import Producer
from hubclient import poll_topic
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from connectors.embedded import EmbeddedBroker, free_port
from connectors.kbri.webhook_service import DLQ_TOPIC
from services.catalogue import office_updates_topic
from services.config import Settings
from services.domain.office_updates import CaseView, OfficeUpdate, UpdateType, update_id
from services.topics import create_topics

pytestmark = pytest.mark.integration

OFFICE_A = "KBRI_KUALA_LUMPUR"
OFFICE_B = "KJRI_JOHOR_BAHRU"
DEADLINE_S = 120.0


def new_secret() -> str:
    return "whsec_" + base64.b64encode(os.urandom(32)).decode()


@dataclass
class Hit:
    webhook_id: str
    body: bytes
    verified: bool
    status: int

    @property
    def update(self) -> OfficeUpdate:
        return OfficeUpdate.model_validate_json(self.body)


class Receiver:
    """One office's webhook endpoint on 127.0.0.1, in its own thread and event loop."""

    def __init__(self, secret: str) -> None:
        self.secret = secret
        self.hits: list[Hit] = []
        self.answer: Callable[[int], int] = lambda n: 204  # status for the n-th request (0-based)
        self._lock = threading.Lock()
        app = Starlette(routes=[Route("/hook", self._handle, methods=["POST"])])
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self._server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off")
        )
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    async def _handle(self, request: Request) -> Response:
        body = await request.body()
        headers = dict(request.headers)
        try:
            Webhook(self.secret).verify(body, headers)
            verified = True
        except WebhookVerificationError:
            verified = False
        with self._lock:
            status = self.answer(len(self.hits)) if verified else 401
            self.hits.append(Hit(headers.get("webhook-id", ""), body, verified, status))
        return Response(status_code=status)

    def delivered_ids(self) -> set[str]:
        with self._lock:
            return {h.webhook_id for h in self.hits if 200 <= h.status < 300}

    def start(self) -> None:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            assert time.monotonic() < deadline, "receiver did not start"
            time.sleep(0.01)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(10)


@pytest.fixture
def receivers() -> Iterator[Callable[[], Receiver]]:
    made: list[Receiver] = []

    def make() -> Receiver:
        receiver = Receiver(new_secret())
        receiver.start()
        made.append(receiver)
        return receiver

    yield make
    for receiver in made:
        receiver.stop()


def case_updates(office: str, run: str, cases: int, sequences: range) -> list[OfficeUpdate]:
    """Updates with subjects of this test run only (case updates: the smallest valid OfficeUpdate)."""
    return [
        OfficeUpdate(
            update_id=update_id(office, UpdateType.CASE_UPDATED, f"{run}-{n}:{seq}"),
            type=UpdateType.CASE_UPDATED,
            office=office,
            subject=f"{run}-{n}",
            sequence=seq,
            occurred_at=datetime.now(UTC),
            case=CaseView(case_id=f"{run}-{n}", status="IN_PROGRESS" if seq < 3 else "ANSWERED", version=seq),
        )
        for seq in sequences
        for n in range(cases)
    ]


def produce(bootstrap: str, updates: list[OfficeUpdate]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True})
    failures: list[str] = []
    for u in updates:
        producer.produce(
            office_updates_topic(u.office),
            key=u.subject.encode(),
            value=u.model_dump_json().encode(),
            headers=[("sinergi-update-id", u.update_id.encode())],
            on_delivery=lambda err, _msg: failures.append(str(err)) if err else None,
        )
    assert producer.flush(30) == 0 and not failures, failures


@dataclass
class ServiceProcess:
    env: dict[str, str]
    log_file: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log_file, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "services", "webhooks", "serve", "--metrics-port", str(free_port())],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def kill(self) -> None:
        assert self.proc is not None and self.proc.poll() is None, self.log_file.read_text()
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def service_env(
    broker: EmbeddedBroker, tmp_path: Path, subscriptions: dict[str, Receiver], **extra: str
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SINERGI_")}
    env.update(
        {
            "SINERGI_KAFKA_BOOTSTRAP": broker.bootstrap,
            "SINERGI_DATA_DIR": str(tmp_path),
            "SINERGI_WEBHOOKS_GROUP_ID": f"test-webhooks-{uuid.uuid4().hex[:8]}",
            "SINERGI_WEBHOOKS_ALLOW_PRIVATE": "true",
            "SINERGI_WEBHOOKS_BACKOFF_BASE_S": "0.05",
            "SINERGI_WEBHOOKS_BACKOFF_CAP_S": "0.5",
            "SINERGI_COMMIT_INTERVAL_S": "0.5",
            "SINERGI_LOG_JSON": "true",
            "SINERGI_OFFICE_WEBHOOKS": json.dumps(
                {office: {"url": r.url, "secrets": [r.secret]} for office, r in subscriptions.items()}
            ),
            **extra,
        }
    )
    return env


def wait_for(predicate: Callable[[], bool], what: str, proc: ServiceProcess | None = None) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not predicate():
        if proc is not None and proc.proc is not None:
            assert proc.proc.poll() is None, f"service exited: {proc.log_file.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_sigkill_mid_run_loses_nothing_redelivers_with_the_same_id_and_keeps_offices_apart(
    broker: EmbeddedBroker, receivers: Callable[[], Receiver], tmp_path: Path
) -> None:
    create_topics(broker.bootstrap, Settings(kafka_bootstrap=broker.bootstrap))
    run = uuid.uuid4().hex[:8]
    a, b = receivers(), receivers()
    a.answer = lambda n: 500 if n < 25 else 204  # office A's system fails for a while, then recovers
    first = case_updates(OFFICE_A, run, 30, range(1, 3)) + case_updates(OFFICE_B, run, 20, range(1, 3))
    produce(broker.bootstrap, first)
    service = ServiceProcess(service_env(broker, tmp_path, {OFFICE_A: a, OFFICE_B: b}), tmp_path / "webhooks.log")
    service.start()
    try:
        mine_a = {u.update_id for u in first if u.office == OFFICE_A}
        mine_b = {u.update_id for u in first if u.office == OFFICE_B}
        wait_for(
            lambda: len(a.delivered_ids() & mine_a) >= 10 and len(b.delivered_ids() & mine_b) >= 10,
            "deliveries under way",
            service,
        )
        service.kill()  # mid-run: part delivered, part in backoff, the last commit up to half a second old
        killed_with = (len(a.delivered_ids() & mine_a), len(b.delivered_ids() & mine_b))
        second = case_updates(OFFICE_A, run, 30, range(3, 4)) + case_updates(OFFICE_B, run, 20, range(3, 4))
        produce(broker.bootstrap, second)
        service.start()
        everything = first + second
        wanted = {office: {u.update_id for u in everything if u.office == office} for office in (OFFICE_A, OFFICE_B)}
        wait_for(
            lambda: wanted[OFFICE_A] <= a.delivered_ids() and wanted[OFFICE_B] <= b.delivered_ids(),
            "every update delivered after the restart",
            service,
        )
    finally:
        service.stop()
    print(f"delivered before the kill: A {killed_with[0]}/{len(mine_a)}, B {killed_with[1]}/{len(mine_b)}")
    assert killed_with[0] < len(mine_a) or killed_with[1] < len(mine_b), "the kill came after the first batch"

    for office, receiver in ((OFFICE_A, a), (OFFICE_B, b)):
        assert all(h.verified for h in receiver.hits), office
        assert {h.update.office for h in receiver.hits} == {office}  # never another office's update
        assert all(h.webhook_id == h.update.update_id for h in receiver.hits)  # redeliveries keep their id
        ours = [h for h in receiver.hits if h.update.subject.startswith(run) and 200 <= h.status < 300]
        last: dict[str, int] = {}
        for hit in ours:
            last[hit.update.subject] = hit.update.sequence
        assert set(last.values()) == {3}, "the newest version of every subject is the last one delivered"
    assert sum(1 for h in a.hits if h.status == 500) == 25
    ids = defaultdict(set)
    for hit in a.hits + b.hits:
        ids[(hit.update.office, hit.update.subject, hit.update.sequence)].add(hit.webhook_id)
    assert all(len(v) == 1 for v in ids.values())


def _replay(env: dict[str, str], office: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services", "webhooks", "replay", "--office", office],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_dead_letters_reach_the_dlq_topic_and_a_replay_delivers_each_once_even_when_run_twice(
    broker: EmbeddedBroker, receivers: Callable[[], Receiver], tmp_path: Path
) -> None:
    create_topics(broker.bootstrap, Settings(kafka_bootstrap=broker.bootstrap))
    run = uuid.uuid4().hex[:8]
    b = receivers()
    b.answer = lambda n: 503  # the office system is down for longer than the retries last
    updates = case_updates(OFFICE_B, run, 4, range(1, 3))
    produce(broker.bootstrap, updates)
    env = service_env(broker, tmp_path, {OFFICE_B: b}, SINERGI_WEBHOOKS_MAX_ATTEMPTS="2")
    service = ServiceProcess(env, tmp_path / "webhooks.log")
    service.start()
    ours = {u.update_id for u in updates}
    try:
        poll_topic(
            broker.bootstrap, DLQ_TOPIC, lambda msgs: ours <= {dict(m.headers())["webhook-id"].decode() for m in msgs}
        )
    finally:
        service.stop()
    assert b.delivered_ids() & ours == set()
    assert all(n >= 2 for n in _attempts(b, ours).values())  # webhooks_max_attempts each, then dead-lettered

    b.answer = lambda n: 204
    replayed = _replay(env, OFFICE_B)
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    newest = {u.update_id for u in updates if u.sequence == 2}
    assert b.delivered_ids() & ours == newest  # version 1 of each case is superseded by its version 2
    # Other tests' updates of this office may be dead letters too (this group read the topic from the start).
    assert ", failed 0," in replayed.stdout, replayed.stdout
    hits_after_first = len(b.hits)

    again = _replay(env, OFFICE_B)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "delivered 0, failed 0," in again.stdout, again.stdout
    assert len(b.hits) == hits_after_first  # nothing sent twice


def _attempts(receiver: Receiver, ours: set[str]) -> dict[str, int]:
    attempts: dict[str, int] = dict.fromkeys(ours, 0)
    for hit in receiver.hits:
        if hit.webhook_id in attempts:
            attempts[hit.webhook_id] += 1
    return attempts
