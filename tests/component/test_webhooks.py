"""The office webhook dispatcher against real receivers (Starlette on uvicorn, 127.0.0.1, own thread and
loop) or httpx.MockTransport where no socket is needed. Every request a receiver gets is checked with the
reference verifier, standardwebhooks.Webhook(secret).verify.

Backoff runs on a fake clock: its sleep returns at once and moves the dispatcher's monotonic time on, so a
six-hour outage takes no real time. The wall clock stays real because receivers compare webhook-timestamp
with their own clock. Tests wait for outcomes by polling with a deadline, never by sleeping.
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
import socket
import ssl
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import httpx
import pytest
import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from prometheus_client import REGISTRY
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from connectors.kbri import webhook_policy as policy
from connectors.kbri.webhooks import (
    ENDPOINT_GONE,
    MAX_AGE,
    MAX_ATTEMPTS,
    DeadLetter,
    Finished,
    Offer,
    OfferStatus,
    Outcome,
    WebhookDispatcher,
    WebhookUpdate,
)
from services.config import Settings

OFFICE_A = "KBRI_KUALA_LUMPUR"
OFFICE_B = "KDEI_TAIPEI"
SECRET = "whsec_" + base64.b64encode(b"sinergi-test-webhook-secret-01!!").decode()
NEW_SECRET = "whsec_" + base64.b64encode(b"sinergi-test-webhook-secret-02!!").decode()
UNRELATED_SECRET = "whsec_" + base64.b64encode(b"someone-else-s-webhook-secret-03").decode()
HOUR = 3600.0


# --- helpers --------------------------------------------------------------------------------------------------
class FakeClock:
    """Sleeping only moves monotonic time on. `hold_at` parks sleepers once that time is reached, until
    `release`: the test changes the world (starts a receiver) while the dispatcher is parked."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []
        self.hold_at: float | None = None
        self._gate = asyncio.Event()

    def monotonic(self) -> float:
        return self.now

    def wall(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)
        while self.hold_at is not None and self.now >= self.hold_at:
            await self._gate.wait()

    def release(self, next_hold: float | None = None) -> None:
        self.hold_at = next_hold
        gate, self._gate = self._gate, asyncio.Event()
        gate.set()


async def until(predicate: Callable[[], bool], what: str, within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.005)


async def finished(offers: list[Offer], within: float = 30.0) -> list[Finished]:
    futures = [o.done for o in offers]
    assert all(f is not None for f in futures)
    await until(lambda: all(f.done() for f in futures if f is not None), "deliveries to finish", within)
    return [f.result() for f in futures if f is not None]


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def backlog(dispatcher: WebhookDispatcher, office: str) -> int:
    status = dispatcher.status(office)
    assert status is not None
    return status.backlog


def member_key(n: int) -> str:
    return f"{770000000000000000 + n:018d}"


def payload(member: str, version: int, extra: str = "") -> bytes:
    return json.dumps({"member": member, "version": version, "note": extra}).encode()


def update(office: str, member: str, version: int, extra: str = "") -> WebhookUpdate:
    return WebhookUpdate(office=office, member_key=member, version=version, payload=payload(member, version, extra))


def settings(**overrides: object) -> Settings:
    values: dict[str, object] = {
        "webhooks_allow_private": True,
        "webhooks_backoff_base_s": 1.0,
        "webhooks_backoff_cap_s": 60.0,
        "webhooks_max_attempts": 10,
        "webhooks_attempt_timeout_s": 5.0,
        "webhooks_office_concurrency": 2,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


def verified_by(body: bytes, headers: dict[str, str], secrets: list[str]) -> frozenset[str]:
    good = set()
    for secret in secrets:
        try:
            Webhook(secret).verify(body, headers)
        except WebhookVerificationError:
            continue
        good.add(secret)
    return frozenset(good)


@dataclass
class Hit:
    path: str
    headers: dict[str, str]
    body: bytes
    verified_by: frozenset[str]
    status: int | None = None

    @property
    def version(self) -> int:
        return int(json.loads(self.body)["version"])

    @property
    def member(self) -> str:
        return str(json.loads(self.body)["member"])


HANG = None


class Receiver:
    """An office's webhook receiver on 127.0.0.1. Until `start` its socket is bound but not listening, so
    connections are refused (the office system is down)."""

    def __init__(self, secrets: list[str], tls: tuple[Path, Path] | None = None) -> None:
        self.secrets = secrets
        self.hits: list[Hit] = []
        self.behaviour: Callable[[Hit], Response | None] = lambda hit: Response("ok")
        self.hanging = 0
        self.released = threading.Event()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self.port: int = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/hook"
        app = Starlette(routes=[Route("/{path:path}", self._handle, methods=["POST"])])
        self._server = uvicorn.Server(
            uvicorn.Config(
                app,
                log_level="warning",
                lifespan="off",
                access_log=False,
                loop="asyncio",
                ssl_certfile=str(tls[0]) if tls else None,
                ssl_keyfile=str(tls[1]) if tls else None,
            )
        )
        self._thread: threading.Thread | None = None

    async def _handle(self, request: Request) -> Response:
        body = await request.body()
        headers = dict(request.headers)
        hit = Hit(request.url.path, headers, body, verified_by(body, headers, self.secrets))
        self.hits.append(hit)
        answer = self.behaviour(hit)
        if answer is HANG:
            self.hanging += 1
            await asyncio.get_running_loop().run_in_executor(None, self.released.wait)
            self.hanging -= 1
            answer = Response("late")
        hit.status = answer.status_code
        return answer

    def delivered(self) -> list[Hit]:
        return [h for h in self.hits if h.status is not None and 200 <= h.status < 300]

    async def start(self) -> None:
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True)
        self._thread.start()
        await until(lambda: self._server.started, "the receiver to start", within=10)

    def stop(self) -> None:
        self.released.set()
        if self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=10)
        self._sock.close()


