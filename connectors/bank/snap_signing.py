"""SNAP request signing (domain.md 4.2-4.3): string-to-sign builders, HMAC-SHA512, SHA256withRSA, X-TIMESTAMP.

Pure functions, no I/O. Three signatures exist in SNAP:

- B2B access token:   SHA256withRSA(privateKey, clientId + "|" + X-TIMESTAMP)
- transactional:      HMAC-SHA512(clientSecret, METHOD:EndpointUrl:AccessToken:hex(sha256(minify(body))):X-TIMESTAMP)
- asymmetric variant: SHA256withRSA(privateKey, METHOD:EndpointUrl:hex(sha256(minify(body))):X-TIMESTAMP)

All signatures travel Base64-encoded (standard alphabet, padded). The body digest is computed over the
**raw request bytes** with insignificant whitespace removed (`minify_json_bytes`), never over a
re-serialised object: re-serialising changes number spelling (`10000.00` -> `10000.0`), escapes and key
order, and the bank signed what it sent.

Verification functions accept several keys/secrets so that a partner can rotate: during the overlap both
the old and the new secret/key verify. They return False for any malformed signature; they never raise on
attacker-controlled input. HMAC comparison uses `hmac.compare_digest` only, and every configured secret is
tried (no early exit), so timing does not reveal which secret matched.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Sequence
from datetime import datetime, timedelta

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

__all__ = [
    "MIN_RSA_BITS",
    "X_TIMESTAMP_MAX_LEN",
    "MinifyError",
    "SnapKeyError",
    "SnapTimestampError",
    "body_digest",
    "load_rsa_private_key",
    "load_rsa_public_key",
    "minify_json_bytes",
    "parse_snap_timestamp",
    "sign_hmac_sha512",
    "sign_rsa_sha256",
    "sign_transactional_hmac",
    "signature_body_digest",
    "string_to_sign_asymmetric",
    "string_to_sign_token",
    "string_to_sign_transactional",
    "verify_hmac_sha512",
    "verify_rsa_sha256",
    "within_window",
]

MIN_RSA_BITS = 2048
X_TIMESTAMP_MAX_LEN = 25  # domain.md 4.2: `yyyy-MM-ddTHH:mm:ss+07:00` is exactly 25 characters
_MAX_OFFSET = timedelta(hours=14)  # real-world UTC offsets lie in [-12:00, +14:00]


# --- errors -------------------------------------------------------------------------------------------
class MinifyError(ValueError):
    """The body cannot be minified: it is not well-formed enough to know where strings are."""

    def __init__(self, reason: str, offset: int) -> None:
        super().__init__(f"{reason} at byte {offset}")
        self.reason = reason
        self.offset = offset


class SnapTimestampError(ValueError):
    """X-TIMESTAMP is not `yyyy-MM-ddTHH:mm:ss[.fraction](Z|+HH:MM|-HH:MM)` (or is too long / out of range)."""


class SnapKeyError(ValueError):
    """A configured key is unusable (not PEM, not RSA, too short). A configuration error, not a bad request."""


# --- minify -------------------------------------------------------------------------------------------
_JSON_WS = frozenset(b" \t\n\r")  # RFC 8259 insignificant whitespace, and nothing else
# Bytes after which, or before which, removing whitespace cannot glue two tokens together.
_OPENERS = frozenset(b"{[,:")
_CLOSERS = frozenset(b"}],:")


# One token per match, found by the regex engine rather than a Python loop over every byte: a whole string
# (each backslash escape stepped over), a whitespace run, a run of any other bytes, or a lone quote, which
# opens a string that never closes.
_TOKENS = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[ \t\n\r]+|[^" \t\n\r]+|"', re.DOTALL)
# A body with no whitespace outside its strings, every string closed, is its own minified form: the usual
# machine-written notification (its strings hold spaces: partnerServiceId "   88001"), answered by one match
# instead of tokenizing (560 bytes: 42 µs byte by byte, 34 µs by token, 6 µs this way). Possessive
# quantifiers: a body that does not match fails in linear time, without backtracking.
_COMPACT = re.compile(rb'(?:[^" \t\n\r]++|"[^"\\]*+(?:\\.[^"\\]*+)*+")*+', re.DOTALL)


def minify_json_bytes(raw: bytes) -> bytes:
    """`raw` without the JSON whitespace that lies outside string values; everything else byte-for-byte.

    A tokenizer over the bytes, not a parser: key order, duplicate keys, number spelling, escapes and
    non-ASCII text are kept exactly as received. Full JSON validation stays with the body parser.
    Raises MinifyError for invalid UTF-8, an unterminated string, or whitespace that separates two
    tokens (`[1 2]`, `"a" "b"`): removing it would change the meaning, e.g. `[1 2]` -> `[12]`.
    """
    try:
        raw.decode("utf-8", errors="strict")
    except UnicodeDecodeError as exc:
        raise MinifyError("invalid UTF-8", exc.start) from None
    if _COMPACT.fullmatch(raw) is not None:
        return raw
    kept: list[bytes] = []
    skipped_ws = False
    for match in _TOKENS.finditer(raw):
        token = match.group()
        if token[0] in _JSON_WS:
            skipped_ws = True
            continue
        if skipped_ws and kept and kept[-1][-1] not in _OPENERS and token[0] not in _CLOSERS:
            raise MinifyError("whitespace between two tokens", match.start())
        if token == b'"':
            raise MinifyError("unterminated string", match.start())
        skipped_ws = False
        kept.append(token)
    return b"".join(kept)


def body_digest(raw_body: bytes) -> str:
    """Lowercase(HexEncode(SHA-256(minify(raw_body)))); the empty body (e.g. GET) hashes the empty string."""
    return hashlib.sha256(minify_json_bytes(raw_body)).hexdigest()


def signature_body_digest(raw_body: bytes) -> str:
    """body_digest for JSON bodies; hex(sha256(raw)) for a body that is not JSON-shaped (an MT940, camt
    or CSV statement upload), so that the signature still covers exactly the bytes sent."""
    try:
        return body_digest(raw_body)
    except MinifyError:
        return hashlib.sha256(raw_body).hexdigest()


def sign_transactional_hmac(
    secret: bytes, method: str, endpoint_url: str, access_token: str, raw_body: bytes, timestamp: str
) -> str:
    """X-SIGNATURE of a symmetric SNAP call, exactly as a bank computes it (the simulator and tests use it)."""
    sts = f"{method.upper()}:{endpoint_url}:{access_token}:{signature_body_digest(raw_body)}:{timestamp}"
    return sign_hmac_sha512(secret, sts)


# --- strings to sign ----------------------------------------------------------------------------------
def string_to_sign_transactional(
    method: str, endpoint_url: str, access_token: str, raw_body: bytes, timestamp: str
) -> str:
    """`METHOD:EndpointUrl:AccessToken:lowercase(hex(sha256(minify(body)))):X-TIMESTAMP` (symmetric, HMAC).

    `endpoint_url` is used exactly as given (relative path vs. path+query differs per bank, domain.md 4.3.5);
    `timestamp` is the X-TIMESTAMP header verbatim, never a re-formatted datetime.
    """
    return f"{method.upper()}:{endpoint_url}:{access_token}:{body_digest(raw_body)}:{timestamp}"


def string_to_sign_asymmetric(method: str, endpoint_url: str, raw_body: bytes, timestamp: str) -> str:
    """`METHOD:EndpointUrl:lowercase(hex(sha256(minify(body)))):X-TIMESTAMP` (RSA variant, no access token)."""
    return f"{method.upper()}:{endpoint_url}:{body_digest(raw_body)}:{timestamp}"


def string_to_sign_token(client_id: str, timestamp: str) -> str:
    """`clientId|X-TIMESTAMP`, signed with SHA256withRSA for the B2B access-token call."""
    return f"{client_id}|{timestamp}"


# --- HMAC-SHA512 --------------------------------------------------------------------------------------
def _hmac_sha512(secret: bytes, sts: str) -> bytes:
    return hmac.new(secret, sts.encode("utf-8"), hashlib.sha512).digest()


def _b64decode(signature_b64: str) -> bytes | None:
    """Strict standard Base64 (no whitespace, no URL-safe alphabet); None when malformed."""
    if not isinstance(signature_b64, str) or not signature_b64.isascii():
        return None
    try:
        raw = base64.b64decode(signature_b64, validate=True)
    except (binascii.Error, ValueError):
        return None
    # validate=True still ignores the unused low bits of the last character ("...TA==" and "...TB==" decode
    # alike): only the canonical spelling is accepted, so a valid signature has exactly one X-SIGNATURE form.
    return raw if base64.b64encode(raw).decode("ascii") == signature_b64 else None


def sign_hmac_sha512(secret: bytes, sts: str) -> str:
    """Base64(HMAC-SHA512(secret, sts as UTF-8))."""
    if not secret:
        raise SnapKeyError("empty HMAC secret")
    return base64.b64encode(_hmac_sha512(secret, sts)).decode("ascii")


def verify_hmac_sha512(secrets: Sequence[bytes], sts: str, signature_b64: str) -> bool:
    """True if `signature_b64` is Base64(HMAC-SHA512(s, sts)) for any non-empty s in `secrets`.

    Every secret is computed and compared with hmac.compare_digest (no early exit). Empty secrets never match.
    """
    given = _b64decode(signature_b64)
    if given is None:
        return False
    matched = False
    for secret in secrets:
        if not secret:
            continue
        matched |= hmac.compare_digest(_hmac_sha512(secret, sts), given)
    return matched


# --- SHA256withRSA ------------------------------------------------------------------------------------
def load_rsa_private_key(private_key_pem: bytes) -> rsa.RSAPrivateKey:
    """An unencrypted PEM RSA private key of at least MIN_RSA_BITS bits, else SnapKeyError."""
    try:
        key = serialization.load_pem_private_key(private_key_pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise SnapKeyError(f"not a usable PEM private key: {type(exc).__name__}") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise SnapKeyError("private key is not RSA")
    if key.key_size < MIN_RSA_BITS:
        raise SnapKeyError(f"RSA key shorter than {MIN_RSA_BITS} bits")
    return key


def load_rsa_public_key(public_key_pem: bytes) -> rsa.RSAPublicKey:
    """A PEM RSA public key (SubjectPublicKeyInfo or PKCS#1) of at least MIN_RSA_BITS bits, else SnapKeyError.

    Call this at configuration load so that a broken partner key fails start-up, not a request.
    """
    try:
        key = serialization.load_pem_public_key(public_key_pem)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise SnapKeyError(f"not a usable PEM public key: {type(exc).__name__}") from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise SnapKeyError("public key is not RSA")
    if key.key_size < MIN_RSA_BITS:
        raise SnapKeyError(f"RSA key shorter than {MIN_RSA_BITS} bits")
    return key


def sign_rsa_sha256(private_key_pem: bytes, sts: str) -> str:
    """Base64(RSASSA-PKCS1-v1_5(SHA-256, private key, sts as UTF-8))."""
    key = load_rsa_private_key(private_key_pem)
    return base64.b64encode(key.sign(sts.encode("utf-8"), padding.PKCS1v15(), hashes.SHA256())).decode("ascii")


def verify_rsa_sha256(public_keys_pem: Sequence[bytes | rsa.RSAPublicKey], sts: str, signature_b64: str) -> bool:
    """True if `signature_b64` is a valid SHA256withRSA (PKCS#1 v1.5) signature of `sts` under any key.

    Keys are PEM bytes or already loaded RSAPublicKey objects (load once with load_rsa_public_key).
    A malformed signature returns False; an unusable *configured* key raises SnapKeyError.
    """
    given = _b64decode(signature_b64)
    if given is None or not given:
        return False
    data = sts.encode("utf-8")
    for entry in public_keys_pem:
        key = entry if isinstance(entry, rsa.RSAPublicKey) else load_rsa_public_key(entry)
        try:
            key.verify(given, data, padding.PKCS1v15(), hashes.SHA256())
        except (InvalidSignature, ValueError):
            continue
        return True
    return False


# --- X-TIMESTAMP --------------------------------------------------------------------------------------
_TIMESTAMP = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,6})?(?:Z|[+-][0-9]{2}:[0-9]{2})",
    re.ASCII,
)


def parse_snap_timestamp(value: str, *, max_length: int = X_TIMESTAMP_MAX_LEN) -> datetime:
    """An aware datetime from X-TIMESTAMP: `yyyy-MM-ddTHH:mm:ss[.f{1,6}](Z|+HH:MM|-HH:MM)`.

    DOKU's UTC `...Z` form and the `+07:00` form are both accepted (domain.md 4.2). At most `max_length`
    characters (25 per the SNAP header table; a `+07:00` timestamp with a fraction needs a larger limit).
    The offset is kept; compare instants, not wall-clock fields. Raises SnapTimestampError.
    """
    if not isinstance(value, str) or len(value) > max_length or _TIMESTAMP.fullmatch(value) is None:
        raise SnapTimestampError("X-TIMESTAMP format")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise SnapTimestampError("X-TIMESTAMP out of range") from None
    offset = parsed.utcoffset()
    if offset is None or abs(offset) > _MAX_OFFSET:
        raise SnapTimestampError("X-TIMESTAMP offset out of range")
    return parsed


def within_window(ts: datetime, now: datetime, skew_s: float) -> bool:
    """|ts - now| <= skew_s seconds (edges inclusive). Both datetimes must be timezone-aware."""
    if ts.utcoffset() is None or now.utcoffset() is None:
        raise ValueError("within_window needs timezone-aware datetimes")
    if skew_s < 0:
        raise ValueError("skew_s must be >= 0")
    return abs(ts - now) <= timedelta(seconds=skew_s)
