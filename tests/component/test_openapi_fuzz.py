"""Schemathesis against the OpenAPI documents both partner APIs serve, in-process (ASGI, in-memory producer).

Every operation of each served `/openapi.json` is fuzzed; the list is read from the document itself, so
an endpoint another module registers is covered the day it appears. Each generated request must get a
response that passes: no 5xx, a documented status code, a documented content type, a body matching the
documented schema, every documented response header present.

Variants per operation and generation mode (positive = schema-valid data, negative = schema-violating):

- anonymous: the request as generated, headers fuzzed too (mostly the 400/401 paths);
- signed as a bank (MANDIRI, both modes; MAYBANK_MY, the one bank that enrolls workers, positive only):
  B2B token with SHA256withRSA over `clientId|X-TIMESTAMP` under a key configured for the test,
  every other call with the HMAC-SHA512 transactional signature over the exact bytes sent, the bank's
  development token and secret; so the fuzzer reaches body validation, and no answer may be a 401;
- KBRI_KUALA_LUMPUR: the KBRI request carries that office's token; no answer may be a 401.

`test_accepted_payments_match_documented_response` feeds valid payment bodies so that the 200 path is
checked against its schema too (random strings never get past the domain rules). The harness tests point
the same machinery at a tampered document and expect each check to report it: a fuzz that cannot fail
would otherwise look exactly like a green one.

Budget: MAX_EXAMPLES per test, derandomized (same cases on every run and machine), no deadline and no
too_slow health check (the machine is shared; speed belongs to `make bench`).

A finding that the app modules must fix is listed in KNOWN_FINDINGS (test id -> what mismatched) and
marks exactly that test xfail(strict=True): it turns red the day the fix lands, so the entry goes too.
"""

from __future__ import annotations

import base64
import itertools
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import urlsplit

import pytest
import schemathesis
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from fastapi import FastAPI, Response
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel
from requests import PreparedRequest
from requests.auth import AuthBase
from schemathesis import GenerationMode
from schemathesis import checks as st_checks
from schemathesis.core.result import Ok
from schemathesis.python.asgi import shutdown_lifespans

from connectors.bank import payment, token_grant
from connectors.bank.app import create_bank_app
from connectors.bank.snap_signing import sign_transactional_hmac, string_to_sign_token
from connectors.kafka_edge import EdgeSender, InMemoryProducer
from connectors.kbri.app import create_kbri_app
from connectors.kbri.office_book import OfficeBook
from services.catalogue import PAYMENTS_RAW
from services.config import DEV_BANK_SECRETS, Settings
from services.reference import load_offices


class _CaseEncoder:
    """Stands in for the registry-backed Avro codec a KBRI process builds at start (none is reachable here)."""

    def encode(self, full_name: str, record: BaseModel) -> bytes:
        return record.model_dump_json().encode()


def _loaded_kbri_app(settings: Settings, producer: EdgeSender) -> FastAPI:
    """The KBRI API as a running process serves it once loaded (office book ready, here empty; case codec
    built), so the read side is fuzzed on its answers rather than on its documented loading 503."""
    book = OfficeBook(load_offices(settings.offices_file))
    book.mark_ready()
    return create_kbri_app(settings, producer, book=book, codec=_CaseEncoder())


FACTORIES: dict[str, Callable[[Settings, EdgeSender], FastAPI]] = {
    "bank": create_bank_app,
    "kbri": _loaded_kbri_app,
}
MAX_EXAMPLES = 50
FUZZ_SETTINGS = settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

CHECKS = [
    st_checks.not_a_server_error,
    st_checks.status_code_conformance,
    st_checks.content_type_conformance,
    st_checks.response_schema_conformance,
    st_checks.response_headers_conformance,
]

# Readiness probes answer a documented 503 while a dependency loads (here: the bank app has no reader, so its
# inquiry read model never becomes ready). Every other check still applies to them; the 503 is the contract.
PROBES = {"GET /readyz"}
PROBE_CHECKS = [check for check in CHECKS if check is not st_checks.not_a_server_error]

ANONYMOUS = "anonymous"
WIB = timezone(timedelta(hours=7))
CHANNEL_ID = "95221"
PSID = "   88001"  # MANDIRI's partnerServiceId in banks.json


@dataclass(frozen=True)
class BankCredentials:
    bank_id: str
    token: str  # a static development token of Settings.bank_tokens
    secret: bytes  # its HMAC client secret (services.config.DEV_BANK_SECRETS)