@pytest.fixture
def receivers() -> Iterator[Callable[..., Receiver]]:
    made: list[Receiver] = []

    def make(secrets: list[str] | None = None, tls: tuple[Path, Path] | None = None) -> Receiver:
        receiver = Receiver(secrets or [SECRET], tls)
        made.append(receiver)
        return receiver

    yield make
    for receiver in made:
        receiver.stop()


@dataclass
class Harness:
    dispatcher: WebhookDispatcher
    clock: FakeClock
    dead: list[DeadLetter]


@pytest.fixture
async def harness(receivers) -> AsyncIterator[Callable[..., Harness]]:
    """Dispatchers close before the receivers stop (this fixture depends on `receivers`)."""
    made: list[WebhookDispatcher] = []

    def make(config: Settings | None = None, **kwargs: object) -> Harness:
        clock = FakeClock()
        dead: list[DeadLetter] = []

        async def on_dead_letter(record: DeadLetter) -> None:
            dead.append(record)

        kwargs.setdefault("on_dead_letter", on_dead_letter)
        dispatcher = WebhookDispatcher(
            config or settings(),
            clock=clock,
            rng=random.Random(5),
            **kwargs,  # type: ignore[arg-type]
        )
        made.append(dispatcher)
        return Harness(dispatcher, clock, dead)

    yield make
    for dispatcher in made:
        await dispatcher.close()


# --- delivery and signature -------------------------------------------------------------------------------------
async def test_delivery_is_signed_pinned_to_the_resolved_address_and_keeps_the_host_name(receivers, harness):
    receiver = receivers()
    await receiver.start()
    lookups: list[str] = []

    async def resolver(host: str, port: int) -> list[str]:
        lookups.append(host)
        return ["127.0.0.1"] if host == "receiver.test" else []

    h = harness(resolver=resolver)
    status = await h.dispatcher.register(OFFICE_A, f"http://receiver.test:{receiver.port}/hooks/sinergi?v=1", SECRET)
    assert status.active and status.backlog == 0 and status.signing_secrets == 1
    delivered_before = sample("sinergi_webhook_deliveries_total", office=OFFICE_A, outcome="delivered")
    latency_before = sample("sinergi_webhook_delivery_seconds_count", office=OFFICE_A)

    offer = h.dispatcher.offer(update(OFFICE_A, member_key(1), 1))
    assert offer.status is OfferStatus.ACCEPTED
    (result,) = await finished([offer])

    assert (result.outcome, result.attempts, result.last_status) == (Outcome.DELIVERED, 1, 200)
    (hit,) = receiver.hits
    assert hit.verified_by == {SECRET}
    assert hit.path == "/hooks/sinergi"
    assert hit.headers["host"] == f"receiver.test:{receiver.port}"  # reached through the pinned 127.0.0.1
    assert hit.headers["webhook-id"] == offer.webhook_id
    assert hit.headers["content-type"] == "application/json"
    assert abs(int(hit.headers["webhook-timestamp"]) - time.time()) < 60
    assert json.loads(hit.body) == json.loads(payload(member_key(1), 1))
    assert lookups == ["receiver.test", "receiver.test"]  # at registration and again at the connection
    assert sample("sinergi_webhook_deliveries_total", office=OFFICE_A, outcome="delivered") == delivered_before + 1
    assert sample("sinergi_webhook_delivery_seconds_count", office=OFFICE_A) == latency_before + 1
    assert sample("sinergi_webhook_backlog", office=OFFICE_A) == 0


