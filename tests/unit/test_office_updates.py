"""OfficeUpdate builders (services.domain.office_updates) and notify_kbri's record -> update step (Notifier)."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from typing import Any

import pytest
from cryptography.fernet import Fernet
from test_avro_samples import MEMBER_ACTIVE

from services.domain.identity import passport_lookup_key
from services.domain.models import CaseStatus, CaseUpdate, MemberRecord, MemberStatus
from services.domain.office_updates import (
    H_LOOKUP_PASSPORT,
    H_UPDATE_ID,
    UpdateType,
    case_update,
    kafka_headers,
    member_update,
    rejected_field,
    rejection_update,
    update_id,
)
from services.notify_kbri import (
    BANK_SUBMITTED,
    INVALID_DEAD_LETTER,
    MISSING_REQUEST_ID,
    NOT_FOR_AN_OFFICE,
    PII_UNREADABLE,
    UNKNOWN_OFFICE,
    Notifier,
    Refused,
    Skip,
)

NIK = "3201011203900001"
PASSPORT = "C1234567"
BANKS = {"MANDIRI": "   88001", "BNI": "   88002", "MAYBANK_MY": "   88003"}
OFFICE = "KBRI_KUALA_LUMPUR"
OTHER_OFFICE = "KDEI_TAIPEI"
KEY = Fernet.generate_key()
SECRET = b"test-participant-secret"
WHEN = datetime(2025, 7, 21, 2, 0, tzinfo=UTC)


def record(**changes: Any) -> MemberRecord:
    pii = json.dumps({"nik": NIK, "passport_number": PASSPORT}).encode()
    base = MEMBER_ACTIVE.model_copy(update={"pii_encrypted": Fernet(KEY).encrypt(pii), "office_code": OFFICE})
    return base.model_copy(update=changes)


# --- member.updated ---------------------------------------------------------------------------------------


def test_member_update_masks_the_nik_and_carries_no_passport_or_pii() -> None:
    rec = record()
    update = member_update(rec, NIK, BANKS)
    assert update.member is not None
    assert update.member.nik_masked == "*" * 12 + "0001"
    text = update.model_dump_json()
    assert NIK not in text
    assert NIK[:12] not in text
    assert PASSPORT not in text
    assert "passport" not in text
    assert "pii" not in text


def test_member_update_lists_the_va_number_at_every_bank() -> None:
    rec = record()
    bill = member_update(rec, NIK, BANKS).member.bill  # type: ignore[union-attr]
    assert bill.virtual_accounts == {
        "MANDIRI": "   88001" + rec.customer_no,
        "BNI": "   88002" + rec.customer_no,
        "MAYBANK_MY": "   88003" + rec.customer_no,
    }
    assert all(len(va) == 8 + len(rec.customer_no) for va in bill.virtual_accounts.values())


@pytest.mark.parametrize(
    ("billed", "paid", "outstanding"),
    [(370_000, 0, 370_000), (370_000, 120_000, 250_000), (370_000, 370_000, 0), (370_000, 400_000, 0)],
)
def test_outstanding_is_bill_minus_paid_never_below_zero(billed: int, paid: int, outstanding: int) -> None:
    bill = member_update(record(bill_amount_idr=billed, paid_amount_idr=paid), NIK, BANKS).member.bill  # type: ignore[union-attr]
    assert (bill.amount_idr, bill.paid_idr, bill.outstanding_idr) == (billed, paid, outstanding)


def test_member_update_identity_order_and_views() -> None:
    rec = record()
    update = member_update(rec, NIK, BANKS)
    assert update.type is UpdateType.MEMBER_UPDATED
    assert (update.office, update.subject, update.sequence) == (OFFICE, rec.customer_no, rec.version)
    assert update.update_id == update_id(OFFICE, UpdateType.MEMBER_UPDATED, rec.record_id)
    assert update.occurred_at == rec.updated_at
    member = update.member
    assert member is not None
    assert (member.status, member.version, member.payments_credited) == ("ACTIVE", 3, 2)
    assert (member.coverage.start, member.coverage.end) == (rec.coverage_start, rec.coverage_end)
    assert member.bill.expires_on == rec.bill_expires_on
    assert update.rejection is None and update.case is None


def test_awaiting_member_has_no_coverage_and_nothing_credited() -> None:
    rec = record(
        version=1,
        record_id=f"{MEMBER_ACTIVE.participant_id}:1",
        status=MemberStatus.AWAITING_PAYMENT,
        paid_amount_idr=0,
        coverage_start=None,
        coverage_end=None,
        payment_event_ids=[],
    )
    member = member_update(rec, NIK, BANKS).member
    assert member is not None
    assert (member.status, member.payments_credited, member.bill.outstanding_idr) == ("AWAITING_PAYMENT", 0, 370_000)
    assert (member.coverage.start, member.coverage.end) == (None, None)


def test_member_update_ids_are_deterministic_and_distinct_per_version_and_office() -> None:
    rec = record()
    assert member_update(rec, NIK, BANKS).update_id == member_update(record(), NIK, BANKS).update_id
    newer = record(version=4, record_id=f"{rec.participant_id}:4")
    assert member_update(newer, NIK, BANKS).update_id != member_update(rec, NIK, BANKS).update_id
    elsewhere = record(office_code=OTHER_OFFICE)
    assert member_update(elsewhere, NIK, BANKS).update_id != member_update(rec, NIK, BANKS).update_id


def test_passport_lookup_header_only_on_member_updates() -> None:
    member = member_update(record(), NIK, BANKS)
    assert kafka_headers(member, "abc123") == [(H_UPDATE_ID, member.update_id.encode()), (H_LOOKUP_PASSPORT, b"abc123")]
    assert kafka_headers(member) == [(H_UPDATE_ID, member.update_id.encode())]
    rejected = rejection_update(OFFICE, "kl-1", "UNDER_AGE", "date_of_birth", "normalize_enrollments", WHEN)
    assert kafka_headers(rejected, "abc123") == [(H_UPDATE_ID, rejected.update_id.encode())]


# --- enrollment.rejected ----------------------------------------------------------------------------------


def test_rejection_update_names_codes_only() -> None:
    update = rejection_update(OFFICE, "kl-2026-7", "NIK_PROVINCE", "nik", "normalize_enrollments", WHEN)
    assert update.type is UpdateType.ENROLLMENT_REJECTED
    assert (update.office, update.subject, update.sequence, update.occurred_at) == (OFFICE, "kl-2026-7", 1, WHEN)
    assert update.rejection is not None
    assert update.rejection.model_dump() == {
        "request_id": "kl-2026-7",
        "reason": "NIK_PROVINCE",
        "field": "nik",
        "stage": "normalize_enrollments",
    }
    assert update.member is None and update.case is None


def test_rejection_id_depends_on_office_request_and_reason_only() -> None:
    def rid(office: str, request_id: str, reason: str, field: str | None = None, when: datetime = WHEN) -> str:
        return rejection_update(office, request_id, reason, field, "normalize_enrollments", when).update_id

    assert rid(OFFICE, "r1", "UNDER_AGE") == rid(OFFICE, "r1", "UNDER_AGE", "date_of_birth", datetime.now(UTC))
    assert len({rid(OFFICE, "r1", "UNDER_AGE"), rid(OFFICE, "r2", "UNDER_AGE"), rid(OFFICE, "r1", "NIK_DATE")}) == 3
    assert rid(OFFICE, "r1", "UNDER_AGE") != rid(OTHER_OFFICE, "r1", "UNDER_AGE")


@pytest.mark.parametrize(
    ("reason", "field"), [("not a code", None), ("", None), ("UNDER_AGE", "3201011203900001"), ("UNDER_AGE", "a b")]
)
def test_rejection_refuses_anything_but_codes_and_field_names(reason: str, field: str | None) -> None:
    with pytest.raises(ValueError):
        rejection_update(OFFICE, "r1", reason, field, "normalize_enrollments", WHEN)


@pytest.mark.parametrize(
    ("reason", "message", "expected"),
    [
        ("NIK_PROVINCE", "NIK_PROVINCE [nik]: province code is not a known province", "nik"),
        ("PROGRAMS", "PROGRAMS [programs[1]]: unknown programme", "programs[1]"),
        ("INVALID_JSON", "value is not valid JSON", None),
        ("UNDER_AGE", "UNDER_AGE: must be 18 on departure", None),
        ("UNDER_AGE", "NIK_DATE [nik]: other reason's message", None),
        ("NIK_FORMAT", "NIK_FORMAT [3201011203900001]: a value where a field name belongs", None),
        ("NIK_FORMAT", "NIK_FORMAT [nik", None),
    ],
)
def test_rejected_field_reads_only_a_field_name_from_the_dead_letter_message(
    reason: str, message: str, expected: str | None
) -> None:
    assert rejected_field(reason, message) == expected


# --- case.updated -----------------------------------------------------------------------------------------


def test_case_update_per_version() -> None:
    v1 = CaseUpdate(
        case_event_id="ce-1",
        case_id="KL-CASE-9",
        office_code=OFFICE,
        version=1,
        status=CaseStatus.RECEIVED,
        updated_at=WHEN,
    )
    v2 = v1.model_copy(update={"version": 2, "status": CaseStatus.ANSWERED, "answer": "Sudah dijawab."})
    one, two = case_update(v1), case_update(v2)
    assert (two.type, two.office, two.subject, two.sequence) == (UpdateType.CASE_UPDATED, OFFICE, "KL-CASE-9", 2)
    assert two.case is not None and one.case is not None
    assert two.case.model_dump() == {
        "case_id": "KL-CASE-9",
        "status": "ANSWERED",
        "version": 2,
        "answer": "Sudah dijawab.",
    }
    assert (one.case.status, one.case.answer) == ("RECEIVED", None)
    assert one.update_id != two.update_id
    assert case_update(v2).update_id == two.update_id == update_id(OFFICE, UpdateType.CASE_UPDATED, "ce-1:2")


# --- Notifier: decode, decrypt, route -----------------------------------------------------------------------


class ModelCodec:
    """The codec's decode_model over values that are the model's JSON (the Avro path has its own tests)."""

    def decode_model(self, value: bytes, model: type[Any]) -> Any:
        return model.model_validate_json(value)


def notifier(key: bytes = KEY) -> Notifier:
    return Notifier(ModelCodec(), frozenset({OFFICE, OTHER_OFFICE}), BANKS, Fernet(key).decrypt, SECRET)


def test_notifier_member_goes_to_its_office_topic_keyed_by_customer_no_with_the_passport_lookup() -> None:
    rec = record()
    decoded, out = notifier().member(rec.model_dump_json().encode())
    assert decoded == rec
    assert out.topic == f"kbri.updates.{OFFICE}.v1"
    assert out.key == rec.customer_no.encode()
    assert out.mark == rec.participant_id.encode()
    assert dict(out.headers)[H_LOOKUP_PASSPORT] == passport_lookup_key(PASSPORT, SECRET).encode()
    assert dict(out.headers)[H_UPDATE_ID] == out.update.update_id.encode()
    for blob in (out.value, out.key, *(v for _, v in out.headers)):
        assert NIK.encode() not in blob and PASSPORT.encode() not in blob


def test_notifier_refuses_an_unknown_office_and_unreadable_pii() -> None:
    with pytest.raises(Refused) as unknown:
        notifier().member(record(office_code="KBRI_NOWHERE").model_dump_json().encode())
    assert unknown.value.reason == UNKNOWN_OFFICE
    with pytest.raises(Refused) as wrong_key:
        notifier(Fernet.generate_key()).member(record().model_dump_json().encode())
    assert wrong_key.value.reason == PII_UNREADABLE
    assert NIK not in wrong_key.value.message


def dead_letter(**overrides: str | None) -> dict[str, bytes]:
    headers: dict[str, str | None] = {
        "sinergi-office": OFFICE,
        "sinergi-request-id": "kl-2026-000123",
        "dlq-reason": "UNDER_AGE",
        "dlq-stage": "normalize_enrollments",
        "dlq-message": "UNDER_AGE [date_of_birth]: must be at least 18 on the departure date",
        "dlq-time": "2025-07-21T09:00:00+07:00",
    }
    headers.update(overrides)
    return {k: v.encode() for k, v in headers.items() if v is not None}


def test_notifier_rejection_from_dead_letter_headers() -> None:
    out = notifier().rejection(dead_letter(), WHEN)
    assert out.topic == f"kbri.updates.{OFFICE}.v1"
    assert out.key == b"kl-2026-000123"
    assert out.update.rejection is not None
    assert (out.update.rejection.reason, out.update.rejection.field) == ("UNDER_AGE", "date_of_birth")
    assert out.update.occurred_at == datetime(2025, 7, 21, 2, 0, tzinfo=UTC)
    assert out.mark == out.update.update_id.encode()
    assert notifier().rejection(dead_letter(**{"dlq-time": "garbage"}), WHEN).update.occurred_at == WHEN


@pytest.mark.parametrize(
    ("overrides", "outcome", "reason"),
    [
        ({"sinergi-office": None}, Skip, NOT_FOR_AN_OFFICE),
        ({"sinergi-submitted-by": "bank:MAYBANK_MY"}, Skip, BANK_SUBMITTED),
        ({"sinergi-office": "KBRI_NOWHERE"}, Refused, UNKNOWN_OFFICE),
        ({"sinergi-request-id": None}, Refused, MISSING_REQUEST_ID),
        ({"dlq-reason": "not a code"}, Refused, INVALID_DEAD_LETTER),
    ],
)
def test_notifier_rejection_skips_or_refuses(overrides: dict[str, str | None], outcome: type, reason: str) -> None:
    with pytest.raises(outcome) as caught:
        notifier().rejection(dead_letter(**overrides), WHEN)
    assert caught.value.reason == reason


def test_notifier_case_goes_to_the_filing_office_only() -> None:
    change = CaseUpdate(
        case_event_id="ce-7",
        case_id="TPE-1",
        office_code=OTHER_OFFICE,
        version=2,
        status=CaseStatus.ANSWERED,
        answer="ok",
        updated_at=WHEN,
    )
    decoded, out = notifier().case(change.model_dump_json().encode())
    assert decoded == change
    assert (out.topic, out.key, out.mark) == (f"kbri.updates.{OTHER_OFFICE}.v1", b"TPE-1", b"ce-7")
    assert H_LOOKUP_PASSPORT not in dict(out.headers)
    assert date(2025, 7, 21) == out.update.occurred_at.date()
