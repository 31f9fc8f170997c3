"""services/bank_client.py: what it builds is what the bank API verifies, byte for byte."""

from __future__ import annotations

import asyncio
import json
import os
import random
import stat
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.requests import Request

from connectors.bank.auth import SnapAuth
from connectors.bank.errors import SnapProblem
from connectors.bank.partners import PartnerRegistry
from connectors.bank.snap_signing import (
    load_rsa_private_key,
    load_rsa_public_key,
    sign_transactional_hmac,
    string_to_sign_token,
    verify_rsa_sha256,
)
from connectors.bank.tokens import TokenIssuer
from connectors.http_common import RequestObservation
from services.__main__ import cli
from services.bank_client import (
    PAYMENT_PATH,
    STATEMENT_PATH,
    TOKEN_PATH,
    BankCredentials,
    Prepared,
    TokenSource,
    TokenUnavailable,
    amount_of,
    bank_credentials,
    encode_json,
    generate_key_pair,
    inquiry_body,
    new_external_id,
    payment_request_body,
    provision_dev_bank_keys,
    read_answer,
    remove_private_keys,
    sign_for_cli,
    snap_timestamp,
    split_va,
    statement_content_type,
    token_request,
    transactional_request,
    write_private_keys,
)
from services.config import DEV_BANK_SECRETS, Settings
from services.reference import load_banks

NOW = datetime(2026, 12, 1, 3, 55, tzinfo=UTC)
SETTINGS = Settings()
MANDIRI = BankCredentials(
    bank_id="MANDIRI",
    partner_service_id="   88001",
    client_secret=DEV_BANK_SECRETS["MANDIRI"].encode(),
    static_token="dev-token-mandiri",
)
CUSTOMER = "123456789012345678"


@pytest.fixture(scope="module")
def pair() -> tuple[bytes, str]:
    keys = generate_key_pair()
    return keys.private_pem, keys.public_pem


def _request(prepared: Prepared) -> Request:
    """The Starlette request the bank API would see for `prepared` (headers, path, query, body)."""
    path, _, query = prepared.target.partition("?")
    scope = {
        "type": "http",
        "method": prepared.method,
        "path": path,
        "query_string": query.encode(),
        "headers": [(k.lower().encode(), v.encode()) for k, v in prepared.headers.items()] + [(b"host", b"bank.test")],
    }
    return Request(scope)


def _verify(prepared: Prepared, settings: Settings = SETTINGS, content: bytes | None = None) -> str:
    """SnapAuth.verify on the request as received; the authenticated bank id (raises SnapProblem)."""
    registry = PartnerRegistry(settings)
    auth = SnapAuth(settings, registry, TokenIssuer(900, lambda: 0.0), now=lambda: NOW)
    received = prepared.content if content is None else content
    return auth.verify(_request(prepared), received, "25", RequestObservation("bank", "test")).partner.bank_id


def _payment(**overrides: str) -> bytes:
    body = payment_request_body(
        partner_service_id="   88001",
        customer_no=CUSTOMER,
        payment_request_id="MDR-20261201-0001",
        amount="370000.00",
        currency="IDR",
        trx_date_time="2026-12-01T10:54:58+07:00",
    )
    body.update(overrides)
    return encode_json(body)


def _signed(content: bytes, path: str = PAYMENT_PATH, **kw: object) -> Prepared:
    return transactional_request(
        MANDIRI,
        "dev-token-mandiri",
        path,
        content,
        timestamp=snap_timestamp(NOW),
        external_id="20261201" + "0" * 15 + "1",
        **kw,  # type: ignore[arg-type]
    )


# --- transactional signatures ----------------------------------------------------------------------------
def test_a_signed_payment_verifies_with_the_bank_apis_own_rules() -> None:
    prepared = _signed(_payment())
    assert _verify(prepared) == "MANDIRI"
    assert prepared.headers["X-SIGNATURE"] == sign_transactional_hmac(
        MANDIRI.client_secret, "POST", PAYMENT_PATH, "dev-token-mandiri", prepared.content, "2026-12-01T10:55:00+07:00"
    )
    assert prepared.headers["X-TIMESTAMP"] == "2026-12-01T10:55:00+07:00"
    assert prepared.headers["CHANNEL-ID"] == "95221"


