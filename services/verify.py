"""`sinergi verify`: read what a run sent and what the hub wrote, and judge it (services.domain.verification).

Every partition of every topic below is read from its first offset to its end, by partition assignment
(services.topic_snapshot: no consumer group, nothing committed). A topic that does not exist yet reads
as empty.

Inputs: kbri.enrollments.raw, bank.payments.raw, bank.statements.raw (raw), enrollments.v1, payments.v1,
statement-entries.v1 (canonical). Outputs: members.v1, core.member-records.v1, reconciliation.exceptions.v1,
reconciliation.statements.v1 (statement decisions, JSON) and every dlq.<stage>.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, date, datetime
from typing import Any, cast

import httpx
from confluent_kafka import KafkaException, Message
from pydantic import ValidationError

from services.avro import AvroCodec, AvroError, RegistryClient, load_schemas
from services.catalogue import (
    CORE_MEMBER_RECORDS,
    DEAD_LETTERS,
    ENROLLMENTS,
    ENROLLMENTS_RAW,
    EXCEPTIONS,
    MEMBERS,
    PAYMENTS,
    PAYMENTS_RAW,
    STATEMENT_DECISIONS,
    STATEMENT_ENTRIES,
    STATEMENTS_RAW,
)
from services.config import Settings
from services.domain.statement_match import Decision
from services.domain.verification import (
    DeadLetterFact,
    DecisionFact,
    EnrollmentFact,
    ExceptionFact,
    Inputs,
    PaymentFact,
    RawFact,
    RecordFact,
    StatementEntryFact,
    VerificationReport,
    decision_fact,
    restrict,
)
from services.domain.verification import verify as judge
from services.topic_snapshot import read_to_end

RAW_TOPICS = (ENROLLMENTS_RAW.name, PAYMENTS_RAW.name, STATEMENTS_RAW.name)
RECORD_TOPICS = (MEMBERS.name, CORE_MEMBER_RECORDS.name)
DLQ_TOPICS = tuple(spec.name for spec in DEAD_LETTERS)
EVENT_ID_HEADER = "sinergi-event-id"
ENTRY_ID_HEADER = "sinergi-entry-id"  # a statement entry's id (connectors/statement_ingest.py)
EXIT_OK, EXIT_FAILED, EXIT_UNAVAILABLE = 0, 1, 69


def read_topics(bootstrap: str, topics: Iterable[str], timeout_s: float = 10.0) -> Iterator[Message]:
    """Every message of ``topics``, partition by partition in offset order (services.topic_snapshot).
    Raises KafkaException when the broker stops making progress for ``timeout_s``."""
    return read_to_end(bootstrap, topics, timeout_s=timeout_s, client="sinergi-verify")


def _headers(msg: Message) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    pairs = cast(list[tuple[str, Any]], msg.headers() or [])
    for k, v in pairs:
        out[str(k)] = v if isinstance(v, bytes) else (v or "").encode()
    return out


def _text(headers: dict[str, bytes], name: str) -> str | None:
    value = headers.get(name)
    return value.decode("utf-8", "replace") if value else None


def _key(msg: Message) -> str:
    key = msg.key()
    return key.decode("utf-8", "replace") if isinstance(key, bytes) else ""


def record_fact(topic: str, value: dict[str, Any], body: bytes) -> RecordFact:
    issued = value["bill_issued_at"]
    return RecordFact(
        topic=topic,
        participant_id=value["participant_id"],
        version=int(value["version"]),
        status=str(value["status"]),
        paid_amount_idr=int(value["paid_amount_idr"]),
        record_id=value["record_id"],
        enrollment_event_id=value["enrollment_event_id"],
        bill_issued_at=issued.isoformat() if hasattr(issued, "isoformat") else str(issued),
        payment_event_ids=tuple(value.get("payment_event_ids") or ()),
        reversal_event_ids=tuple(value.get("reversal_event_ids") or ()),
        # The Avro body without the schema id: identical records re-emitted give identical bytes.
        fingerprint=hashlib.sha256(body[5:]).hexdigest(),
    )


def exception_fact(datum: dict[str, Any]) -> ExceptionFact:
    amount = datum.get("amount_idr")
    return ExceptionFact(
        exception_id=datum["exception_id"],
        participant_id=datum["participant_id"],
        reason=datum["reason"],
        event_id=datum["event_id"],
        amount_idr=int(amount) if amount is not None else None,
        related_event_id=datum.get("related_event_id"),
    )


def _entry(datum: dict[str, Any]) -> StatementEntryFact:
    booked = datum["booking_date"]
    refs = (datum.get("bank_ref"), datum.get("end_to_end_id"), datum.get("customer_ref"))
    return StatementEntryFact(
        entry_id=datum["entry_id"],
        bank_id=datum["bank_id"],
        direction=str(datum["direction"]),
        booking_date=booked if isinstance(booked, date) else date.fromisoformat(str(booked)),
        references=tuple(str(r) for r in refs if r),
    )


def _payment(datum: dict[str, Any]) -> PaymentFact:
    refs = (datum.get("payment_request_id"), datum.get("partner_reference_no"))
    return PaymentFact(
        datum["event_id"],
        datum["participant_id"],
        int(datum["amount_idr"]),
        bank_id=str(datum.get("bank_id") or ""),
        references=tuple(str(r) for r in refs if r),
    )


def collect(bootstrap: str, decode: Callable[[bytes], tuple[str, dict[str, Any]]], timeout_s: float = 10.0) -> Inputs:
    """The facts on the topics. A canonical or output value that does not decode is counted (undecodable),
    not skipped silently: it is itself a defect."""
    as_of = datetime.now(UTC)  # before reading: an entry is overdue only if it already was when the read began
    payments: list[PaymentFact] = []
    enrollments: list[EnrollmentFact] = []
    raw: list[RawFact] = []
    records: list[RecordFact] = []
    exceptions: list[ExceptionFact] = []
    dead: list[DeadLetterFact] = []
    undecodable: list[str] = []
    entries: list[StatementEntryFact] = []
    decisions: list[DecisionFact] = []
    topics = (
        *RAW_TOPICS,
        ENROLLMENTS.name,
        PAYMENTS.name,
        STATEMENT_ENTRIES.name,
        *RECORD_TOPICS,
        EXCEPTIONS.name,
        STATEMENT_DECISIONS.name,
        *DLQ_TOPICS,
    )
    for msg in read_topics(bootstrap, topics, timeout_s):
        topic, value = str(msg.topic()), msg.value()
        headers = _headers(msg)
        if topic in DLQ_TOPICS:
            dead.append(
                DeadLetterFact(
                    stage=_text(headers, "dlq-stage") or topic.removeprefix("dlq."),
                    reason=_text(headers, "dlq-reason") or "",
                    source_topic=_text(headers, "dlq-source-topic") or "",
                    source_partition=int(_text(headers, "dlq-source-partition") or -1),
                    source_offset=int(_text(headers, "dlq-source-offset") or -1),
                    event_id=_text(headers, EVENT_ID_HEADER),
                    key=_key(msg),
                    entry_id=_text(headers, ENTRY_ID_HEADER),
                )
            )
            continue
        if topic in RAW_TOPICS:
            where = (int(msg.partition() or 0), int(msg.offset() or 0))
            id_header = ENTRY_ID_HEADER if topic == STATEMENTS_RAW.name else EVENT_ID_HEADER
            raw.append(RawFact(topic, *where, _text(headers, id_header), _key(msg)))
            continue
        if not value:
            continue  # a tombstone
        if topic == STATEMENT_DECISIONS.name:  # JSON, not Avro (services.reconcile_statements.decision_value)
            try:
                decisions.append(decision_fact(Decision.model_validate_json(value)))
            except ValidationError:
                undecodable.append(_key(msg))
            continue
        try:
            _, datum = decode(value)
        except AvroError:  # counted, never fatal to a verification
            undecodable.append(_key(msg))
            continue
        if topic == PAYMENTS.name:
            payments.append(_payment(datum))
        elif topic == STATEMENT_ENTRIES.name:
            entries.append(_entry(datum))
        elif topic == ENROLLMENTS.name:
            enrollments.append(EnrollmentFact(datum["event_id"], datum["participant_id"]))
        elif topic in RECORD_TOPICS:
            records.append(record_fact(topic, datum, value))
        elif topic == EXCEPTIONS.name:
            exceptions.append(exception_fact(datum))
    facts = Inputs(
        payments=tuple(payments),
        enrollments=tuple(enrollments),
        raw=tuple(raw),
        records=tuple(records),
        exceptions=tuple(exceptions),
        dead_letters=tuple(dead),
        undecodable=tuple(undecodable),
        statement_entries=tuple(entries),
        decisions=tuple(decisions),
        as_of=as_of,
    )
    return facts


def reading_codec(registry_url: str, settings: Settings | None = None) -> AvroCodec:
    """A codec that only reads: writer schemas are fetched by id from the registry; nothing is registered."""
    schemas_dir = (settings or Settings()).schemas_dir
    return AvroCodec(RegistryClient(registry_url), load_schemas(schemas_dir), {})


def verify(
    bootstrap: str,
    registry_url: str,
    *,
    participants: set[str] | None = None,
    event_ids: set[str] | None = None,
    entry_ids: set[str] | None = None,
    timeout_s: float = 10.0,
    codec: Any = None,
) -> VerificationReport:
    """Read the topics and judge them. ``participants`` / ``event_ids`` / ``entry_ids`` (statement entries)
    restrict the judgement to that traffic (a test sharing a broker); all None: everything on the topics."""
    reader = codec if codec is not None else reading_codec(registry_url)
    facts = collect(bootstrap, reader.decode, timeout_s)
    if participants is not None or event_ids is not None or entry_ids is not None:
        facts = restrict(facts, participants or (), event_ids or (), entry_ids or ())
    return judge(facts)


def verify_command(
    settings: Settings, bootstrap: str, *, as_json: bool = False, echo: Callable[[str], None] = print
) -> int:
    """Exit status 0 (ok), 1 (something missing, duplicated, contradictory or unbalanced), 69 (no Kafka)."""
    if settings.schema_registry_url is None:
        raise RuntimeError("no schema registry URL")
    try:
        report = verify(
            bootstrap, settings.schema_registry_url, codec=reading_codec(settings.schema_registry_url, settings)
        )
    except httpx.HTTPError as exc:
        echo(f"the schema registry did not answer ({type(exc).__name__}); try again")
        return EXIT_UNAVAILABLE
    except KafkaException as exc:
        echo(f"Kafka did not answer ({exc}); try again")
        return EXIT_UNAVAILABLE
    echo(json.dumps(report.to_dict(), indent=2, sort_keys=True) if as_json else report.summary())
    return EXIT_OK if report.ok else EXIT_FAILED
