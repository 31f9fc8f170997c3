"""B2B access tokens for SNAP partners (domain.md 4.3.1): opaque, random, short-lived, bound to one partner.

The issuer keeps only SHA-256(token) in memory, so a memory dump or a log of the table does not yield
usable tokens. Lookup is by that digest: a timing difference can at most reveal bits of a hash of a
256-bit random value, which is useless to an attacker, so no secret is ever compared byte-by-byte.

The table is bounded: each partner holds at most `max_per_partner` live tokens (issuing one more evicts
that partner's oldest, so a partner cannot crowd out the others), and the whole table at most `max_tokens`
(expired entries are swept first, then the globally oldest is evicted). Expired entries are also swept
as issuing goes on. Tokens do not survive a restart: the partner simply asks for a new one.

Pass a monotonic clock (time.monotonic) in production: expiry must not move with wall-clock adjustments.
"""

from __future__ import annotations

import hashlib
import math
import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["MAX_TOKEN_LENGTH", "TokenIssuer"]

TOKEN_BYTES = 32  # secrets.token_urlsafe(32): 43 characters, 256 bits
MAX_TOKEN_LENGTH = 128  # anything longer is not one of ours; refused before hashing


@dataclass(frozen=True, slots=True)
class _Entry:
    partner_id: str
    expires_at: float


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


class TokenIssuer:
    """Issues and resolves bearer tokens. `clock` returns seconds (e.g. time.monotonic)."""

    def __init__(
        self,
        ttl_s: int,
        clock: Callable[[], float],
        *,
        max_tokens: int = 10_000,
        max_per_partner: int = 32,
    ) -> None:
        if ttl_s <= 0:
            raise ValueError("ttl_s must be > 0")
        if max_tokens <= 0 or max_per_partner <= 0:
            raise ValueError("max_tokens and max_per_partner must be > 0")
        self.ttl_s = ttl_s
        self._clock = clock
        self._max_tokens = max_tokens
        self._max_per_partner = max_per_partner
        # digest -> entry, in issue order (= expiry order while the clock does not go backwards)
        self._entries: OrderedDict[bytes, _Entry] = OrderedDict()
        self._per_partner: dict[str, int] = {}
        self._lock = threading.Lock()

    def issue(self, partner_id: str) -> tuple[str, int]:
        """A fresh token for `partner_id` and its lifetime in seconds (SNAP `expiresIn`)."""
        if not partner_id:
            raise ValueError("partner_id must not be empty")
        token = secrets.token_urlsafe(TOKEN_BYTES)
        with self._lock:
            now = self._clock()
            self._sweep(now)
            if self._per_partner.get(partner_id, 0) >= self._max_per_partner:
                self._evict_oldest(partner_id)
            if len(self._entries) >= self._max_tokens:
                self._evict_oldest(None)
            self._entries[_digest(token)] = _Entry(partner_id, now + self.ttl_s)
            self._per_partner[partner_id] = self._per_partner.get(partner_id, 0) + 1
        return token, self.ttl_s

    def resolve(self, token: str) -> str | None:
        """The partner the token was issued to, or None (unknown, revoked or expired)."""
        if not token or len(token) > MAX_TOKEN_LENGTH:
            return None
        key = _digest(token)
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if self._clock() >= entry.expires_at:
                self._remove(key)
                return None
            return entry.partner_id

    def expires_in(self, token: str) -> int | None:
        """Whole seconds the token remains valid (rounded up), or None when it does not resolve."""
        if not token or len(token) > MAX_TOKEN_LENGTH:
            return None
        with self._lock:
            entry = self._entries.get(_digest(token))
            if entry is None:
                return None
            left = entry.expires_at - self._clock()
        return math.ceil(left) if left > 0 else None

    def revoke(self, token: str) -> bool:
        """Forget one token; True if it was known."""
        if not token or len(token) > MAX_TOKEN_LENGTH:
            return False
        with self._lock:
            return self._remove(_digest(token))

    def revoke_partner(self, partner_id: str) -> int:
        """Forget every token of one partner (e.g. after its key was compromised); how many were removed."""
        with self._lock:
            keys = [k for k, e in self._entries.items() if e.partner_id == partner_id]
            for k in keys:
                self._remove(k)
            return len(keys)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    # --- internals (caller holds the lock) ------------------------------------------------------------
    def _remove(self, key: bytes) -> bool:
        entry = self._entries.pop(key, None)
        if entry is None:
            return False
        left = self._per_partner.get(entry.partner_id, 1) - 1
        if left > 0:
            self._per_partner[entry.partner_id] = left
        else:
            self._per_partner.pop(entry.partner_id, None)
        return True

    def _sweep(self, now: float) -> None:
        """Drop expired entries from the front; O(expired). If the table is full, sweep all of it."""
        while self._entries:
            key, entry = next(iter(self._entries.items()))
            if now < entry.expires_at:
                break
            self._remove(key)
        if len(self._entries) >= self._max_tokens:  # clock went backwards at some point: full scan
            for key in [k for k, e in self._entries.items() if now >= e.expires_at]:
                self._remove(key)

    def _evict_oldest(self, partner_id: str | None) -> None:
        for key, entry in self._entries.items():
            if partner_id is None or entry.partner_id == partner_id:
                self._remove(key)
                return
