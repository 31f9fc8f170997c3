"""Fuzzing the two binary-ish gates: SNAP request authentication and the Avro decoder.

SNAP (connectors/bank/auth.py, signing as services/bank_client.py does it): a request signed like a bank
signs it always verifies; any mutation that changes what is signed (a header value, the body's digest, the
path, the signed query) never verifies; arbitrary headers never verify; and every refusal is a SnapProblem,
never another exception.

Avro (services/avro.py): random bytes and truncated or mutated valid frames decode, or raise an AvroError
(WireFormatError, UnknownSchemaError, DecodeError); decode_model may in addition raise pydantic's
ValidationError (a ValueError) for a record its model refuses. Those are exactly what the stages turn into
dead letters (services/reconcile.py and reconcile_statements.py catch Exception and name it by type;
notify_kbri.py maps ValidationError to INVALID_RECORD and the rest to UNDECODABLE). Anything else (a
KeyError, a MemoryError, a hang) would be a bug.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import HealthCheck, assume, event, example, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from starlette.requests import Request
from test_avro_properties import MODEL_STRATEGIES, NAMES, SCHEMAS, valid_model
from test_avro_samples import SAMPLES, embedded_registry

from connectors.bank.auth import Authenticated, SnapAuth, endpoint_url
from connectors.bank.errors import SnapProblem
from connectors.bank.partners import PartnerRegistry
from connectors.bank.snap_signing import sign_rsa_sha256, signature_body_digest
from connectors.bank.tokens import TokenIssuer
from connectors.http_common import RequestObservation, bearer_token
from services.avro import AvroCodec, AvroError, frame, topic_value_schemas, unframe
from services.bank_client import (
    INQUIRY_PATH,
    PAYMENT_PATH,
    STATEMENT_PATH,
    BankCredentials,
    snap_timestamp,
    transactional_request,
)
from services.config import DEV_BANK_SECRETS, Settings
from services.domain.models import RECORD_TYPES

NOW = datetime(2026, 12, 1, 3, 0, 0, tzinfo=UTC)
RSA_BANK = "RSABANK"
PATHS = [INQUIRY_PATH, PAYMENT_PATH, STATEMENT_PATH]


# --- a bank API auth layer with one bank per signing convention ----------------------------------------


@dataclass(frozen=True)
class Bank:
    bank_id: str
    scheme: str  # HMAC_SHA512 or RSA_SHA256
    endpoint_url: str  # PATH or PATH_AND_QUERY
    token: str = ""
    secret: bytes = b""
    private_pem: bytes = b""


@dataclass(frozen=True)
class Harness:
    auth: SnapAuth
    banks: dict[str, Bank]


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Harness:
    base = Settings()
    doc = json.loads(base.banks_file.read_text(encoding="utf-8"))
    for bank in doc["banks"]:
        if bank["bank_id"] == "BNI":
            bank["endpoint_url"] = "PATH_AND_QUERY"  # the convention in which the query is signed too
    doc["banks"].append(
        {
            "bank_id": RSA_BANK,
            "name": "Asymmetric test bank",
            "partner_service_id": "   88009",
            "currencies": ["IDR"],
            "signature_scheme": "RSA_SHA256",
            "endpoint_url": "PATH",
        }
    )
    banks_file = Path(tmp_path_factory.mktemp("banks")) / "banks.json"
    banks_file.write_text(json.dumps(doc), encoding="utf-8")
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public_pem = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    settings = Settings(banks_file=banks_file, bank_public_keys={RSA_BANK: [public_pem]}, bank_secrets_file=None)
    issuer = TokenIssuer(settings.snap_token_ttl_s, clock=lambda: 1_000.0)
    mandiri_token, _ = issuer.issue("MANDIRI")  # a B2B-issued token
    banks = {
        "MANDIRI": Bank("MANDIRI", "HMAC_SHA512", "PATH", mandiri_token, DEV_BANK_SECRETS["MANDIRI"].encode()),
        "BNI": Bank(
            "BNI",
            "HMAC_SHA512",
            "PATH_AND_QUERY",
            settings.bank_tokens["BNI"].get_secret_value(),  # a static development token
            DEV_BANK_SECRETS["BNI"].encode(),
        ),
        RSA_BANK: Bank(RSA_BANK, "RSA_SHA256", "PATH", private_pem=private_pem),
    }
    auth = SnapAuth(settings, PartnerRegistry(settings), issuer, now=lambda: NOW)
    return Harness(auth, banks)


@dataclass
class Call:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes


def _signed(bank: Bank, path: str, query: dict[str, str], body: bytes, timestamp: str) -> Call:
    if bank.scheme == "HMAC_SHA512":
        creds = BankCredentials(bank.bank_id, "   88001", bank.secret, endpoint_url=bank.endpoint_url)
        prepared = transactional_request(
            creds, bank.token, path, body, timestamp=timestamp, external_id="1" * 24, query=query
        )
        target_path, _, query_string = prepared.target.partition("?")
        return Call(prepared.method, target_path, query_string, dict(prepared.headers), prepared.content)
    # the asymmetric variant signs METHOD:EndpointUrl:hex(sha256(minify(body))):X-TIMESTAMP with no token
    sts = f"POST:{path}:{signature_body_digest(body)}:{timestamp}"
    headers = {
        "X-PARTNER-ID": bank.bank_id,
        "X-EXTERNAL-ID": "2" * 24,
        "X-TIMESTAMP": timestamp,
        "X-SIGNATURE": sign_rsa_sha256(bank.private_pem, sts),
        "Content-Type": "application/json",
    }
    return Call("POST", path, "", headers, body)


def _request(call: Call) -> Request:
    scope = {
        "type": "http",
        "http_version": "1.1",
        "method": call.method,
        "scheme": "http",
        "server": ("bank.test", 80),
        "root_path": "",
        "path": call.path,
        "raw_path": call.path.encode("latin-1", "replace"),
        "query_string": call.query.encode("latin-1", "replace"),
        "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in call.headers.items()],
    }
    return Request(scope)


def _verify(harness: Harness, call: Call) -> Authenticated | SnapProblem:
    """The verifier's outcome; any exception other than its documented refusal fails the test."""
    try:
        return harness.auth.verify(_request(call), call.body, "25", RequestObservation("bank", "va_payment"))
    except SnapProblem as problem:
        assert problem.status in (400, 401)
        assert problem.code.startswith(("400", "401")) and len(problem.code) == 7
        return problem