MANDIRI = BankCredentials("MANDIRI", "dev-token-mandiri", DEV_BANK_SECRETS["MANDIRI"].encode())
# banks.json: the one bank that `enrolls`; signed as MANDIRI, the bank enrollment endpoint only says 403.
MAYBANK_MY = BankCredentials("MAYBANK_MY", "dev-token-maybank", DEV_BANK_SECRETS["MAYBANK_MY"].encode())
OFFICE = "KBRI_KUALA_LUMPUR"
OFFICE_TOKEN = "dev-token-kbri-kl"  # Settings.office_tokens

BOTH_MODES = tuple(GenerationMode)
# api -> (variant, generation modes). A variant other than anonymous names whose credentials sign.
VARIANTS: dict[str, tuple[tuple[str, tuple[GenerationMode, ...]], ...]] = {
    "bank": (
        (ANONYMOUS, BOTH_MODES),
        (MANDIRI.bank_id, BOTH_MODES),
        (MAYBANK_MY.bank_id, (GenerationMode.POSITIVE,)),  # negative bodies are MANDIRI's job already
    ),
    "kbri": ((ANONYMOUS, BOTH_MODES), (OFFICE, BOTH_MODES)),
}

# test id -> what Schemathesis found (see the report); each marks that test xfail(strict=True).
KNOWN_FINDINGS: dict[str, str] = {}


# --- which tests exist: read from the served documents ------------------------------------------------
@dataclass(frozen=True)
class Target:
    api: str
    label: str
    variant: str
    mode: GenerationMode
    invalid: str | None = None  # the loader's error when the document holds an unusable operation

    @property
    def id(self) -> str:
        return f"{self.api}-{self.variant}-{self.mode.value}-{self.label}"


def _targets() -> list[Target]:
    """One target per (operation, variant, mode) of each document, as the app would serve it."""
    out: list[Target] = []
    for api, create in FACTORIES.items():
        document = create(Settings(), InMemoryProducer()).openapi()  # what GET /openapi.json returns
        for index, result in enumerate(schemathesis.openapi.from_dict(document).get_all_operations()):
            if not isinstance(result, Ok):
                error = str(result.err())
                out.append(Target(api, f"invalid operation #{index}", ANONYMOUS, GenerationMode.POSITIVE, error))
                continue
            operation = result.ok()
            # Negative data needs something to break: an operation without inputs has none.
            has_inputs = bool(operation.body) or any(True for _ in operation.iter_parameters())
            for variant, modes in VARIANTS[api]:
                for mode in modes if has_inputs else (GenerationMode.POSITIVE,):
                    out.append(Target(api, operation.label, variant, mode))
    return out


def _params() -> list[Any]:
    params = []
    for target in _targets():
        marks = []
        if target.id in KNOWN_FINDINGS:
            marks.append(pytest.mark.xfail(strict=True, reason=KNOWN_FINDINGS[target.id]))
        params.append(pytest.param(target, id=target.id, marks=marks))
    return params


# --- signing like a partner --------------------------------------------------------------------------
def _raw_body(body: bytes | str | None) -> bytes:
    if body is None:
        return b""
    if isinstance(body, str):
        return body.encode("utf-8")
    if isinstance(body, bytes):
        return body
    raise TypeError(f"cannot sign a streamed body ({type(body).__name__})")


class BankSigner(AuthBase):
    """Signs each prepared request as the bank does, over the exact bytes `requests` is about to send.

    A `requests` auth runs after the body is serialized, so the signature covers what goes on the wire
    whatever Schemathesis generated (a re-serialised body could differ in escapes and number spelling).
    The headers it sets replace the fuzzed ones of the same name; every other header stays fuzzed.
    """

    def __init__(self, bank: BankCredentials, private_key: rsa.RSAPrivateKey) -> None:
        self.bank = bank
        self._private_key = private_key
        # Fresh X-EXTERNAL-ID per request (numeric, <= 36 digits), never repeated within a process.
        self._run = str(time.time_ns())
        self._sequence = itertools.count(1)

    def __call__(self, request: PreparedRequest) -> PreparedRequest:
        bank = self.bank
        timestamp = datetime.now(WIB).isoformat(timespec="seconds")
        path = urlsplit(request.url or "").path
        if path == token_grant.PATH:
            # SHA256withRSA as snap_signing.sign_rsa_sha256, on the parsed key: that helper re-parses and
            # re-validates the PEM on every call (~35 ms), a third of this file's run time.
            sts = string_to_sign_token(bank.bank_id, timestamp).encode("utf-8")
            signature = base64.b64encode(self._private_key.sign(sts, padding.PKCS1v15(), hashes.SHA256()))
            request.headers.update(
                {"X-CLIENT-KEY": bank.bank_id, "X-TIMESTAMP": timestamp, "X-SIGNATURE": signature.decode("ascii")}
            )
            return request
        # Every bank of banks.json signs EndpointUrl as the relative path (endpoint_url "PATH").
        raw = _raw_body(request.body)
        signature_b64 = sign_transactional_hmac(bank.secret, request.method or "GET", path, bank.token, raw, timestamp)
        request.headers.update(
            {
                "Authorization": f"Bearer {bank.token}",
                "X-PARTNER-ID": bank.bank_id,
                "X-EXTERNAL-ID": f"{self._run}{next(self._sequence):06d}",
                "X-TIMESTAMP": timestamp,
                "CHANNEL-ID": CHANNEL_ID,
                "X-SIGNATURE": signature_b64,
            }
        )
        return request


