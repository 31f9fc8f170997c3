"""OfficeBook: the KBRI API's read model of the office topics (pure), its cursor, and its reader (scripted)."""

from __future__ import annotations

import asyncio
import base64
import gc
import time
import tracemalloc
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from prometheus_client import REGISTRY

from connectors.kbri.office_book import (
    CursorExpired,
    CursorInvalid,
    OfficeBook,
    OfficeBookReader,
    Skip,
    TopicLayoutError,
    decode_cursor,
    encode_cursor,
    passport_key_of,
)
from services.config import Settings
from services.domain.identity import compose_va, passport_lookup_key
from services.domain.office_updates import (
    H_LOOKUP_PASSPORT,
    BillView,
    CaseView,
    CoverageView,
    MemberView,
    OfficeUpdate,
    UpdateType,
    update_id,
)

KL, JB = "KBRI_KUALA_LUMPUR", "KJRI_JOHOR_BAHRU"
CUST_A, CUST_B = "111111111111111111", "222222222222222222"
T0 = datetime(2026, 11, 1, 3, 0, tzinfo=UTC)
SECRET = b"test-participant-secret"


def member_update(office: str, customer_no: str, version: int, status: str = "AWAITING_PAYMENT") -> OfficeUpdate:
    paid = 370_000 if status == "ACTIVE" else 0
    view = MemberView(
        customer_no=customer_no,
        nik_masked="************0001",
        full_name="Siti Aminah",
        status=status,
        version=version,
        bill=BillView(
            amount_idr=370_000,
            paid_idr=paid,
            outstanding_idr=370_000 - paid,
            expires_on=date(2026, 12, 1),
            virtual_accounts={
                "MANDIRI": compose_va("   88001", customer_no),
                "BNI": compose_va("   88002", customer_no),
            },
        ),
        coverage=CoverageView(start=date(2027, 1, 10), end=date(2029, 1, 31)) if status == "ACTIVE" else CoverageView(),
        payments_credited=1 if paid else 0,
        enrollment_event_id="e-1",
    )
    return OfficeUpdate(
        update_id=update_id(office, UpdateType.MEMBER_UPDATED, f"{customer_no}:{version}"),
        type=UpdateType.MEMBER_UPDATED,
        office=office,
        subject=customer_no,
        sequence=version,
        occurred_at=T0 + timedelta(minutes=version),
        member=view,
    )


def case_update(office: str, case_id: str, version: int) -> OfficeUpdate:
    return OfficeUpdate(
        update_id=update_id(office, UpdateType.CASE_UPDATED, f"{case_id}:{version}"),
        type=UpdateType.CASE_UPDATED,
        office=office,
        subject=case_id,
        sequence=version,
        occurred_at=T0,
        case=CaseView(case_id=case_id, status="RECEIVED", version=version),
    )


def book_with(*entries: tuple[str, int, OfficeUpdate], max_updates: int = 100) -> OfficeBook:
    book = OfficeBook([KL, JB], max_updates)
    for office, offset, update in entries:
        book.apply(office, offset, update)
    return book


def _metric(name: str, **labels: str) -> float:
    value = REGISTRY.get_sample_value(name, labels)
    return 0.0 if value is None else value


# --- the cursor ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("offset", [0, 1, 42, 10**18, 2**63 - 1])
def test_cursor_round_trips_and_is_url_safe(offset: int) -> None:
    cursor = encode_cursor(offset)
    assert decode_cursor(cursor) == offset
    assert cursor.replace("-", "").replace("_", "").isalnum()  # no +, /, = to escape in a query string


def test_cursor_is_base64_of_a_versioned_offset() -> None:
    assert base64.urlsafe_b64decode(encode_cursor(7) + "==") == b"v1:7"


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "7",
        "not a cursor",
        base64.urlsafe_b64encode(b"v2:7").decode().rstrip("="),  # unknown version
        base64.urlsafe_b64encode(b"v1:-1").decode().rstrip("="),
        base64.urlsafe_b64encode(b"v1:007").decode().rstrip("="),  # an alias of 7
        base64.urlsafe_b64encode(b"v1:7").decode(),  # padded: another spelling of the same cursor
        base64.urlsafe_b64encode(b"v1:99999999999999999999").decode().rstrip("="),  # > 19 digits
        base64.urlsafe_b64encode(b"\xff\xfe").decode().rstrip("="),
        "A" * 41,
    ],
)
def test_a_malformed_cursor_is_invalid(bad: str) -> None:
    with pytest.raises(CursorInvalid):
        decode_cursor(bad)


