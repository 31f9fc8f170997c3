from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from services.domain.errors import Rejected
from services.domain.models import ParticipantType, Program
from services.domain.tariff import Tariff, TariffTable, bill_amount_idr, coverage_period, load_tariffs

TARIFF_FILE = Path(__file__).resolve().parents[2] / "schemas" / "reference" / "tariffs.json"
BASE = [Program.JKK, Program.JKM]
PLACED, PERSEORANGAN = ParticipantType.PLACED, ParticipantType.PERSEORANGAN


def _file() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(TARIFF_FILE.read_text(encoding="utf-8"))
    return data


@pytest.fixture
def table() -> TariffTable:
    return load_tariffs(_file())


@pytest.fixture
def next_up(table: TariffTable) -> Tariff:
    tariff = table.tariff_on(date(2025, 1, 1))
    assert tariff.between_packages_rule == "NEXT_PACKAGE_UP"
    return tariff


@pytest.fixture
def lower(next_up: Tariff) -> Tariff:
    return next_up.model_copy(update={"between_packages_rule": "LOWER_PACKAGE_PLUS_EXCESS"})


def test_reference_file_loads(table: TariffTable) -> None:
    tariff = table.tariffs[0]
    assert tariff.version == "permenaker-4-2023"
    assert tariff.pre_placement_idr == 37_500
    assert [(p.code, p.months, p.amount_idr) for p in tariff.packages] == [
        ("M6", 6, 108_000),
        ("M12", 12, 189_000),
        ("M24", 24, 332_500),
    ]
    assert (tariff.jht_monthly_min_idr, tariff.jht_monthly_max_idr) == (50_000, 600_000)


# Hand-computed (domain.md 1.3 / 7.3): packages 108,000 / 189,000 / 332,500; excess 13,500 per month.
@pytest.mark.parametrize(
    ("months", "expected"),
    [
        (3, 108_000),
        (6, 108_000),
        (7, 189_000),
        (12, 189_000),
        (18, 332_500),
        (24, 332_500),
        (25, 346_000),
        (36, 494_500),  # 332,500 + 12 * 13,500: BP2MI Korea notice
    ],
)
def test_next_package_up(next_up: Tariff, months: int, expected: int) -> None:
    assert bill_amount_idr(next_up, PERSEORANGAN, months, BASE).total_idr == expected


@pytest.mark.parametrize(
    ("months", "expected"),
    [
        (3, 108_000),  # below the smallest package: the smallest package
        (6, 108_000),
        (7, 121_500),  # M6 + 1 * 13,500
        (12, 189_000),
        (18, 270_000),  # M12 + 6 * 13,500
        (24, 332_500),
        (36, 494_500),
    ],
)
def test_lower_package_plus_excess(lower: Tariff, months: int, expected: int) -> None:
    assert bill_amount_idr(lower, PERSEORANGAN, months, BASE).total_idr == expected


def test_pre_placement_only_for_placed(next_up: Tariff) -> None:
    placed = bill_amount_idr(next_up, PLACED, 24, BASE)
    assert placed.total_idr == 370_000  # the "typical" Rp370,000
    assert [(line.code, line.amount_idr) for line in placed.lines] == [("PRE", 37_500), ("M24", 332_500)]
    individual = bill_amount_idr(next_up, PERSEORANGAN, 24, BASE)
    assert [line.code for line in individual.lines] == ["M24"]


def test_lines_of_a_36_month_placed_contract(next_up: Tariff) -> None:
    bill = bill_amount_idr(next_up, PLACED, 36, BASE)
    assert [(line.code, line.amount_idr) for line in bill.lines] == [
        ("PRE", 37_500),
        ("M24", 332_500),
        ("EXCESS", 162_000),
    ]
    assert bill.total_idr == 532_000
    assert bill.tariff_version == "permenaker-4-2023"


