"""The simulator's pure generators produce what the domain accepts, and refusals the domain refuses."""

from __future__ import annotations

import json
import random
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from functools import partial
from typing import Any

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from services.config import Settings
from services.domain.dates import wib_date, years_between
from services.domain.enrollment import normalize_enrollment
from services.domain.errors import Rejected
from services.domain.identity import compose_va, participant_id
from services.domain.models import Enrollment, ParticipantType, Payment, Program, Sex
from services.domain.nik import PROVINCES, check_nik
from services.domain.payment import normalize_payment, to_idr
from services.domain.reconcile import ReconcilePolicy, on_enrollment, on_payment
from services.domain.statement_match import BankLedger, DecisionKind, apply_entry, apply_payment, close_day
from services.domain.statements import check_totals, detect_format, parse_statement
from services.domain.tariff import bill_amount_idr, load_tariffs
from services.reference import load_banks, load_offices, load_tariff_document
from services.simulation.generators import (
    COUNTRY_CURRENCY,
    FX_RANGES,
    IDR,
    MEMBER_CASES,
    TYPICAL_BILL_IDR,
    BadEnrollment,
    BadPayment,
    Case,
    Mix,
    World,
    birth_date,
    enrollment_body,
    expected_bill_idr,
    fx_off_deviation_pct,
    fx_quote,
    make_nik,
    office_request_id,
    payment_body,
    payment_request_id,
    payment_steps,
    plan_cases,
    plan_member,
    requote_off_reference,
    snap_headers,
    split_amount,
    spoil_enrollment,
    spoil_payment,
    unissued_customer_no,
    unknown_va_payment,
)
from services.simulation.reports import report_totals, summary_line
from services.simulation.statements import (
    BANK_FEE_IDR,
    ROTATION,
    Break,
    Statement,
    StatementFormat,
    StatementLine,
    bank_ref,
    build_statement,
    collection_account_no,
    in_booking_order,
    with_breaks,
)
from services.simulator import amount_idr_of, world_from_settings

SETTINGS = Settings()
RECEIVED = datetime(2025, 9, 1, 3, 20, tzinfo=UTC)
TODAY = wib_date(RECEIVED)
OFFICES = frozenset(load_offices(SETTINGS.offices_file))
BANKS = load_banks(SETTINGS.banks_file)
TARIFFS = load_tariffs(load_tariff_document(SETTINGS.tariff_file))
KEY = partial(participant_id, secret=b"test-secret", digits=SETTINGS.customer_no_digits)
WORLD = world_from_settings(SETTINGS)


def normalize_e(raw: dict[str, Any], office: str, received_at: datetime = RECEIVED) -> Enrollment:
    """As services/context.py + normalize_enrollments.py call it."""
    return normalize_enrollment(
        raw,
        office_code=office,
        request_id="req-1",
        received_at=received_at,
        known_offices=OFFICES,
        participant_key=KEY,
        encrypt_pii=lambda b: b"ENC:" + b[::-1],
        tariff=TARIFFS.tariff_on(wib_date(received_at)),
    )


def normalize_p(raw: dict[str, Any], bank_id: str) -> Payment:
    bank = BANKS[bank_id]
    return normalize_payment(
        json.loads(json.dumps(raw)),  # what the wire carries
        bank_id=bank_id,
        partner_service_id=bank.partner_service_id,
        allowed_currencies=bank.currencies,
        external_id="2025090100000000000001",
        received_at=RECEIVED,
    )


def test_world_has_the_offices_and_banks_the_simulator_uses() -> None:
    assert {o.code for o in WORLD.offices} == {"KBRI_KUALA_LUMPUR", "KJRI_JOHOR_BAHRU", "KJRI_HONG_KONG", "KDEI_TAIPEI"}
    assert {b.bank_id for b in WORLD.banks} == {"MANDIRI", "BNI", "MAYBANK_MY"}
    assert {b.bank_id for b in WORLD.banks_for("MY")} == {"MANDIRI", "MAYBANK_MY"}
    assert {b.bank_id for b in WORLD.banks_for("HK")} == {"BNI"}
    assert {b.bank_id for b in WORLD.banks_for("TW")} == {"BNI"}


