"""Normalize an enrollment submitted by a representation office (KBRI/KJRI/KRI/KDEI) into an ``Enrollment``.

Raw body (JSON object, snake_case; unknown extra fields are ignored)::

    field                   type      rule
    nik                     string    16 digits, valid structure (services.domain.nik)            required
    full_name               string    as on the KTP, 1-255 chars                                   required
    date_of_birth           string    YYYY-MM-DD                                                   required
    sex                     string    "M" | "F"                                                    required
    participant_type        string    "PLACED" | "PERSEORANGAN"                                    required
    passport_number         string    uppercase A-Z/0-9, 6-12 chars, no spaces                     required
    destination_country     string    ISO 3166-1 alpha-2, uppercase, not "ID"                      required
    employer_name           string    1-255 chars                                                  optional
    departure_date          string    YYYY-MM-DD (planned embarkation)                             required
    contract_start          string    YYYY-MM-DD                                                   required
    contract_months         integer   1..120                                                       required
    programs                array     of "JKK" | "JKM" | "JHT"; must include JKK and JKM           required
    jht_monthly_amount_idr  integer   rupiah within the tariff's JHT range; iff "JHT" in programs
    placement_region        string    state/city of the workplace, <= 64 chars; banks only         optional
                                      (read for a bank's submission; an office owns what it submits)

Example::

    {"nik": "3602045211870001", "full_name": "Siti Aminah", "date_of_birth": "1987-11-12", "sex": "F",
     "participant_type": "PLACED", "passport_number": "C1234567", "destination_country": "MY",
     "employer_name": "Syarikat Maju Sdn Bhd", "departure_date": "2025-09-01", "contract_start": "2025-09-01",
     "contract_months": 24, "programs": ["JKK", "JKM", "JHT"], "jht_monthly_amount_idr": 100000}

Rules (reason codes from services.domain.errors): absent/null/blank required field MISSING_FIELD; wrong JSON
type or malformed value INVALID_FIELD; the office must be known (UNKNOWN_OFFICE); NIK structure (NIK_*);
passport (PASSPORT_FORMAT); contract_months range (CONTRACT_MONTHS); programs (PROGRAMS); JHT amount
(JHT_AMOUNT); age >= 18 on the departure date (UNDER_AGE, UU 18/2017 Art. 5); a PERSEORANGAN worker may
register no earlier than 1 month before departure, compared with the WIB date the hub received the request
(REGISTRATION_TOO_EARLY, Permenaker 4/2023 Ch. III). A NIK whose date/sex differs from the declared one is
accepted with a warning. NIK and passport leave this function only inside ``pii_encrypted``.

Submitters: an office submits for itself (``office_code``). A partner bank enrolling at its counter passes
``submitted_by="bank:<bank id>"`` and the owning office (services.domain.placement); its event id is then
namespaced to the bank (:func:`enrollment_event_id`), so its request ids never collide with an office's.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Collection, Mapping
from datetime import date, datetime
from typing import Any

from pydantic import ValidationError

from services.domain._fields import as_mapping, get_str, req_date, req_int, req_str
from services.domain.dates import add_months, require_aware, wib_date, years_between
from services.domain.errors import Reason, Rejected
from services.domain.identity import event_uuid
from services.domain.models import Enrollment, ParticipantType, Program, Sex
from services.domain.nik import check_nik
from services.domain.placement import placement_region
from services.domain.tariff import Tariff

MIN_AGE_YEARS = 18
CONTRACT_MONTHS_MAX = 120
REQUEST_ID_MAX = 128
_PASSPORT = re.compile(r"[A-Z0-9]{6,12}")
SUBMITTED_BY_BANK = "bank:"
_SUBMITTED_BY = re.compile(r"bank:[A-Za-z0-9._-]{1,36}")
_COUNTRY = re.compile(r"[A-Z]{2}")
_PROGRAM_ORDER = (Program.JKK, Program.JKM, Program.JHT)
_DOB_MIN = date(1900, 1, 1)
# Travel/contract dates outside this window are data errors (and would overflow month arithmetic later).
_TRAVEL_MIN, _TRAVEL_MAX = date(2000, 1, 1), date(2099, 12, 31)


def _choice(raw: Mapping[str, Any], field: str, allowed: tuple[str, ...]) -> str:
    value = req_str(raw, field, max_len=32)
    if value not in allowed:
        raise Rejected(Reason.INVALID_FIELD, field, "must be one of " + ", ".join(allowed))
    return value


def destination_country(raw: Mapping[str, Any]) -> str:
    """The ``destination_country`` rule on its own: a bank's intake needs the country before the owner."""
    country = req_str(raw, "destination_country", max_len=8)
    if _COUNTRY.fullmatch(country) is None or country == "ID":
        raise Rejected(Reason.INVALID_FIELD, "destination_country", "must be an ISO 3166-1 alpha-2 code abroad")
    return country


