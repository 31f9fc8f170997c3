"""Typed readers over an untrusted JSON body: every wrong type becomes Rejected(INVALID_FIELD, field)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import date
from typing import Any

from services.domain.errors import Reason, Rejected

_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def as_mapping(value: object, field: str | None) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise Rejected(Reason.INVALID_FIELD, field, "must be a JSON object")
    return value


def get_str(
    raw: Mapping[str, Any], field: str, *, required: bool = True, max_len: int = 255, label: str | None = None
) -> str | None:
    """A string field, stripped; absent, null or blank is MISSING_FIELD when required, else None."""
    name = label or field
    value = raw.get(field)
    if value is None:
        if required:
            raise Rejected(Reason.MISSING_FIELD, name, "is required")
        return None
    if not isinstance(value, str):
        raise Rejected(Reason.INVALID_FIELD, name, "must be a string")
    value = value.strip()
    if not value:
        if required:
            raise Rejected(Reason.MISSING_FIELD, name, "is required")
        return None
    if len(value) > max_len:
        raise Rejected(Reason.INVALID_FIELD, name, f"must be at most {max_len} characters")
    if _CONTROL.search(value):
        raise Rejected(Reason.INVALID_FIELD, name, "must not contain control characters")
    return value


def req_str(raw: Mapping[str, Any], field: str, *, max_len: int = 255, label: str | None = None) -> str:
    value = get_str(raw, field, required=True, max_len=max_len, label=label)
    assert value is not None
    return value


def req_date(raw: Mapping[str, Any], field: str) -> date:
    """A ``YYYY-MM-DD`` string that is a real calendar date."""
    value = raw.get(field)
    if value is None:
        raise Rejected(Reason.MISSING_FIELD, field, "is required")
    if not isinstance(value, str) or _ISO_DATE.fullmatch(value) is None:
        raise Rejected(Reason.INVALID_FIELD, field, "must be a date string YYYY-MM-DD")
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise Rejected(Reason.INVALID_FIELD, field, "is not a real calendar date") from None


def req_int(raw: Mapping[str, Any], field: str) -> int:
    """A JSON integer (not a boolean, not a float such as 12.0, not a string)."""
    value = raw.get(field)
    if value is None:
        raise Rejected(Reason.MISSING_FIELD, field, "is required")
    if isinstance(value, bool) or not isinstance(value, int):
        raise Rejected(Reason.INVALID_FIELD, field, "must be an integer")
    return value