@pytest.mark.parametrize(
    "tamper",
    [
        lambda raw: raw.replace(b"370000.00", b"370001.00"),  # one value changed after signing
        lambda raw: json.dumps(json.loads(raw), indent=2, sort_keys=True).encode(),  # re-serialised
    ],
)
def test_a_body_changed_after_signing_is_refused(tamper: object) -> None:
    prepared = _signed(_payment())
    with pytest.raises(SnapProblem) as refused:
        _verify(prepared, content=tamper(prepared.content))  # type: ignore[operator]
    assert (refused.value.status, refused.value.code, refused.value.reason) == (401, "4012500", "SIGNATURE_INVALID")


def test_pretty_printed_json_verifies_because_the_digest_is_over_the_minified_bytes() -> None:
    pretty = json.dumps(json.loads(_payment()), indent=4).encode()
    assert _verify(_signed(pretty)) == "MANDIRI"


def test_another_secret_does_not_verify() -> None:
    prepared = _signed(_payment(), secret=b"dev-client-secret-bni")
    with pytest.raises(SnapProblem) as refused:
        _verify(prepared)
    assert refused.value.reason == "SIGNATURE_INVALID"


def test_a_statement_upload_signs_the_raw_file_and_the_query_when_the_bank_says_so(tmp_path: Path) -> None:
    mt940 = b":20:STMT\r\n:25:1370088001\r\n:28C:1/1\r\n:60F:C261201IDR0,00\r\n-\r\n"
    query = {"filename": "a b.sta"}
    plain = _signed(mt940, STATEMENT_PATH, content_type="text/plain", channel_id=None, query=query)
    assert plain.target == f"{STATEMENT_PATH}?filename=a%20b.sta"
    assert "CHANNEL-ID" not in plain.headers and plain.headers["Content-Type"] == "text/plain"
    assert plain.string_to_sign.startswith(f"POST:{STATEMENT_PATH}:dev-token-mandiri:")
    assert _verify(plain) == "MANDIRI"

    # A bank whose EndpointUrl convention includes the query string (banks.json endpoint_url).
    banks = json.loads(SETTINGS.banks_file.read_text())
    for bank in banks["banks"]:
        bank["endpoint_url"] = "PATH_AND_QUERY"
    banks_file = tmp_path / "banks.json"
    banks_file.write_text(json.dumps(banks))
    with_query = Settings(banks_file=banks_file)
    creds = bank_credentials(with_query)["MANDIRI"]
    prepared = transactional_request(
        creds, "dev-token-mandiri", STATEMENT_PATH, mt940, timestamp=snap_timestamp(NOW), external_id="1", query=query
    )
    assert prepared.string_to_sign.startswith(f"POST:{STATEMENT_PATH}?filename=a%20b.sta:")
    assert _verify(prepared, with_query) == "MANDIRI"
    with pytest.raises(SnapProblem):
        _verify(plain, with_query)  # signed over the path alone: refused by a bank profile that signs the query


# --- B2B token -------------------------------------------------------------------------------------------
def test_the_token_request_is_sha256_with_rsa_over_client_id_and_timestamp(pair: tuple[bytes, str]) -> None:
    private, public = pair
    prepared = token_request("MANDIRI", private, "2026-12-01T10:55:00+07:00")
    assert prepared.target == TOKEN_PATH
    assert prepared.headers["X-CLIENT-KEY"] == "MANDIRI"
    assert json.loads(prepared.content) == {"grantType": "client_credentials"}
    sts = string_to_sign_token("MANDIRI", "2026-12-01T10:55:00+07:00")
    assert verify_rsa_sha256([public.encode()], sts, prepared.headers["X-SIGNATURE"])
    assert not verify_rsa_sha256([generate_key_pair().public_pem.encode()], sts, prepared.headers["X-SIGNATURE"])


def _token_api(calls: list[httpx.Request], lifetime: str = "900", status: int = 200) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        if status != 200:
            return httpx.Response(status, json={"responseCode": "4017300", "reason": "SIGNATURE_INVALID"})
        body = {
            "responseCode": "2007300",
            "accessToken": f"t{len(calls)}",
            "tokenType": "Bearer",
            "expiresIn": lifetime,
        }
        return httpx.Response(200, json=body)

    return httpx.MockTransport(handler)


