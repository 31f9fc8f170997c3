"""Reference data as configuration: partner banks, representation offices, tariffs (schemas/reference/)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SIGNATURE_SCHEMES = ("HMAC_SHA512", "RSA_SHA256")
ENDPOINT_URL_MODES = ("PATH", "PATH_AND_QUERY")


@dataclass(frozen=True)
class BankProfile:
    """The non-secret part of a partner bank (banks.json). Secrets and keys come from Settings only.

    `signature_scheme`: HMAC_SHA512 (SNAP symmetric, over the B2B access token) or RSA_SHA256 (SNAP
    asymmetric variant, no token). `endpoint_url`: what EndpointUrl means in the string to sign, the path
    alone or path plus query; banks disagree (domain.md 4.3.5), so it is per bank.
    """

    bank_id: str
    name: str
    partner_service_id: str
    currencies: frozenset[str]
    signature_scheme: str = "HMAC_SHA512"
    endpoint_url: str = "PATH"
    countries: frozenset[str] = frozenset()  # where its counters collect (and may enroll) workers
    enrolls: bool = False  # registers workers at the counter (bank enrollments)


@dataclass(frozen=True)
class Office:
    code: str
    type: str
    city: str
    country: str
    jurisdiction: tuple[str, ...]
    parent: str | None = None  # the office whose area contains this one's (KRI Tawau: KJRI Kota Kinabalu)


def _load(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _bank(b: dict[str, Any]) -> BankProfile:
    profile = BankProfile(
        bank_id=b["bank_id"],
        name=b["name"],
        partner_service_id=b["partner_service_id"],
        currencies=frozenset(b["currencies"]),
        signature_scheme=b.get("signature_scheme", "HMAC_SHA512"),
        endpoint_url=b.get("endpoint_url", "PATH"),
        countries=frozenset(b.get("countries", ())),
        enrolls=bool(b.get("enrolls", False)),
    )
    if profile.signature_scheme not in SIGNATURE_SCHEMES:
        raise ValueError(f"bank {profile.bank_id}: signature_scheme must be one of {SIGNATURE_SCHEMES}")
    if profile.endpoint_url not in ENDPOINT_URL_MODES:
        raise ValueError(f"bank {profile.bank_id}: endpoint_url must be one of {ENDPOINT_URL_MODES}")
    if len(profile.partner_service_id) != 8:
        raise ValueError(f"bank {profile.bank_id}: partner_service_id must be 8 characters (space-padded)")
    return profile


def load_banks(path: Path) -> dict[str, BankProfile]:
    return {profile.bank_id: profile for profile in map(_bank, _load(path)["banks"])}


def load_offices(path: Path) -> dict[str, Office]:
    return {
        o["code"]: Office(o["code"], o["type"], o["city"], o["country"], tuple(o["jurisdiction"]), o.get("parent"))
        for o in _load(path)["offices"]
    }


def load_tariff_document(path: Path) -> dict[str, Any]:
    doc: dict[str, Any] = _load(path)
    return doc
