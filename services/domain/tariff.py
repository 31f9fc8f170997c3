"""Effective-dated JKK+JKM tariffs (domain.md 1.3, 7.2, 7.3) and coverage dates (1.5, 7.3).

The table comes from ``schemas/reference/tariffs.json`` (the caller reads the file; this module only
validates the parsed dict). All amounts are integer rupiah.

Bill (the up-front JKK+JKM amount of one enrollment)::

    PRE (pre_placement_idr, PLACED only) + package(m) + excess_month_idr * excess months

Package for a contract of ``m`` months, by ``between_packages_rule`` (UNCONFIRMED in law, so configured):

* ``NEXT_PACKAGE_UP``: the smallest package with ``months >= m``; beyond the largest package, the largest
  plus one excess month per month over it (m<=6: M6, m<=12: M12, m<=24: M24, 36: M24 + 12 * 13,500).
* ``LOWER_PACKAGE_PLUS_EXCESS``: the largest package with ``months <= m`` plus one excess month per month
  over it; below the smallest package, the smallest package (3: M6, 18: M12 + 6 * 13,500).

JHT is a monthly voluntary contribution and is never part of this bill (its range is checked at intake).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from services.domain.dates import add_months, contract_end
from services.domain.errors import Reason, Rejected
from services.domain.models import ParticipantType, Program

BetweenPackagesRule = Literal["NEXT_PACKAGE_UP", "LOWER_PACKAGE_PLUS_EXCESS"]
Rupiah = Annotated[int, Field(strict=True, ge=0)]
Months = Annotated[int, Field(strict=True, ge=0)]
Days = Annotated[int, Field(strict=True, ge=0)]
PreDepartureCoverStart = Literal["PAYMENT_DATE", "REGISTRATION_DATE"]

MANDATORY_PROGRAMS = frozenset({Program.JKK, Program.JKM})


class Package(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    code: str
    months: Annotated[int, Field(strict=True, ge=1)]
    amount_idr: Rupiah


class Tariff(BaseModel):
    """One entry of the tariff table, in force from ``effective_from`` until the next entry."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: str
    effective_from: date
    pre_placement_idr: Rupiah
    packages: tuple[Package, ...]
    excess_month_idr: Rupiah
    extension_month_idr: Rupiah
    jht_monthly_min_idr: Rupiah
    jht_monthly_max_idr: Rupiah
    between_packages_rule: BetweenPackagesRule
    pre_departure_cover_months: Months
    return_preparation_months: Months
    # Coverage rules (domain.md 1.5, 7.3). Defaulted so that a table written before they existed still loads.
    # The start of the pre-work cover is UNCONFIRMED (registration or payment): configured, not coded.
    pre_departure_cover_start: PreDepartureCoverStart = "PAYMENT_DATE"
    perseorangan_pre_departure_jkm_months: Months = 1
    after_work_jkk_days: Days = 30
    after_work_jkm_days: Days = 30

    @model_validator(mode="after")
    def _check(self) -> Tariff:
        if not self.packages:
            raise ValueError("a tariff needs at least one package")
        months = [p.months for p in self.packages]
        if months != sorted(set(months)):
            raise ValueError("packages must be listed by strictly increasing months")
        if self.jht_monthly_min_idr > self.jht_monthly_max_idr:
            raise ValueError("jht_monthly_min_idr exceeds jht_monthly_max_idr")
        return self