async def test_long_outage_then_every_update_arrives_with_its_webhook_id(receivers, harness):
    receiver = receivers()  # bound, not listening: connections are refused
    h = harness(settings(webhooks_max_attempts=500, webhooks_backoff_cap_s=600.0))
    await h.dispatcher.register(OFFICE_A, receiver.url, SECRET)
    offers = {}
    for version in (1, 2):
        for n in range(5):
            offers[(member_key(n), version)] = h.dispatcher.offer(update(OFFICE_A, member_key(n), version))
    assert all(o.status is OfferStatus.ACCEPTED for o in offers.values())

    h.clock.hold_at = 3 * HOUR
    await until(lambda: h.clock.now >= 3 * HOUR, "three hours of refused connections")
    assert receiver.hits == []
    receiver.behaviour = lambda hit: Response("maintenance", status_code=503)
    await receiver.start()
    h.clock.release(next_hold=6 * HOUR)
    await until(lambda: h.clock.now >= 6 * HOUR, "three more hours of 503")
    answered_503 = len(receiver.hits)
    assert answered_503 > 0
    receiver.behaviour = lambda hit: Response("ok")
    h.clock.release()

    results = await finished(list(offers.values()))
    assert {r.outcome for r in results} == {Outcome.DELIVERED}
    assert h.dead == []
    assert min(offers[(member_key(n), 1)].done.result().attempts for n in range(5)) > 2  # type: ignore[union-attr]
    assert all(hit.verified_by == {SECRET} for hit in receiver.hits)
    ids_by_update: dict[tuple[str, int], set[str]] = {}
    for hit in receiver.hits:
        ids_by_update.setdefault((hit.member, hit.version), set()).add(hit.headers["webhook-id"])
    assert ids_by_update == {key: {offer.webhook_id} for key, offer in offers.items()}
    delivered = receiver.delivered()
    assert sorted((hit.member, hit.version) for hit in delivered) == sorted(offers)
    for n in range(5):
        assert [hit.version for hit in delivered if hit.member == member_key(n)] == [1, 2]


async def test_a_thousand_updates_through_random_failures_arrive_in_member_order(harness):
    rng = random.Random(20260301)
    arrivals: list[tuple[str, int, str]] = []  # (member, version, webhook-id) of every processed request
    calls = {"total": 0, "unverified": 0}

    async def handler(request: httpx.Request) -> httpx.Response:
        calls["total"] += 1
        await asyncio.sleep(0)  # let the other workers interleave
        body = request.content
        if verified_by(body, dict(request.headers), [SECRET]) != {SECRET}:
            calls["unverified"] += 1
            return httpx.Response(401)
        roll = rng.random()
        if roll < 0.15:
            return httpx.Response(503)
        if roll < 0.22:
            return httpx.Response(500)
        if roll < 0.27:
            raise httpx.ReadTimeout("receiver too slow", request=request)
        data = json.loads(body)
        arrivals.append((data["member"], data["version"], request.headers["webhook-id"]))
        if roll < 0.30:  # processed, but the answer never came back: the retry is a duplicate
            raise httpx.ReadTimeout("answer lost", request=request)
        return httpx.Response(204)

    h = harness(
        settings(webhooks_office_concurrency=8, webhooks_queue_size=300, webhooks_max_attempts=30),
        transport=httpx.MockTransport(handler),
    )
    await h.dispatcher.register(OFFICE_A, "http://127.0.0.1:9/hook", SECRET)
    members = [member_key(n) for n in range(100)]
    order = members * 10
    rng_order = random.Random(99)
    rng_order.shuffle(order)
    next_version = dict.fromkeys(members, 1)
    offers: list[Offer] = []
    queue_full = 0
    for member in order:
        version = next_version[member]
        next_version[member] += 1
        while (offer := h.dispatcher.offer(update(OFFICE_A, member, version))).status is OfferStatus.QUEUE_FULL:
            queue_full += 1
            queued = backlog(h.dispatcher, OFFICE_A)
            await until(lambda q=queued: backlog(h.dispatcher, OFFICE_A) < q, "room in the queue")
        assert offer.status is OfferStatus.ACCEPTED
        offers.append(offer)

    results = await finished(offers, within=120)
    assert {r.outcome for r in results} == {Outcome.DELIVERED} and h.dead == []
    assert queue_full > 0  # the bounded queue pushed back on the producer
    assert calls["unverified"] == 0 and calls["total"] > 1000
    assert len({o.webhook_id for o in offers}) == 1000
    ids = {wid: (member, version) for member, version, wid in arrivals}
    assert len(ids) == 1000  # one id per update, whatever the number of attempts
    assert len(arrivals) > 1000  # some updates were processed twice (lost answers)
    first_seen: dict[str, list[int]] = {}
    raw: dict[str, list[int]] = {}
    seen_ids: set[str] = set()
    for member, version, wid in arrivals:
        raw.setdefault(member, []).append(version)
        if wid not in seen_ids:
            seen_ids.add(wid)
            first_seen.setdefault(member, []).append(version)
    for member in members:
        assert first_seen[member] == list(range(1, 11)), member
        assert raw[member] == sorted(raw[member])  # a duplicate repeats a version, never goes back
    assert sample("sinergi_webhook_backlog", office=OFFICE_A) == 0


