"""The pure webhook rules: address and URL policy, signatures (against the standardwebhooks reference),
ids, retry timing and response classification."""

from __future__ import annotations

import base64
import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from connectors.kbri import webhook_policy as p

SECRET = "whsec_" + base64.b64encode(bytes(range(32))).decode()
OTHER_SECRET = "whsec_" + base64.b64encode(bytes(range(100, 132))).decode()


# --- addresses ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", p.ADDRESS_LOOPBACK),
        ("127.255.0.9", p.ADDRESS_LOOPBACK),
        ("::1", p.ADDRESS_LOOPBACK),
        ("0.0.0.0", p.ADDRESS_UNSPECIFIED),
        ("::", p.ADDRESS_UNSPECIFIED),
        ("10.1.2.3", p.ADDRESS_PRIVATE),
        ("172.16.0.1", p.ADDRESS_PRIVATE),
        ("192.168.1.1", p.ADDRESS_PRIVATE),
        ("169.254.169.254", p.ADDRESS_LINK_LOCAL),  # cloud metadata service
        ("169.254.0.1", p.ADDRESS_LINK_LOCAL),
        ("fe80::1", p.ADDRESS_LINK_LOCAL),
        ("fe80::1%eth0", p.ADDRESS_LINK_LOCAL),
        ("fc00::1", p.ADDRESS_PRIVATE),
        ("fd12:3456::1", p.ADDRESS_PRIVATE),
        ("fec0::1", p.ADDRESS_PRIVATE),  # deprecated site-local, which Python calls global
        ("224.0.0.1", p.ADDRESS_MULTICAST),  # Python calls 224.0.0.0/4 global
        ("239.255.255.250", p.ADDRESS_MULTICAST),
        ("ff02::1", p.ADDRESS_MULTICAST),
        ("ff0e::1", p.ADDRESS_MULTICAST),
        ("240.0.0.1", p.ADDRESS_RESERVED),
        ("255.255.255.255", p.ADDRESS_RESERVED),
        ("100.64.0.1", p.ADDRESS_NOT_GLOBAL),  # carrier-grade NAT
        ("192.0.2.10", p.ADDRESS_PRIVATE),  # documentation
        ("2001:db8::1", p.ADDRESS_PRIVATE),
        ("::ffff:127.0.0.1", p.ADDRESS_LOOPBACK),  # IPv4-mapped
        ("::ffff:7f00:1", p.ADDRESS_LOOPBACK),  # the same, written in hex
        ("::ffff:10.0.0.1", p.ADDRESS_PRIVATE),
        ("::ffff:169.254.169.254", p.ADDRESS_LINK_LOCAL),
        ("::127.0.0.1", p.ADDRESS_RESERVED),  # deprecated IPv4-compatible
        ("64:ff9b::7f00:1", p.ADDRESS_LOOPBACK),  # NAT64 of 127.0.0.1
        ("64:ff9b::a9fe:a9fe", p.ADDRESS_LINK_LOCAL),  # NAT64 of 169.254.169.254
        ("2002:7f00:1::1", p.ADDRESS_LOOPBACK),  # 6to4 of 127.0.0.1
        ("2002:c0a8:101::1", p.ADDRESS_PRIVATE),  # 6to4 of 192.168.1.1
        ("2001::1", p.ADDRESS_PRIVATE),  # Teredo
        ("not-an-address", p.ADDRESS_NOT_GLOBAL),
    ],
)
def test_refused_addresses(address, reason):
    assert p.address_refusal(address) == reason


@pytest.mark.parametrize(
    "address",
    ["8.8.8.8", "93.184.216.34", "2606:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808", "2002:808:808::1"],
)
def test_public_unicast_addresses_are_allowed(address):
    assert p.address_refusal(address) is None


@pytest.mark.parametrize("host", ["2130706433", "0x7f000001", "0177.0.0.1", "127.1", "0x7f.1", "017700000001"])
def test_legacy_ipv4_spellings_are_read_as_the_address_they_denote(host):
    assert str(p.literal_address(host)) == "127.0.0.1"


@pytest.mark.parametrize("host", ["deadbeef", "cafe.be", "example.com", "1e100.net", "kbri-kl.go.id"])
def test_host_names_are_not_addresses(host):
    assert p.literal_address(host) is None


def test_choose_address_refuses_a_name_if_any_address_is_refused():
    with pytest.raises(p.WebhookRefused) as refused:
        p.choose_address(["93.184.216.34", "10.0.0.7"], allow_private=False)
    assert refused.value.reason == p.ADDRESS_PRIVATE
    assert p.choose_address(["93.184.216.34", "2606:4700::1111"], allow_private=False) == "93.184.216.34"
    assert p.choose_address(["127.0.0.1"], allow_private=True) == "127.0.0.1"
    with pytest.raises(p.WebhookRefused) as empty:
        p.choose_address([], allow_private=True)
    assert empty.value.reason == p.HOST_UNRESOLVED


