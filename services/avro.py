"""Avro on the wire: local schemas, Confluent framing, the codec and a Schema Registry client.

The only module in the project that imports fastavro. Every canonical topic carries the Confluent
wire format: byte 0 (magic), the 4-byte big-endian schema id, then the Avro binary body.

- ``load_schemas`` reads ``schemas/*.avsc`` once and parses each schema once.
- ``AvroCodec`` registers the local schemas at start (subject ``<topic>-value``) and then encodes and
  decodes synchronously: the hot path (Faust agents) never awaits. A writer id it has not seen is
  fetched from the registry once and cached; the reader schema is always our local schema of the same
  full name, so records written with a newer (or older) compatible schema resolve to what this code
  knows.
- ``RegistryClient`` speaks the Confluent REST subset that Confluent, Karapace and Apicurio serve.

Money is exact: Avro ``long`` is integer rupiah, Avro ``decimal`` is ``Decimal``, quantized to the
schema's scale only when that loses nothing. Timestamps are aware UTC datetimes (naive ones are
refused), dates are ``datetime.date``.
"""

from __future__ import annotations

import io
import json
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from enum import Enum
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import fastavro
import httpx
from pydantic import BaseModel

from services.catalogue import ALL_TOPICS, Encoding, TopicSpec
from services.domain.models import RECORD_TYPES

__all__ = [
    "CONTENT_TYPE",
    "MAGIC",
    "AvroCodec",
    "AvroError",
    "DecimalField",
    "DecodeError",
    "EncodeError",
    "ParsedSchema",
    "RegisteredSchema",
    "RegistryClient",
    "RegistryError",
    "UnknownSchemaError",
    "WireFormatError",
    "frame",
    "load_schemas",
    "topic_value_schemas",
    "unframe",
    "validate_schema",
    "value_subject",
]

MAGIC = 0
HEADER_SIZE = 5
CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"
ACCEPT = "application/vnd.schemaregistry.v1+json, application/vnd.schemaregistry+json, application/json"

_HEADER = struct.Struct(">bI")
M = TypeVar("M", bound=BaseModel)


# --- errors --------------------------------------------------------------------------------------------


class AvroError(Exception):
    """Base of every error raised here."""


class WireFormatError(AvroError):
    """Bytes that are not a Confluent-framed Avro message."""


class UnknownSchemaError(AvroError):
    """A schema name or id this codec cannot use."""


class EncodeError(AvroError):
    """A record that does not fit its schema (wrong type, naive datetime, inexact decimal...)."""


class DecodeError(AvroError):
    """A framed body that does not decode with its writer schema."""


class RegistryError(AvroError):
    """An error answer from the Schema Registry (or no answer: status 0, error_code -1)."""

    def __init__(self, status: int, error_code: int, message: str) -> None:
        super().__init__(f"schema registry: HTTP {status}, error_code {error_code}: {message}")
        self.status = status
        self.error_code = error_code
        self.message = message


# --- local schemas ---------------------------------------------------------------------------------------


_QUANTA: dict[int, Decimal] = {}


@dataclass(frozen=True)
class DecimalField:
    """A top-level decimal field: values are quantized to ``scale`` (exactly) before writing."""

    name: str
    precision: int
    scale: int

    @property
    def quantum(self) -> Decimal:
        return _QUANTA.setdefault(self.scale, Decimal(1).scaleb(-self.scale))


@dataclass(frozen=True)
class ParsedSchema:
    full_name: str
    schema_str: str  # compact JSON of the .avsc, exactly what is registered
    definition: dict[str, Any] = field(repr=False)  # the JSON as written
    parsed: Any = field(repr=False)  # fastavro's parsed form: parse once, reuse for every record
    decimals: tuple[DecimalField, ...] = ()
    path: Path | None = None


def full_name_of(definition: Mapping[str, Any]) -> str:
    name = str(definition["name"])
    namespace = definition.get("namespace")
    if "." in name or not namespace:
        return name
    return f"{namespace}.{name}"


def _decimal_of(schema: Any) -> tuple[int, int] | None:
    if isinstance(schema, dict) and schema.get("logicalType") == "decimal":
        return int(schema["precision"]), int(schema.get("scale", 0))
    return None


