"""Pieces both partner APIs share: body limits, strict JSON, bearer auth, error bodies, metrics.

Rules that hold for every partner endpoint:
- The body is read raw, bounded by Settings.max_body_bytes (413 BODY_TOO_LARGE), and parsed strictly:
  invalid UTF-8, NaN/Infinity, duplicate keys and nesting deeper than MAX_JSON_DEPTH are refused
  before any domain code runs. The exact raw bytes are what goes to Kafka.
- Error bodies carry a stable reason code, the offending field name (never its value) and a fixed
  message. Personal values are never echoed.
- Tokens are compared with hmac.compare_digest only, against every configured partner.
- Metric labels are bounded: api, endpoint, partner id (configured ids only, else "unknown"), outcome, reason.
"""

from __future__ import annotations

import hmac
import json
import math
import re
import time
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol

from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, SecretStr

from connectors.kafka_edge import EdgeSender
from services.metrics import HTTP_LATENCY, HTTP_REJECTIONS, HTTP_REQUESTS

MAX_JSON_DEPTH = 20
RETRY_AFTER_S = 5  # what a 503 tells the partner: Kafka should be back (or failed over) within seconds

# Reason codes owned by the transport layer (domain reasons come from services.domain.errors.Rejected).
BODY_TOO_LARGE = "BODY_TOO_LARGE"
INVALID_UTF8 = "INVALID_UTF8"
INVALID_JSON = "INVALID_JSON"
NON_FINITE_NUMBER = "NON_FINITE_NUMBER"
DUPLICATE_KEY = "DUPLICATE_KEY"
JSON_TOO_DEEP = "JSON_TOO_DEEP"
BODY_NOT_OBJECT = "BODY_NOT_OBJECT"
UNSUPPORTED_MEDIA_TYPE = "UNSUPPORTED_MEDIA_TYPE"
UNAUTHORIZED = "UNAUTHORIZED"
BROKER_UNAVAILABLE = "BROKER_UNAVAILABLE"
INTERNAL_ERROR = "INTERNAL_ERROR"