# --- endpoint URLs ----------------------------------------------------------------------------------------------
def test_https_url_is_parsed_for_pinning():
    url = p.check_endpoint_url(
        "https://Hooks.KBRI-KL.example/v1/sinergi?tenant=a", allow_http=False, allow_private=False
    )
    assert (url.scheme, url.host, url.port, url.target, url.literal) == (
        "https",
        "hooks.kbri-kl.example",
        443,
        "/v1/sinergi?tenant=a",
        None,
    )
    assert url.host_header() == "hooks.kbri-kl.example"
    assert url.pinned("93.184.216.34") == "https://93.184.216.34:443/v1/sinergi?tenant=a"
    assert url.pinned("2606:4700::1111") == "https://[2606:4700::1111]:443/v1/sinergi?tenant=a"


def test_non_default_port_and_idn_host():
    url = p.check_endpoint_url("https://bücher.example:8443", allow_http=False, allow_private=False)
    assert url.host == "xn--bcher-kva.example"
    assert url.target == "/"
    assert url.host_header() == "xn--bcher-kva.example:8443"


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://hooks.example/x", p.URL_SCHEME),
        ("ftp://hooks.example/x", p.URL_SCHEME),
        ("hooks.example/x", p.URL_SCHEME),
        ("https://user:pw@hooks.example/x", p.URL_CREDENTIALS),
        ("https://token@hooks.example/x", p.URL_CREDENTIALS),
        ("https:///x", p.URL_NO_HOST),
        ("https://hooks.example:99999/x", p.URL_PORT),
        ("https://hooks.example:0/x", p.URL_PORT),
        ("https://hooks.example/x#frag", p.URL_INVALID),
        ("https://hooks.example/a b", p.URL_INVALID),
        ("https://hooks.example/\nx", p.URL_INVALID),
        ("https://[::1/x", p.URL_INVALID),
        ("https://hooks.example/" + "a" * 2048, p.URL_TOO_LONG),
        ("https://127.0.0.1/x", p.ADDRESS_LOOPBACK),
        ("https://[::1]/x", p.ADDRESS_LOOPBACK),
        ("https://[::ffff:127.0.0.1]/x", p.ADDRESS_LOOPBACK),
        ("https://[::ffff:169.254.169.254]/x", p.ADDRESS_LINK_LOCAL),
        ("https://169.254.169.254/latest/meta-data", p.ADDRESS_LINK_LOCAL),
        ("https://[fe80::1%25eth0]/x", p.ADDRESS_LINK_LOCAL),
        ("https://[fd00::1]/x", p.ADDRESS_PRIVATE),
        ("https://10.0.0.1/x", p.ADDRESS_PRIVATE),
        ("https://2130706433/x", p.ADDRESS_LOOPBACK),
        ("https://0x7f.1/x", p.ADDRESS_LOOPBACK),
        ("https://0.0.0.0/x", p.ADDRESS_UNSPECIFIED),
        ("https://224.0.0.251/x", p.ADDRESS_MULTICAST),
    ],
)
def test_refused_urls(url, reason):
    with pytest.raises(p.WebhookRefused) as refused:
        p.check_endpoint_url(url, allow_http=False, allow_private=False)
    assert refused.value.reason == reason
    assert url.split("://")[-1] not in refused.value.message  # the message never echoes the URL


def test_test_mode_allows_http_and_loopback():
    url = p.check_endpoint_url("http://127.0.0.1:8099/hook", allow_http=True, allow_private=True)
    assert (url.scheme, url.host, url.port, url.target) == ("http", "127.0.0.1", 8099, "/hook")
    assert str(url.literal) == "127.0.0.1"
    # the legacy spelling is pinned to the address it denotes, not passed to the resolver
    assert p.check_endpoint_url("http://2130706433/", allow_http=True, allow_private=True).host == "127.0.0.1"
    with pytest.raises(p.WebhookRefused) as refused:
        p.check_endpoint_url("http://127.0.0.1:8099/hook", allow_http=False, allow_private=True)
    assert refused.value.reason == p.URL_SCHEME


