"""Property tests of the Avro codec: every canonical model, generated from its schema, round-trips exactly.

Records are drawn from the .avsc (the contract), narrowed by the pydantic model's own constraints (pattern,
max_length, ge/gt) so that every draw is a valid model instance: decimals at or below the schema's scale and
within its precision, timestamps in arbitrary time zones at millisecond precision (what timestamp-millis
keeps), unicode text, optional fields absent, null or set, every enum symbol. The strategies are also used
by test_schema_evolution.py to write samples with earlier schema versions.
"""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Iterator, Mapping
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal, localcontext
from typing import Any

import annotated_types
import fastavro
import pytest
from hypothesis import HealthCheck, given, reject, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo
from test_avro_samples import SCHEMAS_DIR, embedded_registry

from services.avro import HEADER_SIZE, MAGIC, AvroCodec, frame, load_schemas, topic_value_schemas, unframe
from services.domain.models import RECORD_TYPES

SCHEMAS = load_schemas(SCHEMAS_DIR)
NAMES = sorted(SCHEMAS)

INT_MIN, INT_MAX = -(2**31), 2**31 - 1
LONG_MIN, LONG_MAX = -(2**63), 2**63 - 1
# Keep the UTC instant of any local wall time inside datetime's range (year 1..9999) after conversion.
_WALL_MIN, _WALL_MAX = datetime(1, 1, 2), datetime(9999, 12, 30)

TEXT = st.text(st.characters(codec="utf-8"), max_size=24)  # any unicode scalar value, no lone surrogates
ZONES = (
    st.just(UTC)
    | st.builds(lambda m: timezone(timedelta(minutes=m)), st.integers(-23 * 60 - 59, 23 * 60 + 59))
    | st.timezones()
)

PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --- schema -> strategy ---------------------------------------------------------------------------------