async def test_b2b_token_is_cached_until_shortly_before_expiry_and_shared_by_concurrent_callers(
    pair: tuple[bytes, str],
) -> None:
    calls: list[httpx.Request] = []
    clock = [100.0]
    creds = BankCredentials(**{**MANDIRI.__dict__, "private_key_pem": pair[0]})
    async with httpx.AsyncClient(transport=_token_api(calls), base_url="http://b") as http:
        source = TokenSource(http, creds, clock=lambda: clock[0], now=lambda: NOW)
        tokens = await asyncio.gather(*(source.get() for _ in range(10)))
        assert set(tokens) == {"t1"} and len(calls) == 1
        clock[0] += 839.0  # refreshed 60 s before the 900 s lifetime ends
        assert await source.get() == "t1"
        clock[0] += 1.0
        assert await source.get() == "t2" and len(calls) == 2
        source.invalidate("t2")
        assert await source.get() == "t3"
        assert source.issued == 3
    assert calls[0].url.path == TOKEN_PATH and calls[0].headers["X-CLIENT-KEY"] == "MANDIRI"


async def test_without_a_private_key_the_static_token_is_used_and_a_refusal_is_raised(
    pair: tuple[bytes, str],
) -> None:
    calls: list[httpx.Request] = []
    async with httpx.AsyncClient(transport=_token_api(calls, status=401), base_url="http://b") as http:
        assert await TokenSource(http, MANDIRI).get() == "dev-token-mandiri"
        assert not calls
        keyed = BankCredentials(**{**MANDIRI.__dict__, "private_key_pem": pair[0]})
        with pytest.raises(TokenUnavailable) as refused:
            await TokenSource(http, keyed).get()
    assert refused.value.answer is not None and refused.value.answer.reason == "SIGNATURE_INVALID"


# --- key material ----------------------------------------------------------------------------------------
def test_generated_key_pairs_are_rsa_2048_and_written_owner_only(tmp_path: Path) -> None:
    pairs = {"MANDIRI": generate_key_pair(), "BNI": generate_key_pair()}
    key = load_rsa_private_key(pairs["MANDIRI"].private_pem)
    assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == 2048
    assert (
        load_rsa_public_key(pairs["MANDIRI"].public_pem.encode()).public_numbers() == key.public_key().public_numbers()
    )
    assert pairs["MANDIRI"].public_pem != pairs["BNI"].public_pem
    assert "PRIVATE" not in repr(pairs["MANDIRI"])

    directory = tmp_path / "run" / "bank-keys"
    (directory).mkdir(parents=True)
    (directory / "BNI.pem").write_text("left over, world-readable")
    os.chmod(directory / "BNI.pem", 0o644)
    files = write_private_keys(directory, pairs)
    assert sorted(p.name for p in files) == ["BNI.pem", "MANDIRI.pem"]
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert (directory / "BNI.pem").read_bytes() == pairs["BNI"].private_pem
    remove_private_keys(files)
    assert not directory.exists()