def test_world_needs_a_serving_bank() -> None:
    offices = {"offices": [{"code": "KDEI_TAIPEI", "country": "TW"}]}
    banks = {"banks": [{"bank_id": "MAYBANK_MY", "partner_service_id": "88003", "currencies": ["MYR"]}]}
    with pytest.raises(ValueError, match="no office"):
        World.from_reference(offices, banks, ["KDEI_TAIPEI"], ["MAYBANK_MY"])


@given(seed=st.integers(0, 2**32), female=st.booleans(), age=st.integers(18, 50))
def test_niks_are_valid_and_carry_birth_date_and_sex(seed: int, female: bool, age: int) -> None:
    rng = random.Random(seed)
    on = date(2025, 9, 1)
    born = birth_date(rng, on, age, age)
    assert years_between(born, on) == age
    sex = "F" if female else "M"
    nik = make_nik(rng, born, sex)
    info = check_nik(nik, declared_dob=born, declared_sex=Sex(sex))
    assert info.warnings == ()
    assert info.birth_date == born
    assert nik[:2] in PROVINCES
    day = int(nik[6:8])
    assert (41 <= day <= 71) if female else (1 <= day <= 31)


@hsettings(max_examples=300)
@given(seed=st.integers(0, 2**32), office=st.sampled_from(sorted(WORLD.offices, key=lambda o: o.code)))
def test_enrollment_bodies_pass_the_domain(seed: int, office: Any) -> None:
    rng = random.Random(seed)
    raw = enrollment_body(rng, office, TODAY)
    enrollment = normalize_e(raw, office.code)
    assert enrollment.destination_country == office.country
    assert raw["contract_months"] in (6, 12, 24, 36)
    age = years_between(enrollment.date_of_birth, enrollment.departure_date)
    assert 18 <= age <= 50
    bill = bill_amount_idr(
        TARIFFS.tariff_on(TODAY), enrollment.participant_type, enrollment.contract_months, enrollment.programs
    )
    assert bill.total_idr > 0


def test_enrollment_mix_is_realistic() -> None:
    rng = random.Random(1)
    office = next(o for o in WORLD.offices if o.code == "KJRI_HONG_KONG")
    bodies = [enrollment_body(rng, office, TODAY) for _ in range(2000)]
    types = Counter(b["participant_type"] for b in bodies)
    assert 0.6 < types["PLACED"] / len(bodies) < 0.8
    assert {b["contract_months"] for b in bodies} == {6, 12, 24, 36}
    assert sum(b["sex"] == "F" for b in bodies) / len(bodies) > 0.9  # Hong Kong: domestic workers
    assert any("JHT" in b["programs"] for b in bodies)
    assert len({b["nik"] for b in bodies}) == len(bodies)
    warned = [b for b in bodies if normalize_e(b, office.code).warnings]
    assert 0 < len(warned) < 0.05 * len(bodies)  # a few legitimate NIK/birth-date mismatches


def test_perseorangan_never_registers_too_early() -> None:
    rng = random.Random(2)
    office = WORLD.offices[0]
    for _ in range(500):
        raw = enrollment_body(rng, office, TODAY, Mix(placed_share=0.0))
        assert raw["participant_type"] == "PERSEORANGAN"
        assert date.fromisoformat(raw["departure_date"]) <= TODAY + timedelta(days=28)
        normalize_e(raw, office.code)


@pytest.mark.parametrize("kind", list(BadEnrollment))
@pytest.mark.parametrize("seed", range(25))
def test_spoilt_enrollments_are_refused_with_the_expected_reason(kind: BadEnrollment, seed: int) -> None:
    rng = random.Random(seed)
    office = WORLD.offices[seed % len(WORLD.offices)]
    bad, expect = spoil_enrollment(rng, enrollment_body(rng, office, TODAY), kind)
    with pytest.raises(Rejected) as info:
        normalize_e(bad, office.code)
    assert expect.status == 422
    assert info.value.reason == expect.reason == kind.value


@given(seed=st.integers(0, 2**32), amount=st.integers(1_000, 5_000_000), currency=st.sampled_from(sorted(FX_RANGES)))
def test_fx_quote_converts_to_exactly_the_bill(seed: int, amount: int, currency: str) -> None:
    value, rate = fx_quote(random.Random(seed), amount, currency)
    assert to_idr(Decimal(value), Decimal(rate)) == amount
    low, high = FX_RANGES[currency]
    if amount >= 30_000:  # the smallest instalment the simulator sends; below, cents distort the rate
        assert low * Decimal("0.99") < Decimal(rate) < high * Decimal("1.01")
    assert len(value.split(".")[1]) == 2 and len(rate.split(".")[-1]) <= 6


