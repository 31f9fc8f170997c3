"""The partner registry: each bank's profile (banks.json) joined with its secrets and keys (Settings).

Secrets are bytes in memory and never logged or put in a repr. They come from
`SINERGI_BANK_CLIENT_SECRETS` / `SINERGI_BANK_PUBLIC_KEYS`, or from `SINERGI_BANK_SECRETS_FILE`:

    {"client_secrets": {"MANDIRI": ["old", "new"]}, "public_keys": {"MANDIRI": ["-----BEGIN PUBLIC KEY-----..."]}}

The file is re-read when its modification time changes (checked at most once per `reload_every_s`), so a
secret rotates without a restart: add the new secret beside the old one, let the bank switch, then remove
the old one. A file that fails to load (bad JSON, a broken PEM) keeps the previous secrets in force and
is counted, so a bad edit never locks every bank out; at start-up it fails loudly instead.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa

from connectors.bank.snap_signing import load_rsa_public_key
from connectors.reloading import ReloadingFile
from services.config import Settings
from services.reference import BankProfile, load_banks

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Partner:
    profile: BankProfile
    client_secrets: tuple[bytes, ...] = field(default=(), repr=False)
    public_keys: tuple[rsa.RSAPublicKey, ...] = field(default=(), repr=False)

    @property
    def bank_id(self) -> str:
        return self.profile.bank_id


@dataclass(frozen=True)
class _Secrets:
    client_secrets: Mapping[str, tuple[bytes, ...]]
    public_keys: Mapping[str, tuple[rsa.RSAPublicKey, ...]]


def _secrets_from(client: Mapping[str, Sequence[str]], keys: Mapping[str, Sequence[str]]) -> _Secrets:
    """Raises SnapKeyError for an unusable PEM, ValueError for an empty secret."""
    secrets: dict[str, tuple[bytes, ...]] = {}
    for bank, values in client.items():
        encoded = tuple(v.encode("utf-8") for v in values)
        if not encoded or any(not v for v in encoded):
            raise ValueError(f"bank {bank}: empty client secret")
        secrets[bank] = encoded
    loaded = {bank: tuple(load_rsa_public_key(pem.encode("ascii")) for pem in pems) for bank, pems in keys.items()}
    return _Secrets(secrets, loaded)


def _read_file(path: Path) -> _Secrets:
    doc: Any = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(doc, dict):
        raise ValueError("secrets file must hold a JSON object")
    return _secrets_from(doc.get("client_secrets", {}), doc.get("public_keys", {}))


class PartnerRegistry:
    """Bank id -> Partner. `get` is cheap: one dict lookup (plus a rate-limited stat of the secrets file)."""

    def __init__(
        self,
        settings: Settings,
        *,
        reload_every_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.profiles: dict[str, BankProfile] = load_banks(settings.banks_file)
        self._file: ReloadingFile[dict[str, Partner]] | None = None
        self._static: dict[str, Partner] = {}
        if settings.bank_secrets_file is not None:
            self._file = ReloadingFile(
                settings.bank_secrets_file,
                lambda path: self._join(_read_file(path)),  # start-up: a broken file fails loudly
                what="bank secrets",
                reload_every_s=reload_every_s,
                clock=clock,
            )
        else:
            self._static = self._join(
                _secrets_from(
                    {b: [s.get_secret_value() for s in v] for b, v in settings.bank_client_secrets.items()},
                    settings.bank_public_keys,
                )
            )

    def _join(self, secrets: _Secrets) -> dict[str, Partner]:
        return {
            bank_id: Partner(
                profile,
                secrets.client_secrets.get(bank_id, ()),
                secrets.public_keys.get(bank_id, ()),
            )
            for bank_id, profile in self.profiles.items()
        }

    def get(self, bank_id: str) -> Partner | None:
        partners = self._file.current() if self._file is not None else self._static
        return partners.get(bank_id)

    def __contains__(self, bank_id: object) -> bool:
        return bank_id in self.profiles
