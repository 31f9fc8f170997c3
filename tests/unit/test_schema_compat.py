"""The compatibility checker (connectors.registry.compat) on the project's own schemas."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from test_avro_samples import SCHEMAS_DIR

from connectors.registry.compat import CompatibilityLevel, InvalidSchemaError, check_compatibility

FULL_T = CompatibilityLevel.FULL_TRANSITIVE
NAMES = sorted(p.name.removesuffix(".avsc") for p in SCHEMAS_DIR.glob("*.avsc"))


def _schema(name: str) -> dict[str, Any]:
    return json.loads((SCHEMAS_DIR / f"{name}.avsc").read_text())


def _s(schema: dict[str, Any]) -> str:
    return json.dumps(schema)


def _field(schema: dict[str, Any], name: str) -> dict[str, Any]:
    return next(f for f in schema["fields"] if f["name"] == name)


def _enum_of(schema: dict[str, Any], field_name: str) -> dict[str, Any]:
    t = _field(schema, field_name)["type"]
    return t["items"] if t.get("type") == "array" else t


@pytest.mark.parametrize("name", NAMES)
def test_current_schemas_are_compatible_with_themselves(name):
    text = (SCHEMAS_DIR / f"{name}.avsc").read_text()
    assert check_compatibility(text, [text], FULL_T) == []
    assert check_compatibility(text, [text, text, text], FULL_T) == []


@pytest.mark.parametrize("name", NAMES)
def test_new_optional_field_with_default_is_accepted(name):
    old = _schema(name)
    new = copy.deepcopy(old)
    new["fields"].append({"name": "note", "type": ["null", "string"], "default": None, "doc": "Added later."})
    assert check_compatibility(_s(new), [_s(old)], FULL_T) == []
    # and a non-null field with a default too
    newer = copy.deepcopy(new)
    newer["fields"].append({"name": "tags", "type": {"type": "array", "items": "string"}, "default": [], "doc": "."})
    assert check_compatibility(_s(newer), [_s(old), _s(new)], FULL_T) == []


def test_removing_a_field_that_has_a_default_is_accepted():
    old = _schema("sinergi.ReconciliationException")
    new = copy.deepcopy(old)
    new["fields"] = [f for f in new["fields"] if f["name"] != "detail"]  # "detail" has default ""
    assert check_compatibility(_s(new), [_s(old)], FULL_T) == []


@pytest.mark.parametrize("name", NAMES)
def test_new_field_without_default_is_rejected(name):
    old = _schema(name)
    new = copy.deepcopy(old)
    new["fields"].append({"name": "must_have", "type": "string", "doc": "No default."})
    problems = check_compatibility(_s(new), [_s(old)], FULL_T)
    assert problems and any("must_have" in p for p in problems)
    # BACKWARD alone already refuses it; FORWARD alone accepts it (old readers ignore the new field)
    assert check_compatibility(_s(new), [_s(old)], CompatibilityLevel.BACKWARD)
    assert check_compatibility(_s(new), [_s(old)], CompatibilityLevel.FORWARD) == []


def test_rename_without_alias_is_rejected():
    old = _schema("sinergi.Payment")
    new = copy.deepcopy(old)
    _field(new, "bank_id")["name"] = "partner_bank_id"
    problems = check_compatibility(_s(new), [_s(old)], FULL_T)
    assert any("partner_bank_id" in p for p in problems)
    assert any("bank_id" in p for p in problems)  # and old readers miss their field


def test_enum_symbol_removed_is_rejected_even_with_an_enum_default():
    old = _schema("sinergi.MemberRecord")
    new = copy.deepcopy(old)
    status = _enum_of(new, "status")
    status["symbols"] = [s for s in status["symbols"] if s != "LAPSED_REREGISTER"]
    problems = check_compatibility(_s(new), [_s(old)], FULL_T)
    assert problems and "LAPSED_REREGISTER" in " ".join(problems)
    # the Avro spec lets the enum default cover it; the project refuses to read ACTIVE data as UNKNOWN
    assert check_compatibility(_s(new), [_s(old)], FULL_T, strict_enums=False) == []


def test_enum_symbol_removed_from_array_items_is_rejected():
    old = _schema("sinergi.Enrollment")
    new = copy.deepcopy(old)
    _enum_of(new, "programs")["symbols"] = ["JKK", "JKM", "UNKNOWN"]
    assert check_compatibility(_s(new), [_s(old)], FULL_T)


def test_enum_symbol_added_is_accepted_when_old_readers_have_a_default():
    old = _schema("sinergi.MemberRecord")
    new = copy.deepcopy(old)
    _enum_of(new, "status")["symbols"].insert(-1, "SUSPENDED")
    assert check_compatibility(_s(new), [_s(old)], FULL_T) == []

    no_default = copy.deepcopy(old)
    del _enum_of(no_default, "status")["default"]
    newer = copy.deepcopy(no_default)
    _enum_of(newer, "status")["symbols"].append("SUSPENDED")
    assert check_compatibility(_s(newer), [_s(no_default)], FULL_T)


@pytest.mark.parametrize(
    ("field_name", "new_type"),
    [
        ("amount_idr", "string"),  # long -> string
        ("amount_idr", "int"),  # narrowing: old data may not fit
        ("trx_utc_offset_minutes", "long"),  # widening is BACKWARD only, not FULL
        ("bank_id", ["null", "string"]),  # old readers cannot read null
        ("original_amount", {"type": "bytes", "logicalType": "decimal", "precision": 18, "scale": 4}),
        ("original_amount", "bytes"),  # dropping the logical type changes the meaning of the bytes
        ("trx_time", {"type": "long", "logicalType": "timestamp-micros"}),
        ("received_at", "long"),
    ],
)
def test_type_change_is_rejected(field_name, new_type):
    old = _schema("sinergi.Payment")
    new = copy.deepcopy(old)
    _field(new, field_name)["type"] = new_type
    assert check_compatibility(_s(new), [_s(old)], FULL_T), f"{field_name} -> {new_type} was accepted"


def test_widening_is_backward_compatible_only():
    old = _schema("sinergi.Payment")
    new = copy.deepcopy(old)
    _field(new, "trx_utc_offset_minutes")["type"] = "long"
    assert check_compatibility(_s(new), [_s(old)], CompatibilityLevel.BACKWARD) == []
    assert check_compatibility(_s(new), [_s(old)], CompatibilityLevel.FORWARD)


def test_transitive_checks_every_earlier_version():
    v1 = _schema("sinergi.ReconciliationException")
    v2 = copy.deepcopy(v1)
    v2["fields"] = [f for f in v2["fields"] if f["name"] != "detail"]  # "detail" had default ""
    v3 = copy.deepcopy(v2)
    v3["fields"].append({"name": "detail", "type": "long", "default": 0, "doc": "Now a number."})
    # v3 is fine next to v2 alone, but v1 wrote "detail" as a string
    assert check_compatibility(_s(v3), [_s(v1), _s(v2)], CompatibilityLevel.FULL) == []
    problems = check_compatibility(_s(v3), [_s(v1), _s(v2)], FULL_T)
    assert problems and all("version 1" in p for p in problems)


def test_record_rename_is_rejected():
    old = _schema("sinergi.Payment")
    new = copy.deepcopy(old)
    new["name"] = "BankPayment"
    assert check_compatibility(_s(new), [_s(old)], FULL_T)


def test_level_none_accepts_anything_and_first_version_is_always_compatible():
    old = _schema("sinergi.Payment")
    assert check_compatibility(_s(_schema("sinergi.Enrollment")), [_s(old)], CompatibilityLevel.NONE) == []
    assert check_compatibility(_s(old), [], FULL_T) == []


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        '{"type": "record", "name": "X", "fields": [{"name": "a", "type": "strng"}]}',
        '{"type": "bytes", "logicalType": "decimal", "precision": 2, "scale": 4}',
    ],
)
def test_invalid_schemas_are_refused(text):
    with pytest.raises(InvalidSchemaError):
        check_compatibility(text, [])
