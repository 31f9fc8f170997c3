"""A small SNAP client that signs exactly like a partner bank (the simulator, `sinergi bank-sim`, tests).

Pure request building is separated from I/O: `token_request`, `transactional_request`, `inquiry_body`,
`payment_request_body` and `read_answer` never touch the network or a clock (the caller passes the time),
so tests check them against connectors/bank/auth.py's rules directly. `TokenSource` and `SnapBankClient`
do the I/O over an `httpx.AsyncClient`.

Signing (domain.md 4.3, docs/banks.md):

- B2B token:      X-SIGNATURE = Base64(SHA256withRSA(private key, clientId + "|" + X-TIMESTAMP))
- transactional:  X-SIGNATURE = Base64(HMAC-SHA512(client secret,
                  METHOD:EndpointUrl:AccessToken:hex(sha256(minify(body))):X-TIMESTAMP)), computed over the
                  exact bytes sent (a statement file that is not JSON is hashed as raw bytes).

Also the development key material of `sinergi up`: one RSA-2048 pair per bank, the public halves handed to
the APIs (SINERGI_BANK_PUBLIC_KEYS) and the private halves written 0600 for the simulator.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from connectors.bank.snap_signing import (
    sign_hmac_sha512,
    sign_rsa_sha256,
    signature_body_digest,
    string_to_sign_token,
)
from services.config import Settings
from services.reference import load_banks

WIB = timezone(timedelta(hours=7))
TOKEN_PATH = "/v1.0/access-token/b2b"  # noqa: S105 (a path)
INQUIRY_PATH = "/v1.0/transfer-va/inquiry"
PAYMENT_PATH = "/v1.0/transfer-va/payment"
STATEMENT_PATH = "/v1.0/bank-statements"
DEFAULT_CHANNEL_ID = "95221"
JSON = "application/json"
KEY_DIR_NAME = Path("run") / "bank-keys"
RSA_BITS = 2048

_CODE = re.compile(r"[0-9]{7}")
_REASON = re.compile(r"[A-Z0-9_]{1,40}")
_AMOUNT = re.compile(r"[0-9]{1,16}\.[0-9]{2}")
_FX_RATE = re.compile(r"[0-9]{1,12}(\.[0-9]{1,6})?")


# --- credentials --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BankCredentials:
    """What a bank holds to call the hub. Secrets never appear in a repr."""

    bank_id: str
    partner_service_id: str
    client_secret: bytes = field(repr=False)
    private_key_pem: bytes | None = field(default=None, repr=False)
    static_token: str | None = field(default=None, repr=False)
    endpoint_url: str = "PATH"  # the bank's EndpointUrl convention: PATH or PATH_AND_QUERY


def key_dir(settings: Settings) -> Path:
    """Where the bank simulator finds `<bank>.pem` (RSA private keys for the B2B token)."""
    return settings.bank_sim_key_dir or Path(settings.data_dir) / KEY_DIR_NAME


def _file_secrets(path: Path) -> dict[str, list[str]]:
    doc: Any = json.loads(path.read_text(encoding="utf-8"))
    secrets = doc.get("client_secrets", {}) if isinstance(doc, dict) else {}
    return {str(k): [str(s) for s in v] for k, v in secrets.items() if isinstance(v, list)}


def bank_credentials(settings: Settings) -> dict[str, BankCredentials]:
    """Every bank of banks.json that can call: a client secret and a private key or a static token.

    During a rotation (two secrets configured) a bank signs with the newest, the last one listed.
    """
    if settings.bank_secrets_file is not None:
        secrets = _file_secrets(settings.bank_secrets_file)
    else:
        secrets = {b: [s.get_secret_value() for s in v] for b, v in settings.bank_client_secrets.items()}
    keys = key_dir(settings)
    out: dict[str, BankCredentials] = {}
    for bank_id, profile in load_banks(settings.banks_file).items():
        if not secrets.get(bank_id):
            continue
        pem_file = keys / f"{bank_id}.pem"
        private = pem_file.read_bytes() if pem_file.is_file() else None
        static = settings.bank_tokens.get(bank_id)
        if private is None and static is None:
            continue
        out[bank_id] = BankCredentials(
            bank_id=bank_id,
            partner_service_id=profile.partner_service_id,
            client_secret=secrets[bank_id][-1].encode("utf-8"),
            private_key_pem=private,
            static_token=static.get_secret_value() if static is not None else None,
            endpoint_url=profile.endpoint_url,
        )
    return out


# --- development key pairs (`sinergi up`) -------------------------------------------------------------
@dataclass(frozen=True)
class KeyPair:
    private_pem: bytes = field(repr=False)
    public_pem: str


def generate_key_pair(bits: int = RSA_BITS) -> KeyPair:
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode("ascii")
    )
    return KeyPair(private, public)


def write_private_keys(directory: Path, pairs: Mapping[str, KeyPair]) -> list[Path]:
    """`<directory>/<bank>.pem`, each created 0600 (the directory 0700) before any byte is written."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(directory, 0o700)
    written = []
    for bank_id, pair in pairs.items():
        path = directory / f"{bank_id}.pem"
        path.unlink(missing_ok=True)  # a left-over file could carry looser permissions
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(pair.private_pem)
        written.append(path)
    return written