# --- the feed: order, paging, bounds -----------------------------------------------------------------------------
def test_the_feed_is_the_office_topic_in_offset_order_paged_by_limit() -> None:
    updates = [member_update(KL, CUST_A, v) for v in range(1, 6)]
    book = book_with(*((KL, offset, u) for offset, u in enumerate(updates)))

    first = book.page(KL, None, 2)
    assert [u.sequence for u in first.models()] == [1, 2] and first.has_more and first.next == 2
    second = book.page(KL, first.next, 2)
    assert [u.sequence for u in second.models()] == [3, 4] and second.has_more
    last = book.page(KL, second.next, 2)
    assert [u.sequence for u in last.models()] == [5] and not last.has_more and last.next == 5
    # Nothing new: the same cursor again, an empty page.
    idle = book.page(KL, last.next, 2)
    assert idle.updates == () and idle.next == 5 and not idle.has_more


def test_a_record_read_again_after_a_reconnect_is_held_once() -> None:
    book = book_with((KL, 0, member_update(KL, CUST_A, 1)), (KL, 1, member_update(KL, CUST_A, 2)))
    assert not book.apply(KL, 1, member_update(KL, CUST_A, 2))
    assert not book.apply(KL, 0, member_update(KL, CUST_A, 1))
    assert [u.sequence for u in book.page(KL, None, 10).models()] == [1, 2]


def test_the_feed_is_bounded_and_an_older_cursor_expired() -> None:
    book = book_with(*((KL, i, member_update(KL, CUST_A, i + 1)) for i in range(10)), max_updates=4)
    page = book.page(KL, None, 100)
    assert [u.sequence for u in page.models()] == [7, 8, 9, 10]  # the newest 4 of 10
    assert book.page(KL, 6, 100).updates == page.updates  # the oldest held is still reachable
    with pytest.raises(CursorExpired):
        book.page(KL, 5, 100)  # offset 5 was dropped: the office would silently miss it
    with pytest.raises(CursorExpired):
        book.page(KL, 0, 100)


def test_a_topic_whose_beginning_was_deleted_expires_older_cursors() -> None:
    # Retention removed offsets 0..99: the first record read is at 100.
    book = book_with((KL, 100, member_update(KL, CUST_A, 1)))
    assert [u.sequence for u in book.page(KL, 100, 10).models()] == [1]
    with pytest.raises(CursorExpired):
        book.page(KL, 99, 10)


def test_a_cursor_ahead_of_this_process_is_an_empty_page_not_an_error() -> None:
    # Another API replica has read further: its cursor is answered "nothing new yet", and kept.
    book = book_with((KL, 0, member_update(KL, CUST_A, 1)))
    page = book.page(KL, 50, 10)
    assert page.updates == () and page.next == 50 and not page.has_more


def test_skipped_records_are_passed_over_and_never_served() -> None:
    book = OfficeBook([KL, JB], 100)
    book.apply(KL, 0, member_update(KL, CUST_A, 1))
    book.skip(KL, 1, Skip.INVALID_UPDATE)
    book.apply(KL, 2, member_update(KL, CUST_A, 2))
    book.skip(KL, 3, Skip.INVALID_UPDATE)
    page = book.page(KL, 1, 10)
    assert [u.sequence for u in page.models()] == [2]
    assert page.next == 4  # past the trailing skipped record too
    first = book.page(KL, 0, 1)
    assert [u.sequence for u in first.models()] == [1] and first.has_more
    assert first.next == 2  # more to come: the next held update, the skipped one in between passed over


def test_an_empty_office_starts_at_zero() -> None:
    page = OfficeBook([KL], 10).page(KL, None, 10)
    assert page.updates == () and page.next == 0 and not page.has_more


def test_an_office_without_a_topic_has_no_updates() -> None:
    page = OfficeBook([KL], 10).page("KDEI_TAIPEI", None, 10)
    assert page.updates == () and not page.has_more


