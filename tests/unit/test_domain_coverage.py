"""Coverage periods per phase (services.domain.coverage), with hand-computed dates (domain.md 1.5, 7.3)."""

from __future__ import annotations

import json
from datetime import date, timedelta
from itertools import pairwise
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.domain.coverage import (
    CoverPeriod,
    CoverRules,
    Phase,
    extension,
    periods,
    pre_departure_lapse_on,
    setelah,
)
from services.domain.dates import add_months
from services.domain.errors import Rejected
from services.domain.models import ParticipantType, Program
from services.domain.tariff import extension_bill, load_tariffs

TABLE = load_tariffs(json.loads((Path(__file__).resolve().parents[2] / "schemas/reference/tariffs.json").read_text()))
TARIFF = TABLE.tariff_on(date(2025, 8, 1))
RULES = CoverRules.of(TARIFF)
PLACED, PERSEORANGAN = ParticipantType.PLACED, ParticipantType.PERSEORANGAN
JKK, JKM = Program.JKK, Program.JKM


def P(phase: Phase, programs: tuple[Program, ...], start: date, end: date) -> CoverPeriod:
    return CoverPeriod(phase=phase, programs=programs, start=start, end=end)


def placed(paid_on: date, embarkation: date, *, registered_on: date | None = None, rules: CoverRules = RULES):
    return periods(
        rules,
        PLACED,
        registered_on=registered_on or paid_on,
        paid_on=paid_on,
        embarkation=embarkation,
        contract_start=embarkation,
        contract_months=24,
    )


def test_rules_come_from_the_reference_tariff() -> None:
    assert RULES == CoverRules(
        pre_departure_cover_months=5,
        pre_departure_cover_start="PAYMENT_DATE",
        perseorangan_pre_departure_jkm_months=1,
        return_preparation_months=1,
        after_work_jkk_days=30,
        after_work_jkm_days=30,
    )


def test_typical_placed_worker_has_three_phases_without_gap_or_overlap() -> None:
    # paid 15 Aug 2025, embarks 1 Sep 2025 on a 24-month contract starting that day
    assert placed(date(2025, 8, 15), date(2025, 9, 1)) == [
        P(Phase.SEBELUM, (JKK, JKM), date(2025, 8, 15), date(2025, 8, 31)),  # until the eve of embarkation
        P(Phase.SELAMA, (JKK, JKM), date(2025, 9, 1), date(2027, 9, 30)),  # 31 Aug 2027 + 1 month preparation
        P(Phase.SETELAH, (JKK, JKM), date(2027, 10, 1), date(2027, 10, 30)),  # 30 days after debarkation
    ]
    assert (
        pre_departure_lapse_on(
            RULES, PLACED, registered_on=date(2025, 8, 15), paid_on=date(2025, 8, 15), embarkation=date(2025, 9, 1)
        )
        is None
    )


@pytest.mark.parametrize(
    ("embarkation", "sebelum_end", "lapse_on"),
    [
        # paid 10 Jan 2025: five months are 10 Jan - 9 Jun (counted like a contract)
        (date(2025, 6, 9), date(2025, 6, 8), None),
        (date(2025, 6, 10), date(2025, 6, 9), None),  # embarks the day after the last covered day: no gap
        (date(2025, 6, 11), date(2025, 6, 9), date(2025, 6, 10)),  # one uncovered day: re-register
        (date(2025, 8, 1), date(2025, 6, 9), date(2025, 6, 10)),
    ],
)
def test_pre_work_cover_is_capped_at_five_months(embarkation: date, sebelum_end: date, lapse_on: date | None) -> None:
    [before, *_] = placed(date(2025, 1, 10), embarkation)
    assert before == P(Phase.SEBELUM, (JKK, JKM), date(2025, 1, 10), sebelum_end)
    assert (
        pre_departure_lapse_on(
            RULES, PLACED, registered_on=date(2025, 1, 10), paid_on=date(2025, 1, 10), embarkation=embarkation
        )
        == lapse_on
    )


def test_five_months_from_a_month_end_clamp() -> None:
    # 31 Jan + 5 months has no 31 Jun: the cover ends 30 Jun
    [before, *_] = placed(date(2025, 1, 31), date(2025, 12, 1))
    assert before.end == date(2025, 6, 30)