def test_sinergi_up_provisions_one_pair_per_bank_for_the_apis_and_the_simulator(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    env: dict[str, str] = {}
    provisioned = provision_dev_bank_keys(settings, env)
    banks = set(load_banks(settings.banks_file))
    public = json.loads(env["SINERGI_BANK_PUBLIC_KEYS"])
    assert set(public) == banks and all(len(v) == 1 for v in public.values())
    assert Path(env["SINERGI_BANK_SIM_KEY_DIR"]) == tmp_path / "run" / "bank-keys"
    assert {p.name for p in provisioned.files} == {f"{b}.pem" for b in banks}

    # What a child process would load from that environment: the API verifies, the simulator signs.
    child = Settings(data_dir=tmp_path, bank_public_keys=public, bank_sim_key_dir=Path(env["SINERGI_BANK_SIM_KEY_DIR"]))
    registry = PartnerRegistry(child)
    creds = bank_credentials(child)
    for bank in banks:
        prepared = token_request(bank, creds[bank].private_key_pem or b"", "2026-12-01T10:55:00+07:00")
        sts = string_to_sign_token(bank, "2026-12-01T10:55:00+07:00")
        partner = registry.get(bank)
        assert partner is not None and verify_rsa_sha256(partner.public_keys, sts, prepared.headers["X-SIGNATURE"])

    provisioned.remove()
    assert not (tmp_path / "run" / "bank-keys").exists()


@pytest.mark.parametrize(
    "override",
    [
        {"bank_public_keys": {"MANDIRI": ["configured"]}},
        {"environment": "production"},
        {"bank_secrets_file": Path("/nonexistent/secrets.json")},
    ],
)
def test_no_keys_are_generated_when_configured_or_in_production(tmp_path: Path, override: dict[str, object]) -> None:
    settings = Settings(data_dir=tmp_path).model_copy(update=override)
    env: dict[str, str] = {}
    assert provision_dev_bank_keys(settings, env).files == []
    assert env == {} and not (tmp_path / "run").exists()


def test_bank_credentials_sign_with_the_newest_secret_and_need_a_token_or_key(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path,
        bank_client_secrets={"MANDIRI": ["old", "new"], "BNI": ["bni"]},
        bank_tokens={"MANDIRI": "dev-token-mandiri"},
    )
    write_private_keys(tmp_path / "run" / "bank-keys", {"BNI": generate_key_pair()})
    creds = bank_credentials(settings)
    assert set(creds) == {"MANDIRI", "BNI"}  # MAYBANK_MY: no secret configured here
    assert creds["MANDIRI"].client_secret == b"new" and creds["MANDIRI"].private_key_pem is None
    assert creds["BNI"].static_token is None and creds["BNI"].private_key_pem is not None
    assert creds["BNI"].partner_service_id == "   88002"
    assert "new" not in repr(creds["MANDIRI"]) and "dev-token" not in repr(creds["MANDIRI"])


# --- bodies and answers ----------------------------------------------------------------------------------
def test_inquiry_and_payment_bodies() -> None:
    inquiry = inquiry_body(
        partner_service_id="88001",
        customer_no=CUSTOMER,
        inquiry_request_id="R1",
        trx_date_init="2026-12-01T10:00:00+07:00",
    )
    assert inquiry["partnerServiceId"] == "   88001" and inquiry["virtualAccountNo"] == "   88001" + CUSTOMER
    assert list(inquiry) == [
        "partnerServiceId",
        "customerNo",
        "virtualAccountNo",
        "inquiryRequestId",
        "channelCode",
        "trxDateInit",
    ]
    idr = json.loads(_payment())
    assert idr["paidAmount"] == {"value": "370000.00", "currency": "IDR"} and "additionalInfo" not in idr
    foreign = payment_request_body(
        partner_service_id="88001",
        customer_no=CUSTOMER,
        payment_request_id="P",
        amount="105.10",
        currency="MYR",
        fx_rate="3520.5",
        trx_date_time="2026-12-01T10:54:58+08:00",
    )
    assert foreign["additionalInfo"] == {"fxRate": "3520.5"}
    assert b"105.10" in encode_json(foreign)  # kept as the string given: never through a float


@pytest.mark.parametrize(
    ("amount", "currency", "fx_rate"),
    [
        ("370000", "IDR", None),
        ("370000.0", "IDR", None),
        ("1e5", "IDR", None),
        ("0.00", "IDR", None),
        ("-1.00", "IDR", None),
        ("100.00", "MYR", None),
        ("100.00", "IDR", "1.5"),
        ("100.00", "MYR", "1.1234567"),
        ("100.00", "MYR", "0"),
        ("100.00", "MYR", "NaN"),
    ],
)
def test_payment_bodies_refuse_what_the_api_would_refuse(amount: str, currency: str, fx_rate: str | None) -> None:
    with pytest.raises(ValueError):
        payment_request_body(
            partner_service_id="88001",
            customer_no=CUSTOMER,
            payment_request_id="P",
            amount=amount,
            currency=currency,
            fx_rate=fx_rate,
            trx_date_time="2026-12-01T10:54:58+07:00",
        )


def test_split_va_accepts_the_padded_or_the_digit_form_of_this_banks_vas_only() -> None:
    assert split_va("   88001" + CUSTOMER, "   88001") == ("   88001", CUSTOMER)
    assert split_va("88001" + CUSTOMER, "   88001") == ("   88001", CUSTOMER)
    for other in ("88002" + CUSTOMER, "88001", "88001" + "x" * 5, "88001" + "1" * 21):
        with pytest.raises(ValueError):
            split_va(other, "   88001")


def test_a_404_without_a_snap_code_means_endpoint_missing_and_a_snap_404_does_not() -> None:
    missing = read_answer(httpx.Response(404, json={"detail": "Not Found"}))
    assert missing.endpoint_missing and missing.code is None
    unknown = read_answer(httpx.Response(404, json={"responseCode": "4042412", "reason": "VA_NOT_FOUND"}))
    assert not unknown.endpoint_missing and (unknown.code, unknown.reason) == ("4042412", "VA_NOT_FOUND")
    not_json = read_answer(httpx.Response(404, text="<html>nginx</html>"))
    assert not_json.endpoint_missing
    hostile = read_answer(httpx.Response(400, json={"responseCode": "x" * 99, "reason": "3201011203900001 x"}))
    assert hostile.code is None and hostile.reason is None  # never echo what is not shaped like a code


def test_amount_of_an_inquiry_answer() -> None:
    ok = {"responseCode": "2002400", "virtualAccountData": {"totalAmount": {"value": "370000.00", "currency": "IDR"}}}
    answer = read_answer(httpx.Response(200, json=ok))
    assert amount_of(answer) == (Decimal("370000.00"), "IDR")
    bad = {"virtualAccountData": {"totalAmount": {"value": 370000.0, "currency": "IDR"}}}
    assert amount_of(read_answer(httpx.Response(200, json=bad))) is None


def test_external_ids_are_numeric_dated_in_wib_and_short_enough() -> None:
    rng = random.Random(1)
    late_utc = datetime(2026, 11, 30, 18, 0, tzinfo=UTC)  # already 1 December in WIB
    ids = {new_external_id(rng, late_utc) for _ in range(1000)}
    assert len(ids) == 1000
    assert all(i.isdigit() and len(i) <= 36 and i.startswith("20261201") for i in ids)
    assert snap_timestamp(late_utc) == "2026-12-01T01:00:00+07:00"
    assert snap_timestamp(late_utc + timedelta(microseconds=5)) == "2026-12-01T01:00:00+07:00"


def test_statement_content_types() -> None:
    assert statement_content_type("bni_20261201.sta") == "text/plain"
    assert statement_content_type("x.XML") == "application/xml"
    assert statement_content_type("x.json") == "application/json"
    assert statement_content_type("x.csv") == "text/csv"
    assert statement_content_type("x.bin") == "application/octet-stream"


# --- `sinergi bank-sim sign` -----------------------------------------------------------------------------
def test_bank_sim_sign_prints_the_string_to_sign_and_the_signature(tmp_path: Path) -> None:
    body = tmp_path / "body.json"
    body.write_bytes(_payment())
    ts = "2026-12-01T10:55:00+07:00"
    result = CliRunner().invoke(
        cli,
        [
            "bank-sim",
            "sign",
            "--secret",
            "dev-client-secret-mandiri",
            "--token",
            "T",
            "--path",
            PAYMENT_PATH,
            "--body",
            str(body),
            "--timestamp",
            ts,
        ],
    )
    assert result.exit_code == 0, result.output
    expected = sign_transactional_hmac(b"dev-client-secret-mandiri", "POST", PAYMENT_PATH, "T", body.read_bytes(), ts)
    assert result.output == sign_for_cli("dev-client-secret-mandiri", "T", PAYMENT_PATH, body.read_bytes(), ts) + "\n"
    lines = result.output.splitlines()
    assert lines[0].startswith(f"string to sign: POST:{PAYMENT_PATH}:T:") and lines[0].endswith(f":{ts}")
    assert lines[1] == f"X-SIGNATURE: {expected}"


def test_bank_sim_pay_refuses_a_malformed_amount_before_sending_anything() -> None:
    url = "http://127.0.0.1:9"  # the discard port: a request sent would fail with a connection error instead
    args = ["bank-sim", "pay", "--url", url, "--va", "88001" + CUSTOMER, "--amount", "370000"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2 and "exactly 2 decimals" in result.output
    other_bank = CliRunner().invoke(cli, ["bank-sim", "inquire", "--url", url, "--va", "88002" + CUSTOMER])
    assert other_bank.exit_code == 2 and "does not belong to this bank" in other_bank.output
