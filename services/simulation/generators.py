"""Pure generators of realistic KBRI enrollments and SNAP payment notifications (rng in, dict out).

Only the standard library and the pure domain helpers are used. Callers pass the ``random.Random``, the
WIB business date / aware datetime and the partner tokens; nothing here reads a clock, a file or the
environment, so a seed reproduces the same traffic.

What "realistic" means here:

- NIK: a real province and regency code from the regions most PMI come from, district 01-25, the date of
  birth with day + 40 for women, serial 0001-9999 (domain.md 2.1).
- Age 18-50 on the departure date; women dominate in Hong Kong and Taiwan (domestic and care work).
- PLACED vs PERSEORANGAN about 70/30; a PERSEORANGAN worker registers no earlier than one month before
  departure; contract lengths 6/12/24/36 months; JHT for a minority.
- Payment at a bank that serves the office's country, in IDR where the bank collects IDR, else in the
  local currency with ``additionalInfo.fxRate`` chosen so that the rupiah amount covers the bill exactly
  under services.domain.payment's rule (``round_half_up(value * fxRate)``).
- Refusals: NIK typos (unknown province, impossible date, wrong length), under-age workers, malformed
  amounts and a virtual account of the wrong bank, each with the HTTP status and reason code the APIs
  must answer.
- Reconciliation cases (:class:`Case`), a few per round on purpose: an over-payment, a payment that reaches
  the hub before its enrollment, a payment for a VA the hub never issued, and a foreign-currency payment
  whose rate is outside the reconciler's tolerance. The statement breaks are in ``statements``.
"""

from __future__ import annotations

import random
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta, timezone
from decimal import ROUND_HALF_UP, Decimal
from enum import StrEnum
from typing import Any

from services.domain.dates import add_months, years_between
from services.domain.identity import compose_va
from services.domain.models import ParticipantType, Program
from services.domain.payment import to_idr
from services.domain.tariff import TariffTable, bill_amount_idr

# --- reference ----------------------------------------------------------------------------------------

#: The local currency a partner collects in, by destination country.
COUNTRY_CURRENCY: Mapping[str, str] = {"MY": "MYR", "HK": "HKD", "TW": "TWD", "SG": "SGD"}
#: UTC offset (hours) of the place where the worker pays.
COUNTRY_UTC_OFFSET_H: Mapping[str, int] = {"MY": 8, "HK": 8, "TW": 8, "SG": 8}
#: Plausible IDR per one unit (2024-2025 ranges), for the fxRate of a foreign-currency payment.
FX_RANGES: Mapping[str, tuple[Decimal, Decimal]] = {
    "MYR": (Decimal("3400"), Decimal("3750")),
    "HKD": (Decimal("1950"), Decimal("2150")),
    "TWD": (Decimal("480"), Decimal("530")),
    "SGD": (Decimal("11800"), Decimal("12600")),
}
WIB = timezone(timedelta(hours=7))
IDR = "IDR"

DEFAULT_OFFICES = ("KBRI_KUALA_LUMPUR", "KJRI_JOHOR_BAHRU", "KJRI_HONG_KONG", "KDEI_TAIPEI")
DEFAULT_BANKS = ("MANDIRI", "BNI", "MAYBANK_MY")

# (province code, regency codes, weight): the main PMI sending regions (East/Central/West Java, NTB,
# Lampung, North Sumatra, NTT, Banten, Bali, South Sulawesi), Dukcapil numbering.
ORIGINS: tuple[tuple[str, tuple[str, ...], int], ...] = (
    ("35", ("01", "02", "03", "04", "05", "07", "09", "10", "22", "24"), 25),
    ("33", ("01", "02", "03", "15", "19", "29"), 20),
    ("32", ("03", "05", "09", "12", "13", "15"), 18),
    ("52", ("01", "02", "03", "04"), 12),
    ("18", ("01", "02", "04", "05"), 8),
    ("53", ("01", "02", "10"), 5),
    ("12", ("01", "07", "12"), 4),
    ("36", ("01", "02", "03"), 4),
    ("51", ("01", "03", "08"), 2),
    ("73", ("01", "10", "14"), 2),
)
# Two-digit codes that are not provinces (a typo in the first two digits of a NIK).
NOT_PROVINCES = ("00", "10", "20", "30", "39", "40", "45", "60", "99")

