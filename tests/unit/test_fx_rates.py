"""Reference FX rates: the record, the key, publishing through an edge producer, and the lookup the
reconciler hands to the domain (a dict stands in for the GlobalTable: last write per key wins)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from pydantic import ValidationError
from test_avro_samples import embedded_registry, started_codec
from test_domain_reconcile import T0, enroll, payment

from connectors.kafka_edge import BrokerUnavailable, InMemoryProducer
from services import fx_rates
from services.catalogue import FX_RATES
from services.domain.models import FxRate, MemberStatus, Payment
from services.domain.reconcile import (
    FX_RATE_OUT_OF_TOLERANCE,
    FX_REFERENCE_RATE_MISSING,
    ReconcilePolicy,
    on_payment,
)
from services.simulation.generators import FX_RANGES

DAY = date(2025, 8, 15)  # T0 is 10:00 WIB that day
AT = datetime(2025, 8, 15, 1, 0, tzinfo=UTC)


@pytest.fixture
async def codec():
    _store, client = embedded_registry()
    yield await started_codec(client)
    await client.aclose()


def test_key_is_currency_and_value_date() -> None:
    assert fx_rates.rate_key("MYR", DAY) == b"MYR|2025-08-15"


def test_fx_rate_normalises_and_validates() -> None:
    rate = fx_rates.fx_rate("myr", DAY, Decimal("3500.1234567"), source="OPERATOR", published_at=AT)
    assert rate == FxRate(
        currency="MYR", value_date=DAY, idr_per_unit=Decimal("3500.123457"), source="OPERATOR", published_at=AT
    )
    with pytest.raises(ValidationError):
        fx_rates.fx_rate("MYR", DAY, Decimal("0"), source="OPERATOR")
    with pytest.raises(ValidationError):
        fx_rates.fx_rate("RINGGIT", DAY, Decimal("3500"), source="OPERATOR")


@pytest.mark.parametrize("currency", sorted(FX_RANGES))
def test_simulated_rate_is_stable_per_day_near_the_centre_and_inside_the_simulator_range(currency: str) -> None:
    days = [DAY + timedelta(days=n) for n in range(60)]
    values = [fx_rates.simulated_rate(currency, d) for d in days]
    assert values == [fx_rates.simulated_rate(currency, d) for d in days]  # a restart republishes the same
    centre = fx_rates.SIMULATED_CENTRE[currency]
    low, high = FX_RANGES[currency]
    for v in values:
        assert abs(v - centre) * 100 / centre <= fx_rates.SIMULATED_DRIFT_PCT
        assert low <= v <= high
    assert len(set(values)) > 1  # it moves from day to day


def test_simulated_rates_cover_each_currency_and_day_once() -> None:
    rates = fx_rates.simulated_rates(["MYR", "HKD", "MYR", "IDR"], [DAY, DAY + timedelta(days=1), DAY], AT)
    assert [(r.currency, r.value_date) for r in rates] == [
        ("HKD", DAY),
        ("HKD", DAY + timedelta(days=1)),
        ("MYR", DAY),
        ("MYR", DAY + timedelta(days=1)),
    ]
    assert {r.source for r in rates} == {fx_rates.SOURCE_SIMULATOR}


async def test_published_rates_are_keyed_encoded_and_looked_up(codec) -> None:
    producer = InMemoryProducer()
    first = fx_rates.fx_rate("MYR", DAY, Decimal("3500"), source="OPERATOR", published_at=AT)
    other_day = fx_rates.fx_rate("MYR", DAY + timedelta(days=1), Decimal("3600"), source="OPERATOR", published_at=AT)
    corrected = fx_rates.fx_rate("MYR", DAY, Decimal("3510"), source="OPERATOR", published_at=AT)
    assert await fx_rates.publish(producer, codec, [first, other_day, corrected]) == 3
    assert {r.topic for r in producer.records} == {FX_RATES.name}
    table = {r.key: r.value for r in producer.records}  # compaction / GlobalTable: last write per key
    lookup = fx_rates.reference_lookup(table.get, lambda raw: codec.decode_model(raw, FxRate))
    assert lookup("MYR", DAY) == Decimal("3510")
    assert lookup("MYR", DAY + timedelta(days=1)) == Decimal("3600")
    assert lookup("MYR", DAY - timedelta(days=1)) is None
    assert lookup("HKD", DAY) is None


async def test_publish_stops_at_the_first_unacknowledged_rate(codec) -> None:
    producer = InMemoryProducer()
    producer.failing = "TIMEOUT"
    with pytest.raises(BrokerUnavailable):
        await fx_rates.publish(producer, codec, [fx_rates.fx_rate("MYR", DAY, Decimal("3500"), source="X")])
    assert producer.records == []


def _myr(request_id: str, bill_idr: int, bank_rate: Decimal) -> Payment:
    base = payment(request_id, bill_idr)
    return base.model_copy(
        update={
            "original_currency": "MYR",
            "original_amount": (Decimal(bill_idr) / bank_rate).quantize(Decimal("0.01")),
            "fx_rate": bank_rate,
        }
    )


def test_lookup_drives_the_domain_fx_check() -> None:
    decision = enroll()
    state, bill = decision.new_state, decision.records[0].bill_amount_idr
    assert state is not None and T0.date() == DAY
    table = {fx_rates.rate_key("MYR", DAY): b"ref"}
    lookup = fx_rates.reference_lookup(
        table.get,
        lambda _raw: FxRate.model_validate(
            {"currency": "MYR", "value_date": DAY, "idr_per_unit": "3500", "source": "T", "published_at": AT}
        ),
    )
    strict = ReconcilePolicy(fx_tolerance_pct=Decimal("2"))

    close = on_payment(state, _myr("near", bill, Decimal("3535")), policy=strict, fx_reference=lookup)  # 1% off
    assert [x.reason for x in close.exceptions] == []
    assert close.new_state is not None and close.new_state.status == MemberStatus.ACTIVE

    far = on_payment(state, _myr("far", bill, Decimal("3650")), policy=strict, fx_reference=lookup)  # ~4.3% off
    assert [x.reason for x in far.exceptions] == [FX_RATE_OUT_OF_TOLERANCE]

    empty = fx_rates.reference_lookup({}.get, lambda _raw: pytest.fail("nothing to decode"))
    missing = on_payment(state, _myr("none", bill, Decimal("3500")), policy=strict, fx_reference=empty)
    assert [x.reason for x in missing.exceptions] == [FX_REFERENCE_RATE_MISSING]


@pytest.mark.parametrize("amount_idr", [37_500, 370_000, 4_999_999])  # bills start at 37,500
def test_quote_at_converts_exactly_and_stays_near_the_reference(amount_idr: int) -> None:
    from services.domain.payment import to_idr

    reference = Decimal("3512.345678")
    value, rate = fx_rates.quote_at(amount_idr, reference)
    assert to_idr(Decimal(value), Decimal(rate)) == amount_idr
    assert abs(Decimal(rate) - reference) * 100 / reference < Decimal("1")


def test_pin_to_reference_requotes_a_foreign_payment_at_the_day_rate() -> None:
    from services.domain.payment import to_idr

    body = {
        "paidAmount": {"value": "100.00", "currency": "MYR"},
        "additionalInfo": {"fxRate": "3700.000000"},  # the far end of the simulator's range
        "trxDateTime": "2025-08-15T23:30:00+08:00",  # 22:30 WIB: value date 15 August
    }
    fx_rates.pin_to_reference(body)
    reference = fx_rates.simulated_rate("MYR", DAY)
    rate = Decimal(body["additionalInfo"]["fxRate"])
    assert to_idr(Decimal(body["paidAmount"]["value"]), rate) == 370_000  # the rupiah amount is kept
    assert abs(rate - reference) * 100 / reference < Decimal("1")
    assert body["paidAmount"]["currency"] == "MYR"
    idr = {"paidAmount": {"value": "370000.00", "currency": "IDR"}, "trxDateTime": "2025-08-15T10:00:00+07:00"}
    fx_rates.pin_to_reference(idr)
    assert idr == {"paidAmount": {"value": "370000.00", "currency": "IDR"}, "trxDateTime": "2025-08-15T10:00:00+07:00"}


def test_rate_feed_keeps_the_last_rate_per_key_and_drops_a_tombstone() -> None:
    feed = fx_rates.RateFeed("127.0.0.1:9")  # never started: apply is what the reader thread calls
    key = fx_rates.rate_key("MYR", DAY)
    feed.apply(key, b"first")
    feed.apply(key, b"corrected")
    feed.apply(None, b"keyless")  # not a rate of any day
    assert feed.get(key) == b"corrected"
    feed.apply(key, None)
    assert feed.get(key) is None
    assert not feed.ready.is_set()
