"""Keys and identifiers: participant key, deterministic event ids, SNAP virtual account numbers, masking."""

from __future__ import annotations

import hashlib
import hmac
import re
import uuid

from services.domain.errors import Reason, Rejected

# Fixed namespace for every deterministic id of the hub (= uuid5(NAMESPACE_URL, "urn:sinergi:events")).
# Never change it: the ids of replayed events depend on it.
EVENT_NAMESPACE = uuid.UUID("b62ec355-512b-57b6-9fcf-2f00489b9b81")

PARTNER_SERVICE_ID_LEN = 8
CUSTOMER_NO_MAX = 20
VA_MAX = PARTNER_SERVICE_ID_LEN + CUSTOMER_NO_MAX  # 28

_PSID = re.compile(r" {0,7}[0-9A-Za-z]{1,8}")
_CUSTOMER_NO = re.compile(r"[0-9]{1,20}")


def participant_id(nik: str, secret: bytes, digits: int) -> str:
    """Decimal keyed hash of a NIK: HMAC-SHA256(secret, nik) as an integer, mod 10**digits, zero-padded.

    It is both the Kafka key of a participant and the SNAP VA customer number, so ``digits`` is at most 20.
    """
    if not 1 <= digits <= CUSTOMER_NO_MAX:
        raise ValueError("digits must be between 1 and 20")
    if not secret:
        raise ValueError("secret must not be empty")
    mac = hmac.new(secret, nik.encode("utf-8"), hashlib.sha256).digest()
    return str(int.from_bytes(mac, "big") % 10**digits).zfill(digits)


def passport_lookup_key(passport_number: str, secret: bytes) -> str:
    """Keyed hash of a normalised passport number (uppercase, no spaces): lets an office look a member up by
    passport without the hub storing or passing on the number. Hex HMAC-SHA256 under a passport-only label."""
    if not secret:
        raise ValueError("secret must not be empty")
    normalised = "".join(passport_number.split()).upper()
    return hmac.new(secret, b"passport|" + normalised.encode("utf-8"), hashlib.sha256).hexdigest()


def mask_tail(value: str | None, keep: int = 4) -> str:
    """``"************0001"``: all but the last ``keep`` characters masked; fully masked when too short."""
    if not value:
        return ""
    keep = max(keep, 0)
    if len(value) <= keep:
        return "*" * len(value)
    return "*" * (len(value) - keep) + value[len(value) - keep :]


def event_uuid(*parts: str) -> str:
    """UUIDv5 over ``"|".join(parts)`` in :data:`EVENT_NAMESPACE`.

    Only the last part may contain ``|`` (it is free text such as a partner's request id); an earlier part
    with ``|`` would make two different tuples collide, so that is a ValueError.
    """
    if not parts:
        raise ValueError("event_uuid needs at least one part")
    if any("|" in p for p in parts[:-1]):
        raise ValueError("only the last part of an event id may contain '|'")
    return str(uuid.uuid5(EVENT_NAMESPACE, "|".join(parts)))


def compose_va(partner_service_id: str, customer_no: str) -> str:
    """SNAP ``virtualAccountNo``: partnerServiceId left-padded with spaces to 8 + customerNo (<= 28 chars)."""
    padded = partner_service_id.rjust(PARTNER_SERVICE_ID_LEN)
    if _PSID.fullmatch(padded) is None:
        raise Rejected(Reason.VA_FORMAT, "partnerServiceId", "partnerServiceId must be 1-8 alphanumerics")
    if _CUSTOMER_NO.fullmatch(customer_no) is None:
        raise Rejected(Reason.VA_FORMAT, "customerNo", "customerNo must be 1-20 digits")
    va = padded + customer_no
    if len(va) > VA_MAX:  # pragma: no cover - guaranteed by the two checks above
        raise Rejected(Reason.VA_FORMAT, "virtualAccountNo", "virtualAccountNo longer than 28 characters")
    return va


def split_va(virtual_account_no: str) -> tuple[str, str]:
    """Inverse of :func:`compose_va`: ``(partnerServiceId padded to 8, customerNo)``."""
    if not isinstance(virtual_account_no, str) or not (PARTNER_SERVICE_ID_LEN < len(virtual_account_no) <= VA_MAX):
        raise Rejected(Reason.VA_FORMAT, "virtualAccountNo", "virtualAccountNo must be 9-28 characters")
    psid, customer_no = (
        virtual_account_no[:PARTNER_SERVICE_ID_LEN],
        virtual_account_no[PARTNER_SERVICE_ID_LEN:],
    )
    if compose_va(psid, customer_no) != virtual_account_no:  # pragma: no cover - compose_va validates
        raise Rejected(Reason.VA_FORMAT, "virtualAccountNo", "virtualAccountNo is malformed")
    return psid, customer_no