FEMALE_SHARE: Mapping[str, float] = {"HK": 0.95, "TW": 0.6, "SG": 0.85, "MY": 0.45}
_FEMALE_GIVEN = (
    "Siti",
    "Sri",
    "Dewi",
    "Nur",
    "Rina",
    "Yuli",
    "Eka",
    "Ani",
    "Tri",
    "Wulan",
    "Fitri",
    "Ratna",
    "Indah",
    "Kartika",
    "Nining",
    "Suparti",
    "Marlina",
    "Sumiati",
    "Lilis",
    "Rohmah",
)
_FEMALE_FAMILY = (
    "Aminah",
    "Wahyuni",
    "Lestari",
    "Hasanah",
    "Marlina",
    "Susanti",
    "Rahmawati",
    "Handayani",
    "Rahayu",
    "Kurniasih",
    "Wulandari",
    "Sulastri",
    "Purwanti",
    "Ningsih",
    "Maryati",
    "Fatimah",
)
_MALE_GIVEN = (
    "Budi",
    "Agus",
    "Ahmad",
    "Joko",
    "Dedi",
    "Slamet",
    "Muhammad",
    "Eko",
    "Hendra",
    "Imam",
    "Rudi",
    "Bambang",
    "Yusuf",
    "Wahyu",
    "Andi",
    "Rizki",
    "Sugeng",
    "Supriyadi",
)
_MALE_FAMILY = (
    "Santoso",
    "Salim",
    "Fauzi",
    "Susilo",
    "Kurniawan",
    "Riyadi",
    "Prasetyo",
    "Gunawan",
    "Hidayat",
    "Saputra",
    "Setiawan",
    "Nugroho",
    "Wibowo",
    "Firmansyah",
    "Hartono",
    "Syahputra",
)
_EMPLOYERS: Mapping[str, tuple[str | None, ...]] = {
    "MY": (
        "Syarikat Perladangan Sawit Jaya Sdn Bhd",
        "Binaan Maju Sdn Bhd",
        "Elektronik Pulau Sdn Bhd",
        "Kilang Sarung Tangan Getah Sdn Bhd",
        "Restoran Selera Kampung",
        None,
    ),
    "HK": (None, None, "Household employer (domestic helper)", "Golden Years Elderly Home Ltd"),
    "TW": (
        "Formosa Precision Co., Ltd.",
        "Taichung Textile Co., Ltd.",
        "Kaohsiung Fishery Co., Ltd.",
        "Sunshine Nursing Home",
        None,
    ),
    "SG": (None, "Household employer (domestic helper)"),
}
_CONTRACT_MONTHS: Mapping[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "PLACED": ((6, 12, 24, 36), (10, 15, 55, 20)),
    "PERSEORANGAN": ((6, 12, 24, 36), (20, 35, 35, 10)),
}
JHT_AMOUNTS = (50_000, 100_000, 150_000, 200_000, 300_000)
CHANNEL_IDS = ("95221", "95231", "95251")  # mobile banking, ATM, teller (SNAP CHANNEL-ID)
CHANNEL_CODES = ("6011", "6010")  # ISO 18245: ATM, teller
_PAYMENT_ID_PREFIX: Mapping[str, str] = {"MANDIRI": "MDR", "BNI": "BNI", "MAYBANK_MY": "MBB"}


@dataclass(frozen=True)
class OfficeRef:
    code: str
    country: str


@dataclass(frozen=True)
class BankRef:
    bank_id: str
    partner_service_id: str
    currencies: tuple[str, ...]

    def serves(self, country: str) -> bool:
        """A bank serves a country when it collects that country's currency."""
        return COUNTRY_CURRENCY.get(country) in self.currencies


@dataclass(frozen=True)
class World:
    """The offices that send traffic and the banks that collect, as the reference files define them."""

    offices: tuple[OfficeRef, ...]
    banks: tuple[BankRef, ...]

    def banks_for(self, country: str) -> tuple[BankRef, ...]:
        return tuple(b for b in self.banks if b.serves(country))

    @classmethod
    def from_reference(
        cls,
        offices_doc: Mapping[str, Any],
        banks_doc: Mapping[str, Any],
        office_codes: Collection[str] = DEFAULT_OFFICES,
        bank_ids: Collection[str] = DEFAULT_BANKS,
    ) -> World:
        """Build from the parsed offices.json / banks.json, keeping the given codes that exist there and
        only offices whose country at least one of the kept banks serves."""
        banks = tuple(
            BankRef(b["bank_id"], b["partner_service_id"], tuple(b["currencies"]))
            for b in banks_doc["banks"]
            if b["bank_id"] in bank_ids
        )
        offices = tuple(
            OfficeRef(o["code"], o["country"])
            for o in offices_doc["offices"]
            if o["code"] in office_codes and any(b.serves(o["country"]) for b in banks)
        )
        if not offices or not banks:
            raise ValueError("no office with a serving bank: check the office/bank selection and tokens")
        return cls(offices, banks)