@given(seed=st.integers(0, 2**32), total=st.integers(2_000, 2_000_000))
def test_split_amount(seed: int, total: int) -> None:
    first, rest = split_amount(random.Random(seed), total)
    assert first > 0 and rest > 0 and first + rest == total


@hsettings(max_examples=200)
@given(seed=st.integers(0, 2**32))
def test_payment_bodies_pass_the_domain_and_cover_the_bill(seed: int) -> None:
    rng = random.Random(seed)
    office = rng.choice(WORLD.offices)
    bank = rng.choice(WORLD.banks_for(office.country))
    currency = rng.choice(sorted(set(bank.currencies) & {IDR, COUNTRY_CURRENCY[office.country]}))
    customer_no = f"{rng.randrange(10**18):018d}"
    amount = rng.choice((108_000, 145_500, 226_500, 370_000, 494_500))
    raw = payment_body(
        rng,
        bank=bank,
        customer_no=customer_no,
        amount_idr=amount,
        currency=currency,
        paid_at=RECEIVED,
        utc_offset_h=8,
        account_name="Siti Aminah",
    )
    payment = normalize_p(raw, bank.bank_id)
    assert payment.amount_idr == amount
    assert payment.participant_id == customer_no
    assert payment.original_currency == currency
    assert (payment.fx_rate is None) == (currency == IDR)
    assert payment.trx_utc_offset_minutes == 480


@pytest.mark.parametrize("kind", list(BadPayment))
@pytest.mark.parametrize("seed", range(40))
def test_spoilt_payments_are_refused_with_the_expected_reason(kind: BadPayment, seed: int) -> None:
    rng = random.Random(seed)
    bank = WORLD.banks[seed % len(WORLD.banks)]
    currency = bank.currencies[seed % len(bank.currencies)]
    if currency not in FX_RANGES and currency != IDR:
        currency = IDR
    good = payment_body(
        rng,
        bank=bank,
        customer_no=f"{rng.randrange(10**18):018d}",
        amount_idr=370_000,
        currency=currency,
        paid_at=RECEIVED,
        utc_offset_h=8,
    )
    bad, expect = spoil_payment(rng, good, kind, WORLD.banks)
    with pytest.raises(Rejected) as info:
        normalize_p(bad, bank.bank_id)
    assert info.value.reason == expect.reason == kind.value
    assert expect.status == (400 if kind is BadPayment.AMOUNT_FORMAT else 404)


@hsettings(max_examples=200)
@given(seed=st.integers(0, 2**32))
def test_a_member_script_pays_the_bill_exactly(seed: int) -> None:
    rng = random.Random(seed)
    mix = Mix(partial_share=0.5, duplicate_share=0.5, bad_payment_share=0.3, bad_enrollment_share=0.3)
    script = plan_member(rng, WORLD, TODAY, mix)
    enrollment = normalize_e(script.enrollment, script.office.code)
    if script.bad_enrollment is not None:
        with pytest.raises(Rejected):
            normalize_e(script.bad_enrollment[0], script.office.code)
    assert script.bank.serves(script.office.country)
    assert script.currency in script.bank.currencies
    assert script.currency in (IDR, COUNTRY_CURRENCY[script.office.country])
    bill = bill_amount_idr(
        TARIFFS.tariff_on(TODAY), enrollment.participant_type, enrollment.contract_months, enrollment.programs
    ).total_idr
    steps = payment_steps(rng, script, WORLD, customer_no=enrollment.participant_id, amount_idr=bill, paid_at=RECEIVED)
    credited: dict[str, int] = {}
    for step in steps:
        if step.label == "bad":
            with pytest.raises(Rejected):
                normalize_p(step.body, script.bank.bank_id)
            continue
        payment = normalize_p(step.body, script.bank.bank_id)
        credited[payment.event_id] = payment.amount_idr  # a resend has the same event id
    assert sum(credited.values()) == bill
    assert len(credited) == (2 if script.partial else 1)
    if script.duplicate:
        assert steps[-1].label == "duplicate" and steps[-1].body == steps[-2].body


