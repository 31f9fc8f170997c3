"""Canonical records, written by hand beside schemas/*.avsc (the .avsc files are the contract).

tests/unit/test_schema_parity.py checks every schema/model pair field by field and round-trips
samples through Avro. Money is integer rupiah (int) or Decimal, never float. Times are aware UTC
datetimes; dates are business dates.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Sex(StrEnum):
    M = "M"
    F = "F"
    UNKNOWN = "UNKNOWN"


class ParticipantType(StrEnum):
    PLACED = "PLACED"
    PERSEORANGAN = "PERSEORANGAN"
    UNKNOWN = "UNKNOWN"


class Program(StrEnum):
    JKK = "JKK"
    JKM = "JKM"
    JHT = "JHT"
    UNKNOWN = "UNKNOWN"


class MemberStatus(StrEnum):
    AWAITING_PAYMENT = "AWAITING_PAYMENT"
    ACTIVE = "ACTIVE"
    EXPIRED = "EXPIRED"
    LAPSED_REREGISTER = "LAPSED_REREGISTER"
    CANCELLED = "CANCELLED"
    UNKNOWN = "UNKNOWN"


class StatementSource(StrEnum):
    SNAP_STATEMENT = "SNAP_STATEMENT"
    CAMT054 = "CAMT054"
    CAMT053 = "CAMT053"
    MT940 = "MT940"
    CSV = "CSV"
    UNKNOWN = "UNKNOWN"


class EntryDirection(StrEnum):
    CREDIT = "CREDIT"
    DEBIT = "DEBIT"


class EntryDetailStatus(StrEnum):
    SUCCESS = "SUCCESS"
    ERROR_CORRECTION = "ERROR_CORRECTION"
    BOOK = "BOOK"
    PDNG = "PDNG"
    INFO = "INFO"
    REVERSAL = "REVERSAL"
    UNKNOWN = "UNKNOWN"


class CaseStatus(StrEnum):
    RECEIVED = "RECEIVED"
    IN_PROGRESS = "IN_PROGRESS"
    ANSWERED = "ANSWERED"
    CLOSED = "CLOSED"
    UNKNOWN = "UNKNOWN"


class CaseCategory(StrEnum):
    QUESTION = "QUESTION"
    COMPLAINT = "COMPLAINT"
    CLAIM_INQUIRY = "CLAIM_INQUIRY"
    DATA_CORRECTION = "DATA_CORRECTION"
    OTHER = "OTHER"
    UNKNOWN = "UNKNOWN"


class _Record(BaseModel):
    # frozen: a canonical record is a fact; a new version is a new object.
    model_config = ConfigDict(frozen=True, extra="forbid", use_enum_values=False)


class Enrollment(_Record):
    event_id: str
    participant_id: str
    office_code: str
    office_request_id: str
    pii_encrypted: bytes
    full_name: str
    date_of_birth: date
    sex: Sex
    participant_type: ParticipantType
    destination_country: str
    employer_name: str | None = None
    departure_date: date
    contract_start: date
    contract_months: int
    programs: list[Program]
    jht_monthly_amount_idr: int | None = None
    channel: str
    warnings: list[str] = Field(default_factory=list)
    received_at: datetime


class Payment(_Record):
    event_id: str
    participant_id: str
    bank_id: str
    partner_service_id: str
    virtual_account_no: str
    payment_request_id: str
    external_id: str
    partner_reference_no: str | None = None
    amount_idr: int
    original_amount: Decimal
    original_currency: str
    fx_rate: Decimal | None = None
    trx_time: datetime
    trx_utc_offset_minutes: int
    channel_code: str | None = None
    received_at: datetime


class BillLine(_Record):
    code: str
    description: str
    amount_idr: int


class CoveragePeriod(_Record):
    phase: str
    programs: list[str]
    start: date
    end: date


class LineageEntry(_Record):
    event_id: str
    kind: str
    outcome: str
    amount_idr: int | None = None
    status: str
    at: datetime


class MemberRecord(_Record):
    record_id: str
    participant_id: str
    version: int
    status: MemberStatus
    office_code: str
    full_name: str
    pii_encrypted: bytes
    date_of_birth: date
    sex: Sex
    participant_type: ParticipantType
    destination_country: str
    programs: list[Program]
    customer_no: str
    bill_amount_idr: int
    paid_amount_idr: int
    bill_issued_at: datetime
    bill_expires_on: date
    coverage_start: date | None = None
    coverage_end: date | None = None
    enrollment_event_id: str
    payment_event_ids: list[str] = Field(default_factory=list)
    caused_by_event_id: str
    updated_at: datetime
    credit_idr: int = 0
    reversal_event_ids: list[str] = Field(default_factory=list)
    bill_lines: list[BillLine] = Field(default_factory=list)
    coverage_periods: list[CoveragePeriod] = Field(default_factory=list)
    lineage: list[LineageEntry] = Field(default_factory=list)


class ReconciliationException(_Record):
    exception_id: str
    participant_id: str
    reason: str
    event_id: str
    bank_id: str | None = None
    amount_idr: int | None = None
    detail: str = ""
    occurred_at: datetime
    related_event_id: str | None = None


class StatementEntry(_Record):
    entry_id: str
    bank_id: str
    source: StatementSource
    # masked to the last 4 characters: never a full account number in an event
    account_ref: str = Field(pattern=r"^\**[^*]{0,4}$")
    booking_date: date
    value_date: date | None = None
    direction: EntryDirection
    amount: Decimal = Field(ge=0, max_digits=18, decimal_places=2)
    currency: str
    bank_ref: str | None = None
    end_to_end_id: str | None = None
    customer_ref: str | None = None
    narrative: str | None = Field(default=None, max_length=256)
    detail_status: EntryDetailStatus
    statement_ref: str | None = None
    line_no: int
    imported_at: datetime


class CaseUpdate(_Record):
    case_event_id: str
    case_id: str
    office_code: str
    version: int
    status: CaseStatus
    answer: str | None = None
    updated_at: datetime


class CaseAttachment(_Record):
    ref: str
    media_type: str | None = None


class Case(_Record):
    case_event_id: str
    case_id: str
    office_code: str
    participant_id: str | None = None
    category: CaseCategory
    text: str
    attachments: list[CaseAttachment] = Field(default_factory=list)
    received_at: datetime


class FxRate(_Record):
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    value_date: date
    idr_per_unit: Decimal = Field(gt=0, max_digits=18, decimal_places=6)
    source: str
    published_at: datetime


REVERSAL_DETAIL_STATUSES = frozenset({EntryDetailStatus.ERROR_CORRECTION, EntryDetailStatus.REVERSAL})


class Reversal(_Record):
    """A payment taken back by the bank (reversals.v1, key participant key). ``reverses_event_id`` (the
    payment's event id, as the statement reconciler names it) or ``bank_refs`` (a statement entry's bank
    reference / end-to-end id, matched against the credited payment's paymentRequestId and partnerReferenceNo
    at the same bank) says which. ``amount`` and ``currency``, when given, must be those of the payment."""

    event_id: str
    participant_id: str
    bank_id: str
    reverses_event_id: str | None = None
    bank_refs: list[str] = Field(default_factory=list)
    amount: Decimal | None = Field(None, ge=0, max_digits=18, decimal_places=2)
    currency: str | None = None
    received_at: datetime
    detail: str = ""

    @model_validator(mode="after")
    def _check(self) -> Reversal:
        if self.reverses_event_id is None and not self.bank_refs:
            raise ValueError("a reversal names the payment it reverses: reverses_event_id or bank_refs")
        if (self.amount is None) != (self.currency is None):
            raise ValueError("amount and currency come together")
        if self.received_at.tzinfo is None or self.received_at.utcoffset() is None:
            raise ValueError("received_at must be timezone-aware")
        return self

    @classmethod
    def of_statement_entry(cls, entry: StatementEntry, participant_id: str) -> Reversal:
        """The reversal an ERROR_CORRECTION / REVERSAL statement entry stands for (ValueError otherwise).
        The caller routes the entry to its participant (e.g. by the VA in ``customer_ref``)."""
        if entry.detail_status not in REVERSAL_DETAIL_STATUSES:
            raise ValueError("only ERROR_CORRECTION and REVERSAL entries reverse a payment")
        return cls(
            event_id=entry.entry_id,
            participant_id=participant_id,
            bank_id=entry.bank_id,
            bank_refs=[r for r in (entry.bank_ref, entry.end_to_end_id) if r],
            amount=entry.amount,
            currency=entry.currency,
            received_at=entry.imported_at,
        )


RECORD_TYPES: dict[str, type[_Record]] = {
    "sinergi.Enrollment": Enrollment,
    "sinergi.Payment": Payment,
    "sinergi.MemberRecord": MemberRecord,
    "sinergi.ReconciliationException": ReconciliationException,
    "sinergi.StatementEntry": StatementEntry,
    "sinergi.Case": Case,
    "sinergi.CaseUpdate": CaseUpdate,
    "sinergi.FxRate": FxRate,
    "sinergi.Reversal": Reversal,
}
