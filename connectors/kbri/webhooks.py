"""Outbound webhooks to the representation offices (Standard Webhooks: webhook-id, webhook-timestamp,
webhook-signature), one isolated lane per office.

A lane is a bounded set of queued updates, its own HTTP client (its own connection pool: a hanging office
cannot hold the connections another office needs) and `webhooks_office_concurrency` workers. Workers take
members, not updates: a member's versions go out one at a time in version order, so version n+1 never
leaves before version n was delivered or given up, while other members of the same office proceed. A
member waiting out a backoff (full jitter; Retry-After on 429/503) holds a timer, not a worker.

Each attempt resolves the endpoint host, checks every address against the policy and sends to the checked
address itself (the URL names the IP; Host and TLS SNI keep the registered name, so certificates are
verified against it). A name that re-resolves to a private address between registration and delivery (DNS
rebinding) is therefore never connected to.

Outcomes are answered through the future each accepted offer carries (DELIVERED, DEAD_LETTERED, ...), so
the caller can commit its input only once an update is finished. An update given up (attempts or age
exhausted, endpoint gone) is handed to `on_dead_letter` as a DeadLetter before its future completes;
`replay` re-enqueues dead letters with the webhook-id they had.

Logs and metrics carry the office, webhook ids and reason codes: never a payload, member key, URL or secret.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import random
import re
import socket
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Protocol

import httpx
from pydantic import SecretStr

from connectors.kbri import webhook_policy as policy
from services import metrics
from services.config import Settings
from services.logs import event

log = logging.getLogger(__name__)

USER_AGENT = "sinergi-webhooks/1.0"
_WEBHOOK_ID = re.compile(r"[A-Za-z0-9_:-]{1,255}")

# Give-up causes (DeadLetter.cause, metric label).
MAX_ATTEMPTS = "MAX_ATTEMPTS"
MAX_AGE = "MAX_AGE"
ENDPOINT_GONE = "ENDPOINT_GONE"
INTERNAL_ERROR = policy.INTERNAL_ERROR

# Members whose last delivered version is remembered per office (oldest forgotten first); it only serves to
# refuse an update older than what the office already has.
HIGH_WATER_MEMBERS = 100_000


class Clock(Protocol):
    def monotonic(self) -> float: ...

    def wall(self) -> float:
        """Unix seconds: the webhook-timestamp receivers compare with their own clock."""
        ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def monotonic(self) -> float:
        return time.monotonic()

    def wall(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


Resolver = Callable[[str, int], Awaitable[list[str]]]
DeadLetterHandler = Callable[["DeadLetter"], Awaitable[None]]


async def system_resolver(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    addresses: list[str] = []
    for *_, sockaddr in infos:
        address = str(sockaddr[0])
        if address not in addresses:
            addresses.append(address)
    return addresses


class OfferStatus(StrEnum):
    ACCEPTED = "ACCEPTED"
    DUPLICATE = "DUPLICATE"  # the same update (webhook-id or member version) is already queued or in flight
    STALE = "STALE"  # older than a version already delivered or in flight for that member
    QUEUE_FULL = "QUEUE_FULL"  # backpressure: offer again later; nothing was queued
    NO_ENDPOINT = "NO_ENDPOINT"
    ENDPOINT_DISABLED = "ENDPOINT_DISABLED"  # the endpoint answered 410 Gone; the office must register again
    CLOSED = "CLOSED"


class Outcome(StrEnum):
    DELIVERED = "delivered"
    DEAD_LETTERED = "dead_lettered"
    DEAD_LETTER_FAILED = "dead_letter_failed"  # given up, and on_dead_letter raised: Finished.dead_letter has it
    SUPERSEDED = "superseded"  # webhooks_supersede: a newer version of the member replaced it
    ABANDONED = "abandoned"  # the dispatcher closed first


@dataclass(frozen=True)
class WebhookUpdate:
    """One member version for one office. The webhook-id is `webhook_id` when the caller has a deterministic
    one (e.g. the OfficeUpdate's update_id), else derived from office and `record_id` (default: member and
    version); either way the same update offered again (a redelivered input record) keeps its id."""

    office: str
    member_key: str = field(repr=False)
    version: int
    payload: bytes = field(repr=False)
    record_id: str | None = field(default=None, repr=False)
    webhook_id: str | None = None


# Kafka headers of a dead letter (the lead produces them to the delivery DLQ topic; replay reads them back).
H_OFFICE = "webhook-dlq-office"
H_WEBHOOK_ID = "webhook-id"
H_MEMBER = "webhook-dlq-member"
H_VERSION = "webhook-dlq-version"
H_ATTEMPTS = "webhook-dlq-attempts"
H_LAST_STATUS = "webhook-dlq-last-status"
H_LAST_REASON = "webhook-dlq-last-reason"
H_CAUSE = "webhook-dlq-cause"
H_FAILED_AT = "webhook-dlq-failed-at"
_DEAD_LETTER_HEADERS = (
    H_OFFICE,
    H_WEBHOOK_ID,
    H_MEMBER,
    H_VERSION,
    H_ATTEMPTS,
    H_LAST_STATUS,
    H_LAST_REASON,
    H_CAUSE,
    H_FAILED_AT,
)


@dataclass(frozen=True)
class DeadLetter:
    office: str
    webhook_id: str
    member_key_hash: str
    version: int
    attempts: int
    last_status: int | None
    last_reason: str  # the last attempt's result (HTTP_5XX, TIMEOUT, ...), "" when never attempted
    cause: str  # MAX_ATTEMPTS, MAX_AGE, ENDPOINT_GONE, INTERNAL_ERROR
    failed_at: float  # unix seconds
    payload: bytes = field(repr=False)

    def kafka_key(self) -> bytes:
        """Office and member: a member's dead letters stay in order on one partition."""
        return f"{self.office}:{self.member_key_hash}".encode()

    def kafka_headers(self) -> list[tuple[str, bytes]]:
        return [
            (H_OFFICE, self.office.encode()),
            (H_WEBHOOK_ID, self.webhook_id.encode()),
            (H_MEMBER, self.member_key_hash.encode()),
            (H_VERSION, str(self.version).encode()),
            (H_ATTEMPTS, str(self.attempts).encode()),
            (H_LAST_STATUS, b"" if self.last_status is None else str(self.last_status).encode()),
            (H_LAST_REASON, self.last_reason.encode()),
            (H_CAUSE, self.cause.encode()),
            (H_FAILED_AT, f"{self.failed_at:.3f}".encode()),
        ]

    @classmethod
    def from_kafka(cls, value: bytes, headers: Sequence[tuple[str, bytes]]) -> DeadLetter:
        """Raises ValueError when a header is missing or malformed."""
        found = {name: raw.decode() for name, raw in headers}
        missing = [name for name in _DEAD_LETTER_HEADERS if name not in found]
        if missing:
            raise ValueError("dead letter without header " + ", ".join(missing))
        status = found[H_LAST_STATUS]
        return cls(
            office=found[H_OFFICE],
            webhook_id=found[H_WEBHOOK_ID],
            member_key_hash=found[H_MEMBER],
            version=int(found[H_VERSION]),
            attempts=int(found[H_ATTEMPTS]),
            last_status=int(status) if status else None,
            last_reason=found[H_LAST_REASON],
            cause=found[H_CAUSE],
            failed_at=float(found[H_FAILED_AT]),
            payload=value,
        )


