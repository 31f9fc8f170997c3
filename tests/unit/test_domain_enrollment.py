from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.domain.errors import Rejected
from services.domain.identity import event_uuid, participant_id
from services.domain.models import Enrollment, ParticipantType, Program, Sex
from services.domain.tariff import Tariff, load_tariffs

TARIFF = load_tariffs(
    json.loads((Path(__file__).resolve().parents[2] / "schemas/reference/tariffs.json").read_text())
).tariff_on(date(2025, 8, 1))
OFFICES = frozenset({"KBRI_KUALA_LUMPUR", "KDEI_TAIPEI"})
SECRET = b"test-secret"
NIK = "3602045211870001"  # female, 12 Nov 1987
PASSPORT = "C1234567"
RECEIVED = datetime(2025, 8, 15, 3, 0, tzinfo=UTC)  # 15 Aug 2025 10:00 WIB


def encrypt(data: bytes) -> bytes:
    return b"ENC:" + data[::-1]


def decrypt(token: bytes) -> dict[str, str]:
    assert token.startswith(b"ENC:")
    out: dict[str, str] = json.loads(token[4:][::-1])
    return out


def body(**overrides: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "nik": NIK,
        "full_name": "Siti  Aminah ",
        "date_of_birth": "1987-11-12",
        "sex": "F",
        "participant_type": "PLACED",
        "passport_number": PASSPORT,
        "destination_country": "MY",
        "employer_name": "Syarikat Maju Sdn Bhd",
        "departure_date": "2025-09-01",
        "contract_start": "2025-09-01",
        "contract_months": 24,
        "programs": ["JKK", "JKM", "JHT"],
        "jht_monthly_amount_idr": 100_000,
    }
    for key, value in overrides.items():
        if value is _DROP:
            raw.pop(key, None)
        else:
            raw[key] = value
    return raw


_DROP = object()


def normalize(
    raw: Mapping[str, Any] | Any,
    *,
    office_code: str = "KBRI_KUALA_LUMPUR",
    request_id: str = "req-1",
    received_at: datetime = RECEIVED,
    tariff: Tariff = TARIFF,
) -> Enrollment:
    from services.domain.enrollment import normalize_enrollment

    return normalize_enrollment(
        raw,
        office_code=office_code,
        request_id=request_id,
        received_at=received_at,
        known_offices=OFFICES,
        participant_key=lambda nik: participant_id(nik, SECRET, 18),
        encrypt_pii=encrypt,
        tariff=tariff,
    )


def rejected(raw: Any, **kwargs: Any) -> Rejected:
    with pytest.raises(Rejected) as info:
        normalize(raw, **kwargs)
    exc = info.value
    for secret in (NIK, PASSPORT, "Siti"):
        assert secret not in str(exc), "a rejection message leaked personal data"
    return exc


def test_valid_enrollment() -> None:
    e = normalize(body())
    assert e.event_id == event_uuid("enrollment", "KBRI_KUALA_LUMPUR", "req-1")
    assert e.participant_id == participant_id(NIK, SECRET, 18)
    assert e.office_code == "KBRI_KUALA_LUMPUR" and e.office_request_id == "req-1"
    assert decrypt(e.pii_encrypted) == {"nik": NIK, "passport_number": PASSPORT}
    assert e.full_name == "Siti Aminah"
    assert e.date_of_birth == date(1987, 11, 12) and e.sex == Sex.F
    assert e.participant_type == ParticipantType.PLACED
    assert e.destination_country == "MY" and e.employer_name == "Syarikat Maju Sdn Bhd"
    assert e.departure_date == date(2025, 9, 1) and e.contract_start == date(2025, 9, 1)
    assert e.contract_months == 24
    assert e.programs == [Program.JKK, Program.JKM, Program.JHT]
    assert e.jht_monthly_amount_idr == 100_000
    assert e.channel == "PERWAKILAN_RI" and e.warnings == []
    assert e.received_at == RECEIVED
    assert NIK not in e.model_dump_json() and PASSPORT not in e.model_dump_json()


def test_same_request_same_event_id_and_key() -> None:
    a, b = normalize(body()), normalize(body(), received_at=datetime(2025, 8, 16, tzinfo=UTC))
    assert a.event_id == b.event_id and a.participant_id == b.participant_id
    assert normalize(body(), request_id="req-2").event_id != a.event_id


def test_optional_fields_and_program_normalisation() -> None:
    e = normalize(
        body(programs=["JKM", "JKK", "JKM"], jht_monthly_amount_idr=None, employer_name=_DROP, extra={"x": 1})
    )
    assert e.programs == [Program.JKK, Program.JKM]
    assert e.jht_monthly_amount_idr is None and e.employer_name is None
    assert normalize(body(employer_name="  ")).employer_name is None


