"""A bank ledger stored as items: rebuilt equal after any steps, and after a crash mid-write never a mix."""

from __future__ import annotations

import random
from datetime import date
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_statement_match import ALL_DAYS, BANK, CLOSE_AT, PROPERTY, entry, pay, scenarios

from services.domain import layered_map
from services.domain.ledger_items import (
    SEP,
    Change,
    changes,
    closed_days_key,
    item_key,
    journal_key,
    ledger_from_items,
    ledger_items,
)
from services.domain.models import Payment, StatementEntry
from services.domain.statement_match import BankLedger, Step, apply_entry, apply_payment, close_day, prune


def step_of(ledger: BankLedger, event: Payment | StatementEntry | date) -> Step:
    if isinstance(event, date):
        return close_day(ledger, BANK, event, CLOSE_AT)
    if isinstance(event, Payment):
        return apply_payment(ledger, event)
    return apply_entry(ledger, event)


def store(items: dict[str, Any], writes: list[Change]) -> None:
    for key, value in writes:
        if value is None:
            items.pop(key, None)
        else:
            items[key] = value


def test_an_empty_ledger_has_no_items_and_rebuilds_empty() -> None:
    assert ledger_items(BankLedger.empty(BANK)) == []
    assert ledger_from_items(BANK, []) == BankLedger.empty(BANK)


def test_a_step_writes_only_what_it_changed() -> None:
    first = apply_payment(BankLedger.empty(BANK), pay("PRQ-1")).ledger
    second = apply_payment(first, pay("PRQ-2", customer="000000000000000002"))
    keys = [k for k, _ in changes(first, second.ledger)]
    event = second.ledger.seen_events.keys() - first.seen_events.keys()
    (new_id,) = event
    assert sorted(keys) == sorted([item_key(BANK, "open_payments", new_id), item_key(BANK, "seen_events", new_id)])


def test_a_settlement_moves_items_and_deletes_the_open_ones() -> None:
    ledger = apply_payment(BankLedger.empty(BANK), pay("PRQ-1")).ledger
    (pid,) = ledger.open_payments
    after = apply_entry(ledger, entry("PRQ-1")).ledger
    writes = dict(changes(ledger, after))
    assert writes[item_key(BANK, "open_payments", pid)] is None
    assert item_key(BANK, "settled", pid) in writes
    assert list(writes).index(item_key(BANK, "open_payments", pid)) > list(writes).index(
        item_key(BANK, "settled", pid)
    )  # upserts first: a prefix never loses the item from both places


def test_closed_days_and_prune_are_items_too() -> None:
    ledger = apply_payment(BankLedger.empty(BANK), pay("PRQ-1")).ledger
    closed = close_day(ledger, BANK, ALL_DAYS[2], CLOSE_AT).ledger
    writes = dict(changes(ledger, closed))
    assert writes[closed_days_key(BANK)] == [ALL_DAYS[2].isoformat()]
    pruned = prune(closed, ALL_DAYS[-1])
    items: dict[str, Any] = {}
    store(items, ledger_items(closed))
    store(items, changes(closed, pruned))
    assert ledger_from_items(BANK, items.items()) == pruned


def test_other_banks_and_the_journal_slot_are_not_items_of_this_bank() -> None:
    mine = apply_payment(BankLedger.empty(BANK), pay("PRQ-1")).ledger
    theirs = apply_payment(BankLedger.empty("BNI"), pay("PRQ-9", bank="BNI")).ledger
    items = [*ledger_items(mine), *ledger_items(theirs), (journal_key(BANK), [["x", 1]])]
    assert ledger_from_items(BANK, items) == mine
    assert ledger_from_items("BNI", items) == theirs


def test_a_bank_id_with_the_separator_is_refused() -> None:
    with pytest.raises(ValueError):
        item_key("BAD" + SEP, "settled", "1")


@PROPERTY
@given(scenarios(), st.randoms(use_true_random=False))
def test_items_rebuild_the_ledger_after_every_step(
    scenario: tuple[list[Payment], list[StatementEntry]], rnd: random.Random
) -> None:
    payments, entries = scenario
    events: list[Payment | StatementEntry | date] = [*payments, *entries, *entries[:2], *ALL_DAYS[:3]]
    rnd.shuffle(events)
    ledger = BankLedger.empty(BANK)
    items: dict[str, Any] = {}
    for event in [*events, *ALL_DAYS]:
        step = step_of(ledger, event)
        store(items, changes(ledger, step.ledger))
        ledger = step.ledger
        assert ledger_from_items(BANK, items.items()) == ledger


@PROPERTY
@given(scenarios(), st.randoms(use_true_random=False), st.data())
def test_a_crash_mid_write_rebuilds_the_ledger_before_or_after_the_step(
    scenario: tuple[list[Payment], list[StatementEntry]], rnd: random.Random, data: st.DataObject
) -> None:
    """The stage writes the change set to the journal slot first, then the items, in one ordered log; any
    prefix of those writes rebuilds to one of the two ledgers, never a mix."""
    payments, entries = scenario
    events: list[Payment | StatementEntry | date] = [*payments, *entries]
    rnd.shuffle(events)
    ledger = BankLedger.empty(BANK)
    items: dict[str, Any] = {}
    journal: list[Change] = []
    for event in [*events, *ALL_DAYS]:
        step = step_of(ledger, event)
        writes = changes(ledger, step.ledger)
        log: list[tuple[str, Any]] = [(journal_key(BANK), writes), *writes]
        cut = data.draw(st.integers(min_value=0, max_value=len(log)))
        survived = dict(items)
        survived_journal = journal
        for key, value in log[:cut]:
            if key == journal_key(BANK):
                survived_journal = value
            else:
                store(survived, [(key, value)])
        rebuilt = ledger_from_items(BANK, survived.items(), survived_journal)
        assert rebuilt == (step.ledger if cut >= 1 else ledger)
        store(items, writes)
        journal = writes
        ledger = step.ledger


@PROPERTY
@given(scenarios(), st.randoms(use_true_random=False), st.integers(min_value=1, max_value=12))
def test_a_batch_of_steps_over_folded_collections_writes_what_changed(
    scenario: tuple[list[Payment], list[StatementEntry]], rnd: random.Random, batch: int
) -> None:
    """The stage stores a bank's ledger once per batch: the changes between the ledger before and after many
    steps, over which each layered collection folded (MIN_OVERLAY 0: at nearly every step) and the changed keys
    come from the folds."""
    payments, entries = scenario
    events: list[Payment | StatementEntry | date] = [*payments, *entries, *ALL_DAYS[:2]]
    rnd.shuffle(events)
    events += ALL_DAYS
    ledger = BankLedger.empty(BANK)
    items: dict[str, Any] = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(layered_map, "MIN_OVERLAY", 0)
        for start in range(0, len(events), batch):
            before = ledger
            for event in events[start : start + batch]:
                ledger = step_of(ledger, event).ledger
            writes = changes(before, ledger)
            assert len({key for key, _ in writes}) == len(writes)
            store(items, writes)
            assert ledger_from_items(BANK, items.items()) == ledger