# --- answers of the receiver ------------------------------------------------------------------------------------
async def test_410_gone_disables_the_endpoint_and_dead_letters_what_was_queued(receivers, harness):
    receiver = receivers()
    receiver.behaviour = lambda hit: Response("gone", status_code=410)
    await receiver.start()
    h = harness()
    await h.dispatcher.register(OFFICE_B, receiver.url, SECRET)
    disables_before = sample("sinergi_webhook_endpoint_disables_total", office=OFFICE_B)
    member = member_key(7)
    offers = [h.dispatcher.offer(update(OFFICE_B, member, v)) for v in (1, 2, 3)]

    results = await finished(offers)
    assert [r.outcome for r in results] == [Outcome.DEAD_LETTERED] * 3
    assert [(r.attempts, r.last_status) for r in results] == [(1, 410), (0, None), (0, None)]
    assert len(receiver.hits) == 1 and receiver.hits[0].verified_by == {SECRET}
    assert [(d.version, d.cause) for d in sorted(h.dead, key=lambda d: d.version)] == [
        (1, ENDPOINT_GONE),
        (2, ENDPOINT_GONE),
        (3, ENDPOINT_GONE),
    ]
    status = h.dispatcher.status(OFFICE_B)
    assert status is not None and not status.active and status.disabled_reason == policy.HTTP_410
    assert sample("sinergi_webhook_endpoint_disables_total", office=OFFICE_B) == disables_before + 1
    assert sample("sinergi_webhook_endpoint_disabled", office=OFFICE_B) == 1

    refused = h.dispatcher.offer(update(OFFICE_B, member, 4))
    assert refused.status is OfferStatus.ENDPOINT_DISABLED and refused.done is None
    assert len(receiver.hits) == 1

    receiver.behaviour = lambda hit: Response("ok")
    assert (await h.dispatcher.register(OFFICE_B, receiver.url, SECRET)).active
    assert sample("sinergi_webhook_endpoint_disabled", office=OFFICE_B) == 0
    (again,) = await finished([h.dispatcher.offer(update(OFFICE_B, member, 4))])
    assert again.outcome is Outcome.DELIVERED


async def test_429_retry_after_is_honoured_in_seconds_and_http_date_within_the_cap(receivers, harness):
    receiver = receivers()
    answers = iter(
        [
            Response("slow down", status_code=429, headers={"Retry-After": "7"}),
            Response(
                "slow down",
                status_code=429,
                headers={"Retry-After": format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)},
            ),
            Response("slow down", status_code=429, headers={"Retry-After": "99999"}),
        ]
    )
    receiver.behaviour = lambda hit: next(answers, Response("ok"))
    await receiver.start()
    h = harness(settings(webhooks_backoff_cap_s=60.0))
    await h.dispatcher.register(OFFICE_A, receiver.url, SECRET)

    offer = h.dispatcher.offer(update(OFFICE_A, member_key(2), 1))
    (result,) = await finished([offer])
    assert (result.outcome, result.attempts) == (Outcome.DELIVERED, 4)
    first, second, third = h.clock.sleeps
    assert first == 7.0
    assert 28.0 <= second <= 31.0
    assert third == 60.0  # Retry-After beyond the cap waits the cap
    assert {hit.headers["webhook-id"] for hit in receiver.hits} == {offer.webhook_id}
    assert all(hit.verified_by == {SECRET} for hit in receiver.hits)


async def test_a_redirect_is_not_followed(receivers, harness):
    receiver = receivers()

    def behaviour(hit: Hit) -> Response:
        if hit.path == "/hook":
            return Response(status_code=302, headers={"Location": f"http://127.0.0.1:{receiver.port}/elsewhere"})
        return Response("followed")

    receiver.behaviour = behaviour
    await receiver.start()
    h = harness(settings(webhooks_max_attempts=3))
    await h.dispatcher.register(OFFICE_A, receiver.url, SECRET)
    (result,) = await finished([h.dispatcher.offer(update(OFFICE_A, member_key(3), 1))])

    assert (result.outcome, result.attempts, result.last_status, result.last_reason) == (
        Outcome.DEAD_LETTERED,
        3,
        302,
        policy.HTTP_3XX,
    )
    assert [hit.path for hit in receiver.hits] == ["/hook"] * 3
    (record,) = h.dead
    assert (record.cause, record.attempts, record.last_status) == (MAX_ATTEMPTS, 3, 302)
    assert result.dead_letter == record


async def test_a_hanging_receiver_hits_the_attempt_timeout(receivers, harness):
    receiver = receivers()
    receiver.behaviour = lambda hit: HANG
    await receiver.start()
    h = harness(settings(webhooks_attempt_timeout_s=0.5, webhooks_max_attempts=2))
    await h.dispatcher.register(OFFICE_A, receiver.url, SECRET)
    (result,) = await finished([h.dispatcher.offer(update(OFFICE_A, member_key(4), 1))])
    assert (result.outcome, result.attempts, result.last_status, result.last_reason) == (
        Outcome.DEAD_LETTERED,
        2,
        None,
        policy.TIMEOUT,
    )
    assert len(receiver.hits) == 2


async def test_a_response_body_without_end_is_read_bounded(harness):
    async def endless() -> AsyncIterator[bytes]:
        while True:
            yield b"x" * 1024
            await asyncio.sleep(0)

    h = harness(
        settings(webhooks_attempt_timeout_s=30.0),
        transport=httpx.MockTransport(lambda request: httpx.Response(200, content=endless())),
    )
    await h.dispatcher.register(OFFICE_A, "http://127.0.0.1:9/hook", SECRET)
    (result,) = await finished([h.dispatcher.offer(update(OFFICE_A, member_key(5), 1))])
    assert (result.outcome, result.attempts) == (Outcome.DELIVERED, 1)


