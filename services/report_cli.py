"""`sinergi report daily`: the daily reconciliation report of one bank, read from reconciliation.statements.v1.

The topic is read from the beginning up to its end at start (assigned partitions, no consumer group, so no
offsets are committed and two reports never share work); the decisions of the bank are handed to
:func:`services.domain.daily_report.build_report`, which drops redeliveries and resolved breaks.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from datetime import date
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition
from pydantic import ValidationError

from services.catalogue import STATEMENT_DECISIONS
from services.domain.daily_report import build_report, to_csv, to_table
from services.domain.statement_match import Decision

READ_TIMEOUT_S = 60.0


def decisions_of(values: Iterable[tuple[bytes | None, bytes | None]], bank: str) -> tuple[list[Decision], int]:
    """The decisions of ``bank`` among (key, value) records, and how many records could not be read."""
    chosen: list[Decision] = []
    unreadable = 0
    key = bank.encode()
    for k, v in values:
        if k != key or v is None:
            continue
        try:
            decision = Decision.model_validate_json(v)
        except ValidationError:
            unreadable += 1
            continue
        if decision.bank_id == bank:
            chosen.append(decision)
    return chosen, unreadable


def read_topic(bootstrap: str, topic: str = STATEMENT_DECISIONS.name) -> list[tuple[bytes | None, bytes | None]]:
    """Every record of ``topic`` from the beginning to the end offsets seen at start."""
    consumer: Any = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"sinergi-report-{uuid.uuid4().hex}",  # never committed: assign() only
            "enable.auto.commit": False,
        }
    )
    try:
        metadata = consumer.list_topics(topic, timeout=10)
        info = metadata.topics.get(topic)
        if info is None or info.error is not None or not info.partitions:
            return []
        ends: dict[int, int] = {}
        for p in info.partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            if high > low:
                ends[p] = high
        if not ends:
            return []
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in ends])
        records: list[tuple[bytes | None, bytes | None]] = []
        deadline = time.monotonic() + READ_TIMEOUT_S
        while ends and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                raise KafkaException(msg.error())
            records.append((msg.key(), msg.value()))
            if msg.offset() + 1 >= ends.get(msg.partition(), 0):
                ends.pop(msg.partition(), None)
        if ends:
            raise TimeoutError(f"{topic}: end not reached within {READ_TIMEOUT_S:.0f}s")
        return records
    finally:
        consumer.close()


def daily_report(bootstrap: str, bank: str, business_date: date, as_csv: bool) -> tuple[str, int]:
    """The rendered report and the number of unreadable records skipped."""
    decisions, unreadable = decisions_of(read_topic(bootstrap), bank)
    report = build_report(decisions, bank, business_date)
    return (to_csv(report) if as_csv else to_table(report)), unreadable