def _top_level_decimals(definition: Mapping[str, Any]) -> tuple[DecimalField, ...]:
    found: list[DecimalField] = []
    for fld in definition.get("fields", []):
        branches = fld["type"] if isinstance(fld["type"], list) else [fld["type"]]
        for branch in branches:
            dec = _decimal_of(branch)
            if dec is not None:
                found.append(DecimalField(fld["name"], *dec))
    return tuple(found)


def parse_schema_str(schema_str: str) -> ParsedSchema:
    definition = json.loads(schema_str)
    if not isinstance(definition, dict) or definition.get("type") != "record":
        raise UnknownSchemaError("only record schemas are used as topic values")
    return ParsedSchema(
        full_name=full_name_of(definition),
        schema_str=json.dumps(definition, separators=(",", ":"), ensure_ascii=False),
        definition=definition,
        parsed=fastavro.parse_schema(definition),
        decimals=_top_level_decimals(definition),
    )


def validate_schema(schema_str: str) -> None:
    """Raise AvroError unless ``schema_str`` is a valid Avro schema (fastavro also checks defaults)."""
    try:
        fastavro.parse_schema(json.loads(schema_str))
    except Exception as exc:  # fastavro raises SchemaParseException, ValueError, TypeError, KeyError...
        raise AvroError(f"invalid Avro schema: {exc}") from exc


def load_schemas(schemas_dir: Path | str) -> dict[str, ParsedSchema]:
    """Every ``<full name>.avsc`` in ``schemas_dir``, keyed by full name, each parsed once."""
    out: dict[str, ParsedSchema] = {}
    for path in sorted(Path(schemas_dir).glob("*.avsc")):
        schema = parse_schema_str(path.read_text(encoding="utf-8"))
        if path.name != f"{schema.full_name}.avsc":
            raise ValueError(f"{path.name}: file name must be the record's full name, {schema.full_name}.avsc")
        out[schema.full_name] = ParsedSchema(
            schema.full_name, schema.schema_str, schema.definition, schema.parsed, schema.decimals, path
        )
    return out


def value_subject(topic: str) -> str:
    """TopicNameStrategy: the value schema of ``topic`` lives under ``<topic>-value``."""
    return f"{topic}-value"


def topic_value_schemas(
    schemas: Mapping[str, ParsedSchema], specs: tuple[TopicSpec, ...] = ALL_TOPICS
) -> dict[str, str]:
    """topic -> value schema full name, for every Avro topic of the catalogue whose schema exists here."""
    return {
        spec.name: spec.value_schema
        for spec in specs
        if spec.encoding is Encoding.AVRO and spec.value_schema is not None and spec.value_schema in schemas
    }


# --- wire format -----------------------------------------------------------------------------------------


def frame(schema_id: int, body: bytes) -> bytes:
    """Confluent framing: magic byte 0, 4-byte big-endian schema id, Avro binary body."""
    return _HEADER.pack(MAGIC, schema_id) + body


def unframe(data: bytes | bytearray | memoryview) -> tuple[int, memoryview]:
    """(schema id, body) of a framed message; WireFormatError when it is not one."""
    if len(data) < HEADER_SIZE:
        raise WireFormatError(f"{len(data)} bytes: shorter than the 5-byte Confluent header")
    magic, schema_id = _HEADER.unpack_from(data, 0)
    if magic != MAGIC:
        raise WireFormatError(f"magic byte {magic}, expected {MAGIC}: not Confluent-framed Avro")
    return schema_id, memoryview(data)[HEADER_SIZE:]


# --- pydantic / dict -> Avro datum ------------------------------------------------------------------------


_AS_IS = frozenset({str, int, bytes, bool, type(None), Decimal, date})


def _to_datum(value: Any) -> Any:
    cls = value.__class__
    if cls in _AS_IS:
        return value
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise EncodeError(f"naive datetime {value.isoformat()}: timestamps must be aware (UTC)")
        return value
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, float):  # no schema here has float/double: money and counts are exact
        raise EncodeError(f"float {value!r}: use int (rupiah) or Decimal")
    if isinstance(value, list):
        return [_to_datum(v) for v in value]
    if isinstance(value, dict):
        return {k: _to_datum(v) for k, v in value.items()}
    return value


