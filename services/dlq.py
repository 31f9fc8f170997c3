"""`sinergi dlq list` and `sinergi dlq replay`: look at the dead letters, and re-drive them after a fix.

The rules (what is replayed, where to, the ledger that makes a second run send nothing) are in
services.domain.dlq_replay; this module reads the topics and produces.

Replay: reads dlq.<stage> and the ledger (dlq.replays.v1) to their end (services.topic_snapshot), then
produces each selected dead letter's original key, value and headers to its source topic and partition
with an idempotent, acks=all producer. Only once the broker took a replayed record is it written to the
ledger. A crash between the two leaves a record sent but not recorded: the next replay sends it again,
and the hub's consumers drop it by its event id (same headers, same value, so the same id) -- the
at-least-once window every stage of the hub already has.

:func:`dlq_reason` is the one mapping from an exception a processor could not get past to a DLQ reason
code, for the processors that decode Avro (reconcile, reconcile_statements).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from services.avro import DecodeError, RegistryError, UnknownSchemaError, WireFormatError
from services.catalogue import ALL_TOPICS, DEAD_LETTERS, DLQ_REPLAYS, dlq
from services.config import Settings
from services.domain.dlq_replay import (
    DeadLetter,
    ReplayPlan,
    ReplaySummary,
    ledger_value,
    parse_dead_letter,
    plan_replay,
    render_tally,
    replay_headers,
    replayed,
    tally,
)
from services.domain.errors import Rejected
from services.logs import event

log = logging.getLogger(__name__)

EXIT_OK, EXIT_FAILED, EXIT_UNAVAILABLE = 0, 1, 69
READ_TIMEOUT_S = 20.0

# Reason codes of dlq_reason (besides a domain Rejected's own code).
UNDECODABLE = "UNDECODABLE"  # not Confluent-framed Avro, or the body does not decode with its writer schema
UNKNOWN_SCHEMA = "UNKNOWN_SCHEMA"  # the registry does not know the writer schema id (replay once registered)
REGISTRY_UNAVAILABLE = "REGISTRY_UNAVAILABLE"  # the registry did not answer (replay once it is back)
INVALID_RECORD = "INVALID_RECORD"
UNEXPECTED = "UNEXPECTED"


def dlq_reason(exc: BaseException) -> str:
    """The DLQ reason code for a record a processor could not decode or apply.

    Decoding errors are told apart because their fixes differ: UNKNOWN_SCHEMA is cured by registering the
    writer schema, REGISTRY_UNAVAILABLE by the registry coming back, UNDECODABLE only by a new reader.
    """
    if isinstance(exc, UnknownSchemaError):
        cause = exc.__cause__
        if isinstance(cause, RegistryError) and (cause.status == 0 or cause.status >= 500):
            return REGISTRY_UNAVAILABLE
        return UNKNOWN_SCHEMA
    if isinstance(exc, WireFormatError | DecodeError):
        return UNDECODABLE
    if isinstance(exc, Rejected):
        return exc.reason
    if isinstance(exc, ValueError):  # pydantic's ValidationError included
        return INVALID_RECORD
    return UNEXPECTED


# --- reading ------------------------------------------------------------------------------------------------


def _headers(msg: Any) -> list[tuple[str, bytes]]:
    pairs = cast(list[tuple[str, Any]], msg.headers() or [])
    return [(str(k), v if isinstance(v, bytes) else (v or "").encode()) for k, v in pairs]


def read_dead_letters(bootstrap: str, topics: Iterable[str], timeout_s: float = READ_TIMEOUT_S) -> list[DeadLetter]:
    from services.topic_snapshot import read_to_end

    out: list[DeadLetter] = []
    for msg in read_to_end(bootstrap, topics, timeout_s=timeout_s, client="sinergi-dlq"):
        key = msg.key()
        out.append(
            parse_dead_letter(
                str(msg.topic()),
                int(msg.partition() or 0),
                int(msg.offset() or 0),
                key if isinstance(key, bytes) else None,
                msg.value(),
                _headers(msg),
            )
        )
    return out


def read_ledger(bootstrap: str, timeout_s: float = READ_TIMEOUT_S) -> set[str]:
    from services.topic_snapshot import read_to_end

    records = read_to_end(bootstrap, [DLQ_REPLAYS.name], timeout_s=timeout_s, client="sinergi-dlq")
    return replayed((m.key(), m.value()) for m in records)


def stage_topics(stage: str | None) -> list[str]:
    return [dlq(stage).name] if stage is not None else [spec.name for spec in DEAD_LETTERS]


# --- producing ----------------------------------------------------------------------------------------------


@dataclass
class _Delivery:
    error: str | None = None
    partition: int = -1
    offset: int = -1
    done: bool = False


class _Sender:
    """A synchronous idempotent acks=all producer that reports each record's fate."""

    def __init__(self, bootstrap: str, settings: Settings) -> None:
        from confluent_kafka import Producer

        self._producer = Producer(
            {
                "bootstrap.servers": bootstrap,
                "client.id": "sinergi-dlq-replay",
                "acks": "all",
                "enable.idempotence": True,
                "linger.ms": 5,
                "message.timeout.ms": settings.producer_message_timeout_ms,
            }
        )
        self._timeout_s = settings.producer_message_timeout_ms / 1000.0 + 5.0

    def send(
        self, topic: str, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]], partition: int = -1
    ) -> _Delivery:
        delivery = _Delivery()

        def on_delivery(err: Any, msg: Any) -> None:
            delivery.done = True
            if err is not None:
                delivery.error = str(err.name() if hasattr(err, "name") else err)
            else:
                delivery.partition, delivery.offset = int(msg.partition()), int(msg.offset())

        wire: list[tuple[str, str | bytes | None]] = list(headers)
        while True:
            try:
                self._producer.produce(
                    topic, value=value, key=key, headers=wire, partition=partition, on_delivery=on_delivery
                )
                break
            except BufferError:  # the local queue is full: let deliveries drain, then try again
                self._producer.poll(0.5)
        self._producer.poll(0)
        return delivery

    def flush(self) -> int:
        """Wait for every report; the number still outstanding (treated as failed)."""
        return int(self._producer.flush(self._timeout_s))