class HttpProblem(Exception):
    """A refusal with an HTTP status, a stable reason code and (optionally) the offending field name."""

    def __init__(
        self,
        status: int,
        reason: str,
        message: str,
        field: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason
        self.message = message
        self.field = field
        self.headers = dict(headers or {})


class ErrorBody(BaseModel):
    """The standard error body of the KBRI API (the bank API wraps the same fields in a SNAP body)."""

    reason: str = Field(description="Stable reason code, e.g. BODY_TOO_LARGE, BROKER_UNAVAILABLE")
    field: str | None = Field(None, description="Name (JSON path) of the offending field; never its value")
    message: str = Field(description="Human-readable explanation; never contains personal data")


def problem_response(problem: HttpProblem) -> JSONResponse:
    body = ErrorBody(reason=problem.reason, field=problem.field, message=problem.message)
    return JSONResponse(body.model_dump(), status_code=problem.status, headers=problem.headers)


def broker_unavailable_problem() -> HttpProblem:
    return HttpProblem(
        503,
        BROKER_UNAVAILABLE,
        "the event store did not acknowledge the request; retry later",
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )


# --- body --------------------------------------------------------------------------------------------
async def read_body(request: Request, max_bytes: int) -> bytes:
    """The raw body, refusing anything larger than max_bytes without reading it all."""
    too_large = HttpProblem(413, BODY_TOO_LARGE, f"request body exceeds {max_bytes} bytes")
    declared = request.headers.get("content-length")
    if declared is not None:
        if not (declared.isascii() and declared.isdigit()):
            raise HttpProblem(400, INVALID_JSON, "invalid Content-Length")
        if int(declared) > max_bytes:
            raise too_large
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def require_json_content_type(request: Request) -> None:
    ctype = request.headers.get("content-type", "")
    media = ctype.split(";", 1)[0].strip().lower()
    if media and media != "application/json" and not media.endswith("+json"):
        raise HttpProblem(415, UNSUPPORTED_MEDIA_TYPE, "Content-Type must be application/json")


_FIELD_NAME = re.compile(r"[A-Za-z_]{1,64}")


def _too_deep(value: Any, max_depth: int) -> bool:
    """True when objects/arrays nest deeper than max_depth (the top-level value is depth 1). Iterative."""
    if not isinstance(value, dict | list):
        return False
    stack: list[tuple[dict[str, Any] | list[Any], int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > max_depth:
            return True
        for child in node.values() if isinstance(node, dict) else node:
            if isinstance(child, dict | list):
                stack.append((child, depth + 1))
    return False


def _reject_constant(name: str) -> Any:
    raise HttpProblem(400, NON_FINITE_NUMBER, f"{name} is not a valid JSON number")


def _finite_float(literal: str) -> float:
    value = float(literal)
    if not math.isfinite(value):
        raise HttpProblem(400, NON_FINITE_NUMBER, "number out of range")
    return value


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            # Echo the key only when it looks like a field name: a client could put anything in a key.
            field = key if _FIELD_NAME.fullmatch(key) else None
            raise HttpProblem(400, DUPLICATE_KEY, "duplicate key in JSON object", field=field)
        out[key] = value
    return out


def parse_json_strict(raw: bytes, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """Parse UTF-8 JSON, refusing NaN/Infinity, duplicate keys, excessive depth and invalid UTF-8."""
    try:
        text = raw.decode("utf-8", errors="strict")
    except UnicodeDecodeError:
        raise HttpProblem(400, INVALID_UTF8, "request body is not valid UTF-8") from None
    if text.startswith("\ufeff"):
        raise HttpProblem(400, INVALID_JSON, "byte order mark not allowed")
    too_deep = HttpProblem(400, JSON_TOO_DEEP, f"JSON nesting deeper than {max_depth}")
    try:
        # The C scanner is linear; pathological nesting stops it with RecursionError (~1000 levels).
        value = json.loads(
            text,
            object_pairs_hook=_no_duplicates,
            parse_constant=_reject_constant,
            parse_float=_finite_float,
        )
    except HttpProblem:
        raise
    except RecursionError:
        raise too_deep from None
    except ValueError:  # JSONDecodeError is a ValueError; so is the int-digits limit
        raise HttpProblem(400, INVALID_JSON, "request body is not valid JSON") from None
    if _too_deep(value, max_depth):
        raise too_deep
    return value


def parse_json_object(raw: bytes, max_depth: int = MAX_JSON_DEPTH) -> dict[str, Any]:
    value = parse_json_strict(raw, max_depth)
    if not isinstance(value, dict):
        raise HttpProblem(400, BODY_NOT_OBJECT, "request body must be a JSON object")
    return value


# --- auth --------------------------------------------------------------------------------------------
def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, else None."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token


def authenticate(token: str | None, tokens: Mapping[str, SecretStr]) -> str | None:
    """The partner id whose configured token equals `token`, compared in constant time against all."""
    if token is None:
        return None
    presented = token.encode("utf-8")
    found: str | None = None
    for partner, secret in tokens.items():
        if hmac.compare_digest(presented, secret.get_secret_value().encode("utf-8")) and found is None:
            found = partner
    return found


# --- metrics -----------------------------------------------------------------------------------------
def _outcome(status: int) -> str:
    if status < 300:
        return "accepted"
    if status in (401, 403):
        return "unauthorized"
    if status == 503:
        return "unavailable"
    if status < 500:
        return "rejected"
    return "error"


class RequestObservation:
    """Counts one request and its latency once; `partner` must be a configured id or "unknown"."""

    def __init__(self, api: str, endpoint: str) -> None:
        self.api = api
        self.endpoint = endpoint
        self.partner = "unknown"
        self._started = time.perf_counter()

    def done(self, status: int, reason: str | None = None) -> None:
        HTTP_REQUESTS.labels(self.api, self.endpoint, self.partner, _outcome(status)).inc()
        HTTP_LATENCY.labels(self.api, self.endpoint).observe(time.perf_counter() - self._started)
        if 400 <= status < 500 and reason is not None:
            HTTP_REJECTIONS.labels(self.api, self.endpoint, reason).inc()


# --- app lifecycle and probes --------------------------------------------------------------------------
class Background(Protocol):
    """Something an app runs beside the HTTP server (e.g. a read-model reader): started and stopped with it."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...


ReadinessCheck = Callable[[], Awaitable[bool]]


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    ready: bool
    checks: dict[str, bool] = Field(description="check name -> ready, e.g. member_book (the inquiry read model)")


def app_lifespan(
    producer: EdgeSender, background: Sequence[Background]
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """Start the producer, then the background tasks, when the server starts; stop them in reverse order."""

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        producer.start()
        started: list[Background] = []
        try:
            for task in background:
                await task.start()
                started.append(task)
            yield
        finally:
            for task in reversed(started):
                await task.close()
            await producer.close()

    return lifespan


def add_probes(app: FastAPI, readiness: Mapping[str, ReadinessCheck], ready_means: str) -> None:
    """GET /healthz (liveness: the process serves) and GET /readyz (every check true, else 503 naming them)."""

    @app.get("/healthz", response_model=Health, summary="Liveness: the process serves requests")
    async def healthz() -> Health:
        return Health()

    @app.get(
        "/readyz",
        response_model=Readiness,
        responses={503: {"model": Readiness, "description": "Not ready: see which check failed"}},
        summary=f"Readiness: {ready_means}",
    )
    async def readyz() -> JSONResponse:
        checks = {name: await check() for name, check in readiness.items()}
        body = Readiness(ready=all(checks.values()), checks=checks)
        return JSONResponse(body.model_dump(), status_code=200 if body.ready else 503)


# --- OpenAPI -----------------------------------------------------------------------------------------
def document_request_bodies(app: FastAPI, bodies: Mapping[tuple[str, str], type[BaseModel]]) -> None:
    """Document JSON request bodies of endpoints that read the raw body themselves.

    `bodies` maps (path, lowercase method) to a pydantic model used for documentation only: the
    endpoints validate with the domain functions, not with these models.
    """

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for (path, method), model in bodies.items():
            model_schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
            for name, sub in model_schema.pop("$defs", {}).items():
                components.setdefault(name, sub)
            components.setdefault(model.__name__, model_schema)
            operation = schema["paths"][path][method]
            operation["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}},
            }
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented override point


# --- reference data and small helpers ------------------------------------------------------------------
def utc_now_ms() -> datetime:
    """Now in UTC, truncated to milliseconds (what Avro timestamp-millis and our headers carry)."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond - now.microsecond % 1000)


def iso_utc(value: datetime) -> str:
    """ISO-8601 UTC with milliseconds and a Z suffix, e.g. 2025-09-01T03:04:05.123Z."""
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def where_failed(exc: BaseException) -> str:
    """Exception type and innermost frame (file:line): enough to debug, no values that could be personal."""
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return type(exc).__name__
    last = frames[-1]
    return f"{type(exc).__name__} at {Path(last.filename).name}:{last.lineno}"
