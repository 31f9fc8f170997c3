"""Consultation cases an office files for one of its workers: validation and the canonical `Case` record.

The body of `POST /v1/cases`:

    field         type                 rule                                                           reason
    case_id       string               1-64 of A-Z a-z 0-9 . _ -  (the office's id; idempotency key)  CASE_ID_FORMAT
    category      string               QUESTION, COMPLAINT, CLAIM_INQUIRY, DATA_CORRECTION, OTHER     CASE_CATEGORY
    text          string               1-4000 characters, not blank, no control characters except    CASE_TEXT
                                       tab, CR and LF (no lone surrogates: they cannot be stored)
    attachments   array, optional      at most 10 objects {ref, media_type?}                          ATTACHMENTS
      ref         string               an https URL (no user:password@) or a document id              ATTACHMENT_REF
                                       [A-Za-z0-9][A-Za-z0-9._/-]*, at most 512 characters
      media_type  string, optional     type/subtype, e.g. application/pdf                             MEDIA_TYPE
    customer_no   string, optional     1-20 digits: the member the case is about                      INVALID_FIELD

A missing required field is MISSING_FIELD, a wrong JSON type INVALID_FIELD; unknown fields are ignored (a
newer desk system may send more). Whether `customer_no` is the office's own member is not a rule of the body:
the API decides it from its read model. Messages name the field, never its value: the text may hold
whatever the worker told the office.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from services.domain.errors import Reason, Rejected
from services.domain.identity import event_uuid
from services.domain.models import Case, CaseAttachment, CaseCategory

CASE_ID_FORMAT = "CASE_ID_FORMAT"
CASE_CATEGORY = "CASE_CATEGORY"
CASE_TEXT = "CASE_TEXT"
ATTACHMENTS = "ATTACHMENTS"
ATTACHMENT_REF = "ATTACHMENT_REF"
MEDIA_TYPE = "MEDIA_TYPE"

CASE_ID_MAX = 64
TEXT_MAX = 4000
ATTACHMENTS_MAX = 10
REF_MAX = 512
MEDIA_TYPE_MAX = 255

CATEGORIES = tuple(c.value for c in CaseCategory if c is not CaseCategory.UNKNOWN)

_CASE_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_DOCUMENT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,511}")
_RFC6838_NAME = r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}"
_MEDIA_TYPE = re.compile(rf"{_RFC6838_NAME}/{_RFC6838_NAME}")
_CUSTOMER_NO = re.compile(r"[0-9]{1,20}")
_TEXT_ALLOWED_CONTROLS = frozenset("\t\n\r")
_HOST = re.compile(r"[a-z0-9](?:[a-z0-9.-]{0,251}[a-z0-9])?|[0-9a-f:.]{2,45}")  # urlsplit lowercases it


@dataclass(frozen=True)
class CaseRequest:
    """A validated case body, before the API decides who it is about."""

    case_id: str
    category: CaseCategory
    text: str
    attachments: tuple[CaseAttachment, ...]
    customer_no: str | None


def _string(body: Mapping[str, Any], field: str, *, required: bool) -> str | None:
    value = body.get(field)
    if value is None:
        if required:
            raise Rejected(Reason.MISSING_FIELD, field, "is required")
        return None
    if not isinstance(value, str):
        raise Rejected(Reason.INVALID_FIELD, field, "must be a string")
    return value


def _has_forbidden_character(value: str, allowed: frozenset[str] = frozenset()) -> bool:
    # Cc: C0/C1 controls and DEL; Cs: a lone surrogate (JSON "\ud800" parses, but is not encodable UTF-8).
    return any(unicodedata.category(ch) in ("Cc", "Cs") and ch not in allowed for ch in value)


def _case_id(body: Mapping[str, Any]) -> str:
    case_id = _string(body, "case_id", required=True)
    assert case_id is not None
    if _CASE_ID.fullmatch(case_id) is None:
        raise Rejected(CASE_ID_FORMAT, "case_id", f"must be 1-{CASE_ID_MAX} characters of A-Z a-z 0-9 . _ -")
    return case_id


def _category(body: Mapping[str, Any]) -> CaseCategory:
    category = _string(body, "category", required=True)
    if category not in CATEGORIES:
        raise Rejected(CASE_CATEGORY, "category", "must be one of " + ", ".join(CATEGORIES))
    return CaseCategory(category)


def _text(body: Mapping[str, Any]) -> str:
    text = _string(body, "text", required=True)
    assert text is not None
    if not text.strip():
        raise Rejected(Reason.MISSING_FIELD, "text", "is required")
    if len(text) > TEXT_MAX:
        raise Rejected(CASE_TEXT, "text", f"must be at most {TEXT_MAX} characters")
    if _has_forbidden_character(text, _TEXT_ALLOWED_CONTROLS):
        raise Rejected(CASE_TEXT, "text", "must not contain control characters other than tab and line breaks")
    return text


def _is_https_url(ref: str) -> bool:
    if any(ch.isspace() for ch in ref):
        return False
    try:
        parts = urlsplit(ref)
        parts.port  # noqa: B018  # raises ValueError for a port that is not a number in range
    except ValueError:
        return False
    # user:password@ would put a credential into an event that many systems read.
    if parts.scheme != "https" or "@" in parts.netloc:
        return False
    return _HOST.fullmatch(parts.hostname or "") is not None


def _ref(value: object, where: str) -> str:
    if value is None:
        raise Rejected(Reason.MISSING_FIELD, where, "is required")
    if not isinstance(value, str):
        raise Rejected(Reason.INVALID_FIELD, where, "must be a string")
    if not value or len(value) > REF_MAX or _has_forbidden_character(value):
        raise Rejected(ATTACHMENT_REF, where, f"must be 1-{REF_MAX} characters")
    if value.lower().startswith("https://"):
        if not _is_https_url(value):
            raise Rejected(ATTACHMENT_REF, where, "is not a valid https URL (no user or password in it)")
        return value
    if _DOCUMENT_ID.fullmatch(value) is None:
        raise Rejected(ATTACHMENT_REF, where, "must be an https URL or a document id of A-Z a-z 0-9 . _ / -")
    return value


def _media_type(value: object, where: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise Rejected(Reason.INVALID_FIELD, where, "must be a string")
    if len(value) > MEDIA_TYPE_MAX or _MEDIA_TYPE.fullmatch(value) is None:
        raise Rejected(MEDIA_TYPE, where, "must be a media type like application/pdf")
    return value.lower()


def _attachments(body: Mapping[str, Any]) -> tuple[CaseAttachment, ...]:
    value = body.get("attachments")
    if value is None:
        return ()
    if not isinstance(value, list):
        raise Rejected(Reason.INVALID_FIELD, "attachments", "must be an array")
    if len(value) > ATTACHMENTS_MAX:
        raise Rejected(ATTACHMENTS, "attachments", f"at most {ATTACHMENTS_MAX} attachments")
    out = []
    for i, item in enumerate(value):
        where = f"attachments[{i}]"
        if not isinstance(item, Mapping):
            raise Rejected(Reason.INVALID_FIELD, where, "must be a JSON object")
        ref = _ref(item.get("ref"), f"{where}.ref")
        media_type = _media_type(item.get("media_type"), f"{where}.media_type")
        out.append(CaseAttachment(ref=ref, media_type=media_type))
    return tuple(out)


def _customer_no(body: Mapping[str, Any]) -> str | None:
    customer_no = _string(body, "customer_no", required=False)
    if customer_no is not None and _CUSTOMER_NO.fullmatch(customer_no) is None:
        raise Rejected(Reason.INVALID_FIELD, "customer_no", "must be 1-20 digits")
    return customer_no


def validate_case(body: Mapping[str, Any]) -> CaseRequest:
    """The case an office filed, or Rejected with the first rule it breaks (checked in the table's order)."""
    if not isinstance(body, Mapping):
        raise Rejected(Reason.INVALID_FIELD, None, "must be a JSON object")
    return CaseRequest(
        case_id=_case_id(body),
        category=_category(body),
        text=_text(body),
        attachments=_attachments(body),
        customer_no=_customer_no(body),
    )


def case_event_id(office_code: str, case_id: str) -> str:
    """UUIDv5("case", office, case id): an office filing the same case again gets the same event."""
    return event_uuid("case", office_code, case_id)


def case_record(office_code: str, request: CaseRequest, received_at: datetime) -> Case:
    """The canonical record of a case; `request.customer_no` must already be known to be the office's member."""
    return Case(
        case_event_id=case_event_id(office_code, request.case_id),
        case_id=request.case_id,
        office_code=office_code,
        participant_id=request.customer_no,
        category=request.category,
        text=request.text,
        attachments=list(request.attachments),
        received_at=received_at,
    )
