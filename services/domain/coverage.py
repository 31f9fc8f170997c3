"""Protection periods of a paid bill, per phase (domain.md 1.5 and 7.3 "Coverage dates").

Every period is ``(phase, programmes, start, end)`` with both dates inclusive WIB business dates. The
periods of one membership tile the calendar: a phase ends the day before the next one starts, so no day is
counted in two phases, and a gap between two periods is a day without cover.

=========================== =========== ==================================================================
phase                       programmes  period
=========================== =========== ==================================================================
SEBELUM (PLACED only)       JKK, JKM    from the basis date (the payment date, or the registration date:
                                        ``pre_departure_cover_start``, UNCONFIRMED) until the day before
                                        embarkation, at most ``pre_departure_cover_months`` months
PERSEORANGAN_PRE_DEPARTURE  JKM         from payment until the day before embarkation, at most
                                        ``perseorangan_pre_departure_jkm_months`` month(s)
SELAMA                      JKK, JKM    from embarkation (or the payment date when paid abroad: never
                                        backdated) to contract end + ``return_preparation_months``; its last
                                        day is the latest debarkation
SETELAH                     JKK / JKM   from the day after debarkation, ``after_work_jkk_days`` (JKK, a cap:
                                        arrival home is not known here) and ``after_work_jkm_days`` (JKM)
PERPANJANGAN                JKK, JKM    an extension: the months after the previous during-work period,
                                        chained; the after-work period moves behind it
=========================== =========== ==================================================================

Lapse: a PLACED worker who has not embarked when the pre-work cover ends (embarkation later than the day
after its last day) must re-register and pay the pre-work instalment again (:func:`pre_departure_lapse_on`).
A PERSEORANGAN worker who has not left after the JKM month carries the risk: no lapse, no new bill.

The embarkation date is the enrollment's departure date: the hub receives no departure confirmation yet.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import date, timedelta
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from services.domain.dates import add_months, contract_end
from services.domain.models import CoveragePeriod, ParticipantType, Program
from services.domain.tariff import PreDepartureCoverStart, Tariff

ONE_DAY = timedelta(days=1)
JKK_JKM = (Program.JKK, Program.JKM)


class Phase(StrEnum):
    SEBELUM = "SEBELUM"
    PERSEORANGAN_PRE_DEPARTURE = "PERSEORANGAN_PRE_DEPARTURE"
    SELAMA = "SELAMA"
    SETELAH = "SETELAH"
    PERPANJANGAN = "PERPANJANGAN"


class CoverRules(BaseModel):
    """The tariff parameters coverage needs, copied onto a bill when it is issued: the cover a bill buys
    follows the tariff of its issue date even if the table changes before it is paid."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    pre_departure_cover_months: int = Field(5, ge=0)
    pre_departure_cover_start: PreDepartureCoverStart = "PAYMENT_DATE"
    perseorangan_pre_departure_jkm_months: int = Field(1, ge=0)
    return_preparation_months: int = Field(1, ge=0)
    after_work_jkk_days: int = Field(30, ge=0)
    after_work_jkm_days: int = Field(30, ge=0)

    @classmethod
    def of(cls, tariff: Tariff) -> CoverRules:
        return cls(
            pre_departure_cover_months=tariff.pre_departure_cover_months,
            pre_departure_cover_start=tariff.pre_departure_cover_start,
            perseorangan_pre_departure_jkm_months=tariff.perseorangan_pre_departure_jkm_months,
            return_preparation_months=tariff.return_preparation_months,
            after_work_jkk_days=tariff.after_work_jkk_days,
            after_work_jkm_days=tariff.after_work_jkm_days,
        )