def remove_private_keys(paths: Iterable[Path]) -> None:
    """Delete the key files written by `write_private_keys`, then their directory if it is empty."""
    parents = set()
    for path in paths:
        path.unlink(missing_ok=True)
        parents.add(path.parent)
    for parent in parents:
        try:
            parent.rmdir()
        except OSError:
            pass  # not empty (someone else's files) or already gone


@dataclass
class ProvisionedKeys:
    files: list[Path] = field(default_factory=list)

    def remove(self) -> None:
        remove_private_keys(self.files)
        self.files = []


def provision_dev_bank_keys(settings: Settings, env: dict[str, str]) -> ProvisionedKeys:
    """`sinergi up`: when no bank public key is configured, one fresh RSA pair per bank of banks.json.

    The public PEMs go to every child through SINERGI_BANK_PUBLIC_KEYS, the private ones to
    `<data_dir>/run/bank-keys/` (SINERGI_BANK_SIM_KEY_DIR) for the simulator. Nothing happens in
    production or when keys come from a secrets file (the API would not read the environment then).
    """
    if settings.bank_public_keys or settings.bank_secrets_file is not None or settings.environment == "production":
        return ProvisionedKeys()
    pairs = {bank_id: generate_key_pair() for bank_id in load_banks(settings.banks_file)}
    directory = Path(settings.data_dir) / KEY_DIR_NAME
    files = write_private_keys(directory, pairs)
    env["SINERGI_BANK_PUBLIC_KEYS"] = json.dumps({b: [p.public_pem] for b, p in pairs.items()})
    env["SINERGI_BANK_SIM_KEY_DIR"] = str(directory)
    return ProvisionedKeys(files)


# --- pure request building ----------------------------------------------------------------------------
def snap_timestamp(at: datetime) -> str:
    """X-TIMESTAMP as banks send it: WIB, whole seconds, e.g. 2026-12-01T10:55:00+07:00 (25 characters)."""
    return at.astimezone(WIB).isoformat(timespec="seconds")


def new_external_id(rng: random.Random, at: datetime) -> str:
    """X-EXTERNAL-ID: numeric (24 digits), the WIB date then 16 random digits; unique per bank per day."""
    return f"{at.astimezone(WIB):%Y%m%d}{rng.randrange(10**16):016d}"


def encode_json(body: Mapping[str, Any]) -> bytes:
    """The bytes a bank sends (compact, key order kept). The signature covers exactly these bytes."""
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def endpoint_url(path: str, query: str, mode: str) -> str:
    """EndpointUrl in the string to sign: the relative path, or path and query (per bank, domain.md 4.3.5)."""
    return f"{path}?{query}" if mode == "PATH_AND_QUERY" and query else path


