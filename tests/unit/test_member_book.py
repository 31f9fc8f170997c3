"""MemberBook: the bank API's read model of members.v1 (pure, no Kafka)."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from datetime import UTC, date, datetime
from typing import Any

import pytest

from connectors.bank.inquiry import rupiah
from connectors.bank.member_book import MemberBook, MemberBookReader, OpenBill, Refusal, display_name
from services.config import Settings
from services.domain.models import MemberRecord, MemberStatus, ParticipantType, Program, Sex

CUSTOMER = "123456789012345678"
NIK = "3201011203900001"
PAY_1 = "4b0f5c1e-0000-5000-8000-000000000001"


def record(version: int = 1, **overrides: Any) -> MemberRecord:
    fields: dict[str, Any] = {
        "record_id": f"{CUSTOMER}:{version}",
        "participant_id": CUSTOMER,
        "version": version,
        "status": MemberStatus.AWAITING_PAYMENT,
        "office_code": "KBRI_KUALA_LUMPUR",
        "full_name": "Siti Aminah",
        "pii_encrypted": f'{{"nik": "{NIK}", "passport_number": "C1234567"}}'.encode(),
        "date_of_birth": date(1990, 3, 12),
        "sex": Sex.F,
        "participant_type": ParticipantType.PLACED,
        "destination_country": "MY",
        "programs": [Program.JKK, Program.JKM],
        "customer_no": CUSTOMER,
        "bill_amount_idr": 370_000,
        "paid_amount_idr": 0,
        "bill_issued_at": datetime(2026, 11, 1, 3, 0, tzinfo=UTC),
        "bill_expires_on": date(2026, 12, 1),
        "enrollment_event_id": "e-1",
        "payment_event_ids": [],
        "caused_by_event_id": "e-1",
        "updated_at": datetime(2026, 11, 1, 3, 0, tzinfo=UTC),
    }
    fields.update(overrides)
    return MemberRecord(**fields)


def book_at(now: datetime, name_display: Any = "FULL") -> MemberBook:
    return MemberBook(name_display, clock=lambda: now)


NOV_25 = datetime(2026, 11, 25, 3, 0, tzinfo=UTC)


# --- versions ------------------------------------------------------------------------------------------
def test_a_newer_version_replaces_the_held_one() -> None:
    book = book_at(NOV_25)
    assert book.apply(record(1))
    assert book.apply(record(2, paid_amount_idr=100_000))
    held = book.get(CUSTOMER)
    assert held is not None and held.version == 2 and held.paid_amount_idr == 100_000
    assert len(book) == 1


@pytest.mark.parametrize("stale", [1, 2])
def test_a_lower_or_equal_version_is_ignored(stale: int) -> None:
    book = book_at(NOV_25)
    book.apply(record(2, status=MemberStatus.ACTIVE, paid_amount_idr=370_000, payment_event_ids=[PAY_1]))
    assert not book.apply(record(stale, paid_amount_idr=0))
    held = book.get(CUSTOMER)
    assert held is not None and held.version == 2 and held.status is MemberStatus.ACTIVE


def test_versions_out_of_order_end_at_the_highest() -> None:
    book = book_at(NOV_25)
    for v in (3, 1, 5, 4, 2):
        book.apply(record(v, paid_amount_idr=v * 1000))
    held = book.get(CUSTOMER)
    assert held is not None and (held.version, held.paid_amount_idr) == (5, 5000)


def test_members_are_kept_per_customer_and_a_tombstone_forgets_one() -> None:
    book = book_at(NOV_25)
    other = "876543210987654321"
    book.apply(record(1))
    book.apply(record(1, customer_no=other, participant_id=other, record_id=f"{other}:1"))
    assert len(book) == 2
    book.forget(CUSTOMER)
    assert book.get(CUSTOMER) is None and book.get(other) is not None
    assert book.inquire(CUSTOMER) is Refusal.VA_NOT_FOUND


def test_the_view_keeps_no_personal_field_beyond_the_display_name() -> None:
    book = book_at(NOV_25)
    book.apply(record(1))
    held = book.get(CUSTOMER)
    assert held is not None
    names = {f.name for f in dataclasses.fields(held)}
    assert names.isdisjoint({"pii_encrypted", "date_of_birth", "sex", "office_code", "full_name"})
    assert NIK not in repr(held) and "1990" not in repr(held)


def test_readiness_is_set_by_the_loader_only() -> None:
    book = book_at(NOV_25)
    book.apply(record(1))
    assert not book.ready
    book.mark_ready()
    assert book.ready


# --- statuses and amounts -------------------------------------------------------------------------------------
def test_awaiting_payment_answers_the_whole_bill() -> None:
    book = book_at(NOV_25)
    book.apply(record(1))
    result = book.inquire(CUSTOMER)
    assert isinstance(result, OpenBill)
    assert result.outstanding_idr == 370_000
    assert result.member.display_name == "SITI AMINAH"


def test_a_partial_payment_leaves_the_rest_outstanding() -> None:
    book = book_at(NOV_25)
    book.apply(record(2, paid_amount_idr=120_001, payment_event_ids=[PAY_1]))
    result = book.inquire(CUSTOMER)
    assert isinstance(result, OpenBill) and result.outstanding_idr == 249_999


def test_unknown_customer_is_va_not_found() -> None:
    assert book_at(NOV_25).inquire(CUSTOMER) is Refusal.VA_NOT_FOUND


@pytest.mark.parametrize(
    ("status", "paid", "expected"),
    [
        (MemberStatus.ACTIVE, 370_000, Refusal.BILL_PAID),
        (MemberStatus.ACTIVE, 400_000, Refusal.BILL_PAID),  # overpaid: nothing outstanding, no negative bill
        (MemberStatus.EXPIRED, 0, Refusal.BILL_EXPIRED),
        (MemberStatus.LAPSED_REREGISTER, 0, Refusal.BILL_EXPIRED),
        (MemberStatus.CANCELLED, 0, Refusal.VA_NOT_FOUND),
        (MemberStatus.CANCELLED, 370_000, Refusal.VA_NOT_FOUND),
        (MemberStatus.UNKNOWN, 0, Refusal.VA_NOT_FOUND),
    ],
)
def test_statuses_without_a_payable_bill(status: MemberStatus, paid: int, expected: Refusal) -> None:
    book = book_at(NOV_25)
    book.apply(record(3, status=status, paid_amount_idr=paid))
    assert book.inquire(CUSTOMER) is expected


# --- expiry by WIB date ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("now", "expired"),
    [
        (datetime(2026, 12, 1, 16, 59, 59, tzinfo=UTC), False),  # 23:59:59 WIB on the last day
        (datetime(2026, 12, 1, 17, 0, 0, tzinfo=UTC), True),  # 00:00 WIB the next day, still 1 Dec in UTC
        (datetime(2026, 11, 30, 23, 0, 0, tzinfo=UTC), False),
    ],
)
def test_an_awaiting_bill_expires_after_its_last_wib_date(now: datetime, expired: bool) -> None:
    book = book_at(now)
    book.apply(record(1, bill_expires_on=date(2026, 12, 1)))
    result = book.inquire(CUSTOMER)
    if expired:
        assert result is Refusal.BILL_EXPIRED
    else:
        assert isinstance(result, OpenBill)


def test_a_paid_bill_past_its_date_is_paid_not_expired() -> None:
    book = book_at(datetime(2027, 6, 1, tzinfo=UTC))
    book.apply(record(2, status=MemberStatus.ACTIVE, paid_amount_idr=370_000, bill_expires_on=date(2026, 12, 1)))
    assert book.inquire(CUSTOMER) is Refusal.BILL_PAID


# --- payment_refusal ------------------------------------------------------------------------------------------
def test_payment_refusal_for_an_unknown_customer_is_none() -> None:
    assert book_at(NOV_25).payment_refusal(CUSTOMER, PAY_1) is None


def test_payment_refusal_on_a_paid_bill_spares_the_payments_it_credited() -> None:
    book = book_at(NOV_25)
    book.apply(record(2, status=MemberStatus.ACTIVE, paid_amount_idr=370_000, payment_event_ids=[PAY_1]))
    assert book.payment_refusal(CUSTOMER, PAY_1) is None  # the bank retrying a credited payment
    assert book.payment_refusal(CUSTOMER, "another-payment") == "BILL_PAID"


def test_payment_refusal_on_an_open_bill_is_none() -> None:
    book = book_at(NOV_25)
    book.apply(record(2, paid_amount_idr=100_000, payment_event_ids=[PAY_1]))
    assert book.payment_refusal(CUSTOMER, "instalment-2") is None


@pytest.mark.parametrize(
    ("status", "now"),
    [
        (MemberStatus.AWAITING_PAYMENT, datetime(2026, 12, 1, 17, 0, tzinfo=UTC)),
        (MemberStatus.EXPIRED, NOV_25),
        (MemberStatus.LAPSED_REREGISTER, NOV_25),
    ],
)
def test_payment_refusal_on_an_expired_bill(status: MemberStatus, now: datetime) -> None:
    book = book_at(now)
    book.apply(record(2, status=status, bill_expires_on=date(2026, 12, 1)))
    assert book.payment_refusal(CUSTOMER, "late-payment") == "BILL_EXPIRED"


def test_payment_refusal_on_a_cancelled_member_is_left_to_the_reconciler() -> None:
    book = book_at(NOV_25)
    book.apply(record(2, status=MemberStatus.CANCELLED))
    assert book.payment_refusal(CUSTOMER, "p") is None


# --- name display ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("full_name", "mode", "shown"),
    [
        ("Siti Aminah", "FULL", "SITI AMINAH"),
        ("  Siti   Aminah ", "FULL", "SITI AMINAH"),
        ("Siti Aminah", "INITIALS", "SITI A."),
        ("Muhammad Rizky Pratama", "INITIALS", "MUHAMMAD R. P."),
        ("Budi", "INITIALS", "BUDI"),
        ("Siti 'Ani' Aminah", "INITIALS", "SITI A. A."),
        ("Ni Luh - Putu", "INITIALS", "NI L. P."),
        ("straße", "FULL", "STRASSE"),
        ("", "FULL", ""),
    ],
)
def test_display_name(full_name: str, mode: Any, shown: str) -> None:
    assert display_name(full_name, mode) == shown


def test_display_name_is_capped_at_255_characters() -> None:
    shown = display_name("A" * 200 + " " + "B" * 200, "FULL")
    assert len(shown) == 255 and shown.startswith("A" * 200 + " B")


def test_the_book_stores_the_configured_display_only() -> None:
    book = book_at(NOV_25, "INITIALS")
    book.apply(record(1))
    held = book.get(CUSTOMER)
    assert held is not None and held.display_name == "SITI A."
    assert "AMINAH" not in repr(held).upper()


# --- amount strings -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("idr", "text"), [(370_000, "370000.00"), (1, "1.00"), (0, "0.00"), (10**15, f"{10**15}.00")])
def test_rupiah_strings_have_exactly_two_decimals(idr: int, text: str) -> None:
    assert rupiah(idr) == text


@pytest.mark.parametrize("bad", [-1, 1.5, True, "370000"])
def test_rupiah_refuses_anything_but_a_non_negative_int(bad: Any) -> None:
    with pytest.raises(ValueError):
        rupiah(bad)


# --- the reader, over a scripted consumer (no broker) -------------------------------------------------------------
class _Rec:
    def __init__(self, partition: int, offset: int, key: bytes | None, value: bytes | None) -> None:
        self.topic, self.partition, self.offset, self.key, self.value = "members.v1", partition, offset, key, value


class FakeConsumer:
    """Enough of AIOKafkaConsumer: `log` per partition; `end` is what end_offsets reports (may lie)."""

    def __init__(self, log: dict[int, list[_Rec]], end: dict[int, int], fail_after_polls: int | None = None) -> None:
        self.log, self.end, self.fail_after_polls = log, end, fail_after_polls
        self.pos: dict[Any, int] = {}
        self.seeks: list[tuple[int, int]] = []
        self.polls = 0
        self.started = self.stopped = False

    async def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        self.stopped = True

    def partitions_for_topic(self, topic: str) -> set[int]:
        return set(self.log)

    def assign(self, tps: list[Any]) -> None:
        for tp in tps:
            self.pos.setdefault(tp, 0)

    def seek(self, tp: Any, offset: int) -> None:
        self.seeks.append((tp.partition, offset))
        self.pos[tp] = offset

    async def seek_to_beginning(self, *tps: Any) -> None:
        for tp in tps:
            self.pos[tp] = 0

    async def end_offsets(self, tps: list[Any]) -> dict[Any, int]:
        return {tp: self.end[tp.partition] for tp in tps}

    async def position(self, tp: Any) -> int:
        return self.pos[tp]

    def highwater(self, tp: Any) -> int:
        return len(self.log[tp.partition])

    async def getmany(self, timeout_ms: int, max_records: int) -> dict[Any, list[_Rec]]:
        self.polls += 1
        if self.fail_after_polls is not None and self.polls > self.fail_after_polls:
            self.fail_after_polls = None
            raise ConnectionError("broker went away")
        out: dict[Any, list[_Rec]] = {}
        for tp, at in self.pos.items():
            batch = self.log[tp.partition][at : at + 2]  # small batches: several polls to catch up
            if batch:
                out[tp] = batch
                self.pos[tp] = batch[-1].offset + 1
        if not out:
            await asyncio.sleep(0)  # yield like a real fetch wait
        return out


def _encoded(rec: MemberRecord) -> bytes:
    return rec.model_dump_json().encode()


async def _decode(value: bytes) -> MemberRecord:
    return MemberRecord.model_validate_json(value)


async def _decoder() -> Any:
    return _decode


def _reader(book: MemberBook, consumers: list[FakeConsumer]) -> Any:
    class Scripted(MemberBookReader):
        def _consumer(self) -> Any:
            return consumers.pop(0)

    return Scripted(Settings(read_model_retry_max_s=0.01), "127.0.0.1:1", book, decoder=_decoder)


async def _until(condition: Any, what: str) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached: {what}")
        await asyncio.sleep(0.001)


def _member_log(n: int) -> list[_Rec]:
    out = []
    for i in range(n):
        cust = f"{i:018d}"
        rec = record(1, customer_no=cust, participant_id=cust, record_id=f"{cust}:1")
        out.append(_Rec(0, i, cust.encode(), _encoded(rec)))
    return out


async def test_reader_is_ready_once_it_reached_the_end_offsets_seen_at_start() -> None:
    book = book_at(NOV_25)
    consumer = FakeConsumer({0: _member_log(5), 1: []}, end={0: 5, 1: 0})
    reader = _reader(book, [consumer])
    await reader.start()  # returns at once: the book loads in the background
    try:
        await _until(lambda: book.ready, "ready")
        assert len(book) == 5
    finally:
        await reader.close()
    assert consumer.stopped


async def test_reader_is_not_ready_before_the_end_offset_and_an_under_reported_end_is_a_lower_bound() -> None:
    book = book_at(NOV_25)
    # Tansu under-reports: the end says 3 though 6 records are readable; the reader goes on reading past it.
    consumer = FakeConsumer({0: _member_log(6)}, end={0: 3})
    reader = _reader(book, [consumer])
    await reader.start()
    try:
        await _until(lambda: book.ready, "ready")
        assert len(book) >= 3  # never ready before the lower bound
        await _until(lambda: len(book) == 6, "every record read")
    finally:
        await reader.close()


async def test_reader_does_not_wait_forever_for_an_end_offset_that_no_longer_exists() -> None:
    book = book_at(NOV_25)
    # The broker reported 10 at start, then lost data: 4 records are all there is.
    consumer = FakeConsumer({0: _member_log(4)}, end={0: 10})
    reader = _reader(book, [consumer])
    await reader.start()
    try:
        await _until(lambda: book.ready, "ready after reading all there is")
        assert len(book) == 4
    finally:
        await reader.close()


async def test_reader_skips_an_undecodable_record_and_applies_tombstones() -> None:
    book = book_at(NOV_25)
    log = _member_log(3)
    log.append(_Rec(0, 3, b"x", b"\x00garbage"))
    log.append(_Rec(0, 4, log[0].key, None))  # tombstone for the first member
    consumer = FakeConsumer({0: log}, end={0: 5})
    reader = _reader(book, [consumer])
    await reader.start()
    try:
        await _until(lambda: book.ready, "ready")
        assert len(book) == 2 and book.get(f"{0:018d}") is None
    finally:
        await reader.close()


async def test_reader_survives_a_failure_and_resumes_where_it_was() -> None:
    book = book_at(NOV_25)
    log = _member_log(6)
    first = FakeConsumer({0: log}, end={0: 6}, fail_after_polls=1)  # dies after one batch of 2
    second = FakeConsumer({0: log}, end={0: 6})
    reader = _reader(book, [first, second])
    await reader.start()
    try:
        await _until(lambda: book.ready, "ready after a restart")
        assert reader.restarts == 1 and first.stopped
        assert len(book) == 6
        # The second consumer was positioned after what the first had read, not at the beginning.
        assert first.seeks == [] and second.seeks == [(0, 2)]
    finally:
        await reader.close()