@dataclass(frozen=True)
class Expect:
    """What the API must answer: HTTP status, for a refusal the reason code, and for a SNAP call the
    responseCode when it is known ("" = not checked)."""

    status: int
    reason: str = ""
    code: str = ""


ACCEPTED_ENROLLMENT = Expect(202)
ACCEPTED_PAYMENT = Expect(200, code="2002500")


class BadEnrollment(StrEnum):
    NIK_PROVINCE = "NIK_PROVINCE"
    NIK_DATE = "NIK_DATE"
    NIK_FORMAT = "NIK_FORMAT"
    UNDER_AGE = "UNDER_AGE"


class BadPayment(StrEnum):
    AMOUNT_FORMAT = "AMOUNT_FORMAT"
    VA_MISMATCH = "VA_MISMATCH"


#: A bad NIK is a typo the office corrects and resubmits; an under-age worker cannot be enrolled.
CORRECTABLE = frozenset({BadEnrollment.NIK_PROVINCE, BadEnrollment.NIK_DATE, BadEnrollment.NIK_FORMAT})


class Case(StrEnum):
    """A reconciliation case a round produces on purpose. The value is the code the reconciler gives it
    (services.domain.reconcile), except UNKNOWN_VA: the bank API refuses a VA that does not end in its
    customer number (4042512 VA_MISMATCH, the reconciler's UNKNOWN_VA never sees one), so a payment to a
    VA the hub never issued is accepted and held as PAYMENT_BEFORE_ENROLLMENT, and ages out as
    HELD_PAYMENT_AGED_OUT after SINERGI_RECONCILE_HELD_PAYMENT_MAX_AGE_DAYS."""

    OVERPAYMENT = "OVERPAYMENT"
    PAYMENT_BEFORE_ENROLLMENT = "PAYMENT_BEFORE_ENROLLMENT"
    UNKNOWN_VA = "UNKNOWN_VA"
    FX_RATE_OUT_OF_TOLERANCE = "FX_RATE_OUT_OF_TOLERANCE"


#: The cases that are a member's story (UNKNOWN_VA has no member: one per round, at the end).
MEMBER_CASES = (Case.OVERPAYMENT, Case.PAYMENT_BEFORE_ENROLLMENT, Case.FX_RATE_OUT_OF_TOLERANCE)
#: What the reconciler answers a case with. FX: under the default CREDIT_AND_FLAG policy the payment is
#: credited (EXACT) and the exception FX_RATE_OUT_OF_TOLERANCE raised; under HOLD that is the outcome.
EXPECTED_OUTCOME: Mapping[Case, str] = {
    Case.OVERPAYMENT: "OVERPAYMENT",
    Case.PAYMENT_BEFORE_ENROLLMENT: "PAYMENT_BEFORE_ENROLLMENT",
    Case.UNKNOWN_VA: "PAYMENT_BEFORE_ENROLLMENT",
    Case.FX_RATE_OUT_OF_TOLERANCE: "FX_RATE_OUT_OF_TOLERANCE",
}
#: The up-front bill of the most common enrollment (PLACED, 24 months, JKK+JKM): what someone paying a VA
#: the hub never issued would plausibly pay.
TYPICAL_BILL_IDR = 370_000


