"""NIK (Nomor Induk Kependudukan) structure checks, domain.md 2.1 and 7.3.

Layout (16 digits): PP KK CC DD MM YY SSSS = province, regency/city, district (of first issue),
day of birth (+40 for women, so 41-71), month, 2-digit year, serial (0001..).

Structural errors raise :class:`Rejected` (NIK_FORMAT, NIK_PROVINCE, NIK_DATE, NIK_SERIAL). A NIK whose
embedded date or sex differs from the declared one is *accepted* with a warning (NIK_DOB_MISMATCH,
NIK_SEX_MISMATCH): Dukcapil does not re-issue a NIK to fix its embedded date. No check digit exists.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from types import MappingProxyType

from services.domain.errors import Reason, Rejected, Warn
from services.domain.models import Sex

# Kemendagri (Dukcapil) province codes, the numbering used in NIKs: 38 provinces incl. the Papua
# provinces created in 2022 (93-96). Note: BPS statistics use a different numbering for Papua.
PROVINCES: MappingProxyType[str, str] = MappingProxyType(
    {
        "11": "Aceh",
        "12": "Sumatera Utara",
        "13": "Sumatera Barat",
        "14": "Riau",
        "15": "Jambi",
        "16": "Sumatera Selatan",
        "17": "Bengkulu",
        "18": "Lampung",
        "19": "Kepulauan Bangka Belitung",
        "21": "Kepulauan Riau",
        "31": "DKI Jakarta",
        "32": "Jawa Barat",
        "33": "Jawa Tengah",
        "34": "DI Yogyakarta",
        "35": "Jawa Timur",
        "36": "Banten",
        "51": "Bali",
        "52": "Nusa Tenggara Barat",
        "53": "Nusa Tenggara Timur",
        "61": "Kalimantan Barat",
        "62": "Kalimantan Tengah",
        "63": "Kalimantan Selatan",
        "64": "Kalimantan Timur",
        "65": "Kalimantan Utara",
        "71": "Sulawesi Utara",
        "72": "Sulawesi Tengah",
        "73": "Sulawesi Selatan",
        "74": "Sulawesi Tenggara",
        "75": "Gorontalo",
        "76": "Sulawesi Barat",
        "81": "Maluku",
        "82": "Maluku Utara",
        "91": "Papua",
        "92": "Papua Barat",
        "93": "Papua Selatan",
        "94": "Papua Tengah",
        "95": "Papua Pegunungan",
        "96": "Papua Barat Daya",
    }
)

_NIK = re.compile(r"[0-9]{16}")
FEMALE_DAY_OFFSET = 40


@dataclass(frozen=True, slots=True)
class NikInfo:
    """What a NIK says about its holder. Personal data: never log it."""

    province_code: str
    regency_code: str
    district_code: str
    sex: Sex
    birth_day: int
    birth_month: int
    birth_yy: int
    birth_date: date | None  # resolved against the declared date of birth; None when none was declared
    warnings: tuple[str, ...]


def _real_date(year: int, month: int, day: int) -> date | None:
    try:
        return date(year, month, day)
    except ValueError:
        return None


def check_nik(nik: str, *, declared_dob: date | None = None, declared_sex: Sex | None = None) -> NikInfo:
    """Validate the structure of ``nik`` and compare it with the declared date of birth and sex.

    The 2-digit year is placed in the century that brings it closest to the declared year of birth (ties go
    to the earlier year: the holder is an adult). Without a declared date, the day and month must be a real
    date in 19yy or 20yy.
    """
    if not isinstance(nik, str) or _NIK.fullmatch(nik) is None:
        raise Rejected(Reason.NIK_FORMAT, "nik", "NIK must be exactly 16 digits")
    province, regency, district = nik[0:2], nik[2:4], nik[4:6]
    if province not in PROVINCES:
        raise Rejected(Reason.NIK_PROVINCE, "nik", "NIK province code is not a known province")
    dd, mm, yy = int(nik[6:8]), int(nik[8:10]), int(nik[10:12])
    if 1 <= dd <= 31:
        sex, day = Sex.M, dd
    elif 1 + FEMALE_DAY_OFFSET <= dd <= 31 + FEMALE_DAY_OFFSET:
        sex, day = Sex.F, dd - FEMALE_DAY_OFFSET
    else:
        raise Rejected(Reason.NIK_DATE, "nik", "NIK day of birth must be 01-31 (men) or 41-71 (women)")
    if not 1 <= mm <= 12:
        raise Rejected(Reason.NIK_DATE, "nik", "NIK month of birth must be 01-12")

    birth_date: date | None = None
    if declared_dob is not None:
        base = declared_dob.year // 100 * 100
        year = min((base - 100 + yy, base + yy, base + 100 + yy), key=lambda y: (abs(y - declared_dob.year), y))
        birth_date = _real_date(year, mm, day)
        if birth_date is None:
            raise Rejected(Reason.NIK_DATE, "nik", "NIK date of birth is not a real calendar date")
    elif _real_date(1900 + yy, mm, day) is None and _real_date(2000 + yy, mm, day) is None:
        raise Rejected(Reason.NIK_DATE, "nik", "NIK date of birth is not a real calendar date")
    if nik[12:16] == "0000":
        raise Rejected(Reason.NIK_SERIAL, "nik", "NIK serial must not be 0000")

    warnings: list[str] = []
    if declared_dob is not None and birth_date != declared_dob:
        warnings.append(Warn.NIK_DOB_MISMATCH.value)
    if declared_sex in (Sex.M, Sex.F) and declared_sex != sex:
        warnings.append(Warn.NIK_SEX_MISMATCH.value)
    return NikInfo(
        province_code=province,
        regency_code=regency,
        district_code=district,
        sex=sex,
        birth_day=day,
        birth_month=mm,
        birth_yy=yy,
        birth_date=birth_date,
        warnings=tuple(warnings),
    )
