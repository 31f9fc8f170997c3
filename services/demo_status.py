"""What `make demo` shows on the console: the core topic as the BPJS core system sees it, every few seconds.

One line per interval: member versions received, members by current status, offices and banks seen.
Counts and codes only, never a person.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from services.catalogue import CORE_MEMBER_RECORDS
from services.codec import build_codec
from services.config import Settings

_QUIET = logging.getLogger("sinergi.demo_status.librdkafka")
_QUIET.setLevel(logging.CRITICAL)


class CoreTopicStatus:
    def __init__(
        self, settings: Settings, bootstrap: str, interval_s: float = 10.0, emit: Callable[[str], None] = print
    ) -> None:
        self._settings = settings
        self._bootstrap = bootstrap
        self._interval_s = interval_s
        self._emit = emit
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="demo-status", daemon=True)
        self.records = 0
        self.status_of: dict[str, str] = {}
        self.offices: Counter[str] = Counter()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def line(self) -> str:
        by_status = Counter(self.status_of.values())
        statuses = ", ".join(f"{status} {n}" for status, n in sorted(by_status.items())) or "-"
        return (
            f"[core.member-records.v1] {self.records} member versions; "
            f"{len(self.status_of)} members: {statuses}; offices: {len(self.offices)}"
        )

    def _run(self) -> None:
        codec = build_codec(self._settings)
        consumer = Consumer(
            {
                "bootstrap.servers": self._bootstrap,
                "group.id": "sinergi-demo-status",  # librdkafka wants one; offsets are never committed
                "enable.auto.commit": False,
                # The broker stops right after this reader at Ctrl-C: its disconnect lines are expected noise.
                "logger": _QUIET,
            }
        )
        try:
            metadata = consumer.list_topics(CORE_MEMBER_RECORDS.name, timeout=10)
            partitions = metadata.topics[CORE_MEMBER_RECORDS.name].partitions
            consumer.assign([TopicPartition(CORE_MEMBER_RECORDS.name, p, OFFSET_BEGINNING) for p in partitions])
            next_line = 0.0
            while not self._stop.is_set():
                for msg in consumer.consume(num_messages=500, timeout=0.5):
                    value = msg.value()
                    if msg.error() or value is None:
                        continue
                    _, record = codec.decode(value)
                    self.records += 1
                    self.status_of[record["participant_id"]] = record["status"]
                    self.offices[record["office_code"]] += 1
                now = time.monotonic()
                if self.records and now >= next_line:
                    self._emit(self.line())
                    next_line = now + self._interval_s
        finally:
            consumer.close()