def test_nik_mismatch_is_a_warning_not_a_rejection() -> None:
    e = normalize(body(date_of_birth="1987-11-13", sex="M"))
    assert e.warnings == ["NIK_DOB_MISMATCH", "NIK_SEX_MISMATCH"]


def test_age_boundary() -> None:
    # departure 1 Sep 2025: born 1 Sep 2007 is exactly 18, born 2 Sep 2007 is 17.
    assert normalize(body(date_of_birth="2007-09-01")).warnings == ["NIK_DOB_MISMATCH"]
    exc = rejected(body(date_of_birth="2007-09-02"))
    assert (exc.reason, exc.field) == ("UNDER_AGE", "date_of_birth")


def test_perseorangan_window_uses_the_wib_date() -> None:
    raw = body(participant_type="PERSEORANGAN", departure_date="2025-09-01")
    # 31 Jul 17:00 UTC is 1 Aug 00:00 WIB: exactly one month before departure -> accepted
    assert normalize(raw, received_at=datetime(2025, 7, 31, 17, 0, tzinfo=UTC)).participant_type == "PERSEORANGAN"
    exc = rejected(raw, received_at=datetime(2025, 7, 31, 16, 59, tzinfo=UTC))
    assert (exc.reason, exc.field) == ("REGISTRATION_TOO_EARLY", "departure_date")
    # PLACED workers have no such window
    assert normalize(body(departure_date="2026-03-01"), received_at=datetime(2025, 7, 1, tzinfo=UTC))


def test_registration_after_departure_is_allowed() -> None:
    e = normalize(body(participant_type="PERSEORANGAN", departure_date="2025-01-10", contract_start="2025-01-15"))
    assert e.departure_date == date(2025, 1, 10)


@pytest.mark.parametrize(
    ("overrides", "reason", "field"),
    [
        ({"nik": _DROP}, "MISSING_FIELD", "nik"),
        ({"nik": ""}, "MISSING_FIELD", "nik"),
        ({"nik": "36020452118700"}, "NIK_FORMAT", "nik"),
        ({"nik": "9902045211870001"}, "NIK_PROVINCE", "nik"),
        ({"nik": "3602047211870001"}, "NIK_DATE", "nik"),
        ({"nik": "3602045211870000"}, "NIK_SERIAL", "nik"),
        ({"full_name": None}, "MISSING_FIELD", "full_name"),
        ({"full_name": "   "}, "MISSING_FIELD", "full_name"),
        ({"full_name": "Siti\nAminah"}, "INVALID_FIELD", "full_name"),
        ({"full_name": "x" * 256}, "INVALID_FIELD", "full_name"),
        ({"date_of_birth": "12-11-1987"}, "INVALID_FIELD", "date_of_birth"),
        ({"date_of_birth": "1987-02-30"}, "INVALID_FIELD", "date_of_birth"),
        ({"date_of_birth": "19871112"}, "INVALID_FIELD", "date_of_birth"),
        ({"date_of_birth": "2030-01-01"}, "INVALID_FIELD", "date_of_birth"),
        ({"date_of_birth": "1850-01-01"}, "INVALID_FIELD", "date_of_birth"),
        ({"sex": "X"}, "INVALID_FIELD", "sex"),
        ({"sex": "UNKNOWN"}, "INVALID_FIELD", "sex"),
        ({"participant_type": "UNKNOWN"}, "INVALID_FIELD", "participant_type"),
        ({"participant_type": "placed"}, "INVALID_FIELD", "participant_type"),
        ({"passport_number": "c1234567"}, "PASSPORT_FORMAT", "passport_number"),
        ({"passport_number": "C123 4567"}, "PASSPORT_FORMAT", "passport_number"),
        ({"passport_number": "C1234"}, "PASSPORT_FORMAT", "passport_number"),
        ({"passport_number": "C1234567890AB"}, "PASSPORT_FORMAT", "passport_number"),
        ({"passport_number": "C-123456"}, "PASSPORT_FORMAT", "passport_number"),
        ({"passport_number": _DROP}, "MISSING_FIELD", "passport_number"),
        ({"destination_country": "MYS"}, "INVALID_FIELD", "destination_country"),
        ({"destination_country": "my"}, "INVALID_FIELD", "destination_country"),
        ({"destination_country": "ID"}, "INVALID_FIELD", "destination_country"),
        ({"departure_date": _DROP}, "MISSING_FIELD", "departure_date"),
        ({"departure_date": "2025-13-01"}, "INVALID_FIELD", "departure_date"),
        ({"departure_date": "9999-12-31"}, "INVALID_FIELD", "departure_date"),
        ({"contract_start": "1999-12-31"}, "INVALID_FIELD", "contract_start"),
        ({"contract_months": 0}, "CONTRACT_MONTHS", "contract_months"),
        ({"contract_months": 121}, "CONTRACT_MONTHS", "contract_months"),
        ({"contract_months": -24}, "CONTRACT_MONTHS", "contract_months"),
        ({"programs": ["JKK"]}, "PROGRAMS", "programs"),
        ({"programs": ["JKM", "JHT"]}, "PROGRAMS", "programs"),
        ({"programs": []}, "PROGRAMS", "programs"),
        ({"programs": ["JKK", "JKM", "JKP"]}, "INVALID_FIELD", "programs"),
        ({"programs": ["JKK", "JKM", "UNKNOWN"]}, "INVALID_FIELD", "programs"),
        ({"programs": _DROP}, "MISSING_FIELD", "programs"),
        ({"jht_monthly_amount_idr": _DROP}, "MISSING_FIELD", "jht_monthly_amount_idr"),
        ({"jht_monthly_amount_idr": 49_999}, "JHT_AMOUNT", "jht_monthly_amount_idr"),
        ({"jht_monthly_amount_idr": 600_001}, "JHT_AMOUNT", "jht_monthly_amount_idr"),
        (
            {"programs": ["JKK", "JKM"], "jht_monthly_amount_idr": 100_000},
            "JHT_AMOUNT",
            "jht_monthly_amount_idr",
        ),
    ],
)
def test_rule_rejections(overrides: dict[str, Any], reason: str, field: str) -> None:
    exc = rejected(body(**overrides))
    assert (exc.reason, exc.field) == (reason, field)


