"""`POST /v1.0/access-token/b2b` (SNAP service 73): SHA256withRSA over `clientId|X-TIMESTAMP` -> bearer token.

The signature is verified against the bank's configured public keys (several during a rotation) within
`snap_timestamp_skew_s`; the token is short-lived (`snap_token_ttl_s`) and bound to that bank.
Codes: 4007301/4007302 malformed/missing header or grantType, 4017300 unknown client, stale timestamp or
bad signature (each counted in sinergi_auth_failures_total).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request, Response
from fastapi.responses import JSONResponse

from connectors.bank.context import BankContext
from connectors.bank.errors import (
    SERVICE_TOKEN,
    SnapProblem,
    from_http,
    internal_error,
    invalid,
    missing,
    refuse,
    snap_code,
)
from connectors.bank.models import B2bTokenRequest, B2bTokenResponse, SnapError
from connectors.bank.snap_signing import (
    SnapTimestampError,
    parse_snap_timestamp,
    string_to_sign_token,
    verify_rsa_sha256,
    within_window,
)
from connectors.http_common import (
    HttpProblem,
    RequestObservation,
    parse_json_object,
    read_body,
    require_json_content_type,
    where_failed,
)
from services.logs import event
from services.metrics import AUTH_FAILURES

log = logging.getLogger(__name__)

PATH = "/v1.0/access-token/b2b"
ENDPOINT = "b2b_token"

UNKNOWN_CLIENT = "UNKNOWN_CLIENT"
SIGNATURE_INVALID = "SIGNATURE_INVALID"
TIMESTAMP_OUT_OF_WINDOW = "TIMESTAMP_OUT_OF_WINDOW"
GRANT_TYPE_MISSING = "GRANT_TYPE_MISSING"
GRANT_TYPE_INVALID = "GRANT_TYPE_INVALID"

REQUEST_BODIES = {(PATH, "post"): B2bTokenRequest}


def _unauthorized(obs: RequestObservation, why: str, reason: str) -> SnapProblem:
    AUTH_FAILURES.labels("bank", ENDPOINT, obs.partner, reason).inc()
    return SnapProblem(401, snap_code(401, "00", SERVICE_TOKEN), f"Unauthorized. {why}", reason)


class TokenGrant:
    def __init__(self, ctx: BankContext) -> None:
        self.ctx = ctx

    async def grant(
        self,
        request: Request,
        obs: RequestObservation,
        client_key: str | None,
        timestamp: str | None,
        signature: str | None,
    ) -> B2bTokenResponse:
        if not client_key:
            raise missing("X-CLIENT-KEY", SERVICE_TOKEN)
        partner = self.ctx.registry.get(client_key)
        if partner is None or not partner.public_keys:
            raise _unauthorized(obs, "Unknown client", UNKNOWN_CLIENT)
        obs.partner = partner.bank_id
        if not timestamp:
            raise missing("X-TIMESTAMP", SERVICE_TOKEN)
        try:
            ts = parse_snap_timestamp(timestamp)
        except SnapTimestampError:
            raise invalid("X-TIMESTAMP", SERVICE_TOKEN) from None
        if not signature:
            raise missing("X-SIGNATURE", SERVICE_TOKEN)
        if not within_window(ts, datetime.now(UTC), self.ctx.settings.snap_timestamp_skew_s):
            raise _unauthorized(obs, "Timestamp out of window", TIMESTAMP_OUT_OF_WINDOW)
        if not verify_rsa_sha256(partner.public_keys, string_to_sign_token(client_key, timestamp), signature):
            raise _unauthorized(obs, "Invalid signature", SIGNATURE_INVALID)

        require_json_content_type(request)
        body = parse_json_object(await read_body(request, self.ctx.settings.max_body_bytes))
        grant_type = body.get("grantType")
        if grant_type is None or grant_type == "":
            raise missing("grantType", SERVICE_TOKEN, GRANT_TYPE_MISSING)
        if grant_type != "client_credentials":
            raise invalid("grantType", SERVICE_TOKEN, GRANT_TYPE_INVALID)

        token, expires_in = self.ctx.issuer.issue(partner.bank_id)
        event(log, "access token issued", bank=partner.bank_id)
        return B2bTokenResponse(accessToken=token, expiresIn=str(expires_in))


def _doc(text: str) -> dict[str, Any]:
    return {"model": SnapError, "description": text}


ERRORS: dict[int | str, dict[str, Any]] = {
    400: _doc(
        "4007300 Bad Request (INVALID_JSON, ...); 4007301 Invalid Field Format {field} (HEADER_INVALID, "
        "GRANT_TYPE_INVALID); 4007302 Invalid Mandatory Field {field} (HEADER_MISSING, GRANT_TYPE_MISSING)"
    ),
    401: _doc("4017300 Unauthorized (UNKNOWN_CLIENT, SIGNATURE_INVALID, TIMESTAMP_OUT_OF_WINDOW)"),
    413: _doc("4007300 Bad Request (BODY_TOO_LARGE)"),
    415: _doc("4007300 Bad Request (UNSUPPORTED_MEDIA_TYPE)"),
    500: _doc("5007301 Internal Server Error (INTERNAL_ERROR)"),
}


def router(ctx: BankContext) -> APIRouter:
    granter = TokenGrant(ctx)
    api = APIRouter()

    @api.post(
        PATH,
        response_model=B2bTokenResponse,
        responses=ERRORS,
        summary="SNAP B2B access token (service 73): X-SIGNATURE = SHA256withRSA(clientId|X-TIMESTAMP)",
    )
    async def b2b_token(
        request: Request,
        x_client_key: Annotated[str | None, Header(alias="X-CLIENT-KEY", description="The bank id")] = None,
        x_timestamp: Annotated[str | None, Header(alias="X-TIMESTAMP", description="ISO-8601 with offset")] = None,
        x_signature: Annotated[
            str | None, Header(alias="X-SIGNATURE", description="Base64 SHA256withRSA of clientId|X-TIMESTAMP")
        ] = None,
    ) -> Response:
        obs = RequestObservation("bank", ENDPOINT)
        try:
            result = await granter.grant(request, obs, x_client_key, x_timestamp, x_signature)
        except SnapProblem as problem:
            return refuse(obs, problem, "access token refused")
        except HttpProblem as problem:
            return refuse(obs, from_http(problem, SERVICE_TOKEN), "access token refused")
        except Exception as exc:
            log.error("access token failed: %s", where_failed(exc))
            return refuse(obs, internal_error(SERVICE_TOKEN), "access token refused")
        obs.done(200)
        return JSONResponse(result.model_dump(mode="json"), status_code=200)

    return api
