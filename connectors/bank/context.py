"""What every bank endpoint module needs, built once per app by `create_bank_app`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from connectors.bank.auth import SnapAuth
from connectors.bank.member_book import MemberBook
from connectors.bank.partners import PartnerRegistry
from connectors.bank.tokens import TokenIssuer
from connectors.http_common import Background
from connectors.kafka_edge import EdgeSender
from services.config import Settings


@dataclass
class BankContext:
    settings: Settings
    producer: EdgeSender
    registry: PartnerRegistry
    issuer: TokenIssuer
    auth: SnapAuth
    # The read model of members.v1 that inquiry answers from (and payment may consult); fed by a Background.
    book: MemberBook = field(default_factory=MemberBook)
    background: list[Background] = field(default_factory=list)
    # Readiness checks beyond "the process is up": name -> async check returning True when ready.
    readiness: dict[str, Callable[[], Awaitable[bool]]] = field(default_factory=dict)