def test_pre_work_cover_start_is_configurable() -> None:
    registered, paid = date(2025, 1, 2), date(2025, 1, 20)
    by_payment = placed(paid, date(2025, 3, 1), registered_on=registered)
    assert by_payment[0].start == paid
    by_registration = RULES.model_copy(update={"pre_departure_cover_start": "REGISTRATION_DATE"})
    assert placed(paid, date(2025, 3, 1), registered_on=registered, rules=by_registration)[0] == P(
        Phase.SEBELUM, (JKK, JKM), registered, date(2025, 2, 28)
    )
    # the lapse follows the same basis: registered 2 Jan -> covered to 1 Jun, embarking 3 Jun leaves 2 Jun open
    assert pre_departure_lapse_on(
        by_registration, PLACED, registered_on=registered, paid_on=paid, embarkation=date(2025, 6, 3)
    ) == date(2025, 6, 2)
    assert (
        pre_departure_lapse_on(RULES, PLACED, registered_on=registered, paid_on=paid, embarkation=date(2025, 6, 3))
        is None
    )


def test_paid_after_embarkation_has_no_pre_work_cover_and_is_not_backdated() -> None:
    # registered abroad: embarked 10 Mar 2025, contract 15 Mar 2025 + 12 months, paid 2 Apr 2025
    got = periods(
        RULES,
        PLACED,
        registered_on=date(2025, 4, 2),
        paid_on=date(2025, 4, 2),
        embarkation=date(2025, 3, 10),
        contract_start=date(2025, 3, 15),
        contract_months=12,
    )
    assert got == [
        P(Phase.SELAMA, (JKK, JKM), date(2025, 4, 2), date(2026, 4, 14)),  # 14 Mar 2026 + 1 month
        P(Phase.SETELAH, (JKK, JKM), date(2026, 4, 15), date(2026, 5, 14)),
    ]


def test_paid_after_the_cover_ended_buys_nothing() -> None:
    got = periods(
        RULES,
        PLACED,
        registered_on=date(2027, 1, 1),
        paid_on=date(2027, 1, 1),
        embarkation=date(2025, 1, 1),
        contract_start=date(2025, 1, 1),
        contract_months=6,
    )
    assert got == []


@pytest.mark.parametrize(
    ("paid_on", "expected_end"),
    [
        (date(2025, 8, 15), date(2025, 8, 31)),  # until the eve of embarkation
        (date(2025, 7, 1), date(2025, 7, 31)),  # at most one month: 1 Aug - 31 Aug is the worker's own risk
    ],
)
def test_perseorangan_gets_pre_departure_jkm_only(paid_on: date, expected_end: date) -> None:
    got = periods(
        RULES,
        PERSEORANGAN,
        registered_on=paid_on,
        paid_on=paid_on,
        embarkation=date(2025, 9, 1),
        contract_start=date(2025, 9, 1),
        contract_months=12,
    )
    assert got[0] == P(Phase.PERSEORANGAN_PRE_DEPARTURE, (JKM,), paid_on, expected_end)
    assert [p.phase for p in got] == [Phase.PERSEORANGAN_PRE_DEPARTURE, Phase.SELAMA, Phase.SETELAH]
    assert got[1] == P(Phase.SELAMA, (JKK, JKM), date(2025, 9, 1), date(2026, 9, 30))
    # a PERSEORANGAN worker carries the risk after that month: never LAPSED_REREGISTER
    assert (
        pre_departure_lapse_on(
            RULES, PERSEORANGAN, registered_on=paid_on, paid_on=paid_on, embarkation=date(2026, 9, 1)
        )
        is None
    )


def test_after_work_jkk_and_jkm_can_differ() -> None:
    rules = RULES.model_copy(update={"after_work_jkk_days": 10})
    assert setelah(rules, date(2027, 9, 30)) == [
        P(Phase.SETELAH, (JKK,), date(2027, 10, 1), date(2027, 10, 10)),
        P(Phase.SETELAH, (JKM,), date(2027, 10, 1), date(2027, 10, 30)),
    ]
    assert (
        setelah(RULES.model_copy(update={"after_work_jkk_days": 0, "after_work_jkm_days": 0}), date(2027, 9, 30)) == []
    )