@dataclass(frozen=True)
class Mix:
    """Shares of each kind of traffic. The defaults give about 5% refused requests."""

    placed_share: float = 0.7
    jht_share: float = 0.15
    idr_share: float = 0.4  # of payments at a bank that also collects IDR
    partial_share: float = 0.12
    duplicate_share: float = 0.08
    bad_enrollment_share: float = 0.06
    bad_payment_share: float = 0.06
    nik_dob_mismatch_share: float = 0.02  # legitimate: Dukcapil never re-issues a NIK to fix its date
    pay_delay_max_s: float = 2.0  # the worker pays a little after the office enrolled them
    paid_inquiry_share: float = 0.2  # after paying in full, the worker asks again: the bill must read as paid
    # Reconciliation cases (Case): each share of the round's members, and at least `cases_min_per_round`
    # of each while its share is above 0 (never more than half the round together).
    overpayment_share: float = 0.02
    late_enrollment_share: float = 0.02  # PAYMENT_BEFORE_ENROLLMENT
    fx_off_share: float = 0.02  # FX_RATE_OUT_OF_TOLERANCE
    cases_min_per_round: int = 1
    late_enrollment_delay_s: float = 1.0  # the office posts the enrollment this long after the payment
    fx_off_margin_pct: tuple[float, float] = (1.0, 3.0)  # beyond the tolerance, either direction
    unknown_va_payments: int = 1  # per round: that many banks (rotating) take one each
    statement_breaks: bool = True  # every statement: a reversal, a mismatch, an unnotified and a missing line


# --- people -------------------------------------------------------------------------------------------


def _weighted(rng: random.Random, values: Sequence[Any], weights: Sequence[int]) -> Any:
    return rng.choices(values, weights=weights, k=1)[0]


def birth_date(rng: random.Random, on: date, min_age: int = 18, max_age: int = 50) -> date:
    """A date of birth making the person ``min_age``..``max_age`` completed years old on ``on``."""
    latest = add_months(on, -12 * min_age)
    earliest = add_months(on, -12 * (max_age + 1)) + timedelta(days=1)
    born = date.fromordinal(rng.randint(earliest.toordinal(), latest.toordinal()))
    assert min_age <= years_between(born, on) <= max_age
    return born


def make_nik(rng: random.Random, born: date, sex: str) -> str:
    """A structurally valid NIK for someone born on ``born`` (women: day + 40)."""
    province, regencies, _ = _weighted(rng, ORIGINS, [w for _, _, w in ORIGINS])
    regency = rng.choice(regencies)
    district = rng.randint(1, 25)
    day = born.day + (40 if sex == "F" else 0)
    serial = rng.randint(1, 9999)
    return f"{province}{regency}{district:02d}{day:02d}{born.month:02d}{born.year % 100:02d}{serial:04d}"


def full_name(rng: random.Random, sex: str) -> str:
    given, family = (_FEMALE_GIVEN, _FEMALE_FAMILY) if sex == "F" else (_MALE_GIVEN, _MALE_FAMILY)
    if rng.random() < 0.15:  # many Indonesians have a single name
        return rng.choice(family)
    return f"{rng.choice(given)} {rng.choice(family)}"


def passport_number(rng: random.Random) -> str:
    """An Indonesian passport number: a series letter and 7 digits."""
    return f"{rng.choice('CEXB')}{rng.randint(0, 9_999_999):07d}"


def office_request_id(rng: random.Random, office_code: str, today: date) -> str:
    """An office's X-Request-Id: office initials, date, 48 random bits (fits [A-Za-z0-9._-]{1,64})."""
    initials = "".join(part[0] for part in office_code.split("_"))
    return f"{initials}-{today:%Y%m%d}-{rng.getrandbits(48):012x}"


# --- enrollments --------------------------------------------------------------------------------------


def enrollment_body(rng: random.Random, office: OfficeRef, today: date, mix: Mix = Mix()) -> dict[str, Any]:
    """A valid ``POST /v1/enrollments`` body from ``office`` received on WIB date ``today``."""
    placed = rng.random() < mix.placed_share
    ptype = "PLACED" if placed else "PERSEORANGAN"
    if placed:
        departure = today + timedelta(days=rng.randint(-60, 60))
    else:  # registration opens one month before departure (Permenaker 4/2023 Ch. III)
        departure = today + timedelta(days=rng.randint(-90, 28))
    contract_start = departure + timedelta(days=rng.randint(0, 14))
    months_choices, months_weights = _CONTRACT_MONTHS[ptype]
    sex = "F" if rng.random() < FEMALE_SHARE.get(office.country, 0.5) else "M"
    born = birth_date(rng, departure)
    nik_born = born
    if rng.random() < mix.nik_dob_mismatch_share:
        nik_born = born + timedelta(days=rng.choice((-1, 1)) * rng.randint(1, 40))
    programs = ["JKK", "JKM"]
    body: dict[str, Any] = {
        "nik": make_nik(rng, nik_born, sex),
        "full_name": full_name(rng, sex),
        "date_of_birth": born.isoformat(),
        "sex": sex,
        "participant_type": ptype,
        "passport_number": passport_number(rng),
        "destination_country": office.country,
        "departure_date": departure.isoformat(),
        "contract_start": contract_start.isoformat(),
        "contract_months": _weighted(rng, months_choices, months_weights),
        "programs": programs,
    }
    employer = rng.choice(_EMPLOYERS.get(office.country, (None,)))
    if employer is not None:
        body["employer_name"] = employer
    if rng.random() < mix.jht_share:
        programs.append("JHT")
        body["jht_monthly_amount_idr"] = rng.choice(JHT_AMOUNTS)
    return body


