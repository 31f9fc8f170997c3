"""Reference FX rates on fx-rates.v1: publishing (`sinergi fx publish`, the simulator) and the lookup the
reconciler hands to the domain (services.domain.reconcile.FxReference).

The record key is ``CURRENCY|YYYY-MM-DD``, not the currency alone: the topic is compacted, and a payment
is checked against the rate of its own value date, so every day of a currency must survive compaction.
A rate published again for the same day replaces the earlier one (last write wins).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
from collections.abc import Callable, Iterable
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from connectors.kafka_edge import BrokerUnavailable, EdgeProducer, EdgeSender
from services import metrics
from services.catalogue import FX_RATES
from services.config import Settings
from services.domain.dates import wib_date
from services.domain.models import FxRate
from services.domain.payment import to_idr
from services.domain.reconcile import FxReference

log = logging.getLogger(__name__)
_QUIET = logging.getLogger("sinergi.fx.librdkafka")
_QUIET.setLevel(logging.CRITICAL)

SCHEMA = "sinergi.FxRate"
SOURCE_OPERATOR = "OPERATOR"
SOURCE_SIMULATOR = "SIMULATOR"
RATE_STEP = Decimal("0.000001")
EXIT_OK, EXIT_UNAVAILABLE = 0, 69

#: Centre of the simulator's rate range per currency (services.simulation.generators.FX_RANGES).
SIMULATED_CENTRE: dict[str, Decimal] = {
    "MYR": Decimal("3575"),
    "HKD": Decimal("2050"),
    "TWD": Decimal("505"),
    "SGD": Decimal("12200"),
}
#: How far a simulated day's rate moves from the centre, in percent either way.
SIMULATED_DRIFT_PCT = Decimal("0.5")


def rate_key(currency: str, value_date: date) -> bytes:
    return f"{currency}|{value_date.isoformat()}".encode()


def fx_rate(
    currency: str, value_date: date, idr_per_unit: Decimal, *, source: str, published_at: datetime | None = None
) -> FxRate:
    """A validated FxRate (upper-case ISO code, positive rate at 6 decimals); ValueError otherwise."""
    at = published_at or datetime.now(UTC)
    return FxRate(
        currency=currency.upper(),
        value_date=value_date,
        idr_per_unit=idr_per_unit.quantize(RATE_STEP, ROUND_HALF_UP),
        source=source,
        published_at=at.replace(microsecond=at.microsecond // 1000 * 1000),
    )


def simulated_rate(currency: str, value_date: date) -> Decimal:
    """The simulator's reference rate of one day: the centre moved by a deterministic drift (same day, same
    rate, so a restarted simulator republishes identical values)."""
    centre = SIMULATED_CENTRE[currency]
    digest = hashlib.sha256(rate_key(currency, value_date)).digest()
    unit = Decimal(int.from_bytes(digest[:4], "big")) / Decimal(2**32 - 1)  # 0..1
    drift = (unit * 2 - 1) * SIMULATED_DRIFT_PCT / 100
    return (centre * (1 + drift)).quantize(RATE_STEP, ROUND_HALF_UP)


async def publish(producer: EdgeSender, codec: Any, rates: Iterable[FxRate]) -> int:
    """Produce each rate and wait for Kafka's acknowledgement; returns how many were acknowledged.
    Raises BrokerUnavailable on the first one Kafka refused."""
    count = 0
    for rate in rates:
        await producer.send(
            FX_RATES.name,
            rate_key(rate.currency, rate.value_date),
            codec.encode(SCHEMA, rate),
            [("sinergi-source", rate.source.encode())],
        )
        count += 1
    return count


def reference_lookup(get: Callable[[bytes], bytes | None], decode: Callable[[bytes], FxRate]) -> FxReference:
    """The domain's FxReference over a key -> encoded FxRate store (the reconciler's GlobalTable)."""

    def lookup(currency: str, value_date: date) -> Decimal | None:
        raw = get(rate_key(currency, value_date))
        if not raw:
            return None
        return decode(raw).idr_per_unit

    return lookup


def publish_rates(settings: Settings, bootstrap: str, codec: Any, rates: list[FxRate]) -> int:
    """Publish with a short-lived edge producer (the CLI and the simulator hook)."""

    async def run() -> int:
        producer = EdgeProducer(settings, bootstrap, client_id="sinergi-fx")
        producer.start()
        try:
            return await publish(producer, codec, rates)
        finally:
            await producer.close()

    return asyncio.run(run())


def publish_command(
    settings: Settings,
    bootstrap: str,
    codec: Any,
    rate: FxRate,
    echo: Callable[[str], None] = print,
) -> int:
    """`sinergi fx publish`: exit status 0, or 69 when Kafka did not acknowledge (publish again)."""
    try:
        publish_rates(settings, bootstrap, codec, [rate])
    except BrokerUnavailable as exc:
        echo(f"Kafka did not acknowledge the rate ({exc.reason}); publish it again")
        return EXIT_UNAVAILABLE
    echo(f"published {rate.currency} {rate.value_date.isoformat()} = {rate.idr_per_unit} IDR ({rate.source})")
    return EXIT_OK


def simulated_rates(currencies: Iterable[str], days: Iterable[date], published_at: datetime) -> list[FxRate]:
    """The simulator hook: one reference rate per currency and day it pays with."""
    return [
        fx_rate(c, d, simulated_rate(c, d), source=SOURCE_SIMULATOR, published_at=published_at)
        for c in sorted(set(currencies))
        if c in SIMULATED_CENTRE
        for d in sorted(set(days))
    ]


def quote_at(amount_idr: int, reference: Decimal) -> tuple[str, str]:
    """``(paidAmount.value, fxRate)`` at about ``reference`` that convert to exactly ``amount_idr``
    (services.domain.payment.to_idr): the value is rounded to cents, so the rate moves off the reference
    by at most half a cent per unit paid."""
    if amount_idr <= 0:
        raise ValueError("amount_idr must be positive")
    value = max(Decimal("0.01"), (Decimal(amount_idr) / reference).quantize(Decimal("0.01"), ROUND_HALF_UP))
    rate = (Decimal(amount_idr) / value).quantize(RATE_STEP, ROUND_HALF_UP)
    for _ in range(1000):  # |value * rate - amount| <= value * 5e-7: a step or two off at most
        got = to_idr(value, rate)
        if got == amount_idr:
            return f"{value:.2f}", f"{rate:f}"
        rate += RATE_STEP if got < amount_idr else -RATE_STEP
    raise ValueError("no 6-decimal rate converts this value exactly")  # pragma: no cover


def pin_to_reference(body: dict[str, Any]) -> None:
    """The simulator hook for a payment: a foreign-currency notification is re-quoted at the simulated
    reference rate of its value date (WIB date of trxDateTime), so the reconciler's FX check passes.
    The rupiah amount is unchanged; an IDR payment or a currency without a simulated rate is left alone."""
    paid = body.get("paidAmount") or {}
    currency, info = paid.get("currency"), body.get("additionalInfo") or {}
    if currency not in SIMULATED_CENTRE or "fxRate" not in info:
        return
    amount_idr = to_idr(Decimal(paid["value"]), Decimal(info["fxRate"]))
    day = wib_date(datetime.fromisoformat(body["trxDateTime"]))
    value, rate = quote_at(amount_idr, simulated_rate(currency, day))
    body["paidAmount"] = {**paid, "value": value}
    body["additionalInfo"] = {**info, "fxRate": rate}


def simulated_rates_around(at: datetime) -> list[FxRate]:
    """The simulated reference rates of yesterday, today and tomorrow (WIB) of ``at``, every simulated currency:
    what a run near midnight needs for every payment to find its value date."""
    from datetime import timedelta

    today = wib_date(at)
    return simulated_rates(SIMULATED_CENTRE, [today + timedelta(days=n) for n in (-1, 0, 1)], at)


def publish_simulated(settings: Settings, echo: Callable[[str], None] = print, now: datetime | None = None) -> int:
    """At simulator start: the simulated reference rates of yesterday, today and tomorrow (WIB), so every
    payment of a run near midnight finds its value date. Best effort: without a broker or registry the
    simulator still runs, and the reconciler flags FX_REFERENCE_RATE_MISSING."""
    from services.codec import build_codec
    from services.explain_cli import cli_settings
    from services.supervisor import read_bootstrap_file

    at = now or datetime.now(UTC)
    bootstrap = settings.kafka_bootstrap or read_bootstrap_file(settings.data_dir)
    if bootstrap is None:
        echo("simulator: no broker known; reference FX rates not published")
        return 0
    try:
        codec = build_codec(cli_settings(settings))
        count = publish_rates(settings, bootstrap, codec, simulated_rates_around(at))
    except Exception as exc:  # best effort, see above
        echo(f"simulator: reference FX rates not published ({type(exc).__name__})")
        return 0
    echo(f"simulator: published {count} reference FX rates ({', '.join(sorted(SIMULATED_CENTRE))})")
    return count


class RateFeed:
    """Every reference rate of fx-rates.v1, in memory, kept current by a reader thread (all partitions
    assigned from the beginning, no consumer group): each reconciler worker holds every rate, like a
    GlobalTable would. (faust-streaming 0.15's GlobalTable hung this worker's partition assignment on
    the embedded broker, so the feed reads the topic itself.) ``ready`` is set once the reader has caught
    up with the end offsets it saw at start."""

    def __init__(self, bootstrap: str, poll_s: float = 0.5) -> None:
        self._bootstrap = bootstrap
        self._poll_s = poll_s
        self._rates: dict[bytes, bytes] = {}
        self._stop = threading.Event()
        self.ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fx-rate-feed", daemon=True)

    def get(self, key: bytes) -> bytes | None:
        return self._rates.get(key)

    def apply(self, key: bytes | None, value: bytes | None) -> None:
        """One record of the topic: a rate, or a tombstone (a withdrawn rate)."""
        if key is None:
            return
        if value:
            self._rates[key] = value
        else:
            self._rates.pop(key, None)
        metrics.FX_FEED_RECORDS.inc()  # after the store: a reader of the counter may rely on the rate being there

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)

    def _run(self) -> None:
        from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

        consumer = Consumer(
            {
                "bootstrap.servers": self._bootstrap,
                "group.id": "sinergi-fx-feed",  # librdkafka wants one; partitions are assigned, nothing committed
                "enable.auto.commit": False,
                "logger": _QUIET,
            }
        )
        try:
            ends: dict[int, int] = {}
            while not self._stop.is_set():
                try:
                    topic = consumer.list_topics(FX_RATES.name, timeout=5).topics.get(FX_RATES.name)
                    if topic is not None and topic.error is None and topic.partitions:
                        for p in topic.partitions:
                            low, high = consumer.get_watermark_offsets(TopicPartition(FX_RATES.name, p), timeout=5)
                            if high > low:
                                ends[p] = high
                        consumer.assign([TopicPartition(FX_RATES.name, p, OFFSET_BEGINNING) for p in topic.partitions])
                        break
                except KafkaException:
                    pass
                self._stop.wait(self._poll_s)
            if not ends:
                self.ready.set()
            while not self._stop.is_set():
                for msg in consumer.consume(num_messages=500, timeout=self._poll_s):
                    if msg.error():
                        continue
                    self.apply(msg.key(), msg.value())
                    offset, partition = msg.offset(), msg.partition()
                    if partition in ends and offset is not None and offset + 1 >= ends[partition]:
                        del ends[partition]
                        if not ends:
                            log.info("fx rate feed caught up")
                            self.ready.set()
        finally:
            consumer.close()
