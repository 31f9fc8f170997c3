"""services.outbox against the embedded broker: a batch's outputs sent as record batches land exactly once each,
on the partition the producer's own partitioner gives the key (co-partitioning unchanged), in the order they were
added per key, with their headers; a record larger than a whole batch still goes out."""

from __future__ import annotations

import asyncio
import random
from types import SimpleNamespace

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from connectors.embedded import EmbeddedBroker
from services.outbox import Outbox
from services.reconcile import partition_of
from services.topic_snapshot import read_to_end

pytestmark = pytest.mark.integration

PARTITIONS = 4


async def test_outbox_delivers_every_record_once_on_the_key_partition_in_order(broker: EmbeddedBroker) -> None:
    topics = ["sinergi-outbox-a", "sinergi-outbox-b"]
    admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(t, PARTITIONS, 1) for t in topics])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, acks="all", linger_ms=5, max_batch_size=16384)
    await producer.start()
    seed = random.randrange(2**32)
    print(f"seed {seed}")
    rng = random.Random(seed)
    try:
        outbox = Outbox(SimpleNamespace(producer=SimpleNamespace(_producer=producer)), "outbox-test")
        sent: list[tuple[str, bytes, bytes]] = []
        for round_ in range(3):  # several sends: batches of one partition queue behind each other
            for i in range(400):
                topic = rng.choice(topics)
                key = f"member-{rng.randrange(60)}".encode()
                value = f"{round_}:{i}".encode() + b"x" * rng.randrange(600)
                outbox.add(topic, key, value, [("n", f"{round_}:{i}".encode())])
                sent.append((topic, key, value))
            outbox.add(topics[0], b"member-big", b"B" * 40_000)  # over the 16 KiB batch: the producer's own path
            sent.append((topics[0], b"member-big", b"B" * 40_000))
            assert len(outbox) == 401
            await asyncio.wait_for(outbox.send(), timeout=60.0)
            assert len(outbox) == 0
    finally:
        await producer.stop()

    received = await asyncio.to_thread(lambda: list(read_to_end(broker.bootstrap, topics)))
    got = [(m.topic(), m.key(), m.value()) for m in received]
    assert sorted(got) == sorted(sent)  # each once, nothing else
    for m in received:
        assert m.partition() == partition_of(m.key(), PARTITIONS), "not the key's partition"
        if m.key() != b"member-big":
            assert dict(m.headers() or [])["n"] == m.value().split(b"x")[0]
    for topic in topics:
        for key in {k for t, k, _ in sent if t == topic}:
            expected = [v for t, k, v in sent if t == topic and k == key]
            assert [m.value() for m in received if m.topic() == topic and m.key() == key] == expected
