"""Which representation office owns a worker, derived from where the worker is placed (domain.md 3.2).

An office that enrolls a worker owns the record itself. A partner bank that enrolls at its counter is not
an office, so the owner follows from the placement: the destination country and, where a country has
several posts, the state or city of the workplace (``placement_region``) matched against each office's
``jurisdiction`` and ``city`` (schemas/reference/offices.json).

Rules:

- Only offices of the destination country are candidates; none there: ``NO_OFFICE_FOR_PLACEMENT``.
- Names match case- and accent-insensitively, as whole words: ``"tawau, SABAH"`` names Tawau and Sabah,
  ``"Sabahan"`` names neither. Punctuation separates words (``"Pulau-Pinang"`` = ``"Pulau Pinang"``).
- A post whose area lies inside another's (``parent``: KRI Tawau inside KJRI Kota Kinabalu's Sabah) wins
  over that other: the more specific post is the one that serves the workplace.
- No region: the country's principal office (its KBRI; else its only office). A region that names no
  office of the country falls back to the principal office with ``PLACEMENT_REGION_UNKNOWN``; one that
  names two unrelated offices (``"Johor, Selangor"``) likewise, with ``PLACEMENT_REGION_AMBIGUOUS``.
  A fallback is a warning, not a refusal: the worker is insured either way and the embassy can re-route.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from services.domain._fields import get_str
from services.domain.errors import Rejected

NO_OFFICE_FOR_PLACEMENT = "NO_OFFICE_FOR_PLACEMENT"
PLACEMENT_REGION_UNKNOWN = "PLACEMENT_REGION_UNKNOWN"
PLACEMENT_REGION_AMBIGUOUS = "PLACEMENT_REGION_AMBIGUOUS"

PLACEMENT_REGION_MAX = 64
PRINCIPAL_TYPE = "KBRI"

_NOT_ALNUM = re.compile(r"[^0-9a-z]+")


class OfficeArea(Protocol):
    """What placement needs of an office (services.reference.Office satisfies it)."""

    @property
    def code(self) -> str: ...
    @property
    def type(self) -> str: ...
    @property
    def city(self) -> str: ...
    @property
    def country(self) -> str: ...
    @property
    def jurisdiction(self) -> Sequence[str]: ...
    @property
    def parent(self) -> str | None: ...


@dataclass(frozen=True)
class Placement:
    office: str
    warnings: tuple[str, ...] = ()


def fold(name: str) -> tuple[str, ...]:
    """The words of a place name without case or accents: ``"Pulau-Pínang "`` -> ``("pulau", "pinang")``."""
    decomposed = unicodedata.normalize("NFKD", name.casefold())
    bare = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return tuple(word for word in _NOT_ALNUM.split(bare) if word)


def _names(words: tuple[str, ...], name: tuple[str, ...]) -> bool:
    n = len(name)
    return n > 0 and any(words[i : i + n] == name for i in range(len(words) - n + 1))


def placement_region(raw: Mapping[str, Any]) -> str | None:
    """The optional ``placement_region`` of an enrollment body: a string of at most 64 characters."""
    return get_str(raw, "placement_region", required=False, max_len=PLACEMENT_REGION_MAX)


def principal_office(country: str, offices: Iterable[OfficeArea]) -> str | None:
    """The office that answers for a whole country: its KBRI, else its only office, else None (no office).

    ValueError when the country has several offices and no KBRI: the reference data cannot say who owns
    a placement there, which is a configuration error to fail on at start-up (see check_offices).
    """
    here = [o for o in offices if o.country == country]
    embassies = [o.code for o in here if o.type == PRINCIPAL_TYPE]
    if len(embassies) == 1:
        return embassies[0]
    if not embassies and len(here) == 1:
        return here[0].code
    if not here:
        return None
    raise ValueError(f"offices of {country}: expected one {PRINCIPAL_TYPE} or a single office")


def check_offices(offices: Iterable[OfficeArea]) -> None:
    """Raise ValueError unless every country has a principal office and every parent is a known office."""
    listed = list(offices)
    codes = {o.code for o in listed}
    for country in sorted({o.country for o in listed}):
        principal_office(country, listed)
    for office in listed:
        if office.parent is not None and office.parent not in codes:
            raise ValueError(f"office {office.code}: parent {office.parent} is not an office")


def _ancestors(code: str, by_code: Mapping[str, OfficeArea]) -> set[str]:
    seen: set[str] = set()
    parent = by_code[code].parent
    while parent is not None and parent in by_code and parent not in seen:
        seen.add(parent)
        parent = by_code[parent].parent
    return seen


def place(destination_country: str, placement_region: str | None, offices: Iterable[OfficeArea]) -> Placement:
    """The owning office of a worker placed in ``destination_country`` (and ``placement_region``)."""
    here = {o.code: o for o in offices if o.country == destination_country}
    principal = principal_office(destination_country, here.values())
    if principal is None:
        raise Rejected(NO_OFFICE_FOR_PLACEMENT, "destination_country", "no representation office covers it")
    words = fold(placement_region or "")
    if not words:
        return Placement(principal)
    matched = {
        code
        for code, office in here.items()
        if any(_names(words, fold(name)) for name in (*office.jurisdiction, office.city))
    }
    covered = set().union(*(_ancestors(code, here) for code in matched)) if matched else set()
    specific = matched - covered
    if len(specific) == 1:
        return Placement(specific.pop())
    return Placement(principal, (PLACEMENT_REGION_AMBIGUOUS if specific else PLACEMENT_REGION_UNKNOWN,))


def owning_office(destination_country: str, placement_region: str | None, offices: Iterable[OfficeArea]) -> str:
    """The office code alone (see :func:`place` for the warning of a fallback)."""
    return place(destination_country, placement_region, offices).office