def spoil_enrollment(rng: random.Random, body: Mapping[str, Any], kind: BadEnrollment) -> tuple[dict[str, Any], Expect]:
    """A copy of a valid body with one mistake, and what the KBRI API must answer (422 + reason)."""
    bad = dict(body)
    nik: str = bad["nik"]
    if kind is BadEnrollment.NIK_PROVINCE:
        bad["nik"] = rng.choice(NOT_PROVINCES) + nik[2:]
    elif kind is BadEnrollment.NIK_DATE:
        bad["nik"] = nik[:8] + rng.choice(("00", "13", "14", "19")) + nik[10:]
    elif kind is BadEnrollment.NIK_FORMAT:
        cut = rng.randint(1, 15)
        bad["nik"] = rng.choice((nik[:cut] + nik[cut + 1 :], nik[:6] + " " + nik[6:], nik[:cut] + "O" + nik[cut:]))
    else:  # UNDER_AGE: 15-17 on the departure date, with a NIK that matches
        departure = date.fromisoformat(bad["departure_date"])
        born = birth_date(rng, departure, 15, 17)
        bad["date_of_birth"] = born.isoformat()
        bad["nik"] = make_nik(rng, born, bad["sex"])
    return bad, Expect(422, kind.value)


# --- payments -----------------------------------------------------------------------------------------


def fx_quote(rng: random.Random, amount_idr: int, currency: str) -> tuple[str, str]:
    """``(paidAmount.value, additionalInfo.fxRate)`` in ``currency`` that convert to exactly ``amount_idr``.

    The value is the bill at a plausible rate, rounded to cents; the rate is then IDR per unit with 6
    decimals such that ``to_idr(value, rate) == amount_idr`` (services.domain.payment).
    """
    if amount_idr <= 0:
        raise ValueError("amount_idr must be positive")
    low, high = FX_RANGES[currency]
    nominal = low + (high - low) * Decimal(rng.randint(0, 1_000_000)) / Decimal(1_000_000)
    return quote_at(amount_idr, nominal)


def quote_at(amount_idr: int, nominal: Decimal) -> tuple[str, str]:
    """``(paidAmount.value, fxRate)`` near the ``nominal`` rate (IDR per unit) converting to exactly
    ``amount_idr``: the value is rounded to cents, so the rate moves off ``nominal`` by half a cent per unit
    paid at most."""
    if amount_idr <= 0:
        raise ValueError("amount_idr must be positive")
    value = max(Decimal("0.01"), (Decimal(amount_idr) / nominal).quantize(Decimal("0.01"), ROUND_HALF_UP))
    step = Decimal("0.000001")
    rate = (Decimal(amount_idr) / value).quantize(step, ROUND_HALF_UP)
    for _ in range(1000):  # |value * rate - amount| <= value * 5e-7: at most a step or two off
        got = to_idr(value, rate)
        if got == amount_idr:
            return f"{value:.2f}", f"{rate:f}"
        rate += step if got < amount_idr else -step
    raise ValueError("no 6-decimal rate converts this value exactly")  # pragma: no cover


def split_amount(rng: random.Random, total_idr: int) -> tuple[int, int]:
    """A first instalment of 30-70% rounded to thousands, and the remainder (both > 0)."""
    if total_idr < 2_000:
        raise ValueError("too small to split")
    first = round(total_idr * rng.uniform(0.3, 0.7), -3)
    first = min(max(first, 1_000), total_idr - 1_000)
    return int(first), total_idr - int(first)