def _quantize(name: str, value: Any, dec: DecimalField) -> Decimal:
    if not isinstance(value, Decimal):  # ints are exact; float/str are refused
        if isinstance(value, int) and not isinstance(value, bool):
            value = Decimal(value)
        else:
            raise EncodeError(f"{name}: decimal field needs Decimal or int, got {type(value).__name__}")
    sign_digits_exp = value.as_tuple()
    if sign_digits_exp.exponent == -dec.scale:  # already at the schema's scale: nothing to do
        q = value
    else:
        try:
            q = value.quantize(dec.quantum)
        except InvalidOperation as exc:
            raise EncodeError(f"{name}: {value} does not fit decimal({dec.precision},{dec.scale})") from exc
        if q != value:
            raise EncodeError(f"{name}: {value} has more than {dec.scale} decimal places")
        sign_digits_exp = q.as_tuple()
    if len(sign_digits_exp.digits) > dec.precision:
        raise EncodeError(f"{name}: {value} exceeds precision {dec.precision}")
    return q


def to_datum(schema: ParsedSchema, record: Mapping[str, Any] | BaseModel) -> dict[str, Any]:
    """The Avro datum for ``record``: enums as symbols, decimals quantized exactly, aware datetimes."""
    raw = record.model_dump() if isinstance(record, BaseModel) else dict(record)
    datum: dict[str, Any] = _to_datum(raw)
    for dec in schema.decimals:
        value = datum.get(dec.name)
        if value is not None:
            datum[dec.name] = _quantize(dec.name, value, dec)
    return datum


# --- registry client ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RegisteredSchema:
    subject: str
    id: int
    version: int
    schema_str: str


def _raise_for(response: httpx.Response) -> Any:
    if response.is_success:
        return response.json() if response.content else None
    try:
        body = response.json()
        code = int(body.get("error_code", response.status_code))
        message = str(body.get("message", response.reason_phrase))
    except (ValueError, AttributeError, TypeError):
        code, message = -1, response.text[:200] or response.reason_phrase
    raise RegistryError(response.status_code, code, message)


def _subject_path(subject: str) -> str:
    return quote(subject, safe="")


class RegistryClient:
    """Async client of a Confluent-compatible Schema Registry (Confluent, Karapace, Apicurio ccompat).

    ``get_by_id_sync`` is the one blocking call, for the codec's synchronous decode path when a message
    names a writer schema id it has not met yet (once per id per process).
    """

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
        sync_transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._headers = {"Accept": ACCEPT}
        self._client = httpx.AsyncClient(
            base_url=self.base_url, timeout=timeout, transport=transport, headers=self._headers
        )
        self._timeout = timeout
        self._sync_transport = sync_transport
        self._sync: httpx.Client | None = None

    async def __aenter__(self) -> RegistryClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()
        self.close_sync()

    async def _request(self, method: str, url: str, body: Mapping[str, Any] | None = None) -> Any:
        try:
            if body is None:
                response = await self._client.request(method, url)
            else:
                response = await self._client.request(
                    method, url, content=json.dumps(body), headers={"Content-Type": CONTENT_TYPE}
                )
        except httpx.HTTPError as exc:
            raise RegistryError(0, -1, f"{method} {self.base_url}{url}: {exc!r}") from exc
        return _raise_for(response)

    async def register(self, subject: str, schema_str: str) -> int:
        """Register (idempotent) under ``subject``; the global schema id."""
        body = await self._request("POST", f"/subjects/{_subject_path(subject)}/versions", {"schema": schema_str})
        return int(body["id"])

    async def lookup(self, subject: str, schema_str: str) -> RegisteredSchema:
        body = await self._request("POST", f"/subjects/{_subject_path(subject)}", {"schema": schema_str})
        return RegisteredSchema(body.get("subject", subject), int(body["id"]), int(body["version"]), body["schema"])

    async def get_by_id(self, schema_id: int) -> str:
        body = await self._request("GET", f"/schemas/ids/{int(schema_id)}")
        return str(body["schema"])

    async def latest(self, subject: str) -> RegisteredSchema:
        body = await self._request("GET", f"/subjects/{_subject_path(subject)}/versions/latest")
        return RegisteredSchema(body["subject"], int(body["id"]), int(body["version"]), body["schema"])

    async def check_compatibility(self, subject: str, schema_str: str) -> bool:
        """Whether ``schema_str`` is compatible with the subject's latest version (True for a new subject)."""
        try:
            body = await self._request(
                "POST",
                f"/compatibility/subjects/{_subject_path(subject)}/versions/latest",
                {"schema": schema_str},
            )
        except RegistryError as exc:
            if exc.error_code in (40401, 40402):  # no such subject / no version yet: nothing to break
                return True
            raise
        return bool(body["is_compatible"])

    async def subjects(self) -> list[str]:
        return [str(s) for s in await self._request("GET", "/subjects")]

    # blocking variants: for start-up outside an event loop and the codec's synchronous decode path

    def _request_sync(self, method: str, url: str, body: Mapping[str, Any] | None = None) -> Any:
        if self._sync is None:
            self._sync = httpx.Client(
                base_url=self.base_url,
                timeout=self._timeout,
                transport=self._sync_transport,
                headers=self._headers,
            )
        try:
            if body is None:
                response = self._sync.request(method, url)
            else:
                response = self._sync.request(
                    method, url, content=json.dumps(body), headers={"Content-Type": CONTENT_TYPE}
                )
        except httpx.HTTPError as exc:
            raise RegistryError(0, -1, f"{method} {self.base_url}{url}: {exc!r}") from exc
        return _raise_for(response)

    def register_sync(self, subject: str, schema_str: str) -> int:
        body = self._request_sync("POST", f"/subjects/{_subject_path(subject)}/versions", {"schema": schema_str})
        return int(body["id"])

    def get_by_id_sync(self, schema_id: int) -> str:
        return str(self._request_sync("GET", f"/schemas/ids/{int(schema_id)}")["schema"])

    def close_sync(self) -> None:
        """Close the blocking client only (aclose closes both)."""
        if self._sync is not None:
            self._sync.close()
            self._sync = None


