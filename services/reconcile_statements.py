"""reconcile_statements: payments.v1 + statement-entries.v1 → reconciliation.statements.v1 (+ exceptions,
+ reversals.v1 for the member reconciler).

The matching is the domain's (services.domain.statement_match); this module routes, stores and sends.

Partitioning. Statement entries are keyed by bank id, payments by participant key. A first agent re-keys
every payment by its bank id onto ``reconcile_statements.by-bank.v1`` (the Avro bytes unchanged, header
``sinergi-kind: payment``); that topic and statement-entries.v1 have the same partition count and the same
key, so the second agent sees every payment and entry of one bank in order on one partition, next to the
bank's ledger.

One ledger per bank, stored as items. A payment's VA rule looks one day either side, so the domain keeps one
``BankLedger`` per bank (not per day); :class:`services.ledger_table.LedgerTable` stores each of its entries as
its own key of the ``statement_ledger_items`` table (changelog-backed) and writes only what an input changed,
atomically through a one-slot journal (:mod:`services.domain.ledger_items`). An input costs the items it touched,
not the ledger's size; every close prunes the closed days older than :data:`KEEP_DAYS` (raw topics keep 7 days,
so nothing older can be redelivered as a duplicate). The ledgers are held in memory between inputs and rebuilt
from the table after a start or a rebalance.

Closing days. A Faust timer must not write a table (no current event, no changelog partition), so the timer
only produces a ``sinergi-kind: tick`` record per configured bank onto the same by-bank topic; the agent
handles it in order with that bank's items: :func:`~services.domain.statement_match.due_closures`, then
``close_day`` for each, then ``prune``. Several workers each sending ticks is harmless: closing twice is a
no-op.

Ordering. The ledger is written only after Kafka acknowledged every decision it caused (like
normalize_statements): killed in between, the input is redone and the same decisions (same ids) are sent
again, which :func:`~services.domain.statement_match.effective` drops; the other order could lose them.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from typing import Any, cast

import faust

from services import metrics
from services.app import topic
from services.batches import batches_of, phase, run_to_the_end
from services.catalogue import (
    EXCEPTIONS,
    PAYMENTS,
    REVERSALS,
    STATEMENT_DECISIONS,
    STATEMENT_ENTRIES,
    STATEMENTS_BY_BANK,
)
from services.context import ServiceContext
from services.dlq import dlq_reason
from services.domain.dates import wib_date
from services.domain.ledger_items import COLLECTIONS, SEP
from services.domain.models import Payment, ReconciliationException, StatementEntry
from services.domain.statement_match import (
    BREAKS,
    BankLedger,
    Decision,
    Step,
    apply_entry,
    apply_payment,
    close_day,
    due_closures,
    prune,
    reversal_of,
)
from services.durable_table import DurableWrites
from services.ledger_table import LedgerTable
from services.outbox import Outbox, default_partition
from services.stage import Stage, header_map

NAME = "reconcile_statements"
REKEY_NAME = "reconcile_statements_rekey"  # its agent; it shares the stage (metrics, dlq) with NAME
LEDGER_TABLE = "statement_ledger_items"  # one key per ledger item
KIND_HEADER = "sinergi-kind"
KIND_PAYMENT = b"payment"
KIND_TICK = b"tick"
KEEP_DAYS = 8
ITEM_SEP = SEP.encode()
TICK_INTERVAL_S = 300.0  # the close grace is hours; a tick every 5 minutes is punctual enough


def decision_value(decision: Decision) -> bytes:
    """The JSON of a decision on reconciliation.statements.v1 (ids, codes, amounts as decimal strings)."""
    return decision.model_dump_json().encode()


def parse_decision(value: bytes) -> Decision:
    return Decision.model_validate_json(value)


def exception_of(decision: Decision) -> ReconciliationException | None:
    """The reconciliation.exceptions.v1 record of a break, None for a match.

    An entry no notification explains has no participant: ``participant_id`` is "" (the field is required).
    ``event_id`` is the payment's event when one is involved, else the entry's id; ``related_event_id`` the
    entry beside a payment.
    """
    if decision.kind not in BREAKS:
        return None
    event_id = decision.payment_event_id or decision.entry_id or decision.decision_id
    related = decision.entry_id if decision.payment_event_id else None
    return ReconciliationException(
        exception_id=decision.decision_id,
        participant_id=decision.participant_id or "",
        reason=decision.kind.value,
        event_id=event_id,
        bank_id=decision.bank_id,
        amount_idr=decision.amount_idr,
        detail=decision.detail,
        occurred_at=decision.decided_at,
        related_event_id=related,
    )


def keep_from(now: datetime) -> date:
    """Closed days before this WIB date are pruned from a ledger."""
    return wib_date(now) - timedelta(days=KEEP_DAYS)


def close_due(ledger: BankLedger, now: datetime, grace: timedelta | None = None) -> Step:
    """Close every day :func:`due_closures` names, then prune; one Step with all the decisions."""
    decisions: list[Decision] = []
    days = due_closures(ledger, now) if grace is None else due_closures(ledger, now, grace)
    for day in days:
        step = close_day(ledger, ledger.bank_id, day, now)
        ledger = step.ledger
        decisions.extend(step.decisions)
    return Step(prune(ledger, keep_from(now)), tuple(decisions))


class BankPartitions:
    """The changelog partition of a ledger item: its bank's (items are written to the partition of the bank's
    inputs, which are keyed by bank id and placed by the default murmur2 partitioner). Cached per bank: murmur2
    is pure Python."""

    def __init__(self, partitions: int) -> None:
        self.partitions = partitions
        self._of_bank: dict[bytes, int] = {}

    def __call__(self, key: bytes) -> int | None:
        bank, sep, _ = key.partition(ITEM_SEP)
        if not sep:
            return None
        partition = self._of_bank.get(bank)
        if partition is None:
            partition = self._of_bank[bank] = default_partition(bank, self.partitions)
        return partition


def report_size(ledger: BankLedger) -> None:
    """The ledger's items per collection on the gauge (len of a layered collection costs its overlay only)."""
    for collection in COLLECTIONS:
        metrics.STATEMENT_LEDGER_ITEMS.labels(ledger.bank_id, collection).set(len(getattr(ledger, collection)))