def payment_request_id(rng: random.Random, bank_id: str, when: datetime) -> str:
    prefix = _PAYMENT_ID_PREFIX.get(bank_id, bank_id[:3])
    return f"{prefix}-{when:%Y%m%d}-{rng.getrandbits(64):016x}"


def payment_body(
    rng: random.Random,
    *,
    bank: BankRef,
    customer_no: str,
    amount_idr: int,
    currency: str,
    paid_at: datetime,
    utc_offset_h: int,
    account_name: str | None = None,
) -> dict[str, Any]:
    """A valid SNAP VA payment notification for ``amount_idr`` rupiah, paid in ``currency``."""
    psid = bank.partner_service_id.rjust(8)
    if currency == IDR:
        value, info = f"{amount_idr}.00", None
    else:
        value, rate = fx_quote(rng, amount_idr, currency)
        info = {"fxRate": rate}
    local = paid_at.astimezone(timezone(timedelta(hours=utc_offset_h)))
    body: dict[str, Any] = {
        "partnerServiceId": psid,
        "customerNo": customer_no,
        "virtualAccountNo": compose_va(psid, customer_no),
        "paymentRequestId": payment_request_id(rng, bank.bank_id, local),
        "paidAmount": {"value": value, "currency": currency},
        "trxDateTime": local.isoformat(timespec="seconds"),
        "channelCode": rng.choice(CHANNEL_CODES),
        "partnerReferenceNo": f"{rng.getrandbits(48):012X}",
    }
    if account_name is not None:
        body["virtualAccountName"] = account_name.upper()
    if info is not None:
        body["additionalInfo"] = info
    return body


def spoil_payment(
    rng: random.Random, body: Mapping[str, Any], kind: BadPayment, other_banks: Sequence[BankRef] = ()
) -> tuple[dict[str, Any], Expect]:
    """A copy of a valid notification with one mistake, and what the bank API must answer."""
    bad = dict(body)
    if kind is BadPayment.AMOUNT_FORMAT:
        value: str = body["paidAmount"]["value"]
        whole = value.split(".")[0]
        spoilt: Any = rng.choice(
            (whole, value + "0", value.replace(".", ","), float(value), "-" + value, "0.00", " " + value)
        )
        bad["paidAmount"] = {**body["paidAmount"], "value": spoilt}
        return bad, Expect(400, kind.value, "4002501")
    others = [b for b in other_banks if b.partner_service_id.rjust(8) != body["partnerServiceId"]]
    if others and rng.random() < 0.5:  # the VA printed for another bank
        psid = rng.choice(others).partner_service_id.rjust(8)
        bad["partnerServiceId"] = psid
        bad["virtualAccountNo"] = psid + body["customerNo"]
    else:  # a digit of the VA mistyped
        va: str = body["virtualAccountNo"]
        pos = rng.randint(8, len(va) - 1)
        digit = str((int(va[pos]) + rng.randint(1, 9)) % 10)
        bad["virtualAccountNo"] = va[:pos] + digit + va[pos + 1 :]
    return bad, Expect(404, kind.value, "4042512")


# --- reconciliation cases ---------------------------------------------------------------------------