def run_replay(
    settings: Settings,
    bootstrap: str,
    *,
    stage: str,
    reason: str | None = None,
    dry_run: bool = False,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> ReplaySummary:
    """Replay the selected dead letters (see the module docstring). Raises KafkaException when the broker
    cannot be read."""
    from services.topics import create_topics

    letters = read_dead_letters(bootstrap, stage_topics(stage))
    done = read_ledger(bootstrap)
    compacted = {spec.name for spec in ALL_TOPICS if spec.compacted}
    plan: ReplayPlan = plan_replay(letters, done, stage=stage, reason=reason, compacted=compacted)
    summary = ReplaySummary(
        already_replayed=plan.already_replayed,
        not_selected=plan.not_selected,
        unreplayable=plan.unreplayable,
        dry_run=dry_run,
    )
    event(log, "dlq replay planned", stage=stage, to_send=len(plan.to_send), already=plan.already_replayed)
    if dry_run:
        summary.sent = len(plan.to_send)
        return summary
    if not plan.to_send:
        return summary
    create_topics(bootstrap, settings, (DLQ_REPLAYS,))  # the ledger, if `topics create` predates it
    sender = _Sender(bootstrap, settings)
    pending = [
        (
            letter,
            sender.send(
                str(letter.source_topic),
                letter.key,
                letter.value,
                replay_headers(letter),
                partition=int(letter.source_partition or 0),
            ),
        )
        for letter in plan.to_send
    ]
    sender.flush()
    taken: list[tuple[DeadLetter, _Delivery]] = []
    for letter, delivery in pending:
        if delivery.done and delivery.error is None:
            taken.append((letter, delivery))
        else:
            summary.failed += 1
            event(log, "dlq replay refused", dead_letter=letter.coordinates, error=delivery.error or "TIMED_OUT")
    at = now().isoformat()
    # Only what the broker took is recorded: the ledger never claims a replay that did not happen.
    recorded = [
        (
            letter,
            sender.send(
                DLQ_REPLAYS.name,
                letter.coordinates.encode(),
                ledger_value(letter, delivery.partition, delivery.offset, at),
                [],
            ),
        )
        for letter, delivery in taken
    ]
    sender.flush()
    for letter, note in recorded:
        summary.sent += 1
        if not (note.done and note.error is None):
            summary.unrecorded += 1
            event(log, "dlq replay not recorded", dead_letter=letter.coordinates, error=note.error or "TIMED_OUT")
    return summary


# --- commands -----------------------------------------------------------------------------------------------


def list_command(bootstrap: str, stage: str | None, echo: Callable[[str], None] = print) -> int:
    from confluent_kafka import KafkaException

    try:
        letters = read_dead_letters(bootstrap, stage_topics(stage))
        done = read_ledger(bootstrap)
    except KafkaException as exc:
        echo(f"Kafka did not answer ({exc}); try again")
        return EXIT_UNAVAILABLE
    echo(render_tally(tally(letters, done, stage)).rstrip("\n"))
    return EXIT_OK


def replay_command(
    settings: Settings,
    bootstrap: str,
    *,
    stage: str,
    reason: str | None,
    dry_run: bool,
    echo: Callable[[str], None] = print,
) -> int:
    """Exit status 0 (everything selected was replayed and recorded), 1 (some failed), 69 (no Kafka)."""
    from confluent_kafka import KafkaException
    from kafka.errors import KafkaError

    try:
        summary = run_replay(settings, bootstrap, stage=stage, reason=reason, dry_run=dry_run)
    except (KafkaException, KafkaError) as exc:
        echo(f"Kafka did not answer ({type(exc).__name__}); try again")
        return EXIT_UNAVAILABLE
    echo(summary.line())
    return EXIT_OK if summary.ok else EXIT_FAILED