def test_generators_are_deterministic() -> None:
    def story(seed: int) -> list[Any]:
        rng = random.Random(seed)
        script = plan_member(rng, WORLD, TODAY)
        steps = payment_steps(rng, script, WORLD, customer_no="1" * 18, amount_idr=370_000, paid_at=RECEIVED)
        return [script, [s.body for s in steps], snap_headers(rng, "BNI", "t", RECEIVED)]

    assert story(42) == story(42)
    assert story(42) != story(43)


def test_request_ids_and_headers_match_the_api_rules() -> None:
    import re

    rng = random.Random(3)
    rid = office_request_id(rng, "KJRI_HONG_KONG", TODAY)
    assert re.fullmatch(r"[A-Za-z0-9._-]{1,64}", rid)
    headers = snap_headers(rng, "BNI", "tok", RECEIVED)
    assert re.fullmatch(r"[0-9]{1,36}", headers["X-EXTERNAL-ID"])
    assert datetime.fromisoformat(headers["X-TIMESTAMP"]).utcoffset() == timedelta(hours=7)
    assert headers["Authorization"] == "Bearer tok" and headers["X-PARTNER-ID"] == "BNI"
    assert len(headers["CHANNEL-ID"]) <= 5


def test_placed_24_month_bill_is_the_typical_370000() -> None:
    tariff = TARIFFS.tariff_on(TODAY)
    bill = bill_amount_idr(tariff, ParticipantType.PLACED, 24, [Program.JKK, Program.JKM])
    assert bill.total_idr == 370_000


# --- statement files -------------------------------------------------------------------------------------
def _statement_lines(rng: random.Random, n: int) -> list[StatementLine]:
    """Credits as the simulator builds them: from valid payments (IDR or foreign with an exact rupiah amount)."""
    lines = []
    for i in range(n):
        script = plan_member(rng, WORLD, TODAY)
        amount = rng.choice((370_000, 494_500, 105_000, 1_250_000))
        body = payment_body(
            rng,
            bank=script.bank,
            customer_no=f"{rng.randrange(10**18):018d}",
            amount_idr=amount,
            currency=script.currency,
            paid_at=RECEIVED + timedelta(minutes=i),
            utc_offset_h=8,
        )
        lines.append(_line_of(body, RECEIVED + timedelta(minutes=i)))
    return lines


def _line_of(body: dict[str, Any], booked_at: datetime) -> StatementLine:
    """The credit the simulator books for an accepted notification."""
    return StatementLine(
        amount_idr=amount_idr_of(body),
        booked_at=booked_at,
        payment_request_id=body["paymentRequestId"],
        virtual_account_no=body["virtualAccountNo"],
        origin_value=body["paidAmount"]["value"],
        origin_currency=body["paidAmount"]["currency"],
        partner_reference_no=body["partnerReferenceNo"],
    )


@pytest.mark.parametrize("fmt", list(StatementFormat))
@given(seed=st.integers(0, 2**32), count=st.integers(0, 25), opening=st.integers(0, 10**12))
@hsettings(max_examples=25, deadline=None)
def test_statement_files_parse_with_zero_errors_and_add_up(
    fmt: StatementFormat, seed: int, count: int, opening: int
) -> None:
    rng = random.Random(seed)
    lines = in_booking_order(_statement_lines(rng, count))
    statement = Statement(
        bank_id="BNI",
        account_no=collection_account_no("   88002"),
        reference=f"SIM{seed % 10**6:06d}R0001",
        statement_date=TODAY,
        sequence=1,
        opening_idr=opening,
        lines=lines,
    )
    upload = build_statement(statement, fmt)
    result = parse_statement(upload.content, bank_id="BNI", imported_at=RECEIVED, filename=upload.filename)

    assert result.errors == []
    assert detect_format(upload.content) == fmt.value == result.source.value
    assert upload.content_type in {"application/json", "text/plain", "text/csv", "application/xml"}
    assert [e.amount for e in result.entries] == [Decimal(line.amount_idr) for line in lines]
    assert all(e.direction.value == "CREDIT" and e.currency == "IDR" for e in result.entries)
    assert [e.bank_ref for e in result.entries] == [bank_ref("BNI", line.payment_request_id) for line in lines]
    assert len({e.entry_id for e in result.entries}) == len(lines)  # one entry per payment, none merged
    assert all(e.booking_date == line.booking_date for e, line in zip(result.entries, lines, strict=True))
    # the declared totals and balances add up; CSV and camt.054 declare none
    declared = fmt in (StatementFormat.SNAP_STATEMENT, StatementFormat.MT940)
    assert check_totals(result) == ([] if declared else ["NO_DECLARED_TOTALS"])
    # what reconciliation matches on travels in every format that has room for it
    refs = [(e.customer_ref or "").strip() for e in result.entries]
    if fmt in (StatementFormat.CSV, StatementFormat.CAMT054):
        assert refs == [line.virtual_account_no.strip() for line in lines]
    elif fmt is StatementFormat.SNAP_STATEMENT:  # the payment id as reference
        assert refs == [line.payment_request_id for line in lines]
    else:  # MT940's 16-character customer reference: the notification's partnerReferenceNo
        assert refs == [line.partner_reference_no for line in lines]
    if fmt in (StatementFormat.CSV, StatementFormat.CAMT054):
        assert [e.end_to_end_id for e in result.entries] == [line.payment_request_id for line in lines]