@dataclass(frozen=True)
class Finished:
    outcome: Outcome
    attempts: int
    last_status: int | None
    last_reason: str
    dead_letter: DeadLetter | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Offer:
    status: OfferStatus
    webhook_id: str
    done: asyncio.Future[Finished] | None = None  # the queued update's future (ACCEPTED, DUPLICATE)


@dataclass(frozen=True)
class EndpointStatus:
    office: str
    active: bool
    disabled_reason: str | None  # HTTP_410 when the endpoint answered 410 Gone
    backlog: int
    signing_secrets: int  # 2 during a rotation overlap


@dataclass(eq=False)
class _Delivery:
    member: str
    version: int
    webhook_id: str
    payload: bytes = field(repr=False)
    enqueued_at: float
    done: asyncio.Future[Finished]
    attempts: int = 0
    last_status: int | None = None
    last_reason: str = ""


class _Member:
    __slots__ = ("current", "newer", "queue", "scheduled")

    def __init__(self) -> None:
        self.queue: list[_Delivery] = []  # ascending version
        self.current: _Delivery | None = None
        self.scheduled = False  # on the lane's ready queue or held by a worker
        self.newer = asyncio.Event()  # a newer version arrived while `current` was in flight


@dataclass(frozen=True)
class _Endpoint:
    url: policy.EndpointUrl
    keys: tuple[bytes, ...] = field(repr=False)  # newest first


