"""What an office learns about its own members: one JSON document for every channel.

The same `OfficeUpdate` document is the value on the office's Kafka topic `kbri.updates.<office>.v1`, an item
of the pull feed (`GET /v1/updates`) and the body of a webhook delivery, so an embassy developer parses
one format whichever way they subscribe.

Identity and ordering:
- `update_id` is deterministic (UUIDv5 of the office and the cause: a member record id, a rejected request,
  a case version), so a redelivered update carries the same id; it is also the `webhook-id`.
- `subject` names what the update is about (the member's customer number, the office request id, or the
  case id); per subject, `sequence` strictly increases (the member record version, the case version).
  Consumers keep the highest sequence per subject and drop anything at or below it.

Personal data: identifiers are masked (`nik_masked` keeps the last 4 digits; no passport number at all);
the full name stays because the office registered it and needs it to recognise the worker. The VA numbers
are the office's to hand to the worker. Money is integer rupiah.
"""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from services.domain.identity import event_uuid


class UpdateType(StrEnum):
    MEMBER_UPDATED = "member.updated"
    ENROLLMENT_REJECTED = "enrollment.rejected"
    CASE_UPDATED = "case.updated"


class _Doc(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class BillView(_Doc):
    amount_idr: int = Field(description="Total bill in rupiah")
    paid_idr: int = Field(description="Credited so far, in rupiah")
    outstanding_idr: int = Field(description="amount_idr - paid_idr, never below 0")
    expires_on: date = Field(description="Last WIB date the bill can be paid")
    virtual_accounts: dict[str, str] = Field(description="bank id -> SNAP virtualAccountNo to pay at")


class CoverageView(_Doc):
    start: date | None = None
    end: date | None = None


class MemberView(_Doc):
    customer_no: str = Field(description="The participant's VA customer number (a keyed hash, not the NIK)")
    nik_masked: str = Field(description="NIK with all but the last 4 digits masked")
    full_name: str
    status: str = Field(description="AWAITING_PAYMENT, ACTIVE, EXPIRED, LAPSED_REREGISTER, CANCELLED")
    version: int = Field(description="Member record version; strictly increasing per member")
    bill: BillView
    coverage: CoverageView
    payments_credited: int = Field(description="Number of distinct payments credited to the current bill")
    enrollment_event_id: str


class RejectionView(_Doc):
    request_id: str = Field(description="The office's X-Request-Id of the refused enrollment")
    reason: str = Field(description="Stable reason code, e.g. NIK_PROVINCE")
    field: str | None = Field(None, description="Offending field name; never its value")
    stage: str = Field(description="Where it was refused, e.g. normalize_enrollments")


class CaseView(_Doc):
    case_id: str = Field(description="The office's case id")
    status: str = Field(description="RECEIVED, IN_PROGRESS, ANSWERED, CLOSED")
    version: int
    answer: str | None = Field(None, description="BPJS's answer text, when there is one")


class OfficeUpdate(_Doc):
    update_id: str = Field(description="Deterministic id; the same update redelivered keeps it (= webhook-id)")
    type: UpdateType
    office: str = Field(description="The office this update belongs to; never another office's")
    subject: str = Field(description="customer_no, request id or case id this update is about")
    sequence: int = Field(description="Strictly increasing per subject: keep the highest, drop the rest")
    occurred_at: datetime = Field(description="When the underlying event happened (UTC)")
    member: MemberView | None = None
    rejection: RejectionView | None = None
    case: CaseView | None = None


def update_id(office: str, kind: UpdateType, cause: str) -> str:
    """UUIDv5 of (office, type, cause): the same cause always gives the same id for the same office."""
    return event_uuid("office-update", office, kind.value, cause)