def test_statement_rotation_and_references() -> None:
    assert [f.value for f in ROTATION] == ["SNAP_STATEMENT", "MT940", "CSV", "CAMT054"]
    refs = {bank_ref("MANDIRI", f"MDR-20250901-{i:016x}") for i in range(10_000)}
    assert len(refs) == 10_000 and all(len(r) == 16 and r.startswith("MAN") for r in refs)
    assert bank_ref("BNI", "X") != bank_ref("MANDIRI", "X")
    assert collection_account_no("   88001") == "137880010001"


def test_simulator_amounts_are_integer_rupiah_by_the_domain_rule() -> None:
    rng = random.Random(5)
    for currency in ("MYR", "HKD", "TWD", "SGD"):
        value, rate = fx_quote(rng, 370_000, currency)
        body = {"paidAmount": {"value": value, "currency": currency}, "additionalInfo": {"fxRate": rate}}
        assert amount_idr_of(body) == to_idr(Decimal(value), Decimal(rate)) == 370_000
    assert amount_idr_of({"paidAmount": {"value": "370000.00", "currency": "IDR"}}) == 370_000


# --- reconciliation cases: each generator, and what the domain makes of it -------------------------------
def _enrolled(rng: random.Random, case: Case | None = None) -> tuple[Any, Enrollment, Any]:
    """A member script, its normalized enrollment and the reconciler state after it (AWAITING_PAYMENT)."""
    script = plan_member(rng, WORLD, TODAY, Mix(), case)
    enrollment = normalize_e(script.enrollment, script.office.code)
    decision = on_enrollment(None, enrollment, TARIFFS, SETTINGS.bill_validity_days)
    return script, enrollment, decision.new_state


def _pay(rng: random.Random, script: Any, customer_no: str, amount: int) -> list[Any]:
    return payment_steps(rng, script, WORLD, customer_no=customer_no, amount_idr=amount, paid_at=RECEIVED)


@pytest.mark.parametrize("members", [2, 3, 6, 12, 50, 400])
def test_plan_cases_gives_every_member_case_at_least_once(members: int) -> None:
    plan = plan_cases(random.Random(members), members)
    counts = Counter(plan.values())
    assert len(plan) <= members // 2 and all(0 <= i < members for i in plan)
    if members >= 2 * len(MEMBER_CASES):
        assert set(counts) == set(MEMBER_CASES)
    if members >= 400:  # then the shares decide: 2% of each
        assert all(counts[c] == 8 for c in MEMBER_CASES)
    assert plan == plan_cases(random.Random(members), members)  # a seed keeps its traffic
    assert (
        plan_cases(random.Random(1), members, Mix(overpayment_share=0, late_enrollment_share=0, fx_off_share=0)) == {}
    )


@pytest.mark.parametrize("case", list(MEMBER_CASES))
@pytest.mark.parametrize("seed", range(20))
def test_a_case_member_has_nothing_else_going_wrong(case: Case, seed: int) -> None:
    mix = Mix(bad_enrollment_share=1, bad_payment_share=1, partial_share=1, duplicate_share=1)
    script = plan_member(random.Random(seed), WORLD, TODAY, mix, case)
    assert script.case is case and script.bad_enrollment is None and script.bad_payment is None
    assert not script.partial and not script.duplicate
    if case is Case.FX_RATE_OUT_OF_TOLERANCE:
        assert script.currency == COUNTRY_CURRENCY[script.office.country] != IDR
    # the same draws as a member without a case: the seed's enrollment is unchanged
    assert script.enrollment == plan_member(random.Random(seed), WORLD, TODAY, mix).enrollment


