from __future__ import annotations

import hashlib

import pytest

from connectors.bank.tokens import TokenIssuer


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_issue_and_resolve() -> None:
    clock = FakeClock()
    issuer = TokenIssuer(900, clock)
    token, expires_in = issuer.issue("MANDIRI")
    assert expires_in == 900
    assert len(token) >= 43 and token.isascii()
    assert issuer.resolve(token) == "MANDIRI"
    assert issuer.expires_in(token) == 900
    other, _ = issuer.issue("BNI")
    assert other != token
    assert issuer.resolve(other) == "BNI"


def test_unknown_and_malformed_tokens() -> None:
    issuer = TokenIssuer(900, FakeClock())
    token, _ = issuer.issue("MANDIRI")
    assert issuer.resolve("") is None
    assert issuer.resolve("nope") is None
    assert issuer.resolve(token + "x") is None
    assert issuer.resolve(token[:-1]) is None
    assert issuer.resolve("x" * 10_000) is None
    assert issuer.expires_in("nope") is None


def test_expiry_with_fake_clock() -> None:
    clock = FakeClock()
    issuer = TokenIssuer(900, clock)
    token, _ = issuer.issue("MANDIRI")
    clock.now += 899.5
    assert issuer.resolve(token) == "MANDIRI"
    assert issuer.expires_in(token) == 1
    clock.now += 0.5  # exactly at expiry: no longer valid
    assert issuer.resolve(token) is None
    assert len(issuer) == 0  # removed on the failed resolve
    clock.now -= 10  # a token never comes back once forgotten
    assert issuer.resolve(token) is None


def test_only_hashes_are_stored() -> None:
    issuer = TokenIssuer(900, FakeClock())
    token, _ = issuer.issue("MANDIRI")
    stored = list(issuer._entries)
    assert stored == [hashlib.sha256(token.encode()).digest()]
    assert token.encode() not in repr(issuer.__dict__).encode()


def test_sweep_on_issue() -> None:
    clock = FakeClock()
    issuer = TokenIssuer(60, clock)
    for _ in range(5):
        issuer.issue("MANDIRI")
    assert len(issuer) == 5
    clock.now += 61
    fresh, _ = issuer.issue("BNI")
    assert len(issuer) == 1
    assert issuer.resolve(fresh) == "BNI"


def test_per_partner_cap_evicts_own_oldest() -> None:
    clock = FakeClock()
    issuer = TokenIssuer(900, clock, max_tokens=100, max_per_partner=3)
    bni, _ = issuer.issue("BNI")
    tokens = []
    for _ in range(3):
        clock.now += 1
        tokens.append(issuer.issue("MANDIRI")[0])
    clock.now += 1
    newest, _ = issuer.issue("MANDIRI")
    assert issuer.resolve(tokens[0]) is None
    assert [issuer.resolve(t) for t in [*tokens[1:], newest]] == ["MANDIRI"] * 3
    assert issuer.resolve(bni) == "BNI"  # another partner is never crowded out
    assert len(issuer) == 4


def test_global_cap_bounded() -> None:
    clock = FakeClock()
    issuer = TokenIssuer(900, clock, max_tokens=4, max_per_partner=4)
    issued = [issuer.issue(f"P{i}")[0] for i in range(10)]
    assert len(issuer) == 4
    assert [issuer.resolve(t) for t in issued[-4:]] == ["P6", "P7", "P8", "P9"]
    assert issuer.resolve(issued[0]) is None


def test_global_cap_prefers_expired_after_clock_went_back() -> None:
    clock = FakeClock(1000)
    issuer = TokenIssuer(10, clock, max_tokens=2)
    keep, _ = issuer.issue("A")  # expires at 1010
    clock.now = 900
    expired_later, _ = issuer.issue("B")  # expires at 910, behind A in order
    clock.now = 950
    newest, _ = issuer.issue("C")  # table full: sweeps B (expired) rather than evicting A
    assert issuer.resolve(keep) == "A"
    assert issuer.resolve(newest) == "C"
    assert issuer.resolve(expired_later) is None


def test_revoke() -> None:
    issuer = TokenIssuer(900, FakeClock())
    a, _ = issuer.issue("MANDIRI")
    b, _ = issuer.issue("MANDIRI")
    c, _ = issuer.issue("BNI")
    assert issuer.revoke(a) is True
    assert issuer.revoke(a) is False
    assert issuer.resolve(a) is None
    assert issuer.revoke_partner("MANDIRI") == 1
    assert issuer.resolve(b) is None
    assert issuer.resolve(c) == "BNI"


@pytest.mark.parametrize("kwargs", [{"ttl_s": 0}, {"ttl_s": -1}, {"ttl_s": 10, "max_tokens": 0}])
def test_invalid_config(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        TokenIssuer(clock=FakeClock(), **kwargs)


def test_empty_partner_refused() -> None:
    with pytest.raises(ValueError):
        TokenIssuer(10, FakeClock()).issue("")
