"""`sinergi webhooks serve` and `replay` in-process: the real service and dispatcher over a fake consumer (the
office topics as lists, commits recorded), the in-memory producer (the DLQ topic) and office receivers behind
httpx.MockTransport that verify every delivery with standardwebhooks. The demo's office-sim receiver is driven
through httpx.ASGITransport.

The commit rule is tested first as a pure tracker. Backoff runs on a fake clock (its sleep returns at once), so
exhausting retries takes no real time. Tests wait by polling with a deadline, never by sleeping.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime

import httpx
import pytest
from aiokafka import ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from prometheus_client import REGISTRY
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from connectors.kafka_edge import InMemoryProducer
from connectors.kbri import webhook_policy as policy
from connectors.kbri.webhook_service import (
    DLQ_TOPIC,
    H_REPLAYED,
    MALFORMED,
    NO_VALUE,
    OFFICE_MISMATCH,
    OffsetTracker,
    SubscriptionRefused,
    WebhookService,
    latest_sequences,
    member_key,
    parse_since,
    plan_replay,
    replay_dead_letters,
)
from connectors.kbri.webhooks import (
    ENDPOINT_GONE,
    MAX_ATTEMPTS,
    DeadLetter,
    DeadLetterHandler,
    WebhookDispatcher,
)
from services.catalogue import office_updates_topic
from services.config import OfficeWebhook, Settings
from services.domain.office_updates import (
    BillView,
    CaseView,
    CoverageView,
    MemberView,
    OfficeUpdate,
    UpdateType,
    update_id,
)
from services.office_sim import OfficeSim

OFFICE_A = "KBRI_KUALA_LUMPUR"
OFFICE_B = "KJRI_JOHOR_BAHRU"
SECRET_A = "whsec_" + base64.b64encode(b"sinergi-test-office-a-secret-01!").decode()
SECRET_A_OLD = "whsec_" + base64.b64encode(b"sinergi-test-office-a-secret-00!").decode()
SECRET_B = "whsec_" + base64.b64encode(b"sinergi-test-office-b-secret-01!").decode()
TP_A = TopicPartition(office_updates_topic(OFFICE_A), 0)
TP_B = TopicPartition(office_updates_topic(OFFICE_B), 0)


# --- the pure commit rule ---------------------------------------------------------------------------------------
def test_commit_point_is_one_past_the_longest_finished_prefix_whatever_the_finishing_order() -> None:
    tracker: OffsetTracker[str] = OffsetTracker()
    for offset in range(5):
        assert tracker.track("p", offset)
    tracker.finish("p", 1)
    tracker.finish("p", 2)
    assert tracker.committable("p") is None  # offset 0 is still out: committing 3 would lose it on a crash
    tracker.finish("p", 0)
    assert tracker.committable("p") == 3
    tracker.finish("p", 4)
    assert tracker.committable("p") == 3
    tracker.finish("p", 3)
    assert tracker.committable("p") == 5
    assert tracker.unfinished("p") == 0


def test_commit_point_crosses_offset_gaps_and_is_reported_once() -> None:
    tracker: OffsetTracker[str] = OffsetTracker()
    for offset in (10, 12, 15):  # compaction and transaction markers leave holes
        tracker.track("p", offset)
    tracker.finish("p", 15)
    tracker.finish("p", 12)
    assert tracker.committable("p") is None
    tracker.finish("p", 10)
    assert tracker.committable("p") == 16
    tracker.mark_committed("p", 16)
    assert tracker.committable("p") is None
    tracker.track("p", 16)
    tracker.finish("p", 16)
    assert tracker.committable("p") == 17


def test_partitions_are_independent_and_forgetting_one_starts_it_afresh() -> None:
    tracker: OffsetTracker[str] = OffsetTracker()
    tracker.track("a", 0)
    tracker.track("b", 0)
    tracker.track("b", 1)
    tracker.finish("b", 0)
    tracker.finish("b", 1)
    assert tracker.committable("a") is None
    assert tracker.committable("b") == 2
    assert not tracker.track("b", 1)  # read again (a seek back): not counted twice
    tracker.finish("a", 7)  # never tracked: ignored
    assert tracker.committable("a") is None
    tracker.forget("a")
    assert tracker.track("a", 0)
    tracker.finish("a", 0)
    assert tracker.committable("a") == 1


# --- fakes --------------------------------------------------------------------------------------------------------
class FakeLog:
    """The office topics: records by partition and the group's committed offsets (they outlive a consumer)."""

    def __init__(self) -> None:
        self.records: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]] = defaultdict(list)
        self.committed: dict[TopicPartition, int] = {}

    def produce(self, tp: TopicPartition, value: bytes | None, key: bytes = b"k") -> int:
        offset = len(self.records[tp])
        self.records[tp].append(
            ConsumerRecord(tp.topic, tp.partition, offset, 0, 0, key, value, None, len(key), len(value or b""), [])
        )
        return offset


