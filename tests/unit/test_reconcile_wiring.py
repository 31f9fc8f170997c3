"""The reconciler's wiring helpers: which partition a key's state lives in (what the tick writes the
changelog to), which payments a decision credited (time to match), the unmatched-payments book behind
the gauges, and the tick's bounded round-robin."""

from __future__ import annotations

import math
from datetime import timedelta

from aiokafka.partitioner import DefaultPartitioner
from prometheus_client import REGISTRY
from test_domain_reconcile import PID, T0, enroll, payment

from services import reconcile as wiring
from services.domain.reconcile import MemberState, on_payment, on_tick


def test_partition_of_matches_the_producer_default_partitioner() -> None:
    partitioner = DefaultPartitioner()
    for n in range(200):
        key = f"{n:018d}".encode()
        for partitions in (1, 3, 12):
            expected = partitioner(key, list(range(partitions)), list(range(partitions)))
            assert wiring.partition_of(key, partitions) == expected


def _held_then_enrolled() -> tuple[MemberState, MemberState]:
    held = on_payment(None, payment("early", 370_000, minutes=-600))
    assert held.new_state is not None and held.new_state.held_payments
    enrolled = enroll(held.new_state)
    assert enrolled.new_state is not None
    return held.new_state, enrolled.new_state


def test_newly_credited_names_the_held_payment_an_enrollment_matched() -> None:
    before, after = _held_then_enrolled()
    assert [c.event_id for c in wiring.newly_credited(before, after)] == [before.held_payments[0].event_id]
    assert wiring.newly_credited(after, after) == []


def test_time_to_match_observes_the_wait_of_a_held_payment() -> None:
    def count_and_sum() -> tuple[float, float]:
        name = "sinergi_reconcile_time_to_match_seconds"
        return (
            REGISTRY.get_sample_value(f"{name}_count") or 0.0,
            REGISTRY.get_sample_value(f"{name}_sum") or 0.0,
        )

    held = on_payment(None, payment("early", 370_000, minutes=-600))
    assert held.new_state is not None
    decision = enroll(held.new_state)
    count, total = count_and_sum()
    wiring.observe_matches(held.new_state, decision)
    count2, total2 = count_and_sum()
    assert count2 == count + 1
    # held from T0 - 600 min until the enrollment at T0
    assert math.isclose(total2 - total, 600 * 60)
    wiring.observe_matches(held.new_state, held)  # a held payment is no match
    assert count_and_sum()[0] == count2


def test_unmatched_book_totals_ageing_and_forgetting() -> None:
    before, after = _held_then_enrolled()
    book = wiring.UnmatchedBook()
    book.update(b"a", before)
    other = on_payment(None, payment("b1", 100_000, minutes=0, pid="999999999999999999"))
    assert other.new_state is not None
    book.update(b"b", other.new_state)
    assert book.totals() == {wiring.HELD: (2, 470_000), wiring.FX_HELD: (0, 0)}
    now = T0 + timedelta(days=8)
    assert book.ageing(now) == {"LT_1D": 0, "1D_7D": 0, "7D_30D": 2, "GE_30D": 0}
    book.update(b"a", after)  # credited: no longer unmatched
    assert book.totals()[wiring.HELD] == (1, 100_000)
    book.retain(lambda key: key != b"b")  # partition moved to another worker
    assert book.by_key == {}
    book.publish(now)
    assert REGISTRY.get_sample_value("sinergi_reconcile_unmatched_payments", {"kind": "HELD"}) == 0
    assert REGISTRY.get_sample_value("sinergi_reconcile_exception_ageing_payments", {"age": "7D_30D"}) == 0


def test_age_buckets_edges() -> None:
    assert wiring.age_bucket(timedelta(hours=23)) == "LT_1D"
    assert wiring.age_bucket(timedelta(days=1)) == "1D_7D"
    assert wiring.age_bucket(timedelta(days=29, hours=23)) == "7D_30D"
    assert wiring.age_bucket(timedelta(days=30)) == "GE_30D"


def test_tick_cursor_is_bounded_and_visits_every_key() -> None:
    keys = [f"{n:03d}".encode() for n in range(10)]
    cursor = wiring.TickCursor()
    seen: list[bytes] = []
    for _ in range(math.ceil(len(keys) / 4)):
        chunk = list(cursor.take(keys, 4))
        assert 1 <= len(chunk) <= 4
        seen += chunk
    assert sorted(set(seen)) == keys
    assert list(wiring.TickCursor().take([], 4)) == []


def test_tick_cursor_walks_a_growing_table_in_its_own_order() -> None:
    # The table's key view as it is: new members are appended between ticks; each tick takes one bounded slice.
    table = {f"{n:03d}".encode(): None for n in range(10)}
    cursor = wiring.TickCursor()
    first = cursor.take(table.keys(), 4)
    assert first == list(table)[:4]
    for n in range(10, 13):
        table[f"{n:03d}".encode()] = None
    seen = list(first)
    for _ in range(math.ceil(len(table) / 4)):
        chunk = cursor.take(table.keys(), 4)
        assert len(chunk) == 4
        seen += chunk
    assert set(seen) == set(table)  # the original ten and the three added, within ceil(13 / 4) more ticks
    assert wiring.TickCursor().take(table.keys(), 100) == list(table)  # never more than the table holds


def test_has_deadline_selects_states_the_tick_can_change() -> None:
    before, _after = _held_then_enrolled()
    assert wiring.has_deadline(before)
    assert not wiring.has_deadline(MemberState(participant_id=PID))
    # what the tick does with a held payment past its age (the decision the timer stores and sends)
    aged = on_tick(before, T0 + timedelta(days=31))
    assert aged.new_state is not None and not aged.new_state.held_payments
    assert not wiring.has_deadline(aged.new_state)