# --- isolation by office ------------------------------------------------------------------------------------------
def test_each_office_reads_only_its_own_topic() -> None:
    book = book_with(
        (KL, 0, member_update(KL, CUST_A, 1)),
        (JB, 0, member_update(JB, CUST_B, 1)),
        (JB, 1, case_update(JB, "jb-case-1", 1)),
    )
    assert {u.office for u in book.page(KL, None, 10).models()} == {KL}
    assert [u.subject for u in book.page(JB, None, 10).models()] == [CUST_B, "jb-case-1"]


def test_an_update_for_another_office_on_an_office_topic_is_never_held() -> None:
    before = _metric("sinergi_office_book_skipped_total", reason="WRONG_OFFICE")
    book = OfficeBook([KL, JB], 100)
    assert not book.apply(KL, 0, member_update(JB, CUST_B, 1))  # misrouted onto KL's topic
    assert book.page(KL, None, 10).updates == ()
    assert book.member(KL, CUST_B) is None and book.member(JB, CUST_B) is None
    assert book.page(KL, 0, 10).next == 1  # a cursor moves past it
    assert _metric("sinergi_office_book_skipped_total", reason="WRONG_OFFICE") == before + 1


def test_member_lookups_are_scoped_to_the_owning_office() -> None:
    passport_key = passport_lookup_key("C1234567", SECRET)
    book = OfficeBook([KL, JB], 100)
    book.apply(JB, 0, member_update(JB, CUST_B, 1), passport_key)
    va = compose_va("   88001", CUST_B)

    assert book.member(JB, CUST_B) is not None
    assert book.member_by_passport_key(JB, passport_key) is not None
    assert book.member_by_va(JB, va) is not None
    # Office KL asks for JB's member in every way: nothing, like an unknown member.
    assert book.member(KL, CUST_B) is None
    assert book.member_by_passport_key(KL, passport_key) is None
    assert book.member_by_va(KL, va) is None


def test_a_va_must_be_one_of_the_bill_s_own_numbers() -> None:
    book = book_with((KL, 0, member_update(KL, CUST_A, 1)))
    assert book.member_by_va(KL, compose_va("   88002", CUST_A)) is not None
    assert book.member_by_va(KL, compose_va("   99999", CUST_A)) is None  # right customer, no such bank
    assert book.member_by_va(KL, "garbage") is None


# --- member views ------------------------------------------------------------------------------------------------
def test_the_latest_member_version_wins_whatever_the_read_order() -> None:
    book = book_with((KL, 0, member_update(KL, CUST_A, 3, "ACTIVE")), (KL, 1, member_update(KL, CUST_A, 2)))
    held = book.member(KL, CUST_A)
    assert held is not None and held.view.version == 3 and held.view.status == "ACTIVE"
    assert held.updated_at == T0 + timedelta(minutes=3)
    assert len(book) == 1


def test_a_member_whose_newer_version_belongs_to_another_office_leaves_the_first() -> None:
    # Re-registered through JB: the newest version is JB's, so KL no longer sees the member.
    book = book_with((KL, 0, member_update(KL, CUST_A, 1)), (JB, 0, member_update(JB, CUST_A, 2)))
    assert book.member(KL, CUST_A) is None
    held = book.member(JB, CUST_A)
    assert held is not None and held.view.version == 2
    # KL's feed still has its own history.
    assert [u.sequence for u in book.page(KL, None, 10).models()] == [1]


def test_readiness_is_set_by_the_loader_only() -> None:
    book = book_with((KL, 0, member_update(KL, CUST_A, 1)))
    assert not book.ready
    book.mark_ready()
    assert book.ready