async def test_a_hanging_office_does_not_delay_another(receivers, harness):
    stuck, healthy = receivers(), receivers()
    stuck.behaviour = lambda hit: HANG
    await stuck.start()
    await healthy.start()
    h = harness(settings(webhooks_attempt_timeout_s=300.0, webhooks_office_concurrency=2))
    await h.dispatcher.register(OFFICE_A, stuck.url, SECRET)
    await h.dispatcher.register(OFFICE_B, healthy.url, SECRET)

    stuck_offers = [h.dispatcher.offer(update(OFFICE_A, member_key(n), 1)) for n in range(6)]
    healthy_offers = [h.dispatcher.offer(update(OFFICE_B, member_key(n), v)) for v in (1, 2) for n in range(10)]
    await until(lambda: stuck.hanging == 2, "office A's two workers to be stuck")

    results = await finished(healthy_offers)
    assert {r.outcome for r in results} == {Outcome.DELIVERED}
    assert len(healthy.delivered()) == 20
    assert not any(o.done is not None and o.done.done() for o in stuck_offers)
    assert stuck.hanging == 2
    assert backlog(h.dispatcher, OFFICE_A) == 6


async def test_a_member_in_backoff_does_not_hold_up_the_other_members_of_its_office(harness):
    poison = member_key(30)
    poison_attempts: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        data = json.loads(request.content)
        if data["member"] == poison:
            poison_attempts.append(data["version"])
            return httpx.Response(500)
        return httpx.Response(200)

    h = harness(settings(webhooks_office_concurrency=1), transport=httpx.MockTransport(handler))
    h.clock.hold_at = 0.0  # every backoff sleep stays parked: the poison member never gets a second attempt
    await h.dispatcher.register(OFFICE_A, "http://127.0.0.1:9/hook", SECRET)
    stuck = h.dispatcher.offer(update(OFFICE_A, poison, 1))
    others = [h.dispatcher.offer(update(OFFICE_A, member_key(n), 1)) for n in range(31, 36)]
    results = await finished(others)
    assert {r.outcome for r in results} == {Outcome.DELIVERED}
    assert stuck.done is not None and not stuck.done.done()
    assert poison_attempts == [1]
    h.clock.release()


async def test_secret_rotation_overlap_verifies_with_old_or_new(receivers, harness):
    receiver = receivers([SECRET, NEW_SECRET, UNRELATED_SECRET])
    await receiver.start()
    h = harness()
    await h.dispatcher.register(OFFICE_A, receiver.url, SECRET)
    member = member_key(8)

    await finished([h.dispatcher.offer(update(OFFICE_A, member, 1))])
    assert h.dispatcher.rotate_secret(OFFICE_A, NEW_SECRET).signing_secrets == 2
    await finished([h.dispatcher.offer(update(OFFICE_A, member, 2))])
    assert h.dispatcher.end_rotation(OFFICE_A).signing_secrets == 1
    await finished([h.dispatcher.offer(update(OFFICE_A, member, 3))])

    first, during, after = receiver.hits
    assert first.verified_by == {SECRET}
    assert during.verified_by == {SECRET, NEW_SECRET}  # an office knowing only one of them verifies
    assert len(during.headers["webhook-signature"].split(" ")) == 2
    assert after.verified_by == {NEW_SECRET}


# --- address policy at registration and at connection -------------------------------------------------------------
async def test_registration_refuses_what_the_policy_forbids(harness):
    answers = {"private.example": ["10.0.0.5"], "mixed.example": ["93.184.216.34", "fd00::5"]}

    async def resolver(host: str, port: int) -> list[str]:
        if host in answers:
            return answers[host]
        raise socket.gaierror(socket.EAI_NONAME, "unknown")

    h = harness(settings(webhooks_allow_private=False), resolver=resolver, offices=[OFFICE_A])
    refusals = {
        ("http://hooks.example/x", SECRET): policy.URL_SCHEME,
        ("https://private.example/x", SECRET): policy.ADDRESS_PRIVATE,
        ("https://mixed.example/x", SECRET): policy.ADDRESS_PRIVATE,
        ("https://nowhere.example/x", SECRET): policy.HOST_UNRESOLVED,
        ("https://[::ffff:127.0.0.1]/x", SECRET): policy.ADDRESS_LOOPBACK,
        ("https://169.254.169.254/x", SECRET): policy.ADDRESS_LINK_LOCAL,
        ("https://hooks.example/x", "not-a-secret"): policy.SECRET_INVALID,
    }
    for (url, secret), reason in refusals.items():
        with pytest.raises(policy.WebhookRefused) as refused:
            await h.dispatcher.register(OFFICE_A, url, secret)
        assert refused.value.reason == reason, url
    with pytest.raises(policy.WebhookRefused) as unknown:
        await h.dispatcher.register("KBRI_NOWHERE", "https://hooks.example/x", SECRET)
    assert unknown.value.reason == policy.UNKNOWN_OFFICE
    assert h.dispatcher.status(OFFICE_A) is None
    assert h.dispatcher.offer(update(OFFICE_A, member_key(1), 1)).status is OfferStatus.NO_ENDPOINT