class TariffTable(BaseModel):
    """All tariff entries, by increasing ``effective_from``. Unknown top-level keys (``doc``) are ignored."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    tariffs: tuple[Tariff, ...]

    @model_validator(mode="after")
    def _check(self) -> TariffTable:
        starts = [t.effective_from for t in self.tariffs]
        if not starts:
            raise ValueError("the tariff table is empty")
        if starts != sorted(set(starts)):
            raise ValueError("tariffs must be listed by strictly increasing effective_from")
        return self

    def tariff_on(self, day: date) -> Tariff:
        """The entry in force on ``day`` (the latest one with ``effective_from <= day``)."""
        current: Tariff | None = None
        for entry in self.tariffs:
            if entry.effective_from <= day:
                current = entry
        if current is None:
            raise Rejected(Reason.NO_TARIFF, None, "no tariff is in force on that date")
        return current


def load_tariffs(data: Mapping[str, Any]) -> TariffTable:
    """Validate the parsed content of ``tariffs.json``. Raises ValueError on a malformed table."""
    try:
        return TariffTable.model_validate(dict(data))
    except ValidationError as exc:
        raise ValueError(f"invalid tariff table: {exc.error_count()} error(s): {exc.errors()[0]['msg']}") from exc


@dataclass(frozen=True, slots=True)
class BillLine:
    code: str  # PRE, a package code (M6/M12/M24), EXCESS
    description: str
    amount_idr: int


@dataclass(frozen=True, slots=True)
class BillBreakdown:
    tariff_version: str
    lines: tuple[BillLine, ...]

    @property
    def total_idr(self) -> int:
        return sum(line.amount_idr for line in self.lines)


def _package_and_excess(tariff: Tariff, months: int) -> tuple[Package, int]:
    packages = tariff.packages
    if tariff.between_packages_rule == "NEXT_PACKAGE_UP":
        for package in packages:
            if months <= package.months:
                return package, 0
        return packages[-1], months - packages[-1].months
    # LOWER_PACKAGE_PLUS_EXCESS
    if months <= packages[0].months:
        return packages[0], 0
    lower = [p for p in packages if p.months <= months][-1]
    return lower, months - lower.months


def bill_amount_idr(
    tariff: Tariff, participant_type: ParticipantType, contract_months: int, programs: Iterable[Program]
) -> BillBreakdown:
    """The up-front JKK+JKM bill of one enrollment, line by line (see the module docstring)."""
    if not MANDATORY_PROGRAMS.issubset(set(programs)):
        raise Rejected(Reason.PROGRAMS, "programs", "programs must include JKK and JKM")
    if participant_type not in (ParticipantType.PLACED, ParticipantType.PERSEORANGAN):
        raise Rejected(Reason.INVALID_FIELD, "participant_type", "participant_type must be PLACED or PERSEORANGAN")
    if isinstance(contract_months, bool) or not isinstance(contract_months, int) or contract_months < 1:
        raise Rejected(Reason.CONTRACT_MONTHS, "contract_months", "contract_months must be at least 1")
    lines: list[BillLine] = []
    if participant_type == ParticipantType.PLACED:
        lines.append(BillLine("PRE", "JKK+JKM before work (sebelum bekerja)", tariff.pre_placement_idr))
    package, excess = _package_and_excess(tariff, contract_months)
    lines.append(
        BillLine(package.code, f"JKK+JKM during and after work, {package.months}-month package", package.amount_idr)
    )
    if excess:
        lines.append(
            BillLine(
                "EXCESS",
                f"JKK+JKM {excess} month(s) beyond the {package.months}-month package",
                excess * tariff.excess_month_idr,
            )
        )
    return BillBreakdown(tariff_version=tariff.version, lines=tuple(lines))


def extension_bill(tariff: Tariff, months: int) -> BillBreakdown:
    """The bill of an extension of participation (perpanjangan, Art. 20): ``extension_month_idr`` per month.

    An extension is its own enrollment chained to the previous contract; its cover is
    :func:`services.domain.coverage.extension`.
    """
    if isinstance(months, bool) or not isinstance(months, int) or months < 1:
        raise Rejected(Reason.CONTRACT_MONTHS, "extension_months", "extension_months must be at least 1")
    line = BillLine(
        "EXTENSION", f"JKK+JKM extension of participation, {months} month(s)", months * tariff.extension_month_idr
    )
    return BillBreakdown(tariff_version=tariff.version, lines=(line,))


def coverage_period(
    tariff: Tariff,
    participant_type: ParticipantType,
    departure_date: date,
    contract_start: date,
    contract_months: int,
    paid_on: date,
) -> tuple[date, date]:
    """JKK/JKM *during-work* cover bought by a paid bill, as ``(start, end)`` inclusive (domain.md 1.5, 7.3).

    * start = the departure (embarkation) date, or the payment date when the worker paid after departing
      (registration facilitated abroad by a KBRI/KJRI/KDEI): cover is never backdated before payment.
    * end = contract end (``contract_start`` + ``contract_months`` months - 1 day) + the tariff's
      ``return_preparation_months``.

    Only the during-work period: every phase (pre-work, the PERSEORANGAN pre-departure JKM month, after-work,
    extensions) is in :mod:`services.domain.coverage`. If payment comes after the end, ``start > end``: no
    cover remains.
    """
    return during_work_cover(departure_date, contract_start, contract_months, paid_on, tariff.return_preparation_months)


def during_work_cover(
    departure_date: date,
    contract_start: date,
    contract_months: int,
    paid_on: date,
    return_preparation_months: int,
) -> tuple[date, date]:
    """The rule of :func:`coverage_period` with the one tariff parameter it needs passed in."""
    start = max(departure_date, paid_on)
    end = add_months(contract_end(contract_start, contract_months), return_preparation_months)
    return start, end