# --- the feed lag metric -------------------------------------------------------------------------------------------
def test_feed_lag_is_what_the_office_has_not_confirmed() -> None:
    book = OfficeBook(["KJRI_KUCHING"], 100)
    for i in range(5):
        book.apply("KJRI_KUCHING", i, member_update("KJRI_KUCHING", CUST_A, i + 1))
    assert book.lag("KJRI_KUCHING") is None  # never polled: no position to lag behind
    book.page("KJRI_KUCHING", None, 2)
    assert book.lag("KJRI_KUCHING") == 5 and _metric("sinergi_office_feed_lag_updates", office="KJRI_KUCHING") == 5
    book.page("KJRI_KUCHING", 2, 2)
    assert _metric("sinergi_office_feed_lag_updates", office="KJRI_KUCHING") == 3
    book.apply("KJRI_KUCHING", 5, member_update("KJRI_KUCHING", CUST_A, 6))  # a new update raises it at once
    assert _metric("sinergi_office_feed_lag_updates", office="KJRI_KUCHING") == 4
    book.page("KJRI_KUCHING", 6, 2)
    assert _metric("sinergi_office_feed_lag_updates", office="KJRI_KUCHING") == 0


# --- headers --------------------------------------------------------------------------------------------------------
def test_the_passport_lookup_key_is_read_from_its_header_only_when_well_formed() -> None:
    key = passport_lookup_key("C1234567", SECRET)
    assert passport_key_of([("sinergi-update-id", b"x"), (H_LOOKUP_PASSPORT, key.encode())]) == key
    assert passport_key_of([(H_LOOKUP_PASSPORT, b"C1234567")]) is None  # never a raw passport number
    assert passport_key_of(None) is None


# --- the reader, over a scripted consumer (no broker) ------------------------------------------------------------
class _Rec:
    def __init__(self, topic: str, offset: int, value: bytes | None, headers: list[tuple[str, bytes]]) -> None:
        self.topic, self.partition, self.offset, self.value, self.headers = topic, 0, offset, value, headers
        self.key = b"k"


class FakeConsumer:
    """Enough of AIOKafkaConsumer: one partition per topic; `end` is what end_offsets reports."""

    def __init__(
        self, log: dict[str, list[_Rec]], end: dict[str, int], partitions: dict[str, set[int]] | None = None
    ) -> None:
        self.log, self.end = log, end
        self.partitions = partitions or {topic: {0} for topic in log}
        self.pos: dict[Any, int] = {}
        self.stopped = False

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        self.stopped = True

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        return self.partitions.get(topic)

    def assign(self, tps: list[Any]) -> None:
        for tp in tps:
            self.pos.setdefault(tp, 0)

    def seek(self, tp: Any, offset: int) -> None:
        self.pos[tp] = offset

    async def seek_to_beginning(self, *tps: Any) -> None:
        for tp in tps:
            self.pos[tp] = 0

    async def end_offsets(self, tps: list[Any]) -> dict[Any, int]:
        return {tp: self.end[tp.topic] for tp in tps}

    async def position(self, tp: Any) -> int:
        return self.pos[tp]

    def highwater(self, tp: Any) -> int:
        return len(self.log[tp.topic])

    async def getmany(self, timeout_ms: int, max_records: int) -> dict[Any, list[_Rec]]:
        out: dict[Any, list[_Rec]] = {}
        for tp, at in self.pos.items():
            batch = self.log[tp.topic][at : at + 2]
            if batch:
                out[tp] = batch
                self.pos[tp] = batch[-1].offset + 1
        if not out:
            await asyncio.sleep(0)
        return out


def _reader(book: OfficeBook, consumers: list[FakeConsumer]) -> OfficeBookReader:
    class Scripted(OfficeBookReader):
        def _consumer(self) -> Any:
            return consumers.pop(0)

    return Scripted(Settings(read_model_retry_max_s=0.01), "127.0.0.1:1", book)


async def _until(condition: Any, what: str) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached: {what}")
        await asyncio.sleep(0.001)


def _topic(office: str) -> str:
    return f"kbri.updates.{office}.v1"