# --- codec -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Writer:
    full_name: str
    parsed: Any  # the writer schema, parsed
    reader: Any  # our local schema of the same name, or None when identical to the writer (fast path)


class AvroCodec:
    """Encode/decode canonical records in the Confluent wire format.

    ``await start()`` (or ``start_sync()`` before any event loop runs) once: registers every local
    schema for the given topics and learns the ids. After that ``encode``/``decode``/``decode_model``
    are synchronous; ``decode`` fetches a writer id it has never seen with one blocking request (once
    per id per process), ``decode_async`` does the same without blocking.
    """

    def __init__(
        self,
        registry: RegistryClient,
        schemas: Mapping[str, ParsedSchema],
        topics: Mapping[str, str],
    ) -> None:
        missing = sorted({name for name in topics.values() if name not in schemas})
        if missing:
            raise UnknownSchemaError(f"no local schema for {', '.join(missing)}")
        self._registry = registry
        self._schemas = dict(schemas)
        self._topics = dict(topics)
        self._ids: dict[str, int] = {}  # full name -> id we write with
        self._writers: dict[int, _Writer] = {}  # every id we can read
        self._names_of_models: dict[type[BaseModel], str] = {m: n for n, m in RECORD_TYPES.items()}

    @property
    def started(self) -> bool:
        return set(self._topics.values()) <= self._ids.keys()

    async def start(self) -> None:
        """Register every local schema for its topics (idempotent) and remember the ids."""
        for topic, full_name in self._topics.items():
            self._learn(
                full_name, await self._registry.register(value_subject(topic), self._schemas[full_name].schema_str)
            )

    def start_sync(self) -> None:
        """start() with blocking calls: for a process that has no event loop running yet (no asyncio.run,
        whose loop would strand the async client's pooled connections)."""
        for topic, full_name in self._topics.items():
            self._learn(
                full_name, self._registry.register_sync(value_subject(topic), self._schemas[full_name].schema_str)
            )

    def _learn(self, full_name: str, schema_id: int) -> None:
        self._ids.setdefault(full_name, schema_id)
        self._writers[schema_id] = _Writer(full_name, self._schemas[full_name].parsed, None)

    def schema_id(self, full_name: str) -> int:
        try:
            return self._ids[full_name]
        except KeyError:
            raise UnknownSchemaError(f"{full_name}: not registered by this codec (start() awaited?)") from None

    # encode ------------------------------------------------------------------------------------------------

    def encode(self, full_name: str, record: Mapping[str, Any] | BaseModel) -> bytes:
        schema_id = self.schema_id(full_name)
        schema = self._schemas[full_name]
        if isinstance(record, BaseModel):
            expected = self._names_of_models.get(type(record))
            if expected is not None and expected != full_name:
                raise EncodeError(f"a {expected} record cannot be written as {full_name}")
        datum = to_datum(schema, record)
        out = io.BytesIO()
        out.write(_HEADER.pack(MAGIC, schema_id))
        try:
            fastavro.schemaless_writer(out, schema.parsed, datum)
        except (ValueError, TypeError, KeyError, AttributeError, OverflowError) as exc:
            raise EncodeError(f"{full_name}: {exc}") from exc
        return out.getvalue()

    # decode ------------------------------------------------------------------------------------------------

    def _writer_from(self, schema_id: int, schema_str: str) -> _Writer:
        writer = parse_schema_str(schema_str)
        local = self._schemas.get(writer.full_name)
        reader = None
        if local is not None and local.definition != writer.definition:
            reader = local.parsed
        entry = _Writer(writer.full_name, writer.parsed, reader)
        self._writers[schema_id] = entry
        return entry

    def _read(self, entry: _Writer, data: bytes | bytearray | memoryview) -> tuple[str, dict[str, Any]]:
        buf = io.BytesIO(data)
        buf.seek(HEADER_SIZE)
        try:
            record = fastavro.schemaless_reader(buf, entry.parsed, entry.reader)
        except Exception as exc:  # fastavro raises many types (EOFError, SchemaResolutionError, ...)
            raise DecodeError(f"{entry.full_name}: {exc!r}") from exc
        if not isinstance(record, dict):
            raise DecodeError(f"{entry.full_name}: decoded a {type(record).__name__}, expected a record")
        return entry.full_name, record

    def decode(self, data: bytes | bytearray | memoryview) -> tuple[str, dict[str, Any]]:
        """(full name, record dict). An unseen writer id is fetched once, blocking; see decode_async."""
        schema_id, _ = unframe(data)
        entry = self._writers.get(schema_id)
        if entry is None:
            entry = self._writer_from(schema_id, self._fetch_sync(schema_id))
        return self._read(entry, data)

    async def decode_async(self, data: bytes | bytearray | memoryview) -> tuple[str, dict[str, Any]]:
        """Like decode, but an unseen writer id is fetched without blocking the event loop."""
        schema_id, _ = unframe(data)
        entry = self._writers.get(schema_id)
        if entry is None:
            entry = self._writer_from(schema_id, await self._fetch(schema_id))
        return self._read(entry, data)

    async def resolve(self, schema_id: int) -> str:
        """Learn a writer schema id ahead of decoding; its record full name."""
        entry = self._writers.get(schema_id)
        if entry is None:
            entry = self._writer_from(schema_id, await self._fetch(schema_id))
        return entry.full_name

    def decode_model(self, data: bytes | bytearray | memoryview, model_cls: type[M]) -> M:
        full_name, record = self.decode(data)
        return self._to_model(full_name, record, model_cls)

    async def decode_model_async(self, data: bytes | bytearray | memoryview, model_cls: type[M]) -> M:
        full_name, record = await self.decode_async(data)
        return self._to_model(full_name, record, model_cls)

    def _to_model(self, full_name: str, record: dict[str, Any], model_cls: type[M]) -> M:
        expected = self._names_of_models.get(model_cls)
        if expected is not None and expected != full_name:
            raise DecodeError(f"message holds a {full_name}, not a {expected}")
        return model_cls.model_validate(record)

    async def _fetch(self, schema_id: int) -> str:
        try:
            return await self._registry.get_by_id(schema_id)
        except RegistryError as exc:
            raise UnknownSchemaError(f"schema id {schema_id}: {exc.message}") from exc

    def _fetch_sync(self, schema_id: int) -> str:
        try:
            return self._registry.get_by_id_sync(schema_id)
        except RegistryError as exc:
            raise UnknownSchemaError(f"schema id {schema_id}: {exc.message}") from exc
