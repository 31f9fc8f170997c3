"""Authentication of SNAP transactional calls (inquiry, payment, statement upload): domain.md 4.2-4.3.

Order of checks, each refusal counted in sinergi_auth_failures_total{reason} where it is an auth failure:

1. X-PARTNER-ID present and well-formed (400xx02 / 400xx01), and a configured bank (401xx00 UNKNOWN_PARTNER).
2. HMAC_SHA512 banks: `Authorization: Bearer <token>`, a token issued by the B2B endpoint (or a static
   development token) *of this bank* (401xx01 TOKEN_INVALID: unknown, expired, or another bank's).
   RSA_SHA256 banks sign without a token.
3. X-TIMESTAMP well-formed (400xx01) and within `snap_timestamp_skew_s` of now (401xx00 TIMESTAMP_OUT_OF_WINDOW).
4. X-SIGNATURE present (400xx02 HEADER_MISSING, counted as SIGNATURE_MISSING) and valid (401xx00 SIGNATURE_INVALID):
   HMAC_SHA512: Base64(HMAC-SHA512(secret, METHOD:EndpointUrl:token:hex(sha256(minify(raw))):X-TIMESTAMP))
   RSA_SHA256:  Base64(SHA256withRSA(key, METHOD:EndpointUrl:hex(sha256(minify(raw))):X-TIMESTAMP))
   verified over the raw bytes received, against every current secret/key (rotation), in constant time.

A body that cannot be minified (not JSON-shaped) is hashed as raw bytes: statement files are MT940, XML
or CSV, and a signature is still over exactly what was sent. Nothing here reads or echoes a body value.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from fastapi import Request

from connectors.bank.errors import SnapProblem, invalid, missing, unauthorized
from connectors.bank.partners import Partner, PartnerRegistry
from connectors.bank.snap_signing import (
    SnapTimestampError,
    parse_snap_timestamp,
    signature_body_digest,
    verify_hmac_sha512,
    verify_rsa_sha256,
    within_window,
)
from connectors.bank.tokens import TokenIssuer
from connectors.http_common import RequestObservation, authenticate, bearer_token
from services.config import Settings
from services.metrics import AUTH_FAILURES

UNKNOWN_PARTNER = "UNKNOWN_PARTNER"
TOKEN_INVALID = "TOKEN_INVALID"  # noqa: S105 (a reason code)
TIMESTAMP_OUT_OF_WINDOW = "TIMESTAMP_OUT_OF_WINDOW"
SIGNATURE_INVALID = "SIGNATURE_INVALID"
SIGNATURE_MISSING = "SIGNATURE_MISSING"  # metric reason only: the body says HEADER_MISSING like any header

_PARTNER_ID = re.compile(r"[A-Za-z0-9._-]{1,36}")
# A fractional-second `+07:00` timestamp is longer than SNAP's 25 characters; accept up to 32.
_TIMESTAMP_MAX = 32


@dataclass(frozen=True)
class Authenticated:
    partner: Partner
    x_timestamp: str
    received_at: datetime
    body_digest: str  # hex sha256 of the minified raw body, as signed: the body's identity (idempotency)


def endpoint_url(request: Request, mode: str) -> str:
    """EndpointUrl as the bank signs it: the relative path, or path and query (per bank, domain.md 4.3.5)."""
    path = request.url.path
    query = request.url.query
    return f"{path}?{query}" if mode == "PATH_AND_QUERY" and query else path


class SnapAuth:
    def __init__(
        self,
        settings: Settings,
        registry: PartnerRegistry,
        issuer: TokenIssuer,
        *,
        api: str = "bank",
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.issuer = issuer
        self.api = api
        self._now = now

    def _fail(self, obs: RequestObservation, reason: str, why: str, service: str, case: str = "00") -> SnapProblem:
        AUTH_FAILURES.labels(self.api, obs.endpoint, obs.partner, reason).inc()
        return unauthorized(why, reason, service, case)

    def token_bank(self, authorization: str | None) -> str | None:
        """The bank a bearer token belongs to: a B2B-issued token, or a static development token."""
        token = bearer_token(authorization)
        if token is None:
            return None
        return authenticate(token, self.settings.bank_tokens) or self.issuer.resolve(token)

    def verify(self, request: Request, raw: bytes, service: str, obs: RequestObservation) -> Authenticated:
        """The authenticated partner of a transactional call, or a SnapProblem (raised)."""
        headers = request.headers
        partner_id = headers.get("x-partner-id")
        if not partner_id:
            raise missing("X-PARTNER-ID", service)
        if _PARTNER_ID.fullmatch(partner_id) is None:
            raise invalid("X-PARTNER-ID", service)
        partner = self.registry.get(partner_id)
        if partner is None:
            raise self._fail(obs, UNKNOWN_PARTNER, "Unknown partner", service)
        obs.partner = partner.bank_id  # a configured id: bounded metric label from here on

        scheme = partner.profile.signature_scheme
        authorization = headers.get("authorization")
        token = bearer_token(authorization) or ""
        if scheme == "HMAC_SHA512" and self.token_bank(authorization) != partner.bank_id:
            raise self._fail(obs, TOKEN_INVALID, "Invalid Token (B2B)", service, case="01")

        x_timestamp = headers.get("x-timestamp")
        if not x_timestamp:
            raise missing("X-TIMESTAMP", service)
        try:
            ts = parse_snap_timestamp(x_timestamp, max_length=_TIMESTAMP_MAX)
        except SnapTimestampError:
            raise invalid("X-TIMESTAMP", service) from None
        now = self._now()
        if not within_window(ts, now, self.settings.snap_timestamp_skew_s):
            raise self._fail(obs, TIMESTAMP_OUT_OF_WINDOW, "Timestamp out of window", service)

        signature = headers.get("x-signature")
        if not signature:
            AUTH_FAILURES.labels(self.api, obs.endpoint, obs.partner, SIGNATURE_MISSING).inc()
            raise missing("X-SIGNATURE", service)
        try:
            url = endpoint_url(request, partner.profile.endpoint_url)
        except UnicodeDecodeError:  # Starlette's request.url wants a UTF-8 query string; no bank signed other bytes
            raise self._fail(obs, SIGNATURE_INVALID, "Invalid Signature", service) from None
        digest = signature_body_digest(raw)
        method = request.method.upper()
        if scheme == "HMAC_SHA512":
            sts = f"{method}:{url}:{token}:{digest}:{x_timestamp}"
            ok = verify_hmac_sha512(partner.client_secrets, sts, signature)
        else:
            sts = f"{method}:{url}:{digest}:{x_timestamp}"
            ok = verify_rsa_sha256(partner.public_keys, sts, signature)
        if not ok:
            raise self._fail(obs, SIGNATURE_INVALID, "Invalid Signature", service)
        return Authenticated(partner, x_timestamp, now, digest)
