"""SNAP payment notification security, in-process: signatures, tokens, timestamps, X-EXTERNAL-ID replays,
broker outage and hostile bodies. Every request is signed exactly like a bank signs it
(connectors.bank.snap_signing.sign_transactional_hmac over the raw bytes sent)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import FastAPI
from prometheus_client import REGISTRY
from test_bank_api import CUSTOMER_NO, URL, WIB, assert_snap_error, now_ts, payment, snap_headers

from connectors.bank import payment as payment_module
from connectors.bank import snap_signing
from connectors.bank.app import build_context, create_bank_app
from connectors.bank.auth import SnapAuth
from connectors.bank.partners import PartnerRegistry
from connectors.bank.snap_signing import sign_rsa_sha256, sign_transactional_hmac, string_to_sign_token
from connectors.kafka_edge import Headers, InMemoryProducer
from services.config import DEV_BANK_SECRETS, Settings

MANDIRI_SECRET = DEV_BANK_SECRETS["MANDIRI"]
ENDPOINT = "va_payment"


# --- helpers ------------------------------------------------------------------------------------------
def auth_failures(reason: str, partner: str = "MANDIRI") -> float:
    labels = {"api": "bank", "endpoint": ENDPOINT, "partner": partner, "reason": reason}
    return REGISTRY.get_sample_value("sinergi_auth_failures_total", labels) or 0.0


def replays(outcome: str) -> float:
    labels = {"api": "bank", "endpoint": ENDPOINT, "outcome": outcome}
    return REGISTRY.get_sample_value("sinergi_idempotent_replays_total", labels) or 0.0


def raw_of(body: dict[str, Any]) -> bytes:
    return json.dumps(body).encode()


async def post(client: httpx.AsyncClient, raw: bytes, headers: dict[str, str]) -> httpx.Response:
    return await client.post(URL, content=raw, headers=headers)


async def signed(client: httpx.AsyncClient, raw: bytes, **kw: Any) -> httpx.Response:
    return await post(client, raw, snap_headers(raw, **kw))


class WallClock:
    """The auth clock (X-TIMESTAMP window, WIB day of the received time), set by the test."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def ts(self) -> str:
        return self.now.astimezone(WIB).replace(microsecond=0).isoformat()


def compose(
    settings: Settings,
    producer: InMemoryProducer,
    *,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
    reload_every_s: float = 1.0,
) -> FastAPI:
    """The payment endpoint wired like connectors.bank.app.build_context, with the clocks a test controls."""
    ctx = build_context(settings, producer)
    ctx.registry = PartnerRegistry(settings, reload_every_s=reload_every_s)
    ctx.auth = SnapAuth(settings, ctx.registry, ctx.issuer, now=now)
    app = FastAPI()
    app.include_router(payment_module.router(ctx))
    return app


