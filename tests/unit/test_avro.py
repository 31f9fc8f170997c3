"""services.avro: Confluent framing, the codec over every canonical model, schema evolution."""

from __future__ import annotations

import json
import struct
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from test_avro_samples import (
    EXCEPTION,
    PAYMENT_IDR,
    PAYMENT_MYR,
    SAMPLES,
    SCHEMAS_DIR,
    embedded_registry,
    started_codec,
)

from services.avro import (
    MAGIC,
    AvroCodec,
    DecodeError,
    EncodeError,
    ParsedSchema,
    RegistryError,
    UnknownSchemaError,
    WireFormatError,
    frame,
    load_schemas,
    parse_schema_str,
    topic_value_schemas,
    unframe,
)
from services.domain.models import RECORD_TYPES, MemberRecord, Payment, ReconciliationException


@pytest.fixture
async def registry():
    _store, client = embedded_registry()
    yield client
    await client.aclose()


@pytest.fixture
async def codec(registry):
    return await started_codec(registry)


# --- framing ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("schema_id", [0, 1, 255, 256, 65_537, 2**31 - 1, 2**32 - 1])
def test_frame_unframe_round_trip(schema_id):
    body = b"\x02abc\x00\xff"
    framed = frame(schema_id, body)
    assert framed[0] == MAGIC
    assert framed[1:5] == struct.pack(">I", schema_id)
    got_id, got_body = unframe(framed)
    assert (got_id, bytes(got_body)) == (schema_id, body)


def test_unframe_accepts_an_empty_body_and_any_buffer():
    assert unframe(bytearray(b"\x00\x00\x00\x00\x07"))[0] == 7
    schema_id, body = unframe(memoryview(frame(9, b"xy")))
    assert (schema_id, bytes(body)) == (9, b"xy")


@pytest.mark.parametrize("data", [b"", b"\x00", b"\x00\x00\x00\x01"])
def test_unframe_rejects_short_input(data):
    with pytest.raises(WireFormatError, match="shorter than the 5-byte"):
        unframe(data)


@pytest.mark.parametrize("data", [b"\x01\x00\x00\x00\x01\x02", b'{"json": true}'])
def test_unframe_rejects_wrong_magic(data):
    with pytest.raises(WireFormatError, match="magic byte"):
        unframe(data)


def test_frame_rejects_ids_outside_four_bytes():
    with pytest.raises(struct.error):
        frame(2**32, b"")


# --- local schemas ---------------------------------------------------------------------------------------


def test_load_schemas_keys_by_full_name_and_parses_once():
    schemas = load_schemas(SCHEMAS_DIR)
    assert set(schemas) == set(RECORD_TYPES)
    payment = schemas["sinergi.Payment"]
    assert payment.path is not None and payment.path.name == "sinergi.Payment.avsc"
    assert json.loads(payment.schema_str) == json.loads(payment.path.read_text())
    assert [(d.name, d.precision, d.scale) for d in payment.decimals] == [
        ("original_amount", 18, 2),
        ("fx_rate", 18, 6),
    ]


def test_load_schemas_refuses_a_file_not_named_after_its_record(tmp_path):
    (tmp_path / "payment.avsc").write_text((SCHEMAS_DIR / "sinergi.Payment.avsc").read_text())
    with pytest.raises(ValueError, match=r"sinergi\.Payment\.avsc"):
        load_schemas(tmp_path)


def test_topic_value_schemas_follows_the_catalogue():
    mapping = topic_value_schemas(load_schemas(SCHEMAS_DIR))
    assert mapping["payments.v1"] == "sinergi.Payment"
    assert mapping["members.v1"] == mapping["core.member-records.v1"] == "sinergi.MemberRecord"
    assert "kbri.enrollments.raw" not in mapping  # JSON topic


# --- codec: every model round-trips exactly ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("full_name", "sample"),
    [(name, sample) for name, samples in SAMPLES.items() for sample in samples],
    ids=lambda v: v if isinstance(v, str) else "",
)
async def test_every_model_round_trips(codec, full_name, sample):
    data = codec.encode(full_name, sample)
    schema_id, _ = unframe(data)
    assert schema_id == codec.schema_id(full_name)

    name, record = codec.decode(data)
    assert name == full_name
    assert record == sample.model_dump(mode="python")

    model = codec.decode_model(data, RECORD_TYPES[full_name])
    assert model == sample
    assert await codec.decode_model_async(data, RECORD_TYPES[full_name]) == sample
    # dicts encode exactly like models
    assert codec.encode(full_name, sample.model_dump()) == data