def test_jht_is_not_billed(next_up: Tariff) -> None:
    with_jht = bill_amount_idr(next_up, PLACED, 24, [*BASE, Program.JHT])
    assert with_jht == bill_amount_idr(next_up, PLACED, 24, BASE)


@pytest.mark.parametrize(
    ("ptype", "months", "programs", "reason"),
    [
        (PLACED, 24, [Program.JKK], "PROGRAMS"),
        (PLACED, 24, [Program.JKM, Program.JHT], "PROGRAMS"),
        (PLACED, 0, BASE, "CONTRACT_MONTHS"),
        (ParticipantType.UNKNOWN, 24, BASE, "INVALID_FIELD"),
    ],
)
def test_bill_rejections(
    next_up: Tariff, ptype: ParticipantType, months: int, programs: list[Program], reason: str
) -> None:
    with pytest.raises(Rejected) as info:
        bill_amount_idr(next_up, ptype, months, programs)
    assert info.value.reason == reason


def test_tariff_on_picks_the_entry_in_force() -> None:
    data = _file()
    newer = dict(data["tariffs"][0], version="next", effective_from="2026-07-01", excess_month_idr=15_000)
    table = load_tariffs({"tariffs": [data["tariffs"][0], newer]})
    assert table.tariff_on(date(2026, 6, 30)).version == "permenaker-4-2023"
    assert table.tariff_on(date(2026, 7, 1)).version == "next"
    with pytest.raises(Rejected) as info:
        table.tariff_on(date(2023, 2, 21))
    assert info.value.reason == "NO_TARIFF"


@pytest.mark.parametrize(
    "mutate",
    [
        lambda t: t.update(packages=[]),
        lambda t: t.update(packages=list(reversed(t["packages"]))),
        lambda t: t.update(between_packages_rule="ROUND_UP"),
        lambda t: t.update(pre_placement_idr="37500"),
        lambda t: t.update(excess_month_idr=13_500.5),
        lambda t: t.update(jht_monthly_min_idr=700_000),
        lambda t: t.update(surprise=1),
    ],
)
def test_malformed_tables_fail_loudly(mutate: Any) -> None:
    data = _file()
    entry = dict(data["tariffs"][0])
    mutate(entry)
    with pytest.raises(ValueError):
        load_tariffs({"tariffs": [entry]})


def test_tariffs_must_be_in_date_order() -> None:
    entry = _file()["tariffs"][0]
    with pytest.raises(ValueError):
        load_tariffs({"tariffs": [entry, entry]})
    with pytest.raises(ValueError):
        load_tariffs({"tariffs": []})


def test_coverage_paid_before_departure(next_up: Tariff) -> None:
    # contract 1 Sep 2025 + 24 months ends 31 Aug 2027; + 1 month return preparation -> 30 Sep 2027
    assert coverage_period(next_up, PLACED, date(2025, 9, 1), date(2025, 9, 1), 24, date(2025, 8, 20)) == (
        date(2025, 9, 1),
        date(2027, 9, 30),
    )


def test_coverage_paid_after_departure_is_not_backdated(next_up: Tariff) -> None:
    start, end = coverage_period(next_up, PERSEORANGAN, date(2025, 3, 10), date(2025, 3, 15), 12, date(2025, 4, 2))
    assert (start, end) == (date(2025, 4, 2), date(2026, 4, 14))  # 14 Mar 2026 + 1 month


def test_coverage_month_end_clamping(next_up: Tariff) -> None:
    # 31 Jan + 1 month has no 31 Feb: the contract ends 28 Feb; + 1 month -> 28 Mar
    assert coverage_period(next_up, PLACED, date(2025, 1, 31), date(2025, 1, 31), 1, date(2025, 1, 1)) == (
        date(2025, 1, 31),
        date(2025, 3, 28),
    )
    # 28 Jan + 1 month -> 27 Feb; + 1 month -> 27 Mar
    assert coverage_period(next_up, PLACED, date(2025, 1, 28), date(2025, 1, 28), 1, date(2025, 1, 1))[1] == date(
        2025, 3, 27
    )
