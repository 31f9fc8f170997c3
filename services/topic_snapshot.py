"""Bounded reads of whole topics, by partition assignment: no group join (slow on Tansu), nothing committed.

Used by the command-line readers (`sinergi verify`, `explain`, `report`). A read goes from each partition's
first offset past its listed end offset and stops once no record has arrived for ``settle_s``. Stopping at
the listed end is not enough: the embedded broker (Tansu) was measured listing an end offset one short of
the partition's last record (payments.v1 partition 2 listed end 4 while offset 4 was readable), so such a
read silently missed the newest record. On real Kafka the extra cost is one settle window per read.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Message, TopicPartition

_QUIET = logging.getLogger("sinergi.snapshot.librdkafka")
_QUIET.setLevel(logging.CRITICAL)  # a reader's reconnect chatter is not the operator's business
SETTLE_S = 0.5


def read_to_end(
    bootstrap: str,
    topics: Iterable[str],
    *,
    timeout_s: float = 10.0,
    settle_s: float = SETTLE_S,
    client: str = "sinergi-reader",
) -> Iterator[Message]:
    """Every record of ``topics`` (partition by partition in offset order), including what arrives while
    reading. Raises KafkaException when a partition is behind its listed end and nothing arrives for
    ``timeout_s``. A topic that does not exist reads as empty."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": client,  # librdkafka wants one; never joined (assign) nor committed
            "client.id": client,
            "enable.auto.commit": False,
            "enable.partition.eof": False,
            "logger": _QUIET,
        }
    )
    try:
        behind: dict[tuple[str, int], int] = {}
        assignment: list[TopicPartition] = []
        for name in topics:
            topic = consumer.list_topics(name, timeout=timeout_s).topics.get(name)
            if topic is None or topic.error is not None:
                continue
            for p in topic.partitions:
                # Every partition is assigned, an empty-looking one too: its listed end may be short.
                assignment.append(TopicPartition(name, p, OFFSET_BEGINNING))
                _, high = consumer.get_watermark_offsets(TopicPartition(name, p), timeout=timeout_s, cached=False)
                if high > 0:
                    behind[(name, p)] = high
        if not assignment:
            return
        consumer.assign(assignment)
        last_progress = time.monotonic()
        while True:
            batch = consumer.consume(num_messages=1000, timeout=settle_s)
            if not batch:
                if not behind:
                    return  # every listed end reached and a settle window without a record
                if time.monotonic() - last_progress > timeout_s:
                    raise KafkaException(f"no progress within {timeout_s}s reading {len(behind)} partitions")
                continue
            last_progress = time.monotonic()
            for msg in batch:
                if msg.error():
                    continue
                where, offset = (str(msg.topic()), int(msg.partition() or 0)), msg.offset()
                end = behind.get(where)
                if end is not None and offset is not None and offset + 1 >= end:
                    del behind[where]
                yield msg
    finally:
        consumer.close()