_JSON_BODY = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6), c, max_size=3),
    max_leaves=8,
)
BODIES = (
    _JSON_BODY.flatmap(lambda v: st.sampled_from([None, 1]).map(lambda indent: json.dumps(v, indent=indent).encode()))
    | st.binary(max_size=80)  # a statement upload: MT940, XML or CSV bytes are signed raw
)
QUERIES = st.dictionaries(st.text(max_size=6), st.text(max_size=6), max_size=3)
SKEWS = st.integers(-300, 300)  # within Settings.snap_timestamp_skew_s


@st.composite
def signed_calls(draw: st.DrawFn, harness: Harness) -> tuple[Bank, Call]:
    bank = harness.banks[draw(st.sampled_from(sorted(harness.banks)))]
    timestamp = snap_timestamp(NOW + timedelta(seconds=draw(SKEWS)))
    query = draw(QUERIES) if bank.endpoint_url == "PATH_AND_QUERY" else {}
    return bank, _signed(bank, draw(st.sampled_from(PATHS)), query, draw(BODIES), timestamp)


FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(data=st.data())
def test_a_request_signed_like_a_bank_signs_it_verifies(harness: Harness, data: st.DataObject) -> None:
    bank, call = data.draw(signed_calls(harness))
    outcome = _verify(harness, call)
    assert isinstance(outcome, Authenticated), f"{bank.bank_id}: {outcome}"
    assert outcome.partner.bank_id == bank.bank_id
    assert outcome.body_digest == signature_body_digest(call.body)