def _travel_date(raw: Mapping[str, Any], field: str) -> date:
    value = req_date(raw, field)
    if not _TRAVEL_MIN <= value <= _TRAVEL_MAX:
        raise Rejected(Reason.INVALID_FIELD, field, "must be between 2000-01-01 and 2099-12-31")
    return value


def _programs(raw: Mapping[str, Any]) -> list[Program]:
    value = raw.get("programs")
    if value is None:
        raise Rejected(Reason.MISSING_FIELD, "programs", "is required")
    if not isinstance(value, list):
        raise Rejected(Reason.INVALID_FIELD, "programs", "must be an array of programme codes")
    chosen: set[Program] = set()
    for item in value:
        if not isinstance(item, str) or item not in {p.value for p in _PROGRAM_ORDER}:
            raise Rejected(Reason.INVALID_FIELD, "programs", "items must be JKK, JKM or JHT")
        chosen.add(Program(item))
    if not {Program.JKK, Program.JKM} <= chosen:
        raise Rejected(Reason.PROGRAMS, "programs", "JKK and JKM are mandatory")
    return [p for p in _PROGRAM_ORDER if p in chosen]


def _jht_amount(raw: Mapping[str, Any], programs: list[Program], tariff: Tariff) -> int | None:
    field = "jht_monthly_amount_idr"
    value = raw.get(field)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise Rejected(Reason.INVALID_FIELD, field, "must be an integer number of rupiah")
    if Program.JHT not in programs:
        if value is not None:
            raise Rejected(Reason.JHT_AMOUNT, field, "is only allowed when JHT is chosen")
        return None
    if value is None:
        raise Rejected(Reason.MISSING_FIELD, field, "is required when JHT is chosen")
    if not tariff.jht_monthly_min_idr <= value <= tariff.jht_monthly_max_idr:
        raise Rejected(
            Reason.JHT_AMOUNT,
            field,
            f"must be between {tariff.jht_monthly_min_idr} and {tariff.jht_monthly_max_idr} rupiah",
        )
    return value


def enrollment_event_id(office_code: str, request_id: str, submitted_by: str | None = None) -> str:
    """The deterministic event id of an enrollment request.

    An office's stays UUIDv5("enrollment", office, request id): ids of replayed records depend on it.
    Any other submitter gets a name of its own, keyed on the submitter and not on the owning office, so
    a bank repeating a request id gets the same id even if the office data changed in between, and two
    submitters sharing a request id never collide.
    """
    if submitted_by is None:
        return event_uuid("enrollment", office_code, request_id)
    return event_uuid("enrollment-submitted-by", submitted_by, request_id)


