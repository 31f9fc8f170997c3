"""The pure helpers of the reconcile_statements stage and of `sinergi report daily`."""

from __future__ import annotations

import zlib
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import orjson
from prometheus_client import REGISTRY

from services.domain.daily_report import build_report
from services.domain.identity import event_uuid
from services.domain.ledger_items import changes, journal_key
from services.domain.models import EntryDetailStatus, EntryDirection, Payment, StatementEntry, StatementSource
from services.domain.statement_match import BankLedger, DecisionKind, apply_entry, apply_payment
from services.domain.statements._common import make_entry
from services.durable_table import DurableWrites
from services.ledger_table import LedgerTable
from services.reconcile_statements import (
    KEEP_DAYS,
    close_due,
    decision_value,
    exception_of,
    keep_from,
    parse_decision,
    report_size,
)
from services.report_cli import decisions_of

BANK = "MANDIRI"
PSID = "   88001"
CUSTOMER = "123456789012345678"
D = date(2025, 7, 15)
T = datetime(2025, 7, 15, 3, 0, tzinfo=UTC)  # 10:00 WIB


def pay(request_id: str, amount_idr: int = 370_000) -> Payment:
    return Payment(
        event_id=event_uuid("payment", BANK, request_id),
        participant_id=CUSTOMER,
        bank_id=BANK,
        partner_service_id=PSID,
        virtual_account_no=PSID + CUSTOMER,
        payment_request_id=request_id,
        external_id="1",
        amount_idr=amount_idr,
        original_amount=Decimal(amount_idr).quantize(Decimal("0.01")),
        original_currency="IDR",
        trx_time=T,
        trx_utc_offset_minutes=420,
        received_at=T + timedelta(seconds=2),
    )


def entry(bank_ref: str, amount: str = "370000.00", booked: date = D) -> StatementEntry:
    return make_entry(
        source=StatementSource.CAMT053,
        bank_id=BANK,
        account="*********5678",
        booking_date=booked,
        value_date=None,
        direction=EntryDirection.CREDIT,
        amount=Decimal(amount),
        currency="IDR",
        bank_ref=bank_ref,
        end_to_end_id=None,
        customer_ref=None,
        narrative=None,
        detail_status=EntryDetailStatus.BOOK,
        statement_ref="STMT-1",
        line_no=1,
        imported_at=datetime(2025, 7, 15, 17, 30, tzinfo=UTC),
    )


def test_a_match_is_no_exception_and_its_json_round_trips() -> None:
    ledger = apply_payment(BankLedger.empty(BANK), pay("REQ1")).ledger
    (decision,) = apply_entry(ledger, entry("REQ1")).decisions
    assert decision.kind is DecisionKind.MATCHED_BY_REF
    assert exception_of(decision) is None
    assert parse_decision(decision_value(decision)) == decision


def test_a_mismatch_is_an_exception_about_the_payment_and_its_entry() -> None:
    payment = pay("REQ2")
    ledger = apply_payment(BankLedger.empty(BANK), payment).ledger
    e = entry("REQ2", "360000.00")
    (decision,) = apply_entry(ledger, e).decisions
    record = exception_of(decision)
    assert record is not None
    assert (record.reason, record.participant_id, record.event_id) == ("AMOUNT_MISMATCH", CUSTOMER, payment.event_id)
    assert (record.exception_id, record.related_event_id, record.amount_idr) == (
        decision.decision_id,
        e.entry_id,
        370_000,
    )
    assert record.bank_id == BANK


def test_close_due_breaks_an_unnotified_entry_with_an_empty_participant_and_prunes() -> None:
    e = entry("UNKNOWN1")
    ledger = apply_entry(BankLedger.empty(BANK), e).ledger
    # 12 h grace after the WIB day ends: 16 Jul 00:00 WIB + 12 h = 16 Jul 05:00 UTC
    assert close_due(ledger, datetime(2025, 7, 16, 4, 59, tzinfo=UTC)).decisions == ()
    step = close_due(ledger, datetime(2025, 7, 16, 5, 0, tzinfo=UTC))
    (decision,) = step.decisions
    assert decision.kind is DecisionKind.ON_STATEMENT_NOT_NOTIFIED
    record = exception_of(decision)
    assert record is not None and record.participant_id == "" and record.event_id == e.entry_id
    assert record.related_event_id is None
    assert step.ledger.closed_days == (D,)
    # KEEP_DAYS later the closed day is forgotten: the ledger does not grow with history
    later = close_due(step.ledger, datetime(2025, 7, 16, 5, 0, tzinfo=UTC) + timedelta(days=KEEP_DAYS + 1))
    assert later.decisions == () and later.ledger == BankLedger.empty(BANK)