@pytest.mark.parametrize("seed", range(30))
def test_overpayment_is_credited_with_the_excess(seed: int) -> None:
    rng = random.Random(seed)
    script, enrollment, state = _enrolled(rng, Case.OVERPAYMENT)
    bill = state.bill.amount_idr
    (step,) = _pay(rng, script, enrollment.participant_id, bill)
    decision = on_payment(state, normalize_p(step.body, script.bank.bank_id))
    paid = amount_idr_of(step.body)
    assert paid > bill and paid % 50_000 == 0 and paid - bill >= 1_000
    assert decision.outcome == "OVERPAYMENT"
    assert decision.new_state.credit_idr == paid - bill
    assert [e.reason for e in decision.exceptions] == ["OVERPAYMENT"]


@pytest.mark.parametrize("seed", range(30))
def test_an_off_rate_payment_is_outside_the_tolerance_and_still_the_bill(seed: int) -> None:
    rng = random.Random(seed)
    script, enrollment, state = _enrolled(rng, Case.FX_RATE_OUT_OF_TOLERANCE)
    bill = state.bill.amount_idr
    (step,) = _pay(rng, script, enrollment.participant_id, bill)
    currency = step.body["paidAmount"]["currency"]
    reference = Decimal(step.body["additionalInfo"]["fxRate"])  # the day's reference, as far as this test goes
    tolerance = SETTINGS.reconcile_fx_tolerance_pct
    deviation = fx_off_deviation_pct(rng, tolerance, Mix().fx_off_margin_pct)
    off = requote_off_reference(step.body, reference, deviation)
    rate = Decimal(off["additionalInfo"]["fxRate"])
    # independently: the rupiah amount is the bill, the rate more than the tolerance off the reference
    assert to_idr(Decimal(off["paidAmount"]["value"]), rate) == bill
    assert abs(rate - reference) * 100 / reference > tolerance + Decimal("0.5")
    policy = ReconcilePolicy(fx_tolerance_pct=tolerance)
    lookup = {currency: reference}.get

    def fx(c: str, _day: date) -> Decimal | None:
        return lookup(c)

    flagged = on_payment(state, normalize_p(off, script.bank.bank_id), policy=policy, fx_reference=fx)
    assert flagged.outcome == "EXACT"  # CREDIT_AND_FLAG: credited at the bank's rate
    assert [e.reason for e in flagged.exceptions] == ["FX_RATE_OUT_OF_TOLERANCE"]
    held = on_payment(
        state,
        normalize_p(off, script.bank.bank_id),
        policy=ReconcilePolicy(fx_tolerance_pct=tolerance, fx_out_of_tolerance="HOLD"),
        fx_reference=fx,
    )
    assert held.outcome == "FX_RATE_OUT_OF_TOLERANCE"
    clean = on_payment(state, normalize_p(step.body, script.bank.bank_id), policy=policy, fx_reference=fx)
    assert clean.outcome == "EXACT" and clean.exceptions == []


def test_an_idr_payment_cannot_be_requoted() -> None:
    body = payment_body(
        random.Random(1),
        bank=WORLD.banks[0],
        customer_no="1" * 18,
        amount_idr=370_000,
        currency=IDR,
        paid_at=RECEIVED,
        utc_offset_h=7,
    )
    with pytest.raises(ValueError):
        requote_off_reference(body, Decimal("3500"), Decimal("5"))


@pytest.mark.parametrize("seed", range(30))
def test_a_payment_before_its_enrollment_is_held_then_pays_the_bill(seed: int) -> None:
    rng = random.Random(seed)
    script = plan_member(rng, WORLD, TODAY, Mix(), Case.PAYMENT_BEFORE_ENROLLMENT)
    customer_no = KEY(script.enrollment["nik"])  # what the simulator derives with the hub's participant key
    amount = expected_bill_idr(TARIFFS, script.enrollment, TODAY)
    (step,) = _pay(rng, script, customer_no, amount)
    held = on_payment(None, normalize_p(step.body, script.bank.bank_id))
    assert held.outcome == "PAYMENT_BEFORE_ENROLLMENT"
    enrollment = normalize_e(script.enrollment, script.office.code, RECEIVED + timedelta(minutes=5))
    assert enrollment.participant_id == customer_no
    decision = on_enrollment(held.new_state, enrollment, TARIFFS, SETTINGS.bill_validity_days)
    state = decision.new_state
    # independently: the bill the tariff gives is the one issued, and the held payment covers it exactly
    assert state.bill.amount_idr == amount
    assert state.paid_amount_idr == amount and state.status_name == "ACTIVE" and state.credit_idr == 0


