"""Every schemas/*.avsc against its hand-written model in services.domain.models, field by field."""

from __future__ import annotations

import json
import types
import typing
from datetime import date, datetime
from decimal import Decimal
from enum import Enum
from typing import Any

import pytest
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from test_avro_samples import SAMPLES, SCHEMAS_DIR, embedded_registry, started_codec

from services.domain.models import RECORD_TYPES

SCHEMA_FILES = sorted(SCHEMAS_DIR.glob("*.avsc"))
NO_DEFAULT = object()


def _load(name: str) -> dict[str, Any]:
    return json.loads((SCHEMAS_DIR / f"{name}.avsc").read_text())


def _full_name(schema: dict[str, Any]) -> str:
    return schema["name"] if "." in schema["name"] else f"{schema['namespace']}.{schema['name']}"


def _split_optional(avro_type: Any) -> tuple[Any, bool]:
    """(the non-null type, whether the union admits null)."""
    if isinstance(avro_type, list):
        rest = [t for t in avro_type if t != "null"]
        assert len(rest) == 1, f"only [null, X] unions are mapped to models, got {avro_type}"
        return rest[0], "null" in avro_type
    return avro_type, False


def _split_annotation(annotation: Any) -> tuple[Any, bool]:
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (types.UnionType, typing.Union) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        assert len(rest) == 1, annotation
        return rest[0], True
    return annotation, False


def _assert_type_matches(avro_type: Any, annotation: Any, where: str) -> None:
    if isinstance(avro_type, str):
        expected = {"string": str, "long": int, "int": int, "bytes": bytes, "boolean": bool}[avro_type]
        assert annotation is expected, f"{where}: {avro_type} needs {expected.__name__}, model has {annotation}"
        return
    kind, logical = avro_type["type"], avro_type.get("logicalType")
    if logical == "decimal":
        assert kind == "bytes" and annotation is Decimal, f"{where}: decimal needs Decimal, model has {annotation}"
    elif logical == "date":
        assert kind == "int" and annotation is date, f"{where}: date needs date, model has {annotation}"
    elif logical == "timestamp-millis":
        assert kind == "long" and annotation is datetime, f"{where}: timestamp needs datetime, has {annotation}"
    elif logical is not None:
        pytest.fail(f"{where}: logical type {logical} has no mapping yet")
    elif kind == "enum":
        assert isinstance(annotation, type) and issubclass(annotation, Enum), f"{where}: enum needs an Enum"
        assert [m.value for m in annotation] == avro_type["symbols"], f"{where}: symbols differ"
        assert avro_type.get("doc"), f"{where}: enum {avro_type['name']} has no doc"
        if "default" in avro_type:
            assert avro_type["default"] in avro_type["symbols"]
    elif kind == "record":  # a nested record (e.g. Case.attachments[]) mirrors a nested model
        assert isinstance(annotation, type) and issubclass(annotation, BaseModel), f"{where}: record needs a model"
        assert avro_type.get("doc"), f"{where}: record {avro_type['name']} has no doc"
        _assert_fields_mirror(avro_type, annotation, where)
    elif kind == "array":
        assert typing.get_origin(annotation) is list, f"{where}: array needs list, model has {annotation}"
        _assert_type_matches(avro_type["items"], typing.get_args(annotation)[0], f"{where}[]")
    else:
        _assert_type_matches(kind, annotation, where)  # {"type": "string"} and friends


def _model_default(info: FieldInfo) -> Any:
    if info.is_required():
        return NO_DEFAULT
    return info.get_default(call_default_factory=True)


def test_every_schema_file_has_a_model_and_every_model_a_schema():
    names = {_full_name(json.loads(p.read_text())) for p in SCHEMA_FILES}
    assert names == set(RECORD_TYPES)
    for path in SCHEMA_FILES:
        assert path.name == f"{_full_name(json.loads(path.read_text()))}.avsc"


@pytest.mark.parametrize("full_name", sorted(RECORD_TYPES))
def test_schema_is_documented_and_namespaced(full_name):
    schema = _load(full_name)
    assert schema["type"] == "record"
    assert schema.get("namespace"), f"{full_name}: no namespace"
    assert schema.get("doc", "").strip(), f"{full_name}: no doc"
    for fld in schema["fields"]:
        assert fld.get("doc", "").strip(), f"{full_name}.{fld['name']}: no doc"


@pytest.mark.parametrize("full_name", sorted(RECORD_TYPES))
def test_model_mirrors_schema_field_by_field(full_name):
    _assert_fields_mirror(_load(full_name), RECORD_TYPES[full_name], full_name)


def _assert_fields_mirror(schema: dict[str, Any], model: type[BaseModel], name: str) -> None:
    fields = model.model_fields
    assert list(fields) == [f["name"] for f in schema["fields"]], f"{name}: field names or order differ"

    for fld in schema["fields"]:
        assert fld.get("doc", "").strip(), f"{name}.{fld['name']}: no doc"
        where = f"{name}.{fld['name']}"
        info = fields[fld["name"]]
        avro_type, avro_optional = _split_optional(fld["type"])
        annotation, model_optional = _split_annotation(info.annotation)
        assert avro_optional == model_optional, f"{where}: nullability differs (schema {fld['type']})"
        _assert_type_matches(avro_type, annotation, where)

        # defaults: a schema default is the model's default; no schema default, no model default
        model_default = _model_default(info)
        if avro_optional:
            assert fld["type"][0] == "null", f"{where}: a null default needs null as the first branch"
            assert fld.get("default", NO_DEFAULT) is None, f"{where}: optional field needs default null"
            assert model_default is None, f"{where}: optional field needs default None in the model"
        elif "default" in fld:
            expected = fld["default"]
            if isinstance(model_default, Enum):
                model_default = model_default.value
            assert model_default == expected, f"{where}: default {model_default!r} != schema {expected!r}"
        else:
            assert model_default is NO_DEFAULT, f"{where}: the model has a default the schema lacks"


async def test_every_model_round_trips_through_avro():
    _, registry = embedded_registry()
    try:
        codec = await started_codec(registry)
        for full_name, model in RECORD_TYPES.items():
            assert SAMPLES[full_name], f"no sample for {full_name}"
            for sample in SAMPLES[full_name]:
                assert isinstance(sample, model)
                assert codec.decode_model(codec.encode(full_name, sample), model) == sample
    finally:
        await registry.aclose()
