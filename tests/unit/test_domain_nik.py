from __future__ import annotations

from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.domain.errors import Rejected
from services.domain.models import Sex
from services.domain.nik import PROVINCES, check_nik

MALE = "3602041211870001"  # Banten, Kab. Serang, district 04, 12 Nov 1987, serial 0001 (domain.md 2.1)
FEMALE = "3602045211870001"  # same, day + 40


def test_valid_male() -> None:
    info = check_nik(MALE, declared_dob=date(1987, 11, 12), declared_sex=Sex.M)
    assert (info.province_code, info.regency_code, info.district_code) == ("36", "02", "04")
    assert info.sex == Sex.M
    assert (info.birth_day, info.birth_month, info.birth_yy) == (12, 11, 87)
    assert info.birth_date == date(1987, 11, 12)
    assert info.warnings == ()


def test_valid_female() -> None:
    info = check_nik(FEMALE, declared_dob=date(1987, 11, 12), declared_sex=Sex.F)
    assert info.sex == Sex.F and info.birth_day == 12
    assert info.warnings == ()


def test_female_day_71_is_the_31st() -> None:
    info = check_nik("3602047101900001", declared_dob=date(1990, 1, 31))
    assert info.sex == Sex.F and info.birth_date == date(1990, 1, 31)


def test_without_declared_values_no_warnings_and_no_resolved_date() -> None:
    info = check_nik(MALE)
    assert info.birth_date is None and info.warnings == ()


def test_dob_mismatch_is_a_warning() -> None:
    info = check_nik(MALE, declared_dob=date(1987, 11, 13), declared_sex=Sex.M)
    assert info.warnings == ("NIK_DOB_MISMATCH",)


def test_sex_mismatch_is_a_warning() -> None:
    info = check_nik(FEMALE, declared_dob=date(1987, 11, 12), declared_sex=Sex.M)
    assert info.warnings == ("NIK_SEX_MISMATCH",)


def test_both_mismatches() -> None:
    info = check_nik(FEMALE, declared_dob=date(1990, 1, 1), declared_sex=Sex.M)
    assert info.warnings == ("NIK_DOB_MISMATCH", "NIK_SEX_MISMATCH")


def test_century_is_resolved_against_declared_dob() -> None:
    # yy = 00, 29 Feb: a real date in 2000 (leap), not in 1900.
    nik = "3171012902000001"
    assert check_nik(nik, declared_dob=date(2000, 2, 29)).birth_date == date(2000, 2, 29)
    assert check_nik(nik, declared_dob=date(1999, 12, 31)).birth_date == date(2000, 2, 29)
    with pytest.raises(Rejected) as info:
        check_nik(nik, declared_dob=date(1900, 3, 1))  # resolves to 1900, not leap
    assert info.value.reason == "NIK_DATE"
    assert check_nik(nik).birth_date is None  # 2000 works without a declared date


def test_29_feb_in_a_common_year_is_rejected() -> None:
    with pytest.raises(Rejected) as info:
        check_nik("3171012902990001", declared_dob=date(1999, 3, 1))
    assert info.value.reason == "NIK_DATE"


@pytest.mark.parametrize(
    ("nik", "reason"),
    [
        ("1234", "NIK_FORMAT"),
        ("36020412118700011", "NIK_FORMAT"),
        ("36020412118700O1", "NIK_FORMAT"),  # letter O
        ("3602 41211870001", "NIK_FORMAT"),
        ("".join(chr(0x660 + int(d)) for d in MALE), "NIK_FORMAT"),  # Arabic-Indic digits
        ("9902041211870001", "NIK_PROVINCE"),  # no province 99
        ("2002041211870001", "NIK_PROVINCE"),
        ("1002041211870001", "NIK_PROVINCE"),
        ("3602043211870001", "NIK_DATE"),  # day 32
        ("3602047211870001", "NIK_DATE"),  # day 72
        ("3602040011870001", "NIK_DATE"),  # day 00
        ("3602044011870001", "NIK_DATE"),  # day 40
        ("3602041213870001", "NIK_DATE"),  # month 13
        ("3602041200870001", "NIK_DATE"),  # month 00
        ("3602043002870001", "NIK_DATE"),  # 30 Feb
        ("3602047002870001", "NIK_DATE"),  # 30 Feb, female
        ("3602043104870001", "NIK_DATE"),  # 31 Apr
        ("3602041211870000", "NIK_SERIAL"),
    ],
)
def test_structural_errors_are_rejected(nik: str, reason: str) -> None:
    with pytest.raises(Rejected) as info:
        check_nik(nik, declared_dob=date(1987, 11, 12), declared_sex=Sex.M)
    assert info.value.reason == reason
    assert info.value.field == "nik"
    assert nik not in str(info.value)
    if len(nik) == 16:
        assert nik[6:12] not in str(info.value)


def test_non_string_is_nik_format() -> None:
    with pytest.raises(Rejected) as info:
        check_nik(3602041211870001)  # type: ignore[arg-type]
    assert info.value.reason == "NIK_FORMAT"


def test_province_table_is_complete() -> None:
    assert len(PROVINCES) == 38
    assert {"11", "21", "31", "36", "51", "65", "76", "82", "91", "92", "93", "94", "95", "96"} <= set(PROVINCES)
    assert all(11 <= int(code) <= 96 for code in PROVINCES)


@given(
    st.sampled_from(sorted(PROVINCES)),
    st.dates(min_value=date(1940, 1, 1), max_value=date(2010, 12, 31)),
    st.sampled_from([Sex.M, Sex.F]),
    st.integers(min_value=1, max_value=9999),
)
def test_generated_niks_round_trip(province: str, dob: date, sex: Sex, serial: int) -> None:
    day = dob.day + (40 if sex == Sex.F else 0)
    nik = f"{province}0101{day:02d}{dob.month:02d}{dob.year % 100:02d}{serial:04d}"
    info = check_nik(nik, declared_dob=dob, declared_sex=sex)
    assert info.birth_date == dob and info.sex == sex and info.warnings == ()
