"""reconcile: enrollments.v1 + payments.v1 + reversals.v1 → members.v1 (+ reconciliation.exceptions.v1).

Every input is keyed by the participant key, so one agent sees every event of a participant in order on
one partition, beside that participant's state in the `members` table (changelog-backed). The decisions
are the domain's (services.domain.reconcile); this module decodes, looks up, stores and sends.

Reference FX rates (fx-rates.v1, one partition, compacted) are read by every worker into memory
(services.fx_rates.RateFeed): each holds every rate. A timer applies the deadlines (a held payment
ageing out, a lapse) of the states this worker owns, a bounded slice per tick, so they happen without
waiting for the member's next event.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import islice

import faust
from faust.types import TableT

from services import fx_rates, metrics
from services.batches import batches_of, phase, run_to_the_end
from services.catalogue import ENROLLMENTS, EXCEPTIONS, MEMBERS, PAYMENTS, REVERSALS
from services.context import ServiceContext
from services.dlq import dlq_reason
from services.domain.models import Enrollment, FxRate, Payment, Reversal
from services.domain.reconcile import (
    Decision,
    FxReference,
    HeldPayment,
    MemberState,
    ReconcilePolicy,
    current_record,
    exceptions_caused_by,
    on_enrollment,
    on_payment,
    on_reversal,
    on_tick,
)
from services.durable_table import DurableWrites
from services.outbox import Outbox, default_partition
from services.stage import Stage

NAME = "reconcile"
FEED_READY_WAIT_S = 30.0
TICK_INTERVAL_S = 30.0
TICK_MAX_STATES = 2000  # states decoded per tick: a large table is covered over several ticks
HELD, FX_HELD = "HELD", "FX_HELD"
AGE_BUCKETS: tuple[tuple[str, timedelta | None], ...] = (
    ("LT_1D", timedelta(days=1)),
    ("1D_7D", timedelta(days=7)),
    ("7D_30D", timedelta(days=30)),
    ("GE_30D", None),
)


def register(app: faust.App, ctx: ServiceContext) -> None:
    stage = Stage(app, NAME)
    policy = policy_of(ctx)
    source = app.topic(
        ENROLLMENTS.name,
        PAYMENTS.name,
        REVERSALS.name,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
    )
    members = app.Table(
        "members",
        default=None,
        partitions=ctx.settings.kafka_partitions,
        key_type=bytes,
        value_type=bytes,
    )
    bootstrap = ctx.settings.kafka_bootstrap
    feed = fx_rates.RateFeed(bootstrap) if bootstrap else None
    fx_reference = (
        fx_rates.reference_lookup(feed.get, lambda raw: ctx.codec.decode_model(raw, FxRate)) if feed else None
    )
    book = UnmatchedBook()
    cursor = TickCursor()
    partitions = ctx.settings.kafka_partitions

    def emit(decision: Decision, outbox: Outbox) -> None:
        for record in decision.records:
            outbox.add(
                MEMBERS.name,
                record.participant_id.encode(),
                ctx.codec.encode("sinergi.MemberRecord", record),
                [("sinergi-record-id", record.record_id.encode())],
            )
            metrics.RECONCILE_OUTCOMES.labels(f"MEMBER_{record.status.value}").inc()
            stage.observe_latency(record.updated_at)
        for exc_record in decision.exceptions:
            outbox.add(
                EXCEPTIONS.name,
                exc_record.participant_id.encode(),
                ctx.codec.encode("sinergi.ReconciliationException", exc_record),
            )
            metrics.RECONCILE_OUTCOMES.labels(exc_record.reason).inc()

    if feed is not None:

        @app.task
        async def start_feed() -> None:
            feed.start()

    # One per writer: the agent and the timer interleave at await points, and one's settle() must not take
    # (and so skip waiting for) the other's unacknowledged writes.
    writes, tick_writes = DurableWrites(members), DurableWrites(members)
    # And they take turns: a batch's writes go to the changelog only at its settle(), so a tick that read a state
    # the batch had put but not yet sent could have its newer write overtaken by the batch's older one.
    state_turn = asyncio.Lock()
    batch_max, batch_within = ctx.settings.stage_batch_max, ctx.settings.stage_batch_within_ms / 1000.0

    async def decide(event: faust.EventT) -> tuple[MemberState | None, Decision, str] | None:
        """One event against the state as this batch left it; its new state written (not yet acknowledged)."""
        stage.consumed(event)
        msg = event.message
        key = msg.key or b""
        if feed is not None and not feed.ready.is_set() and msg.topic == PAYMENTS.name:
            # Before the first FX check, the rates already published (bounded: a broker problem
            # delays the reconciler by at most this, then missing rates are flagged, not waited for).
            await asyncio.get_running_loop().run_in_executor(None, feed.ready.wait, FEED_READY_WAIT_S)
        try:
            state, decision, event_id = _decide(ctx, policy, members, key, msg.topic, msg.value or b"", fx_reference)
        except Exception as exc:  # a record we cannot decode or apply: dead-letter, keep going
            await stage.dead_letter(event, dlq_reason(exc), type(exc).__name__)
            return None
        if decision.new_state is not None:
            writes.put(msg.partition, key, decision.new_state.to_json_bytes())
        return state, decision, event_id

    def publish(key: bytes, state: MemberState | None, decision: Decision, event_id: str, outbox: Outbox) -> None:
        if decision.new_state is not None:
            observe_matches(state, decision)
            book.update(key, decision.new_state)
        if decision.is_empty:
            # Already applied: the worker may have died before the outputs reached Kafka. Send the current
            # version again (same record_id) and the exceptions this event raised (same exception_ids);
            # downstream drops what it already has.
            metrics.RECONCILE_OUTCOMES.labels("DUPLICATE_EVENT").inc()
            again = current_record(state)
            decision = Decision(
                records=[again] if again is not None else [], exceptions=exceptions_caused_by(state, event_id)
            )
        emit(decision, outbox)

    @app.agent(source, name=NAME)
    async def reconcile(stream: faust.StreamT) -> None:
        # A batch at a time: every event decided in order against the table, every state change sent to the
        # changelog, then one wait for Kafka's acknowledgement of them all, and only then the outputs. Killed
        # before the outputs, the batch's inputs are not committed: redelivered, each is recognised as applied
        # and its member's current version is sent again.
        async for events in batches_of(stream, NAME, batch_max, batch_within):
            await run_to_the_end(NAME, reconcile_batch(events))

    async def reconcile_batch(events: list[faust.EventT]) -> None:
        async with state_turn:
            await decide_settle_emit(events)

    async def decide_settle_emit(events: list[faust.EventT]) -> None:
        decided = []
        with phase(NAME, "decide"):
            for event in events:
                outcome = await decide(event)
                if outcome is not None:
                    decided.append((event.message.key or b"", *outcome))
        with phase(NAME, "settle"):
            await writes.settle()
        with phase(NAME, "emit"):
            outbox = Outbox(app, NAME)
            for key, state, decision, event_id in decided:
                publish(key, state, decision, event_id, outbox)
            await outbox.send()

    @app.timer(TICK_INTERVAL_S, on_leader=False)
    async def tick() -> None:
        owned = {tp.partition for tp in app.assignor.assigned_actives() if tp.topic == ENROLLMENTS.name}
        now = datetime.now(UTC)
        if not owned:
            book.retain(lambda _key: False)
            book.publish(now)
            return
        book.retain(lambda k: partition_of(k, partitions) in owned)
        # Only the slice's keys are hashed to their partition: murmur2 is pure Python (4 us a key), and hashing
        # (and sorting) every key of the table blocked the loop for seconds per tick at a few 100,000 members.
        for key in cursor.take(members.keys(), TICK_MAX_STATES):
            if partition_of(key, partitions) not in owned:  # a standby replica's state: its owner ticks it
                continue
            async with state_turn:
                await tick_one(key, now)
        book.publish(now)

    async def tick_one(key: bytes, now: datetime) -> None:
        stored = members.get(key)
        if not stored:
            return
        state = MemberState.from_json_bytes(stored)
        book.update(key, state)
        if not has_deadline(state):
            return
        decision = on_tick(state, now, policy=policy)
        if decision.new_state is None:
            return
        # Outside an event Faust cannot tell the changelog partition: it is the key's source partition.
        tick_writes.put(partition_of(key, partitions), key, decision.new_state.to_json_bytes())
        await tick_writes.settle()
        book.update(key, decision.new_state)
        outbox = Outbox(app, NAME)
        emit(decision, outbox)
        await outbox.send()


def policy_of(ctx: ServiceContext) -> ReconcilePolicy:
    s = ctx.settings
    return ReconcilePolicy(
        held_payment_max_age_days=s.reconcile_held_payment_max_age_days,
        fx_tolerance_pct=s.reconcile_fx_tolerance_pct,
        fx_out_of_tolerance=s.reconcile_fx_out_of_tolerance,
    )


def _decide(
    ctx: ServiceContext,
    policy: ReconcilePolicy,
    members: TableT[bytes, bytes],
    key: bytes,
    source: str,
    value: bytes,
    fx_reference: FxReference | None = None,
) -> tuple[MemberState | None, Decision, str]:
    """(the stored state, the decision, the input's event id)."""
    stored = members.get(key)
    state = MemberState.from_json_bytes(stored) if stored else None
    if source == ENROLLMENTS.name:
        enrollment = ctx.codec.decode_model(value, Enrollment)
        decision = on_enrollment(state, enrollment, ctx.tariff_table, ctx.settings.bill_validity_days, policy=policy)
        return state, decision, enrollment.event_id
    if source == REVERSALS.name:
        reversal = ctx.codec.decode_model(value, Reversal)
        return state, on_reversal(state, reversal, policy=policy), reversal.event_id
    payment = ctx.codec.decode_model(value, Payment)
    return state, on_payment(state, payment, policy=policy, fx_reference=fx_reference), payment.event_id


# --- tick and metrics helpers (pure, unit-tested) ---------------------------------------------------------
def partition_of(key: bytes, partitions: int) -> int:
    """The source partition of a participant key: the normalizers produce with the default (murmur2)
    partitioner, and the table's changelog partition is the source partition."""
    return default_partition(key, partitions)


def has_deadline(state: MemberState) -> bool:
    return bool(state.held_payments) or state.lapse_on is not None


def newly_credited(before: MemberState | None, after: MemberState) -> list[HeldPayment]:
    """Payments credited by this decision (the payment itself, or held ones an enrollment matched)."""
    earlier = {c.event_id for c in before.credits} if before is not None else set()
    return [c for c in after.credits if c.event_id not in earlier]


def observe_matches(before: MemberState | None, decision: Decision) -> None:
    after = decision.new_state
    if after is None or not decision.records:
        return
    credited_at = decision.records[-1].updated_at
    for payment in newly_credited(before, after):
        metrics.RECONCILE_TIME_TO_MATCH.observe(max(0.0, (credited_at - payment.received_at).total_seconds()))


@dataclass(frozen=True)
class Unmatched:
    kind: str
    amount_idr: int
    received_at: datetime


def unmatched_of(state: MemberState) -> list[Unmatched]:
    return [Unmatched(HELD, h.amount_idr, h.received_at) for h in state.held_payments] + [
        Unmatched(FX_HELD, h.amount_idr, h.received_at) for h in state.fx_held
    ]


def age_bucket(age: timedelta) -> str:
    for name, upper in AGE_BUCKETS:
        if upper is None or age < upper:
            return name
    return AGE_BUCKETS[-1][0]  # pragma: no cover - the last bucket has no upper bound


@dataclass
class UnmatchedBook:
    """Uncredited payments per participant key, kept as states are stored or scanned, so the gauges need
    no full table scan. After a restart it fills as the tick walks the table."""

    by_key: dict[bytes, list[Unmatched]] = field(default_factory=dict)

    def update(self, key: bytes, state: MemberState) -> None:
        items = unmatched_of(state)
        if items:
            self.by_key[key] = items
        else:
            self.by_key.pop(key, None)

    def retain(self, keep: Callable[[bytes], bool]) -> None:
        for key in [k for k in self.by_key if not keep(k)]:
            del self.by_key[key]

    def totals(self) -> dict[str, tuple[int, int]]:
        out = {HELD: (0, 0), FX_HELD: (0, 0)}
        for items in self.by_key.values():
            for item in items:
                count, value = out[item.kind]
                out[item.kind] = (count + 1, value + item.amount_idr)
        return out

    def ageing(self, now: datetime) -> dict[str, int]:
        out = {name: 0 for name, _ in AGE_BUCKETS}
        for items in self.by_key.values():
            for item in items:
                out[age_bucket(now - item.received_at)] += 1
        return out

    def publish(self, now: datetime) -> None:
        for kind, (count, value) in self.totals().items():
            metrics.RECONCILE_UNMATCHED_PAYMENTS.labels(kind).set(count)
            metrics.RECONCILE_UNMATCHED_VALUE_IDR.labels(kind).set(value)
        for bucket, count in self.ageing(now).items():
            metrics.RECONCILE_EXCEPTION_AGEING.labels(bucket).set(count)


@dataclass
class TickCursor:
    """Round-robin over a table's keys in the table's own order, ``limit`` per tick: every key present
    throughout is visited within ceil(n / limit) ticks, and one tick's work stays bounded however large the
    table grows (its slice is taken from the dict's key view in C, nothing is sorted or hashed whole)."""

    position: int = 0

    def take(self, keys: Collection[bytes], limit: int) -> list[bytes]:
        count = len(keys)
        if not count:
            self.position = 0
            return []
        limit = max(1, min(limit, count))
        start = self.position % count
        chosen = list(islice(keys, start, start + limit))
        if len(chosen) < limit:  # wrapped around the end
            chosen += islice(keys, 0, limit - len(chosen))
        self.position = start + len(chosen)
        return chosen
