from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.bank.snap_signing import (
    MinifyError,
    SnapKeyError,
    SnapTimestampError,
    body_digest,
    load_rsa_public_key,
    minify_json_bytes,
    parse_snap_timestamp,
    sign_hmac_sha512,
    sign_rsa_sha256,
    string_to_sign_asymmetric,
    string_to_sign_token,
    string_to_sign_transactional,
    verify_hmac_sha512,
    verify_rsa_sha256,
    within_window,
)

# --- fixtures -----------------------------------------------------------------------------------------
BODY = (
    b'{\n  "partnerServiceId": "   88899",\n  "customerNo": "000000000000012345",\n'
    b'  "virtualAccountNo": "   88899000000000000012345",\n  "paymentRequestId": "REQ 1",\n'
    b'  "paidAmount": {"value": "10000.00", "currency": "IDR"},\n  "total": 10000.00\n}'
)
BODY_MIN = (
    b'{"partnerServiceId":"   88899","customerNo":"000000000000012345",'
    b'"virtualAccountNo":"   88899000000000000012345","paymentRequestId":"REQ 1",'
    b'"paidAmount":{"value":"10000.00","currency":"IDR"},"total":10000.00}'
)
TS = "2020-12-17T10:55:00+07:00"
PATH = "/v1.0/transfer-va/payment"
TOKEN = "tok-abc"
SECRET = b"mandiri-client-secret"
OTHER_SECRET = b"bni-client-secret"


def _pem_pair(bits: int = 2048) -> tuple[bytes, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    priv = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    pub = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return priv, pub


@pytest.fixture(scope="module")
def keys() -> tuple[tuple[bytes, bytes], tuple[bytes, bytes]]:
    return _pem_pair(), _pem_pair()


def _flip(sig_b64: str) -> str:
    raw = bytearray(base64.b64decode(sig_b64))
    raw[len(raw) // 2] ^= 0x01
    return base64.b64encode(bytes(raw)).decode()


# --- minify -------------------------------------------------------------------------------------------
def test_minify_example() -> None:
    assert minify_json_bytes(b'{"a" : 1 ,\n "b":[1, 2]}') == b'{"a":1,"b":[1,2]}'


def test_minify_keeps_whitespace_inside_strings_and_escapes() -> None:
    raw = b'{ "k y" : "a  b\\t\\"c\\" \\u00e9 \\\\" , "d":"\\/"}'
    assert minify_json_bytes(raw) == b'{"k y":"a  b\\t\\"c\\" \\u00e9 \\\\","d":"\\/"}'


def test_minify_keeps_order_duplicates_numbers_and_utf8() -> None:
    raw = '{ "z": 10000.00, "a": 1E+2, "z": -0.0, "n": null, "s": "é  ü" }'.encode()
    assert minify_json_bytes(raw) == '{"z":10000.00,"a":1E+2,"z":-0.0,"n":null,"s":"é  ü"}'.encode()


def test_minify_whole_body() -> None:
    assert minify_json_bytes(BODY) == BODY_MIN
    assert minify_json_bytes(BODY_MIN) == BODY_MIN
    assert minify_json_bytes(b"") == b""
    assert minify_json_bytes(b" \r\n\t") == b""


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b'{"a": "unterminated}', "unterminated string"),
        (b'{"a": "ends with backslash\\', "unterminated string"),
        (b'{"a": "x\\"}', "unterminated string"),
        (b'{"a": "\xff"}', "invalid UTF-8"),
        (b'{"a": "\xc3"}', "invalid UTF-8"),
        (b"[1 2]", "whitespace between two tokens"),
        (b'["a" "b"]', "whitespace between two tokens"),
        (b"[true\nfalse]", "whitespace between two tokens"),
    ],
)
def test_minify_malformed(raw: bytes, reason: str) -> None:
    with pytest.raises(MinifyError) as info:
        minify_json_bytes(raw)
    assert info.value.reason == reason
    assert isinstance(info.value, ValueError)


_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(alphabet=st.characters(codec="utf-8"), max_size=20),
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(st.text(alphabet=st.characters(codec="utf-8"), max_size=8), children, max_size=5)
    ),
    max_leaves=25,
)


@settings(max_examples=200, deadline=None)
@given(_json, st.booleans())
def test_minify_matches_compact_dumps(value: object, ensure_ascii: bool) -> None:
    pretty = json.dumps(value, indent=2, ensure_ascii=ensure_ascii).encode()
    compact = json.dumps(value, separators=(",", ":"), ensure_ascii=ensure_ascii).encode()
    assert minify_json_bytes(pretty) == compact


