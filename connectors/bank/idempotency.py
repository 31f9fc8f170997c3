"""X-EXTERNAL-ID idempotency of SNAP transactional calls (domain.md 4.2, 7.3), per API process.

Key = (bank id, X-EXTERNAL-ID, WIB calendar date of the time the request was received). The fingerprint
of a request is sha256 of its minified raw body (the digest the signature covers), so a bank resending
the same notification re-serialised with other whitespace is still "the same body".

- Same key, same fingerprint, outcome known: the stored response again (same status, same bytes), and
  the work (validation, Kafka produce) is not done again.
- Same key, same fingerprint, first request still running: single-flight. The later requests await
  the first one's outcome instead of producing a second record, whatever that outcome is (a 503 too:
  they raced the same broker outage, and the bank retries them all later).
- Same key, other fingerprint: ExternalIdConflict (the endpoint answers 409xx00).

Only final outcomes are stored: status < 500. A 5xx/503 means "not recorded, retry", so the retry must
be processed again; authentication failures never reach the store (the caller authenticates first, and
an unauthenticated caller must not be able to occupy a bank's external id).

Bounded memory: entries of past WIB days are dropped as soon as a request of a later day arrives (an
X-EXTERNAL-ID is only unique within its day), and at most `max_entries` are kept, oldest evicted first.

This store lives in one process's memory. It spares the broker and the bank duplicate work, but it is
not what keeps a payment single: with several API replicas, after a restart, or after an eviction the
same notification can be produced again, and downstream deduplication by event id (UUIDv5 of bank +
paymentRequestId; the reconciler applies an event id once) is what guarantees a payment is credited once.

Not thread-safe: it is used from one asyncio event loop (one uvicorn worker), where a lookup and the
insert that follows it run without an await in between.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import date

from services.metrics import IDEMPOTENT_REPLAYS

__all__ = ["ExternalIdConflict", "IdempotencyKey", "IdempotencyStore", "Served", "StoredResponse"]

REPLAYED = "replayed"
CONFLICT = "conflict"


@dataclass(frozen=True, slots=True)
class IdempotencyKey:
    bank_id: str
    external_id: str
    day: date  # WIB calendar date of the received time


@dataclass(frozen=True, slots=True)
class StoredResponse:
    """A response as sent: status, exact body bytes, headers, and the reason code (for counting a replay)."""

    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()
    reason: str | None = None

    @property
    def final(self) -> bool:
        return self.status < 500


@dataclass(frozen=True, slots=True)
class Served:
    response: StoredResponse
    replayed: bool  # True when this request did not do the work itself


class ExternalIdConflict(Exception):
    """The external id was already used today by this bank for a different body."""


@dataclass(slots=True)
class _Entry:
    fingerprint: str
    # Exactly one of the two is set: the outcome, or the future the first request resolves.
    response: StoredResponse | None
    pending: asyncio.Future[StoredResponse | None] | None
    waiters: int = 0


class IdempotencyStore:
    def __init__(self, max_entries: int, *, api: str, endpoint: str) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be >= 1")
        self._max = max_entries
        self._api = api
        self._endpoint = endpoint
        self._entries: OrderedDict[IdempotencyKey, _Entry] = OrderedDict()  # oldest first
        self._day: date | None = None  # the latest WIB day seen

    def __len__(self) -> int:
        return len(self._entries)

    def waiting(self, key: IdempotencyKey) -> int:
        """How many requests are waiting for the first one with this key to finish (observability, tests)."""
        entry = self._entries.get(key)
        return entry.waiters if entry is not None else 0

    async def run(self, key: IdempotencyKey, fingerprint: str, work: Callable[[], Awaitable[StoredResponse]]) -> Served:
        """The response for this request: `work()`'s, or the one an identical earlier request got.

        Raises ExternalIdConflict when the key was used with another fingerprint.
        """
        while True:
            self._roll_day(key.day)
            entry = self._entries.get(key)
            if entry is None:
                return Served(await self._lead(key, fingerprint, work), replayed=False)
            if entry.fingerprint != fingerprint:
                self._count(CONFLICT)
                raise ExternalIdConflict
            if entry.response is not None:
                self._count(REPLAYED)
                return Served(entry.response, replayed=True)
            assert entry.pending is not None  # invariant of _Entry
            # shield: one waiter being cancelled must not cancel the future the others share.
            entry.waiters += 1
            try:
                outcome = await asyncio.shield(entry.pending)
            finally:
                entry.waiters -= 1
            if outcome is not None:
                self._count(REPLAYED)
                return Served(outcome, replayed=True)
            # The first request ended without an outcome (cancelled, or a bug): go round and do the work.

    async def _lead(
        self, key: IdempotencyKey, fingerprint: str, work: Callable[[], Awaitable[StoredResponse]]
    ) -> StoredResponse:
        future: asyncio.Future[StoredResponse | None] = asyncio.get_running_loop().create_future()
        entry = _Entry(fingerprint, None, future)
        while len(self._entries) >= self._max:
            self._entries.popitem(last=False)
        self._entries[key] = entry
        response: StoredResponse | None = None
        try:
            response = await work()
            return response
        finally:
            # Our entry may be gone meanwhile (evicted, or a later WIB day began): then keep nothing.
            if self._entries.get(key) is entry:
                if response is not None and response.final and key.day == self._day:
                    entry.response, entry.pending = response, None
                else:
                    del self._entries[key]
            future.set_result(response)

    def _roll_day(self, day: date) -> None:
        if self._day is not None and day <= self._day:
            return
        self._day = day
        # Once per WIB day: a full scan, because a request of the previous day may have been inserted late.
        for stale in [k for k in self._entries if k.day < day]:
            del self._entries[stale]

    def _count(self, outcome: str) -> None:
        IDEMPOTENT_REPLAYS.labels(self._api, self._endpoint, outcome).inc()
