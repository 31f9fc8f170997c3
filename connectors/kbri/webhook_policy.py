"""Pure rules of the outbound office webhooks (Standard Webhooks): URL and address policy, signatures, ids,
retry timing and response classification. Standard library only, no I/O: the dispatcher
(connectors/kbri/webhooks.py) does the resolving, sending and sleeping and asks these functions what to do.

Addresses: an office endpoint must resolve only to globally routable unicast addresses. IPv6 forms that embed
an IPv4 address (::ffff:a.b.c.d, 6to4 2002::/16, NAT64 64:ff9b::/96) are judged by the embedded address,
because that is where the packet ends up. Host names written as legacy IPv4 numbers ("2130706433",
"0x7f.1", "127.1") are judged as the address the system resolver turns them into.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import re
import socket
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# --- refusal reason codes (stable: returned to the office registering an endpoint, used as metric labels) ---
URL_INVALID = "URL_INVALID"
URL_TOO_LONG = "URL_TOO_LONG"
URL_SCHEME = "URL_SCHEME"
URL_CREDENTIALS = "URL_CREDENTIALS"
URL_NO_HOST = "URL_NO_HOST"
URL_PORT = "URL_PORT"
HOST_UNRESOLVED = "HOST_UNRESOLVED"
ADDRESS_UNSPECIFIED = "ADDRESS_UNSPECIFIED"
ADDRESS_LOOPBACK = "ADDRESS_LOOPBACK"
ADDRESS_LINK_LOCAL = "ADDRESS_LINK_LOCAL"
ADDRESS_MULTICAST = "ADDRESS_MULTICAST"
ADDRESS_PRIVATE = "ADDRESS_PRIVATE"
ADDRESS_RESERVED = "ADDRESS_RESERVED"
ADDRESS_NOT_GLOBAL = "ADDRESS_NOT_GLOBAL"
SECRET_INVALID = "SECRET_INVALID"  # noqa: S105 - a reason code
UNKNOWN_OFFICE = "UNKNOWN_OFFICE"

# --- attempt results (metric label `reason`; DeadLetter.last_reason) ---------------------------------------
OK = "OK"
HTTP_3XX = "HTTP_3XX"  # redirects are never followed: the office must register the final URL
HTTP_4XX = "HTTP_4XX"
HTTP_410 = "HTTP_410"
HTTP_429 = "HTTP_429"
HTTP_5XX = "HTTP_5XX"
HTTP_OTHER = "HTTP_OTHER"
TIMEOUT = "TIMEOUT"
CONNECT_ERROR = "CONNECT_ERROR"
NETWORK_ERROR = "NETWORK_ERROR"
DNS_ERROR = "DNS_ERROR"
ADDRESS_FORBIDDEN = "ADDRESS_FORBIDDEN"  # the name resolved to a refused address at connection time
INTERNAL_ERROR = "INTERNAL_ERROR"

MAX_URL_LENGTH = 2048
SECRET_PREFIX = "whsec_"  # noqa: S105 - the Standard Webhooks prefix
# Standard Webhooks: secrets of 24 to 64 random bytes.
SECRET_MIN_BYTES = 24
SECRET_MAX_BYTES = 64

_CONTROL_OR_SPACE = re.compile(r"[\x00-\x20\x7f]")
_LEGACY_IPV4 = re.compile(r"[0-9a-fA-FxX.]+")
_DELTA_SECONDS = re.compile(r"\d{1,10}")
_NAT64_WELL_KNOWN = ipaddress.IPv6Network("64:ff9b::/96")
_WEBHOOK_ID_NAMESPACE = uuid.UUID("7d3f1c8e-2b59-5b7a-9a4e-6f1d0c2a9e51")


class WebhookRefused(Exception):
    """A registration (or, at connection time, a resolved address) the policy does not allow."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