def test_keep_from_is_a_wib_date() -> None:
    # 18:00 UTC is already the next day in WIB
    assert keep_from(datetime(2025, 7, 15, 18, 0, tzinfo=UTC)) == date(2025, 7, 16) - timedelta(days=KEEP_DAYS)


def test_ledger_table_rebuilds_what_it_stored_and_a_partial_write_completes() -> None:
    table: dict[bytes, bytes] = {}
    book = LedgerTable(table)
    empty = book.get(BANK)
    assert empty == BankLedger.empty(BANK)
    one = apply_payment(empty, pay("REQ3")).ledger
    two = apply_entry(one, entry("REQ3")).ledger  # settles: items move between collections
    book.put(empty, one)
    assert book.put(one, two) > 0
    assert book.put(two, two) == 0
    assert LedgerTable(dict(table)).get(BANK) == two

    # killed after the journal and one item of the next step: the rebuild is the ledger after the step, and it
    # writes the missing items again so the next journal can take the slot
    three = apply_payment(two, pay("REQ5")).ledger
    writes = changes(two, three)
    crashed = dict(table)
    crashed[journal_key(BANK).encode()] = zlib.compress(orjson.dumps(writes))
    key, value = writes[0]
    crashed[key.encode()] = orjson.dumps(value)
    restarted = LedgerTable(crashed)
    assert restarted.get(BANK) == three
    four = apply_payment(three, pay("REQ6")).ledger
    restarted.put(three, four)
    assert LedgerTable(dict(crashed)).get(BANK) == four
    assert restarted.rebuilds == 1


def test_decisions_of_keeps_one_bank_and_counts_unreadable_records() -> None:
    ledger = apply_payment(BankLedger.empty(BANK), pay("REQ4")).ledger
    (decision,) = apply_entry(ledger, entry("REQ4")).decisions
    other = decision.model_copy(update={"bank_id": "BNI", "decision_id": "x"})
    records = [
        (BANK.encode(), decision_value(decision)),
        (BANK.encode(), decision_value(decision)),  # a redelivery
        (b"BNI", decision_value(other)),
        (BANK.encode(), b"not json"),
        (BANK.encode(), None),
    ]
    chosen, unreadable = decisions_of(records, BANK)
    assert chosen == [decision, decision] and unreadable == 1
    report = build_report(chosen, BANK, D)
    assert report.category("MATCHED_BY_REF").decisions == 1
    assert report.category("MATCHED_BY_REF").amount_idr == 370_000


class TableData(dict[bytes, bytes]):
    """A mapping that is also its own ``data``, as DurableWrites writes a Faust table's local store."""

    @property
    def data(self) -> TableData:
        return self


def test_ledger_writes_go_to_the_partition_the_caller_names() -> None:
    table = TableData()
    writes = DurableWrites(table)
    book = LedgerTable(table, writes)
    empty = book.get(BANK, partition=2)
    one = apply_payment(empty, pay("REQ7")).ledger
    written = book.put(empty, one, partition=2)
    assert written > 0 and writes.unsettled == written + 1  # the journal, then each item
    assert {partition for partition, _, _ in writes._unsent} == {2}
    assert LedgerTable(TableData(table)).get(BANK) == one, "applied locally at once: later inputs read it"

    # a journal left by a crash: the rebuild writes its items again, to the partition of the input that asked
    two = apply_payment(one, pay("REQ8")).ledger
    crashed = TableData(table)
    crashed[journal_key(BANK).encode()] = zlib.compress(orjson.dumps(changes(one, two)))
    again = DurableWrites(crashed)
    assert LedgerTable(crashed, again).get(BANK, partition=1) == two
    assert again.unsettled == len(changes(one, two)) and {p for p, _, _ in again._unsent} == {1}


def test_the_ledger_size_gauge_follows_the_items_held_and_their_pruning() -> None:
    def held(collection: str) -> float | None:
        return REGISTRY.get_sample_value("sinergi_statement_ledger_items", {"bank": BANK, "collection": collection})

    ledger = apply_payment(BankLedger.empty(BANK), pay("SIZE1")).ledger
    ledger = apply_payment(ledger, pay("SIZE2")).ledger
    ledger = apply_entry(ledger, entry("SIZE1")).ledger
    report_size(ledger)
    assert (held("settled"), held("open_payments"), held("seen_events"), held("seen_entries")) == (1, 1, 2, 2)
    assert held("open_entries") == 0
    # a day closed and KEEP_DAYS gone: the gauge shows the pruned ledger
    report_size(close_due(ledger, datetime(2025, 7, 16, 5, 0, tzinfo=UTC) + timedelta(days=KEEP_DAYS + 1)).ledger)
    assert (held("settled"), held("open_payments"), held("seen_events"), held("seen_entries")) == (0, 0, 0, 0)