class FakeConsumer:
    def __init__(self, log: FakeLog) -> None:
        self.log = log
        self.topics: list[str] = []
        self.listener: ConsumerRebalanceListener | None = None
        self.positions: dict[TopicPartition, int] = {}
        self.paused: set[TopicPartition] = set()
        self.commits: list[dict[TopicPartition, int]] = []

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    def subscribe(self, topics: Sequence[str], *, listener: ConsumerRebalanceListener) -> None:
        self.topics, self.listener = list(topics), listener

    async def getmany(
        self, *partitions: TopicPartition, timeout_ms: int = 0, max_records: int | None = None
    ) -> dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]:
        if not self.positions and self.listener is not None:
            tps = [TopicPartition(t, 0) for t in self.topics]
            self.positions = {tp: self.log.committed.get(tp, 0) for tp in tps}
            await self.listener.on_partitions_assigned(tps)
        out = {}
        for tp, position in self.positions.items():
            if tp in self.paused:
                continue
            records = self.log.records[tp][position : position + (max_records or 500)]
            if records:
                out[tp] = records
                self.positions[tp] = position + len(records)
        if not out:
            await asyncio.sleep(timeout_ms / 1000)  # the broker's fetch wait
        return out

    def pause(self, *partitions: TopicPartition) -> None:
        self.paused.update(partitions)

    def resume(self, *partitions: TopicPartition) -> None:
        self.paused.difference_update(partitions)

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.commits.append(dict(offsets))
        self.log.committed.update(offsets)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    def wall(self) -> float:
        return time.time()  # receivers compare webhook-timestamp with their own clock

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        await asyncio.sleep(0)


@dataclass
class Hit:
    office: str
    webhook_id: str
    body: bytes
    headers: dict[str, str]
    verified: bool
    status: int = 0

    @property
    def update(self) -> OfficeUpdate:
        return OfficeUpdate.model_validate_json(self.body)


class Offices:
    """Every office's receiver behind one MockTransport, routed by path /hooks/<office>."""

    def __init__(self, secrets: dict[str, list[str]]) -> None:
        self.secrets = secrets
        self.hits: list[Hit] = []
        self.answer: Callable[[Hit], int] = lambda hit: 204
        self.gates: dict[str, asyncio.Event] = {}  # subject -> held until set

    async def handle(self, request: httpx.Request) -> httpx.Response:
        office = request.url.path.rsplit("/", 1)[-1]
        body = await request.aread()
        headers = dict(request.headers)
        verified = False
        for secret in self.secrets.get(office, []):
            try:
                Webhook(secret).verify(body, headers)
            except WebhookVerificationError:
                continue
            verified = True
        hit = Hit(office, headers["webhook-id"], body, headers, verified)
        self.hits.append(hit)
        gate = self.gates.get(hit.update.subject)
        if gate is not None:
            await gate.wait()
        hit.status = self.answer(hit)
        return httpx.Response(hit.status)

    def delivered(self, office: str | None = None) -> list[Hit]:
        return [h for h in self.hits if 200 <= h.status < 300 and (office is None or h.office == office)]

    def url(self, office: str) -> str:
        return f"http://127.0.0.1:9/hooks/{office}"


