"""Calendar helpers: WIB business dates and month arithmetic (domain.md 7.3: reconcile by WIB date)."""

from __future__ import annotations

import calendar
from datetime import UTC, date, datetime, timedelta, timezone

WIB = timezone(timedelta(hours=7), "WIB")


def require_aware(value: datetime, name: str) -> datetime:
    """Return ``value`` in UTC; a naive datetime here is a caller bug, so it raises ValueError."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware")
    return value.astimezone(UTC)


def wib_date(value: datetime) -> date:
    """The WIB (UTC+7) calendar date of an aware datetime."""
    return require_aware(value, "datetime").astimezone(WIB).date()


def add_months(day: date, months: int) -> date:
    """``day`` moved by ``months`` months, clamped to a shorter month's end (Jan 31 + 1: Feb 28)."""
    index = day.year * 12 + (day.month - 1) + months
    year, month0 = divmod(index, 12)
    last = calendar.monthrange(year, month0 + 1)[1]
    return date(year, month0 + 1, min(day.day, last))


def contract_end(contract_start: date, contract_months: int) -> date:
    """Last day of an agreement of ``contract_months`` months starting on ``contract_start``.

    The day before the same day ``contract_months`` later (1 Sep + 24 -> 31 Aug); when that month has no
    such day, its last day (31 Jan + 1 -> 28 Feb).
    """
    same_day = add_months(contract_start, contract_months)
    if same_day.day != contract_start.day:  # clamped: the month is shorter than the start day
        return same_day
    return same_day - timedelta(days=1)


def years_between(born: date, on: date) -> int:
    """Completed years of age on ``on``. A 29 February birthday falls on 1 March in common years."""
    years = on.year - born.year
    if (on.month, on.day) < (born.month, born.day):
        years -= 1
    return years