async def test_money_dates_and_times_keep_their_python_types(codec):
    payment = codec.decode_model(codec.encode("sinergi.Payment", PAYMENT_MYR), Payment)
    assert payment.original_amount == Decimal("12.50")
    assert payment.original_amount.as_tuple().exponent == -2  # scale 2, as in the schema
    assert str(payment.fx_rate) == "3725.123456"
    assert payment.trx_time == datetime(2025, 7, 21, 1, 2, 3, 456_000, tzinfo=UTC)
    assert payment.trx_time.utcoffset() == timedelta(0)
    assert isinstance(payment.amount_idr, int)

    idr = codec.decode_model(codec.encode("sinergi.Payment", PAYMENT_IDR), Payment)
    assert idr.fx_rate is None and idr.partner_reference_no is None and idr.channel_code is None

    exc = codec.decode_model(codec.encode("sinergi.ReconciliationException", EXCEPTION), ReconciliationException)
    assert exc.amount_idr == 2**63 - 1


async def test_decimals_are_quantized_to_the_schema_scale_exactly(codec):
    coarse = PAYMENT_MYR.model_copy(update={"original_amount": Decimal("12.5"), "fx_rate": Decimal("3725")})
    decoded = codec.decode_model(codec.encode("sinergi.Payment", coarse), Payment)
    assert str(decoded.original_amount) == "12.50" and str(decoded.fx_rate) == "3725.000000"

    too_fine = PAYMENT_MYR.model_copy(update={"original_amount": Decimal("12.505")})
    with pytest.raises(EncodeError, match="more than 2 decimal places"):
        codec.encode("sinergi.Payment", too_fine)

    too_big = PAYMENT_MYR.model_copy(update={"original_amount": Decimal("12345678901234567.00")})
    with pytest.raises(EncodeError, match="precision 18"):
        codec.encode("sinergi.Payment", too_big)

    as_float = PAYMENT_MYR.model_dump() | {"original_amount": 12.5}
    with pytest.raises(EncodeError, match="float"):
        codec.encode("sinergi.Payment", as_float)
    with pytest.raises(EncodeError, match="float"):
        codec.encode("sinergi.Payment", PAYMENT_MYR.model_dump() | {"amount_idr": 46564.0})
    as_str = PAYMENT_MYR.model_dump() | {"original_amount": "12.50"}
    with pytest.raises(EncodeError, match="needs Decimal"):
        codec.encode("sinergi.Payment", as_str)


async def test_aware_non_utc_datetimes_are_stored_as_the_same_instant(codec):
    wib = timezone(timedelta(hours=7))
    local = PAYMENT_MYR.model_copy(update={"trx_time": datetime(2025, 7, 21, 8, 2, 3, 456_000, tzinfo=wib)})
    decoded = codec.decode_model(codec.encode("sinergi.Payment", local), Payment)
    assert decoded.trx_time == local.trx_time
    assert decoded.trx_time.tzinfo is not None and decoded.trx_time.utcoffset() == timedelta(0)


async def test_naive_datetimes_are_refused(codec):
    naive = PAYMENT_MYR.model_dump() | {"trx_time": datetime(2025, 7, 21, 1, 2, 3)}
    with pytest.raises(EncodeError, match="naive datetime"):
        codec.encode("sinergi.Payment", naive)


async def test_encode_refuses_records_that_do_not_fit(codec):
    with pytest.raises(EncodeError):
        codec.encode("sinergi.Payment", PAYMENT_MYR.model_dump() | {"amount_idr": "46564"})
    with pytest.raises(EncodeError):
        codec.encode("sinergi.Payment", {"event_id": "only this"})
    with pytest.raises(EncodeError, match="cannot be written as"):
        codec.encode("sinergi.MemberRecord", PAYMENT_MYR)
    with pytest.raises(UnknownSchemaError):
        codec.encode("sinergi.Nope", {})


async def test_enum_symbols_outside_the_schema_are_refused(codec):
    record = SAMPLES["sinergi.MemberRecord"][0].model_dump() | {"status": "SUSPENDED"}
    with pytest.raises(EncodeError):
        codec.encode("sinergi.MemberRecord", record)