def test_private_addresses_are_refused_in_production():
    production = Settings(environment="production", webhooks_allow_private=True)

    async def on_dead_letter(record: DeadLetter) -> None:
        raise AssertionError

    with pytest.raises(ValueError, match="ALLOW_PRIVATE"):
        WebhookDispatcher(production, on_dead_letter=on_dead_letter)


async def test_dns_rebinding_after_registration_is_refused_at_connection(harness):
    lookups: list[str] = []

    async def resolver(host: str, port: int) -> list[str]:
        lookups.append(host)
        return ["93.184.216.34"] if len(lookups) == 1 else ["127.0.0.1"]

    sent: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200)

    h = harness(
        settings(webhooks_allow_private=False, webhooks_max_attempts=2),
        resolver=resolver,
        transport=httpx.MockTransport(handler),
    )
    await h.dispatcher.register(OFFICE_A, "https://hooks.kbri.example/sinergi", SECRET)
    (result,) = await finished([h.dispatcher.offer(update(OFFICE_A, member_key(1), 1))])
    assert (result.outcome, result.last_reason, result.attempts) == (
        Outcome.DEAD_LETTERED,
        policy.ADDRESS_FORBIDDEN,
        2,
    )
    assert sent == [] and len(lookups) == 3


async def test_https_goes_to_the_checked_address_with_the_name_for_tls(harness):
    async def resolver(host: str, port: int) -> list[str]:
        return ["93.184.216.34"]

    sent: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:  # a mock: nothing leaves the process
        sent.append(request)
        return httpx.Response(200)

    h = harness(settings(webhooks_allow_private=False), resolver=resolver, transport=httpx.MockTransport(handler))
    await h.dispatcher.register(OFFICE_A, "https://hooks.kbri.example/sinergi?x=1", SECRET)
    (result,) = await finished([h.dispatcher.offer(update(OFFICE_A, member_key(1), 1))])
    assert result.outcome is Outcome.DELIVERED
    (request,) = sent
    assert (request.url.scheme, request.url.host, request.url.port, request.url.raw_path) == (
        "https",
        "93.184.216.34",
        None,  # 443
        b"/sinergi?x=1",
    )
    assert request.headers["host"] == "hooks.kbri.example"
    assert request.extensions["sni_hostname"] == "hooks.kbri.example"
    assert verified_by(request.content, dict(request.headers), [SECRET]) == {SECRET}


def self_signed(directory: Path, name: str) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "receiver.crt", directory / "receiver.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_file, key_file


async def test_tls_to_the_pinned_address_verifies_the_certificate_against_the_registered_name(
    receivers, harness, tmp_path
):
    cert_file, key_file = self_signed(tmp_path, "hooks.kbri.test")
    receiver = receivers(tls=(cert_file, key_file))
    await receiver.start()

    async def resolver(host: str, port: int) -> list[str]:
        return ["127.0.0.1"]  # both names point at the receiver; only one is on its certificate

    trust = ssl.create_default_context(cafile=str(cert_file))
    h = harness(settings(webhooks_max_attempts=1), resolver=resolver, transport=httpx.AsyncHTTPTransport(verify=trust))
    await h.dispatcher.register(OFFICE_A, f"https://hooks.kbri.test:{receiver.port}/hook", SECRET)
    await h.dispatcher.register(OFFICE_B, f"https://other.kbri.test:{receiver.port}/hook", SECRET)

    right, wrong = await finished(
        [h.dispatcher.offer(update(OFFICE_A, member_key(1), 1)), h.dispatcher.offer(update(OFFICE_B, member_key(2), 1))]
    )
    assert right.outcome is Outcome.DELIVERED
    assert (wrong.outcome, wrong.last_reason) == (Outcome.DEAD_LETTERED, policy.CONNECT_ERROR)
    (hit,) = receiver.hits
    assert hit.headers["host"] == f"hooks.kbri.test:{receiver.port}" and hit.verified_by == {SECRET}


# --- queue, ordering, supersede, replay ----------------------------------------------------------------------------
async def test_a_full_office_queue_answers_queue_full_and_takes_again_later(harness):
    gate = asyncio.Event()

    async def handler(request: httpx.Request) -> httpx.Response:
        await gate.wait()
        return httpx.Response(200)

    h = harness(settings(webhooks_queue_size=3, webhooks_office_concurrency=1), transport=httpx.MockTransport(handler))
    await h.dispatcher.register(OFFICE_A, "http://127.0.0.1:9/hook", SECRET)
    refused_before = sample("sinergi_webhook_offers_refused_total", office=OFFICE_A, reason="QUEUE_FULL")
    accepted = [h.dispatcher.offer(update(OFFICE_A, member_key(n), 1)) for n in range(3)]
    full = h.dispatcher.offer(update(OFFICE_A, member_key(3), 1))
    assert [o.status for o in accepted] == [OfferStatus.ACCEPTED] * 3
    assert full.status is OfferStatus.QUEUE_FULL and full.done is None
    assert sample("sinergi_webhook_offers_refused_total", office=OFFICE_A, reason="QUEUE_FULL") == refused_before + 1
    assert sample("sinergi_webhook_backlog", office=OFFICE_A) == 3

    gate.set()
    await finished(accepted)
    again = h.dispatcher.offer(update(OFFICE_A, member_key(3), 1))
    assert again.status is OfferStatus.ACCEPTED and again.webhook_id == full.webhook_id
    await finished([again])


