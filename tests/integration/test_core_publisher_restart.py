"""Issue 7, items 2 (group reset) and crash: the core publisher never forwards a member version twice.

Its own broker (values are not Avro here: the publisher's version reader is the test's), members.v1
preloaded with three versions per participant. A publisher forwards them and is cancelled without a
clean stop; a second one under a NEW consumer group (what a reset to the earliest offset amounts to)
reads every members.v1 record again and forwards none; a third, after new versions arrive, forwards only
those.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Iterator

import pytest
from confluent_kafka import ConsumerGroupTopicPartitions, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from connectors.core.publisher import CorePublisher
from connectors.embedded import EmbeddedBroker
from services.catalogue import CORE_MEMBER_RECORDS, MEMBERS
from services.config import Settings
from services.topics import create_topics
from services.verify import read_topics

pytestmark = pytest.mark.integration

PARTICIPANTS = 60
DEADLINE_S = 60.0


@pytest.fixture
def own_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker(log_file=tmp_path_factory.mktemp("core-pub") / "tansu.log") as b:
        create_topics(b.bootstrap, Settings())
        yield b


def version_of(value: bytes) -> int:
    return int(value.split(b":")[1])


def produce_versions(bootstrap: str, versions: range) -> int:
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    n = 0
    for v in versions:
        for i in range(PARTICIPANTS):
            producer.produce(MEMBERS.name, key=f"p{i:04d}".encode(), value=f"p{i:04d}:{v}".encode())
            n += 1
    assert producer.flush(10) == 0
    return n


def core_records(bootstrap: str) -> list[tuple[bytes, int]]:
    return [(m.key(), version_of(m.value())) for m in read_topics(bootstrap, [CORE_MEMBER_RECORDS.name])]


def committed_to_end(bootstrap: str, group: str) -> bool:
    """Has ``group`` committed past the last record of every members.v1 partition? The last offsets are
    read, not listed: Tansu can list an end offset one short (services/topic_snapshot.py)."""
    ends: dict[int, int] = {}
    for m in read_topics(bootstrap, [MEMBERS.name]):
        ends[m.partition()] = max(ends.get(m.partition(), 0), m.offset() + 1)
    admin = AdminClient({"bootstrap.servers": bootstrap})
    request = ConsumerGroupTopicPartitions(group, [TopicPartition(MEMBERS.name, p) for p in ends])
    result = admin.list_consumer_group_offsets([request])[group].result(10)
    got = {tp.partition: tp.offset for tp in result.topic_partitions}
    return all(got.get(p, -1) >= end for p, end in ends.items())


async def run_until(publisher: CorePublisher, done: Callable[[], bool]) -> None:
    task = asyncio.create_task(publisher.run())
    deadline = time.monotonic() + DEADLINE_S
    try:
        while not done():
            assert not task.done(), task.exception()
            assert time.monotonic() < deadline, "the publisher did not get there in time"
            await asyncio.sleep(0.2)  # poll interval of a deadline loop
    finally:
        task.cancel()  # no clean stop: like a kill, nothing after the last commit is flushed on purpose
        await asyncio.gather(task, return_exceptions=True)


def test_restarted_or_reset_publisher_forwards_each_version_once(own_broker: EmbeddedBroker) -> None:
    bootstrap, settings = own_broker.bootstrap, Settings()
    produce_versions(bootstrap, range(1, 4))

    first = CorePublisher(settings, bootstrap, version_of, group_id="core-a")
    asyncio.run(run_until(first, lambda: committed_to_end(bootstrap, "core-a")))
    forwarded = core_records(bootstrap)
    # Within one run a participant's lower versions are forwarded too (members.v1 is read in order).
    assert Counter(forwarded) == {(f"p{i:04d}".encode(), v): 1 for i in range(PARTICIPANTS) for v in (1, 2, 3)}

    reset = CorePublisher(settings, bootstrap, version_of, group_id="core-b")  # a group starting at earliest
    asyncio.run(run_until(reset, lambda: committed_to_end(bootstrap, "core-b")))
    # Compared as multisets: a read interleaves partitions in no fixed order.
    assert Counter(core_records(bootstrap)) == Counter(forwarded), "a reprocessed members.v1 was forwarded again"

    produce_versions(bootstrap, range(4, 5))
    again = CorePublisher(settings, bootstrap, version_of, group_id="core-a")
    asyncio.run(run_until(again, lambda: committed_to_end(bootstrap, "core-a")))
    after = core_records(bootstrap)
    assert Counter(after) == Counter(forwarded) + Counter((f"p{i:04d}".encode(), 4) for i in range(PARTICIPANTS))