def _minify_byte_by_byte(raw: bytes) -> tuple[bytes | None, tuple[str, int] | None]:
    """The first implementation (a loop over every byte), kept as the oracle: (output, None) or (None, error)."""
    try:
        raw.decode("utf-8", errors="strict")
    except UnicodeDecodeError as exc:
        return None, ("invalid UTF-8", exc.start)
    ws, openers, closers = b" \t\n\r", b"{[,:", b"}],:"
    out = bytearray()
    i, n, skipped_ws = 0, len(raw), False
    while i < n:
        b = raw[i]
        if b in ws:
            skipped_ws, i = True, i + 1
            continue
        if skipped_ws and out and out[-1] not in openers and b not in closers:
            return None, ("whitespace between two tokens", i)
        skipped_ws = False
        if b != 0x22:
            out.append(b)
            i += 1
            continue
        start, i = i, i + 1
        while True:
            if i >= n:
                return None, ("unterminated string", start)
            c = raw[i]
            if c == 0x5C:
                i += 2
                continue
            i += 1
            if c == 0x22:
                break
        out += raw[start:i]
    return bytes(out), None


# bytes built from the characters that matter to the tokenizer, so that strings, escapes and stray whitespace
# meet often; plus any text
_tokenizer_bytes = st.lists(
    st.sampled_from(
        [b'"', b"\\", b" ", b"\n", b"\t", b"\r", b"{", b"}", b"[", b"]", b",", b":", b"1", b"a", b"\xc3\xa9"]
    ),
    max_size=40,
).map(b"".join) | st.text(max_size=40).map(str.encode)


@settings(max_examples=500, deadline=None)
@given(_tokenizer_bytes)
def test_minify_agrees_with_the_byte_by_byte_tokenizer(raw: bytes) -> None:
    expected, error = _minify_byte_by_byte(raw)
    if error is None:
        assert minify_json_bytes(raw) == expected
    else:
        with pytest.raises(MinifyError) as info:
            minify_json_bytes(raw)
        assert (info.value.reason, info.value.offset) == error


# --- transactional HMAC -------------------------------------------------------------------------------
def test_body_digest_is_sha256_hex_of_minified() -> None:
    expected = hashlib.sha256(BODY_MIN).hexdigest()
    assert body_digest(BODY) == expected == expected.lower()
    assert body_digest(b"") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def test_string_to_sign_transactional() -> None:
    sts = string_to_sign_transactional("post", PATH, TOKEN, BODY, TS)
    assert sts == f"POST:{PATH}:{TOKEN}:{hashlib.sha256(BODY_MIN).hexdigest()}:{TS}"


def test_hmac_known_vector() -> None:
    sts = string_to_sign_transactional("POST", PATH, TOKEN, BODY, TS)
    expected = base64.b64encode(hmac.new(SECRET, sts.encode(), hashlib.sha512).digest()).decode()
    assert sign_hmac_sha512(SECRET, sts) == expected
    assert verify_hmac_sha512([SECRET], sts, expected)
    # RFC 4231 test case 2 (HMAC-SHA-512, key "Jefe")
    rfc = bytes.fromhex(
        "164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea2505549758bf75c05a994a6d034f65f8f0e6fdcaeab1a34d4a6b4b636e070a38bce737"
    )
    assert sign_hmac_sha512(b"Jefe", "what do ya want for nothing?") == base64.b64encode(rfc).decode()


def test_hmac_tampering_fails() -> None:
    sts = string_to_sign_transactional("POST", PATH, TOKEN, BODY, TS)
    sig = sign_hmac_sha512(SECRET, sts)
    assert not verify_hmac_sha512([SECRET], sts, _flip(sig))
    assert not verify_hmac_sha512([OTHER_SECRET], sts, sig)  # another partner's secret
    assert not verify_hmac_sha512([], sts, sig)
    assert not verify_hmac_sha512([b""], sts, sig)
    tampered_body = BODY.replace(b"10000.00", b"90000.00", 1)
    assert not verify_hmac_sha512([SECRET], string_to_sign_transactional("POST", PATH, TOKEN, tampered_body, TS), sig)
    assert not verify_hmac_sha512([SECRET], string_to_sign_transactional("POST", PATH, "other", BODY, TS), sig)
    assert not verify_hmac_sha512(
        [SECRET], string_to_sign_transactional("POST", PATH, TOKEN, BODY, "2020-12-17T10:55:01+07:00"), sig
    )
    assert not verify_hmac_sha512([SECRET], string_to_sign_transactional("POST", "/v1.0/x", TOKEN, BODY, TS), sig)
    # whitespace-only changes outside strings keep the signature; inside a string they do not
    assert verify_hmac_sha512([SECRET], string_to_sign_transactional("POST", PATH, TOKEN, BODY_MIN, TS), sig)
    spaced = BODY.replace(b'"REQ 1"', b'"REQ  1"')
    assert not verify_hmac_sha512([SECRET], string_to_sign_transactional("POST", PATH, TOKEN, spaced, TS), sig)


