"""services.domain.cases: what a consultation case body must be, and the canonical record it becomes."""

from __future__ import annotations

import typing
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from connectors.kbri.cases import CaseRequestBody
from services.domain.cases import CATEGORIES, case_event_id, case_record, validate_case
from services.domain.errors import Rejected
from services.domain.models import CaseAttachment, CaseCategory

RECEIVED = datetime(2026, 11, 2, 4, 5, 6, 789_000, tzinfo=UTC)


def body(**overrides: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "case_id": "KL-2026.0001_a",
        "category": "CLAIM_INQUIRY",
        "text": "Pekerja bertanya tentang klaim JKK.\r\nSudah lapor ke majikan.\tTerima kasih.",
        "attachments": [{"ref": "https://dms.kbri-kl.example/c/1.pdf", "media_type": "Application/PDF"}],
        "customer_no": "123456789012345678",
    }
    for key, value in overrides.items():
        if value is _DROP:
            out.pop(key, None)
        else:
            out[key] = value
    return out


_DROP = object()


def rejected(raw: Any) -> Rejected:
    with pytest.raises(Rejected) as caught:
        validate_case(raw)
    return caught.value


def test_a_full_case_is_accepted_as_sent() -> None:
    case = validate_case(body())
    assert case.case_id == "KL-2026.0001_a"
    assert case.category is CaseCategory.CLAIM_INQUIRY
    assert case.text.startswith("Pekerja") and "\r\n" in case.text and "\t" in case.text  # formatting kept
    assert case.attachments == (
        CaseAttachment(ref="https://dms.kbri-kl.example/c/1.pdf", media_type="application/pdf"),
    )
    assert case.customer_no == "123456789012345678"


def test_a_minimal_case_needs_no_attachments_nor_member() -> None:
    case = validate_case(body(attachments=_DROP, customer_no=_DROP, unknown_field="ignored"))
    assert case.attachments == () and case.customer_no is None


@pytest.mark.parametrize("category", CATEGORIES)
def test_every_category(category: str) -> None:
    assert validate_case(body(category=category)).category.value == category


def test_the_documented_categories_are_the_domain_s() -> None:
    documented = typing.get_args(CaseRequestBody.model_fields["category"].annotation)
    assert set(documented) == set(CATEGORIES)
    assert "UNKNOWN" not in CATEGORIES  # the Avro reader's fallback is never a category an office chooses


@pytest.mark.parametrize(
    ("overrides", "reason", "field"),
    [
        ({"case_id": _DROP}, "MISSING_FIELD", "case_id"),
        ({"case_id": 42}, "INVALID_FIELD", "case_id"),
        ({"case_id": ""}, "CASE_ID_FORMAT", "case_id"),
        ({"case_id": "a" * 65}, "CASE_ID_FORMAT", "case_id"),
        ({"case_id": "kl/0001"}, "CASE_ID_FORMAT", "case_id"),
        ({"case_id": "kl 0001"}, "CASE_ID_FORMAT", "case_id"),
        ({"category": _DROP}, "MISSING_FIELD", "category"),
        ({"category": "question"}, "CASE_CATEGORY", "category"),
        ({"category": "UNKNOWN"}, "CASE_CATEGORY", "category"),
        ({"text": _DROP}, "MISSING_FIELD", "text"),
        ({"text": "   \n "}, "MISSING_FIELD", "text"),
        ({"text": ["a"]}, "INVALID_FIELD", "text"),
        ({"text": "x" * 4001}, "CASE_TEXT", "text"),
        ({"text": "bad\x00byte"}, "CASE_TEXT", "text"),
        ({"text": "escape \x1b[31m"}, "CASE_TEXT", "text"),
        ({"text": "c1 \x85 control"}, "CASE_TEXT", "text"),
        ({"text": "lone \ud800 surrogate"}, "CASE_TEXT", "text"),
        ({"attachments": {"ref": "x"}}, "INVALID_FIELD", "attachments"),
        ({"attachments": [{"ref": "DOC-1"}] * 11}, "ATTACHMENTS", "attachments"),
        ({"attachments": ["DOC-1"]}, "INVALID_FIELD", "attachments[0]"),
        ({"attachments": [{"media_type": "application/pdf"}]}, "MISSING_FIELD", "attachments[0].ref"),
        ({"attachments": [{"ref": 7}]}, "INVALID_FIELD", "attachments[0].ref"),
        ({"attachments": [{"ref": "http://dms.example/x.pdf"}]}, "ATTACHMENT_REF", "attachments[0].ref"),
        ({"attachments": [{"ref": "https://user:pw@dms.example/x"}]}, "ATTACHMENT_REF", "attachments[0].ref"),
        ({"attachments": [{"ref": "https://dms.example:99999/x"}]}, "ATTACHMENT_REF", "attachments[0].ref"),
        ({"attachments": [{"ref": "https:///no-host"}]}, "ATTACHMENT_REF", "attachments[0].ref"),
        ({"attachments": [{"ref": "https://dms.example/a b"}]}, "ATTACHMENT_REF", "attachments[0].ref"),
        ({"attachments": [{"ref": "javascript:alert(1)"}]}, "ATTACHMENT_REF", "attachments[0].ref"),
        ({"attachments": [{"ref": "/etc/passwd"}]}, "ATTACHMENT_REF", "attachments[0].ref"),
        ({"attachments": [{"ref": "D" * 513}]}, "ATTACHMENT_REF", "attachments[0].ref"),
        ({"attachments": [{"ref": "DOC-1"}, {"ref": ""}]}, "ATTACHMENT_REF", "attachments[1].ref"),
        ({"attachments": [{"ref": "DOC-1", "media_type": "pdf"}]}, "MEDIA_TYPE", "attachments[0].media_type"),
        ({"attachments": [{"ref": "DOC-1", "media_type": 1}]}, "INVALID_FIELD", "attachments[0].media_type"),
        ({"customer_no": "12-34"}, "INVALID_FIELD", "customer_no"),
        ({"customer_no": "1" * 21}, "INVALID_FIELD", "customer_no"),
        ({"customer_no": 123}, "INVALID_FIELD", "customer_no"),
    ],
)
def test_a_broken_rule_names_its_reason_and_field(overrides: dict[str, Any], reason: str, field: str) -> None:
    refusal = rejected(body(**overrides))
    assert (refusal.reason, refusal.field) == (reason, field)


