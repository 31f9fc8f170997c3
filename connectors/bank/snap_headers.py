"""The SNAP request headers of a signed call, documented on an endpoint that FastAPI does not make read them.

Authentication reads the headers from the request itself (:mod:`connectors.bank.auth`), so declaring them as
``Header()`` parameters only documented them, while FastAPI still extracted and validated each one on every
call: 0.10-0.12 ms of CPU (measured through the ASGI app, six headers against none), 10-12 % of a payment
notification's ~1 ms in the bank API, as py-spy showed during ``make bench`` (d). The hot SNAP
endpoints take the request alone and carry these parameters in their OpenAPI operation (``openapi_extra``);
the document is the one FastAPI generated for the ``Header()`` parameters (tests/component/test_bank_api.py).
"""

from __future__ import annotations

from typing import Any


def header_parameter(name: str, description: str) -> dict[str, Any]:
    """An optional string header as FastAPI documents ``Annotated[str | None, Header(alias=name)]``."""
    schema = {"anyOf": [{"type": "string"}, {"type": "null"}], "description": description, "title": name.title()}
    return {"name": name, "in": "header", "required": False, "description": description, "schema": schema}


def snap_headers(*, external_id: str, timestamp: str, signature: str) -> dict[str, Any]:
    """``openapi_extra`` for a signed SNAP call; the three descriptions that differ per endpoint are arguments."""
    return {
        "parameters": [
            header_parameter("authorization", "Bearer <B2B access token>"),
            header_parameter("X-PARTNER-ID", "The bank id"),
            header_parameter("X-EXTERNAL-ID", external_id),
            header_parameter("X-TIMESTAMP", timestamp),
            header_parameter("X-SIGNATURE", signature),
            header_parameter("CHANNEL-ID", "<= 5 characters"),
        ]
    }
