"""SNAP B2B access token (`POST /v1.0/access-token/b2b`), in-process, and its use on the payment endpoint."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from test_bank_api import assert_snap_error, snap_headers

from connectors.bank.app import create_bank_app
from connectors.bank.snap_signing import SnapKeyError, sign_rsa_sha256, string_to_sign_token
from connectors.kafka_edge import InMemoryProducer
from services.config import Settings

TOKEN_URL = "/v1.0/access-token/b2b"
PAY_URL = "/v1.0/transfer-va/payment"
PSID = "   88001"  # MANDIRI in banks.json
CUSTOMER_NO = "123456789012345678"
GRANT = {"grantType": "client_credentials"}


def _keypair() -> tuple[bytes, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, public.decode("ascii")


@pytest.fixture(scope="module")
def mandiri_key() -> tuple[bytes, str]:
    return _keypair()


@pytest.fixture(scope="module")
def bni_key() -> tuple[bytes, str]:
    return _keypair()


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def settings(mandiri_key: tuple[bytes, str], bni_key: tuple[bytes, str]) -> Settings:
    return Settings(bank_public_keys={"MANDIRI": [mandiri_key[1]], "BNI": [bni_key[1]]}, snap_token_ttl_s=900)


@pytest.fixture
async def client(settings: Settings, producer: InMemoryProducer, clock: FakeClock) -> AsyncIterator[httpx.AsyncClient]:
    app = create_bank_app(settings, producer, token_clock=clock)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bank.test") as c:
        yield c


def now_ts(delta_s: float = 0) -> str:
    t = datetime.now(UTC).astimezone(UTC) + timedelta(seconds=delta_s)
    return t.replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%S+00:00")


def token_headers(
    private_pem: bytes | None,
    client_id: str | None = "MANDIRI",
    timestamp: str | None = None,
    signature: str | None = None,
    signed_client_id: str | None = None,
) -> dict[str, str]:
    ts = timestamp if timestamp is not None else now_ts()
    if signature is None and private_pem is not None:
        signature = sign_rsa_sha256(private_pem, string_to_sign_token(signed_client_id or client_id or "", ts))
    out = {"Content-Type": "application/json", "X-TIMESTAMP": ts}
    if client_id is not None:
        out["X-CLIENT-KEY"] = client_id
    if signature is not None:
        out["X-SIGNATURE"] = signature
    return out


async def get_token(client: httpx.AsyncClient, headers: dict[str, str], body: Any = GRANT) -> httpx.Response:
    return await client.post(TOKEN_URL, content=json.dumps(body).encode(), headers=headers)


async def pay(client: httpx.AsyncClient, token: str, external_id: str = "20250901000000000001") -> httpx.Response:
    body = {
        "partnerServiceId": PSID,
        "customerNo": CUSTOMER_NO,
        "virtualAccountNo": PSID + CUSTOMER_NO,
        "virtualAccountName": "Siti Aminah",
        "paymentRequestId": "MDR-20250901-000123",
        "paidAmount": {"value": "370000.00", "currency": "IDR"},
        "trxDateTime": "2025-09-01T10:15:00+07:00",
        "channelCode": "6011",
        "partnerReferenceNo": "MDR123",
    }
    raw = json.dumps(body).encode()
    return await client.post(PAY_URL, content=raw, headers=snap_headers(raw, token=token, external_id=external_id))


# --- success ---------------------------------------------------------------------------------------------
async def test_good_signature_issues_token(client: httpx.AsyncClient, mandiri_key: tuple[bytes, str]) -> None:
    resp = await get_token(client, token_headers(mandiri_key[0]))
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert set(body) == {"responseCode", "responseMessage", "accessToken", "tokenType", "expiresIn"}
    assert body["responseCode"] == "2007300"
    assert body["tokenType"] == "Bearer"
    assert body["expiresIn"] == "900"
    assert len(body["accessToken"]) >= 40


async def test_issued_token_authorises_payment(
    client: httpx.AsyncClient, producer: InMemoryProducer, mandiri_key: tuple[bytes, str]
) -> None:
    token = (await get_token(client, token_headers(mandiri_key[0]))).json()["accessToken"]
    resp = await pay(client, token)
    assert resp.status_code == 200, resp.text
    assert resp.json()["responseCode"] == "2002500"
    assert len(producer.records) == 1
    assert producer.records[0].header("sinergi-bank") == b"MANDIRI"


async def test_static_token_still_authorises_payment(client: httpx.AsyncClient, producer: InMemoryProducer) -> None:
    resp = await pay(client, "dev-token-mandiri")
    assert resp.status_code == 200, resp.text
    assert len(producer.records) == 1


async def test_rotation_second_key_verifies(
    producer: InMemoryProducer, mandiri_key: tuple[bytes, str], bni_key: tuple[bytes, str]
) -> None:
    settings = Settings(bank_public_keys={"MANDIRI": [bni_key[1], mandiri_key[1]]})
    app = create_bank_app(settings, producer)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bank.test") as c:
        resp = await get_token(c, token_headers(mandiri_key[0]))
    assert resp.status_code == 200, resp.text


# --- refusals ---------------------------------------------------------------------------------------------
async def test_wrong_key_401(client: httpx.AsyncClient, producer: InMemoryProducer, bni_key: tuple[bytes, str]) -> None:
    resp = await get_token(client, token_headers(bni_key[0], client_id="MANDIRI"))
    assert_snap_error(resp, 401, "4017300", "SIGNATURE_INVALID")
    assert producer.attempts == 0


async def test_tampered_signature_401(client: httpx.AsyncClient, mandiri_key: tuple[bytes, str]) -> None:
    headers = token_headers(mandiri_key[0])
    sig = headers["X-SIGNATURE"]
    headers["X-SIGNATURE"] = ("B" if sig[0] != "B" else "C") + sig[1:]
    assert_snap_error(await get_token(client, headers), 401, "4017300", "SIGNATURE_INVALID")
    headers["X-SIGNATURE"] = "not base64!!"
    assert_snap_error(await get_token(client, headers), 401, "4017300", "SIGNATURE_INVALID")


async def test_other_partners_client_id_401(client: httpx.AsyncClient, mandiri_key: tuple[bytes, str]) -> None:
    # MANDIRI signs "BNI|ts" with its own key, claiming to be BNI: BNI's key does not verify it.
    headers = token_headers(mandiri_key[0], client_id="BNI")
    assert_snap_error(await get_token(client, headers), 401, "4017300", "SIGNATURE_INVALID")
    # A signature over MANDIRI's string presented as BNI.
    headers = token_headers(mandiri_key[0], client_id="BNI", signed_client_id="MANDIRI")
    assert_snap_error(await get_token(client, headers), 401, "4017300", "SIGNATURE_INVALID")


async def test_unknown_client_401(client: httpx.AsyncClient, mandiri_key: tuple[bytes, str]) -> None:
    # MAYBANK_MY has a static token but no public key configured.
    for client_id in ("NOBANK", "MAYBANK_MY"):
        headers = token_headers(mandiri_key[0], client_id=client_id)
        assert_snap_error(await get_token(client, headers), 401, "4017300", "UNKNOWN_CLIENT")


@pytest.mark.parametrize("delta_s", [-3600, 3600])
async def test_stale_timestamp_401(client: httpx.AsyncClient, mandiri_key: tuple[bytes, str], delta_s: int) -> None:
    headers = token_headers(mandiri_key[0], timestamp=now_ts(delta_s))
    assert_snap_error(await get_token(client, headers), 401, "4017300", "TIMESTAMP_OUT_OF_WINDOW")


async def test_bad_timestamp_format_400(client: httpx.AsyncClient, mandiri_key: tuple[bytes, str]) -> None:
    headers = token_headers(mandiri_key[0], timestamp="2025-09-01 10:15:01")
    assert_snap_error(await get_token(client, headers), 400, "4007301", "HEADER_INVALID")


@pytest.mark.parametrize("header", ["X-CLIENT-KEY", "X-TIMESTAMP", "X-SIGNATURE"])
async def test_missing_header_400(client: httpx.AsyncClient, mandiri_key: tuple[bytes, str], header: str) -> None:
    headers = token_headers(mandiri_key[0])
    del headers[header]
    resp = await get_token(client, headers)
    assert_snap_error(resp, 400, "4007302", "HEADER_MISSING")
    assert header in resp.json()["responseMessage"]


async def test_grant_type(client: httpx.AsyncClient, mandiri_key: tuple[bytes, str]) -> None:
    resp = await get_token(client, token_headers(mandiri_key[0]), body={})
    assert_snap_error(resp, 400, "4007302", "GRANT_TYPE_MISSING")
    resp = await get_token(client, token_headers(mandiri_key[0]), body={"grantType": "password"})
    assert_snap_error(resp, 400, "4007301", "GRANT_TYPE_INVALID")
    resp = await client.post(TOKEN_URL, content=b"{not json", headers=token_headers(mandiri_key[0]))
    assert_snap_error(resp, 400, "4007300")


async def test_refusals_produce_nothing_and_issue_nothing(
    client: httpx.AsyncClient, producer: InMemoryProducer, bni_key: tuple[bytes, str]
) -> None:
    resp = await get_token(client, token_headers(bni_key[0], client_id="MANDIRI"))
    assert resp.status_code == 401
    assert "accessToken" not in resp.json()
    assert producer.attempts == 0


# --- token lifetime on the payment endpoint --------------------------------------------------------------
async def test_expired_token_refused_on_payment(
    client: httpx.AsyncClient, producer: InMemoryProducer, clock: FakeClock, mandiri_key: tuple[bytes, str]
) -> None:
    token = (await get_token(client, token_headers(mandiri_key[0]))).json()["accessToken"]
    clock.now += 899
    assert (await pay(client, token)).status_code == 200
    clock.now += 1
    resp = await pay(client, token, external_id="20250901000000000002")
    assert_snap_error(resp, 401, "4012501", "TOKEN_INVALID")
    assert len(producer.records) == 1


async def test_short_ttl_from_settings(producer: InMemoryProducer, mandiri_key: tuple[bytes, str]) -> None:
    clock = FakeClock()
    settings = Settings(bank_public_keys={"MANDIRI": [mandiri_key[1]]}, snap_token_ttl_s=1)
    app = create_bank_app(settings, producer, token_clock=clock)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bank.test") as c:
        body = (await get_token(c, token_headers(mandiri_key[0]))).json()
        assert body["expiresIn"] == "1"
        clock.now += 1
        assert_snap_error(await pay(c, body["accessToken"]), 401, "4012501", "TOKEN_INVALID")
    assert producer.attempts == 0


async def test_token_of_one_bank_cannot_pay_as_another(
    client: httpx.AsyncClient, producer: InMemoryProducer, bni_key: tuple[bytes, str]
) -> None:
    token = (await get_token(client, token_headers(bni_key[0], client_id="BNI"))).json()["accessToken"]
    assert_snap_error(await pay(client, token), 401, "4012501", "TOKEN_INVALID")
    assert producer.attempts == 0


def test_bad_pem_fails_at_startup(producer: InMemoryProducer) -> None:
    settings = Settings(bank_public_keys={"MANDIRI": ["-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----\n"]})
    with pytest.raises(SnapKeyError):
        create_bank_app(settings, producer)