@dataclass(frozen=True)
class Prepared:
    """One request ready to send: `target` is the path and query relative to the API's base URL."""

    method: str
    target: str
    headers: dict[str, str]
    content: bytes
    string_to_sign: str = field(default="", repr=False)


def token_request(bank_id: str, private_key_pem: bytes, timestamp: str) -> Prepared:
    """POST /v1.0/access-token/b2b, signed SHA256withRSA over `clientId|X-TIMESTAMP`."""
    sts = string_to_sign_token(bank_id, timestamp)
    return Prepared(
        "POST",
        TOKEN_PATH,
        {
            "X-CLIENT-KEY": bank_id,
            "X-TIMESTAMP": timestamp,
            "X-SIGNATURE": sign_rsa_sha256(private_key_pem, sts),
            "Content-Type": JSON,
        },
        encode_json({"grantType": "client_credentials"}),
        sts,
    )


def transactional_string_to_sign(method: str, url: str, token: str, content: bytes, timestamp: str) -> str:
    """`METHOD:EndpointUrl:AccessToken:hex(sha256(minify(body))):X-TIMESTAMP` (raw bytes when not JSON)."""
    return f"{method.upper()}:{url}:{token}:{signature_body_digest(content)}:{timestamp}"


def transactional_request(
    creds: BankCredentials,
    token: str,
    path: str,
    content: bytes,
    *,
    timestamp: str,
    external_id: str,
    channel_id: str | None = DEFAULT_CHANNEL_ID,
    content_type: str = JSON,
    query: Mapping[str, str] | None = None,
    secret: bytes | None = None,
) -> Prepared:
    """A signed SNAP call (inquiry, payment, statement upload). `secret` overrides the bank's (tests, attacks)."""
    query_string = "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in (query or {}).items())
    target = f"{path}?{query_string}" if query_string else path
    url = endpoint_url(path, query_string, creds.endpoint_url)
    sts = transactional_string_to_sign("POST", url, token, content, timestamp)
    headers = {
        "Authorization": f"Bearer {token}",
        "X-PARTNER-ID": creds.bank_id,
        "X-EXTERNAL-ID": external_id,
        "X-TIMESTAMP": timestamp,
        "X-SIGNATURE": sign_hmac_sha512(secret if secret is not None else creds.client_secret, sts),
        "Content-Type": content_type,
    }
    if channel_id is not None:
        headers["CHANNEL-ID"] = channel_id
    return Prepared("POST", target, headers, content, sts)


def split_va(va: str, partner_service_id: str) -> tuple[str, str]:
    """(partnerServiceId padded to 8, customerNo) of a VA given padded or as digits only; ValueError if
    the VA does not start with this bank's prefix or the customer number is not 1-20 digits."""
    prefix = partner_service_id.strip()
    digits = va.strip()
    if not digits.startswith(prefix) or not digits[len(prefix) :].isdigit() or not 1 <= len(digits) - len(prefix) <= 20:
        raise ValueError("virtual account number does not belong to this bank")
    return partner_service_id.rjust(8), digits[len(prefix) :]


def inquiry_body(
    *,
    partner_service_id: str,
    customer_no: str,
    inquiry_request_id: str,
    trx_date_init: str,
    channel_code: str = "6011",
) -> dict[str, Any]:
    """SNAP VA inquiry (service 24) request body; `inquiryRequestId` becomes the payment's paymentRequestId."""
    psid = partner_service_id.rjust(8)
    return {
        "partnerServiceId": psid,
        "customerNo": customer_no,
        "virtualAccountNo": psid + customer_no,
        "inquiryRequestId": inquiry_request_id,
        "channelCode": channel_code,
        "trxDateInit": trx_date_init,
    }