def normalize_enrollment(
    raw: Mapping[str, Any],
    *,
    office_code: str,
    request_id: str,
    received_at: datetime,
    known_offices: Collection[str],
    participant_key: Callable[[str], str],
    encrypt_pii: Callable[[bytes], bytes],
    tariff: Tariff,
    channel: str = "PERWAKILAN_RI",
    submitted_by: str | None = None,
) -> Enrollment:
    """Validate ``raw`` (see the module docstring) and build the canonical ``Enrollment``.

    ``participant_key`` maps a NIK to the participant id (identity.participant_id with the secret bound);
    ``encrypt_pii`` encrypts the JSON bytes ``{"nik": ..., "passport_number": ...}``; ``tariff`` is the
    entry in force (for the JHT range). ``submitted_by`` is ``"bank:<bank id>"`` when a bank, not the owning
    office ``office_code``, submitted (see the module docstring). Raises :class:`Rejected`; a naive
    ``received_at`` is a ValueError.
    """
    received_utc = require_aware(received_at, "received_at")
    received_day = wib_date(received_utc)
    if office_code not in known_offices:
        raise Rejected(Reason.UNKNOWN_OFFICE, "office_code", "office is not registered")
    if not isinstance(request_id, str) or not request_id.strip():
        raise Rejected(Reason.MISSING_FIELD, "request_id", "a request id is required")
    if len(request_id) > REQUEST_ID_MAX:
        raise Rejected(Reason.INVALID_FIELD, "request_id", f"must be at most {REQUEST_ID_MAX} characters")
    if submitted_by is not None and _SUBMITTED_BY.fullmatch(submitted_by) is None:
        raise Rejected(Reason.INVALID_FIELD, "submitted_by", "must be bank:<bank id>")
    body = as_mapping(raw, None)

    nik = req_str(body, "nik", max_len=32)
    full_name = " ".join(req_str(body, "full_name").split())
    date_of_birth = req_date(body, "date_of_birth")
    if not _DOB_MIN <= date_of_birth <= received_day:
        raise Rejected(Reason.INVALID_FIELD, "date_of_birth", "must be between 1900-01-01 and today")
    sex = Sex(_choice(body, "sex", ("M", "F")))
    participant_type = ParticipantType(_choice(body, "participant_type", ("PLACED", "PERSEORANGAN")))
    passport = req_str(body, "passport_number", max_len=64)
    if _PASSPORT.fullmatch(passport) is None:
        raise Rejected(Reason.PASSPORT_FORMAT, "passport_number", "must be 6-12 uppercase letters or digits")
    country = destination_country(body)
    if submitted_by is not None:
        placement_region(body)  # the bank's owner was derived from it: the same shape rule at every stage
    employer_name = get_str(body, "employer_name", required=False)
    departure_date = _travel_date(body, "departure_date")
    contract_start = _travel_date(body, "contract_start")
    contract_months = req_int(body, "contract_months")
    if not 1 <= contract_months <= CONTRACT_MONTHS_MAX:
        raise Rejected(Reason.CONTRACT_MONTHS, "contract_months", f"must be 1..{CONTRACT_MONTHS_MAX}")
    programs = _programs(body)
    jht_amount = _jht_amount(body, programs, tariff)

    nik_info = check_nik(nik, declared_dob=date_of_birth, declared_sex=sex)
    if years_between(date_of_birth, departure_date) < MIN_AGE_YEARS:
        raise Rejected(Reason.UNDER_AGE, "date_of_birth", f"must be at least {MIN_AGE_YEARS} on the departure date")
    if participant_type == ParticipantType.PERSEORANGAN and received_day < add_months(departure_date, -1):
        raise Rejected(
            Reason.REGISTRATION_TOO_EARLY,
            "departure_date",
            "PERSEORANGAN registration opens 1 month before departure",
        )

    pii = json.dumps({"nik": nik, "passport_number": passport}, separators=(",", ":"), sort_keys=True)
    try:
        return Enrollment(
            event_id=enrollment_event_id(office_code, request_id, submitted_by),
            participant_id=participant_key(nik),
            office_code=office_code,
            office_request_id=request_id,
            pii_encrypted=encrypt_pii(pii.encode("utf-8")),
            full_name=full_name,
            date_of_birth=date_of_birth,
            sex=sex,
            participant_type=participant_type,
            destination_country=country,
            employer_name=employer_name,
            departure_date=departure_date,
            contract_start=contract_start,
            contract_months=contract_months,
            programs=programs,
            jht_monthly_amount_idr=jht_amount,
            channel=channel,
            warnings=list(nik_info.warnings),
            received_at=received_utc,
        )
    except ValidationError as exc:  # safety net: the checks above should make this unreachable
        loc = exc.errors()[0]["loc"]
        raise Rejected(Reason.INVALID_FIELD, str(loc[0]) if loc else None, "invalid value") from None
