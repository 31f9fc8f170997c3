"""`sinergi report daily`: the daily reconciliation report of one bank, read from reconciliation.statements.v1.

The topic is read from the beginning up to its end at start (assigned partitions, no consumer group, so no
offsets are committed and two reports never share work); the decisions of the bank are handed to
:func:`services.domain.daily_report.build_report`, which drops redeliveries and resolved breaks.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import date

from pydantic import ValidationError

from services.catalogue import STATEMENT_DECISIONS
from services.domain.daily_report import build_report, to_csv, to_table
from services.domain.statement_match import Decision
from services.topic_snapshot import read_to_end

READ_TIMEOUT_S = 60.0


def decisions_of(values: Iterable[tuple[bytes | None, bytes | None]], bank: str) -> tuple[list[Decision], int]:
    """The decisions of ``bank`` among (key, value) records, and how many records could not be read."""
    chosen: list[Decision] = []
    unreadable = 0
    key = bank.encode()
    for k, v in values:
        if k != key or v is None:
            continue
        try:
            decision = Decision.model_validate_json(v)
        except ValidationError:
            unreadable += 1
            continue
        if decision.bank_id == bank:
            chosen.append(decision)
    return chosen, unreadable


def read_topic(bootstrap: str, topic: str = STATEMENT_DECISIONS.name) -> list[tuple[bytes | None, bytes | None]]:
    """Every (key, value) of ``topic`` from the beginning to its end (services.topic_snapshot)."""
    messages = read_to_end(bootstrap, [topic], timeout_s=READ_TIMEOUT_S, client=f"sinergi-report-{uuid.uuid4().hex}")
    return [(msg.key(), msg.value()) for msg in messages]


def daily_report(bootstrap: str, bank: str, business_date: date, as_csv: bool) -> tuple[str, int]:
    """The rendered report and the number of unreadable records skipped."""
    decisions, unreadable = decisions_of(read_topic(bootstrap), bank)
    report = build_report(decisions, bank, business_date)
    return (to_csv(report) if as_csv else to_table(report)), unreadable