async def until(predicate: Callable[[], bool], what: str, within: float = 20.0) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.005)


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def member_update(office: str, customer_no: str, sequence: int, status: str = "AWAITING_PAYMENT") -> OfficeUpdate:
    return OfficeUpdate(
        update_id=update_id(office, UpdateType.MEMBER_UPDATED, f"{customer_no}:{sequence}"),
        type=UpdateType.MEMBER_UPDATED,
        office=office,
        subject=customer_no,
        sequence=sequence,
        occurred_at=datetime(2026, 12, 1, 3, 0, tzinfo=UTC),
        member=MemberView(
            customer_no=customer_no,
            nik_masked="************1234",
            full_name="Siti Aminah",
            status=status,
            version=sequence,
            bill=BillView(
                amount_idr=370_000,
                paid_idr=0 if status == "AWAITING_PAYMENT" else 370_000,
                outstanding_idr=370_000 if status == "AWAITING_PAYMENT" else 0,
                expires_on=date(2026, 12, 31),
                virtual_accounts={"MANDIRI": "   88001" + customer_no},
            ),
            coverage=CoverageView(),
            payments_credited=0,
            enrollment_event_id=f"enr-{customer_no}",
        ),
    )


def case_update(office: str, case_id: str, sequence: int) -> OfficeUpdate:
    return OfficeUpdate(
        update_id=update_id(office, UpdateType.CASE_UPDATED, f"{case_id}:{sequence}"),
        type=UpdateType.CASE_UPDATED,
        office=office,
        subject=case_id,
        sequence=sequence,
        occurred_at=datetime(2026, 12, 1, 3, 0, tzinfo=UTC),
        case=CaseView(case_id=case_id, status="RECEIVED", version=sequence),
    )


def customer(n: int) -> str:
    return f"{880000000000000000 + n:018d}"


def produce(log: FakeLog, update: OfficeUpdate) -> int:
    tp = TopicPartition(office_updates_topic(update.office), 0)
    return log.produce(tp, update.model_dump_json().encode(), update.subject.encode())


