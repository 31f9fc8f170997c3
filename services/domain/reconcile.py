"""Member state machine: enrollment -> bill -> payments (and reversals) -> ACTIVE -> lapse / re-registration.

The reconciler keeps one :class:`MemberState` per participant id (a Faust table value:
``state.to_json()`` and ``MemberState.from_json(that)`` round-trip exactly; bytes are base64 in JSON).
Each handler (:func:`on_enrollment`, :func:`on_payment`, :func:`on_reversal`, :func:`on_tick`) returns a
:class:`Decision`:

* ``new_state`` -- the state to store, or None when nothing changed (a re-delivered event);
* ``records`` -- MemberRecord versions to publish (version = previous + 1, ``record_id`` =
  ``participant_id:version``, ``updated_at`` = the causing event's ``received_at`` or the instant a deadline
  fell due, never the wall clock);
* ``exceptions`` -- ReconciliationExceptions (``exception_id`` = event_uuid(reason, event_id));
* ``outcome`` -- the stable code of what happened to the event (below).

Everything is a pure function of (state, input): replaying a sequence gives identical outputs, and an
event whose id is already in ``seen_event_ids`` gives an empty decision (outcome DUPLICATE_NOTIFICATION for
a payment, DUPLICATE_EVENT otherwise).

Deadlines (a held payment ageing out, the pre-work cover lapsing) are applied by :func:`on_tick` and also,
first, by every handler for the deadlines that fell due before its event: the outputs carry the deadline's
instant and a deterministic id, so they are the same whether a tick or the next event found them.

Outcomes of a payment (``Decision.outcome`` and ``LineageEntry.outcome``; * also an exception):

====================== ==============================================================================
EXACT                  the first payment equals the bill -> ACTIVE with coverage
PARTIAL                credited, the bill is not covered yet (bill_amount_idr - paid_amount_idr remains)
COMPLETED_BY_PARTIALS  credited, earlier partial payments plus this one equal the bill -> ACTIVE
OVERPAYMENT*           credited, beyond the bill -> ACTIVE, ``credit_idr`` = the excess
DUPLICATE_NOTIFICATION the same bank transaction again: the same event id (empty decision), or the same
                       bank + paymentRequestId under another id (*, not credited)
PAYMENT_BEFORE_ENROLLMENT* held until the enrollment arrives, then matched like any payment;
HELD_PAYMENT_AGED_OUT* ... or dropped after ``held_payment_max_age_days`` without an enrollment
UNKNOWN_VA*            the VA number does not end in the participant's customer number: not credited
BILL_EXPIRED*          paid (bank transaction WIB date) after the bill's last day: not credited
PAYMENT_ON_PAID_BILL*  the bill is already covered: not credited
PAYMENT_ON_CLOSED_BILL* the membership is EXPIRED or CANCELLED: not credited
FX_RATE_OUT_OF_TOLERANCE* the bank's rate is more than ``fx_tolerance_pct`` off the reference rate of the
                       value date; FX_REFERENCE_RATE_MISSING* when there is none. ``fx_out_of_tolerance``:
                       CREDIT_AND_FLAG (credited at the bank's rate, outcome as above) or HOLD (kept
                       aside for an operator, not credited)
====================== ==============================================================================

Reversals (:class:`Reversal`, from an explicit reversal event or an ERROR_CORRECTION / REVERSAL statement
entry): REVERSAL* takes a credited payment back (matched by its event id, else by bank + bank reference =
paymentRequestId or partnerReferenceNo); when the bill is no longer covered an ACTIVE member goes back to
AWAITING_PAYMENT (LAPSED_REREGISTER for a re-registration bill) and loses the cover that bill bought.
REVERSAL_UNMATCHED* (nothing credited matches), REVERSAL_AMOUNT_MISMATCH* (the amount differs: not applied).
A reversal of a held payment drops it (REVERSAL*).

Lapse (LAPSED_REREGISTER): a PLACED worker whose planned embarkation is after the end of the pre-work cover
(services.domain.coverage) lapses on the first uncovered day: a new pre-work bill (the tariff's
``pre_placement_idr``) is issued; paying it restores ACTIVE with a new pre-work cover.

Allowed transitions are :data:`TRANSITIONS` (status x event kind -> statuses). Anything else is refused with
an ILLEGAL_TRANSITION exception and no state change besides remembering the event id. Leaving ACTIVE for
AWAITING_PAYMENT happens only by REVERSAL; versions strictly increase.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer

from services.domain import coverage
from services.domain.dates import WIB, require_aware, wib_date
from services.domain.identity import PARTNER_SERVICE_ID_LEN, event_uuid
from services.domain.models import (
    BillLine,
    Enrollment,
    LineageEntry,
    MemberRecord,
    MemberStatus,
    ParticipantType,
    Payment,
    Program,
    ReconciliationException,
    Reversal,
    Sex,
)
from services.domain.tariff import Tariff, TariffTable, bill_amount_idr

PENDING_ENROLLMENT = "PENDING_ENROLLMENT"  # display name of a state with payments but no enrollment
OPEN_STATUSES = frozenset({MemberStatus.AWAITING_PAYMENT, MemberStatus.ACTIVE})

# Outcome and exception reason codes. Add codes; never rename one (dashboards and operators key on them).
BILL_ISSUED = "BILL_ISSUED"
EXACT = "EXACT"
PARTIAL = "PARTIAL"
COMPLETED_BY_PARTIALS = "COMPLETED_BY_PARTIALS"
OVERPAYMENT = "OVERPAYMENT"
DUPLICATE_NOTIFICATION = "DUPLICATE_NOTIFICATION"
DUPLICATE_EVENT = "DUPLICATE_EVENT"
PAYMENT_BEFORE_ENROLLMENT = "PAYMENT_BEFORE_ENROLLMENT"
HELD_PAYMENT_AGED_OUT = "HELD_PAYMENT_AGED_OUT"
UNKNOWN_VA = "UNKNOWN_VA"
BILL_EXPIRED = "BILL_EXPIRED"
PAYMENT_ON_PAID_BILL = "PAYMENT_ON_PAID_BILL"
PAYMENT_ON_CLOSED_BILL = "PAYMENT_ON_CLOSED_BILL"
ENROLLMENT_ALREADY_OPEN = "ENROLLMENT_ALREADY_OPEN"
FX_RATE_OUT_OF_TOLERANCE = "FX_RATE_OUT_OF_TOLERANCE"
FX_REFERENCE_RATE_MISSING = "FX_REFERENCE_RATE_MISSING"
REVERSAL = "REVERSAL"
REVERSAL_UNMATCHED = "REVERSAL_UNMATCHED"
REVERSAL_AMOUNT_MISMATCH = "REVERSAL_AMOUNT_MISMATCH"
LAPSED_REREGISTER = "LAPSED_REREGISTER"
ILLEGAL_TRANSITION = "ILLEGAL_TRANSITION"
NOTHING_DUE = "NOTHING_DUE"

CREDITED_OUTCOMES = frozenset({EXACT, PARTIAL, COMPLETED_BY_PARTIALS, OVERPAYMENT})


class EventKind(StrEnum):
    ENROLLMENT = "ENROLLMENT"
    PAYMENT = "PAYMENT"
    REVERSAL = "REVERSAL"
    LAPSE = "LAPSE"  # deadline: the pre-work cover ended before embarkation
    AGEING = "AGEING"  # deadline: a held payment waited too long for its enrollment


_P, _AW, _AC = PENDING_ENROLLMENT, MemberStatus.AWAITING_PAYMENT.value, MemberStatus.ACTIVE.value
_LA, _EX, _CA = (
    MemberStatus.LAPSED_REREGISTER.value,
    MemberStatus.EXPIRED.value,
    MemberStatus.CANCELLED.value,
)

# (status before, event kind) -> statuses the event may leave. A refused event stays where it was (a self
# loop). A pair that is missing (e.g. anything in status UNKNOWN) is an ILLEGAL_TRANSITION.
TRANSITIONS: Mapping[tuple[str, EventKind], frozenset[str]] = {
    (_P, EventKind.ENROLLMENT): frozenset({_AW, _AC}),  # bill issued; held payments may cover it
    (_P, EventKind.PAYMENT): frozenset({_P}),  # held
    (_P, EventKind.REVERSAL): frozenset({_P}),  # a held payment dropped
    (_P, EventKind.AGEING): frozenset({_P}),
    (_AW, EventKind.ENROLLMENT): frozenset({_AW}),  # ENROLLMENT_ALREADY_OPEN
    (_AW, EventKind.PAYMENT): frozenset({_AW, _AC}),
    (_AW, EventKind.REVERSAL): frozenset({_AW}),
    (_AC, EventKind.ENROLLMENT): frozenset({_AC}),  # ENROLLMENT_ALREADY_OPEN
    (_AC, EventKind.PAYMENT): frozenset({_AC}),  # PAYMENT_ON_PAID_BILL
    (_AC, EventKind.REVERSAL): frozenset({_AC, _AW, _LA}),  # the only way back to an unpaid bill
    (_AC, EventKind.LAPSE): frozenset({_LA}),
    (_LA, EventKind.ENROLLMENT): frozenset({_AW}),  # a new enrollment replaces the lapsed one
    (_LA, EventKind.PAYMENT): frozenset({_LA, _AC}),  # the re-registration bill
    (_LA, EventKind.REVERSAL): frozenset({_LA}),
    (_EX, EventKind.ENROLLMENT): frozenset({_AW}),
    (_EX, EventKind.PAYMENT): frozenset({_EX}),
    (_EX, EventKind.REVERSAL): frozenset({_EX}),
    (_CA, EventKind.ENROLLMENT): frozenset({_AW}),
    (_CA, EventKind.PAYMENT): frozenset({_CA}),
    (_CA, EventKind.REVERSAL): frozenset({_CA}),
}

FxReference = Callable[[str, date], Decimal | None]
"""(currency, WIB value date) -> reference rate in IDR per unit, or None when none is known."""


def _b64_decode(value: object) -> object:
    return base64.b64decode(value, validate=True) if isinstance(value, str) else value


def _b64_encode(value: bytes) -> str:
    return base64.b64encode(value).decode("ascii")


# bytes that survive model_dump(mode="json") -> model_validate: base64 text in JSON, raw bytes in Python.
B64Bytes = Annotated[
    bytes, BeforeValidator(_b64_decode), PlainSerializer(_b64_encode, return_type=str, when_used="json")
]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ReconcilePolicy(_Frozen):
    """Operational rules of the reconciler (services.config builds it from SINERGI_RECONCILE_* settings)."""

    held_payment_max_age_days: int = Field(30, ge=1)
    fx_tolerance_pct: Decimal = Field(Decimal("2"), ge=0)
    fx_out_of_tolerance: Literal["CREDIT_AND_FLAG", "HOLD"] = "CREDIT_AND_FLAG"


DEFAULT_POLICY = ReconcilePolicy()


class EnrollmentSnapshot(_Frozen):
    """The fields of the applied enrollment that a MemberRecord and the coverage rules need."""

    event_id: str
    office_code: str
    full_name: str
    pii_encrypted: B64Bytes
    date_of_birth: date
    sex: Sex
    participant_type: ParticipantType
    destination_country: str
    programs: tuple[Program, ...]
    departure_date: date
    contract_start: date
    contract_months: int
    received_at: datetime

    @classmethod
    def of(cls, enrollment: Enrollment) -> EnrollmentSnapshot:
        return cls(
            event_id=enrollment.event_id,
            office_code=enrollment.office_code,
            full_name=enrollment.full_name,
            pii_encrypted=enrollment.pii_encrypted,
            date_of_birth=enrollment.date_of_birth,
            sex=enrollment.sex,
            participant_type=enrollment.participant_type,
            destination_country=enrollment.destination_country,
            programs=tuple(enrollment.programs),
            departure_date=enrollment.departure_date,
            contract_start=enrollment.contract_start,
            contract_months=enrollment.contract_months,
            received_at=enrollment.received_at,
        )


BillKind = Literal["ENROLLMENT", "REREGISTRATION"]


class Bill(_Frozen):
    amount_idr: int
    issued_at: datetime
    expires_on: date  # last WIB date it can be paid (by the bank's transaction date)
    tariff_version: str
    return_preparation_months: int
    # Defaults: a state stored before these existed still loads.
    lines: tuple[BillLine, ...] = ()
    kind: BillKind = "ENROLLMENT"
    rules: coverage.CoverRules = coverage.CoverRules()
    validity_days: int = 30
    reregistration_idr: int = 0  # the pre-work instalment due again if the cover lapses (0: never lapses)
    # A re-registration bill keeps the cover already bought (during and after work) to add its own to.
    base_periods: tuple[coverage.CoverPeriod, ...] = ()


class HeldPayment(_Frozen):
    """What the state keeps of a payment: enough to credit it later, to match a reversal and to report it."""

    event_id: str
    bank_id: str
    amount_idr: int
    trx_time: datetime
    received_at: datetime
    payment_request_id: str = ""
    partner_reference_no: str | None = None
    original_amount: Decimal | None = None
    original_currency: str = "IDR"

    @classmethod
    def of(cls, payment: Payment) -> HeldPayment:
        return cls(
            event_id=payment.event_id,
            bank_id=payment.bank_id,
            amount_idr=payment.amount_idr,
            trx_time=payment.trx_time,
            received_at=payment.received_at,
            payment_request_id=payment.payment_request_id,
            partner_reference_no=payment.partner_reference_no,
            original_amount=payment.original_amount,
            original_currency=payment.original_currency,
        )

    @property
    def transaction_key(self) -> str:
        return f"{self.bank_id}|{self.payment_request_id}"


class PaymentKey(_Frozen):
    key: str  # bank|paymentRequestId: one bank transaction
    event_id: str  # the first payment event seen for it


class AppliedReversal(_Frozen):
    event_id: str
    payment_event_id: str
    amount_idr: int


RECENT_EXCEPTIONS = 16  # exceptions a state remembers with their cause, to re-send on a redelivery


class RecentException(_Frozen):
    cause: str  # the event whose decision raised it
    exception: ReconciliationException


class MemberState(_Frozen):
    participant_id: str
    status: MemberStatus | None = None  # None: PENDING_ENROLLMENT (payments held, no enrollment yet)
    version: int = 0  # version of the last emitted MemberRecord
    enrollment: EnrollmentSnapshot | None = None
    bill: Bill | None = None
    paid_amount_idr: int = 0
    payment_event_ids: tuple[str, ...] = ()  # credited to the current bill, in order (ids of ``credits``)
    held_payments: tuple[HeldPayment, ...] = ()  # arrived before any enrollment
    seen_event_ids: tuple[str, ...] = ()  # every applied event (credited, held or refused): dedup
    coverage_start: date | None = None
    coverage_end: date | None = None
    last_caused_by: str = ""  # lineage of the current version, so it can be re-emitted identically
    last_updated_at: datetime | None = None
    credits: tuple[HeldPayment, ...] = ()  # the payments credited to the current bill, in order
    fx_held: tuple[HeldPayment, ...] = ()  # FX out of tolerance under the HOLD policy: for an operator
    payment_keys: tuple[PaymentKey, ...] = ()
    reversals: tuple[AppliedReversal, ...] = ()  # applied to the current bill
    lineage: tuple[LineageEntry, ...] = ()  # decision log of the current bill, up to the current version
    coverage_periods: tuple[coverage.CoverPeriod, ...] = ()
    lapse_on: date | None = None  # first uncovered day if the worker has not embarked by then
    # The last exceptions and the event that caused each. A worker may die after storing a state and before the
    # exceptions it raised reached Kafka; the redelivered event is then recognised as applied and its exceptions
    # are sent again from here (same exception_id: consumers drop what they have). An exception-only outcome
    # (an unknown VA) has no member record to re-send, so without this it was lost (the crash test found one).
    recent_exceptions: tuple[RecentException, ...] = ()

    @property
    def status_name(self) -> str:
        return self.status.value if self.status is not None else PENDING_ENROLLMENT

    @property
    def credit_idr(self) -> int:
        return max(0, self.paid_amount_idr - self.bill.amount_idr) if self.bill is not None else 0

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> MemberState:
        return cls.model_validate(data)

    # The table value: the same JSON as to_json, written and parsed by pydantic in one pass (no dict between).
    def to_json_bytes(self) -> bytes:
        return self.__pydantic_serializer__.to_json(self)

    @classmethod
    def from_json_bytes(cls, data: bytes) -> MemberState:
        return cls.model_validate_json(data)


@dataclass(frozen=True)
class Decision:
    new_state: MemberState | None = None
    records: list[MemberRecord] = field(default_factory=list)
    exceptions: list[ReconciliationException] = field(default_factory=list)
    outcome: str = ""

    @property
    def is_empty(self) -> bool:
        return self.new_state is None and not self.records and not self.exceptions


@dataclass
class _Out:
    records: list[MemberRecord] = field(default_factory=list)
    exceptions: list[ReconciliationException] = field(default_factory=list)


class _IllegalTransition(Exception):
    def __init__(self, before: str, kind: EventKind, after: str, event_id: str, at: datetime) -> None:
        super().__init__(f"{before} x {kind.value} -> {after}")
        self.before, self.kind, self.after, self.event_id, self.at = before, kind, after, event_id, at


def _require(state: MemberState, kind: EventKind, event_id: str, at: datetime) -> None:
    if (state.status_name, kind) not in TRANSITIONS:
        raise _IllegalTransition(state.status_name, kind, state.status_name, event_id, at)


def _step(before: MemberState, kind: EventKind, after: MemberState, event_id: str, at: datetime) -> None:
    allowed = TRANSITIONS.get((before.status_name, kind))
    if allowed is None or after.status_name not in allowed:
        raise _IllegalTransition(before.status_name, kind, after.status_name, event_id, at)


def _exception(
    reason: str,
    participant_id: str,
    event_id: str,
    occurred_at: datetime,
    *,
    bank_id: str | None = None,
    amount_idr: int | None = None,
    detail: str = "",
    related_event_id: str | None = None,
) -> ReconciliationException:
    return ReconciliationException(
        exception_id=event_uuid(reason, event_id),
        participant_id=participant_id,
        reason=reason,
        event_id=event_id,
        bank_id=bank_id,
        amount_idr=amount_idr,
        detail=detail,
        occurred_at=occurred_at,
        related_event_id=related_event_id,
    )


def _check_key(state: MemberState, participant_id: str) -> None:
    if state.participant_id != participant_id:
        raise ValueError("event is addressed to another participant than the state")


def _record(state: MemberState, version: int, caused_by: str, at: datetime) -> MemberRecord:
    snap, bill = state.enrollment, state.bill
    if snap is None or bill is None or state.status is None:
        raise ValueError("a MemberRecord needs an enrollment and a bill")
    return MemberRecord(
        record_id=f"{state.participant_id}:{version}",
        participant_id=state.participant_id,
        version=version,
        status=state.status,
        office_code=snap.office_code,
        full_name=snap.full_name,
        pii_encrypted=snap.pii_encrypted,
        date_of_birth=snap.date_of_birth,
        sex=snap.sex,
        participant_type=snap.participant_type,
        destination_country=snap.destination_country,
        programs=list(snap.programs),
        customer_no=state.participant_id,
        bill_amount_idr=bill.amount_idr,
        paid_amount_idr=state.paid_amount_idr,
        bill_issued_at=bill.issued_at,
        bill_expires_on=bill.expires_on,
        coverage_start=state.coverage_start,
        coverage_end=state.coverage_end,
        enrollment_event_id=snap.event_id,
        payment_event_ids=list(state.payment_event_ids),
        caused_by_event_id=caused_by,
        updated_at=at,
        credit_idr=state.credit_idr,
        reversal_event_ids=[r.event_id for r in state.reversals],
        bill_lines=list(bill.lines),
        coverage_periods=[p.to_record() for p in state.coverage_periods],
        lineage=list(state.lineage),
    )


def _emit(state: MemberState, caused_by: str, at: datetime, entries: list[LineageEntry], out: _Out) -> MemberState:
    version = state.version + 1
    new = state.model_copy(
        update={
            "version": version,
            "last_caused_by": caused_by,
            "last_updated_at": at,
            "lineage": (*state.lineage, *entries),
        }
    )
    out.records.append(_record(new, version, caused_by, at))
    return new


def _entry(
    event_id: str, kind: EventKind, outcome: str, amount: int | None, state: MemberState, at: datetime
) -> LineageEntry:
    return LineageEntry(
        event_id=event_id, kind=kind.value, outcome=outcome, amount_idr=amount, status=state.status_name, at=at
    )


def _remembered(decision: Decision, cause: str) -> Decision:
    if decision.new_state is None or not decision.exceptions:
        return decision
    added = tuple(RecentException(cause=cause, exception=e) for e in decision.exceptions)
    kept = (*decision.new_state.recent_exceptions, *added)[-RECENT_EXCEPTIONS:]
    return replace(decision, new_state=decision.new_state.model_copy(update={"recent_exceptions": kept}))


def exceptions_caused_by(state: MemberState | None, event_id: str) -> list[ReconciliationException]:
    """The exceptions an applied event raised, as first sent, while the state still remembers them."""
    if state is None:
        return []
    return [r.exception for r in state.recent_exceptions if r.cause == event_id]


def current_record(state: MemberState | None) -> MemberRecord | None:
    """The record of the state's current version, byte-for-byte what was emitted for it.

    At-least-once: an event already applied may arrive again because the worker died after storing the state
    but before its output reached Kafka. Re-emitting the current version (same record_id) closes that gap;
    downstream deduplicates by record_id.
    """
    if state is None or state.version == 0 or state.last_updated_at is None:
        return None
    return _record(state, state.version, state.last_caused_by, state.last_updated_at)


# --- deadlines -----------------------------------------------------------------------------------------------
def _wib_midnight(day: date) -> datetime:
    return datetime.combine(day, time(0), WIB).astimezone(UTC)


def _age_out(state: MemberState, until: datetime, policy: ReconcilePolicy, out: _Out) -> MemberState:
    max_age = timedelta(days=policy.held_payment_max_age_days)
    aged = [h for h in state.held_payments if h.received_at + max_age <= until]
    for held in sorted(aged, key=lambda h: (h.received_at, h.event_id)):
        due = held.received_at + max_age
        after = state.model_copy(update={"held_payments": tuple(h for h in state.held_payments if h != held)})
        _step(state, EventKind.AGEING, after, held.event_id, due)
        state = after
        out.exceptions.append(
            _exception(
                HELD_PAYMENT_AGED_OUT,
                state.participant_id,
                held.event_id,
                due,
                bank_id=held.bank_id,
                amount_idr=held.amount_idr,
                detail=f"no enrollment for this customer number within {policy.held_payment_max_age_days} days; "
                "payment released for refund",
            )
        )
    return state


def _lapse(state: MemberState, out: _Out) -> MemberState:
    bill, lapse_on = state.bill, state.lapse_on
    if bill is None or lapse_on is None:  # pragma: no cover - guarded by the caller
        return state
    due = _wib_midnight(lapse_on)
    eid = event_uuid("lapse", state.participant_id, lapse_on.isoformat())
    rebill = Bill(
        amount_idr=bill.reregistration_idr,
        issued_at=due,
        expires_on=lapse_on + timedelta(days=bill.validity_days),
        tariff_version=bill.tariff_version,
        return_preparation_months=bill.return_preparation_months,
        lines=(
            BillLine(
                code="PRE",
                description="JKK+JKM before work (sebelum bekerja), re-registration after the cover lapsed",
                amount_idr=bill.reregistration_idr,
            ),
        ),
        kind="REREGISTRATION",
        rules=bill.rules,
        validity_days=bill.validity_days,
        reregistration_idr=bill.reregistration_idr,
        base_periods=state.coverage_periods,
    )
    after = state.model_copy(
        update={
            "status": MemberStatus.LAPSED_REREGISTER,
            "bill": rebill,
            "paid_amount_idr": 0,
            "payment_event_ids": (),
            "credits": (),
            "reversals": (),
            "lineage": (),
            "lapse_on": None,
        }
    )
    _step(state, EventKind.LAPSE, after, eid, due)
    entry = _entry(eid, EventKind.LAPSE, LAPSED_REREGISTER, rebill.amount_idr, after, due)
    return _emit(after, eid, due, [entry], out)


def _due(state: MemberState, until: datetime, policy: ReconcilePolicy, out: _Out) -> MemberState:
    """Apply the deadlines that fell due at or before ``until``."""
    if state.held_payments:
        state = _age_out(state, until, policy, out)
    if state.status == MemberStatus.ACTIVE and state.lapse_on is not None and _wib_midnight(state.lapse_on) <= until:
        state = _lapse(state, out)
    return state


# --- payments ------------------------------------------------------------------------------------------------
def _activate(state: MemberState, paid_on: date) -> dict[str, Any]:
    snap, bill = state.enrollment, state.bill
    if snap is None or bill is None:  # pragma: no cover - guarded by the caller
        raise ValueError("only an enrolled member is activated")
    rules = bill.rules
    if bill.kind == "REREGISTRATION":
        registered_on = wib_date(bill.issued_at)
        basis = coverage.pre_departure_basis(rules, registered_on, paid_on)
        before = coverage.sebelum(rules, basis, snap.departure_date)
        periods = [*bill.base_periods, *([before] if before is not None else [])]
    else:
        registered_on = wib_date(snap.received_at)
        periods = coverage.periods(
            rules,
            snap.participant_type,
            registered_on=registered_on,
            paid_on=paid_on,
            embarkation=snap.departure_date,
            contract_start=snap.contract_start,
            contract_months=snap.contract_months,
        )
    lapse_on = (
        coverage.pre_departure_lapse_on(
            rules, snap.participant_type, registered_on=registered_on, paid_on=paid_on, embarkation=snap.departure_date
        )
        if bill.reregistration_idr > 0
        else None
    )
    return {
        "status": MemberStatus.ACTIVE,
        "coverage_periods": tuple(sorted(periods, key=lambda p: (p.start, p.end))),
        "lapse_on": lapse_on,
        **_during_work(periods),
    }


def _during_work(periods: list[coverage.CoverPeriod] | tuple[coverage.CoverPeriod, ...]) -> dict[str, Any]:
    during = next((p for p in periods if p.phase == coverage.Phase.SELAMA), None)
    return {
        "coverage_start": during.start if during is not None else None,
        "coverage_end": during.end if during is not None else None,
    }


def _apply_payment(
    state: MemberState, payment: HeldPayment, at: datetime, out: _Out
) -> tuple[MemberState, str, LineageEntry | None]:
    """Credit ``payment`` to the current bill of an enrolled ``state`` or refuse it with an exception.
    Returns the new state, the outcome and, when credited, its lineage entry."""
    snap, bill = state.enrollment, state.bill
    if snap is None or bill is None:
        raise ValueError("payments are applied only to an enrolled member")
    pid = state.participant_id

    def refuse(reason: str, detail: str) -> tuple[MemberState, str, None]:
        out.exceptions.append(
            _exception(
                reason, pid, payment.event_id, at, bank_id=payment.bank_id, amount_idr=payment.amount_idr, detail=detail
            )
        )
        return state, reason, None

    if state.status == MemberStatus.ACTIVE:
        return refuse(PAYMENT_ON_PAID_BILL, "the bill is already paid; the payment was not credited")
    if state.status not in (MemberStatus.AWAITING_PAYMENT, MemberStatus.LAPSED_REREGISTER):
        return refuse(PAYMENT_ON_CLOSED_BILL, f"the membership is {state.status_name}; the payment was not credited")
    if wib_date(payment.trx_time) > bill.expires_on:
        return refuse(BILL_EXPIRED, f"paid after the bill's last day {bill.expires_on.isoformat()}; not credited")

    prior = state.paid_amount_idr
    paid = prior + payment.amount_idr
    update: dict[str, Any] = {
        "paid_amount_idr": paid,
        "payment_event_ids": (*state.payment_event_ids, payment.event_id),
        "credits": (*state.credits, payment),
    }
    if paid < bill.amount_idr:
        outcome = PARTIAL
    elif paid == bill.amount_idr:
        outcome = EXACT if prior == 0 else COMPLETED_BY_PARTIALS
    else:
        outcome = OVERPAYMENT
        out.exceptions.append(
            _exception(
                OVERPAYMENT,
                pid,
                payment.event_id,
                at,
                bank_id=payment.bank_id,
                amount_idr=paid - bill.amount_idr,
                detail=f"paid {paid} against a bill of {bill.amount_idr} rupiah; the excess is a credit",
            )
        )
    new = state.model_copy(update=update)
    if paid >= bill.amount_idr:
        new = new.model_copy(update=_activate(new, wib_date(payment.trx_time)))
    return new, outcome, _entry(payment.event_id, EventKind.PAYMENT, outcome, payment.amount_idr, new, at)


def _fx_problem(payment: Payment, policy: ReconcilePolicy, fx_reference: FxReference | None) -> tuple[str, str] | None:
    if fx_reference is None or payment.fx_rate is None or payment.original_currency == "IDR":
        return None
    value_date = wib_date(payment.trx_time)
    reference = fx_reference(payment.original_currency, value_date)
    if reference is None or reference <= 0:
        return FX_REFERENCE_RATE_MISSING, f"no {payment.original_currency} reference rate for {value_date.isoformat()}"
    deviation_pct = abs(payment.fx_rate - reference) * 100 / reference
    if deviation_pct > policy.fx_tolerance_pct:
        return (
            FX_RATE_OUT_OF_TOLERANCE,
            f"bank rate {payment.fx_rate} is {deviation_pct.quantize(Decimal('0.01'))}% off the "
            f"{payment.original_currency} reference {reference} of {value_date.isoformat()} "
            f"(tolerance {policy.fx_tolerance_pct}%)",
        )
    return None


def _finish(
    before: MemberState, kind: EventKind, after: MemberState, event_id: str, at: datetime, out: _Out, outcome: str
) -> Decision:
    _step(before, kind, after, event_id, at)
    return Decision(new_state=after, records=out.records, exceptions=out.exceptions, outcome=outcome)


def _refused_as_illegal(base: MemberState, event_id: str, exc: _IllegalTransition) -> Decision:
    seen = base.seen_event_ids if event_id in base.seen_event_ids else (*base.seen_event_ids, event_id)
    return Decision(
        new_state=base.model_copy(update={"seen_event_ids": seen}),
        exceptions=[
            _exception(
                ILLEGAL_TRANSITION,
                base.participant_id,
                exc.event_id,
                exc.at,
                detail=f"{exc} is not an allowed transition; nothing applied",
                related_event_id=event_id if event_id != exc.event_id else None,
            )
        ],
        outcome=ILLEGAL_TRANSITION,
    )


def on_payment(
    state: MemberState | None,
    payment: Payment,
    *,
    policy: ReconcilePolicy = DEFAULT_POLICY,
    fx_reference: FxReference | None = None,
) -> Decision:
    """Apply a normalized payment (see the module docstring). ``fx_reference`` checks foreign-currency
    payments against a reference rate; without it (no rates fed yet) no FX check is made."""
    pid, eid = payment.participant_id, payment.event_id
    if state is not None:
        _check_key(state, pid)
        if eid in state.seen_event_ids:
            return Decision(outcome=DUPLICATE_NOTIFICATION)
    base = state if state is not None else MemberState(participant_id=pid)
    try:
        decision = _on_payment(base, payment, policy, fx_reference)
    except _IllegalTransition as exc:
        decision = _refused_as_illegal(base, eid, exc)
    return _remembered(decision, eid)


def _on_payment(
    base: MemberState, payment: Payment, policy: ReconcilePolicy, fx_reference: FxReference | None
) -> Decision:
    pid, eid, at = payment.participant_id, payment.event_id, payment.received_at
    out = _Out()
    before = _due(base, at, policy, out)
    _require(before, EventKind.PAYMENT, eid, at)
    state = before.model_copy(update={"seen_event_ids": (*before.seen_event_ids, eid)})
    held = HeldPayment.of(payment)

    def flag(reason: str, detail: str, related: str | None = None) -> None:
        out.exceptions.append(
            _exception(
                reason,
                pid,
                eid,
                at,
                bank_id=payment.bank_id,
                amount_idr=payment.amount_idr,
                detail=detail,
                related_event_id=related,
            )
        )

    if payment.virtual_account_no[PARTNER_SERVICE_ID_LEN:] != pid:
        flag(UNKNOWN_VA, "the virtual account does not belong to this customer number; not credited")
        return _finish(before, EventKind.PAYMENT, state, eid, at, out, UNKNOWN_VA)
    first = next((k for k in state.payment_keys if k.key == held.transaction_key), None)
    if first is not None:
        flag(DUPLICATE_NOTIFICATION, "the same bank transaction was already notified; counted once", first.event_id)
        return _finish(before, EventKind.PAYMENT, state, eid, at, out, DUPLICATE_NOTIFICATION)
    state = state.model_copy(
        update={"payment_keys": (*state.payment_keys, PaymentKey(key=held.transaction_key, event_id=eid))}
    )

    problem = _fx_problem(payment, policy, fx_reference)
    if problem is not None:
        reason, detail = problem
        if policy.fx_out_of_tolerance == "HOLD":
            flag(reason, detail + "; held for review, not credited")
            state = state.model_copy(update={"fx_held": (*state.fx_held, held)})
            return _finish(before, EventKind.PAYMENT, state, eid, at, out, reason)
        flag(reason, detail + "; credited at the bank's rate")

    if state.enrollment is None:
        flag(PAYMENT_BEFORE_ENROLLMENT, "no enrollment for this customer number yet; payment held")
        state = state.model_copy(update={"held_payments": (*state.held_payments, held)})
        return _finish(before, EventKind.PAYMENT, state, eid, at, out, PAYMENT_BEFORE_ENROLLMENT)

    state, outcome, entry = _apply_payment(state, held, at, out)
    if entry is not None:
        state = _emit(state, eid, at, [entry], out)
    return _finish(before, EventKind.PAYMENT, state, eid, at, out, outcome)


# --- enrollments ---------------------------------------------------------------------------------------------
def on_enrollment(
    state: MemberState | None,
    enrollment: Enrollment,
    tariff: Tariff | TariffTable,
    bill_validity_days: int,
    *,
    policy: ReconcilePolicy = DEFAULT_POLICY,
) -> Decision:
    """Apply an enrollment (see the module docstring). ``tariff`` may be the table: the entry in force on
    the WIB date the enrollment was received is used. The bill expires ``bill_validity_days`` after that date.

    Raises Rejected only for input normalize_enrollment would have refused, or NO_TARIFF from a table.
    """
    pid, eid = enrollment.participant_id, enrollment.event_id
    if state is not None:
        _check_key(state, pid)
        if eid in state.seen_event_ids:
            return Decision(outcome=DUPLICATE_EVENT)
    base = state if state is not None else MemberState(participant_id=pid)
    try:
        decision = _on_enrollment(base, enrollment, tariff, bill_validity_days, policy)
    except _IllegalTransition as exc:
        decision = _refused_as_illegal(base, eid, exc)
    return _remembered(decision, eid)


def _on_enrollment(
    base: MemberState,
    enrollment: Enrollment,
    tariff: Tariff | TariffTable,
    bill_validity_days: int,
    policy: ReconcilePolicy,
) -> Decision:
    pid, eid, at = enrollment.participant_id, enrollment.event_id, enrollment.received_at
    out = _Out()
    before = _due(base, at, policy, out)
    _require(before, EventKind.ENROLLMENT, eid, at)
    seen = (*before.seen_event_ids, eid)
    if before.enrollment is not None and before.status in OPEN_STATUSES:
        out.exceptions.append(
            _exception(
                ENROLLMENT_ALREADY_OPEN,
                pid,
                eid,
                at,
                detail=f"participant has a {before.status_name} membership; enrollment not applied",
            )
        )
        after = before.model_copy(update={"seen_event_ids": seen})
        return _finish(before, EventKind.ENROLLMENT, after, eid, at, out, ENROLLMENT_ALREADY_OPEN)

    entry = tariff.tariff_on(wib_date(at)) if isinstance(tariff, TariffTable) else tariff
    breakdown = bill_amount_idr(entry, enrollment.participant_type, enrollment.contract_months, enrollment.programs)
    bill = Bill(
        amount_idr=breakdown.total_idr,
        issued_at=at,
        expires_on=wib_date(at) + timedelta(days=bill_validity_days),
        tariff_version=entry.version,
        return_preparation_months=entry.return_preparation_months,
        lines=tuple(BillLine(code=x.code, description=x.description, amount_idr=x.amount_idr) for x in breakdown.lines),
        rules=coverage.CoverRules.of(entry),
        validity_days=bill_validity_days,
        reregistration_idr=entry.pre_placement_idr if enrollment.participant_type == ParticipantType.PLACED else 0,
    )
    new = before.model_copy(
        update={
            "status": MemberStatus.AWAITING_PAYMENT,
            "enrollment": EnrollmentSnapshot.of(enrollment),
            "bill": bill,
            "paid_amount_idr": 0,
            "payment_event_ids": (),
            "credits": (),
            "held_payments": (),
            "reversals": (),
            "lineage": (),
            "seen_event_ids": seen,
            "coverage_start": None,
            "coverage_end": None,
            "coverage_periods": (),
            "lapse_on": None,
        }
    )
    entries = [_entry(eid, EventKind.ENROLLMENT, BILL_ISSUED, bill.amount_idr, new, at)]
    for held in before.held_payments:
        new, _, credited = _apply_payment(new, held, at, out)
        if credited is not None:
            entries.append(credited)
    new = _emit(new, eid, at, entries, out)
    return _finish(before, EventKind.ENROLLMENT, new, eid, at, out, BILL_ISSUED)


# --- reversals -----------------------------------------------------------------------------------------------
def _matches(payment: HeldPayment, reversal: Reversal) -> bool:
    if reversal.reverses_event_id is not None and payment.event_id == reversal.reverses_event_id:
        return True
    refs = {payment.payment_request_id, payment.partner_reference_no} - {None, ""}
    return payment.bank_id == reversal.bank_id and any(ref in refs for ref in reversal.bank_refs)


def _amount_differs(payment: HeldPayment, reversal: Reversal) -> bool:
    if reversal.amount is None:
        return False
    if reversal.currency == payment.original_currency and payment.original_amount is not None:
        return reversal.amount != payment.original_amount
    if reversal.currency == "IDR":
        return reversal.amount != payment.amount_idr
    return True  # another currency than the one paid in: not the same money


def on_reversal(state: MemberState | None, reversal: Reversal, *, policy: ReconcilePolicy = DEFAULT_POLICY) -> Decision:
    """Apply a reversal (see the module docstring)."""
    pid, eid = reversal.participant_id, reversal.event_id
    if state is not None:
        _check_key(state, pid)
        if eid in state.seen_event_ids:
            return Decision(outcome=DUPLICATE_EVENT)
    base = state if state is not None else MemberState(participant_id=pid)
    try:
        decision = _on_reversal(base, reversal, policy)
    except _IllegalTransition as exc:
        decision = _refused_as_illegal(base, eid, exc)
    return _remembered(decision, eid)


def _on_reversal(base: MemberState, reversal: Reversal, policy: ReconcilePolicy) -> Decision:
    pid, eid, at = reversal.participant_id, reversal.event_id, reversal.received_at
    out = _Out()
    before = _due(base, at, policy, out)
    _require(before, EventKind.REVERSAL, eid, at)
    state = before.model_copy(update={"seen_event_ids": (*before.seen_event_ids, eid)})

    def flag(reason: str, detail: str, payment: HeldPayment | None = None) -> None:
        out.exceptions.append(
            _exception(
                reason,
                pid,
                eid,
                at,
                bank_id=reversal.bank_id,
                amount_idr=payment.amount_idr if payment is not None else None,
                detail=detail,
                related_event_id=payment.event_id if payment is not None else None,
            )
        )

    target = next((c for c in state.credits if _matches(c, reversal)), None)
    if target is None:
        for pool in ("held_payments", "fx_held"):
            kept: tuple[HeldPayment, ...] = getattr(state, pool)
            dropped = next((h for h in kept if _matches(h, reversal)), None)
            if dropped is not None:
                if _amount_differs(dropped, reversal):
                    flag(
                        REVERSAL_AMOUNT_MISMATCH,
                        "the reversed amount differs from the held payment; not applied",
                        dropped,
                    )
                    return _finish(before, EventKind.REVERSAL, state, eid, at, out, REVERSAL_AMOUNT_MISMATCH)
                state = state.model_copy(update={pool: tuple(h for h in kept if h != dropped)})
                flag(REVERSAL, "a held, uncredited payment was reversed by the bank and dropped", dropped)
                return _finish(before, EventKind.REVERSAL, state, eid, at, out, REVERSAL)
        flag(REVERSAL_UNMATCHED, "no payment credited to the current bill matches this reversal")
        return _finish(before, EventKind.REVERSAL, state, eid, at, out, REVERSAL_UNMATCHED)
    if _amount_differs(target, reversal):
        flag(REVERSAL_AMOUNT_MISMATCH, "the reversed amount differs from the credited payment; not applied", target)
        return _finish(before, EventKind.REVERSAL, state, eid, at, out, REVERSAL_AMOUNT_MISMATCH)

    bill = state.bill
    if bill is None:  # pragma: no cover - credits exist only on a bill
        raise ValueError("credits without a bill")
    credits = tuple(c for c in state.credits if c.event_id != target.event_id)
    paid = state.paid_amount_idr - target.amount_idr
    update: dict[str, Any] = {
        "paid_amount_idr": paid,
        "credits": credits,
        "payment_event_ids": tuple(c.event_id for c in credits),
        "reversals": (
            *state.reversals,
            AppliedReversal(event_id=eid, payment_event_id=target.event_id, amount_idr=target.amount_idr),
        ),
    }
    if state.status == MemberStatus.ACTIVE and paid < bill.amount_idr:
        unpaid = MemberStatus.LAPSED_REREGISTER if bill.kind == "REREGISTRATION" else MemberStatus.AWAITING_PAYMENT
        update.update(
            status=unpaid, coverage_periods=bill.base_periods, lapse_on=None, **_during_work(bill.base_periods)
        )
    state = state.model_copy(update=update)
    flag(
        REVERSAL,
        f"payment reversed by the bank; {state.paid_amount_idr} of {bill.amount_idr} rupiah remain paid, "
        f"status {state.status_name}",
        target,
    )
    state = _emit(state, eid, at, [_entry(eid, EventKind.REVERSAL, REVERSAL, target.amount_idr, state, at)], out)
    return _finish(before, EventKind.REVERSAL, state, eid, at, out, REVERSAL)


# --- time ----------------------------------------------------------------------------------------------------
def on_tick(state: MemberState | None, now: datetime, *, policy: ReconcilePolicy = DEFAULT_POLICY) -> Decision:
    """Apply the deadlines due at ``now``: held payments older than ``held_payment_max_age_days`` age out
    (HELD_PAYMENT_AGED_OUT), an ACTIVE PLACED worker not embarked by the end of the pre-work cover lapses
    (LAPSED_REREGISTER, new pre-work bill). Outputs carry each deadline's own instant and id, not ``now``:
    a later tick, or the next event, produces exactly the same ones. Nothing due: an empty decision."""
    require_aware(now, "now")
    if state is None:
        return Decision(outcome=NOTHING_DUE)
    out = _Out()
    try:
        after = _due(state, now, policy, out)
    except _IllegalTransition as exc:
        return Decision(
            exceptions=[
                _exception(
                    ILLEGAL_TRANSITION,
                    state.participant_id,
                    exc.event_id,
                    exc.at,
                    detail=f"{exc} is not an allowed transition; nothing applied",
                )
            ],
            outcome=ILLEGAL_TRANSITION,
        )
    if after == state:
        return Decision(outcome=NOTHING_DUE)
    outcome = LAPSED_REREGISTER if out.records else HELD_PAYMENT_AGED_OUT
    return Decision(new_state=after, records=out.records, exceptions=out.exceptions, outcome=outcome)