def test_reserialised_body_does_not_verify() -> None:
    sts = string_to_sign_transactional("POST", PATH, TOKEN, BODY, TS)
    sig = sign_hmac_sha512(SECRET, sts)
    obj = json.loads(BODY)  # "total": 10000.00 becomes 10000.0
    for variant in (
        json.dumps(obj, indent=4).encode(),
        json.dumps(obj, sort_keys=True).encode(),
        json.dumps(obj, separators=(",", ":")).encode(),
    ):
        assert variant != BODY_MIN
        assert not verify_hmac_sha512([SECRET], string_to_sign_transactional("POST", PATH, TOKEN, variant, TS), sig)


@pytest.mark.parametrize("bad", ["", "not base64!", "YWJj\n", "YWJ", "=" * 88, "é", "-_-_"])
def test_hmac_malformed_signature_is_false(bad: str) -> None:
    assert verify_hmac_sha512([SECRET], "x", bad) is False


def test_hmac_rotation_both_secrets_valid() -> None:
    old, new = b"old-secret", b"new-secret"
    sts = string_to_sign_transactional("POST", PATH, TOKEN, BODY, TS)
    for s in (old, new):
        assert verify_hmac_sha512([old, new], sts, sign_hmac_sha512(s, sts))
    assert not verify_hmac_sha512([new], sts, sign_hmac_sha512(old, sts))


def test_hmac_empty_secret_refused() -> None:
    with pytest.raises(SnapKeyError):
        sign_hmac_sha512(b"", "x")


# --- RSA: B2B token and asymmetric transactional ------------------------------------------------------
def test_token_string_to_sign() -> None:
    assert string_to_sign_token("MANDIRI", "2020-12-17T03:55:00Z") == "MANDIRI|2020-12-17T03:55:00Z"