async def test_duplicates_and_stale_versions_are_not_sent_twice(harness):
    sent: list[int] = []
    sent_ids: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(json.loads(request.content)["version"])
        sent_ids.append(request.headers["webhook-id"])
        return httpx.Response(200)

    h = harness(transport=httpx.MockTransport(handler))
    await h.dispatcher.register(OFFICE_A, "http://127.0.0.1:9/hook", SECRET)
    member = member_key(9)
    first = h.dispatcher.offer(update(OFFICE_A, member, 2))
    duplicate = h.dispatcher.offer(update(OFFICE_A, member, 2))
    assert duplicate.status is OfferStatus.DUPLICATE
    assert (duplicate.webhook_id, duplicate.done) == (first.webhook_id, first.done)
    await finished([first])
    assert h.dispatcher.offer(update(OFFICE_A, member, 2)).status is OfferStatus.STALE
    assert h.dispatcher.offer(update(OFFICE_A, member, 1)).status is OfferStatus.STALE
    await finished([h.dispatcher.offer(update(OFFICE_A, member, 3))])
    assert sent == [2, 3]

    by_record = WebhookUpdate(OFFICE_A, member, 4, payload(member, 4), record_id="members.v1:2:1234")
    assert h.dispatcher.offer(by_record).webhook_id == policy.webhook_id(OFFICE_A, "members.v1:2:1234")
    given = "0b6f2a52-6f0e-5c43-9d59-2a1c3e4f5a6b"  # e.g. the OfficeUpdate's update_id, used as it is
    (result,) = await finished(
        [h.dispatcher.offer(WebhookUpdate(OFFICE_A, member, 5, payload(member, 5), webhook_id=given))]
    )
    assert result.outcome is Outcome.DELIVERED and sent_ids[-1] == given
    with pytest.raises(ValueError, match="webhook-id"):
        h.dispatcher.offer(WebhookUpdate(OFFICE_A, member, 6, payload(member, 6), webhook_id="has space"))


