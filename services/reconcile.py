"""reconcile: enrollments.v1 + payments.v1 → members.v1 (+ reconciliation.exceptions.v1).

Both inputs are keyed by the participant key, so one agent sees every event of a participant in order on
one partition, beside that participant's state in the `members` table (changelog-backed). The decisions
are the domain's (services.domain.reconcile); this module decodes, looks up, stores and sends.
"""

from __future__ import annotations

import faust
import orjson
from faust.types import TableT

from services import metrics
from services.catalogue import ENROLLMENTS, EXCEPTIONS, MEMBERS, PAYMENTS
from services.context import ServiceContext
from services.domain.models import Enrollment, Payment
from services.domain.reconcile import (
    Decision,
    MemberState,
    ReconcilePolicy,
    current_record,
    on_enrollment,
    on_payment,
)
from services.stage import Stage

NAME = "reconcile"


def register(app: faust.App, ctx: ServiceContext) -> None:
    stage = Stage(app, NAME)
    policy = policy_of(ctx)
    source = app.topic(
        ENROLLMENTS.name,
        PAYMENTS.name,
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

    @app.agent(source, name=NAME)
    async def reconcile(stream: faust.StreamT) -> None:
        async for event in stream.events():
            stage.consumed(event)
            msg = event.message
            key = msg.key or b""
            try:
                state, decision = _decide(ctx, policy, members, key, msg.topic, msg.value)
            except Exception as exc:  # a record we cannot decode or apply: dead-letter, keep going
                await stage.dead_letter(event, _reason(exc), type(exc).__name__)
                continue
            if decision.new_state is not None:
                members[key] = orjson.dumps(decision.new_state.to_json())
            records = decision.records
            if decision.is_empty:
                # Already applied: the worker may have died before the output reached Kafka. Send the
                # current version again (same record_id); downstream drops what it already has.
                metrics.RECONCILE_OUTCOMES.labels("DUPLICATE_EVENT").inc()
                again = current_record(state)
                records = [again] if again is not None else []
            for record in records:
                await stage.send(
                    MEMBERS.name,
                    key=record.participant_id.encode(),
                    value=ctx.codec.encode("sinergi.MemberRecord", record),
                    headers=[("sinergi-record-id", record.record_id.encode())],
                )
                metrics.RECONCILE_OUTCOMES.labels(f"MEMBER_{record.status.value}").inc()
                stage.observe_latency(record.updated_at)
            for exc_record in decision.exceptions:
                await stage.send(
                    EXCEPTIONS.name,
                    key=exc_record.participant_id.encode(),
                    value=ctx.codec.encode("sinergi.ReconciliationException", exc_record),
                )
                metrics.RECONCILE_OUTCOMES.labels(exc_record.reason).inc()


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
) -> tuple[MemberState | None, Decision]:
    stored = members.get(key)
    state = MemberState.from_json(orjson.loads(stored)) if stored else None
    if source == ENROLLMENTS.name:
        enrollment = ctx.codec.decode_model(value, Enrollment)
        return state, on_enrollment(state, enrollment, ctx.tariff_table, ctx.settings.bill_validity_days, policy=policy)
    payment = ctx.codec.decode_model(value, Payment)
    # No reference rates yet (fx-rates.v1 is fed by a later issue): no FX check.
    return state, on_payment(state, payment, policy=policy)


def _reason(exc: Exception) -> str:
    name = type(exc).__name__
    if "WireFormat" in name or "Schema" in name:
        return "UNDECODABLE"
    if isinstance(exc, ValueError):
        return "INVALID_RECORD"
    return "UNEXPECTED"