class _Lane:
    def __init__(self, office: str, endpoint: _Endpoint, client: httpx.AsyncClient) -> None:
        self.office = office
        self.endpoint = endpoint
        self.client = client
        self.members: dict[str, _Member] = {}
        self.ready: asyncio.Queue[str] = asyncio.Queue()
        self.unfinished: set[_Delivery] = set()
        self.high_water: OrderedDict[str, int] = OrderedDict()
        self.disabled_reason: str | None = None
        self.gone = asyncio.Event()
        self.workers: list[asyncio.Task[None]] = []
        self.timers: set[asyncio.Task[None]] = set()  # deliveries waiting out a backoff


async def _discard_body(response: httpx.Response, limit: int) -> None:
    """Read at most about `limit` bytes of a response nobody needs: a receiver streaming without end must
    not hold the attempt until its timeout."""
    if limit <= 0 or response.is_stream_consumed:  # a body given whole (in-process transports) is read already
        return
    read = 0
    async for chunk in response.aiter_raw():
        read += len(chunk)
        if read >= limit:
            return


def _reveal(secret: str | SecretStr) -> str:
    return secret.get_secret_value() if isinstance(secret, SecretStr) else secret


class WebhookDispatcher:
    def __init__(
        self,
        settings: Settings,
        *,
        on_dead_letter: DeadLetterHandler,
        offices: Collection[str] | None = None,
        clock: Clock | None = None,
        resolver: Resolver | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if settings.webhooks_allow_private and settings.environment == "production":
            raise ValueError("SINERGI_WEBHOOKS_ALLOW_PRIVATE is a test/demo setting, refused in production")
        if settings.webhooks_backoff_cap_s < settings.webhooks_backoff_base_s:
            raise ValueError("SINERGI_WEBHOOKS_BACKOFF_CAP_S must be at least SINERGI_WEBHOOKS_BACKOFF_BASE_S")
        self._on_dead_letter = on_dead_letter
        self._offices = frozenset(offices) if offices is not None else None
        self._clock: Clock = clock or SystemClock()
        self._resolve: Resolver = resolver or system_resolver
        self._transport = transport
        self._rng = rng or random.Random()
        self._allow_private = settings.webhooks_allow_private
        self._base = settings.webhooks_backoff_base_s
        self._cap = settings.webhooks_backoff_cap_s
        self._max_attempts = settings.webhooks_max_attempts
        self._max_age = settings.webhooks_max_age_s
        self._attempt_timeout = settings.webhooks_attempt_timeout_s
        self._body_limit = settings.webhooks_response_max_bytes
        self._queue_size = settings.webhooks_queue_size
        self._concurrency = settings.webhooks_office_concurrency
        self._supersede = settings.webhooks_supersede
        self._lanes: dict[str, _Lane] = {}
        self._closed = False

    async def __aenter__(self) -> WebhookDispatcher:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    # --- endpoints -------------------------------------------------------------------------------------
    async def register(self, office: str, url: str, secret: str | SecretStr) -> EndpointStatus:
        """Set (or replace) an office's endpoint and signing secret; re-enables a disabled endpoint.
        Raises WebhookRefused with a stable reason code."""
        if self._closed:
            raise RuntimeError("the webhook dispatcher is closed")
        if self._offices is not None and office not in self._offices:
            raise policy.WebhookRefused(policy.UNKNOWN_OFFICE, "not a known office")
        key = policy.decode_secret(_reveal(secret))
        endpoint_url = policy.check_endpoint_url(url, allow_http=self._allow_private, allow_private=self._allow_private)
        if endpoint_url.literal is None:
            try:
                async with asyncio.timeout(self._attempt_timeout):
                    addresses = await self._resolve(endpoint_url.host, endpoint_url.port)
            except (OSError, TimeoutError) as exc:
                raise policy.WebhookRefused(policy.HOST_UNRESOLVED, "the endpoint host did not resolve") from exc
            policy.choose_address(addresses, allow_private=self._allow_private)
        endpoint = _Endpoint(endpoint_url, (key,))
        lane = self._lanes.get(office)
        if lane is None:
            lane = _Lane(office, endpoint, self._client())
            lane.workers = [asyncio.create_task(self._work(lane)) for _ in range(self._concurrency)]
            self._lanes[office] = lane
        else:
            lane.endpoint = endpoint
            if lane.disabled_reason is not None:
                lane.disabled_reason = None
                lane.gone = asyncio.Event()
        metrics.WEBHOOK_ENDPOINT_DISABLED.labels(office).set(0)
        metrics.WEBHOOK_BACKLOG.labels(office).set(len(lane.unfinished))
        event(log, "webhook endpoint registered", office=office, scheme=endpoint_url.scheme)
        return self._status(lane)

    def rotate_secret(self, office: str, new_secret: str | SecretStr) -> EndpointStatus:
        """Start an overlap: sign with the new secret and the current one until `end_rotation`."""
        lane = self._lane(office)
        key = policy.decode_secret(_reveal(new_secret))
        lane.endpoint = replace(lane.endpoint, keys=(key, lane.endpoint.keys[0]))
        event(log, "webhook secret rotation started", office=office)
        return self._status(lane)

    def end_rotation(self, office: str) -> EndpointStatus:
        lane = self._lane(office)
        lane.endpoint = replace(lane.endpoint, keys=lane.endpoint.keys[:1])
        event(log, "webhook secret rotation ended", office=office)
        return self._status(lane)

    def status(self, office: str) -> EndpointStatus | None:
        lane = self._lanes.get(office)
        return None if lane is None else self._status(lane)

    # --- intake ----------------------------------------------------------------------------------------------
    def offer(self, update: WebhookUpdate) -> Offer:
        """Queue one update without waiting; the status says whether it was taken (QUEUE_FULL: offer again
        later). Must be called from the event loop the dispatcher runs on."""
        if update.version < 0:
            raise ValueError("a member version is not negative")
        update.payload.decode("utf-8")  # receivers verify the signature over the body as text
        member = policy.member_key_hash(update.member_key)
        if update.webhook_id is not None:
            if _WEBHOOK_ID.fullmatch(update.webhook_id) is None:
                raise ValueError("a webhook-id is 1-255 characters of A-Z a-z 0-9 _ : -")
            webhook_id = update.webhook_id
        else:
            record_id = update.record_id if update.record_id is not None else f"{member}:v{update.version}"
            webhook_id = policy.webhook_id(update.office, record_id)
        return self._offer(update.office, member, update.version, webhook_id, update.payload)

    def replay(self, records: Iterable[DeadLetter]) -> list[Offer]:
        """Re-enqueue dead letters with their own webhook-id (receivers deduplicate by it)."""
        offers = [
            self._offer(record.office, record.member_key_hash, record.version, record.webhook_id, record.payload)
            for record in records
        ]
        accepted = sum(1 for o in offers if o.status is OfferStatus.ACCEPTED)
        event(log, "webhook dead letters replayed", records=len(offers), accepted=accepted)
        return offers

    def _offer(self, office: str, member: str, version: int, webhook_id: str, payload: bytes) -> Offer:
        lane = self._lanes.get(office)
        if self._closed:
            return self._refuse(office if lane else "unknown", OfferStatus.CLOSED, webhook_id)
        if lane is None:
            return self._refuse("unknown", OfferStatus.NO_ENDPOINT, webhook_id)
        if lane.disabled_reason is not None:
            return self._refuse(office, OfferStatus.ENDPOINT_DISABLED, webhook_id)
        holder = lane.members.get(member)
        if holder is not None:
            for queued in ([holder.current] if holder.current else []) + holder.queue:
                if queued.webhook_id == webhook_id or queued.version == version:
                    return Offer(OfferStatus.DUPLICATE, queued.webhook_id, queued.done)
        floor = lane.high_water.get(member, -1)
        if holder is not None and holder.current is not None:
            floor = max(floor, holder.current.version)
        if version <= floor:
            return self._refuse(office, OfferStatus.STALE, webhook_id)
        if len(lane.unfinished) >= self._queue_size:
            return self._refuse(office, OfferStatus.QUEUE_FULL, webhook_id)

        if holder is None:
            holder = lane.members[member] = _Member()
        delivery = _Delivery(
            member=member,
            version=version,
            webhook_id=webhook_id,
            payload=payload,
            enqueued_at=self._clock.monotonic(),
            done=asyncio.get_running_loop().create_future(),
        )
        position = bisect.bisect([q.version for q in holder.queue], version)
        holder.queue.insert(position, delivery)
        lane.unfinished.add(delivery)
        if self._supersede:
            older, holder.queue = holder.queue[:-1], holder.queue[-1:]
            for skipped in older:
                self._finish(lane, skipped, Outcome.SUPERSEDED)
            if holder.current is not None:
                holder.newer.set()
        metrics.WEBHOOK_BACKLOG.labels(office).set(len(lane.unfinished))
        if not holder.scheduled:
            holder.scheduled = True
            lane.ready.put_nowait(member)
        return Offer(OfferStatus.ACCEPTED, webhook_id, delivery.done)

    def _refuse(self, office_label: str, status: OfferStatus, webhook_id: str) -> Offer:
        metrics.WEBHOOK_REFUSED.labels(office_label, status.value).inc()
        return Offer(status, webhook_id)

    # --- lanes -------------------------------------------------------------------------------------------------
    def _lane(self, office: str) -> _Lane:
        lane = self._lanes.get(office)
        if lane is None:
            raise KeyError(f"no webhook endpoint registered for {office}")
        return lane

    def _status(self, lane: _Lane) -> EndpointStatus:
        return EndpointStatus(
            office=lane.office,
            active=lane.disabled_reason is None,
            disabled_reason=lane.disabled_reason,
            backlog=len(lane.unfinished),
            signing_secrets=len(lane.endpoint.keys),
        )

    def _client(self) -> httpx.AsyncClient:
        limits = httpx.Limits(max_connections=self._concurrency, max_keepalive_connections=self._concurrency)
        transport = self._transport or httpx.AsyncHTTPTransport(retries=0, limits=limits)
        return httpx.AsyncClient(
            transport=transport,
            timeout=httpx.Timeout(self._attempt_timeout),
            follow_redirects=False,
            trust_env=False,  # an environment proxy would connect somewhere the address policy never saw
        )

    async def _work(self, lane: _Lane) -> None:
        while True:
            member = await lane.ready.get()
            holder = lane.members.get(member)
            if holder is None:
                continue
            if holder.current is None and holder.queue:
                holder.current = holder.queue.pop(0)
            delivery = holder.current
            retry_in: float | None = None
            if delivery is not None:
                try:
                    retry_in = await self._step(lane, holder, delivery)
                except Exception as exc:
                    log.error(
                        "webhook delivery failed internally",
                        extra={
                            "fields": {
                                "office": lane.office,
                                "webhook_id": delivery.webhook_id,
                                "error": type(exc).__name__,
                            }
                        },
                    )
                    if not delivery.done.done():
                        await self._give_up(lane, delivery, INTERNAL_ERROR)
            if retry_in is not None:
                # The member keeps its place (current stays set) but frees the worker: a member in backoff
                # must not hold up the office's other members.
                timer = asyncio.create_task(self._wake_later(lane, member, holder, retry_in))
                lane.timers.add(timer)
                timer.add_done_callback(lane.timers.discard)
                continue
            holder.current = None
            if holder.queue:
                lane.ready.put_nowait(member)
            else:
                holder.scheduled = False
                if lane.members.get(member) is holder:
                    del lane.members[member]

    async def _wake_later(self, lane: _Lane, member: str, holder: _Member, seconds: float) -> None:
        await self._pause(lane, holder, seconds)
        lane.ready.put_nowait(member)

    async def _step(self, lane: _Lane, holder: _Member, delivery: _Delivery) -> float | None:
        """One attempt at the member's current delivery: None once it is finished, else seconds until the
        next attempt."""
        if lane.disabled_reason is not None:
            await self._give_up(lane, delivery, ENDPOINT_GONE)
            return None
        if self._supersede and holder.queue:
            self._finish(lane, delivery, Outcome.SUPERSEDED)
            return None
        holder.newer.clear()
        delivery.attempts += 1
        status, reason, retry_after = await self._attempt(lane, delivery)
        delivery.last_status, delivery.last_reason = status, reason
        metrics.WEBHOOK_ATTEMPTS.labels(lane.office, reason).inc()
        if reason == policy.OK:
            metrics.WEBHOOK_LATENCY.labels(lane.office).observe(self._clock.monotonic() - delivery.enqueued_at)
            self._finish(lane, delivery, Outcome.DELIVERED)
            return None
        if reason == policy.HTTP_410:
            await self._disable(lane)
            await self._give_up(lane, delivery, ENDPOINT_GONE)
            return None
        if delivery.attempts >= self._max_attempts:
            await self._give_up(lane, delivery, MAX_ATTEMPTS)
            return None
        if retry_after is None:
            retry_after = policy.full_jitter_delay(delivery.attempts, self._base, self._cap, self._rng.random())
        if self._clock.monotonic() + retry_after - delivery.enqueued_at > self._max_age:
            await self._give_up(lane, delivery, MAX_AGE)
            return None
        return retry_after

    async def _attempt(self, lane: _Lane, delivery: _Delivery) -> tuple[int | None, str, float | None]:
        endpoint = lane.endpoint
        url = endpoint.url
        timestamp = int(self._clock.wall())
        headers = {
            "content-type": "application/json",
            "user-agent": USER_AGENT,
            "webhook-id": delivery.webhook_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": policy.signature_header(
                endpoint.keys, delivery.webhook_id, timestamp, delivery.payload
            ),
        }
        try:
            async with asyncio.timeout(self._attempt_timeout):
                target, extensions = await self._connect_target(url)
                if url.literal is None:
                    headers["host"] = url.host_header()
                async with lane.client.stream(
                    "POST", target, content=delivery.payload, headers=headers, extensions=extensions
                ) as response:
                    await _discard_body(response, self._body_limit)
                    status = response.status_code
                    retry_after_header = response.headers.get("retry-after")
        except TimeoutError:
            return None, policy.TIMEOUT, None
        except httpx.TimeoutException:
            return None, policy.TIMEOUT, None
        except policy.WebhookRefused as refused:
            if refused.reason == policy.HOST_UNRESOLVED:
                return None, policy.DNS_ERROR, None
            event(log, "webhook address refused at connection", office=lane.office, reason=refused.reason)
            return None, policy.ADDRESS_FORBIDDEN, None
        except httpx.ConnectError:
            return None, policy.CONNECT_ERROR, None
        except httpx.HTTPError:
            return None, policy.NETWORK_ERROR, None
        retry_after = None
        if status in (429, 503):
            retry_after = policy.retry_after_delay(retry_after_header, self._clock.wall(), self._cap)
        return status, policy.classify_status(status), retry_after

    async def _connect_target(self, url: policy.EndpointUrl) -> tuple[str, dict[str, object]]:
        """The URL to send to (naming a checked address) and the request extensions keeping TLS on the name."""
        if url.literal is not None:
            return url.pinned(url.host), {}
        try:
            addresses = await self._resolve(url.host, url.port)
        except OSError as exc:
            raise policy.WebhookRefused(policy.HOST_UNRESOLVED, "the endpoint host did not resolve") from exc
        address = policy.choose_address(addresses, allow_private=self._allow_private)
        extensions: dict[str, object] = {"sni_hostname": url.host} if url.scheme == "https" else {}
        return url.pinned(address), extensions

    async def _pause(self, lane: _Lane, holder: _Member, seconds: float) -> None:
        """Wait out a backoff, cut short when the endpoint goes away or (superseding) a newer version comes."""
        waits: list[asyncio.Future[object]] = [
            asyncio.ensure_future(self._clock.sleep(seconds)),
            asyncio.ensure_future(lane.gone.wait()),
        ]
        if self._supersede:
            waits.append(asyncio.ensure_future(holder.newer.wait()))
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in waits:
                waiting.cancel()

    async def _disable(self, lane: _Lane) -> None:
        if lane.disabled_reason is not None:
            return
        lane.disabled_reason = policy.HTTP_410
        lane.gone.set()
        metrics.WEBHOOK_ENDPOINT_DISABLES.labels(lane.office).inc()
        metrics.WEBHOOK_ENDPOINT_DISABLED.labels(lane.office).set(1)
        event(log, "webhook endpoint disabled", office=lane.office, reason=policy.HTTP_410)
        # Queued updates will never be sent to this endpoint: dead-letter them now, in member order, so a
        # replay after the office registers again keeps the order. In-flight ones follow after their attempt.
        for holder in list(lane.members.values()):
            queued, holder.queue = holder.queue, []
            for delivery in queued:
                await self._give_up(lane, delivery, ENDPOINT_GONE)

    async def _give_up(self, lane: _Lane, delivery: _Delivery, cause: str) -> None:
        record = DeadLetter(
            office=lane.office,
            webhook_id=delivery.webhook_id,
            member_key_hash=delivery.member,
            version=delivery.version,
            attempts=delivery.attempts,
            last_status=delivery.last_status,
            last_reason=delivery.last_reason,
            cause=cause,
            failed_at=round(self._clock.wall(), 3),  # milliseconds: what its Kafka header carries
            payload=delivery.payload,
        )
        metrics.WEBHOOK_DEAD_LETTERS.labels(lane.office, cause).inc()
        event(
            log,
            "webhook dead-lettered",
            office=lane.office,
            webhook_id=delivery.webhook_id,
            version=delivery.version,
            attempts=delivery.attempts,
            reason=delivery.last_reason or "none",
            cause=cause,
        )
        try:
            await self._on_dead_letter(record)
        except Exception as exc:
            log.error(
                "webhook dead-letter handler failed",
                extra={
                    "fields": {"office": lane.office, "webhook_id": delivery.webhook_id, "error": type(exc).__name__}
                },
            )
            self._finish(lane, delivery, Outcome.DEAD_LETTER_FAILED, record)
            return
        self._finish(lane, delivery, Outcome.DEAD_LETTERED, record)

    def _finish(
        self, lane: _Lane, delivery: _Delivery, outcome: Outcome, dead_letter: DeadLetter | None = None
    ) -> None:
        if delivery.done.done():
            return
        lane.unfinished.discard(delivery)
        metrics.WEBHOOK_BACKLOG.labels(lane.office).set(len(lane.unfinished))
        metrics.WEBHOOK_DELIVERIES.labels(lane.office, outcome.value).inc()
        if outcome is Outcome.DELIVERED:
            known = lane.high_water.get(delivery.member, -1)
            lane.high_water[delivery.member] = max(known, delivery.version)
            lane.high_water.move_to_end(delivery.member)
            while len(lane.high_water) > HIGH_WATER_MEMBERS:
                lane.high_water.popitem(last=False)
        delivery.done.set_result(
            Finished(outcome, delivery.attempts, delivery.last_status, delivery.last_reason, dead_letter)
        )

    # --- shutdown ------------------------------------------------------------------------------------------------
    async def close(self) -> None:
        """Stop every lane. Unfinished updates complete as ABANDONED (not dead-lettered: their input was not
        committed, so they come again after a restart, with the same webhook-id)."""
        if self._closed:
            return
        self._closed = True
        workers = [task for lane in self._lanes.values() for task in (*lane.workers, *lane.timers)]
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        for lane in self._lanes.values():
            for delivery in list(lane.unfinished):
                self._finish(lane, delivery, Outcome.ABANDONED)
            lane.members.clear()
            await lane.client.aclose()