# --- addresses ------------------------------------------------------------------------------------------
def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64_WELL_KNOWN:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def address_refusal(address: str | IPAddress) -> str | None:
    """None when a webhook may connect to `address`, else the reason code refusing it."""
    if isinstance(address, str):
        try:
            address = ipaddress.ip_address(address)
        except ValueError:
            return ADDRESS_NOT_GLOBAL
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            return address_refusal(embedded)
        if address.scope_id is not None:
            return ADDRESS_LINK_LOCAL
    # Order matters only for the reason reported: ipaddress flags several of these for one address.
    if address.is_unspecified:
        return ADDRESS_UNSPECIFIED
    if address.is_loopback:
        return ADDRESS_LOOPBACK
    if address.is_link_local:
        return ADDRESS_LINK_LOCAL
    if address.is_multicast:  # Python counts 224.0.0.0/4 and ff0e:: as "global"
        return ADDRESS_MULTICAST
    if address.is_reserved:
        return ADDRESS_RESERVED
    if address.is_private or (isinstance(address, ipaddress.IPv6Address) and address.is_site_local):
        return ADDRESS_PRIVATE
    if not address.is_global:  # e.g. 100.64.0.0/10 (carrier-grade NAT)
        return ADDRESS_NOT_GLOBAL
    return None


def literal_address(host: str) -> IPAddress | None:
    """The address a host name denotes without DNS, including the legacy IPv4 spellings inet_aton accepts."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if _LEGACY_IPV4.fullmatch(host) and any(c.isdigit() for c in host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def choose_address(addresses: Sequence[str], *, allow_private: bool) -> str:
    """The address to connect to, from what a name resolved to. One refused address refuses the name: a
    resolver answering a public and a private address is how a DNS-rebinding attack hedges its bet."""
    if not addresses:
        raise WebhookRefused(HOST_UNRESOLVED, "the endpoint host did not resolve")
    if not allow_private:
        for address in addresses:
            reason = address_refusal(address)
            if reason is not None:
                raise WebhookRefused(reason, "the endpoint host resolves to an address webhooks may not reach")
    return addresses[0]


# --- endpoint URLs -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EndpointUrl:
    scheme: str
    host: str  # ASCII (IDNA), lower case, without brackets
    port: int
    target: str  # path and query, at least "/"
    literal: IPAddress | None

    @property
    def default_port(self) -> bool:
        return self.port == (443 if self.scheme == "https" else 80)

    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.default_port else f"{host}:{self.port}"

    def pinned(self, address: str) -> str:
        """The URL naming the already-checked address, so the connection cannot go anywhere else."""
        host = f"[{address}]" if ":" in address else address
        return f"{self.scheme}://{host}:{self.port}{self.target}"


def check_endpoint_url(url: str, *, allow_http: bool, allow_private: bool) -> EndpointUrl:
    """Parse and check an office's endpoint URL; raises WebhookRefused. Names are resolved by the caller."""
    if len(url) > MAX_URL_LENGTH:
        raise WebhookRefused(URL_TOO_LONG, f"the endpoint URL is longer than {MAX_URL_LENGTH} characters")
    if _CONTROL_OR_SPACE.search(url):
        raise WebhookRefused(URL_INVALID, "the endpoint URL contains spaces or control characters")
    try:
        parts = urlsplit(url)
        hostname = parts.hostname
    except ValueError as exc:
        raise WebhookRefused(URL_INVALID, "the endpoint URL is not a valid URL") from exc
    try:
        port = parts.port
    except ValueError as exc:
        raise WebhookRefused(URL_PORT, "the endpoint URL has an invalid port") from exc
    scheme = parts.scheme.lower()
    allowed = ("https", "http") if allow_http else ("https",)
    if scheme not in allowed:
        raise WebhookRefused(URL_SCHEME, "the endpoint URL must use https")
    if parts.username is not None or parts.password is not None:
        raise WebhookRefused(URL_CREDENTIALS, "the endpoint URL must not carry credentials")
    if parts.fragment:
        raise WebhookRefused(URL_INVALID, "the endpoint URL must not have a fragment")
    if not hostname:
        raise WebhookRefused(URL_NO_HOST, "the endpoint URL has no host")
    if port == 0:
        raise WebhookRefused(URL_PORT, "the endpoint URL has an invalid port")
    host = hostname
    if not host.isascii():
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError as exc:
            raise WebhookRefused(URL_INVALID, "the endpoint host is not a valid name") from exc
    literal = literal_address(host)
    if literal is not None:
        if isinstance(literal, ipaddress.IPv6Address) and literal.scope_id is not None:
            raise WebhookRefused(ADDRESS_LINK_LOCAL, "the endpoint URL names a scoped IPv6 address")
        if not allow_private:
            reason = address_refusal(literal)
            if reason is not None:
                raise WebhookRefused(reason, "the endpoint URL names an address webhooks may not reach")
        host = str(literal)
    target = parts.path or "/"
    if parts.query:
        target = f"{target}?{parts.query}"
    return EndpointUrl(
        scheme=scheme, host=host, port=port or (443 if scheme == "https" else 80), target=target, literal=literal
    )


