"""Build a started AvroCodec for a process, from Settings."""

from __future__ import annotations

from services.avro import AvroCodec, RegistryClient, load_schemas, topic_value_schemas
from services.config import Settings


def build_codec(settings: Settings) -> AvroCodec:
    """Register (or look up) every local schema once, before the process starts its event loop.

    After this the codec is used synchronously only; an unseen writer id is fetched with the
    registry client's blocking call, once per id.
    """
    if settings.schema_registry_url is None:
        raise RuntimeError("SINERGI_SCHEMA_REGISTRY_URL is not set (`sinergi up` sets it in embedded mode)")
    schemas = load_schemas(settings.schemas_dir)
    codec = AvroCodec(RegistryClient(settings.schema_registry_url), schemas, topic_value_schemas(schemas))
    codec.start_sync()
    return codec