def make_settings(offices: Offices, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "webhooks_allow_private": True,
        "webhooks_max_attempts": 3,
        "webhooks_backoff_base_s": 0.01,
        "webhooks_backoff_cap_s": 0.05,
        "webhooks_attempt_timeout_s": 5.0,
        "commit_interval_s": 0.0,
        "office_webhooks": {
            office: OfficeWebhook(url=offices.url(office), secrets=secrets)  # type: ignore[arg-type]
            for office, secrets in offices.secrets.items()
        },
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@dataclass
class Running:
    service: WebhookService
    consumer: FakeConsumer
    producer: InMemoryProducer

    def committed(self, tp: TopicPartition) -> int | None:
        return self.consumer.log.committed.get(tp)

    def dead_letters(self) -> list[DeadLetter]:
        return [DeadLetter.from_kafka(r.value, r.headers) for r in self.producer.records if r.topic == DLQ_TOPIC]


@asynccontextmanager
async def running(
    log: FakeLog,
    offices: Offices,
    settings: Settings,
    producer: InMemoryProducer | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> AsyncIterator[Running]:
    consumer = FakeConsumer(log)
    producer = producer or InMemoryProducer()

    def dispatcher(handler: DeadLetterHandler) -> WebhookDispatcher:
        return WebhookDispatcher(
            settings,
            on_dead_letter=handler,
            offices=[OFFICE_A, OFFICE_B],
            clock=FakeClock(),
            transport=transport or httpx.MockTransport(offices.handle),
        )

    service = WebhookService(
        settings, consumer, producer, [OFFICE_A, OFFICE_B], dispatcher_factory=dispatcher, poll_timeout_ms=5
    )
    task = asyncio.create_task(service.run())
    try:
        yield Running(service, consumer, producer)
    finally:
        service.stop()
        await asyncio.wait_for(task, 10)


# --- serve ------------------------------------------------------------------------------------------------------
async def test_each_update_reaches_its_own_office_verified_with_its_update_id_and_is_committed_after() -> None:
    offices = Offices({OFFICE_A: [SECRET_A, SECRET_A_OLD], OFFICE_B: [SECRET_B]})
    log = FakeLog()
    updates = [
        member_update(OFFICE_A, customer(1), 1),
        member_update(OFFICE_B, customer(2), 1),
        member_update(OFFICE_A, customer(1), 2, "ACTIVE"),
        case_update(OFFICE_A, "CASE-7", 1),
        member_update(OFFICE_B, customer(3), 1),
    ]
    for u in updates:
        produce(log, u)
    async with running(log, offices, make_settings(offices)) as run:
        await until(lambda: run.committed(TP_A) == 3 and run.committed(TP_B) == 2, "both offices committed")
    assert len(offices.delivered()) == len(updates)
    for hit in offices.hits:
        assert hit.verified, hit.office
        assert hit.update.office == hit.office  # never another office's update
        assert hit.webhook_id == hit.update.update_id
    assert {h.update.update_id for h in offices.delivered()} == {u.update_id for u in updates}
    first, second = [h.update.sequence for h in offices.delivered(OFFICE_A) if h.update.subject == customer(1)]
    assert (first, second) == (1, 2)


async def test_both_secrets_of_a_rotation_sign_every_delivery() -> None:
    offices = Offices({OFFICE_A: [SECRET_A, SECRET_A_OLD]})
    log = FakeLog()
    produce(log, member_update(OFFICE_A, customer(1), 1))
    async with running(log, offices, make_settings(offices)) as run:
        await until(lambda: run.committed(TP_A) == 1, "the delivery")
    (hit,) = offices.hits
    assert len(hit.headers["webhook-signature"].split()) == 2
    for secret in (SECRET_A, SECRET_A_OLD):  # an office still on the old secret verifies too
        Webhook(secret).verify(hit.body, hit.headers)


async def test_an_unfinished_record_holds_the_commit_point_while_later_members_are_delivered() -> None:
    offices = Offices({OFFICE_A: [SECRET_A]})
    offices.gates[customer(1)] = asyncio.Event()
    log = FakeLog()
    produce(log, member_update(OFFICE_A, customer(1), 1))  # offset 0: its receiver hangs
    produce(log, member_update(OFFICE_A, customer(2), 1))
    produce(log, member_update(OFFICE_A, customer(3), 1))
    async with running(log, offices, make_settings(offices)) as run:
        await until(lambda: len(offices.delivered()) == 2, "the two other members")
        await until(lambda: run.service.tracker.unfinished(TP_A) == 1, "both finished in the tracker")
        assert await run.service.commit() == {}
        assert run.committed(TP_A) is None
        offices.gates[customer(1)].set()
        await until(lambda: run.committed(TP_A) == 3, "the commit after the slow one finished")


async def test_a_crash_redelivers_what_was_not_committed_with_the_same_webhook_id() -> None:
    offices = Offices({OFFICE_A: [SECRET_A]})
    offices.gates[customer(1)] = asyncio.Event()
    log = FakeLog()
    updates = [member_update(OFFICE_A, customer(n), 1) for n in (1, 2, 3)]
    for u in updates:
        produce(log, u)
    async with running(log, offices, make_settings(offices)):
        await until(lambda: len(offices.delivered()) == 2, "members 2 and 3")
    assert log.committed.get(TP_A) is None  # offset 0 never finished: nothing may be committed
    del offices.gates[customer(1)]
    async with running(log, offices, make_settings(offices)) as run:  # a new process, from the commit
        await until(lambda: run.committed(TP_A) == 3, "everything after the restart")
    ids_by_subject = defaultdict(set)
    for hit in offices.delivered():
        ids_by_subject[hit.update.subject].add(hit.webhook_id)
    assert {s: ids for s, ids in ids_by_subject.items()} == {u.subject: {u.update_id} for u in updates}
    assert len(offices.delivered()) == 5  # 2 and 3 twice (same id each time), 1 once


async def test_an_exhausted_update_is_committed_only_once_its_dead_letter_is_acknowledged() -> None:
    offices = Offices({OFFICE_A: [SECRET_A]})
    offices.answer = lambda hit: 500 if hit.update.subject == customer(1) else 204
    producer = InMemoryProducer()
    producer.failing = "TIMEOUT"
    log = FakeLog()
    doomed = member_update(OFFICE_A, customer(1), 1)
    produce(log, doomed)
    produce(log, member_update(OFFICE_A, customer(2), 1))
    async with running(log, offices, make_settings(offices), producer) as run:
        await until(lambda: producer.attempts >= 2, "the DLQ produce to be tried again")
        assert len([h for h in offices.hits if h.update.subject == customer(1)]) == 3  # webhooks_max_attempts
        assert run.committed(TP_A) is None
        producer.failing = None
        await until(lambda: run.committed(TP_A) == 2, "the commit after the dead letter was acknowledged")
        (letter,) = run.dead_letters()
    (record,) = [r for r in producer.records if r.topic == DLQ_TOPIC]
    assert record.key == letter.kafka_key()
    assert letter.webhook_id == doomed.update_id
    assert letter.cause == MAX_ATTEMPTS and letter.attempts == 3 and letter.last_status == 500
    assert letter.member_key_hash == policy.member_key_hash(member_key(doomed))
    assert letter.payload == doomed.model_dump_json().encode()
    assert customer(1).encode() not in record.key + b"".join(v for _, v in record.headers)


async def test_after_410_gone_every_further_update_goes_to_the_dlq_and_is_committed() -> None:
    offices = Offices({OFFICE_A: [SECRET_A]})
    offices.answer = lambda hit: 410
    log = FakeLog()
    for n in range(3):
        produce(log, member_update(OFFICE_A, customer(n), 1))
    async with running(log, offices, make_settings(offices)) as run:
        await until(lambda: run.committed(TP_A) == 3, "all three settled")
        letters = run.dead_letters()
    assert sorted(d.webhook_id for d in letters) == sorted(
        member_update(OFFICE_A, customer(n), 1).update_id for n in range(3)
    )
    assert {d.cause for d in letters} == {ENDPOINT_GONE}
    assert len(offices.hits) == 1  # nothing is sent to an endpoint that said it is gone


async def test_records_that_are_not_this_offices_updates_are_counted_and_committed_past() -> None:
    offices = Offices({OFFICE_A: [SECRET_A], OFFICE_B: [SECRET_B]})
    log = FakeLog()
    before = {
        r: sample("sinergi_webhook_input_skipped_total", office=OFFICE_A, reason=r)
        for r in (MALFORMED, NO_VALUE, OFFICE_MISMATCH)
    }
    log.produce(TP_A, b"{not json")
    log.produce(TP_A, None)
    foreign = member_update(OFFICE_B, customer(9), 1)
    log.produce(TP_A, foreign.model_dump_json().encode())  # B's update on A's topic: never sent to A
    good = member_update(OFFICE_A, customer(1), 1)
    produce(log, good)
    async with running(log, offices, make_settings(offices)) as run:
        await until(lambda: run.committed(TP_A) == 4, "the commit past the bad records")
    assert [h.update.update_id for h in offices.hits] == [good.update_id]
    for reason in (MALFORMED, NO_VALUE, OFFICE_MISMATCH):
        assert sample("sinergi_webhook_input_skipped_total", office=OFFICE_A, reason=reason) == before[reason] + 1


async def test_an_office_without_a_subscription_is_committed_past_without_a_request() -> None:
    offices = Offices({OFFICE_A: [SECRET_A]})
    log = FakeLog()
    produce(log, member_update(OFFICE_B, customer(1), 1))
    produce(log, member_update(OFFICE_B, customer(2), 1))
    async with running(log, offices, make_settings(offices)) as run:
        await until(lambda: run.committed(TP_B) == 2, "B committed")
    assert offices.hits == []


async def test_a_full_queue_pauses_that_office_only_and_resumes_once_it_drains() -> None:
    offices = Offices({OFFICE_A: [SECRET_A], OFFICE_B: [SECRET_B]})
    log = FakeLog()
    office_a_down = asyncio.Event()
    for n in range(6):
        offices.gates[customer(n)] = office_a_down
        produce(log, member_update(OFFICE_A, customer(n), 1))
    for n in range(100, 104):
        produce(log, member_update(OFFICE_B, customer(n), 1))
    settings = make_settings(offices, webhooks_queue_size=2, webhooks_office_concurrency=2)
    async with running(log, offices, settings) as run:
        await until(lambda: run.service.paused(OFFICE_A), "A paused")
        await until(lambda: run.committed(TP_B) == 4, "B delivered while A is stuck")
        # B has more updates than its queue holds too: it pauses and resumes on its own, A's backlog aside
        assert TP_A in run.consumer.paused and TP_B not in run.consumer.paused
        assert run.committed(TP_A) is None
        office_a_down.set()
        await until(lambda: run.committed(TP_A) == 6, "A after it drained")
        assert not run.service.paused(OFFICE_A) and TP_A not in run.consumer.paused
    assert sorted(h.update.subject for h in offices.delivered(OFFICE_A)) == sorted(customer(n) for n in range(6))


async def test_a_subscription_the_policy_refuses_stops_the_service_before_it_consumes() -> None:
    offices = Offices({OFFICE_A: ["whsec_not-base64!"]})
    consumer = FakeConsumer(FakeLog())
    settings = make_settings(offices)
    service = WebhookService(settings, consumer, InMemoryProducer(), [OFFICE_A])
    with pytest.raises(SubscriptionRefused) as refused:
        await service.run()
    assert refused.value.reason == policy.SECRET_INVALID
    assert "whsec" not in str(refused.value)
    assert consumer.listener is None


async def test_the_demo_office_sim_verifies_what_the_service_delivers() -> None:
    offices = Offices({OFFICE_A: [SECRET_A], OFFICE_B: [SECRET_B]})
    settings = make_settings(offices)
    sim = OfficeSim(settings)
    log = FakeLog()
    produce(log, member_update(OFFICE_A, customer(1), 1))
    produce(log, member_update(OFFICE_A, customer(1), 2, "ACTIVE"))
    produce(log, member_update(OFFICE_B, customer(2), 1))
    async with running(log, offices, settings, transport=httpx.ASGITransport(app=sim.app)) as run:
        await until(lambda: run.committed(TP_A) == 2 and run.committed(TP_B) == 1, "office-sim answered 2xx")
    a, b = sim.tallies[OFFICE_A], sim.tallies[OFFICE_B]
    assert (a.verified, a.errors, b.verified, b.errors) == (2, 0, 1, 0)
    assert a.statuses() == {"ACTIVE": 1} and b.statuses() == {"AWAITING_PAYMENT": 1}
    assert "Siti" not in sim.line() and customer(1) not in sim.line()


# --- replay -----------------------------------------------------------------------------------------------------
def dead_letter(update: OfficeUpdate, failed_at: float = 1_700_000_000.0) -> DeadLetter:
    return DeadLetter(
        office=update.office,
        webhook_id=update.update_id,
        member_key_hash=policy.member_key_hash(member_key(update)),
        version=update.sequence,
        attempts=15,
        last_status=503,
        last_reason=policy.HTTP_5XX,
        cause=MAX_ATTEMPTS,
        failed_at=failed_at,
        payload=update.model_dump_json().encode(),
    )


@dataclass
class Rec:
    value: bytes | None
    headers: Sequence[tuple[str, bytes]]


def dlq_records(letters: Iterable[DeadLetter]) -> list[Rec]:
    return [Rec(d.payload, d.kafka_headers()) for d in letters]


def topic_records(updates: Iterable[OfficeUpdate]) -> list[Rec]:
    return [Rec(u.model_dump_json().encode(), []) for u in updates]


@asynccontextmanager
async def replay_dispatcher(offices: Offices) -> AsyncIterator[WebhookDispatcher]:
    async def ignore(_record: DeadLetter) -> None:
        pass

    settings = make_settings(offices)
    async with WebhookDispatcher(
        settings, on_dead_letter=ignore, clock=FakeClock(), transport=httpx.MockTransport(offices.handle)
    ) as dispatcher:
        for office, secrets in offices.secrets.items():
            await dispatcher.register(office, offices.url(office), secrets[0])
        yield dispatcher


async def test_replay_sends_each_dead_letter_with_its_own_id_and_a_second_replay_sends_nothing() -> None:
    offices = Offices({OFFICE_A: [SECRET_A], OFFICE_B: [SECRET_B]})
    updates = [member_update(OFFICE_A, customer(1), 1), case_update(OFFICE_B, "CASE-1", 2)]
    dlq = dlq_records(dead_letter(u) for u in updates)
    latest = {o: latest_sequences(topic_records(u for u in updates if u.office == o), o) for o in (OFFICE_A, OFFICE_B)}
    producer = InMemoryProducer()
    async with replay_dispatcher(offices) as dispatcher:
        summary = await replay_dead_letters(plan_replay(dlq, latest), dispatcher, producer)
    assert (summary.delivered, summary.failed) == (2, 0)
    assert sorted(h.webhook_id for h in offices.delivered()) == sorted(u.update_id for u in updates)
    assert all(h.verified and h.update.office == h.office for h in offices.hits)
    markers = [Rec(r.value, r.headers) for r in producer.records]
    assert all(r.topic == DLQ_TOPIC and r.header(H_REPLAYED) for r in producer.records)

    again = plan_replay(dlq + markers, latest)
    assert (again.to_send, again.already_replayed) == ([], 2)
    async with replay_dispatcher(offices) as dispatcher:
        second = await replay_dead_letters(again, dispatcher, producer)
    assert (second.delivered, second.failed, second.already_replayed) == (0, 0, 2)
    assert len(offices.hits) == 2


def test_replay_skips_a_member_version_the_office_topic_has_superseded() -> None:
    old, new = member_update(OFFICE_A, customer(1), 1), member_update(OFFICE_A, customer(1), 2, "ACTIVE")
    other = member_update(OFFICE_A, customer(2), 1)
    rejection = OfficeUpdate(  # same subject string as the case below: a different member for ordering
        update_id=update_id(OFFICE_A, UpdateType.ENROLLMENT_REJECTED, "R-1"),
        type=UpdateType.ENROLLMENT_REJECTED,
        office=OFFICE_A,
        subject="CASE-9",
        sequence=1,
        occurred_at=datetime(2026, 12, 1, tzinfo=UTC),
    )
    topic = topic_records([old, other, new, rejection, case_update(OFFICE_A, "CASE-9", 5)])
    plan = plan_replay(
        dlq_records([dead_letter(old), dead_letter(other), dead_letter(rejection)]),
        {OFFICE_A: latest_sequences(topic, OFFICE_A)},
    )
    assert sorted(d.webhook_id for d in plan.to_send) == sorted([other.update_id, rejection.update_id])
    assert plan.superseded == 1


async def test_a_failed_replay_is_reported_and_left_for_the_next_one() -> None:
    offices = Offices({OFFICE_A: [SECRET_A]})
    offices.answer = lambda hit: 503
    update = member_update(OFFICE_A, customer(1), 1)
    dlq = dlq_records([dead_letter(update)])
    producer = InMemoryProducer()
    async with replay_dispatcher(offices) as dispatcher:
        summary = await replay_dead_letters(plan_replay(dlq, {}), dispatcher, producer)
    assert (summary.delivered, summary.failed, summary.failures) == (0, 1, {policy.HTTP_5XX: 1})
    assert producer.records == []
    offices.answer = lambda hit: 204
    async with replay_dispatcher(offices) as dispatcher:
        summary = await replay_dead_letters(plan_replay(dlq, {}), dispatcher, producer)
    assert (summary.delivered, summary.failed) == (1, 0)
    assert [h.webhook_id for h in offices.delivered()] == [update.update_id]
    assert [r.header(H_REPLAYED) is not None for r in producer.records] == [True]


def test_replay_selects_by_office_and_failure_time_and_counts_unreadable_records() -> None:
    a = dead_letter(member_update(OFFICE_A, customer(1), 1), failed_at=1000.0)
    b = dead_letter(member_update(OFFICE_B, customer(2), 1), failed_at=5000.0)
    records = [*dlq_records([a, b, a]), Rec(b"x", [("webhook-id", b"msg_1")])]
    plan = plan_replay(records, {}, office=OFFICE_B)
    assert [d.webhook_id for d in plan.to_send] == [b.webhook_id]
    assert (plan.not_selected, plan.unreadable) == (2, 1)
    plan = plan_replay(records, {}, since=2000.0)
    assert [d.webhook_id for d in plan.to_send] == [b.webhook_id]
    plan = plan_replay(records, {})
    assert len(plan.to_send) == 2 and plan.already_replayed == 1  # the same webhook-id dead-lettered twice


def test_since_accepts_durations_and_iso_times() -> None:
    assert parse_since("90m", 10_000.0) == 10_000.0 - 5400
    assert parse_since("2d", 200_000.0) == 200_000.0 - 172_800
    assert parse_since("2026-12-01T07:00:00+07:00", 0.0) == datetime(2026, 12, 1, tzinfo=UTC).timestamp()
    assert parse_since("2026-12-01", 0.0) == datetime(2026, 12, 1, tzinfo=UTC).timestamp()
    with pytest.raises(ValueError):
        parse_since("yesterday", 0.0)


# --- office-sim ---------------------------------------------------------------------------------------------------
def signed(secret: str, update: OfficeUpdate, webhook_id: str | None = None) -> tuple[bytes, dict[str, str]]:
    body = update.model_dump_json()
    msg_id = webhook_id or update.update_id
    now = datetime.now(UTC)
    headers = {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": Webhook(secret).sign(msg_id, now, body),
        "content-type": "application/json",
    }
    return body.encode(), headers


async def test_office_sim_counts_only_verified_updates_of_the_office_the_endpoint_belongs_to() -> None:
    offices = Offices({OFFICE_A: [SECRET_A], OFFICE_B: [SECRET_B]})
    sim = OfficeSim(make_settings(offices))
    mine = member_update(OFFICE_A, customer(1), 1)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=sim.app), base_url="http://sim") as client:
        body, headers = signed(SECRET_A, mine)
        assert (await client.post(f"/hooks/{OFFICE_A}", content=body, headers=headers)).status_code == 204
        assert (await client.post(f"/hooks/{OFFICE_A}", content=body, headers=headers)).status_code == 204
        body, headers = signed(SECRET_B, mine)  # signed with another office's secret
        assert (await client.post(f"/hooks/{OFFICE_A}", content=body, headers=headers)).status_code == 401
        body, headers = signed(SECRET_A, member_update(OFFICE_B, customer(2), 1))  # B's update at A's endpoint
        assert (await client.post(f"/hooks/{OFFICE_A}", content=body, headers=headers)).status_code == 400
        body, headers = signed(SECRET_A, mine, webhook_id="msg_other")  # not the update's own id
        assert (await client.post(f"/hooks/{OFFICE_A}", content=body, headers=headers)).status_code == 400
        assert (await client.post("/hooks/KDEI_TAIPEI", content=body, headers=headers)).status_code == 404
    tally = sim.tallies[OFFICE_A]
    assert (tally.verified, tally.deliveries, tally.errors, sim.stray) == (1, 2, 3, 1)
    assert sim.tallies[OFFICE_B].verified == 0


