"""Member state machine, first version: one enrollment -> one bill -> payments -> ACTIVE.

The reconciler keeps one :class:`MemberState` per participant id (a Faust table value:
``state.model_dump(mode="json")`` and ``MemberState.model_validate(that)`` round-trip exactly; bytes are
base64 in JSON). Each function returns a :class:`Decision`:

* ``new_state`` -- the state to store, or None when nothing changed (a re-delivered event);
* ``records`` -- MemberRecord versions to publish (version = previous + 1, ``record_id`` =
  ``participant_id:version``, ``updated_at`` = the causing event's ``received_at``, never the wall clock);
* ``exceptions`` -- ReconciliationExceptions (``exception_id`` = event_uuid(reason, event_id)).

Everything is a pure function of (state, event): replaying a sequence gives identical outputs, and an
event whose id is already in ``seen_event_ids`` gives an empty decision.

Transitions:

* enrollment, no state                 -> bill issued, AWAITING_PAYMENT, record v1
* enrollment, payments held            -> bill issued, held payments applied in arrival order, one record
* enrollment already applied           -> empty decision
* other enrollment, AWAITING/ACTIVE     -> ENROLLMENT_ALREADY_OPEN, not applied, no record
* other enrollment, any closed status  -> new bill (paid amount reset), record
* payment, no enrollment yet           -> held, PAYMENT_BEFORE_ENROLLMENT, no record
* payment already seen                 -> empty decision
* payment, AWAITING_PAYMENT            -> credited; paid >= bill: ACTIVE with coverage (+ OVERPAYMENT for the
                                          excess); otherwise stays AWAITING_PAYMENT; record either way
* payment, ACTIVE                      -> PAYMENT_ON_PAID_BILL, not credited, no record
* payment, other (closed) status       -> PAYMENT_ON_CLOSED_BILL, not credited, no record
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, PlainSerializer

from services.domain.dates import wib_date
from services.domain.identity import event_uuid
from services.domain.models import (
    Enrollment,
    MemberRecord,
    MemberStatus,
    ParticipantType,
    Payment,
    Program,
    ReconciliationException,
    Sex,
)
from services.domain.tariff import Tariff, TariffTable, bill_amount_idr, during_work_cover

PENDING_ENROLLMENT = "PENDING_ENROLLMENT"  # display name of a state with payments but no enrollment
OPEN_STATUSES = frozenset({MemberStatus.AWAITING_PAYMENT, MemberStatus.ACTIVE})

# Exception reason codes emitted here.
PAYMENT_BEFORE_ENROLLMENT = "PAYMENT_BEFORE_ENROLLMENT"
OVERPAYMENT = "OVERPAYMENT"
PAYMENT_ON_PAID_BILL = "PAYMENT_ON_PAID_BILL"
PAYMENT_ON_CLOSED_BILL = "PAYMENT_ON_CLOSED_BILL"
ENROLLMENT_ALREADY_OPEN = "ENROLLMENT_ALREADY_OPEN"


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


class EnrollmentSnapshot(_Frozen):
    """The fields of the applied enrollment that a MemberRecord and the coverage rule need."""

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


class Bill(_Frozen):
    amount_idr: int
    issued_at: datetime
    expires_on: date  # last WIB date it can be paid (not enforced in this version)
    tariff_version: str
    return_preparation_months: int


class HeldPayment(_Frozen):
    """What the state keeps of a payment: enough to credit it later and to report it."""

    event_id: str
    bank_id: str
    amount_idr: int
    trx_time: datetime
    received_at: datetime

    @classmethod
    def of(cls, payment: Payment) -> HeldPayment:
        return cls(
            event_id=payment.event_id,
            bank_id=payment.bank_id,
            amount_idr=payment.amount_idr,
            trx_time=payment.trx_time,
            received_at=payment.received_at,
        )


class MemberState(_Frozen):
    participant_id: str
    status: MemberStatus | None = None  # None: PENDING_ENROLLMENT (payments held, no enrollment yet)
    version: int = 0  # version of the last emitted MemberRecord
    enrollment: EnrollmentSnapshot | None = None
    bill: Bill | None = None
    paid_amount_idr: int = 0
    payment_event_ids: tuple[str, ...] = ()  # credited to the current bill, in order
    held_payments: tuple[HeldPayment, ...] = ()  # arrived before any enrollment
    seen_event_ids: tuple[str, ...] = ()  # every applied event (credited, held or refused): dedup
    coverage_start: date | None = None
    coverage_end: date | None = None
    last_caused_by: str = ""  # lineage of the current version, so it can be re-emitted identically
    last_updated_at: datetime | None = None

    @property
    def status_name(self) -> str:
        return self.status.value if self.status is not None else PENDING_ENROLLMENT

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> MemberState:
        return cls.model_validate(data)


@dataclass(frozen=True)
class Decision:
    new_state: MemberState | None = None
    records: list[MemberRecord] = field(default_factory=list)
    exceptions: list[ReconciliationException] = field(default_factory=list)

    @property
    def is_empty(self) -> bool:
        return self.new_state is None and not self.records and not self.exceptions


def _exception(
    reason: str,
    participant_id: str,
    event_id: str,
    occurred_at: datetime,
    *,
    bank_id: str | None = None,
    amount_idr: int | None = None,
    detail: str = "",
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
    )


def _emit(state: MemberState, caused_by: str, at: datetime) -> tuple[MemberState, MemberRecord]:
    version = state.version + 1
    record = _record(state, version, caused_by, at)
    return state.model_copy(update={"version": version, "last_caused_by": caused_by, "last_updated_at": at}), record


def current_record(state: MemberState | None) -> MemberRecord | None:
    """The record of the state's current version, byte-for-byte what was emitted for it.

    At-least-once: an event already applied may arrive again because the worker died after storing the state
    but before its output reached Kafka. Re-emitting the current version (same record_id) closes that gap;
    downstream deduplicates by record_id.
    """
    if state is None or state.version == 0 or state.last_updated_at is None:
        return None
    return _record(state, state.version, state.last_caused_by, state.last_updated_at)


def _apply_payment(
    state: MemberState, payment: HeldPayment, at: datetime
) -> tuple[MemberState, list[ReconciliationException]]:
    """Credit ``payment`` to the current bill of an enrolled ``state`` (or refuse it with an exception)."""
    snap, bill = state.enrollment, state.bill
    if snap is None or bill is None:
        raise ValueError("payments are applied only to an enrolled member")
    pid = state.participant_id
    if state.status == MemberStatus.ACTIVE:
        exc = _exception(
            PAYMENT_ON_PAID_BILL,
            pid,
            payment.event_id,
            at,
            bank_id=payment.bank_id,
            amount_idr=payment.amount_idr,
            detail="the bill is already paid; the payment was not credited",
        )
        return state, [exc]
    if state.status != MemberStatus.AWAITING_PAYMENT:
        exc = _exception(
            PAYMENT_ON_CLOSED_BILL,
            pid,
            payment.event_id,
            at,
            bank_id=payment.bank_id,
            amount_idr=payment.amount_idr,
            detail=f"the membership is {state.status_name}; the payment was not credited",
        )
        return state, [exc]
    paid = state.paid_amount_idr + payment.amount_idr
    update: dict[str, Any] = {
        "paid_amount_idr": paid,
        "payment_event_ids": (*state.payment_event_ids, payment.event_id),
    }
    exceptions: list[ReconciliationException] = []
    if paid >= bill.amount_idr:
        start, end = during_work_cover(
            snap.departure_date,
            snap.contract_start,
            snap.contract_months,
            wib_date(payment.trx_time),
            bill.return_preparation_months,
        )
        update.update(status=MemberStatus.ACTIVE, coverage_start=start, coverage_end=end)
        if paid > bill.amount_idr:
            exceptions.append(
                _exception(
                    OVERPAYMENT,
                    pid,
                    payment.event_id,
                    at,
                    bank_id=payment.bank_id,
                    amount_idr=paid - bill.amount_idr,
                    detail=f"paid {paid} against a bill of {bill.amount_idr} rupiah",
                )
            )
    return state.model_copy(update=update), exceptions


def on_enrollment(
    state: MemberState | None,
    enrollment: Enrollment,
    tariff: Tariff | TariffTable,
    bill_validity_days: int,
) -> Decision:
    """Apply an enrollment (see the module docstring). ``tariff`` may be the table: the entry in force on
    the WIB date the enrollment was received is used. The bill expires ``bill_validity_days`` after that date.

    Raises Rejected only for input normalize_enrollment would have refused, or NO_TARIFF from a table.
    """
    pid, eid, at = enrollment.participant_id, enrollment.event_id, enrollment.received_at
    if state is not None:
        _check_key(state, pid)
        if eid in state.seen_event_ids:
            return Decision()
        seen = (*state.seen_event_ids, eid)
        if state.enrollment is not None and state.status in OPEN_STATUSES:
            exc = _exception(
                ENROLLMENT_ALREADY_OPEN,
                pid,
                eid,
                at,
                detail=f"participant has a {state.status_name} membership; enrollment not applied",
            )
            return Decision(new_state=state.model_copy(update={"seen_event_ids": seen}), exceptions=[exc])
    else:
        seen = (eid,)

    entry = tariff.tariff_on(wib_date(at)) if isinstance(tariff, TariffTable) else tariff
    breakdown = bill_amount_idr(entry, enrollment.participant_type, enrollment.contract_months, enrollment.programs)
    bill = Bill(
        amount_idr=breakdown.total_idr,
        issued_at=at,
        expires_on=wib_date(at) + timedelta(days=bill_validity_days),
        tariff_version=entry.version,
        return_preparation_months=entry.return_preparation_months,
    )
    base = state if state is not None else MemberState(participant_id=pid)
    new = base.model_copy(
        update={
            "status": MemberStatus.AWAITING_PAYMENT,
            "enrollment": EnrollmentSnapshot.of(enrollment),
            "bill": bill,
            "paid_amount_idr": 0,
            "payment_event_ids": (),
            "held_payments": (),
            "seen_event_ids": seen,
            "coverage_start": None,
            "coverage_end": None,
        }
    )
    exceptions: list[ReconciliationException] = []
    for held in base.held_payments:
        new, raised = _apply_payment(new, held, at)
        exceptions.extend(raised)
    new, record = _emit(new, eid, at)
    return Decision(new_state=new, records=[record], exceptions=exceptions)


def on_payment(state: MemberState | None, payment: Payment) -> Decision:
    """Apply a normalized payment (see the module docstring)."""
    pid, eid, at = payment.participant_id, payment.event_id, payment.received_at
    held = HeldPayment.of(payment)
    if state is not None:
        _check_key(state, pid)
        if eid in state.seen_event_ids:
            return Decision()
    if state is None or state.enrollment is None:
        base = state if state is not None else MemberState(participant_id=pid)
        new = base.model_copy(
            update={
                "held_payments": (*base.held_payments, held),
                "seen_event_ids": (*base.seen_event_ids, eid),
            }
        )
        exc = _exception(
            PAYMENT_BEFORE_ENROLLMENT,
            pid,
            eid,
            at,
            bank_id=payment.bank_id,
            amount_idr=payment.amount_idr,
            detail="no enrollment for this customer number yet; payment held",
        )
        return Decision(new_state=new, exceptions=[exc])

    new, exceptions = _apply_payment(
        state.model_copy(update={"seen_event_ids": (*state.seen_event_ids, eid)}), held, at
    )
    if eid not in new.payment_event_ids:  # refused: state only remembers the id
        return Decision(new_state=new, exceptions=exceptions)
    new, record = _emit(new, eid, at)
    return Decision(new_state=new, records=[record], exceptions=exceptions)