def overpaid_amount(bill_idr: int) -> int:
    """What a worker who rounds the bill up to the next 50,000 rupiah pays (at least 1,000 more): an
    over-payment, credited, with the excess kept as a credit on the record."""
    if bill_idr <= 0:
        raise ValueError("bill_idr must be positive")
    step = 50_000
    paid = -(-bill_idr // step) * step
    return paid + step if paid - bill_idr < 1_000 else paid


def fx_off_deviation_pct(rng: random.Random, tolerance_pct: Decimal, margin_pct: tuple[float, float]) -> Decimal:
    """A signed deviation from the reference rate, in percent, beyond ``tolerance_pct`` by ``margin_pct``
    (low, high): a bank quoting a stale or a marked-up rate."""
    low, high = margin_pct
    if low <= 0 or high < low:
        raise ValueError("the margin must be positive and low <= high")
    beyond = Decimal(str(round(rng.uniform(low, high), 2)))
    return (tolerance_pct + beyond) * (1 if rng.random() < 0.5 else -1)


def requote_off_reference(body: Mapping[str, Any], reference: Decimal, deviation_pct: Decimal) -> dict[str, Any]:
    """A copy of a foreign-currency notification re-quoted at ``reference * (1 + deviation_pct / 100)``; the
    rupiah amount (``to_idr(value, fxRate)``) is unchanged, so only the FX check can object."""
    paid = body["paidAmount"]
    if paid["currency"] == IDR or "fxRate" not in (body.get("additionalInfo") or {}):
        raise ValueError("only a foreign-currency payment with an fxRate can be re-quoted")
    amount_idr = to_idr(Decimal(paid["value"]), Decimal(body["additionalInfo"]["fxRate"]))
    value, rate = quote_at(amount_idr, reference * (1 + deviation_pct / 100))
    return {
        **body,
        "paidAmount": {**paid, "value": value},
        "additionalInfo": {**body["additionalInfo"], "fxRate": rate},
    }


def plan_cases(rng: random.Random, members: int, mix: Mix = Mix()) -> dict[int, Case]:
    """Which members of a round (by index) play which :data:`MEMBER_CASES`: ``share * members`` of each,
    at least ``cases_min_per_round`` while the share is above 0, at most half the round in all."""
    indices = list(range(members))
    rng.shuffle(indices)
    budget = members // 2
    plan: dict[int, Case] = {}
    shares = {
        Case.OVERPAYMENT: mix.overpayment_share,
        Case.PAYMENT_BEFORE_ENROLLMENT: mix.late_enrollment_share,
        Case.FX_RATE_OUT_OF_TOLERANCE: mix.fx_off_share,
    }
    wanted = {c: max(mix.cases_min_per_round, round(s * members)) if s > 0 else 0 for c, s in shares.items()}
    # one of each first, so a small round still gets every case before any gets two
    while budget > 0 and any(wanted.values()):
        for case in MEMBER_CASES:
            if wanted[case] > 0 and budget > 0:
                plan[indices.pop()] = case
                wanted[case] -= 1
                budget -= 1
    return plan


def expected_bill_idr(tariffs: TariffTable, body: Mapping[str, Any], received_on: date) -> int:
    """The bill the hub issues for a valid enrollment ``body`` received on WIB date ``received_on``
    (connectors/intake.py computes the same): what a worker pays before the enrollment is posted."""
    breakdown = bill_amount_idr(
        tariffs.tariff_on(received_on),
        ParticipantType(body["participant_type"]),
        int(body["contract_months"]),
        [Program(p) for p in body["programs"]],
    )
    return breakdown.total_idr


def unissued_customer_no(rng: random.Random, digits: int) -> str:
    """A customer number the hub never issued (issued ones are keyed hashes: a collision is one in
    10**(digits-1)), shaped like a real one."""
    return "9" + "".join(str(rng.randrange(10)) for _ in range(digits - 1))


def unknown_va_payment(
    rng: random.Random, bank: BankRef, *, customer_no: str, paid_at: datetime, utc_offset_h: int = 7
) -> dict[str, Any]:
    """A notification for a VA the hub never issued, taken by a bank channel that does not ask the inquiry
    first (a counter or agent working from a VA written on paper): the typical bill, in IDR where the bank
    collects IDR."""
    currency = IDR if IDR in bank.currencies else bank.currencies[0]
    return payment_body(
        rng,
        bank=bank,
        customer_no=customer_no,
        amount_idr=TYPICAL_BILL_IDR,
        currency=currency,
        paid_at=paid_at,
        utc_offset_h=utc_offset_h,
    )


# --- headers ------------------------------------------------------------------------------------------


def kbri_headers(token: str, request_id: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "X-Request-Id": request_id, "Content-Type": "application/json"}


def snap_headers(rng: random.Random, bank_id: str, token: str, sent_at: datetime) -> dict[str, str]:
    """SNAP transactional headers (domain.md 4.2); X-EXTERNAL-ID numeric, unique per day."""
    return {
        "Authorization": f"Bearer {token}",
        "X-PARTNER-ID": bank_id,
        "X-EXTERNAL-ID": f"{sent_at.astimezone(WIB):%Y%m%d}{rng.randrange(10**16):016d}",
        "X-TIMESTAMP": sent_at.astimezone(WIB).isoformat(timespec="seconds"),
        "CHANNEL-ID": rng.choice(CHANNEL_IDS),
        "Content-Type": "application/json",
    }


# --- one worker's story -------------------------------------------------------------------------------


@dataclass(frozen=True)
class MemberScript:
    """What happens to one worker: where they enroll, what goes wrong, how they pay."""

    office: OfficeRef
    enrollment: dict[str, Any]  # the valid body
    bad_enrollment: tuple[dict[str, Any], Expect] | None  # sent first when set
    resubmit: bool  # after a refusal, the office sends the corrected (valid) body
    bank: BankRef
    currency: str
    partial: bool
    duplicate: bool
    bad_payment: BadPayment | None
    pay_delay_s: float
    case: Case | None = None  # a reconciliation case: nothing else goes wrong for this member


def plan_member(
    rng: random.Random, world: World, today: date, mix: Mix = Mix(), case: Case | None = None
) -> MemberScript:
    office = rng.choice(world.offices)
    body = enrollment_body(rng, office, today, mix)
    bad: tuple[dict[str, Any], Expect] | None = None
    resubmit = True
    if rng.random() < mix.bad_enrollment_share:
        kind = rng.choice(list(BadEnrollment))
        bad = spoil_enrollment(rng, body, kind)
        resubmit = kind in CORRECTABLE
    bank = rng.choice(world.banks_for(office.country))
    local = COUNTRY_CURRENCY[office.country]
    currency = IDR if IDR in bank.currencies and rng.random() < mix.idr_share else local
    if currency not in bank.currencies:
        currency = IDR
    script = MemberScript(
        office=office,
        enrollment=body,
        bad_enrollment=bad,
        resubmit=resubmit,
        bank=bank,
        currency=currency,
        partial=rng.random() < mix.partial_share,
        duplicate=rng.random() < mix.duplicate_share,
        bad_payment=rng.choice(list(BadPayment)) if rng.random() < mix.bad_payment_share else None,
        pay_delay_s=rng.uniform(0, mix.pay_delay_max_s),
    )
    if case is None:
        return script
    # The same draws as any member (a seed keeps its traffic), then nothing else goes wrong: one case, one
    # outcome. The FX case pays in the local currency, the only one with a rate to be off.
    return replace(
        script,
        bad_enrollment=None,
        resubmit=True,
        currency=local if case is Case.FX_RATE_OUT_OF_TOLERANCE else currency,
        partial=False,
        duplicate=False,
        bad_payment=None,
        case=case,
    )


@dataclass(frozen=True)
class PaymentStep:
    label: str  # "bad", "full", "partial", "remainder", "duplicate"
    body: dict[str, Any]
    expect: Expect


def payment_steps(
    rng: random.Random,
    script: MemberScript,
    world: World,
    *,
    customer_no: str,
    amount_idr: int,
    paid_at: datetime,
) -> list[PaymentStep]:
    """The notifications a bank sends for one bill, in order: maybe a malformed one first, then the
    full amount or two instalments, maybe a resend of the last one (same paymentRequestId). An
    OVERPAYMENT member pays :func:`overpaid_amount` in one go."""
    offset = COUNTRY_UTC_OFFSET_H.get(script.office.country, 7)
    name = script.enrollment["full_name"]

    def body(amount: int, at: datetime) -> dict[str, Any]:
        return payment_body(
            rng,
            bank=script.bank,
            customer_no=customer_no,
            amount_idr=amount,
            currency=script.currency,
            paid_at=at,
            utc_offset_h=offset,
            account_name=name,
        )

    steps: list[PaymentStep] = []
    if script.case is Case.OVERPAYMENT:
        steps.append(PaymentStep("full", body(overpaid_amount(amount_idr), paid_at), ACCEPTED_PAYMENT))
    elif script.partial and amount_idr >= 2_000:
        first, rest = split_amount(rng, amount_idr)
        steps.append(PaymentStep("partial", body(first, paid_at), ACCEPTED_PAYMENT))
        steps.append(PaymentStep("remainder", body(rest, paid_at + timedelta(minutes=1)), ACCEPTED_PAYMENT))
    else:
        steps.append(PaymentStep("full", body(amount_idr, paid_at), ACCEPTED_PAYMENT))
    if script.bad_payment is not None:
        spoilt, expect = spoil_payment(rng, steps[0].body, script.bad_payment, world.banks)
        steps.insert(0, PaymentStep("bad", spoilt, expect))
    if script.duplicate:
        steps.append(PaymentStep("duplicate", steps[-1].body, ACCEPTED_PAYMENT))
    return steps