def _mutate_text(draw: st.DrawFn, value: str) -> str:
    kind = draw(st.integers(0, 5))
    at = draw(st.integers(0, len(value)))
    if kind == 0 and value:  # change one character
        i = min(at, len(value) - 1)
        return (
            value[:i]
            + draw(st.characters(min_codepoint=0x20, max_codepoint=0xFF).filter(lambda c: c != value[i]))
            + value[i + 1 :]
        )
    if kind == 1:  # insert
        return (
            value[:at]
            + draw(st.text(st.characters(min_codepoint=0, max_codepoint=0xFF), min_size=1, max_size=3))
            + value[at:]
        )
    if kind == 2 and value:  # delete
        return value[:at] + value[at + 1 :]
    if kind == 3:  # truncate
        return value[:at]
    if kind == 4:  # change case
        return value.swapcase()
    return draw(st.text(st.characters(min_codepoint=0, max_codepoint=0xFF), max_size=40))


@st.composite
def mutations(draw: st.DrawFn, call: Call) -> tuple[Call, str]:
    """A copy of ``call`` with one part changed: a header value, a dropped header, the body, path, query or method."""
    target = draw(
        st.sampled_from(
            ["x-partner-id", "authorization", "x-timestamp", "x-signature", "body", "path", "query", "method", "drop"]
        )
    )
    out = Call(call.method, call.path, call.query, {k.lower(): v for k, v in call.headers.items()}, call.body)
    if target == "body":
        body = bytearray(out.body)
        at = draw(st.integers(0, len(body)))
        if body and draw(st.booleans()):
            body[min(at, len(body) - 1)] ^= draw(st.integers(1, 255))
        else:
            body[at:at] = draw(st.binary(min_size=1, max_size=4))
        out.body = bytes(body)
    elif target == "path":
        out.path = _mutate_text(draw, out.path)
    elif target == "query":
        out.query = _mutate_text(draw, out.query)
    elif target == "method":
        out.method = draw(st.sampled_from(["GET", "PUT", "PATCH", "DELETE", "post"]))
    elif target == "drop":
        present = sorted(set(out.headers) & {"x-partner-id", "x-timestamp", "x-signature", "authorization"})
        del out.headers[draw(st.sampled_from(present))]
    else:
        out.headers[target] = _mutate_text(draw, out.headers.get(target, ""))
    return out, target


def _signed_url(call: Call, bank: Bank) -> str | None:
    try:
        return endpoint_url(_request(call), bank.endpoint_url)
    except UnicodeDecodeError:  # request.url of a non-UTF-8 query string: the verifier refuses it
        return None


def _still_signs_the_same(bank: Bank, original: Call, mutated: Call, target: str) -> bool:
    """Mutations that by design do not change what is signed (they must verify, so they are not tested)."""
    lowered = Call(
        original.method,
        original.path,
        original.query,
        {k.lower(): v for k, v in original.headers.items()},
        original.body,
    )
    if mutated == lowered:  # e.g. truncated at the end, or swapcase of digits
        return True
    if target == "body":
        return signature_body_digest(mutated.body) == signature_body_digest(original.body)  # JSON whitespace
    if target == "authorization":
        return bank.scheme == "RSA_SHA256" or bearer_token(mutated.headers.get("authorization")) == bank.token
    if target in ("path", "query"):
        # EndpointUrl as the verifier derives it (PATH banks do not sign the query; a "#" or "?" put into the
        # decoded path moves the rest out of the URL's path, but the router would not match such a path)
        return _signed_url(mutated, bank) == _signed_url(original, bank)
    if target == "method":
        return mutated.method.upper() == original.method.upper()
    if target == "drop":
        return bank.scheme == "RSA_SHA256" and "authorization" not in mutated.headers
    return False