@pytest.mark.parametrize("seed", range(30))
def test_a_payment_for_a_va_never_issued_is_held(seed: int) -> None:
    rng = random.Random(seed)
    bank = WORLD.banks[seed % len(WORLD.banks)]
    customer_no = unissued_customer_no(rng, SETTINGS.customer_no_digits)
    assert len(customer_no) == SETTINGS.customer_no_digits and customer_no.startswith("9")
    body = unknown_va_payment(rng, bank, customer_no=customer_no, paid_at=RECEIVED)
    payment = normalize_p(body, bank.bank_id)  # the bank API accepts it: the VA is consistent
    assert payment.amount_idr == TYPICAL_BILL_IDR
    assert on_payment(None, payment).outcome == "PAYMENT_BEFORE_ENROLLMENT"


# --- statement breaks ----------------------------------------------------------------------------------
def _notified(rng: random.Random, bank_id: str, n: int) -> list[dict[str, Any]]:
    bank = next(b for b in WORLD.banks if b.bank_id == bank_id)
    currencies = [c for c in bank.currencies if c == IDR or c in FX_RANGES]
    return [
        payment_body(
            rng,
            bank=bank,
            customer_no=f"{rng.randrange(10**18):018d}",
            amount_idr=rng.choice((370_000, 494_500, 105_000)),
            currency=currencies[i % len(currencies)],
            paid_at=RECEIVED + timedelta(minutes=i),
            utc_offset_h=8,
        )
        for i in range(n)
    ]


@pytest.mark.parametrize("fmt", list(StatementFormat))
@pytest.mark.parametrize("seed", range(8))
def test_statement_breaks_are_what_statement_reconciliation_finds(fmt: StatementFormat, seed: int) -> None:
    rng = random.Random(seed)
    bank_id = "BNI"
    psid = BANKS[bank_id].partner_service_id
    bodies = _notified(rng, bank_id, 7)
    lines = [_line_of(b, RECEIVED + timedelta(minutes=i)) for i, b in enumerate(bodies)]

    def unnotified(r: random.Random) -> StatementLine:
        customer_no = unissued_customer_no(r, SETTINGS.customer_no_digits)
        return StatementLine(
            amount_idr=TYPICAL_BILL_IDR,
            booked_at=RECEIVED + timedelta(hours=2),
            payment_request_id=payment_request_id(r, bank_id, RECEIVED),
            virtual_account_no=compose_va(psid, customer_no),
            origin_value=f"{TYPICAL_BILL_IDR}.00",
            origin_currency=IDR,
            partner_reference_no=f"{r.getrandbits(48):012X}",
        )

    broken = with_breaks(
        rng,
        lines,
        candidates=[b["paymentRequestId"] for b in bodies],
        wanted=list(Break),
        corrected_at=RECEIVED + timedelta(hours=1),
        unnotified=unnotified,
    )
    assert set(broken.breaks) == set(Break) and len(set(broken.breaks.values())) == len(Break)
    statement = Statement(bank_id, collection_account_no(psid), "SIM000001R0001", TODAY, 1, 10**9, broken.lines)
    upload = build_statement(statement, fmt)
    result = parse_statement(upload.content, bank_id=bank_id, imported_at=RECEIVED, filename=upload.filename)
    assert result.errors == []
    declared = fmt in (StatementFormat.SNAP_STATEMENT, StatementFormat.MT940)
    assert check_totals(result) == ([] if declared else ["NO_DECLARED_TOTALS"])  # the debit adds up too
    (debit,) = [e for e in result.entries if e.direction.value == "DEBIT"]
    (line,) = [x for x in broken.lines if x.is_debit]
    expected_status = {
        StatementFormat.SNAP_STATEMENT: "ERROR_CORRECTION",
        StatementFormat.MT940: "REVERSAL",
        StatementFormat.CAMT054: "REVERSAL",
    }.get(fmt, line.status)
    assert debit.detail_status.value == expected_status
    assert debit.bank_ref != bank_ref(bank_id, line.payment_request_id)  # a transaction of its own

    ledger = BankLedger.empty(bank_id)
    decisions = []
    payments = {b["paymentRequestId"]: normalize_p(b, bank_id) for b in bodies}
    for payment in payments.values():
        step = apply_payment(ledger, payment)
        ledger, decisions = step.ledger, [*decisions, *step.decisions]
    for entry in result.entries:
        step = apply_entry(ledger, entry)
        ledger, decisions = step.ledger, [*decisions, *step.decisions]
    decisions += list(close_day(ledger, bank_id, TODAY, RECEIVED + timedelta(days=2)).decisions)

    kinds = Counter(d.kind for d in decisions)
    assert kinds == {
        DecisionKind.MATCHED_BY_REF: len(bodies) - 2,  # all but the mismatched and the left-off one
        DecisionKind.AMOUNT_MISMATCH: 1,
        DecisionKind.REVERSAL: 1,
        DecisionKind.NOTIFIED_NOT_ON_STATEMENT: 1,
        DecisionKind.ON_STATEMENT_NOT_NOTIFIED: 1,
    }
    about = {d.kind: d.payment_event_id for d in decisions if d.kind is not DecisionKind.MATCHED_BY_REF}
    for kind in (Break.REVERSAL, Break.AMOUNT_MISMATCH, Break.NOTIFIED_NOT_ON_STATEMENT):
        assert about[DecisionKind(kind.value)] == payments[broken.breaks[kind]].event_id
    (mismatch,) = [d for d in decisions if d.kind is DecisionKind.AMOUNT_MISMATCH]
    assert mismatch.difference == -BANK_FEE_IDR
    assert about[DecisionKind.ON_STATEMENT_NOT_NOTIFIED] is None


