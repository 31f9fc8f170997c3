"""Reference data as configuration: partner banks, representation offices, tariffs (schemas/reference/)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class BankProfile:
    bank_id: str
    name: str
    partner_service_id: str
    currencies: frozenset[str]


@dataclass(frozen=True)
class Office:
    code: str
    type: str
    city: str
    country: str
    jurisdiction: tuple[str, ...]


def _load(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def load_banks(path: Path) -> dict[str, BankProfile]:
    return {
        b["bank_id"]: BankProfile(b["bank_id"], b["name"], b["partner_service_id"], frozenset(b["currencies"]))
        for b in _load(path)["banks"]
    }


def load_offices(path: Path) -> dict[str, Office]:
    return {
        o["code"]: Office(o["code"], o["type"], o["city"], o["country"], tuple(o["jurisdiction"]))
        for o in _load(path)["offices"]
    }


def load_tariff_document(path: Path) -> dict[str, Any]:
    doc: dict[str, Any] = _load(path)
    return doc