class CoverPeriod(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    phase: Phase
    programs: tuple[Program, ...]  # in Program declaration order, so equal sets compare and serialise equal
    start: date
    end: date

    def to_record(self) -> CoveragePeriod:
        return CoveragePeriod(
            phase=self.phase.value, programs=[p.value for p in self.programs], start=self.start, end=self.end
        )


def _period(phase: Phase, programs: Iterable[Program], start: date, end: date) -> CoverPeriod | None:
    if end < start:
        return None
    wanted = set(programs)
    return CoverPeriod(phase=phase, programs=tuple(p for p in Program if p in wanted), start=start, end=end)


def _capped_end(start: date, months: int, embarkation: date) -> date:
    # ``months`` months counted like a contract (1 Jan + 5 -> 31 May), cut at the eve of embarkation.
    return min(embarkation - ONE_DAY, contract_end(start, months))


def pre_departure_basis(rules: CoverRules, registered_on: date, paid_on: date) -> date:
    """The first day of the pre-work cover: payment or registration date, as configured (UNCONFIRMED)."""
    return registered_on if rules.pre_departure_cover_start == "REGISTRATION_DATE" else paid_on


def sebelum(rules: CoverRules, basis: date, embarkation: date) -> CoverPeriod | None:
    """PLACED pre-work cover, JKK+JKM: ``basis`` until the eve of embarkation, at most the configured months.
    None when the worker embarked on or before ``basis`` (registration facilitated abroad)."""
    if rules.pre_departure_cover_months == 0:
        return None
    return _period(Phase.SEBELUM, JKK_JKM, basis, _capped_end(basis, rules.pre_departure_cover_months, embarkation))


def perseorangan_pre_departure(rules: CoverRules, paid_on: date, embarkation: date) -> CoverPeriod | None:
    """PERSEORANGAN JKM from payment until the eve of embarkation, at most the configured month(s)."""
    months = rules.perseorangan_pre_departure_jkm_months
    if months == 0:
        return None
    return _period(Phase.PERSEORANGAN_PRE_DEPARTURE, (Program.JKM,), paid_on, _capped_end(paid_on, months, embarkation))


def selama(
    rules: CoverRules, embarkation: date, contract_start: date, contract_months: int, paid_on: date
) -> CoverPeriod | None:
    """During-work cover, JKK+JKM: embarkation (never before payment) to contract end + return preparation.
    None when paid after that end."""
    start = max(embarkation, paid_on)
    end = add_months(contract_end(contract_start, contract_months), rules.return_preparation_months)
    return _period(Phase.SELAMA, JKK_JKM, start, end)


def setelah(rules: CoverRules, debarkation: date) -> list[CoverPeriod]:
    """After-work cover from the day after ``debarkation`` (the last during-work day): JKK and JKM for their
    own number of days; one period per distinct end date, so equal durations give one JKK+JKM period."""
    start = debarkation + ONE_DAY
    ends: dict[date, list[Program]] = {}
    for program, days in ((Program.JKK, rules.after_work_jkk_days), (Program.JKM, rules.after_work_jkm_days)):
        if days > 0:
            ends.setdefault(start + timedelta(days=days - 1), []).append(program)
    periods = [_period(Phase.SETELAH, programs, start, end) for end, programs in sorted(ends.items())]
    return [p for p in periods if p is not None]


def periods(
    rules: CoverRules,
    participant_type: ParticipantType,
    *,
    registered_on: date,
    paid_on: date,
    embarkation: date,
    contract_start: date,
    contract_months: int,
) -> list[CoverPeriod]:
    """Every period a fully paid enrollment bill buys, in date order (see the module docstring)."""
    out: list[CoverPeriod] = []
    if participant_type == ParticipantType.PLACED:
        before = sebelum(rules, pre_departure_basis(rules, registered_on, paid_on), embarkation)
    else:
        before = perseorangan_pre_departure(rules, paid_on, embarkation)
    if before is not None:
        out.append(before)
    during = selama(rules, embarkation, contract_start, contract_months, paid_on)
    if during is not None:
        out.append(during)
        out.extend(setelah(rules, during.end))
    return out


def pre_departure_lapse_on(
    rules: CoverRules,
    participant_type: ParticipantType,
    *,
    registered_on: date,
    paid_on: date,
    embarkation: date,
) -> date | None:
    """The first uncovered day of a PLACED worker who has not embarked by the end of the pre-work cover
    (status LAPSED_REREGISTER from that day, a new pre-work bill is due), or None when no lapse is due."""
    if participant_type != ParticipantType.PLACED:
        return None
    before = sebelum(rules, pre_departure_basis(rules, registered_on, paid_on), embarkation)
    if before is None or before.end + ONE_DAY >= embarkation:
        return None
    return before.end + ONE_DAY


def extension(rules: CoverRules, current: Sequence[CoverPeriod], months: int) -> list[CoverPeriod]:
    """``current`` extended by ``months`` months of participation (chained: several extensions stack).

    The extension starts the day after the last during-work or extension period and runs ``months`` months;
    the after-work period is recomputed behind it. Raises ValueError when there is nothing to extend.
    """
    if months < 1:
        raise ValueError("an extension needs at least one month")
    working = [p for p in current if p.phase in (Phase.SELAMA, Phase.PERPANJANGAN)]
    if not working:
        raise ValueError("only a membership with during-work cover can be extended")
    last = max(p.end for p in working)
    start = last + ONE_DAY
    added = CoverPeriod(phase=Phase.PERPANJANGAN, programs=JKK_JKM, start=start, end=contract_end(start, months))
    kept = [p for p in current if p.phase != Phase.SETELAH]
    return [*kept, added, *setelah(rules, added.end)]
