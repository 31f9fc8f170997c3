"""normalize_statements: bank.statements.raw (one StatementEntry JSON per record) → statement-entries.v1 (Avro).

Each entry id is emitted once. The `statement_entries_seen` table (changelog-backed, co-partitioned with the
input: both are keyed by bank id, so a bank's entries and their "seen" marks share one partition) remembers
what was emitted; the same file imported twice, or a record redelivered after a crash, produces nothing new.

The mark is written only after Kafka acknowledged the output. The other order could lose an entry: a worker
killed after the changelog write but before the output left would, on restart, find the redelivered record
"seen" and drop it. This order can at worst emit an entry twice (killed between the acknowledgement and
the mark), and the entry id is deterministic, so a consumer can still tell. Waiting for each
acknowledgement costs throughput, which an end-of-day statement can afford.

Anything invalid goes to dlq.normalize_statements with a reason: INVALID_JSON, AMOUNT_FORMAT (amount not
a decimal string: never through a float), INVALID_ENTRY (the StatementEntry contract; the message names
fields only), UNKNOWN_BANK / BANK_MISMATCH (the entry's bank is not configured, or not the intake's).
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Mapping
from typing import Any

import faust
import orjson
from pydantic import ValidationError

from services import metrics
from services.acks import acknowledged
from services.app import topic
from services.catalogue import STATEMENT_ENTRIES, STATEMENTS_RAW
from services.context import ServiceContext
from services.domain.errors import Rejected
from services.domain.models import StatementEntry
from services.stage import Stage, header_map, header_str, received_at

log = logging.getLogger(__name__)

NAME = "normalize_statements"
SEEN_TABLE = "statement_entries_seen"

INVALID_JSON = "INVALID_JSON"
AMOUNT_FORMAT = "AMOUNT_FORMAT"
INVALID_ENTRY = "INVALID_ENTRY"
UNKNOWN_BANK = "UNKNOWN_BANK"
BANK_MISMATCH = "BANK_MISMATCH"


_FIELD = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")


def _field_name(loc: tuple[int | str, ...]) -> str:
    # An unknown key is attacker-chosen text: name it only when it looks like a field name.
    name = ".".join(str(p) for p in loc)
    return name if all(_FIELD.fullmatch(str(p)) for p in loc) and loc else "(field)"


def entry_from_raw(value: bytes, bank_header: str, banks: Mapping[str, Any]) -> StatementEntry:
    """The validated entry of one raw record, or Rejected (reason + field names, never a value)."""
    try:
        body = orjson.loads(value)
    except orjson.JSONDecodeError:
        raise Rejected(INVALID_JSON, None, "value is not valid JSON") from None
    if not isinstance(body, dict):
        raise Rejected(INVALID_JSON, None, "value is not a JSON object")
    if not isinstance(body.get("amount"), str):
        raise Rejected(AMOUNT_FORMAT, "amount", "amount must be a decimal string")
    try:
        entry = StatementEntry.model_validate(body)
        uuid.UUID(entry.entry_id)
    except ValidationError as exc:
        fields = sorted({_field_name(err["loc"]) for err in exc.errors()})
        raise Rejected(INVALID_ENTRY, fields[0] if fields else None, f"invalid fields: {', '.join(fields)}") from None
    except ValueError:
        raise Rejected(INVALID_ENTRY, "entry_id", "entry_id must be a UUID") from None
    if entry.bank_id not in banks:
        raise Rejected(UNKNOWN_BANK, "bank_id", "bank is not in the partner registry")
    if entry.bank_id != bank_header:
        raise Rejected(BANK_MISMATCH, "bank_id", "entry bank differs from the intake's sinergi-bank header")
    return entry


def register(app: faust.App, ctx: ServiceContext) -> None:
    stage = Stage(app, NAME)
    out = topic(app, STATEMENT_ENTRIES.name)
    schema = STATEMENT_ENTRIES.value_schema or "sinergi.StatementEntry"
    seen = app.Table(
        SEEN_TABLE,
        default=None,
        partitions=ctx.settings.kafka_partitions,
        key_type=bytes,
        value_type=bytes,
    )

    @app.agent(topic(app, STATEMENTS_RAW.name), name=NAME)
    async def normalize(stream: faust.StreamT) -> None:
        async for event in stream.events():
            stage.consumed(event)
            msg = event.message
            headers = header_map(msg.headers)
            try:
                entry = entry_from_raw(msg.value, header_str(headers, "sinergi-bank"), ctx.banks)
                value = ctx.codec.encode(schema, entry)
            except Rejected as rejected:
                await stage.dead_letter(event, rejected.reason, str(rejected))
                continue
            except Exception as exc:  # never crash the worker on one record
                await stage.dead_letter(event, "UNENCODABLE", type(exc).__name__)
                continue
            key = entry.entry_id.encode()
            if seen.get(key) is not None:
                metrics.STATEMENT_DUPLICATES.labels(entry.bank_id).inc()
                continue
            file_id = headers.get("sinergi-file-id", b"")
            pending = await out.send(
                key=entry.bank_id.encode(),
                value=value,
                headers=[("sinergi-entry-id", key), ("sinergi-file-id", file_id)],
            )
            try:
                await acknowledged(app, [pending])
            except Exception as exc:
                # Kafka refused the output: crash like every stage, so that the input is processed again.
                log.error("stage %s: Kafka refused an output (%s); crashing so the input is redone", NAME, exc)
                app._crash(exc)
                return
            seen[key] = file_id or b"-"
            metrics.EVENTS_OUT.labels(NAME, STATEMENT_ENTRIES.name).inc()
            stage.observe_latency(received_at(headers, msg.timestamp * 1000 if msg.timestamp else None))
