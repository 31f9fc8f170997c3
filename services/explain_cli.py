"""`sinergi explain <customer number | VA number>`: a member's story from the topics, for an operator.

Reads members.v1, core.member-records.v1 and reconciliation.exceptions.v1 from the beginning (every
partition assigned, no consumer group offsets), keeps the records keyed by that participant and prints
services.domain.explain.story(...). The story names events, codes, amounts and dates, never a person.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaException

from services.catalogue import CORE_MEMBER_RECORDS, EXCEPTIONS, MEMBERS
from services.config import Settings
from services.domain import explain
from services.domain.identity import PARTNER_SERVICE_ID_LEN
from services.domain.models import MemberRecord, ReconciliationException
from services.topic_snapshot import read_to_end

RECORD_TOPICS = (MEMBERS.name, CORE_MEMBER_RECORDS.name)
EXCEPTION_TOPICS = (EXCEPTIONS.name,)
EXIT_OK, EXIT_NOT_FOUND, EXIT_UNAVAILABLE = 0, 1, 69


class NotACustomerNumber(ValueError):
    pass


def participant_of(text: str, digits: int) -> str:
    """The customer number in ``text``: a customer number itself, or a VA number (8-character
    partnerServiceId, left-padded with spaces, + customer number; the padding may have been lost)."""
    raw = text.strip()
    if len(text) == PARTNER_SERVICE_ID_LEN + digits and text[PARTNER_SERVICE_ID_LEN:].isdigit():
        return text[PARTNER_SERVICE_ID_LEN:]
    if raw.isdigit() and len(raw) == digits:
        return raw
    if raw.isdigit() and digits < len(raw) <= PARTNER_SERVICE_ID_LEN + digits:
        return raw[-digits:]
    raise NotACustomerNumber(f"expected a {digits}-digit customer number or a VA number")


@dataclass
class Findings:
    records: list[MemberRecord] = field(default_factory=list)
    exceptions: list[ReconciliationException] = field(default_factory=list)


def find(
    bootstrap: str, decode: Callable[[bytes, type[Any]], Any], participant_id: str, timeout_s: float = 10.0
) -> Findings:
    key = participant_id.encode()
    found = Findings()
    topics = (*RECORD_TOPICS, *EXCEPTION_TOPICS)
    for msg in read_to_end(bootstrap, topics, timeout_s=timeout_s, client="sinergi-explain"):
        value = msg.value()
        if msg.key() != key or not value:
            continue
        if msg.topic() in RECORD_TOPICS:
            found.records.append(decode(value, MemberRecord))
        else:
            found.exceptions.append(decode(value, ReconciliationException))
    return found


def explain_lines(bootstrap: str, codec: Any, participant_id: str, timeout_s: float = 10.0) -> list[str]:
    found = find(bootstrap, codec.decode_model, participant_id, timeout_s)
    return explain.story(found.records, found.exceptions)


def explain_command(
    settings: Settings, bootstrap: str, codec: Any, text: str, echo: Callable[[str], None] = print
) -> int:
    """Exit status 0 (story printed), 1 (nothing about that participant), 69 (Kafka did not answer)."""
    pid = participant_of(text, settings.customer_no_digits)
    try:
        lines = explain_lines(bootstrap, codec, pid)
    except KafkaException as exc:
        echo(f"Kafka did not answer ({exc}); try again")
        return EXIT_UNAVAILABLE
    if not lines:
        echo(f"nothing about customer number {pid} on {', '.join((*RECORD_TOPICS, *EXCEPTION_TOPICS))}")
        return EXIT_NOT_FOUND
    for line in lines:
        echo(line)
    return EXIT_OK


def cli_settings(settings: Settings) -> Settings:
    """Settings of a command run beside `sinergi up`: in embedded mode the registry is the one it serves."""
    if settings.schema_registry_url is not None:
        return settings
    host = "127.0.0.1" if settings.http_host in ("", "0.0.0.0", "::") else settings.http_host
    return settings.model_copy(update={"schema_registry_url": f"http://{host}:{settings.registry_port}"})
