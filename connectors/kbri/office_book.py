"""The KBRI API's read model of the office topics: what member inquiry and the pull feed answer from.

`OfficeBook` is pure and synchronous. Per office it holds:
- the updates of `kbri.updates.<office>.v1` in offset order (the feed), at most `max_updates` of them (the
  oldest are dropped first; a cursor older than what is held gets 410 CURSOR_EXPIRED, and the office resyncs
  through inquiry). Each is held as its JSON document, not as a model: a validated OfficeUpdate costs about
  4.3 KB of memory against 0.7 KB for its JSON, and the feed serves the JSON as it is;
- the latest member view per customer number (the highest member version wins, whatever the order the
  topics are read in), with the office that owns it: a member whose newer version belongs to another office
  is no longer the first office's to see. The view is the same bytes as its update in the feed, parsed when
  an inquiry asks (about 6 µs), so a member costs the feed what it costs, not a model on top;
- an index passport lookup key -> customer number, from the `sinergi-lookup-passport` header that
  services/notify_kbri.py puts on member updates (a keyed hash: the hub never holds the passport number).

Every lookup is scoped to one office: another office's member is answered exactly like an unknown one.
An update whose `office` is not the topic's office is never held (and counted): the feed of one office can
only ever contain that office's updates, even if a producer misroutes one.

The feed cursor is the next offset to read, opaque to the office: base64url("v1:<offset>"). An office keeps
the `next` of a page only after processing it (at-least-once: a crash re-reads, and the update ids and
per-subject sequences let it drop what it already had). A cursor beyond what this process holds is not an
error: several API replicas may each be a few records apart; it simply gets an empty page.

`OfficeBookReader` feeds the book from Kafka like connectors/bank/member_book.py: aiokafka, no consumer
group, every office topic assigned and read from the beginning, positions kept across reconnects, failures
logged by code and retried with backoff, never crashing the API. The book is ready once every office topic
was read up to the end offset seen at start (or to the high-water mark of an idle fetch: the embedded broker
under-reports end offsets).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import bisect
import contextlib
import logging
import re
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from pydantic import ValidationError

from connectors.http_common import RETRY_AFTER_S, HttpProblem, where_failed
from services.catalogue import office_updates_topic
from services.config import Settings
from services.domain.errors import Rejected
from services.domain.identity import split_va
from services.domain.office_updates import H_LOOKUP_PASSPORT, MemberView, OfficeUpdate, UpdateType
from services.logs import event
from services.metrics import OFFICE_BOOK_SKIPPED, OFFICE_FEED_LAG, READ_MODEL_MEMBERS, READ_MODEL_RECORDS

log = logging.getLogger(__name__)

MODEL = "kbri_office_book"
READ_MODEL_NOT_READY = "READ_MODEL_NOT_READY"

CURSOR_VERSION = "v1"
_CURSOR_TEXT = re.compile(r"v1:(0|[1-9][0-9]{0,18})")
_CURSOR_CHARS = re.compile(r"[A-Za-z0-9_-]{1,40}")
_LOOKUP_KEY = re.compile(r"[0-9a-f]{64}")


class Skip(StrEnum):
    """Why a record of an office topic is not held (metric label)."""

    INVALID_UPDATE = "INVALID_UPDATE"
    WRONG_OFFICE = "WRONG_OFFICE"


class CursorInvalid(ValueError):
    """Not a cursor this API issued."""


class CursorExpired(Exception):
    """The cursor points before the oldest update still held: updates were dropped since it was issued."""


def encode_cursor(offset: int) -> str:
    if offset < 0:
        raise ValueError("offsets are never negative")
    return base64.urlsafe_b64encode(f"{CURSOR_VERSION}:{offset}".encode("ascii")).rstrip(b"=").decode("ascii")


def decode_cursor(cursor: str) -> int:
    """The offset in a cursor; CursorInvalid unless it is exactly what encode_cursor makes."""
    if _CURSOR_CHARS.fullmatch(cursor) is None:
        raise CursorInvalid("not a cursor")
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise CursorInvalid("not a cursor") from None
    match = _CURSOR_TEXT.fullmatch(text)
    if match is None:
        raise CursorInvalid("not a cursor")
    offset = int(match.group(1))
    if encode_cursor(offset) != cursor:  # one spelling per cursor: no aliases
        raise CursorInvalid("not a cursor")
    return offset


def not_ready_problem() -> HttpProblem:
    return HttpProblem(
        503,
        READ_MODEL_NOT_READY,
        "the office read model is still loading; retry later",
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )


@dataclass(frozen=True, slots=True)
class HeldMember:
    office: str
    version: int
    updated_at: datetime  # occurred_at of the update this view came from
    update_json: bytes  # that update's JSON document (a MEMBER_UPDATED, so it has a member)

    @property
    def view(self) -> MemberView:
        member = OfficeUpdate.model_validate_json(self.update_json).member
        assert member is not None  # only MEMBER_UPDATED updates with a member are held
        return member


@dataclass(frozen=True, slots=True)
class FeedPage:
    updates: tuple[bytes, ...]  # OfficeUpdate JSON documents, oldest first
    next: int
    has_more: bool

    def models(self) -> list[OfficeUpdate]:
        return [OfficeUpdate.model_validate_json(u) for u in self.updates]


class _OfficeLog:
    __slots__ = ("end", "floor", "last_cursor", "offsets", "updates")

    def __init__(self, max_updates: int) -> None:
        self.offsets: deque[int] = deque(maxlen=max_updates)
        self.updates: deque[bytes] = deque(maxlen=max_updates)  # OfficeUpdate JSON
        self.end = 0  # the offset after the newest record consumed (held or skipped)
        # Every offset >= floor is held or was skipped: a cursor below it has lost updates. None until the
        # first record: the topic's own start (retention) is learned from it.
        self.floor: int | None = None
        self.last_cursor: int | None = None  # what the office last confirmed: the lag reference


class OfficeBook:
    """Per-office feeds, the latest member views and the passport index. Used from one event loop."""

    def __init__(self, offices: Iterable[str], max_updates: int = 100_000, *, model: str = MODEL) -> None:
        if max_updates < 1:
            raise ValueError("max_updates must be at least 1")
        self.model = model
        self.max_updates = max_updates
        self._logs = {office: _OfficeLog(max_updates) for office in offices}
        self._members: dict[str, HeldMember] = {}
        self._by_passport: dict[str, str] = {}
        self._ready = False

    # --- loading ---------------------------------------------------------------------------------------------
    @property
    def offices(self) -> frozenset[str]:
        return frozenset(self._logs)

    @property
    def ready(self) -> bool:
        return self._ready

    def mark_ready(self) -> None:
        self._ready = True

    def __len__(self) -> int:
        return len(self._members)

    def end(self, office: str) -> int:
        return self._logs[office].end

    def _consume(self, office: str, offset: int) -> _OfficeLog | None:
        """The office's log if `offset` is new to it (a reconnect may hand back records already read)."""
        entry = self._logs.get(office)
        if entry is None or offset < entry.end:
            return None
        if entry.floor is None:
            entry.floor = offset
        entry.end = offset + 1
        return entry

    def skip(self, office: str, offset: int, reason: Skip) -> None:
        """A record of the office's topic that is not an update it may see: passed over, never served."""
        if self._consume(office, offset) is not None:
            OFFICE_BOOK_SKIPPED.labels(reason.value).inc()
            self._publish_lag(office)

    def apply(self, office: str, offset: int, update: OfficeUpdate, passport_key: str | None = None) -> bool:
        """Hold the update read at `offset` of `office`'s topic; False if already held or not the office's."""
        entry = self._consume(office, offset)
        if entry is None:
            return False
        if update.office != office:
            OFFICE_BOOK_SKIPPED.labels(Skip.WRONG_OFFICE.value).inc()
            self._publish_lag(office)
            return False
        if len(entry.offsets) == entry.offsets.maxlen:
            entry.floor = entry.offsets[0] + 1  # the oldest is about to be dropped
        document = update.model_dump_json().encode()  # a str's encode is exact-size (orjson's bytes are not)
        entry.offsets.append(offset)
        entry.updates.append(document)
        if update.type is UpdateType.MEMBER_UPDATED and update.member is not None:
            self._hold_member(office, update, document, passport_key)
        self._publish_lag(office)
        return True

    def _hold_member(self, office: str, update: OfficeUpdate, document: bytes, passport_key: str | None) -> None:
        assert update.member is not None
        customer_no = update.member.customer_no
        held = self._members.get(customer_no)
        if held is None or update.member.version > held.version:
            self._members[customer_no] = HeldMember(office, update.member.version, update.occurred_at, document)
            if passport_key is not None:
                self._by_passport[passport_key] = customer_no
        elif passport_key is not None:
            self._by_passport.setdefault(passport_key, customer_no)

    # --- the feed --------------------------------------------------------------------------------------------
    def page(self, office: str, after: int | None, limit: int) -> FeedPage:
        """Up to `limit` updates of `office` from offset `after` (None: from the oldest held).

        Raises CursorExpired when updates between `after` and the oldest held one were dropped. Records the
        cursor as the office's confirmed position (the feed lag metric).
        """
        if limit < 1:
            raise ValueError("limit must be at least 1")
        entry = self._logs.get(office)
        if entry is None:  # an office without a topic in offices.json has no updates
            return FeedPage((), after or 0, False)
        if after is not None and entry.floor is not None and after < entry.floor:
            raise CursorExpired(office)
        start = after if after is not None else (entry.floor if entry.floor is not None else entry.end)
        entry.last_cursor = start
        self._publish_lag(office)
        first = bisect.bisect_left(entry.offsets, start)
        stop = min(first + limit, len(entry.offsets))
        updates = tuple(entry.updates[i] for i in range(first, stop))
        if stop < len(entry.offsets):
            return FeedPage(updates, entry.offsets[stop], True)
        # Everything held was returned: skipped records after the last one need not be read again.
        return FeedPage(updates, max(start, entry.end), False)

    def lag(self, office: str) -> int | None:
        """Updates the office has not confirmed yet (None until it first reads its feed)."""
        entry = self._logs.get(office)
        if entry is None or entry.last_cursor is None:
            return None
        return max(0, entry.end - entry.last_cursor)

    def _publish_lag(self, office: str) -> None:
        lag = self.lag(office)
        if lag is not None:
            OFFICE_FEED_LAG.labels(office).set(lag)

    # --- member lookups (always scoped to the asking office) -------------------------------------------------
    def member(self, office: str, customer_no: str) -> HeldMember | None:
        held = self._members.get(customer_no)
        return held if held is not None and held.office == office else None

    def member_by_passport_key(self, office: str, lookup_key: str) -> HeldMember | None:
        customer_no = self._by_passport.get(lookup_key)
        return None if customer_no is None else self.member(office, customer_no)

    def member_by_va(self, office: str, virtual_account_no: str) -> HeldMember | None:
        """The member whose bill names exactly this VA number (at any partner bank)."""
        try:
            _psid, customer_no = split_va(virtual_account_no)
        except Rejected:
            return None
        held = self.member(office, customer_no)
        if held is None or virtual_account_no not in held.view.bill.virtual_accounts.values():
            return None
        return held


