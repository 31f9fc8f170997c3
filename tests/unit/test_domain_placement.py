"""Owning office of a placement (services.domain.placement) against the real offices.json, and the
namespacing of enrollment event ids by submitter (services.domain.enrollment.enrollment_event_id)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest

from services.domain.enrollment import enrollment_event_id, normalize_enrollment
from services.domain.errors import Rejected
from services.domain.identity import event_uuid
from services.domain.placement import (
    NO_OFFICE_FOR_PLACEMENT,
    PLACEMENT_REGION_AMBIGUOUS,
    PLACEMENT_REGION_UNKNOWN,
    Placement,
    check_offices,
    fold,
    owning_office,
    place,
    placement_region,
)
from services.domain.tariff import load_tariffs
from services.reference import Office, load_offices

ROOT = Path(__file__).resolve().parents[2]
OFFICES = list(load_offices(ROOT / "schemas/reference/offices.json").values())


@pytest.mark.parametrize(
    ("country", "region", "office"),
    [
        ("MY", "Johor", "KJRI_JOHOR_BAHRU"),
        ("MY", "Melaka", "KJRI_JOHOR_BAHRU"),
        ("MY", "Negeri Sembilan", "KJRI_JOHOR_BAHRU"),
        ("MY", "Johor Bahru", "KJRI_JOHOR_BAHRU"),  # the office's city and its state name the same office
        ("MY", "Sabah", "KJRI_KOTA_KINABALU"),
        ("MY", "Kota Kinabalu", "KJRI_KOTA_KINABALU"),  # the city of the office
        ("MY", "Tawau", "KRI_TAWAU"),
        ("MY", "Tawau, Sabah", "KRI_TAWAU"),  # the more specific post wins over Sabah
        ("MY", "Sabah / Tawau", "KRI_TAWAU"),
        ("MY", "Sarawak", "KJRI_KUCHING"),
        ("MY", "Kedah", "KJRI_PULAU_PINANG"),
        ("MY", "George Town", "KJRI_PULAU_PINANG"),
        ("MY", "Selangor", "KBRI_KUALA_LUMPUR"),
        ("MY", "Shah Alam, Selangor", "KBRI_KUALA_LUMPUR"),
        ("MY", "Kuala Terengganu", "KBRI_KUALA_LUMPUR"),  # "Terengganu" as a whole word
        ("HK", None, "KJRI_HONG_KONG"),
        ("HK", "Macau", "KJRI_HONG_KONG"),
        ("TW", "Taiwan", "KDEI_TAIPEI"),
        ("SG", None, "KBRI_SINGAPURA"),
    ],
)
def test_owning_office(country: str, region: str | None, office: str) -> None:
    assert owning_office(country, region, OFFICES) == office
    assert place(country, region, OFFICES) == Placement(office)  # a match is not a fallback: no warning


@pytest.mark.parametrize("region", ["JOHOR", "johor", "  Johor  ", "Jóhor", "JOHÓR", "negeri-sembilan", "Pahang."])
def test_names_match_without_case_accents_or_punctuation(region: str) -> None:
    assert owning_office("MY", region, OFFICES) == "KJRI_JOHOR_BAHRU"


def test_accented_jurisdiction_matches_plain_region() -> None:
    offices = [
        _office("KBRI_X", "KBRI", "XX", ["Capital"]),
        _office("KJRI_SAO", "KJRI", "XX", ["São Paulo"]),
    ]
    assert owning_office("XX", "SAO PAULO", offices) == "KJRI_SAO"
    assert owning_office("XX", "são paulo", offices) == "KJRI_SAO"


@pytest.mark.parametrize("region", [None, "", "   ", ",;/"])
def test_no_region_is_the_embassy(region: str | None) -> None:
    assert place("MY", region, OFFICES) == Placement("KBRI_KUALA_LUMPUR")


@pytest.mark.parametrize("region", ["Atlantis", "Sabahan", "Johore", "Hong Kong", "Taipei"])
def test_unknown_region_falls_back_to_the_kbri_with_a_warning(region: str) -> None:
    # Whole words only ("Sabahan" is not Sabah), and only offices of the destination country count.
    assert place("MY", region, OFFICES) == Placement("KBRI_KUALA_LUMPUR", (PLACEMENT_REGION_UNKNOWN,))


def test_unknown_region_in_a_one_office_country_names_that_office() -> None:
    assert place("HK", "Kowloon", OFFICES) == Placement("KJRI_HONG_KONG", (PLACEMENT_REGION_UNKNOWN,))


def test_two_unrelated_offices_fall_back_with_a_warning() -> None:
    assert place("MY", "Johor, Sarawak", OFFICES) == Placement("KBRI_KUALA_LUMPUR", (PLACEMENT_REGION_AMBIGUOUS,))


@pytest.mark.parametrize("country", ["JP", "SA", "QA", "ID"])
def test_country_without_office_is_rejected(country: str) -> None:
    with pytest.raises(Rejected) as exc:
        owning_office(country, "Tokyo", OFFICES)
    assert (exc.value.reason, exc.value.field) == (NO_OFFICE_FOR_PLACEMENT, "destination_country")


def test_fold() -> None:
    assert fold("  Pulau-Pínang ") == ("pulau", "pinang")
    assert fold("KUALA  LUMPUR") == ("kuala", "lumpur")
    assert fold("") == ()


def test_reference_data_is_consistent() -> None:
    check_offices(OFFICES)
    tawau = next(o for o in OFFICES if o.code == "KRI_TAWAU")
    assert tawau.parent == "KJRI_KOTA_KINABALU"


def test_check_offices_refuses_a_country_without_a_principal_office() -> None:
    two_consulates = [_office("KJRI_A", "KJRI", "XX", ["A"]), _office("KJRI_B", "KJRI", "XX", ["B"])]
    with pytest.raises(ValueError, match="XX"):
        check_offices(two_consulates)
    with pytest.raises(ValueError, match="parent"):
        check_offices([_office("KBRI_X", "KBRI", "XX", ["A"], parent="KJRI_GONE")])


@pytest.mark.parametrize(
    ("raw", "expected"),
    [({}, None), ({"placement_region": None}, None), ({"placement_region": " Johor "}, "Johor")],
)
def test_placement_region_field(raw: dict[str, Any], expected: str | None) -> None:
    assert placement_region(raw) == expected


@pytest.mark.parametrize("value", [12, ["Johor"], "x" * 65, "Jo\x00hor"])
def test_placement_region_field_refused(value: object) -> None:
    with pytest.raises(Rejected) as exc:
        placement_region({"placement_region": value})
    assert (exc.value.reason, exc.value.field) == ("INVALID_FIELD", "placement_region")


def _office(code: str, type_: str, country: str, jurisdiction: list[str], parent: str | None = None) -> Office:
    return Office(code, type_, "City", country, tuple(jurisdiction), parent)


# --- event ids by submitter ------------------------------------------------------------------------------
def test_office_event_id_is_unchanged() -> None:
    # Replayed office records must keep their ids: the formula predates bank submissions.
    assert enrollment_event_id("KBRI_KUALA_LUMPUR", "r1") == event_uuid("enrollment", "KBRI_KUALA_LUMPUR", "r1")


def test_bank_event_id_is_namespaced_to_the_bank() -> None:
    bank = enrollment_event_id("KJRI_JOHOR_BAHRU", "r1", "bank:MAYBANK_MY")
    assert bank == enrollment_event_id("KJRI_JOHOR_BAHRU", "r1", "bank:MAYBANK_MY")
    assert bank == enrollment_event_id("KBRI_KUALA_LUMPUR", "r1", "bank:MAYBANK_MY")  # owner is not part of it
    assert bank != enrollment_event_id("KJRI_JOHOR_BAHRU", "r1", "bank:BNI")
    assert bank != enrollment_event_id("KJRI_JOHOR_BAHRU", "r1")
    assert bank != enrollment_event_id("KJRI_JOHOR_BAHRU", "r2", "bank:MAYBANK_MY")
    # An office whose code spells like a submitter still cannot meet a bank's id.
    assert enrollment_event_id("bank:MAYBANK_MY", "r1") != bank


@dataclass
class _Call:
    body: dict[str, Any]
    kwargs: dict[str, Any]


def _enrollment_call(**kwargs: Any) -> _Call:
    tariffs = load_tariffs(json.loads((ROOT / "schemas/reference/tariffs.json").read_text()))
    body = {
        "nik": "3602045211870001",
        "full_name": "Siti Aminah",
        "date_of_birth": "1987-11-12",
        "sex": "F",
        "participant_type": "PLACED",
        "passport_number": "C1234567",
        "destination_country": "MY",
        "departure_date": "2025-09-01",
        "contract_start": "2025-09-01",
        "contract_months": 24,
        "programs": ["JKK", "JKM"],
    }
    base: dict[str, Any] = {
        "office_code": "KJRI_JOHOR_BAHRU",
        "request_id": "r1",
        "received_at": datetime(2025, 8, 15, 3, 0, tzinfo=UTC),
        "known_offices": frozenset(o.code for o in OFFICES),
        "participant_key": lambda nik: "1" * 18,
        "encrypt_pii": lambda data: b"x",
        "tariff": tariffs.tariff_on(date(2025, 8, 15)),
    }
    return _Call(body, {**base, **kwargs})


def test_normalize_enrollment_uses_the_submitter_namespace() -> None:
    call = _enrollment_call(channel="BANK_PARTNER", submitted_by="bank:MAYBANK_MY")
    enrollment = normalize_enrollment(call.body, **call.kwargs)
    assert enrollment.event_id == enrollment_event_id("KJRI_JOHOR_BAHRU", "r1", "bank:MAYBANK_MY")
    assert (enrollment.office_code, enrollment.channel) == ("KJRI_JOHOR_BAHRU", "BANK_PARTNER")
    office = _enrollment_call()
    assert normalize_enrollment(office.body, **office.kwargs).event_id == event_uuid(
        "enrollment", "KJRI_JOHOR_BAHRU", "r1"
    )


@pytest.mark.parametrize("submitted_by", ["MAYBANK_MY", "office:KBRI", "bank:", "bank:a|b", "bank:" + "x" * 37])
def test_normalize_enrollment_refuses_a_malformed_submitter(submitted_by: str) -> None:
    call = _enrollment_call(submitted_by=submitted_by)
    with pytest.raises(Rejected) as exc:
        normalize_enrollment(call.body, **call.kwargs)
    assert (exc.value.reason, exc.value.field) == ("INVALID_FIELD", "submitted_by")


def test_placement_region_is_checked_for_banks_and_ignored_for_offices() -> None:
    bank = _enrollment_call(submitted_by="bank:MAYBANK_MY")
    bank.body["placement_region"] = ["not", "a", "string"]
    with pytest.raises(Rejected) as exc:
        normalize_enrollment(bank.body, **bank.kwargs)
    assert exc.value.field == "placement_region"
    office = _enrollment_call()
    office.body["placement_region"] = ["not", "a", "string"]
    assert normalize_enrollment(office.body, **office.kwargs).office_code == "KJRI_JOHOR_BAHRU"
