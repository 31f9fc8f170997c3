"""Office authentication: each office holds API keys; the hub holds only their SHA-256 hashes.

Keys are high-entropy random strings (`sinergi offices issue-key OFFICE` makes one), so a plain SHA-256 is
the right hash at rest: nothing to brute-force, and lookup stays cheap. An office may hold several keys at
once (rotation: issue a new key, switch the desk system over, then remove the old hash).

Where the hashes come from, first match wins:
- `SINERGI_OFFICE_CREDENTIALS_FILE`: JSON {"KBRI_KUALA_LUMPUR": ["sha256:<hex>", ...], ...}, re-read when it
  changes (a mounted Kubernetes Secret): rotation without a restart. A broken edit keeps the previous keys
  in force (counted), so one bad edit never locks every office out; at start-up it fails loudly.
- `SINERGI_OFFICE_KEY_HASHES`: the same map as JSON in the environment.
- development and test only: the hashes of `SINERGI_OFFICE_TOKENS` (the demo's plaintext tokens, which
  the simulator uses as the offices' keys). Production refuses those (Settings.check_production_safety).

Every presented key is compared against every configured hash with hmac.compare_digest: timing reveals
neither which office nor whether a prefix matched. Failures are counted by reason, never with the key.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from fastapi import Request

from connectors.http_common import UNAUTHORIZED, HttpProblem, RequestObservation, bearer_token
from connectors.reloading import ReloadingFile
from services.config import Settings
from services.metrics import AUTH_FAILURES

log = logging.getLogger(__name__)

HASH_PREFIX = "sha256:"
KEY_PREFIX = "sk_"
MAX_KEY_LENGTH = 256


def hash_key(key: str) -> str:
    """The at-rest form of an office key: "sha256:<hex>"."""
    return HASH_PREFIX + hashlib.sha256(key.encode("utf-8")).hexdigest()


def new_key(office: str) -> tuple[str, str]:
    """A fresh office key and its hash. The office code in the key only helps a human tell keys apart."""
    key = f"{KEY_PREFIX}{office.lower()}_{secrets.token_urlsafe(32)}"
    return key, hash_key(key)


def _digests(hashes: Mapping[str, Sequence[str]]) -> dict[str, tuple[bytes, ...]]:
    out: dict[str, tuple[bytes, ...]] = {}
    for office, values in hashes.items():
        malformed = ValueError(f"office {office}: key hashes look like sha256:<64 hex digits>")
        digests = []
        for value in values:
            if not isinstance(value, str) or not value.startswith(HASH_PREFIX):
                raise malformed
            try:
                raw = bytes.fromhex(value[len(HASH_PREFIX) :])
            except ValueError:
                raise malformed from None
            if len(raw) != 32:
                raise malformed
            digests.append(raw)
        out[office] = tuple(digests)
    return out


def _read_file(path: Path) -> dict[str, tuple[bytes, ...]]:
    doc: Any = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(doc, dict) or not all(isinstance(v, list) for v in doc.values()):
        raise ValueError("office credentials file must map office codes to lists of key hashes")
    return _digests(doc)


class OfficeAuth:
    """Bearer office key -> office code."""

    def __init__(
        self,
        settings: Settings,
        *,
        reload_every_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._file: ReloadingFile[dict[str, tuple[bytes, ...]]] | None = None
        self._static: dict[str, tuple[bytes, ...]] = {}
        if settings.office_credentials_file is not None:
            self._file = ReloadingFile(
                settings.office_credentials_file,
                _read_file,
                what="office credentials",
                reload_every_s=reload_every_s,
                clock=clock,
            )
        elif settings.office_key_hashes is not None:
            self._static = _digests(settings.office_key_hashes)
        else:
            plain = {office: [hash_key(t.get_secret_value())] for office, t in settings.office_tokens.items()}
            self._static = _digests(plain)

    @property
    def _hashes(self) -> dict[str, tuple[bytes, ...]]:
        return self._file.current() if self._file is not None else self._static

    @property
    def offices(self) -> frozenset[str]:
        return frozenset(self._hashes)

    def identify(self, key: str | None) -> str | None:
        """The office whose key this is, or None. Constant time over every configured hash."""
        if not key or len(key) > MAX_KEY_LENGTH:
            return None
        presented = hashlib.sha256(key.encode("utf-8")).digest()
        found: str | None = None
        for office, digests in self._hashes.items():
            for digest in digests:
                if hmac.compare_digest(presented, digest) and found is None:
                    found = office
        return found

    def office(self, request: Request, obs: RequestObservation) -> str:
        """The calling office, or HttpProblem 401 (counted in sinergi_auth_failures_total)."""
        key = bearer_token(request.headers.get("authorization"))
        office = self.identify(key)
        if office is None:
            reason = "TOKEN_MISSING" if key is None else "TOKEN_INVALID"
            AUTH_FAILURES.labels("kbri", obs.endpoint, "unknown", reason).inc()
            raise HttpProblem(
                401, UNAUTHORIZED, "missing or invalid bearer token", headers={"WWW-Authenticate": "Bearer"}
            )
        obs.partner = office
        return office