def payment_request_body(
    *,
    partner_service_id: str,
    customer_no: str,
    payment_request_id: str,
    amount: str,
    currency: str,
    trx_date_time: str,
    fx_rate: str | None = None,
    channel_code: str = "6011",
) -> dict[str, Any]:
    """SNAP VA payment notification (service 25). `amount` is a string with exactly 2 decimals; a foreign
    currency needs `fx_rate` (IDR per unit, <= 6 decimals). Both stay strings: money never passes a float."""
    if _AMOUNT.fullmatch(amount) is None or Decimal(amount) <= 0:
        raise ValueError("amount must be a positive decimal with exactly 2 decimals, e.g. 370000.00")
    if (currency == "IDR") != (fx_rate is None):
        raise ValueError("fx_rate is required for a foreign currency and not allowed for IDR")
    if fx_rate is not None:
        try:
            ok = _FX_RATE.fullmatch(fx_rate) is not None and Decimal(fx_rate) > 0
        except InvalidOperation:
            ok = False
        if not ok:
            raise ValueError("fx_rate must be a positive decimal with at most 6 decimals")
    psid = partner_service_id.rjust(8)
    body: dict[str, Any] = {
        "partnerServiceId": psid,
        "customerNo": customer_no,
        "virtualAccountNo": psid + customer_no,
        "paymentRequestId": payment_request_id,
        "paidAmount": {"value": amount, "currency": currency},
        "trxDateTime": trx_date_time,
        "channelCode": channel_code,
    }
    if fx_rate is not None:
        body["additionalInfo"] = {"fxRate": fx_rate}
    return body


# --- answers ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SnapAnswer:
    """What came back, reduced to codes: `code` is the SNAP responseCode, `reason` sinergi's reason."""

    status: int
    code: str | None
    reason: str | None
    body: dict[str, Any]

    @property
    def endpoint_missing(self) -> bool:
        """A 404 without a SNAP responseCode is the framework's "Not Found": the endpoint is not served
        (yet), as opposed to a SNAP 404 such as 4042412 (unknown VA)."""
        return self.status == 404 and self.code is None


def read_answer(response: httpx.Response) -> SnapAnswer:
    try:
        doc = response.json()
    except ValueError:
        doc = {}
    if not isinstance(doc, dict):
        doc = {}
    code = doc.get("responseCode")
    reason = doc.get("reason")
    return SnapAnswer(
        response.status_code,
        code if isinstance(code, str) and _CODE.fullmatch(code) else None,
        reason if isinstance(reason, str) and _REASON.fullmatch(reason) else None,
        doc,
    )


def amount_of(answer: SnapAnswer) -> tuple[Decimal, str] | None:
    """virtualAccountData.totalAmount of an inquiry answer as (Decimal, currency), or None."""
    data = answer.body.get("virtualAccountData")
    total = data.get("totalAmount") if isinstance(data, dict) else None
    if not isinstance(total, dict):
        return None
    value, currency = total.get("value"), total.get("currency")
    if not isinstance(value, str) or _AMOUNT.fullmatch(value) is None or not isinstance(currency, str):
        return None
    return Decimal(value), currency


# --- I/O ----------------------------------------------------------------------------------------------
class TokenUnavailable(Exception):
    def __init__(self, answer: SnapAnswer | None) -> None:
        super().__init__(f"B2B token refused: {answer.status if answer else 'no answer'}")
        self.answer = answer


async def send(http: httpx.AsyncClient, request: Prepared) -> httpx.Response:
    return await http.request(request.method, request.target, content=request.content, headers=request.headers)