def test_breaks_without_enough_payments_are_skipped() -> None:
    rng = random.Random(3)
    bodies = _notified(rng, "BNI", 1)
    lines = [_line_of(bodies[0], RECEIVED)]
    broken = with_breaks(
        rng,
        lines,
        candidates=[bodies[0]["paymentRequestId"]],
        wanted=[Break.AMOUNT_MISMATCH, Break.REVERSAL, Break.NOTIFIED_NOT_ON_STATEMENT],
        corrected_at=RECEIVED,
        unnotified=lambda r: lines[0],
    )
    assert list(broken.breaks) == [Break.AMOUNT_MISMATCH]
    assert [x.amount_idr for x in broken.lines] == [lines[0].amount_idr - BANK_FEE_IDR]


def test_daily_report_summary_has_counts_and_rupiah_only() -> None:
    doc = {
        "bank_id": "BNI",
        "business_date": "2026-12-02",
        "categories": [
            {"category": "MATCHED_BY_REF", "decisions": 5, "amount_idr": 1_850_000, "idr_unknown": 0},
            {"category": "MATCHED_BY_VA_AMOUNT_DATE", "decisions": 1, "amount_idr": 370_000, "idr_unknown": 0},
            {"category": "AMOUNT_MISMATCH", "decisions": 1, "amount_idr": 363_500, "idr_unknown": 0},
            {"category": "NOTIFIED_NOT_ON_STATEMENT", "decisions": 1, "amount_idr": 370_000, "idr_unknown": 0},
            {"category": "ON_STATEMENT_NOT_NOTIFIED", "decisions": 0, "amount_idr": 0, "idr_unknown": 0},
            {"category": "TOTAL", "decisions": 8, "amount_idr": 2_953_500, "idr_unknown": 0},
            {"category": "REVERSAL", "decisions": 1, "amount_idr": 370_000, "idr_unknown": 0},
            {"category": "<script>", "decisions": "x"},
        ],
    }
    assert report_totals(doc) == {
        "matched": (6, 2_220_000),
        "mismatched": (1, 363_500),
        "unmatched": (1, 370_000),
        "reversed": (1, 370_000),
    }
    assert summary_line("BNI", "2026-12-02", doc) == (
        "daily report BNI 2026-12-02: matched 6 (IDR 2220000) | mismatched 1 (IDR 363500) | "
        "unmatched 1 (IDR 370000) [NOTIFIED_NOT_ON_STATEMENT 1] | reversed 1 (IDR 370000)"
    )
    assert summary_line("BNI", "2026-12-02", {"categories": "nonsense"}).endswith("reversed 0 (IDR 0)")
