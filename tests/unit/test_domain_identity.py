from __future__ import annotations

import hashlib
import hmac
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.domain.errors import Rejected
from services.domain.identity import (
    EVENT_NAMESPACE,
    compose_va,
    event_uuid,
    mask_tail,
    participant_id,
    split_va,
)

NIK = "3602041211870001"


def test_participant_id_is_hmac_sha256_mod_10_pow_digits() -> None:
    secret = b"s3cret"
    expected = int.from_bytes(hmac.new(secret, NIK.encode(), hashlib.sha256).digest(), "big") % 10**18
    pid = participant_id(NIK, secret, 18)
    assert pid == str(expected).zfill(18)
    assert len(pid) == 18 and pid.isdigit()
    assert NIK not in pid


def test_participant_id_depends_on_secret_and_is_stable() -> None:
    assert participant_id(NIK, b"a", 18) == participant_id(NIK, b"a", 18)
    assert participant_id(NIK, b"a", 18) != participant_id(NIK, b"b", 18)


@given(st.integers(min_value=1, max_value=20), st.text(min_size=1, max_size=20))
def test_participant_id_always_has_the_requested_digits(digits: int, nik: str) -> None:
    pid = participant_id(nik, b"k", digits)
    assert len(pid) == digits and pid.isdigit()


@pytest.mark.parametrize("digits", [0, 21])
def test_participant_id_digit_bounds(digits: int) -> None:
    with pytest.raises(ValueError):
        participant_id(NIK, b"k", digits)


def test_mask_tail() -> None:
    assert mask_tail(NIK) == "************0001"
    assert mask_tail("C1234567", keep=2) == "******67"
    assert mask_tail("123") == "***"
    assert mask_tail("") == ""
    assert mask_tail(None) == ""


def test_event_uuid_is_uuid5_of_joined_parts() -> None:
    assert event_uuid("payment", "BNI", "r1") == str(uuid.uuid5(EVENT_NAMESPACE, "payment|BNI|r1"))
    assert EVENT_NAMESPACE == uuid.uuid5(uuid.NAMESPACE_URL, "urn:sinergi:events")
    assert event_uuid("a", "b") != event_uuid("a", "c")
    assert event_uuid("enrollment", "KDEI_TAIPEI", "x|y")  # free text allowed in the last part


def test_event_uuid_refuses_ambiguous_parts() -> None:
    with pytest.raises(ValueError):
        event_uuid("a|b", "c")
    with pytest.raises(ValueError):
        event_uuid()


def test_compose_and_split_va() -> None:
    va = compose_va("88001", "123456789012345678")
    assert va == "   88001123456789012345678"
    assert compose_va("   88001", "123456789012345678") == va
    assert split_va(va) == ("   88001", "123456789012345678")
    assert len(compose_va("12345678", "9" * 20)) == 28


@pytest.mark.parametrize(
    ("psid", "customer_no", "field"),
    [
        ("123456789", "1", "partnerServiceId"),
        ("", "1", "partnerServiceId"),
        ("88 01", "1", "partnerServiceId"),
        ("88001", "", "customerNo"),
        ("88001", "1" * 21, "customerNo"),
        ("88001", "12a4", "customerNo"),
        ("88001", "\u0661\u0662\u0663", "customerNo"),  # non-ASCII digits
    ],
)
def test_compose_va_rejects(psid: str, customer_no: str, field: str) -> None:
    with pytest.raises(Rejected) as info:
        compose_va(psid, customer_no)
    assert info.value.reason == "VA_FORMAT" and info.value.field == field


@pytest.mark.parametrize("va", ["   88001", "   88001" + "1" * 21, "88001123", "  880011234x"])
def test_split_va_rejects(va: str) -> None:
    with pytest.raises(Rejected):
        split_va(va)


@given(st.from_regex(r"[0-9]{1,8}", fullmatch=True), st.from_regex(r"[0-9]{1,20}", fullmatch=True))
def test_split_is_inverse_of_compose(psid: str, customer_no: str) -> None:
    assert split_va(compose_va(psid, customer_no)) == (psid.rjust(8), customer_no)


def test_rejected_str_has_reason_and_field() -> None:
    exc = Rejected("NIK_FORMAT", "nik", "NIK must be exactly 16 digits")
    assert str(exc) == "NIK_FORMAT [nik]: NIK must be exactly 16 digits"
    assert exc.reason == "NIK_FORMAT" and type(exc.reason) is str
