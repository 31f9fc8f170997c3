"""The embedded schema registry: Confluent REST semantics in-process, and a stock Confluent client
decoding our codec's bytes over real HTTP on 127.0.0.1."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.serialization import MessageField, SerializationContext
from served import loopback_socket, served

from connectors.registry.app import SchemaStore, create_registry_app, preload
from services.avro import (
    CONTENT_TYPE,
    AvroCodec,
    RegistryClient,
    RegistryError,
    load_schemas,
    topic_value_schemas,
)
from services.config import Settings
from services.domain.models import MemberRecord, MemberStatus, ParticipantType, Payment, Program, Sex

SCHEMAS_DIR = Settings().schemas_dir
PAYMENT_SCHEMA = (SCHEMAS_DIR / "sinergi.Payment.avsc").read_text()

PAYMENT = Payment(
    event_id="c0ffee00-1234-5abc-8def-0123456789ab",
    participant_id="381726354019283746",
    bank_id="MAYBANK_MY",
    partner_service_id="   88123",
    virtual_account_no="   88123381726354019283746",
    payment_request_id="MBB20250721000017",
    external_id="41807553358950093184",
    amount_idr=46_564,
    original_amount=Decimal("12.50"),
    original_currency="MYR",
    fx_rate=Decimal("3725.123456"),
    trx_time=datetime(2025, 7, 21, 1, 2, 3, 456_000, tzinfo=UTC),
    trx_utc_offset_minutes=480,
    channel_code="6011",
    received_at=datetime(2025, 7, 21, 1, 2, 4, 1_000, tzinfo=UTC),
)

MEMBER = MemberRecord(
    record_id="381726354019283746:2",
    participant_id="381726354019283746",
    version=2,
    status=MemberStatus.ACTIVE,
    office_code="KBRI_KUALA_LUMPUR",
    full_name="Siti Nurhaliza binti Ahmad",
    pii_encrypted=b"gAAAAAB-token",
    date_of_birth=date(1995, 3, 14),
    sex=Sex.F,
    participant_type=ParticipantType.PLACED,
    destination_country="MY",
    programs=[Program.JKK, Program.JKM],
    customer_no="381726354019283746",
    bill_amount_idr=370_000,
    paid_amount_idr=370_000,
    bill_issued_at=datetime(2025, 7, 20, 3, 15, 43, tzinfo=UTC),
    bill_expires_on=date(2025, 8, 19),
    coverage_start=date(2025, 8, 1),
    coverage_end=date(2027, 8, 31),
    enrollment_event_id="6f1c2e4a-8d0b-5c3e-9a71-2b4d6f8a0c1e",
    payment_event_ids=[PAYMENT.event_id],
    caused_by_event_id=PAYMENT.event_id,
    updated_at=datetime(2025, 7, 21, 2, 0, 0, 300_000, tzinfo=UTC),
)


def _with_field(schema_str: str, fld: dict[str, Any]) -> str:
    schema = json.loads(schema_str)
    schema["fields"].append(fld)
    return json.dumps(schema)


@pytest.fixture
def store() -> SchemaStore:
    return SchemaStore()


@pytest.fixture
async def http(store):
    transport = httpx.ASGITransport(app=create_registry_app(store))
    async with httpx.AsyncClient(transport=transport, base_url="http://registry.test") as client:
        yield client


@pytest.fixture
async def registry(store):
    client = RegistryClient("http://registry.test", transport=httpx.ASGITransport(app=create_registry_app(store)))
    yield client
    await client.aclose()


def _post(schema: str) -> dict[str, Any]:
    return {"content": json.dumps({"schema": schema}), "headers": {"Content-Type": CONTENT_TYPE}}


# --- REST semantics, in-process ----------------------------------------------------------------------------


async def test_register_is_idempotent_and_ids_are_global(registry):
    first = await registry.register("payments.v1-value", PAYMENT_SCHEMA)
    again = await registry.register("payments.v1-value", PAYMENT_SCHEMA)
    # whitespace and key order do not make a new schema
    reformatted = json.dumps(json.loads(PAYMENT_SCHEMA), indent=4, sort_keys=True)
    assert await registry.register("payments.v1-value", reformatted) == first == again
    # the same schema under another subject keeps its id
    assert await registry.register("payments.replay-value", PAYMENT_SCHEMA) == first
    assert await registry.subjects() == ["payments.replay-value", "payments.v1-value"]
    latest = await registry.latest("payments.v1-value")
    assert (latest.subject, latest.id, latest.version) == ("payments.v1-value", first, 1)
    assert json.loads(await registry.get_by_id(first)) == json.loads(PAYMENT_SCHEMA)


async def test_schemas_differing_only_in_logical_type_get_different_ids(registry):
    first = await registry.register("a-value", PAYMENT_SCHEMA)
    other_scale = PAYMENT_SCHEMA.replace('"scale": 6', '"scale": 8')
    assert other_scale != PAYMENT_SCHEMA
    assert await registry.register("b-value", other_scale) != first


async def test_compatible_evolution_gets_a_new_version(registry):
    v1 = await registry.register("payments.v1-value", PAYMENT_SCHEMA)
    v2_schema = _with_field(PAYMENT_SCHEMA, {"name": "note", "type": ["null", "string"], "default": None})
    assert await registry.check_compatibility("payments.v1-value", v2_schema) is True
    v2 = await registry.register("payments.v1-value", v2_schema)
    assert v2 != v1
    assert (await registry.latest("payments.v1-value")).version == 2
    found = await registry.lookup("payments.v1-value", PAYMENT_SCHEMA)
    assert (found.id, found.version) == (v1, 1)


async def test_incompatible_schema_is_a_409(registry, http):
    await registry.register("payments.v1-value", PAYMENT_SCHEMA)
    bad = _with_field(PAYMENT_SCHEMA, {"name": "must_have", "type": "string"})
    assert await registry.check_compatibility("payments.v1-value", bad) is False
    with pytest.raises(RegistryError) as err:
        await registry.register("payments.v1-value", bad)
    assert (err.value.status, err.value.error_code) == (409, 409)
    assert "incompatible" in err.value.message

    answer = await http.post("/compatibility/subjects/payments.v1-value/versions/latest?verbose=true", **_post(bad))
    assert answer.status_code == 200
    assert answer.json()["is_compatible"] is False and answer.json()["messages"]


async def test_compatibility_of_a_new_subject_is_true(registry):
    assert await registry.check_compatibility("brand-new-value", PAYMENT_SCHEMA) is True


async def test_not_found_error_codes(registry, http):
    await registry.register("payments.v1-value", PAYMENT_SCHEMA)
    cases = [
        ("GET", "/schemas/ids/999", 404, 40403),
        ("GET", "/schemas/ids/999/versions", 404, 40403),
        ("GET", "/subjects/nope/versions", 404, 40401),
        ("GET", "/subjects/nope/versions/latest", 404, 40401),
        ("GET", "/subjects/payments.v1-value/versions/7", 404, 40402),
        ("GET", "/subjects/payments.v1-value/versions/zero", 422, 42202),
        ("GET", "/no/such/path", 404, 404),
    ]
    for method, path, status, code in cases:
        answer = await http.request(method, path)
        assert (answer.status_code, answer.json()["error_code"]) == (status, code), path
        assert answer.json()["message"]
        assert answer.headers["content-type"].startswith(CONTENT_TYPE)

    with pytest.raises(RegistryError) as err:
        await registry.get_by_id(999)
    assert (err.value.status, err.value.error_code) == (404, 40403)
    with pytest.raises(RegistryError) as err:
        await registry.lookup("payments.v1-value", _with_field(PAYMENT_SCHEMA, {"name": "x", "type": "int"}))
    assert err.value.error_code == 40403
    with pytest.raises(RegistryError) as err:
        await registry.lookup("nope", PAYMENT_SCHEMA)
    assert err.value.error_code == 40401


async def test_invalid_schemas_are_422_42201(http):
    for schema in ['{"type": "record", "name": "X", "fields": [{"name": "a", "type": "strng"}]}', "not json"]:
        answer = await http.post("/subjects/x-value/versions", **_post(schema))
        assert (answer.status_code, answer.json()["error_code"]) == (422, 42201)
    bad_default = '{"type":"record","name":"X","fields":[{"name":"a","type":"string","default":null}]}'
    answer = await http.post("/subjects/x-value/versions", **_post(bad_default))
    assert (answer.status_code, answer.json()["error_code"]) == (422, 42201)
    answer = await http.post(
        "/subjects/x-value/versions",
        content=json.dumps({"schema": "{}", "schemaType": "PROTOBUF"}),
        headers={"Content-Type": CONTENT_TYPE},
    )
    assert answer.json()["error_code"] == 42201


async def test_response_shapes(http, store):
    preload(store, SCHEMAS_DIR)
    subjects = (await http.get("/subjects")).json()
    assert "payments.v1-value" in subjects and "members.v1-value" in subjects

    version = (await http.get("/subjects/payments.v1-value/versions/latest")).json()
    assert set(version) == {"subject", "version", "id", "schema"}
    assert (await http.get("/subjects/payments.v1-value/versions/1")).json() == version
    assert (await http.get("/subjects/payments.v1-value/versions/-1")).json() == version
    assert (await http.get("/subjects/payments.v1-value/versions")).json() == [1]
    assert (await http.get(f"/schemas/ids/{version['id']}")).json() == {"schema": version["schema"]}
    assert (await http.get(f"/schemas/ids/{version['id']}/schema")).json() == json.loads(PAYMENT_SCHEMA)

    member_id = (await http.get("/subjects/members.v1-value/versions/latest")).json()["id"]
    pairs = (await http.get(f"/schemas/ids/{member_id}/versions")).json()
    assert sorted(pairs, key=lambda p: p["subject"]) == [
        {"subject": "core.member-records.v1-value", "version": 1},
        {"subject": "members.v1-value", "version": 1},
    ]
    assert (await http.get(f"/schemas/ids/{member_id}/subjects")).json() == [
        "core.member-records.v1-value",
        "members.v1-value",
    ]

    lookup = await http.post("/subjects/payments.v1-value?normalize=false&deleted=true", **_post(PAYMENT_SCHEMA))
    assert lookup.json() == version
    register = await http.post("/subjects/payments.v1-value/versions?normalize=False", **_post(PAYMENT_SCHEMA))
    assert register.json() == {"id": version["id"]}

    assert (await http.get("/config")).json() == {"compatibilityLevel": "FULL_TRANSITIVE"}
    assert (await http.get("/config/payments.v1-value")).json() == {"compatibilityLevel": "FULL_TRANSITIVE"}
    put = await http.put("/config/scratch-value", json={"compatibility": "none"})
    assert put.json() == {"compatibility": "NONE"}
    assert (await http.get("/config/scratch-value")).json() == {"compatibilityLevel": "NONE"}
    bad = await http.put("/config/scratch-value", json={"compatibility": "SOMETIMES"})
    assert (bad.status_code, bad.json()["error_code"]) == (422, 42203)
    assert (await http.get("/mode")).json() == {"mode": "READWRITE"}
    no_associations = await http.get("/associations/resources/-/payments.v1?resourceType=topic&associationType=value")
    assert (no_associations.status_code, no_associations.json()) == (200, [])
    assert (await http.get("/schemas/types")).json() == ["AVRO"]


async def test_subject_level_none_allows_any_change(http, registry):
    await http.put("/config/scratch-value", json={"compatibility": "NONE"})
    await registry.register("scratch-value", PAYMENT_SCHEMA)
    breaking = _with_field(PAYMENT_SCHEMA, {"name": "must_have", "type": "string"})
    assert await registry.register("scratch-value", breaking) > 0


def test_preload_registers_every_local_schema(store):
    registered = preload(store, SCHEMAS_DIR)
    schemas = load_schemas(SCHEMAS_DIR)
    assert {store.schema_by_id(i) for i in registered.values()} == {s.schema_str for s in schemas.values()}
    assert registered["members.v1-value"] == registered["core.member-records.v1-value"]
    assert preload(store, SCHEMAS_DIR) == registered  # idempotent


# --- a stock Confluent client against the registry served by uvicorn on loopback ---------------------------


@pytest.fixture
def served_registry(monkeypatch) -> Iterator[tuple[str, SchemaStore]]:
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    store = SchemaStore()
    preload(store, SCHEMAS_DIR)
    sock = loopback_socket()
    port = sock.getsockname()[1]
    with served(create_registry_app(store), sock, lifespan="off"):
        yield f"http://127.0.0.1:{port}", store


async def test_stock_confluent_client_decodes_our_bytes(served_registry):
    url, _ = served_registry
    schemas = load_schemas(SCHEMAS_DIR)
    registry = RegistryClient(url)
    codec = AvroCodec(registry, schemas, topic_value_schemas(schemas))
    try:
        await codec.start()
        payment_bytes = codec.encode("sinergi.Payment", PAYMENT)
        member_bytes = codec.encode("sinergi.MemberRecord", MEMBER)
    finally:
        await registry.aclose()

    client = SchemaRegistryClient({"url": url})
    try:
        deserializer = AvroDeserializer(client)
        payment = deserializer(payment_bytes, SerializationContext("payments.v1", MessageField.VALUE))
        assert Payment.model_validate(payment) == PAYMENT
        assert payment["original_amount"] == Decimal("12.50") and payment["fx_rate"] == Decimal("3725.123456")
        assert payment["trx_time"] == PAYMENT.trx_time

        member = deserializer(member_bytes, SerializationContext("core.member-records.v1", MessageField.VALUE))
        assert MemberRecord.model_validate(member) == MEMBER

        # the reader-schema path (use.latest.version) asks for the latest version and looks the writer up
        latest = AvroDeserializer(client, conf={"use.latest.version": True})
        assert (
            Payment.model_validate(latest(payment_bytes, SerializationContext("payments.v1", MessageField.VALUE)))
            == PAYMENT
        )

        # the rest of the client surface serdes and tools touch
        assert client.get_compatibility() == "FULL_TRANSITIVE"
        assert client.get_compatibility("payments.v1-value") == "FULL_TRANSITIVE"
        assert "payments.v1-value" in client.get_subjects()
        assert client.get_versions("payments.v1-value") == [1]
        registered = client.get_latest_version("payments.v1-value")
        assert registered.version == 1
        assert registered.schema_id == int.from_bytes(payment_bytes[1:5], "big")
        assert client.get_version("payments.v1-value", 1).schema_id == registered.schema_id
        assert [(v.subject, v.version) for v in client.get_schema_versions(registered.schema_id)] == [
            ("payments.v1-value", 1)
        ]
        assert client.test_compatibility("payments.v1-value", Schema(PAYMENT_SCHEMA, "AVRO")) is True
        assert client.lookup_schema("payments.v1-value", Schema(PAYMENT_SCHEMA, "AVRO")).version == 1
        with pytest.raises(SchemaRegistryError) as err:
            client.get_schema(424242)
        assert (err.value.http_status_code, err.value.error_code) == (404, 40403)
    finally:
        client.close()


async def test_our_codec_decodes_a_stock_serializer_and_fetches_unknown_ids_blocking(served_registry):
    url, _ = served_registry
    client = SchemaRegistryClient({"url": url})
    try:
        ctx = SerializationContext("payments.v1", MessageField.VALUE)
        serializer = AvroSerializer(client, PAYMENT_SCHEMA)  # auto-registers: same schema, same id
        confluent_bytes = serializer(PAYMENT.model_dump(mode="python"), ctx)
        assert confluent_bytes is not None

        # a newer writer version registered by someone else: the codec has never seen its id
        v2 = _with_field(PAYMENT_SCHEMA, {"name": "note", "type": ["null", "string"], "default": None})
        newer = AvroSerializer(client, v2)
        newer_bytes = newer(PAYMENT.model_dump(mode="python") | {"note": "x"}, ctx)
        assert newer_bytes is not None and newer_bytes[1:5] != confluent_bytes[1:5]
    finally:
        client.close()

    schemas = load_schemas(SCHEMAS_DIR)
    registry = RegistryClient(url)
    codec = AvroCodec(registry, schemas, {"payments.v1": "sinergi.Payment"})
    try:
        await codec.start()
        assert codec.decode_model(confluent_bytes, Payment) == PAYMENT
        # sync path, unknown id: one blocking GET /schemas/ids/{id}, then resolution to our reader schema
        assert codec.decode_model(newer_bytes, Payment) == PAYMENT
    finally:
        await registry.aclose()
