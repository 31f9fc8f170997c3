"""What every KBRI endpoint module needs, built once per app by `create_kbri_app`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from connectors.bank.context import Background
from connectors.intake import EnrollmentIntake
from connectors.kafka_edge import EdgeSender
from connectors.kbri.auth import OfficeAuth
from services.config import Settings


@dataclass
class KbriContext:
    settings: Settings
    producer: EdgeSender
    auth: OfficeAuth
    intake: EnrollmentIntake
    background: list[Background] = field(default_factory=list)
    # name -> async check returning True when ready (served by GET /readyz)
    readiness: dict[str, Callable[[], Awaitable[bool]]] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