class TokenSource:
    """The bearer token of one bank: a B2B token when the bank holds a private key, cached until shortly
    before it expires (single-flight: concurrent callers share one token call), else the static token."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        creds: BankCredentials,
        *,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.http = http
        self.creds = creds
        self._clock = clock
        self._now = now
        self._token: str | None = None
        self._refresh_at = 0.0
        self._lock = asyncio.Lock()
        self.issued = 0  # B2B tokens obtained

    @property
    def uses_b2b(self) -> bool:
        return self.creds.private_key_pem is not None

    async def get(self) -> str:
        if not self.uses_b2b:
            if self.creds.static_token is None:
                raise TokenUnavailable(None)
            return self.creds.static_token
        async with self._lock:
            if self._token is not None and self._clock() < self._refresh_at:
                return self._token
            assert self.creds.private_key_pem is not None
            request = token_request(self.creds.bank_id, self.creds.private_key_pem, snap_timestamp(self._now()))
            asked_at = self._clock()
            answer = read_answer(await send(self.http, request))
            token = answer.body.get("accessToken")
            if answer.status != 200 or answer.code != "2007300" or not isinstance(token, str) or not token:
                raise TokenUnavailable(answer)
            try:
                lifetime = float(str(answer.body.get("expiresIn", "0")))
            except ValueError:
                lifetime = 0.0
            # Refresh a little early: a token that expires in flight costs a refused call.
            self._refresh_at = asked_at + lifetime - min(60.0, lifetime / 10)
            self._token = token
            self.issued += 1
            return token

    def invalidate(self, token: str) -> None:
        """Forget `token` (the API answered TOKEN_INVALID, e.g. after a restart: tokens live in memory)."""
        if self._token == token:
            self._token = None


class SnapBankClient:
    """One bank talking to the hub: every call signed, each with a fresh X-EXTERNAL-ID unless given."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        creds: BankCredentials,
        *,
        token: str | None = None,
        rng: random.Random | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.http = http
        self.creds = creds
        self.tokens = TokenSource(http, creds, now=now)
        self._fixed_token = token
        self._rng = rng or random.Random()
        self._now = now

    async def token(self) -> str:
        return self._fixed_token or await self.tokens.get()

    async def access_token(self) -> tuple[Prepared, httpx.Response]:
        if self.creds.private_key_pem is None:
            raise ValueError("the B2B token needs the bank's RSA private key")
        request = token_request(self.creds.bank_id, self.creds.private_key_pem, snap_timestamp(self._now()))
        return request, await send(self.http, request)

    async def call(
        self,
        path: str,
        content: bytes,
        *,
        content_type: str = JSON,
        channel_id: str | None = DEFAULT_CHANNEL_ID,
        query: Mapping[str, str] | None = None,
        external_id: str | None = None,
    ) -> tuple[Prepared, httpx.Response]:
        now = self._now()
        request = transactional_request(
            self.creds,
            await self.token(),
            path,
            content,
            timestamp=snap_timestamp(now),
            external_id=external_id or new_external_id(self._rng, now),
            channel_id=channel_id,
            content_type=content_type,
            query=query,
        )
        return request, await send(self.http, request)

    async def inquiry(self, body: Mapping[str, Any]) -> tuple[Prepared, httpx.Response]:
        return await self.call(INQUIRY_PATH, encode_json(body))

    async def payment(self, body: Mapping[str, Any]) -> tuple[Prepared, httpx.Response]:
        return await self.call(PAYMENT_PATH, encode_json(body))

    async def statement(self, content: bytes, filename: str, content_type: str) -> tuple[Prepared, httpx.Response]:
        return await self.call(
            STATEMENT_PATH, content, content_type=content_type, channel_id=None, query={"filename": filename}
        )


STATEMENT_CONTENT_TYPES: Mapping[str, str] = {
    ".json": JSON,
    ".xml": "application/xml",
    ".sta": "text/plain",
    ".mt940": "text/plain",
    ".940": "text/plain",
    ".txt": "text/plain",
    ".csv": "text/csv",
}


def statement_content_type(filename: str) -> str:
    """The Content-Type of a statement upload from its file name (octet-stream when unknown)."""
    return STATEMENT_CONTENT_TYPES.get(Path(filename).suffix.lower(), "application/octet-stream")


# --- `sinergi bank-sim` -------------------------------------------------------------------------------
def default_url(settings: Settings) -> str:
    host = settings.http_host if settings.http_host not in ("", "0.0.0.0", "::") else "127.0.0.1"
    return f"http://{host}:{settings.bank_api_port}"


