"""What every KBRI endpoint module needs, built once per app by `create_kbri_app`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import BaseModel

from connectors.http_common import Background
from connectors.intake import EnrollmentIntake
from connectors.kafka_edge import EdgeSender
from connectors.kbri.auth import OfficeAuth
from connectors.kbri.office_book import OfficeBook
from services.config import Settings


class RecordEncoder(Protocol):
    """What the case intake needs of services.avro.AvroCodec: a record in the Confluent wire format."""

    def encode(self, full_name: str, record: BaseModel) -> bytes: ...


@dataclass
class KbriContext:
    settings: Settings
    producer: EdgeSender
    auth: OfficeAuth
    intake: EnrollmentIntake
    # The read model of the office topics (inquiry, feed, case ownership); fed by a Background reader. The
    # default holds no office and never becomes ready: only a process with a reader knows members.
    book: OfficeBook = field(default_factory=lambda: OfficeBook(()))
    # Encodes sinergi.Case; None until the registry answered (POST /v1/cases answers 503 meanwhile).
    codec: RecordEncoder | None = None
    background: list[Background] = field(default_factory=list)
    # name -> async check returning True when ready (served by GET /readyz)
    readiness: dict[str, Callable[[], Awaitable[bool]]] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