_ANY_HEADER = st.text(st.characters(min_codepoint=0, max_codepoint=0xFF), max_size=30)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(data=st.data())
def test_a_mutated_request_never_verifies(harness: Harness, data: st.DataObject) -> None:
    bank, original = data.draw(signed_calls(harness))
    mutated, target = data.draw(mutations(original))
    assume(not _still_signs_the_same(bank, original, mutated, target))
    outcome = _verify(harness, mutated)
    event(f"{target}: {getattr(outcome, 'reason', outcome)}")
    assert isinstance(outcome, SnapProblem), f"{target} mutation of a {bank.bank_id} request verified"


@pytest.mark.parametrize("mode_bank", ["BNI", "MANDIRI"])
def test_a_query_string_that_is_not_utf8_is_refused_not_a_crash(harness: Harness, mode_bank: str) -> None:
    """Found by the fuzzer: request.url raised UnicodeDecodeError (a 500) for a raw byte >= 0x80 in the query
    string of an otherwise authentic call. Fixed in connectors/bank/auth.py: it is a signature refusal."""
    bank = harness.banks[mode_bank]
    call = _signed(
        bank, PAYMENT_PATH, {"page": "1"} if bank.endpoint_url == "PATH_AND_QUERY" else {}, b"{}", snap_timestamp(NOW)
    )
    call.query = "\x80"
    outcome = _verify(harness, call)
    assert isinstance(outcome, SnapProblem)
    assert outcome.reason == "SIGNATURE_INVALID"


@pytest.mark.parametrize("bank_id", ["MANDIRI", RSA_BANK])
def test_a_non_canonical_base64_signature_never_verifies(harness: Harness, bank_id: str) -> None:
    """Found by the fuzzer: the unused low bits of the last Base64 character were ignored, so a second
    spelling of a valid X-SIGNATURE verified. Fixed in connectors/bank/snap_signing._b64decode."""
    bank = harness.banks[bank_id]
    call = _signed(bank, PAYMENT_PATH, {}, b'{"a":1}', snap_timestamp(NOW))
    assert isinstance(_verify(harness, call), Authenticated)
    signature = call.headers["X-SIGNATURE"]
    head, pad = signature.rstrip("="), "=" * (len(signature) - len(signature.rstrip("=")))
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    last = alphabet.index(head[-1])
    spare = (1 << (2 if len(pad) == 1 else 4)) - 1  # bits of the last character that carry no data
    for bits in range(1, spare + 1):
        variant = head[:-1] + alphabet[last | bits] + pad
        if variant == signature:
            continue
        assert base64.b64decode(variant) == base64.b64decode(signature)
        call.headers["X-SIGNATURE"] = variant
        assert isinstance(_verify(harness, call), SnapProblem), variant


@FUZZ
@given(
    headers=st.dictionaries(
        st.sampled_from(["x-partner-id", "authorization", "x-timestamp", "x-signature", "x-external-id"]),
        _ANY_HEADER
        | st.sampled_from(["MANDIRI", "BNI", RSA_BANK, "Bearer dev-token-bni", "2026-12-01T10:00:00+07:00"]),
    ),
    body=st.binary(max_size=60),
    path=st.sampled_from(PATHS) | st.text(max_size=20),
    query=st.text(max_size=20),
)
def test_arbitrary_headers_never_verify(
    harness: Harness, headers: dict[str, str], body: bytes, path: str, query: str
) -> None:
    outcome = _verify(harness, Call("POST", path, query, headers, body))
    assert isinstance(outcome, SnapProblem)


# --- the Avro decoder --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def codec() -> Iterator[AvroCodec]:
    _store, registry = embedded_registry()
    codec = AvroCodec(registry, SCHEMAS, topic_value_schemas(SCHEMAS))
    codec.start_sync()
    yield codec
    asyncio.run(registry.aclose())