async def test_reader_loads_every_office_topic_with_headers_and_becomes_ready() -> None:
    book = OfficeBook([KL, JB], 100)
    key = passport_lookup_key("C7654321", SECRET)
    kl = [_Rec(_topic(KL), i, member_update(KL, CUST_A, i + 1).model_dump_json().encode(), []) for i in range(3)]
    jb = [
        _Rec(
            _topic(JB), 0, member_update(JB, CUST_B, 1).model_dump_json().encode(), [(H_LOOKUP_PASSPORT, key.encode())]
        ),
        _Rec(_topic(JB), 1, b"{not json", []),
        _Rec(_topic(JB), 2, case_update(JB, "c-1", 1).model_dump_json().encode(), []),
    ]
    consumer = FakeConsumer({_topic(KL): kl, _topic(JB): jb}, end={_topic(KL): 3, _topic(JB): 3})
    reader = _reader(book, [consumer])
    await reader.start()
    try:
        await _until(lambda: book.ready, "ready")
        assert [u.sequence for u in book.page(KL, None, 10).models()] == [1, 2, 3]
        assert [u.subject for u in book.page(JB, None, 10).models()] == [CUST_B, "c-1"]  # the bad record skipped
        assert book.member_by_passport_key(JB, key) is not None
    finally:
        await reader.close()
    assert consumer.stopped


async def test_reader_is_not_ready_until_every_topic_reached_its_start_end() -> None:
    book = OfficeBook([KL, JB], 100)
    kl = [_Rec(_topic(KL), i, member_update(KL, CUST_A, i + 1).model_dump_json().encode(), []) for i in range(4)]
    # JB's topic reports an end of 0 (empty); KL's the 4 records.
    consumer = FakeConsumer({_topic(KL): kl, _topic(JB): []}, end={_topic(KL): 4, _topic(JB): 0})
    reader = _reader(book, [consumer])
    await reader.start()
    try:
        await _until(lambda: book.ready, "ready")
        assert book.end(KL) == 4  # never ready before all of KL's records were held
    finally:
        await reader.close()


async def test_reader_retries_a_missing_topic_and_refuses_a_partitioned_one() -> None:
    book = OfficeBook([KL, JB], 100)
    missing = FakeConsumer({_topic(KL): []}, end={_topic(KL): 0})  # JB's topic does not exist yet
    partitioned = FakeConsumer(
        {_topic(KL): [], _topic(JB): []},
        end={_topic(KL): 0, _topic(JB): 0},
        partitions={_topic(KL): {0}, _topic(JB): {0, 1}},
    )
    fine = FakeConsumer({_topic(KL): [], _topic(JB): []}, end={_topic(KL): 0, _topic(JB): 0})
    reader = _reader(book, [missing, partitioned, fine])
    await reader.start()
    try:
        await _until(lambda: book.ready, "ready once both topics exist with one partition")
        assert reader.restarts == 2 and missing.stopped and partitioned.stopped
    finally:
        await reader.close()


def test_a_partitioned_office_topic_is_a_layout_error() -> None:
    reader = OfficeBookReader(Settings(), "127.0.0.1:1", OfficeBook([KL], 10))
    consumer = FakeConsumer({_topic(KL): []}, end={_topic(KL): 0}, partitions={_topic(KL): {0, 1, 2}})
    with pytest.raises(TopicLayoutError):
        reader._partitions(consumer)  # type: ignore[arg-type]


# --- what a held update costs ---------------------------------------------------------------------------------
def test_the_feed_serves_each_update_exactly_as_it_was_read() -> None:
    updates = [member_update(KL, CUST_A, 1), case_update(KL, "case-1", 1), member_update(KL, CUST_A, 2, "ACTIVE")]
    book = book_with(*((KL, offset, u) for offset, u in enumerate(updates)))
    assert book.page(KL, None, 10).models() == updates
    held = book.member(KL, CUST_A)
    assert held is not None and held.view == updates[2].member and held.version == 2


def test_a_held_update_costs_its_json_not_a_model() -> None:
    # A validated OfficeUpdate with its member view is about 4.3 KB; its JSON about 0.7 KB. A book of a million
    # members and their updates must be held as the latter.
    count = 2_000
    records = [member_update(KL, f"{i:018d}", 1).model_dump_json().encode() for i in range(count)]
    document_size = len(records[0])
    book = OfficeBook([KL], count)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for offset, record in enumerate(records):  # as the reader does: each record parsed, applied, let go
            book.apply(KL, offset, OfficeUpdate.model_validate_json(record))
        gc.collect()
        per_update = (tracemalloc.get_traced_memory()[0] - before) / count
    finally:
        tracemalloc.stop()
    assert len(book) == count
    assert per_update < document_size + 600, per_update  # the document, its member entry, the deque slot