# --- secrets and signatures ---------------------------------------------------------------------------------
def decode_secret(secret: str) -> bytes:
    """The HMAC key of a `whsec_<base64>` secret; raises WebhookRefused(SECRET_INVALID)."""
    if not secret.startswith(SECRET_PREFIX):
        raise WebhookRefused(SECRET_INVALID, f"a webhook secret starts with {SECRET_PREFIX}")
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise WebhookRefused(SECRET_INVALID, "a webhook secret is base64 after its prefix") from exc
    if not SECRET_MIN_BYTES <= len(key) <= SECRET_MAX_BYTES:
        raise WebhookRefused(
            SECRET_INVALID, f"a webhook secret holds {SECRET_MIN_BYTES} to {SECRET_MAX_BYTES} random bytes"
        )
    return key


def sign_v1(key: bytes, webhook_id: str, timestamp: int, body: bytes) -> str:
    """One Standard Webhooks v1 signature: base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}"))."""
    mac = hmac.new(key, f"{webhook_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode("ascii")


def signature_header(keys: Iterable[bytes], webhook_id: str, timestamp: int, body: bytes) -> str:
    """`webhook-signature`: one v1 signature per key, newest first; during a rotation overlap a receiver
    that knows either secret finds its match."""
    return " ".join(sign_v1(key, webhook_id, timestamp, body) for key in keys)


def webhook_id(office: str, record_id: str) -> str:
    """Stable per update: a redelivery, a retry and a replay of the same update carry the same id."""
    digest = uuid.uuid5(_WEBHOOK_ID_NAMESPACE, f"{office}:{record_id}").bytes
    # base32, not hex: a long run of decimal digits in an id would be masked by services.logs as an account.
    return "msg_" + base64.b32encode(digest).decode("ascii").rstrip("=").lower()


def member_key_hash(member_key: str) -> str:
    """What the dispatcher and its dead letters keep instead of the participant key."""
    return hashlib.sha256(f"sinergi-webhook-member:{member_key}".encode()).hexdigest()[:32]


# --- retry timing ---------------------------------------------------------------------------------------------
def full_jitter_delay(attempt: int, base_s: float, cap_s: float, draw: float) -> float:
    """Seconds to wait after failed attempt number `attempt` (1-based): uniform in [0, min(cap, base*2^(n-1))).
    `draw` is a uniform random number in [0, 1)."""
    ceiling = min(cap_s, base_s * 2.0 ** min(max(attempt - 1, 0), 62))
    return draw * ceiling


def retry_after_delay(value: str | None, now_unix: float, cap_s: float) -> float | None:
    """Seconds a Retry-After header asks for (delta seconds or an HTTP date), within [0, cap]; None when
    absent or unreadable, so the caller falls back to its backoff."""
    if value is None:
        return None
    text = value.strip()
    if _DELTA_SECONDS.fullmatch(text):
        seconds = float(text)
    else:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        seconds = when.timestamp() - now_unix
    return min(cap_s, max(0.0, seconds))


def classify_status(status: int) -> str:
    """The attempt result of an HTTP status: OK, a retryable failure, or HTTP_410 (endpoint gone)."""
    if 200 <= status < 300:
        return OK
    if status == 410:
        return HTTP_410
    if status == 429:
        return HTTP_429
    if 300 <= status < 400:
        return HTTP_3XX
    if 400 <= status < 500:
        return HTTP_4XX
    if 500 <= status < 600:
        return HTTP_5XX
    return HTTP_OTHER