def test_a_refusal_never_echoes_the_value() -> None:
    secret_text = "NIK 3602045211870001 paspor C1234567 \x00"
    refusal = rejected(body(text=secret_text))
    assert "3602045211870001" not in str(refusal) and "C1234567" not in str(refusal)
    ref_refusal = rejected(body(attachments=[{"ref": "https://budi:rahasia@dms.example/x"}]))
    assert "rahasia" not in str(ref_refusal)


def test_the_largest_allowed_values_pass() -> None:
    case = validate_case(
        body(
            case_id="a" * 64,
            text="x" * 4000,
            attachments=[{"ref": "D" * 512}] + [{"ref": f"DMS/2026/{i}"} for i in range(9)],
            customer_no="9" * 20,
        )
    )
    assert len(case.attachments) == 10


@pytest.mark.parametrize(
    "ref",
    [
        "https://dms.example/x.pdf?download=1#p2",
        "HTTPS://DMS.EXAMPLE/X",
        "https://[2001:db8::1]:8443/doc",
        "DMS-2026/0042_v2.pdf",
    ],
)
def test_accepted_references(ref: str) -> None:
    assert validate_case(body(attachments=[{"ref": ref}])).attachments[0].ref == ref


def test_a_body_that_is_not_an_object_is_refused() -> None:
    assert rejected(["not", "an", "object"]).reason == "INVALID_FIELD"


# --- the record ----------------------------------------------------------------------------------------------------
def test_the_case_event_id_is_deterministic_per_office_and_case_id() -> None:
    first = case_event_id("KBRI_KUALA_LUMPUR", "KL-1")
    assert first == case_event_id("KBRI_KUALA_LUMPUR", "KL-1")
    assert uuid.UUID(first).version == 5
    assert first != case_event_id("KJRI_JOHOR_BAHRU", "KL-1")  # another office's case with the same id
    assert first != case_event_id("KBRI_KUALA_LUMPUR", "KL-2")


def test_the_record_carries_the_validated_case() -> None:
    record = case_record("KBRI_KUALA_LUMPUR", validate_case(body()), RECEIVED)
    assert record.case_event_id == case_event_id("KBRI_KUALA_LUMPUR", "KL-2026.0001_a")
    assert record.office_code == "KBRI_KUALA_LUMPUR"
    assert record.participant_id == "123456789012345678"
    assert record.category is CaseCategory.CLAIM_INQUIRY
    assert record.attachments == [
        CaseAttachment(ref="https://dms.kbri-kl.example/c/1.pdf", media_type="application/pdf")
    ]
    assert record.received_at == RECEIVED
    assert case_record("KDEI_TAIPEI", validate_case(body(customer_no=_DROP)), RECEIVED).participant_id is None