def test_extensions_chain_and_move_the_after_work_cover() -> None:
    base = placed(date(2025, 8, 15), date(2025, 9, 1))
    once = extension(RULES, base, 6)
    assert once == [
        *base[:2],
        P(Phase.PERPANJANGAN, (JKK, JKM), date(2027, 10, 1), date(2028, 3, 31)),
        P(Phase.SETELAH, (JKK, JKM), date(2028, 4, 1), date(2028, 4, 30)),
    ]
    twice = extension(RULES, once, 12)
    assert twice[2:] == [
        P(Phase.PERPANJANGAN, (JKK, JKM), date(2027, 10, 1), date(2028, 3, 31)),
        P(Phase.PERPANJANGAN, (JKK, JKM), date(2028, 4, 1), date(2029, 3, 31)),
        P(Phase.SETELAH, (JKK, JKM), date(2029, 4, 1), date(2029, 4, 30)),
    ]
    with pytest.raises(ValueError):
        extension(RULES, base, 0)
    with pytest.raises(ValueError):
        extension(RULES, base[:1], 6)  # only pre-work cover: nothing to extend


@pytest.mark.parametrize(("months", "amount"), [(1, 13_500), (6, 81_000), (12, 162_000)])
def test_extension_bill_is_13500_a_month(months: int, amount: int) -> None:
    bill = extension_bill(TARIFF, months)
    assert [(line.code, line.amount_idr) for line in bill.lines] == [("EXTENSION", amount)]
    assert bill.total_idr == amount and bill.tariff_version == "permenaker-4-2023"


def test_extension_bill_needs_a_month() -> None:
    with pytest.raises(Rejected) as info:
        extension_bill(TARIFF, 0)
    assert info.value.reason == "CONTRACT_MONTHS"


def test_period_records_carry_plain_codes() -> None:
    record = P(Phase.SEBELUM, (JKK, JKM), date(2025, 8, 15), date(2025, 8, 31)).to_record()
    assert (record.phase, record.programs, record.start, record.end) == (
        "SEBELUM",
        ["JKK", "JKM"],
        date(2025, 8, 15),
        date(2025, 8, 31),
    )


DAYS = st.dates(min_value=date(2024, 1, 1), max_value=date(2030, 12, 31))


@settings(max_examples=300, deadline=None)
@given(
    ptype=st.sampled_from([PLACED, PERSEORANGAN]),
    registered_on=DAYS,
    pay_delay=st.integers(min_value=0, max_value=60),
    to_embarkation=st.integers(min_value=-90, max_value=400),
    contract_offset=st.integers(min_value=0, max_value=30),
    months=st.integers(min_value=1, max_value=60),
    by_registration=st.booleans(),
)
def test_property_periods_tile_the_calendar(
    ptype: ParticipantType,
    registered_on: date,
    pay_delay: int,
    to_embarkation: int,
    contract_offset: int,
    months: int,
    by_registration: bool,
) -> None:
    rules = RULES.model_copy(
        update={"pre_departure_cover_start": "REGISTRATION_DATE" if by_registration else "PAYMENT_DATE"}
    )
    paid_on = registered_on + timedelta(days=pay_delay)
    embarkation = paid_on + timedelta(days=to_embarkation)
    got = periods(
        rules,
        ptype,
        registered_on=registered_on,
        paid_on=paid_on,
        embarkation=embarkation,
        contract_start=embarkation + timedelta(days=contract_offset),
        contract_months=months,
    )
    for p in got:
        assert p.start <= p.end
    for a, b in pairwise(got):
        assert a.end < b.start  # no day in two phases
    before = [p for p in got if p.phase in (Phase.SEBELUM, Phase.PERSEORANGAN_PRE_DEPARTURE)]
    for p in before:
        assert p.end < embarkation  # pre-departure cover never reaches embarkation day
        limit = rules.pre_departure_cover_months if p.phase == Phase.SEBELUM else 1
        assert p.end <= add_months(p.start, limit)  # and never exceeds its months
    during = [p for p in got if p.phase == Phase.SELAMA]
    if during:
        assert during[0].start == max(embarkation, paid_on)  # never backdated before payment
    lapse = pre_departure_lapse_on(rules, ptype, registered_on=registered_on, paid_on=paid_on, embarkation=embarkation)
    if lapse is not None:
        # a PLACED worker with an uncovered day between the pre-work cover and embarkation
        assert ptype == PLACED and before and before[0].end + timedelta(days=1) == lapse < embarkation
    elif ptype == PLACED and before:
        assert before[0].end + timedelta(days=1) == embarkation
