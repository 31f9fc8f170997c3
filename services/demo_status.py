"""What `make demo` shows on the console: the core topic as the BPJS core system sees it, every few seconds.

One line per interval: member versions received, members by current status, offices and banks seen; then a
line per office with updates: its topic's end offset (the feed position) and what the webhooks service
delivered to it (scraped from that service's /metrics). Counts and codes only, never a person.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

from services.catalogue import CORE_MEMBER_RECORDS, office_updates_topic
from services.codec import build_codec
from services.config import Settings

_QUIET = logging.getLogger("sinergi.demo_status.librdkafka")
_QUIET.setLevel(logging.CRITICAL)


class OfficeStatus:
    """Per office: how far its update topic is and the webhook outcomes of the webhooks service."""

    def __init__(self, offices: Sequence[str], webhooks_metrics_url: str | None) -> None:
        self._offices = list(offices)
        self._metrics_url = webhooks_metrics_url

    def deliveries(self) -> dict[str, dict[str, float]]:
        """office -> outcome -> count; empty while the webhooks service does not answer."""
        import httpx
        from prometheus_client.parser import text_string_to_metric_families

        if self._metrics_url is None:
            return {}
        try:
            text = httpx.get(self._metrics_url, timeout=1.0, trust_env=False).text
        except httpx.HTTPError:
            return {}
        out: dict[str, dict[str, float]] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == "sinergi_webhook_deliveries_total":
                    office, outcome = sample.labels.get("office", ""), sample.labels.get("outcome", "")
                    out.setdefault(office, {})[outcome] = sample.value
        return out

    def lines(self, consumer: Consumer) -> list[str]:
        deliveries = self.deliveries()
        lines = []
        for office in self._offices:
            topic = office_updates_topic(office)
            try:
                _, position = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=1.0, cached=False)
            except KafkaException:
                position = 0
            done = deliveries.get(office, {})
            if not position and not done:
                continue
            others = sum(n for outcome, n in done.items() if outcome not in ("delivered", "dead_lettered"))
            lines.append(
                f"[{topic}] feed position {position}; webhooks delivered {done.get('delivered', 0):.0f}, "
                f"dead-lettered {done.get('dead_lettered', 0):.0f}, other {others:.0f}"
            )
        return lines


class CoreTopicStatus:
    def __init__(
        self,
        settings: Settings,
        bootstrap: str,
        interval_s: float = 10.0,
        emit: Callable[[str], None] = print,
        offices: OfficeStatus | None = None,
    ) -> None:
        self._offices = offices
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
                    for office_line in self._offices.lines(consumer) if self._offices else []:
                        self._emit(office_line)
                    next_line = now + self._interval_s
        finally:
            consumer.close()