def _decodes_or_refuses(codec: AvroCodec, data: bytes, model_name: str | None = None) -> str:
    """'decoded' or the refusal's type name; anything but the documented refusals fails the test."""
    try:
        if model_name is None:
            name, record = codec.decode(data)
            assert name in SCHEMAS and isinstance(record, dict)
        else:
            codec.decode_model(data, RECORD_TYPES[model_name])
    except AvroError as exc:
        return type(exc).__name__
    except ValidationError:
        assert model_name is not None
        return "ValidationError"
    return "decoded"


@FUZZ
@given(data=st.binary(max_size=64))
@example(data=b"")
@example(data=b"\x00")
@example(data=b"\x01\x00\x00\x00\x01")
@example(data=b"\x00\xff\xff\xff\xff" + b"\x00" * 8)
def test_random_bytes_decode_or_raise_a_decode_error(codec: AvroCodec, data: bytes) -> None:
    _decodes_or_refuses(codec, data)


def _valid_frame(codec: AvroCodec, draw: st.DrawFn) -> tuple[str, bytes]:
    name = draw(st.sampled_from(NAMES))
    if draw(st.booleans()) and name in SAMPLES:
        model = draw(st.sampled_from(SAMPLES[name]))
    else:
        model = valid_model(name, draw(MODEL_STRATEGIES[name]))
    return name, codec.encode(name, model)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_truncated_and_mutated_frames_decode_or_raise_a_decode_error(codec: AvroCodec, data: st.DataObject) -> None:
    name, framed = _valid_frame(codec, data.draw)
    buf = bytearray(framed)
    kind = data.draw(st.sampled_from(["truncate", "flip", "insert", "delete", "id", "append", "body-varint"]))
    if kind == "truncate":
        buf = buf[: data.draw(st.integers(0, len(buf) - 1))]
    elif kind == "flip":
        for _ in range(data.draw(st.integers(1, 4))):
            buf[data.draw(st.integers(0, len(buf) - 1))] ^= data.draw(st.integers(1, 255))
    elif kind == "insert":
        at = data.draw(st.integers(5, len(buf)))
        buf[at:at] = data.draw(st.binary(min_size=1, max_size=8))
    elif kind == "delete" and len(buf) > 5:
        at = data.draw(st.integers(5, len(buf) - 1))
        del buf[at : at + data.draw(st.integers(1, 8))]
    elif kind == "id":  # another id: a known schema of another record, or one the registry does not have
        buf[1:5] = data.draw(st.integers(0, 2**32 - 1) | st.sampled_from([codec.schema_id(n) for n in NAMES])).to_bytes(
            4, "big"
        )
    elif kind == "append":
        buf += data.draw(st.binary(min_size=1, max_size=8))
    else:  # a huge length or count where the body starts: strings, bytes and arrays are length-prefixed
        buf[5:5] = data.draw(st.sampled_from([b"\xfe\xff\xff\xff\xff\xff\xff\xff\xff\x01", b"\x80" * 10, b"\x7f"]))
    outcome = _decodes_or_refuses(codec, bytes(buf))
    model_outcome = _decodes_or_refuses(codec, bytes(buf), name)
    event(f"{kind}: decode {outcome}, decode_model {model_outcome}")
    if kind == "truncate" and len(buf) < 5:
        assert outcome == model_outcome == "WireFormatError"


@FUZZ
@given(data=st.data())
def test_a_body_framed_with_another_records_id_is_refused_by_decode_model(
    codec: AvroCodec, data: st.DataObject
) -> None:
    """Under another record's id a body decodes as that record or not at all: decode_model always refuses it."""
    name, framed = _valid_frame(codec, data.draw)
    other = data.draw(st.sampled_from([n for n in NAMES if n != name]))
    schema_id, body = unframe(framed)
    swapped = frame(codec.schema_id(other), bytes(body))
    outcome = _decodes_or_refuses(codec, swapped, name)
    assert outcome != "decoded", f"a {name} body framed as {other} decoded as a {name}"
    assert schema_id == codec.schema_id(name)