def test_rsa_sign_verify_cross_checked(keys: tuple[tuple[bytes, bytes], tuple[bytes, bytes]]) -> None:
    (priv, pub), _ = keys
    sts = string_to_sign_token("MANDIRI", TS)
    # signed independently with cryptography, verified with ours
    key = serialization.load_pem_private_key(priv, password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    theirs = base64.b64encode(key.sign(sts.encode(), padding.PKCS1v15(), hashes.SHA256())).decode()
    assert verify_rsa_sha256([pub], sts, theirs)
    # signed with ours, verified independently (PKCS#1 v1.5 is deterministic: identical signature)
    ours = sign_rsa_sha256(priv, sts)
    assert ours == theirs
    key.public_key().verify(base64.b64decode(ours), sts.encode(), padding.PKCS1v15(), hashes.SHA256())


def test_rsa_tampering_and_wrong_key(keys: tuple[tuple[bytes, bytes], tuple[bytes, bytes]]) -> None:
    (priv, pub), (_, other_pub) = keys
    sts = string_to_sign_token("MANDIRI", TS)
    sig = sign_rsa_sha256(priv, sts)
    assert not verify_rsa_sha256([pub], sts, _flip(sig))
    assert not verify_rsa_sha256([pub], string_to_sign_token("BNI", TS), sig)
    assert not verify_rsa_sha256([other_pub], sts, sig)
    assert not verify_rsa_sha256([], sts, sig)
    for bad in ("", "!!", "YWJj", sig[:-4], sig + "AAAA", "é"):
        assert verify_rsa_sha256([pub], sts, bad) is False


def test_rsa_rotation_and_preloaded_keys(keys: tuple[tuple[bytes, bytes], tuple[bytes, bytes]]) -> None:
    (priv_old, pub_old), (priv_new, pub_new) = keys
    sts = string_to_sign_token("MANDIRI", TS)
    loaded = [load_rsa_public_key(pub_old), load_rsa_public_key(pub_new)]
    for priv in (priv_old, priv_new):
        sig = sign_rsa_sha256(priv, sts)
        assert verify_rsa_sha256([pub_old, pub_new], sts, sig)
        assert verify_rsa_sha256(loaded, sts, sig)
    assert not verify_rsa_sha256([pub_new], sts, sign_rsa_sha256(priv_old, sts))


def test_asymmetric_transactional(keys: tuple[tuple[bytes, bytes], tuple[bytes, bytes]]) -> None:
    (priv, pub), _ = keys
    sts = string_to_sign_asymmetric("post", PATH, BODY, TS)
    assert sts == f"POST:{PATH}:{hashlib.sha256(BODY_MIN).hexdigest()}:{TS}"
    sig = sign_rsa_sha256(priv, sts)
    assert verify_rsa_sha256([pub], string_to_sign_asymmetric("POST", PATH, BODY_MIN, TS), sig)
    reserialised = json.dumps(json.loads(BODY), separators=(",", ":")).encode()
    assert not verify_rsa_sha256([pub], string_to_sign_asymmetric("POST", PATH, reserialised, TS), sig)


def test_unusable_keys_raise() -> None:
    with pytest.raises(SnapKeyError):
        load_rsa_public_key(b"not a pem")
    ec_pub = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    with pytest.raises(SnapKeyError):
        load_rsa_public_key(ec_pub)
    small_priv, small_pub = _pem_pair(1024)
    with pytest.raises(SnapKeyError):
        load_rsa_public_key(small_pub)
    with pytest.raises(SnapKeyError):
        sign_rsa_sha256(small_priv, "x")
    with pytest.raises(SnapKeyError):
        sign_rsa_sha256(b"garbage", "x")


# --- X-TIMESTAMP --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2020-12-17T10:55:00+07:00", datetime(2020, 12, 17, 3, 55, tzinfo=UTC)),
        ("2020-12-17T03:55:00Z", datetime(2020, 12, 17, 3, 55, tzinfo=UTC)),
        ("2020-12-17T03:55:00.123Z", datetime(2020, 12, 17, 3, 55, 0, 123000, tzinfo=UTC)),
        ("2020-12-17T03:55:00.5Z", datetime(2020, 12, 17, 3, 55, 0, 500000, tzinfo=UTC)),
        ("2020-12-17T03:55:00-00:00", datetime(2020, 12, 17, 3, 55, tzinfo=UTC)),
        ("2020-12-16T22:55:00-05:00", datetime(2020, 12, 17, 3, 55, tzinfo=UTC)),
        ("2020-12-17T17:55:00+14:00", datetime(2020, 12, 17, 3, 55, tzinfo=UTC)),
    ],
)
def test_parse_timestamp(value: str, expected: datetime) -> None:
    parsed = parse_snap_timestamp(value)
    assert parsed.utcoffset() is not None
    assert parsed == expected


def test_parse_timestamp_keeps_offset() -> None:
    assert parse_snap_timestamp(TS).utcoffset() == timedelta(hours=7)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "2020-12-17T10:55:00",  # no offset
        "2020-12-17 10:55:00+07:00",
        "2020-12-17t10:55:00z",
        "2020-12-17T10:55+07:00",
        "2020-12-17T10:55:00+0700",
        "2020-12-17T10:55:00.1234567Z",
        "2020-12-17T10:55:00.123+07:00",  # 29 chars > 25
        "2020-13-17T10:55:00+07:00",
        "2020-12-17T24:00:00+07:00",
        "2020-02-30T10:55:00+07:00",
        "2020-12-17T10:55:00+15:00",
        "2020-12-17T10:55:00+07:00\n",
        "\uff12\uff10\uff12\uff10-12-17T10:55:00Z",  # full-width digits
    ],
)
def test_parse_timestamp_rejects(value: str) -> None:
    with pytest.raises(SnapTimestampError):
        parse_snap_timestamp(value)


def test_parse_timestamp_longer_limit() -> None:
    value = "2020-12-17T10:55:00.123+07:00"
    assert parse_snap_timestamp(value, max_length=32).microsecond == 123000


def test_within_window_edges() -> None:
    now = datetime(2020, 12, 17, 3, 55, tzinfo=UTC)
    wib = timezone(timedelta(hours=7))
    assert within_window(now, now, 0)
    assert within_window(now + timedelta(seconds=300), now, 300)
    assert within_window(now - timedelta(seconds=300), now, 300)
    assert not within_window(now + timedelta(seconds=300, microseconds=1), now, 300)
    assert not within_window(now - timedelta(seconds=300, microseconds=1), now, 300)
    assert within_window(parse_snap_timestamp("2020-12-17T10:59:59+07:00"), now.astimezone(wib), 300)
    assert not within_window(parse_snap_timestamp("2020-12-17T11:00:01+07:00"), now, 300)
    with pytest.raises(ValueError):
        within_window(datetime(2020, 12, 17), now, 300)  # naive
    with pytest.raises(ValueError):
        within_window(now, now, -1)