def cli_credentials(
    settings: Settings, bank_id: str, *, secret: str | None, key_file: Path | None, token: str | None
) -> BankCredentials:
    """A bank's credentials for one CLI call: explicit options win over the settings (and the key directory)."""
    profile = load_banks(settings.banks_file).get(bank_id)
    if profile is None:
        raise ValueError(f"{bank_id} is not a bank of {settings.banks_file.name}")
    known = bank_credentials(settings).get(bank_id)
    if secret is not None:
        client_secret = secret.encode("utf-8")
    elif known is not None:
        client_secret = known.client_secret
    else:
        configured = settings.bank_client_secrets.get(bank_id) or []
        if not configured:
            raise ValueError(f"no client secret for {bank_id}: pass --secret")
        client_secret = configured[-1].get_secret_value().encode("utf-8")
    private = key_file.read_bytes() if key_file is not None else (known.private_key_pem if known else None)
    static = settings.bank_tokens.get(bank_id)
    return BankCredentials(
        bank_id=bank_id,
        partner_service_id=profile.partner_service_id,
        client_secret=client_secret,
        private_key_pem=private,
        static_token=token or (static.get_secret_value() if static is not None else None),
        endpoint_url=profile.endpoint_url,
    )


def describe(request: Prepared, response: httpx.Response) -> str:
    """What an integrator wants to see: the request line and SNAP headers, then the answer."""
    shown = ("X-CLIENT-KEY", "X-PARTNER-ID", "X-EXTERNAL-ID", "X-TIMESTAMP", "CHANNEL-ID", "X-SIGNATURE")
    lines = [f"> {request.method} {request.target}"]
    lines += [f"> {name}: {request.headers[name]}" for name in shown if name in request.headers]
    lines.append(f"> string to sign: {request.string_to_sign}")
    lines.append(f"< HTTP {response.status_code}")
    try:
        lines.append(json.dumps(response.json(), indent=2, ensure_ascii=False))
    except ValueError:
        lines.append(response.text)
    return "\n".join(lines)


def sign_for_cli(secret: str, token: str, path: str, content: bytes, timestamp: str, method: str = "POST") -> str:
    """`sinergi bank-sim sign`: the string to sign and the X-SIGNATURE a bank sends with it."""
    sts = transactional_string_to_sign(method, path, token, content, timestamp)
    return f"string to sign: {sts}\nX-SIGNATURE: {sign_hmac_sha512(secret.encode('utf-8'), sts)}"


async def bank_sim_call(
    url: str,
    creds: BankCredentials,
    action: str,
    *,
    explicit_token: str | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    **args: Any,
) -> tuple[str, bool]:
    """One `sinergi bank-sim` request: (printable exchange, True when the answer was 2xx)."""
    timeout = httpx.Timeout(30.0, connect=5.0)
    async with httpx.AsyncClient(base_url=url, timeout=timeout, transport=transport) as http:
        client = SnapBankClient(http, creds, token=explicit_token)
        if action == "token":
            request, response = await client.access_token()
        elif action == "inquire":
            psid, customer_no = split_va(args["va"], creds.partner_service_id)
            now = datetime.now(UTC)
            body = inquiry_body(
                partner_service_id=psid,
                customer_no=customer_no,
                inquiry_request_id=args.get("request_id") or f"SIM-{now:%Y%m%d}-{random.getrandbits(48):012x}",
                trx_date_init=snap_timestamp(now),
            )
            request, response = await client.inquiry(body)
        elif action == "pay":
            psid, customer_no = split_va(args["va"], creds.partner_service_id)
            now = datetime.now(UTC)
            body = payment_request_body(
                partner_service_id=psid,
                customer_no=customer_no,
                payment_request_id=args.get("request_id") or f"SIM-{now:%Y%m%d}-{random.getrandbits(48):012x}",
                amount=args["amount"],
                currency=args.get("currency") or "IDR",
                fx_rate=args.get("fx_rate"),
                trx_date_time=snap_timestamp(now),
            )
            request, response = await client.payment(body)
        elif action == "statement":
            filename: str = args["filename"]
            content_type = args.get("content_type") or statement_content_type(filename)
            request, response = await client.statement(args["content"], filename, content_type)
        else:  # pragma: no cover - click restricts the choices
            raise ValueError(action)
    return describe(request, response), 200 <= response.status_code < 300