def timestamps_millis() -> st.SearchStrategy[datetime]:
    """Aware datetimes in any zone, truncated to the millisecond."""
    return st.datetimes(_WALL_MIN, _WALL_MAX, timezones=ZONES, allow_imaginary=False).map(
        lambda d: d.replace(microsecond=d.microsecond // 1000 * 1000)
    )


def decimals(precision: int, scale: int, *, minimum: int | None = None) -> st.SearchStrategy[Decimal]:
    """decimal(precision, scale) values; some spelled with fewer places (``12.5`` for ``12.50``), which the
    codec must quantize exactly. ``minimum`` bounds the unscaled value (0 for ge=0, 1 for gt=0)."""
    limit = 10**precision - 1
    lo = -limit if minimum is None else minimum

    def spell(unscaled: int, places: int) -> Decimal:
        # Built from a string, which is exact: scaleb() rounds to the context's 28 digits, and a decimal(30)
        # value came out with a digit too many.
        cut = scale - places
        if unscaled % 10**cut == 0:
            return Decimal(f"{unscaled // 10**cut}E-{places}")
        return Decimal(f"{unscaled}E-{scale}")

    return st.builds(spell, st.integers(lo, limit), st.integers(0, scale))


class _Names:
    """Named types (records, enums) by full name, as Avro resolves a later reference to an earlier one."""

    def __init__(self) -> None:
        self.types: dict[str, dict[str, Any]] = {}

    def define(self, schema: dict[str, Any], namespace: str | None) -> str | None:
        name = schema["name"]
        ns = schema.get("namespace", namespace)
        full = name if "." in name or not ns else f"{ns}.{name}"
        self.types[full] = schema
        return ns


def strategy_for(
    avro_type: Any, names: _Names | None = None, namespace: str | None = None, model: type[BaseModel] | None = None
) -> st.SearchStrategy[Any]:
    """Values valid for ``avro_type`` (and for ``model``'s field constraints when it is a top-level record)."""
    names = names if names is not None else _Names()
    if isinstance(avro_type, list):
        return st.one_of(*(strategy_for(branch, names, namespace) for branch in avro_type))
    if isinstance(avro_type, str):
        primitive = {
            "null": st.none(),
            "boolean": st.booleans(),
            "int": st.integers(INT_MIN, INT_MAX),
            "long": st.integers(LONG_MIN, LONG_MAX),
            "string": TEXT,
            "bytes": st.binary(max_size=48),
        }
        if avro_type in primitive:
            return primitive[avro_type]
        full = avro_type if "." in avro_type or not namespace else f"{namespace}.{avro_type}"
        return strategy_for(names.types[full], names, namespace)
    logical = avro_type.get("logicalType")
    if logical == "decimal":
        return decimals(int(avro_type["precision"]), int(avro_type.get("scale", 0)))
    if logical == "date":
        return st.dates()
    if logical == "timestamp-millis":
        return timestamps_millis()
    kind = avro_type["type"]
    if kind == "array":
        return st.lists(strategy_for(avro_type["items"], names, namespace), max_size=4)
    if kind == "enum":
        names.define(avro_type, namespace)
        return st.sampled_from(avro_type["symbols"])
    if kind == "record":
        ns = names.define(avro_type, namespace)
        required: dict[str, st.SearchStrategy[Any]] = {}
        optional: dict[str, st.SearchStrategy[Any]] = {}
        for fld in avro_type["fields"]:
            info = model.model_fields.get(fld["name"]) if model is not None else None
            strategy = _constrained(fld["type"], info, names, ns)
            # a field with a default may be left out: the writer (and the model) fill the default in
            (optional if "default" in fld else required)[fld["name"]] = strategy
        return st.fixed_dictionaries(required, optional=optional)
    return strategy_for(kind, names, namespace)


def _constrained(avro_type: Any, info: FieldInfo | None, names: _Names, namespace: str | None) -> Any:
    if info is None or not info.metadata:
        return strategy_for(avro_type, names, namespace)
    branches = avro_type if isinstance(avro_type, list) else [avro_type]
    non_null = [b for b in branches if b != "null"]
    assert len(non_null) == 1, f"constraints only on [null, X] or X fields, got {avro_type}"
    base: Any = non_null[0]
    pattern = next((m.pattern for m in info.metadata if getattr(m, "pattern", None)), None)
    max_len = next((m.max_length for m in info.metadata if isinstance(m, annotated_types.MaxLen)), None)
    lower = next((m for m in info.metadata if isinstance(m, annotated_types.Ge | annotated_types.Gt)), None)
    strategy: st.SearchStrategy[Any]
    if pattern is not None:
        strategy = st.from_regex(pattern, fullmatch=True, alphabet=st.characters(codec="utf-8"))
    elif max_len is not None and base == "string":
        strategy = st.text(st.characters(codec="utf-8"), max_size=max_len)
    elif lower is not None and isinstance(base, dict) and base.get("logicalType") == "decimal":
        minimum = 0 if isinstance(lower, annotated_types.Ge) and lower.ge == 0 else 1
        strategy = decimals(int(base["precision"]), int(base.get("scale", 0)), minimum=minimum)
    else:
        strategy = strategy_for(base, names, namespace)
    return st.none() | strategy if "null" in branches else strategy


def record_strategy(definition: dict[str, Any], model: type[BaseModel] | None = None) -> st.SearchStrategy[Any]:
    return strategy_for(definition, _Names(), definition.get("namespace"), model)


def _consistent_reversal(raw: dict[str, Any]) -> dict[str, Any]:
    """A drawn reversal made to satisfy its model's cross-field rule (it names its payment; amount and currency
    come together) instead of being discarded: discarding ~60 % of the draws failed hypothesis's
    filter_too_much health check now and then (a fresh-clone `make test` did)."""
    out = dict(raw)
    if out.get("reverses_event_id") is None and not out.get("bank_refs"):
        out["reverses_event_id"] = out["event_id"]
    if out.get("amount") is None:
        out.pop("currency", None)
    elif out.get("currency") is None:
        out["currency"] = "IDR"
    return out


MODEL_STRATEGIES = {name: record_strategy(SCHEMAS[name].definition, RECORD_TYPES[name]) for name in NAMES}
MODEL_STRATEGIES["sinergi.Reversal"] = MODEL_STRATEGIES["sinergi.Reversal"].map(_consistent_reversal)


def valid_model(full_name: str, raw: dict[str, Any]) -> BaseModel:
    """The model of a drawn datum. Field constraints are in the strategy; a model-level rule across fields
    (e.g. Reversal: amount and currency together) is not, so such draws are discarded, not failed."""
    try:
        return RECORD_TYPES[full_name].model_validate(raw)
    except ValidationError as exc:
        if any(err["type"] != "value_error" or err["loc"] for err in exc.errors()):
            raise  # a field the strategy drew wrongly: a bug in the generator, not a draw to skip
        reject()


# --- the codec under test ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def codec() -> Iterator[AvroCodec]:
    # Started with blocking calls: hypothesis drives synchronous tests, and the hot path is synchronous too.
    _store, registry = embedded_registry()
    codec = AvroCodec(registry, SCHEMAS, topic_value_schemas(SCHEMAS))
    codec.start_sync()
    yield codec
    asyncio.run(registry.aclose())


def _scale_of(avro_type: Any) -> int | None:
    for branch in avro_type if isinstance(avro_type, list) else [avro_type]:
        if isinstance(branch, dict) and branch.get("logicalType") == "decimal":
            return int(branch.get("scale", 0))
    return None


def expected_datum(definition: Mapping[str, Any], record: Mapping[str, Any]) -> dict[str, Any]:
    """What decoding must give back: decimals at the schema's scale, instants in UTC, enums as symbols."""

    def norm(value: Any) -> Any:
        if isinstance(value, datetime):
            return value.astimezone(UTC)
        if isinstance(value, list):
            return [norm(v) for v in value]
        if isinstance(value, dict):
            return {k: norm(v) for k, v in value.items()}
        if isinstance(value, str):
            return str(value)  # a StrEnum member -> its symbol
        return value

    out: dict[str, Any] = {}
    for fld in definition["fields"]:
        value = norm(record[fld["name"]])
        scale = _scale_of(fld["type"])
        if scale is not None and value is not None:
            value = value.quantize(Decimal(1).scaleb(-scale))
        out[fld["name"]] = value
    return out


def assert_exact(decoded: Any, expected: Any, where: str = "") -> None:
    """Equality that also sees what == forgives: Decimal digits and exponent, UTC offset, exact types."""
    assert type(decoded) is type(expected) or (isinstance(expected, str) and type(decoded) is str), (
        f"{where}: {type(decoded).__name__} != {type(expected).__name__}"
    )
    if isinstance(expected, Decimal):
        assert decoded.as_tuple() == expected.as_tuple(), f"{where}: {decoded!r} != {expected!r}"
    elif isinstance(expected, datetime):
        assert decoded == expected, where
        assert decoded.utcoffset() == timedelta(0), f"{where}: decoded timestamp not in UTC"
        assert decoded.replace(tzinfo=None) == expected.astimezone(UTC).replace(tzinfo=None), where
    elif isinstance(expected, dict):
        assert decoded.keys() == expected.keys(), where
        for key in expected:
            assert_exact(decoded[key], expected[key], f"{where}.{key}")
    elif isinstance(expected, list):
        assert len(decoded) == len(expected), where
        for i, (d, e) in enumerate(zip(decoded, expected, strict=True)):
            assert_exact(d, e, f"{where}[{i}]")
    else:
        assert decoded == expected, f"{where}: {decoded!r} != {expected!r}"


# --- properties ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("full_name", NAMES)
@PROPERTY
@given(data=st.data())
def test_every_model_round_trips_exactly(codec: AvroCodec, full_name: str, data: st.DataObject) -> None:
    raw = data.draw(MODEL_STRATEGIES[full_name], label="datum")
    model_cls = RECORD_TYPES[full_name]
    model = valid_model(full_name, raw)

    framed = codec.encode(full_name, model)
    # the plain dict (optional keys left out) encodes to the same bytes: the schema defaults equal the model's
    assert codec.encode(full_name, raw) == framed

    name, record = codec.decode(framed)
    assert name == full_name
    expected = expected_datum(SCHEMAS[full_name].definition, model.model_dump())
    assert_exact(record, expected, full_name)

    back = codec.decode_model(framed, model_cls)
    # Compared in UTC: Python never calls an ambiguous local time (a fold, e.g. a DST fall-back hour) equal
    # to any datetime of another zone, though the instant is the same.
    assert back == model_cls.model_validate(expected)
    assert_exact(expected_datum(SCHEMAS[full_name].definition, back.model_dump()), expected, full_name)
    # the decoded model encodes to the same bytes: nothing drifts on a second trip
    assert codec.encode(full_name, back) == framed


def _enum_cases() -> Iterator[tuple[str, str, bool, str]]:
    for name in NAMES:
        for fld in SCHEMAS[name].definition["fields"]:
            t = fld["type"]
            is_array = isinstance(t, dict) and t.get("type") == "array"
            inner = t["items"] if is_array else t
            if isinstance(inner, dict) and inner.get("type") == "enum":
                for symbol in inner["symbols"]:
                    yield name, fld["name"], is_array, symbol


ENUM_CASES = list(_enum_cases())


def _enums_in(avro_type: Any) -> Iterator[str]:
    if isinstance(avro_type, list):
        for branch in avro_type:
            yield from _enums_in(branch)
    elif isinstance(avro_type, dict):
        if avro_type.get("type") == "enum":
            yield avro_type["name"]
        for fld in avro_type.get("fields", []):
            yield from _enums_in(fld["type"])
        if "items" in avro_type:
            yield from _enums_in(avro_type["items"])


def test_enum_cases_cover_every_enum_of_every_schema() -> None:
    """Every enum any schema defines, at any depth, is exercised symbol by symbol below."""
    defined = {(name, enum) for name in NAMES for enum in _enums_in(SCHEMAS[name].definition)}
    covered = set()
    for name, field_name, is_array, _ in ENUM_CASES:
        t = next(f["type"] for f in SCHEMAS[name].definition["fields"] if f["name"] == field_name)
        covered.add((name, (t["items"] if is_array else t)["name"]))
    assert defined == covered
    assert len(ENUM_CASES) == sum(len(s) for s in _symbols_by_case().values())


def _symbols_by_case() -> dict[tuple[str, str], set[str]]:
    out: dict[tuple[str, str], set[str]] = {}
    for name, field_name, _, symbol in ENUM_CASES:
        out.setdefault((name, field_name), set()).add(symbol)
    return out


@pytest.mark.parametrize(
    ("full_name", "field_name", "is_array", "symbol"), ENUM_CASES, ids=lambda v: str(v) if isinstance(v, str) else ""
)
@settings(max_examples=3, deadline=None)
@given(data=st.data())
def test_every_enum_symbol_round_trips(
    codec: AvroCodec, full_name: str, field_name: str, is_array: bool, symbol: str, data: st.DataObject
) -> None:
    raw = data.draw(MODEL_STRATEGIES[full_name])
    raw[field_name] = [symbol] if is_array else symbol
    model = valid_model(full_name, raw)
    back = codec.decode_model(codec.encode(full_name, model), RECORD_TYPES[full_name])
    definition = SCHEMAS[full_name].definition
    assert_exact(expected_datum(definition, back.model_dump()), expected_datum(definition, model.model_dump()))
    value = getattr(back, field_name)
    assert (value[0] if is_array else value).value == symbol


@settings(max_examples=200, deadline=None)
@given(schema_id=st.integers(0, 2**32 - 1), body=st.binary(max_size=64), kind=st.sampled_from([bytes, bytearray]))
def test_frame_unframe_round_trip(schema_id: int, body: bytes, kind: type) -> None:
    framed = frame(schema_id, body)
    assert len(framed) == HEADER_SIZE + len(body)
    assert framed[0] == MAGIC
    got_id, got_body = unframe(kind(framed))
    assert got_id == schema_id
    assert bytes(got_body) == body


@pytest.mark.parametrize("full_name", NAMES)
@settings(max_examples=20, deadline=None)
@given(data=st.data())
def test_codec_output_is_confluent_framed_avro(codec: AvroCodec, full_name: str, data: st.DataObject) -> None:
    """What a stock Confluent consumer does: strip 5 bytes, look the id up, read the body with that schema."""
    model = valid_model(full_name, data.draw(MODEL_STRATEGIES[full_name]))
    framed = codec.encode(full_name, model)
    schema_id, body = unframe(framed)
    assert schema_id == codec.schema_id(full_name)
    assert framed == frame(schema_id, bytes(body))
    # the writer schema as a registry client would fetch it, parsed on its own
    fetched = fastavro.parse_schema(json.loads(SCHEMAS[full_name].schema_str))
    buf = io.BytesIO(bytes(body))
    record = fastavro.schemaless_reader(buf, fetched, None)
    assert buf.tell() == len(body)  # the body is exactly one record: nothing trails it
    assert record == expected_datum(SCHEMAS[full_name].definition, model.model_dump())


@settings(max_examples=100, deadline=None)
@given(precision=st.integers(1, 30), data=st.data())
def test_decimal_strategy_stays_inside_the_declared_type(precision: int, data: st.DataObject) -> None:
    """A guard on the generator itself: every draw fits decimal(precision, scale) exactly."""
    scale = data.draw(st.integers(0, precision))
    value = data.draw(decimals(precision, scale))
    assert -value.as_tuple().exponent <= scale  # type: ignore[operator]
    with localcontext() as ctx:
        ctx.prec = precision + 2  # the default context's 28 digits cannot quantize a decimal(30, 0)
        quantized = value.quantize(Decimal(1).scaleb(-scale))
    assert quantized == value
    assert len(quantized.as_tuple().digits) <= precision


def test_strategies_reach_every_kind_of_value() -> None:
    """Smoke check that the derived strategies exercise what the docstring promises (no silent narrowing)."""
    seen: dict[str, set[str]] = {"tz": set(), "dec_places": set(), "absent": set()}

    @settings(max_examples=150, deadline=None, database=None)
    @given(raw=MODEL_STRATEGIES["sinergi.Payment"])
    def probe(raw: dict[str, Any]) -> None:
        seen["tz"].add(type(raw["trx_time"].tzinfo).__name__)
        seen["dec_places"].add(str(-raw["original_amount"].as_tuple().exponent))
        if "fx_rate" not in raw:
            seen["absent"].add("fx_rate")

    probe()
    assert {"timezone", "ZoneInfo"} <= seen["tz"]
    assert {"0", "2"} <= seen["dec_places"]
    assert seen["absent"] == {"fx_rate"}


def test_dates_cover_the_whole_calendar(codec: AvroCodec) -> None:
    """The edges hypothesis may not draw: first and last representable day, and epoch neighbours."""
    base = RECORD_TYPES["sinergi.FxRate"]
    for day in (date(1, 1, 1), date(1969, 12, 31), date(1970, 1, 1), date(9999, 12, 31)):
        rate = base(
            currency="IDR",
            value_date=day,
            idr_per_unit=Decimal("1.000000"),
            source="x",
            published_at=datetime(1969, 12, 31, 23, 59, 59, 999_000, tzinfo=UTC),
        )
        assert codec.decode_model(codec.encode("sinergi.FxRate", rate), base) == rate