# --- the Kafka reader ----------------------------------------------------------------------------------------
class TopicNotFound(Exception):
    """An office topic is not in the metadata yet (topics not created): retried like any failure."""


class TopicLayoutError(Exception):
    """An office topic has more than one partition: its offsets would not be one cursor. Never served."""


def passport_key_of(headers: Sequence[tuple[str, bytes]] | None) -> str | None:
    for name, value in headers or ():
        if name == H_LOOKUP_PASSPORT and value is not None:
            text = value.decode("ascii", errors="replace")
            return text if _LOOKUP_KEY.fullmatch(text) else None
    return None


class OfficeBookReader:
    """Background task (connectors.bank.context.Background) that feeds an OfficeBook from the office topics."""

    def __init__(
        self,
        settings: Settings,
        bootstrap: str,
        book: OfficeBook,
        *,
        client_id: str = "sinergi-kbri-office-book",
        poll_timeout_ms: int = 500,
    ) -> None:
        self._settings = settings
        self._bootstrap = bootstrap
        self.book = book
        self._topics = {office_updates_topic(office): office for office in sorted(book.offices)}
        self._client_id = client_id
        self._poll_timeout_ms = poll_timeout_ms
        self._positions: dict[TopicPartition, int] = {}  # next offset to read, kept across reconnects
        self._targets: dict[TopicPartition, int] | None = None  # end offsets seen at start
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._assigned = False
        self.restarts = 0

    async def start(self) -> None:
        """Returns at once: the API serves (inquiry and feed answer 503 until ready) while the book loads."""
        if self._task is None:
            self._stopping.clear()
            self._task = asyncio.create_task(self._run(), name="office-book-reader")

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping.set()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task

    async def _run(self) -> None:
        first_delay = min(0.5, self._settings.read_model_retry_max_s)
        delay = first_delay
        while not self._stopping.is_set():
            try:
                await self._consume()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # never let the API process die of its read model
                self.restarts += 1
                if self._assigned:  # it worked until now: a fresh failure, not a long outage
                    delay, self._assigned = first_delay, False
                log.warning("office book reader restarting in %.1fs: %s", delay, where_failed(exc))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), delay)
                delay = min(delay * 2, self._settings.read_model_retry_max_s)

    def _consumer(self) -> AIOKafkaConsumer:
        return AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap,
            client_id=self._client_id,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=self._settings.consumer_fetch_max_wait_ms,
        )

    def _partitions(self, consumer: AIOKafkaConsumer) -> list[TopicPartition]:
        tps = []
        missing = 0
        for topic in self._topics:
            partitions = consumer.partitions_for_topic(topic)
            if not partitions:
                missing += 1
                continue
            if partitions != {0}:
                raise TopicLayoutError(f"{topic} has {len(partitions)} partitions; an office topic has 1")
            tps.append(TopicPartition(topic, 0))
        if missing:
            raise TopicNotFound(f"{missing} office topic(s) missing; run `sinergi topics create`")
        return tps

    async def _consume(self) -> None:
        consumer = self._consumer()
        await consumer.start()
        try:
            tps = self._partitions(consumer)
            consumer.assign(tps)
            fresh = [tp for tp in tps if tp not in self._positions]
            for tp in tps:
                if tp in self._positions:
                    consumer.seek(tp, self._positions[tp])
            if fresh:
                await consumer.seek_to_beginning(*fresh)
            if not self.book.ready and self._targets is None:
                self._targets = await consumer.end_offsets(tps)
            self._assigned = True
            event(log, "office book reader assigned", model=self.book.model, topics=len(tps))
            while not self._stopping.is_set():
                batches = await consumer.getmany(timeout_ms=self._poll_timeout_ms, max_records=2000)
                for tp, records in batches.items():
                    self._apply_all(self._topics[tp.topic], records)
                    self._positions[tp] = records[-1].offset + 1
                READ_MODEL_MEMBERS.labels(self.book.model).set(len(self.book))
                if not self.book.ready:
                    await self._check_caught_up(consumer, tps, idle=not batches)
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(consumer.stop(), 10.0)

    def _apply_all(self, office: str, records: Iterable[ConsumerRecord[bytes, bytes]]) -> None:
        for rec in records:
            READ_MODEL_RECORDS.labels(self.book.model).inc()
            try:
                if rec.value is None:
                    raise ValueError("no value")
                update = OfficeUpdate.model_validate_json(rec.value)
            except (ValidationError, ValueError) as exc:  # one bad record must not stop the book
                log.warning(
                    "office book skipped %s/%s@%s: %s", rec.topic, rec.partition, rec.offset, type(exc).__name__
                )
                self.book.skip(office, rec.offset, Skip.INVALID_UPDATE)
                continue
            if not self.book.apply(office, rec.offset, update, passport_key_of(rec.headers)):
                if update.office != office:
                    log.error("office book: an update for another office on %s@%s", rec.topic, rec.offset)

    async def _check_caught_up(self, consumer: AIOKafkaConsumer, tps: list[TopicPartition], *, idle: bool) -> None:
        targets = self._targets or {}
        for tp in tps:
            position = await consumer.position(tp)
            if position >= targets.get(tp, 0):
                continue
            highwater = consumer.highwater(tp)
            if idle and highwater is not None and position >= highwater:
                continue  # nothing more to read than the broker has: fewer records than at start
            return
        self.book.mark_ready()
        event(log, "office book ready", model=self.book.model, members=len(self.book), restarts=self.restarts)
