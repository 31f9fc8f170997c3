"""Rejections and warnings raised by the domain rules.

A :class:`Rejected` carries a stable UPPER_SNAKE ``reason`` (for DLQ headers, API errors and metric labels),
the offending ``field`` (a body field name, never its value) and a human ``message``. Messages are written
from constants and field names only: they never contain the personal value that failed (NIK, passport,
account number, name), so a rejection can be logged and returned to a partner as-is.
"""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    """Stable rejection reason codes. Add codes; never rename one (partners and dashboards key on them)."""

    # body shape
    MISSING_FIELD = "MISSING_FIELD"
    INVALID_FIELD = "INVALID_FIELD"
    # NIK (domain.md 2.1 / 7.3)
    NIK_FORMAT = "NIK_FORMAT"
    NIK_PROVINCE = "NIK_PROVINCE"
    NIK_DATE = "NIK_DATE"
    NIK_SERIAL = "NIK_SERIAL"
    # enrollment rules
    UNDER_AGE = "UNDER_AGE"
    UNKNOWN_OFFICE = "UNKNOWN_OFFICE"
    CONTRACT_MONTHS = "CONTRACT_MONTHS"
    PASSPORT_FORMAT = "PASSPORT_FORMAT"
    PROGRAMS = "PROGRAMS"
    JHT_AMOUNT = "JHT_AMOUNT"
    REGISTRATION_TOO_EARLY = "REGISTRATION_TOO_EARLY"
    # payments (SNAP)
    AMOUNT_FORMAT = "AMOUNT_FORMAT"
    CURRENCY_NOT_ALLOWED = "CURRENCY_NOT_ALLOWED"
    FX_RATE_FORMAT = "FX_RATE_FORMAT"
    VA_FORMAT = "VA_FORMAT"
    VA_MISMATCH = "VA_MISMATCH"
    TIMESTAMP_FORMAT = "TIMESTAMP_FORMAT"
    # reference data
    NO_TARIFF = "NO_TARIFF"


class Warn(StrEnum):
    """Warning codes: the record is accepted and carries the code in ``Enrollment.warnings``."""

    NIK_DOB_MISMATCH = "NIK_DOB_MISMATCH"
    NIK_SEX_MISMATCH = "NIK_SEX_MISMATCH"


# Plain-string aliases for callers that prefer constants.
NIK_DOB_MISMATCH: str = Warn.NIK_DOB_MISMATCH.value
NIK_SEX_MISMATCH: str = Warn.NIK_SEX_MISMATCH.value


class Rejected(Exception):
    """Input that violates a domain rule. ``str(exc)`` is safe to log: it never holds personal data."""

    reason: str
    field: str | None
    message: str

    def __init__(self, reason: str, field: str | None = None, message: str = "") -> None:
        self.reason = str(reason.value if isinstance(reason, StrEnum) else reason)
        self.field = field
        self.message = message or self.reason
        super().__init__(self.reason, field, self.message)

    def __str__(self) -> str:
        where = f" [{self.field}]" if self.field else ""
        return f"{self.reason}{where}: {self.message}"

    def __repr__(self) -> str:
        return f"Rejected(reason={self.reason!r}, field={self.field!r}, message={self.message!r})"