async def test_by_default_every_version_is_delivered_in_order(harness):
    h_box: list[WebhookDispatcher] = []
    member = member_key(10)
    answered: list[tuple[int, int]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        version = json.loads(request.content)["version"]
        status = 200
        if version == 1 and not answered:
            h_box[0].offer(update(OFFICE_A, member, 2))  # a newer version arrives while v1 is failing
            status = 503
        answered.append((version, status))
        return httpx.Response(status)

    h = harness(transport=httpx.MockTransport(handler))
    h_box.append(h.dispatcher)
    await h.dispatcher.register(OFFICE_A, "http://127.0.0.1:9/hook", SECRET)
    (v1,) = await finished([h.dispatcher.offer(update(OFFICE_A, member, 1))])
    await until(lambda: len(answered) == 3, "v2 to be delivered")
    assert v1.outcome is Outcome.DELIVERED
    assert answered == [(1, 503), (1, 200), (2, 200)]


async def test_supersede_setting_skips_older_undelivered_versions(harness):
    h_box: list[WebhookDispatcher] = []
    member, other = member_key(11), member_key(12)
    answered: list[tuple[str, int, int]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        data = json.loads(request.content)
        status = 200
        if data["member"] == other and data["version"] == 1:
            h_box[0].offer(update(OFFICE_A, other, 2))  # arrives while v1 is in flight, then v1 fails
            status = 503
        answered.append((data["member"], data["version"], status))
        return httpx.Response(status)

    h = harness(settings(webhooks_supersede=True), transport=httpx.MockTransport(handler))
    h_box.append(h.dispatcher)
    await h.dispatcher.register(OFFICE_A, "http://127.0.0.1:9/hook", SECRET)
    queued = [h.dispatcher.offer(update(OFFICE_A, member, v)) for v in (1, 2, 3)]
    in_flight = h.dispatcher.offer(update(OFFICE_A, other, 1))
    results = await finished([*queued, in_flight])
    await until(lambda: (other, 2, 200) in answered, "the newer version of the other member")

    assert [r.outcome for r in results] == [
        Outcome.SUPERSEDED,
        Outcome.SUPERSEDED,
        Outcome.DELIVERED,
        Outcome.SUPERSEDED,
    ]
    assert results[3].attempts == 1
    assert sorted(answered) == sorted([(member, 3, 200), (other, 1, 503), (other, 2, 200)])
    assert h.dead == []


async def test_max_age_gives_up_and_replay_redelivers_with_the_same_webhook_id(receivers, harness):
    receiver = receivers()
    receiver.behaviour = lambda hit: Response("down", status_code=503)
    await receiver.start()
    h = harness(settings(webhooks_max_age_s=300.0, webhooks_max_attempts=1000, webhooks_backoff_cap_s=60.0))
    await h.dispatcher.register(OFFICE_A, receiver.url, SECRET)
    offers = [h.dispatcher.offer(update(OFFICE_A, member_key(n), v)) for v in (1, 2) for n in (20, 21)]
    results = await finished(offers)
    assert {r.outcome for r in results} == {Outcome.DEAD_LETTERED}
    assert {d.cause for d in h.dead} == {MAX_AGE}
    assert all(d.last_status == 503 and d.last_reason == policy.HTTP_5XX for d in h.dead)
    # v2 waited behind v1 and was over age by the time it went out; v1 was retried until it was
    assert all(1 < d.attempts < 1000 for d in h.dead if d.version == 1)
    assert all(d.attempts >= 1 for d in h.dead)

    # through the DLQ topic and back: key, headers and the original bytes
    records = [DeadLetter.from_kafka(d.payload, d.kafka_headers()) for d in h.dead]
    assert records == h.dead
    assert all(d.kafka_key() == f"{OFFICE_A}:{d.member_key_hash}".encode() for d in records)
    assert all(member_key(20) not in repr(d) and '"note"' not in repr(d) for d in records)  # no payload

    receiver.behaviour = lambda hit: Response("ok")
    replayed = h.dispatcher.replay(records)
    assert [o.status for o in replayed] == [OfferStatus.ACCEPTED] * 4
    assert [o.webhook_id for o in replayed] == [d.webhook_id for d in records]
    assert {r.outcome for r in await finished(replayed)} == {Outcome.DELIVERED}
    delivered = receiver.delivered()
    assert sorted(hit.headers["webhook-id"] for hit in delivered) == sorted(o.webhook_id for o in offers)
    for n in (20, 21):
        assert [hit.version for hit in delivered if hit.member == member_key(n)] == [1, 2]
    assert all(hit.verified_by == {SECRET} for hit in receiver.hits)
    # the office already has these versions: replaying them again sends nothing
    assert {o.status for o in h.dispatcher.replay(records)} == {OfferStatus.STALE}


def test_a_dead_letter_without_its_headers_is_refused():
    with pytest.raises(ValueError, match="webhook-dlq-cause"):
        DeadLetter.from_kafka(b"{}", [(h, b"1") for h in ("webhook-dlq-office", "webhook-id")])


async def test_a_failing_dead_letter_handler_is_reported_in_the_outcome(harness):
    async def broken(record: DeadLetter) -> None:
        raise RuntimeError("kafka down")

    h = harness(
        settings(webhooks_max_attempts=1),
        on_dead_letter=broken,
        transport=httpx.MockTransport(lambda request: httpx.Response(500)),
    )
    await h.dispatcher.register(OFFICE_A, "http://127.0.0.1:9/hook", SECRET)
    (result,) = await finished([h.dispatcher.offer(update(OFFICE_A, member_key(1), 1))])
    assert result.outcome is Outcome.DEAD_LETTER_FAILED
    assert result.dead_letter is not None and result.dead_letter.last_status == 500


async def test_close_abandons_unfinished_updates(harness):
    gate = asyncio.Event()

    async def handler(request: httpx.Request) -> httpx.Response:
        await gate.wait()
        return httpx.Response(200)

    h = harness(transport=httpx.MockTransport(handler))
    await h.dispatcher.register(OFFICE_A, "http://127.0.0.1:9/hook", SECRET)
    offers = [h.dispatcher.offer(update(OFFICE_A, member_key(1), v)) for v in (1, 2)]
    assert backlog(h.dispatcher, OFFICE_A) == 2
    await h.dispatcher.close()
    assert [r.outcome for r in await finished(offers)] == [Outcome.ABANDONED] * 2
    assert h.dispatcher.offer(update(OFFICE_A, member_key(1), 3)).status is OfferStatus.CLOSED
    assert h.dead == []


async def test_logs_carry_no_payload_member_url_or_secret(receivers, harness, caplog):
    receiver = receivers()
    receiver.behaviour = lambda hit: Response("no", status_code=500)
    await receiver.start()
    h = harness(settings(webhooks_max_attempts=2))
    caplog.set_level("INFO", logger="connectors.kbri.webhooks")
    url = f"{receiver.url}?token=path-token-9f8e7d"
    await h.dispatcher.register(OFFICE_A, url, SECRET)
    h.dispatcher.rotate_secret(OFFICE_A, NEW_SECRET)
    member = member_key(42)
    offer = h.dispatcher.offer(update(OFFICE_A, member, 1, extra="SITI AMINAH BINTI AHMAD"))
    await finished([offer])
    h.dispatcher.replay(h.dead)

    logged = "\n".join(f"{r.getMessage()} {getattr(r, 'fields', '')}" for r in caplog.records)
    assert offer.webhook_id in logged  # the id is logged: that is how an office's complaint is traced
    for secret_or_personal in (
        member,
        "SITI AMINAH",
        "path-token-9f8e7d",
        SECRET,
        SECRET.removeprefix("whsec_"),
        NEW_SECRET.removeprefix("whsec_"),
        h.dead[0].member_key_hash,
    ):
        assert secret_or_personal not in logged
