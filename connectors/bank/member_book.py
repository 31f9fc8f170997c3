"""The bank API's read model of members.v1: what VA inquiry (and the payment endpoint) may know of a member.

`MemberBook` is pure and synchronous: customer number -> the latest version's `MemberView`. It keeps only
what a bank may be told (status, bill, paid amount, expiry, the display name, the credited payment ids);
never the NIK, passport, date of birth or the encrypted PII. A version lower than or equal to the one held is
ignored: compaction, redelivery and the reconciler re-emitting its current version make that normal.

`MemberBookReader` feeds it from Kafka (aiokafka, no consumer group: every partition of members.v1 assigned
and read from the beginning; offsets are never committed because the book is rebuilt on each start). It runs
beside the HTTP server and never blocks start-up or crashes it: every failure is logged by code and the
reader starts again with backoff, keeping what it has read.

Readiness: the book is ready once the reader has reached, on every partition, the end offset it saw when it
started. The embedded Tansu broker under-reports end offsets after batched writes (BENCHMARKS.md), so an end
offset is only a lower bound of what is there; and a broker that lost its data may report less than we
already hold. Reaching either that lower bound or the high-water mark of the latest fetch counts as caught up,
so the reader cannot wait forever for an offset that does not exist.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Literal

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from connectors.http_common import where_failed
from services.catalogue import MEMBERS
from services.config import Settings
from services.domain.dates import wib_date
from services.domain.models import MemberRecord, MemberStatus
from services.logs import event
from services.metrics import MEMBERS_BY_STATUS, READ_MODEL_MEMBERS, READ_MODEL_RECORDS

log = logging.getLogger(__name__)

MODEL = "bank_inquiry"
NAME_MAX = 255  # SNAP virtualAccountName

NameDisplay = Literal["FULL", "INITIALS"]

Decoder = Callable[[bytes], Awaitable[MemberRecord]]


class Refusal(StrEnum):
    """Why a VA has no payable bill; stable reason codes of the inquiry (and payment) refusals."""

    VA_NOT_FOUND = "VA_NOT_FOUND"
    BILL_PAID = "BILL_PAID"
    BILL_EXPIRED = "BILL_EXPIRED"


def display_name(full_name: str, mode: NameDisplay) -> str:
    """The member's name as a bank may show it to the payer.

    FULL: the full name uppercased, whitespace collapsed. INITIALS: the first word and the initial of each
    further word ("Siti Aminah" -> "SITI A."), for deployments where the full name is too much to disclose
    to whoever types a VA number. At most 255 characters (uppercasing can lengthen a name: "ß" -> "SS").
    """
    words = full_name.split()
    if not words:
        return ""
    if mode == "INITIALS":
        initials = [f"{c}." for c in (next((ch for ch in w if ch.isalnum()), "") for w in words[1:]) if c]
        words = [words[0], *initials]
    return " ".join(words).upper()[:NAME_MAX].rstrip()


@dataclass(frozen=True, slots=True)
class MemberView:
    customer_no: str
    version: int
    status: MemberStatus
    display_name: str
    bill_amount_idr: int
    paid_amount_idr: int
    bill_expires_on: date
    payment_event_ids: frozenset[str]

    @property
    def outstanding_idr(self) -> int:
        """What is still to pay, integer rupiah; an overpayment leaves nothing outstanding, not a credit."""
        return max(0, self.bill_amount_idr - self.paid_amount_idr)


@dataclass(frozen=True, slots=True)
class OpenBill:
    member: MemberView
    outstanding_idr: int


class MemberBook:
    """customer_no -> latest MemberView. Not thread-safe: used from one event loop."""

    def __init__(
        self,
        name_display: NameDisplay = "FULL",
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        model: str = MODEL,
    ) -> None:
        self.name_display: NameDisplay = name_display
        self.model = model
        self._clock = clock
        self._members: dict[str, MemberView] = {}
        # Kept as records arrive: recounting a large book after every batch would cost the API's event loop.
        self._by_status: dict[MemberStatus, int] = dict.fromkeys(MemberStatus, 0)
        self._ready = False

    # --- loading -----------------------------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        """True once the book holds everything members.v1 held when its reader started."""
        return self._ready

    def mark_ready(self) -> None:
        self._ready = True

    def apply(self, record: MemberRecord) -> bool:
        """Hold `record` if it is newer than what is held for its customer; True when it was applied."""
        held = self._members.get(record.customer_no)
        if held is not None and record.version <= held.version:
            return False
        if held is not None:
            self._by_status[held.status] -= 1
        self._by_status[record.status] += 1
        self._members[record.customer_no] = MemberView(
            customer_no=record.customer_no,
            version=record.version,
            status=record.status,
            display_name=display_name(record.full_name, self.name_display),
            bill_amount_idr=record.bill_amount_idr,
            paid_amount_idr=record.paid_amount_idr,
            bill_expires_on=record.bill_expires_on,
            payment_event_ids=frozenset(record.payment_event_ids),
        )
        return True

    def forget(self, customer_no: str) -> None:
        """A tombstone on the compacted topic: the member is gone."""
        held = self._members.pop(customer_no, None)
        if held is not None:
            self._by_status[held.status] -= 1

    def count_by_status(self) -> dict[MemberStatus, int]:
        """Members held per status, every status present (0 included)."""
        return dict(self._by_status)

    def __len__(self) -> int:
        return len(self._members)

    def get(self, customer_no: str) -> MemberView | None:
        return self._members.get(customer_no)

    # --- decisions -----------------------------------------------------------------------------------------
    def _refusal(self, member: MemberView) -> Refusal | None:
        if member.status in (MemberStatus.CANCELLED, MemberStatus.UNKNOWN):
            return Refusal.VA_NOT_FOUND
        if member.status in (MemberStatus.EXPIRED, MemberStatus.LAPSED_REREGISTER):
            return Refusal.BILL_EXPIRED
        if member.outstanding_idr == 0:
            return Refusal.BILL_PAID
        # bill_expires_on is the last WIB date the bill can be paid: a bank in any time zone asks about the
        # same business day as the reconciler.
        if member.status is MemberStatus.AWAITING_PAYMENT and wib_date(self._clock()) > member.bill_expires_on:
            return Refusal.BILL_EXPIRED
        return None

    def inquire(self, customer_no: str) -> OpenBill | Refusal:
        """The bill a bank may collect for this customer now, or why there is none."""
        member = self._members.get(customer_no)
        if member is None:
            return Refusal.VA_NOT_FOUND
        refusal = self._refusal(member)
        return refusal if refusal is not None else OpenBill(member, member.outstanding_idr)

    def payment_refusal(self, customer_no: str, payment_event_id: str) -> str | None:
        """Why a payment notification should be refused, or None to accept it.

        "BILL_PAID": the bill is fully paid and this payment is not one of those credited to it (a repeat of
        a credited payment is accepted again: the bank retries what it already sent). "BILL_EXPIRED": the
        bill can no longer be paid. An unknown customer is None: a payment may precede its enrollment, and
        the reconciler holds it until the enrollment arrives. Anything else (a cancelled member included) is
        None: the reconciler decides.
        """
        member = self._members.get(customer_no)
        if member is None or payment_event_id in member.payment_event_ids:
            return None
        refusal = self._refusal(member)
        if refusal in (Refusal.BILL_PAID, Refusal.BILL_EXPIRED):
            return refusal.value
        return None


# --- the Kafka reader ------------------------------------------------------------------------------------------
class TopicNotFound(Exception):
    """members.v1 has no partitions in the metadata yet (topics not created): retried like any failure."""


def codec_decoder(settings: Settings) -> Callable[[], Awaitable[Decoder]]:
    """A factory of the production decoder: the registry-backed Avro codec, built off the event loop."""

    async def build() -> Decoder:
        from services.codec import build_codec

        codec = await asyncio.to_thread(build_codec, settings)

        async def decode(value: bytes) -> MemberRecord:
            return await codec.decode_model_async(value, MemberRecord)

        return decode

    return build


class MemberBookReader:
    """Background task (connectors.bank.context.Background) that feeds a MemberBook from members.v1."""

    def __init__(
        self,
        settings: Settings,
        bootstrap: str,
        book: MemberBook,
        *,
        decoder: Callable[[], Awaitable[Decoder]] | None = None,
        topic: str = MEMBERS.name,
        client_id: str = "sinergi-bank-member-book",
        poll_timeout_ms: int = 500,
    ) -> None:
        self._settings = settings
        self._bootstrap = bootstrap
        self.book = book
        self._decoder_factory = decoder or codec_decoder(settings)
        self._topic = topic
        self._client_id = client_id
        self._poll_timeout_ms = poll_timeout_ms
        self._positions: dict[TopicPartition, int] = {}  # next offset to read, kept across reconnects
        self._targets: dict[TopicPartition, int] | None = None  # end offsets seen at start
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._assigned = False
        self.restarts = 0

    async def start(self) -> None:
        """Returns at once: the API serves (inquiry answers 503 until ready) while the book loads."""
        if self._task is None:
            self._stopping.clear()
            self._task = asyncio.create_task(self._run(), name="member-book-reader")

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
        decode: Decoder | None = None
        while not self._stopping.is_set():
            try:
                if decode is None:
                    decode = await self._decoder_factory()
                await self._consume(decode)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # never let the API process die of its read model
                self.restarts += 1
                if self._assigned:  # it worked until now: a fresh failure, not a long outage
                    delay, self._assigned = first_delay, False
                log.warning("member book reader restarting in %.1fs: %s", delay, where_failed(exc))
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

    async def _consume(self, decode: Decoder) -> None:
        consumer = self._consumer()
        await consumer.start()
        try:
            partitions = consumer.partitions_for_topic(self._topic)
            if not partitions:
                raise TopicNotFound(self._topic)
            tps = [TopicPartition(self._topic, p) for p in sorted(partitions)]
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
            event(log, "member book reader assigned", model=self.book.model, partitions=len(tps))
            while not self._stopping.is_set():
                batches = await consumer.getmany(timeout_ms=self._poll_timeout_ms, max_records=2000)
                for tp, records in batches.items():
                    await self._apply_all(decode, records)
                    self._positions[tp] = records[-1].offset + 1
                READ_MODEL_MEMBERS.labels(self.book.model).set(len(self.book))
                for status, count in self.book.count_by_status().items():
                    MEMBERS_BY_STATUS.labels(status.value).set(count)
                if not self.book.ready:
                    await self._check_caught_up(consumer, tps, idle=not batches)
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(consumer.stop(), 10.0)

    async def _apply_all(self, decode: Decoder, records: Iterable[ConsumerRecord[bytes, bytes]]) -> None:
        for rec in records:
            READ_MODEL_RECORDS.labels(self.book.model).inc()
            if rec.value is None:
                if rec.key:
                    self.book.forget(rec.key.decode("ascii", errors="replace"))
                continue
            try:
                member = await decode(rec.value)
            except Exception as exc:  # one bad record must not stop the book; its coordinates say which
                log.warning(
                    "member book skipped %s/%s@%s: %s", rec.topic, rec.partition, rec.offset, type(exc).__name__
                )
                continue
            self.book.apply(member)

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
        event(log, "member book ready", model=self.book.model, members=len(self.book), restarts=self.restarts)