async def test_decode_model_checks_the_record_type(codec):
    data = codec.encode("sinergi.Payment", PAYMENT_MYR)
    with pytest.raises(DecodeError, match=r"not a sinergi\.MemberRecord"):
        codec.decode_model(data, MemberRecord)


async def test_decode_refuses_garbage(codec):
    schema_id = codec.schema_id("sinergi.Payment")
    with pytest.raises(DecodeError):
        codec.decode(frame(schema_id, b"\x02"))
    with pytest.raises(WireFormatError):
        codec.decode(b"\x00\x00")


async def test_unknown_writer_id_is_an_unknown_schema(codec):
    with pytest.raises(UnknownSchemaError, match="schema id 999"):
        await codec.decode_async(frame(999, b""))


async def test_encode_before_start_is_an_error(registry):
    schemas = load_schemas(SCHEMAS_DIR)
    codec = AvroCodec(registry, schemas, topic_value_schemas(schemas))
    assert not codec.started
    with pytest.raises(UnknownSchemaError, match="start"):
        codec.encode("sinergi.Payment", PAYMENT_MYR)
    await codec.start()
    assert codec.started


def test_start_sync_registers_without_an_event_loop():
    _, registry = embedded_registry()
    schemas = load_schemas(SCHEMAS_DIR)
    codec = AvroCodec(registry, schemas, topic_value_schemas(schemas))
    codec.start_sync()
    assert codec.started
    data = codec.encode("sinergi.Payment", PAYMENT_MYR)
    assert codec.decode_model(data, Payment) == PAYMENT_MYR
    registry.close_sync()


def test_codec_refuses_topics_without_a_local_schema(registry):
    with pytest.raises(UnknownSchemaError, match=r"sinergi\.NoSuchRecord"):
        AvroCodec(registry, load_schemas(SCHEMAS_DIR), {"nowhere.v1": "sinergi.NoSuchRecord"})


# --- schema evolution ------------------------------------------------------------------------------------


def _payment_v2() -> ParsedSchema:
    definition = json.loads((SCHEMAS_DIR / "sinergi.Payment.avsc").read_text())
    definition["fields"].append(
        {"name": "payer_note", "type": ["null", "string"], "default": None, "doc": "Free text from the payer."}
    )
    return parse_schema_str(json.dumps(definition))


async def test_newer_writer_schema_resolves_to_the_local_reader(registry, codec):
    v2 = _payment_v2()
    schemas = load_schemas(SCHEMAS_DIR) | {"sinergi.Payment": v2}
    newer = AvroCodec(registry, schemas, {"payments.v1": "sinergi.Payment"})
    await newer.start()  # registers version 2 of payments.v1-value: FULL_TRANSITIVE compatible
    assert newer.schema_id("sinergi.Payment") != codec.schema_id("sinergi.Payment")

    data = newer.encode("sinergi.Payment", PAYMENT_MYR.model_dump() | {"payer_note": "for Ibu"})
    # the old codec has never seen this writer id: it fetches it once, then reads with its own schema
    name, record = await codec.decode_async(data)
    assert name == "sinergi.Payment"
    assert "payer_note" not in record
    assert Payment.model_validate(record) == PAYMENT_MYR
    assert codec.decode_model(data, Payment) == PAYMENT_MYR  # cached now: the sync path needs no fetch

    # and the other way: the newer reader fills the new field's default for old data
    _, old_read_by_new = newer.decode(codec.encode("sinergi.Payment", PAYMENT_MYR))
    assert old_read_by_new["payer_note"] is None


async def test_incompatible_new_version_is_refused_at_start(registry, codec):
    definition = json.loads((SCHEMAS_DIR / "sinergi.Payment.avsc").read_text())
    definition["fields"].append({"name": "required_new", "type": "string", "doc": "no default"})
    schemas = load_schemas(SCHEMAS_DIR) | {"sinergi.Payment": parse_schema_str(json.dumps(definition))}
    with pytest.raises(RegistryError) as err:
        await AvroCodec(registry, schemas, {"payments.v1": "sinergi.Payment"}).start()
    assert (err.value.status, err.value.error_code) == (409, 409)


async def test_dates_before_the_epoch_and_far_future(codec):
    member = SAMPLES["sinergi.MemberRecord"][0].model_copy(
        update={"date_of_birth": date(1901, 1, 1), "coverage_end": date(2999, 12, 31)}
    )
    assert codec.decode_model(codec.encode("sinergi.MemberRecord", member), MemberRecord) == member