def test_jht_range_bounds_are_inclusive() -> None:
    assert normalize(body(jht_monthly_amount_idr=50_000)).jht_monthly_amount_idr == 50_000
    assert normalize(body(jht_monthly_amount_idr=600_000)).jht_monthly_amount_idr == 600_000


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("nik", 3602045211870001),
        ("nik", ["3602045211870001"]),
        ("full_name", {"first": "Siti"}),
        ("full_name", 42),
        ("date_of_birth", ["1987-11-12"]),
        ("date_of_birth", 19871112),
        ("sex", 1),
        ("sex", True),
        ("participant_type", ["PLACED"]),
        ("passport_number", 1234567),
        ("destination_country", 60),
        ("employer_name", 5),
        ("employer_name", ["a"]),
        ("departure_date", {"y": 2025}),
        ("contract_start", 1.5),
        ("contract_months", "24"),
        ("contract_months", 24.0),
        ("contract_months", True),
        ("contract_months", [24]),
        ("programs", "JKK,JKM"),
        ("programs", {"JKK": True}),
        ("programs", [1, 2]),
        ("programs", [["JKK"], "JKM"]),
        ("jht_monthly_amount_idr", "100000"),
        ("jht_monthly_amount_idr", 100000.0),
        ("jht_monthly_amount_idr", False),
    ],
)
def test_wrong_types_are_invalid_field(field: str, value: Any) -> None:
    exc = rejected(body(**{field: value}))
    assert (exc.reason, exc.field) == ("INVALID_FIELD", field)


@pytest.mark.parametrize("raw", [[], "nik", 5, None])
def test_body_must_be_an_object(raw: Any) -> None:
    exc = rejected(raw)
    assert exc.reason == "INVALID_FIELD" and exc.field is None


def test_office_and_request_id() -> None:
    exc = rejected(body(), office_code="KJRI_NOWHERE")
    assert (exc.reason, exc.field) == ("UNKNOWN_OFFICE", "office_code")
    exc = rejected(body(), request_id="  ")
    assert (exc.reason, exc.field) == ("MISSING_FIELD", "request_id")
    exc = rejected(body(), request_id="r" * 129)
    assert (exc.reason, exc.field) == ("INVALID_FIELD", "request_id")


def test_naive_received_at_is_a_programming_error() -> None:
    with pytest.raises(ValueError):
        normalize(body(), received_at=datetime(2025, 8, 15, 10, 0))


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=6,
)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(body())), _JSON)
def test_any_value_in_any_field_is_accepted_or_rejected_never_crashes(field: str, value: Any) -> None:
    try:
        normalize(body(**{field: value}))
    except Rejected as exc:
        assert exc.reason.isupper() and exc.field in (field, "nik", "date_of_birth", "departure_date", None)
