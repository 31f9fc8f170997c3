"""Embedded Schema Registry: the Confluent REST subset that clients and serdes use, in memory.

Same paths, JSON shapes, content type and error codes as Confluent's registry, so a stock
``confluent_kafka.schema_registry.SchemaRegistryClient`` with ``AvroSerializer``/``AvroDeserializer``
works against it. Avro only; schema references are refused (the project's schemas are self-contained).

Serve with uvicorn: ``uvicorn.run(create_registry_app(store), host=settings.http_host,
port=settings.registry_port)`` after ``preload(store, settings.schemas_dir)``.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from connectors.registry.store import (
    InvalidSchemaStoreError,
    SchemaStore,
    StoreError,
    preload,
)
from services.avro import CONTENT_TYPE

__all__ = ["RegistryJSONResponse", "SchemaStore", "create_registry_app", "preload"]


class RegistryJSONResponse(JSONResponse):
    media_type = CONTENT_TYPE


def _error(status: int, error_code: int, message: str) -> RegistryJSONResponse:
    return RegistryJSONResponse({"error_code": error_code, "message": message}, status_code=status)


async def _schema_body(request: Request) -> str:
    """The "schema" of a register/lookup/compatibility request body; Avro only, no references."""
    raw = await request.body()
    try:
        body = json.loads(raw) if raw else None
    except ValueError as exc:
        raise _BadRequest(f"Unrecognized JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise _BadRequest('Request body must be a JSON object with a "schema" field')
    schema_type = body.get("schemaType") or "AVRO"
    if str(schema_type).upper() != "AVRO":
        raise InvalidSchemaStoreError(f"Invalid schema: unsupported schema type {schema_type}; only AVRO")
    if body.get("references"):
        raise InvalidSchemaStoreError("Invalid schema: schema references are not supported here")
    schema = body.get("schema")
    if not isinstance(schema, str) or not schema.strip():
        raise InvalidSchemaStoreError("Empty schema")
    return schema


class _BadRequest(Exception):
    pass


def _true(value: str | None) -> bool:
    return str(value).lower() == "true"


def create_registry_app(store: SchemaStore | None = None) -> FastAPI:
    """The registry as an ASGI app over ``store`` (a new empty one when None); ``app.state.store``."""
    store = store if store is not None else SchemaStore()
    app = FastAPI(
        title="sinergi embedded schema registry",
        description="Confluent Schema Registry REST subset (Avro).",
        default_response_class=RegistryJSONResponse,
    )
    app.state.store = store

    @app.exception_handler(StoreError)
    async def _store_error(_: Request, exc: StoreError) -> Response:
        return _error(exc.status, exc.error_code, exc.message)

    @app.exception_handler(_BadRequest)
    async def _bad_request(_: Request, exc: _BadRequest) -> Response:
        return _error(400, 400, str(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> Response:
        return _error(exc.status_code, exc.status_code, f"HTTP {exc.status_code} {exc.detail}")

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> Response:
        return _error(422, 422, f"Unprocessable entity: {exc.errors()}")

    @app.get("/")
    async def root() -> dict[str, Any]:
        return {}

    # --- schemas by id ---------------------------------------------------------------------------------

    @app.get("/schemas/types")
    async def schema_types() -> list[str]:
        return ["AVRO"]

    @app.get("/schemas/ids/{schema_id}")
    async def schema_by_id(schema_id: int) -> dict[str, Any]:
        return {"schema": store.schema_by_id(schema_id)}

    @app.get("/schemas/ids/{schema_id}/schema")
    async def raw_schema_by_id(schema_id: int) -> Response:
        return RegistryJSONResponse(json.loads(store.schema_by_id(schema_id)))

    @app.get("/schemas/ids/{schema_id}/versions")
    async def versions_of_id(schema_id: int) -> list[dict[str, Any]]:
        return [{"subject": v.subject, "version": v.version} for v in store.versions_of_id(schema_id)]

    @app.get("/schemas/ids/{schema_id}/subjects")
    async def subjects_of_id(schema_id: int) -> list[str]:
        return sorted({v.subject for v in store.versions_of_id(schema_id)})

    # --- subjects ----------------------------------------------------------------------------------------

    @app.get("/subjects")
    async def subjects() -> list[str]:
        return store.subjects()

    @app.get("/subjects/{subject}/versions")
    async def versions(subject: str) -> list[int]:
        return [v.version for v in store.versions(subject)]

    @app.get("/subjects/{subject}/versions/{version}")
    async def version(subject: str, version: str) -> dict[str, Any]:
        return store.version(subject, version).to_json()

    @app.get("/subjects/{subject}/versions/{version}/schema")
    async def raw_version_schema(subject: str, version: str) -> Response:
        return RegistryJSONResponse(json.loads(store.version(subject, version).schema))

    @app.post("/subjects/{subject}/versions")
    async def register(subject: str, request: Request) -> dict[str, Any]:
        return {"id": store.register(subject, await _schema_body(request))}

    @app.post("/subjects/{subject}")
    async def lookup(subject: str, request: Request) -> dict[str, Any]:
        return store.lookup(subject, await _schema_body(request)).to_json()

    # --- compatibility -------------------------------------------------------------------------------------

    def _compat_answer(problems: list[str], verbose: str | None) -> dict[str, Any]:
        answer: dict[str, Any] = {"is_compatible": not problems}
        if _true(verbose):
            answer["messages"] = problems
        return answer

    @app.post("/compatibility/subjects/{subject}/versions/{version}")
    async def compatible_with_version(
        subject: str, version: str, request: Request, verbose: str | None = None
    ) -> dict[str, Any]:
        schema = await _schema_body(request)
        return _compat_answer(store.problems(subject, schema, version), verbose)

    @app.post("/compatibility/subjects/{subject}/versions")
    async def compatible_with_all(subject: str, request: Request, verbose: str | None = None) -> dict[str, Any]:
        schema = await _schema_body(request)
        return _compat_answer(store.problems(subject, schema, None), verbose)

    # --- associations -----------------------------------------------------------------------------------

    @app.get("/associations/resources/{namespace}/{resource}")
    async def associations(namespace: str, resource: str) -> list[dict[str, Any]]:
        # confluent-kafka >= 2.13 serdes default to the "associated" subject name strategy and ask this
        # first; no associations here, so they fall back to TopicNameStrategy (<topic>-value).
        return []

    # --- config and mode --------------------------------------------------------------------------------

    async def _level_body(request: Request) -> str:
        try:
            body = json.loads(await request.body() or b"null")
        except ValueError as exc:
            raise _BadRequest(f"Unrecognized JSON: {exc}") from exc
        if not isinstance(body, dict) or not isinstance(body.get("compatibility"), str):
            raise InvalidSchemaStoreError('Invalid compatibility level: body must be {"compatibility": LEVEL}')
        return str(body["compatibility"])

    @app.get("/config")
    async def global_config() -> dict[str, Any]:
        return {"compatibilityLevel": store.level().value}

    @app.put("/config")
    async def set_global_config(request: Request) -> dict[str, Any]:
        return {"compatibility": store.set_level(await _level_body(request)).value}

    @app.get("/config/{subject}")
    async def subject_config(subject: str) -> dict[str, Any]:
        # Confluent answers 40408 for a subject without its own level unless ?defaultToGlobal=true;
        # clients here want the effective level, so this always falls back to the global one.
        return {"compatibilityLevel": store.level(subject).value}

    @app.put("/config/{subject}")
    async def set_subject_config(subject: str, request: Request) -> dict[str, Any]:
        return {"compatibility": store.set_level(await _level_body(request), subject).value}

    @app.delete("/config/{subject}")
    async def delete_subject_config(subject: str) -> dict[str, Any]:
        return {"compatibilityLevel": store.delete_level(subject).value}

    @app.get("/mode")
    async def global_mode() -> dict[str, Any]:
        return {"mode": "READWRITE"}

    @app.get("/mode/{subject}")
    async def subject_mode(subject: str) -> dict[str, Any]:
        return {"mode": "READWRITE"}

    return app