class OfficeToken(AuthBase):
    def __call__(self, request: PreparedRequest) -> PreparedRequest:
        request.headers["Authorization"] = f"Bearer {OFFICE_TOKEN}"
        return request


# --- fixtures ----------------------------------------------------------------------------------------
@dataclass
class Served:
    schema: Any  # schemathesis BaseSchema, loaded from the app's own /openapi.json
    producer: InMemoryProducer
    auths: dict[str, AuthBase]  # variant -> how its requests are authenticated


@pytest.fixture(scope="module")
def bank_rsa_key() -> tuple[rsa.RSAPrivateKey, str]:
    """The banks' B2B token key pair (the development settings configure no public key)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return key, public.decode("ascii")


Tamper = Callable[[FastAPI], None]
Serve = Callable[..., Served]


@pytest.fixture
def serve(bank_rsa_key: tuple[rsa.RSAPrivateKey, str]) -> Iterator[Serve]:
    """`serve(api, tamper=None)`: a fresh app of the named API and its served document, loaded through the
    app; `tamper(app)` may change the app before the document is first built. Every app stops at teardown."""
    private_key, public_pem = bank_rsa_key
    started: list[Served] = []

    def _serve(api: str, tamper: Tamper | None = None) -> Served:
        producer = InMemoryProducer()
        auths: dict[str, AuthBase]
        if api == "bank":
            keys = {bank.bank_id: [public_pem] for bank in (MANDIRI, MAYBANK_MY)}
            app = create_bank_app(Settings(bank_public_keys=keys), producer)
            auths = {bank.bank_id: BankSigner(bank, private_key) for bank in (MANDIRI, MAYBANK_MY)}
        else:
            app = FACTORIES[api](Settings(), producer)
            auths = {OFFICE: OfficeToken()}
        if tamper is not None:
            tamper(app)
        # from_asgi fetches /openapi.json through the app, which runs its lifespan (producer started).
        served = Served(schemathesis.openapi.from_asgi("/openapi.json", app), producer, auths)
        started.append(served)
        return served

    yield _serve
    shutdown_lifespans()
    for served in started:
        assert not served.producer.started, "the app's lifespan did not close its producer"


def _fuzz(
    strategy: st.SearchStrategy[schemathesis.Case], auth: AuthBase | None, checks: list[Any] = CHECKS
) -> Counter[int]:
    """Send every generated case through the app and validate its response; the status codes seen."""
    statuses: Counter[int] = Counter()

    @FUZZ_SETTINGS
    @given(case=strategy)
    def fuzz(case: schemathesis.Case) -> None:
        response = case.call_and_validate(checks=checks, auth=auth)
        statuses[response.status_code] += 1

    fuzz()
    return statuses


# --- the fuzz ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("target", _params())
def test_served_document_holds(target: Target, serve: Serve) -> None:
    if target.invalid is not None:
        pytest.fail(f"{target.api} document holds an operation Schemathesis cannot use: {target.invalid}")
    served = serve(target.api)
    assert served.producer.started
    operation = served.schema.find_operation_by_label(target.label)
    assert operation is not None, f"{target.label} is not in the served {target.api} document"
    auth = None if target.variant == ANONYMOUS else served.auths[target.variant]

    checks = PROBE_CHECKS if target.label in PROBES else CHECKS
    statuses = _fuzz(operation.as_strategy(generation_mode=target.mode), auth, checks)

    assert statuses, "no request was sent"
    if auth is not None:
        assert 401 not in statuses, f"authenticated requests refused as unauthenticated: {dict(statuses)}"


# --- the harness catches each kind of mismatch -------------------------------------------------------
def _health_200(app: FastAPI) -> dict[str, Any]:
    response: dict[str, Any] = app.openapi()["paths"]["/healthz"]["get"]["responses"]["200"]
    return response  # app.openapi() caches the dict it serves: changing it changes /openapi.json


def _wrong_body_schema(app: FastAPI) -> None:
    app.openapi()["components"]["schemas"]["Health"]["properties"]["status"] = {"enum": ["degraded"]}


def _status_not_documented(app: FastAPI) -> None:
    responses = app.openapi()["paths"]["/healthz"]["get"]["responses"]
    responses["204"] = {"description": "No Content"}
    del responses["200"]


def _content_type_not_documented(app: FastAPI) -> None:
    response = _health_200(app)
    response["content"] = {"text/plain": response["content"]["application/json"]}


def _header_not_sent(app: FastAPI) -> None:
    _health_200(app)["headers"] = {"X-Trace-Id": {"required": True, "schema": {"type": "string"}}}


@pytest.mark.parametrize(
    ("tamper", "failure_code"),
    [
        pytest.param(_wrong_body_schema, "ST108", id="response_schema_conformance"),
        pytest.param(_status_not_documented, "ST103", id="status_code_conformance"),
        pytest.param(_content_type_not_documented, "ST105", id="content_type_conformance"),
        pytest.param(_header_not_sent, "ST107", id="response_headers_conformance"),
    ],
)
def test_harness_reports_a_tampered_document(tamper: Tamper, failure_code: str, serve: Serve) -> None:
    """The same harness, pointed at a document that no longer matches the app, must fail with that check."""
    served = serve("bank", tamper)
    operation = served.schema.find_operation_by_label("GET /healthz")
    with pytest.raises(schemathesis.errors.FailureGroup) as found:
        _fuzz(operation.as_strategy(), None)
    assert {failure.code for failure in found.value.exceptions} == {failure_code}


def test_harness_reports_a_server_error(serve: Serve) -> None:
    def add_broken_route(app: FastAPI) -> None:
        async def broken() -> Response:
            return Response(status_code=500)

        app.add_api_route("/broken", broken, methods=["GET"])

    served = serve("kbri", add_broken_route)
    with pytest.raises(schemathesis.errors.FailureGroup) as found:
        _fuzz(served.schema.find_operation_by_label("GET /broken").as_strategy(), None)
    assert "ST101" in {failure.code for failure in found.value.exceptions}


# --- the accepted path of the payment notification --------------------------------------------------
_DIGITS = "0123456789"
_ID_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


@st.composite
def valid_payments(draw: st.DrawFn) -> dict[str, Any]:
    """SNAP payment bodies MANDIRI may send (domain rules of services.domain.payment), optional parts varied."""
    customer_no = draw(st.text(_DIGITS, min_size=1, max_size=20))
    offset = timedelta(minutes=draw(st.sampled_from([0, 420, 480, -300, 345, 840])))
    when = draw(st.datetimes(min_value=datetime(2024, 1, 1), max_value=datetime(2030, 12, 31)))
    body: dict[str, Any] = {
        "partnerServiceId": PSID,
        "customerNo": customer_no,
        "virtualAccountNo": PSID + customer_no,
        "paymentRequestId": draw(st.text(_ID_CHARS, min_size=1, max_size=128)),
        "trxDateTime": when.replace(microsecond=0, tzinfo=timezone(offset)).isoformat(),
    }
    if draw(st.booleans()):
        body["paidAmount"] = {"value": f"{draw(st.integers(1, 10**12))}.00", "currency": "IDR"}
    else:
        cents = draw(st.integers(100, 10**9))
        rate = f"{draw(st.integers(1000, 9999))}.{draw(st.integers(0, 999_999)):06d}"
        body["paidAmount"] = {"value": f"{cents // 100}.{cents % 100:02d}", "currency": "MYR"}
        body["additionalInfo"] = {"fxRate": rate}
    optional = {
        # Any printable text: the domain refuses C0 controls in free-text fields (INVALID_FIELD).
        "virtualAccountName": st.text(st.characters(exclude_categories=("Cc", "Cs")), min_size=1, max_size=60),
        "channelCode": st.text(_DIGITS, min_size=4, max_size=4),
        "partnerReferenceNo": st.text(_ID_CHARS, min_size=1, max_size=64),
    }
    for name, strategy in optional.items():
        if draw(st.booleans()):
            body[name] = draw(strategy)
    return body


def test_accepted_payments_match_documented_response(serve: Serve) -> None:
    served = serve("bank")
    operation = served.schema.find_operation_by_label(f"POST {payment.PATH}")
    assert operation is not None

    statuses = _fuzz(
        valid_payments().flatmap(lambda body: operation.as_strategy(body=body)), served.auths[MANDIRI.bank_id]
    )

    assert set(statuses) == {200}, dict(statuses)
    assert served.producer.records
    assert {record.topic for record in served.producer.records} == {PAYMENTS_RAW.name}