async def test_office_sim_feed_reader_waits_for_a_missing_route_then_follows_the_cursor() -> None:
    mine = [member_update(OFFICE_A, customer(1), 1), member_update(OFFICE_A, customer(1), 2, "ACTIVE")]

    def page(updates: list[OfficeUpdate], cursor: str, more: bool) -> httpx.Response:
        return httpx.Response(
            200, json={"updates": [json.loads(u.model_dump_json()) for u in updates], "next": cursor, "has_more": more}
        )

    answers = [
        httpx.Response(404, json={"detail": "Not Found"}),  # the feed route is not deployed yet
        page(mine[:1], "c1", True),
        page(mine[1:], "c2", False),
        httpx.Response(410, json={"reason": "CURSOR_EXPIRED", "field": "after", "message": "resync"}),
        page(mine, "c2", False),  # read again from the start
        page([member_update(OFFICE_B, customer(2), 1)], "c3", False),  # another office's: refused, counted
        httpx.Response(404, json={"reason": "SOMETHING_ELSE", "field": None, "message": "?"}),
    ]
    seen: list[tuple[str | None, str | None]] = []
    sim = OfficeSim(Settings(), feed_poll_s=0.0, feed_unavailable_s=0.0)
    states: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if seen:
            states.append(sim.tallies[OFFICE_A].feed_state)
        seen.append((request.url.params.get("after"), request.headers.get("authorization")))
        if len(seen) >= len(answers):
            sim.stop()
        return answers[min(len(seen), len(answers)) - 1]

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler), base_url="http://kbri") as client:
        await asyncio.wait_for(sim.read_feed(client, OFFICE_A), 10)
    tally = sim.tallies[OFFICE_A]
    assert [after for after, _ in seen] == [None, None, "c1", "c2", None, "c2", "c3"]
    assert {token for _, token in seen} == {"Bearer dev-token-kbri-kl"}
    assert states == ["not available yet", "reading", "reading", "resync", "reading", "reading"]
    assert tally.feed_state == "HTTP 404 SOMETHING_ELSE"
    assert (tally.feed_items, tally.errors) == (2, 2)  # the re-read after the resync is not counted twice
    assert tally.statuses() == {"ACTIVE": 1}