# --- secrets and signatures --------------------------------------------------------------------------------------
def test_signature_is_what_the_reference_library_computes_and_verifies():
    body = b'{"member":"x","version":3,"name":"Siti Aminah"}'
    ts = int(datetime.now(UTC).timestamp())
    ours = p.sign_v1(p.decode_secret(SECRET), "msg_abc", ts, body)
    reference = Webhook(SECRET).sign("msg_abc", datetime.fromtimestamp(ts, UTC), body.decode())
    assert ours == reference
    headers = {"webhook-id": "msg_abc", "webhook-timestamp": str(ts), "webhook-signature": ours}
    assert Webhook(SECRET).verify(body, headers) == {"member": "x", "version": 3, "name": "Siti Aminah"}
    with pytest.raises(WebhookVerificationError):
        Webhook(OTHER_SECRET).verify(body, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(body + b" ", headers)


def test_rotation_header_is_verified_by_either_secret():
    body = b'{"v":1}'
    ts = int(datetime.now(UTC).timestamp())
    header = p.signature_header([p.decode_secret(SECRET), p.decode_secret(OTHER_SECRET)], "msg_r", ts, body)
    assert len(header.split(" ")) == 2
    headers = {"webhook-id": "msg_r", "webhook-timestamp": str(ts), "webhook-signature": header}
    Webhook(SECRET).verify(body, headers)
    Webhook(OTHER_SECRET).verify(body, headers)
    third = "whsec_" + base64.b64encode(b"z" * 32).decode()
    with pytest.raises(WebhookVerificationError):
        Webhook(third).verify(body, headers)


@pytest.mark.parametrize(
    "secret",
    [
        base64.b64encode(b"k" * 32).decode(),  # no prefix
        "whsec_not base64!",
        "whsec_" + base64.b64encode(b"k" * 23).decode(),  # too short
        "whsec_" + base64.b64encode(b"k" * 65).decode(),  # too long
        "whsec_",
    ],
)
def test_invalid_secrets_are_refused(secret):
    with pytest.raises(p.WebhookRefused) as refused:
        p.decode_secret(secret)
    assert refused.value.reason == p.SECRET_INVALID
    assert secret not in refused.value.message


def test_webhook_id_is_stable_per_update_and_distinct_across_updates():
    first = p.webhook_id("KBRI_KUALA_LUMPUR", "m1:v3")
    assert first == p.webhook_id("KBRI_KUALA_LUMPUR", "m1:v3")
    assert first.startswith("msg_") and "." not in first
    others = {p.webhook_id("KBRI_KUALA_LUMPUR", "m1:v4"), p.webhook_id("KDEI_TAIPEI", "m1:v3"), first}
    assert len(others) == 3


def test_member_key_hash_hides_the_key():
    key = "123456789012345678"
    hashed = p.member_key_hash(key)
    assert hashed == p.member_key_hash(key) != p.member_key_hash("123456789012345679")
    assert key not in hashed and len(hashed) == 32


# --- retry timing ------------------------------------------------------------------------------------------------
def test_full_jitter_bounds():
    assert p.full_jitter_delay(1, 2.0, 600.0, 0.0) == 0.0
    assert p.full_jitter_delay(1, 2.0, 600.0, 0.5) == 1.0
    assert p.full_jitter_delay(4, 2.0, 600.0, 0.5) == 8.0  # ceiling 2 * 2^3
    assert p.full_jitter_delay(30, 2.0, 600.0, 0.999) == pytest.approx(599.4)  # capped
    assert p.full_jitter_delay(10_000, 2.0, 600.0, 0.5) == 300.0  # no overflow
    rng = random.Random(7)
    for attempt in range(1, 40):
        delay = p.full_jitter_delay(attempt, 2.0, 600.0, rng.random())
        assert 0.0 <= delay < min(600.0, 2.0 * 2 ** (attempt - 1))


def test_full_jitter_spreads_retries():
    rng = random.Random(11)
    delays = [p.full_jitter_delay(8, 1.0, 600.0, rng.random()) for _ in range(200)]
    assert min(delays) < 16 and max(delays) > 112  # spread over [0, 128), not clustered at the ceiling


def test_retry_after_seconds_and_http_date():
    now = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
    unix = now.timestamp()
    assert p.retry_after_delay("120", unix, 600.0) == 120.0
    assert p.retry_after_delay(" 0 ", unix, 600.0) == 0.0
    assert p.retry_after_delay("99999", unix, 600.0) == 600.0  # bounded by the cap
    in_90s = format_datetime(now + timedelta(seconds=90), usegmt=True)
    assert p.retry_after_delay(in_90s, unix, 600.0) == 90.0
    assert p.retry_after_delay(format_datetime(now + timedelta(days=2), usegmt=True), unix, 600.0) == 600.0
    assert p.retry_after_delay(format_datetime(now - timedelta(hours=1), usegmt=True), unix, 600.0) == 0.0
    for unreadable in (None, "", "soon", "-5", "1.5", "Thu, 99 Foo 2026 99:00:00 GMT"):
        assert p.retry_after_delay(unreadable, unix, 600.0) is None


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        (200, p.OK),
        (202, p.OK),
        (204, p.OK),
        (301, p.HTTP_3XX),
        (302, p.HTTP_3XX),
        (307, p.HTTP_3XX),
        (400, p.HTTP_4XX),
        (401, p.HTTP_4XX),
        (404, p.HTTP_4XX),
        (410, p.HTTP_410),
        (429, p.HTTP_429),
        (500, p.HTTP_5XX),
        (503, p.HTTP_5XX),
        (599, p.HTTP_5XX),
        (199, p.HTTP_OTHER),
        (600, p.HTTP_OTHER),
    ],
)
def test_classify_status(status, reason):
    assert p.classify_status(status) == reason