async def open_client(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bank.test")


def assert_nothing_produced(producer: InMemoryProducer) -> None:
    assert producer.attempts == 0
    assert producer.records == []


# --- the good request ---------------------------------------------------------------------------------
async def test_valid_signed_payment_is_recorded_with_the_exact_raw_bytes(
    bank_client: httpx.AsyncClient, producer: InMemoryProducer
) -> None:
    raw = b" \n" + json.dumps(payment(), indent="\t").encode() + b"\n"
    resp = await signed(bank_client, raw)
    assert resp.status_code == 200, resp.text
    assert resp.json()["responseCode"] == "2002500"
    assert resp.json()["virtualAccountData"]["paymentFlagStatus"] == "00"
    assert len(producer.records) == 1
    record = producer.records[0]
    assert record.topic == "bank.payments.raw"
    assert record.value == raw
    assert record.key == CUSTOMER_NO.encode()


async def test_unknown_extra_number_field_is_signed_as_sent(
    bank_client: httpx.AsyncClient, producer: InMemoryProducer
) -> None:
    # A pass-through field spelled 10000.00: the signature covers that spelling, not a float's.
    raw = raw_of(payment())[:-1] + b', "feeAmount": 10000.00}'
    resp = await signed(bank_client, raw)
    assert resp.status_code == 200, resp.text
    assert producer.records[0].value == raw


# --- authentication attacks: 401 (or 400), nothing produced, counted by reason ---------------------------
def _pretty_reordered(raw: bytes) -> bytes:
    doc = json.loads(raw)
    return json.dumps(dict(reversed(list(doc.items()))), indent=2).encode()


def _tamper_one_byte(raw: bytes) -> bytes:
    i = raw.index(b"370000.00")
    return raw[:i] + b"9" + raw[i + 1 :]


BODY_ATTACKS: dict[str, Callable[[bytes], bytes]] = {
    "one tampered byte": _tamper_one_byte,
    "keys reordered": lambda raw: json.dumps(dict(reversed(list(json.loads(raw).items())))).encode(),
    "pretty-printed and reordered": _pretty_reordered,
    "number respelled 10000.00 -> 10000.0": lambda raw: json.dumps(json.loads(raw)).encode(),
    "appended field": lambda raw: raw[:-1] + b', "x": 1}',
}


@pytest.mark.parametrize("attack", list(BODY_ATTACKS), ids=list(BODY_ATTACKS))
async def test_body_changed_after_signing_401(
    bank_client: httpx.AsyncClient, producer: InMemoryProducer, attack: str
) -> None:
    original = raw_of(payment())[:-1] + b', "feeAmount": 10000.00}'
    changed = BODY_ATTACKS[attack](original)
    assert changed != original
    before = auth_failures("SIGNATURE_INVALID")
    resp = await post(bank_client, changed, snap_headers(original))
    assert_snap_error(resp, 401, "4012500", "SIGNATURE_INVALID")
    assert auth_failures("SIGNATURE_INVALID") == before + 1
    assert_nothing_produced(producer)


async def test_whitespace_outside_strings_is_not_part_of_the_signature(
    bank_client: httpx.AsyncClient, producer: InMemoryProducer
) -> None:
    # The SNAP minify rule: a bank's pretty-printer does not break its signature (same key order, same text).
    original = raw_of(payment())
    pretty = json.dumps(json.loads(original), indent=4).encode()
    resp = await post(bank_client, pretty, snap_headers(original))
    assert resp.status_code == 200, resp.text
    assert producer.records[0].value == pretty


def _sig_headers(raw: bytes, **kw: Any) -> dict[str, str]:
    return snap_headers(raw, **kw)


@pytest.mark.parametrize(
    ("case", "mutate", "status", "code", "reason", "metric"),
    [
        (
            "another partner's secret",
            lambda raw: _sig_headers(raw, secret=DEV_BANK_SECRETS["BNI"]),
            401,
            "4012500",
            "SIGNATURE_INVALID",
            "SIGNATURE_INVALID",
        ),
        (
            "signature of another path",
            lambda raw: {
                **_sig_headers(raw),
                "X-SIGNATURE": sign_transactional_hmac(
                    MANDIRI_SECRET.encode(), "POST", "/v1.0/transfer-va/inquiry", "dev-token-mandiri", raw, "x"
                ),
            },
            401,
            "4012500",
            "SIGNATURE_INVALID",
            "SIGNATURE_INVALID",
        ),
        (
            "signed over another timestamp",
            lambda raw: {**_sig_headers(raw, timestamp=now_ts(-1)), "X-TIMESTAMP": now_ts()},
            401,
            "4012500",
            "SIGNATURE_INVALID",
            "SIGNATURE_INVALID",
        ),
        (
            "signature not base64",
            lambda raw: {**_sig_headers(raw), "X-SIGNATURE": "not base64!!"},
            401,
            "4012500",
            "SIGNATURE_INVALID",
            "SIGNATURE_INVALID",
        ),
        (
            "timestamp too old",
            lambda raw: _sig_headers(raw, timestamp=now_ts(-3600)),
            401,
            "4012500",
            "TIMESTAMP_OUT_OF_WINDOW",
            "TIMESTAMP_OUT_OF_WINDOW",
        ),
        (
            "timestamp in the future",
            lambda raw: _sig_headers(raw, timestamp=now_ts(3600)),
            401,
            "4012500",
            "TIMESTAMP_OUT_OF_WINDOW",
            "TIMESTAMP_OUT_OF_WINDOW",
        ),
        (
            "another bank's token",
            lambda raw: _sig_headers(raw, token="dev-token-bni"),
            401,
            "4012501",
            "TOKEN_INVALID",
            "TOKEN_INVALID",
        ),
        (
            "another bank entirely, claiming Mandiri",
            lambda raw: _sig_headers(raw, token="dev-token-bni", secret=DEV_BANK_SECRETS["BNI"]),
            401,
            "4012501",
            "TOKEN_INVALID",
            "TOKEN_INVALID",
        ),
        ("no token", lambda raw: _sig_headers(raw, token=None), 401, "4012501", "TOKEN_INVALID", "TOKEN_INVALID"),
        (
            "not a bearer token",
            lambda raw: {**_sig_headers(raw), "Authorization": "Basic ZGV2LXRva2VuLW1hbmRpcmk="},
            401,
            "4012501",
            "TOKEN_INVALID",
            "TOKEN_INVALID",
        ),
        (
            "no signature",
            lambda raw: _sig_headers(raw, sign=False),
            400,
            "4002502",
            "HEADER_MISSING",
            "SIGNATURE_MISSING",
        ),
    ],
    ids=lambda v: v if isinstance(v, str) and " " in v else None,
)
async def test_authentication_refusals(
    bank_client: httpx.AsyncClient,
    producer: InMemoryProducer,
    case: str,
    mutate: Callable[[bytes], dict[str, str]],
    status: int,
    code: str,
    reason: str,
    metric: str,
) -> None:
    raw = raw_of(payment())
    before = auth_failures(metric)
    resp = await post(bank_client, raw, mutate(raw))
    assert_snap_error(resp, status, code, reason)
    assert auth_failures(metric) == before + 1, case
    assert_nothing_produced(producer)


async def test_unknown_partner_401_counted_without_its_id(
    bank_client: httpx.AsyncClient, producer: InMemoryProducer
) -> None:
    before = auth_failures("UNKNOWN_PARTNER", partner="unknown")
    resp = await signed(bank_client, raw_of(payment()), partner="EVILBANK", secret="guess")
    assert_snap_error(resp, 401, "4012500", "UNKNOWN_PARTNER")
    assert auth_failures("UNKNOWN_PARTNER", partner="unknown") == before + 1
    assert (
        REGISTRY.get_sample_value(
            "sinergi_auth_failures_total",
            {"api": "bank", "endpoint": ENDPOINT, "partner": "EVILBANK", "reason": "UNKNOWN_PARTNER"},
        )
        is None
    )  # a metric label never takes a caller's value
    assert_nothing_produced(producer)


async def test_timestamp_window_edges(producer: InMemoryProducer, edge_settings: Settings) -> None:
    clock = WallClock(datetime(2025, 9, 1, 3, 0, 0, tzinfo=UTC))
    skew = edge_settings.snap_timestamp_skew_s
    async with await open_client(compose(edge_settings, producer, now=clock)) as client:
        raw = raw_of(payment())
        inside = [clock.now - timedelta(seconds=skew), clock.now + timedelta(seconds=skew)]
        outside = [clock.now - timedelta(seconds=skew + 1), clock.now + timedelta(seconds=skew + 1)]
        for n, t in enumerate(inside + outside):
            ts = t.astimezone(WIB).isoformat()
            resp = await signed(client, raw, timestamp=ts, external_id=str(n + 1))
            if t in inside:
                assert resp.status_code == 200, resp.text
            else:
                assert_snap_error(resp, 401, "4012500", "TIMESTAMP_OUT_OF_WINDOW")
    assert len(producer.records) == 2


def _keypair() -> tuple[bytes, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, public.decode("ascii")


async def test_expired_b2b_token_401(producer: InMemoryProducer) -> None:
    private, public = _keypair()
    token_clock = [1000.0]
    settings = Settings(bank_public_keys={"MANDIRI": [public]}, snap_token_ttl_s=60)
    app = create_bank_app(settings, producer, token_clock=lambda: token_clock[0])
    async with await open_client(app) as client:
        ts = now_ts()
        grant = await client.post(
            "/v1.0/access-token/b2b",
            content=b'{"grantType":"client_credentials"}',
            headers={
                "Content-Type": "application/json",
                "X-CLIENT-KEY": "MANDIRI",
                "X-TIMESTAMP": ts,
                "X-SIGNATURE": sign_rsa_sha256(private, string_to_sign_token("MANDIRI", ts)),
            },
        )
        token = grant.json()["accessToken"]
        raw = raw_of(payment())
        assert (await signed(client, raw, token=token, external_id="1")).status_code == 200
        token_clock[0] += 60
        before = auth_failures("TOKEN_INVALID")
        resp = await signed(client, raw, token=token, external_id="2")
        assert_snap_error(resp, 401, "4012501", "TOKEN_INVALID")
        assert auth_failures("TOKEN_INVALID") == before + 1
    assert len(producer.records) == 1


# --- constant-time comparison and key rotation ----------------------------------------------------------
async def test_hmac_compared_in_constant_time_against_every_secret(
    producer: InMemoryProducer, monkeypatch: pytest.MonkeyPatch
) -> None:
    old, new = "mandiri-secret-old", "mandiri-secret-new"
    settings = Settings(bank_client_secrets={"MANDIRI": [old, new]})
    real = hmac.compare_digest
    calls: list[tuple[bytes, bytes]] = []

    def recording(a: Any, b: Any) -> bool:
        if isinstance(a, bytes) and len(a) == hashlib.sha512().digest_size:
            calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(snap_signing.hmac, "compare_digest", recording)
    app = create_bank_app(settings, producer)
    raw = raw_of(payment())
    async with await open_client(app) as client:
        for n, (secret, status) in enumerate([(new, 200), (old, 200), ("not-configured", 401)]):
            calls.clear()
            ts = now_ts()
            headers = snap_headers(raw, secret=secret, timestamp=ts, external_id=str(n + 1))
            assert (await post(client, raw, headers)).status_code == status
            digest = hashlib.sha256(snap_signing.minify_json_bytes(raw)).hexdigest()
            sts = f"POST:{URL}:dev-token-mandiri:{digest}:{ts}"
            expected = {hmac.new(s.encode(), sts.encode(), hashlib.sha512).digest() for s in (old, new)}
            assert {a for a, _ in calls} == expected  # each configured secret, no early exit on a match
            assert len(calls) == 2


def _write_secrets(path: Path, secrets: list[str] | None, *, raw: str | None = None) -> None:
    text = raw if raw is not None else json.dumps({"client_secrets": {"MANDIRI": secrets}})
    previous = path.stat().st_mtime_ns if path.exists() else 0
    path.write_text(text, encoding="utf-8")
    # A rewrite within the filesystem's timestamp granularity must still look changed.
    stamp = max(time.time_ns(), previous + 1_000_000)
    os.utime(path, ns=(stamp, stamp))


async def test_secret_rotation_through_the_secrets_file(producer: InMemoryProducer, tmp_path: Path) -> None:
    path = tmp_path / "bank-secrets.json"
    _write_secrets(path, ["old-secret", "new-secret"])
    settings = Settings(bank_secrets_file=path)
    app = compose(settings, producer, reload_every_s=0)
    raw = raw_of(payment())
    ids = iter(range(1, 100))
    async with await open_client(app) as client:

        async def status(secret: str) -> int:
            return (await signed(client, raw, secret=secret, external_id=str(next(ids)))).status_code

        assert await status("old-secret") == 200  # during the overlap both verify
        assert await status("new-secret") == 200
        _write_secrets(path, ["new-secret"])
        assert await status("old-secret") == 401
        assert await status("new-secret") == 200
        _write_secrets(path, None, raw="{ not json")  # a bad edit keeps the secrets in force
        assert await status("new-secret") == 200
        assert await status("old-secret") == 401
    assert len(producer.records) == 4


# --- X-EXTERNAL-ID replays ----------------------------------------------------------------------------
async def test_same_request_again_same_response_one_record(
    bank_client: httpx.AsyncClient, producer: InMemoryProducer
) -> None:
    raw = raw_of(payment())
    first = await signed(bank_client, raw)
    before = replays("replayed")
    again = await signed(bank_client, raw)  # re-signed with a later X-TIMESTAMP, like a bank's retry
    reformatted = json.dumps(json.loads(raw), indent=1).encode()
    third = await signed(bank_client, reformatted)  # same minified body: the same request
    assert first.status_code == again.status_code == third.status_code == 200
    assert first.content == again.content == third.content
    assert len(producer.records) == 1
    assert replays("replayed") == before + 2


class GatedProducer(InMemoryProducer):
    """Holds every send until `gate` is set, so that a burst of requests overlaps the first produce."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.entered = 0

    async def send(self, topic: str, key: bytes, value: bytes, headers: Headers) -> None:
        self.entered += 1
        await self.gate.wait()
        await super().send(topic, key, value, headers)


async def until(condition: Callable[[], bool], deadline_s: float = 10.0) -> None:
    end = time.monotonic() + deadline_s
    while not condition():
        if time.monotonic() > end:
            raise AssertionError("condition not met before the deadline")
        await asyncio.sleep(0.001)


async def test_fifty_identical_requests_in_parallel_one_record(edge_settings: Settings) -> None:
    producer = GatedProducer()
    app = create_bank_app(edge_settings, producer)
    raw = raw_of(payment())
    headers = snap_headers(raw)
    before = replays("replayed")
    async with await open_client(app) as client:
        burst = asyncio.gather(*(post(client, raw, headers) for _ in range(50)))
        await until(lambda: producer.entered >= 1)
        producer.gate.set()
        responses = await burst
    assert [r.status_code for r in responses] == [200] * 50
    assert len({r.content for r in responses}) == 1
    assert producer.entered == 1
    assert len(producer.records) == 1
    assert replays("replayed") == before + 49


async def test_same_external_id_other_body_409(bank_client: httpx.AsyncClient, producer: InMemoryProducer) -> None:
    assert (await signed(bank_client, raw_of(payment()))).status_code == 200
    before = replays("conflict")
    other = raw_of(payment(paymentRequestId="MDR-20250901-000999"))
    resp = await signed(bank_client, other)
    assert_snap_error(resp, 409, "4092500", "EXTERNAL_ID_CONFLICT")
    assert "MDR" not in resp.text
    assert replays("conflict") == before + 1
    assert len(producer.records) == 1
    # The same external id from another bank is another key.
    bni = raw_of(payment(partnerServiceId="   88002", virtualAccountNo="   88002" + CUSTOMER_NO))
    assert (await signed(bank_client, bni, partner="BNI", token="dev-token-bni")).status_code == 200
    assert len(producer.records) == 2


async def test_domain_refusal_is_replayed_not_revalidated(
    bank_client: httpx.AsyncClient, producer: InMemoryProducer
) -> None:
    raw = raw_of(payment(paidAmount={"value": "1e5", "currency": "IDR"}))
    first = await signed(bank_client, raw)
    before = replays("replayed")
    again = await signed(bank_client, raw)
    assert_snap_error(first, 400, "4002501", "AMOUNT_FORMAT")
    assert (again.status_code, again.content) == (first.status_code, first.content)
    assert replays("replayed") == before + 1
    assert_nothing_produced(producer)


async def test_auth_failure_does_not_occupy_the_external_id(
    bank_client: httpx.AsyncClient, producer: InMemoryProducer
) -> None:
    forged = raw_of(payment(paymentRequestId="FORGED"))
    assert (await signed(bank_client, forged, secret="guessed")).status_code == 401
    resp = await signed(bank_client, raw_of(payment()))
    assert resp.status_code == 200, resp.text
    assert len(producer.records) == 1


async def test_same_external_id_next_wib_day_is_a_new_request(
    producer: InMemoryProducer, edge_settings: Settings
) -> None:
    clock = WallClock(datetime(2025, 9, 1, 16, 59, 30, tzinfo=UTC))  # 23:59:30 WIB
    raw = raw_of(payment())
    async with await open_client(compose(edge_settings, producer, now=clock)) as client:
        assert (await signed(client, raw, timestamp=clock.ts())).status_code == 200
        assert (await signed(client, raw, timestamp=clock.ts())).status_code == 200  # replay, same day
        assert len(producer.records) == 1
        clock.now += timedelta(minutes=1)  # 00:00:30 WIB, the next day
        assert (await signed(client, raw, timestamp=clock.ts())).status_code == 200
        assert len(producer.records) == 2
        other = raw_of(payment(paymentRequestId="MDR-20250902-000001"))
        assert (await signed(client, other, timestamp=clock.ts())).status_code == 409
    # The bank's own same-day retry is deduplicated downstream by event id: both records carry the same one.
    assert producer.records[0].header("sinergi-event-id") == producer.records[1].header("sinergi-event-id")


# --- broker outage --------------------------------------------------------------------------------------
async def test_broker_down_then_identical_retry_recorded_once(
    bank_client: httpx.AsyncClient, producer: InMemoryProducer
) -> None:
    raw = raw_of(payment())
    producer.failing = "TIMEOUT"
    down = await signed(bank_client, raw)
    assert_snap_error(down, 503, "5002502", "BROKER_UNAVAILABLE")
    assert int(down.headers["Retry-After"]) > 0
    assert producer.records == []
    producer.failing = None
    retry = await signed(bank_client, raw)
    assert retry.status_code == 200, retry.text
    assert len(producer.records) == 1
    assert (await signed(bank_client, raw)).content == retry.content
    assert len(producer.records) == 1
    assert producer.attempts == 2


# --- hostile bodies that pass authentication ---------------------------------------------------------------
def _with_amount(literal: bytes) -> bytes:
    return raw_of(payment()).replace(b'"370000.00"', literal)


HOSTILE: dict[str, tuple[bytes, int, str, str]] = {
    "1000-deep nesting": (
        b'{"additionalInfo":' + b"[" * 1000 + b"]" * 1000 + b"}",
        400,
        "4002500",
        "JSON_TOO_DEEP",
    ),
    "invalid UTF-8": (raw_of(payment()).replace(b"Siti", b"S\xffti"), 400, "4002500", "INVALID_UTF8"),
    "NaN": (_with_amount(b"NaN"), 400, "4002500", "NON_FINITE_NUMBER"),
    "Infinity": (_with_amount(b"-Infinity"), 400, "4002500", "NON_FINITE_NUMBER"),
    "huge exponent": (_with_amount(b"1e999"), 400, "4002500", "NON_FINITE_NUMBER"),
    "negative": (_with_amount(b'"-370000.00"'), 400, "4002501", "AMOUNT_FORMAT"),
    "zero": (_with_amount(b'"0.00"'), 400, "4002501", "AMOUNT_FORMAT"),
    "over-precise": (_with_amount(b'"1.001"'), 400, "4002501", "AMOUNT_FORMAT"),
    "exponent string": (_with_amount(b'"1e5"'), 400, "4002501", "AMOUNT_FORMAT"),
    "JSON number": (_with_amount(b"370000.00"), 400, "4002501", "AMOUNT_FORMAT"),
    "JSON integer": (_with_amount(b"370000"), 400, "4002501", "AMOUNT_FORMAT"),
    "JSON exponent number": (_with_amount(b"1e5"), 400, "4002501", "AMOUNT_FORMAT"),
    "duplicate key": (_with_amount(b'"1.00", "value": "370000.00"'), 400, "4002500", "DUPLICATE_KEY"),
    "not an object": (b'["paidAmount"]', 400, "4002500", "BODY_NOT_OBJECT"),
}


@pytest.mark.parametrize("case", list(HOSTILE), ids=list(HOSTILE))
async def test_hostile_signed_body_4xx_never_500(
    bank_client: httpx.AsyncClient, producer: InMemoryProducer, case: str
) -> None:
    raw, status, code, reason = HOSTILE[case]
    resp = await signed(bank_client, raw)
    assert_snap_error(resp, status, code, reason)
    assert_nothing_produced(producer)


async def test_oversized_signed_body_413(
    bank_client: httpx.AsyncClient, producer: InMemoryProducer, edge_settings: Settings
) -> None:
    raw = raw_of(payment(virtualAccountName="x" * edge_settings.max_body_bytes))
    resp = await signed(bank_client, raw)
    assert_snap_error(resp, 413, "4002500", "BODY_TOO_LARGE")
    assert_nothing_produced(producer)


async def test_large_amount_echoed_exactly_never_through_float(
    bank_client: httpx.AsyncClient, producer: InMemoryProducer
) -> None:
    # 2**53 + 1: a float would answer 9007199254740992.0.
    raw = _with_amount(b'"9007199254740993.00"')
    resp = await signed(bank_client, raw)
    assert resp.status_code == 200, resp.text
    assert b'"value":"9007199254740993.00"' in resp.content
    assert producer.records[0].value == raw


async def test_foreign_currency_signed(bank_client: httpx.AsyncClient, producer: InMemoryProducer) -> None:
    raw = raw_of(payment(paidAmount={"value": "107.25", "currency": "MYR"}, additionalInfo={"fxRate": "3450.123456"}))
    resp = await signed(bank_client, raw)
    assert resp.status_code == 200, resp.text
    assert resp.json()["virtualAccountData"]["paidAmount"] == {"value": "107.25", "currency": "MYR"}
    assert producer.records[0].value == raw
