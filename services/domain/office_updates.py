"""What an office learns about its own members: one JSON document for every channel.

The same `OfficeUpdate` document is the value on the office's Kafka topic `kbri.updates.<office>.v1`, an item
of the pull feed (`GET /v1/updates`) and the body of a webhook delivery, so an embassy developer parses
one format whichever way they subscribe.

Identity and ordering:
- `update_id` is deterministic (UUIDv5 of the office and the cause: a member record id, a rejected request,
  a case version), so a redelivered update carries the same id; it is also the `webhook-id`.
- `subject` names what the update is about (the member's customer number, the office request id, or the
  case id); per (type, subject), `sequence` strictly increases (the member record version, the case
  version). Consumers keep the highest sequence per (type, subject) and drop anything at or below it. The
  type is part of the key because an office chooses its request and case ids, and one of them may equal
  another subject of another type.

Personal data: identifiers are masked (`nik_masked` keeps the last 4 digits; no passport number at all);
the full name stays because the office registered it and needs it to recognise the worker. The VA numbers
are the office's to hand to the worker. Money is integer rupiah.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import date, datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from services.domain.identity import compose_va, event_uuid, mask_tail
from services.domain.models import CaseUpdate, MemberRecord

# Kafka headers of a record on an office topic (the value is `OfficeUpdate.model_dump_json()`).
H_UPDATE_ID = "sinergi-update-id"
# On member updates only: services.domain.identity.passport_lookup_key of the member's passport, so the KBRI
# API can answer an inquiry by passport without the number itself ever reaching a topic.
H_LOOKUP_PASSPORT = "sinergi-lookup-passport"

# A rejection is final for its request id: the office retries with a new X-Request-Id, never the same one.
REJECTION_SEQUENCE = 1

_REASON = re.compile(r"[A-Z][A-Z0-9_]{0,63}")
# What a body field name looks like (nik, programs[2], X-Request-Id); anything else is not echoed.
_FIELD_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.\[\]-]{0,63}")


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
    sequence: int = Field(description="Strictly increasing per (type, subject): keep the highest, drop the rest")
    occurred_at: datetime = Field(description="When the underlying event happened (UTC)")
    member: MemberView | None = None
    rejection: RejectionView | None = None
    case: CaseView | None = None


def update_id(office: str, kind: UpdateType, cause: str) -> str:
    """UUIDv5 of (office, type, cause): the same cause always gives the same id for the same office."""
    return event_uuid("office-update", office, kind.value, cause)


def member_update(record: MemberRecord, nik: str, banks: Mapping[str, str]) -> OfficeUpdate:
    """The member.updated document of one member version, for the owning office only.

    `nik` is the decrypted NIK, used for nothing but its masked tail; `banks` maps bank id -> its SNAP
    partnerServiceId (banks.json), so the office can hand the worker the VA number at every partner bank.
    """
    outstanding = max(0, record.bill_amount_idr - record.paid_amount_idr)
    member = MemberView(
        customer_no=record.customer_no,
        nik_masked=mask_tail(nik, 4),
        full_name=record.full_name,
        status=record.status.value,
        version=record.version,
        bill=BillView(
            amount_idr=record.bill_amount_idr,
            paid_idr=record.paid_amount_idr,
            outstanding_idr=outstanding,
            expires_on=record.bill_expires_on,
            virtual_accounts={bank: compose_va(psid, record.customer_no) for bank, psid in sorted(banks.items())},
        ),
        coverage=CoverageView(start=record.coverage_start, end=record.coverage_end),
        payments_credited=len(record.payment_event_ids),
        enrollment_event_id=record.enrollment_event_id,
    )
    return OfficeUpdate(
        update_id=update_id(record.office_code, UpdateType.MEMBER_UPDATED, record.record_id),
        type=UpdateType.MEMBER_UPDATED,
        office=record.office_code,
        subject=record.customer_no,
        sequence=record.version,
        occurred_at=record.updated_at,
        member=member,
    )


def rejection_update(
    office: str, request_id: str, reason: str, field: str | None, stage: str, occurred_at: datetime
) -> OfficeUpdate:
    """The enrollment.rejected document of an enrollment a processor refused after the API had accepted it.

    Only codes and a field name travel: never the refused value. The id depends on (office, request id,
    reason) alone, so the same refusal dead-lettered twice (a redelivery) is the same update.
    Raises ValueError for a reason that is not a stable code or a field that does not look like a field name.
    """
    if _REASON.fullmatch(reason) is None:
        raise ValueError("reason is not a stable reason code")
    if field is not None and _FIELD_NAME.fullmatch(field) is None:
        raise ValueError("field is not a field name")
    # The reason goes first: it cannot contain "|", so (reason, request id) cannot collide with another pair.
    cause = f"{reason}|{request_id}"
    return OfficeUpdate(
        update_id=update_id(office, UpdateType.ENROLLMENT_REJECTED, cause),
        type=UpdateType.ENROLLMENT_REJECTED,
        office=office,
        subject=request_id,
        sequence=REJECTION_SEQUENCE,
        occurred_at=occurred_at,
        rejection=RejectionView(request_id=request_id, reason=reason, field=field, stage=stage),
    )


def case_update(change: CaseUpdate) -> OfficeUpdate:
    """The case.updated document of one version of a case, for the office that filed it."""
    return OfficeUpdate(
        update_id=update_id(change.office_code, UpdateType.CASE_UPDATED, f"{change.case_event_id}:{change.version}"),
        type=UpdateType.CASE_UPDATED,
        office=change.office_code,
        subject=change.case_id,
        sequence=change.version,
        occurred_at=change.updated_at,
        case=CaseView(case_id=change.case_id, status=change.status.value, version=change.version, answer=change.answer),
    )


def kafka_headers(update: OfficeUpdate, passport_lookup: str | None = None) -> list[tuple[str, bytes]]:
    """Headers of the update's record on its office topic; the passport lookup key only on member updates."""
    headers = [(H_UPDATE_ID, update.update_id.encode())]
    if passport_lookup and update.type is UpdateType.MEMBER_UPDATED:
        headers.append((H_LOOKUP_PASSPORT, passport_lookup.encode()))
    return headers


def rejected_field(reason: str, message: str) -> str | None:
    """The field a dead letter's `dlq-message` names, if any.

    A stage writes `str(Rejected)` there: "REASON [field]: message" (services.stage, services.domain.errors).
    Anything not in that shape, or a "field" that does not look like a field name, gives None rather than
    risk passing on part of a message.
    """
    prefix = f"{reason} ["
    if not message.startswith(prefix):
        return None
    end = message.find("]: ", len(prefix))
    if end < 0:
        return None
    name = message[len(prefix) : end]
    return name if _FIELD_NAME.fullmatch(name) else None