def register(app: faust.App, ctx: ServiceContext) -> None:
    stage = Stage(app, NAME)
    by_bank = topic(app, STATEMENTS_BY_BANK.name)
    reversal_schema = REVERSALS.value_schema or "sinergi.Reversal"
    exception_schema = EXCEPTIONS.value_schema or "sinergi.ReconciliationException"
    table = app.Table(
        LEDGER_TABLE,
        default=None,
        partitions=ctx.settings.kafka_partitions,
        key_type=bytes,
        value_type=bytes,
    )
    cast(Any, table).partition_of_key = BankPartitions(ctx.settings.kafka_partitions)  # GET /state, worker_health.py
    source = app.topic(
        STATEMENTS_BY_BANK.name,
        STATEMENT_ENTRIES.name,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
    )

    batch_max, batch_within = ctx.settings.stage_batch_max, ctx.settings.stage_batch_within_ms / 1000.0

    @app.agent(topic(app, PAYMENTS.name), name=REKEY_NAME)
    async def rekey(stream: faust.StreamT) -> None:
        async for events in batches_of(stream, REKEY_NAME, batch_max, batch_within):
            await run_to_the_end(REKEY_NAME, rekey_batch(events))

    async def rekey_batch(events: list[faust.EventT]) -> None:
        outbox = Outbox(app, NAME)
        for event in events:
            stage.consumed(event)
            value = event.message.value
            try:
                bank_id = ctx.codec.decode_model(value, Payment).bank_id
            except Exception as exc:  # undecodable: dead-letter, keep going
                stage.dead_letter_into(outbox, event, dlq_reason(exc), type(exc).__name__)
                continue
            outbox.add(STATEMENTS_BY_BANK.name, bank_id.encode(), value, [(KIND_HEADER, KIND_PAYMENT)])
        with phase(REKEY_NAME, "emit"):
            await outbox.send()

    @app.timer(interval=TICK_INTERVAL_S)
    async def tick() -> None:
        for bank_id in sorted(ctx.banks):
            await by_bank.send(key=bank_id.encode(), value=b"", headers=[(KIND_HEADER, KIND_TICK)])

    ledger_writes = DurableWrites(table)
    ledgers = LedgerTable(table, ledger_writes)

    # mode types receivers with a string forward reference mypy cannot match; any def is accepted at runtime.
    @app.on_partitions_revoked.connect  # type: ignore[arg-type]
    def forget_on_revoke(sender: Any, *args: Any, signal: Any = None, **kwargs: Any) -> None:
        ledgers.forget()
        metrics.STATEMENT_LEDGER_ITEMS.clear()  # a bank this worker no longer holds must not stay on its gauge

    @app.on_partitions_assigned.connect  # type: ignore[arg-type]
    def forget_on_assign(sender: Any, *args: Any, signal: Any = None, **kwargs: Any) -> None:
        ledgers.forget()
        metrics.STATEMENT_LEDGER_ITEMS.clear()

    async def emit(decisions: Iterable[Decision]) -> None:
        outbox = Outbox(app, NAME)
        for d in decisions:
            outbox.add(STATEMENT_DECISIONS.name, d.bank_id.encode(), decision_value(d))
            record = exception_of(d)
            if record is not None:
                outbox.add(EXCEPTIONS.name, record.participant_id.encode(), ctx.codec.encode(exception_schema, record))
            reversal = reversal_of(d)
            if reversal is not None:  # the member goes back: keyed like its other events, same partition
                value = ctx.codec.encode(reversal_schema, reversal)
                outbox.add(REVERSALS.name, reversal.participant_id.encode(), value)
            metrics.STATEMENT_DECISIONS.labels(d.bank_id, d.kind.value).inc()
        await outbox.send()  # raises when Kafka refused: the caller crashes before the ledger is written

    @app.agent(source, name=NAME)
    async def reconcile(stream: faust.StreamT) -> None:
        # A batch at a time (services/batches.py): each input applied in order to its bank's ledger as the batch
        # left it, then every decision sent and acknowledged at once, then each touched ledger stored once.
        async for events in batches_of(stream, NAME, batch_max, batch_within):
            await run_to_the_end(NAME, reconcile_batch(events))

    async def reconcile_batch(events: list[faust.EventT]) -> None:
        first: dict[str, tuple[BankLedger, int]] = {}  # bank -> its ledger before the batch, its partition
        working: dict[str, BankLedger] = {}  # bank -> its ledger after the batch's inputs so far
        decisions: list[Decision] = []

        def ledger_of(bank_id: str, partition: int) -> BankLedger:
            return working[bank_id] if bank_id in working else ledgers.get(bank_id, partition)

        for event in events:
            stage.consumed(event)
            msg = event.message
            kind = header_map(msg.headers).get(KIND_HEADER) if msg.topic == STATEMENTS_BY_BANK.name else None
            try:
                if msg.topic == STATEMENT_ENTRIES.name:
                    entry = ctx.codec.decode_model(msg.value or b"", StatementEntry)
                    bank_id = entry.bank_id
                    before = ledger_of(bank_id, msg.partition)
                    step = apply_entry(before, entry)
                elif kind == KIND_TICK:
                    bank_id = (msg.key or b"").decode()
                    before = ledger_of(bank_id, msg.partition)
                    step = close_due(before, datetime.now(UTC))
                else:
                    payment = ctx.codec.decode_model(msg.value or b"", Payment)
                    bank_id = payment.bank_id
                    before = ledger_of(bank_id, msg.partition)
                    step = apply_payment(before, payment)
            except Exception as exc:  # a record we cannot decode or apply: dead-letter, keep going
                await stage.dead_letter(event, dlq_reason(exc), type(exc).__name__)
                continue
            if step.duplicate:
                metrics.STATEMENT_DECISIONS.labels(bank_id, "DUPLICATE").inc()
                continue
            first.setdefault(bank_id, (before, msg.partition))
            working[bank_id] = step.ledger
            decisions.extend(step.decisions)
        with phase(NAME, "emit"):
            await emit(decisions)  # acknowledged before the ledgers move on (module docstring, "Ordering")
        with phase(NAME, "settle"):
            for bank_id, (before, partition) in first.items():
                ledgers.put(before, working[bank_id], partition)  # an idle tick changes nothing and writes nothing
            await ledger_writes.settle()
        for bank_id in first:
            report_size(working[bank_id])
