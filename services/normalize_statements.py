"""normalize_statements: bank.statements.raw (one StatementEntry JSON per record) → statement-entries.v1 (Avro).

Each entry id is emitted once. The `statement_entries_seen` table (changelog-backed, co-partitioned with the
input: both are keyed by bank id, so a bank's entries and their "seen" marks share one partition) remembers
what was emitted; the same file imported twice, or a record redelivered after a crash, produces nothing new.

The mark is written only after Kafka acknowledged the output. The other order could lose an entry: a worker
killed after the changelog write but before the output left would, on restart, find the redelivered record
"seen" and drop it. This order can at worst emit an entry twice (killed between the acknowledgement and
the mark), and the entry id is deterministic, so a consumer can still tell. A batch of entries is sent and
acknowledged at once, then its marks are written (services/durable_table.py).

Anything invalid goes to dlq.normalize_statements with a reason: INVALID_JSON, AMOUNT_FORMAT (amount not
a decimal string: never through a float), INVALID_ENTRY (the StatementEntry contract; the message names
fields only), UNKNOWN_BANK / BANK_MISMATCH (the entry's bank is not configured, or not the intake's).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from typing import Any

import faust
import orjson
from pydantic import ValidationError

from services import metrics
from services.app import topic
from services.batches import batches_of, phase, run_to_the_end
from services.catalogue import STATEMENT_ENTRIES, STATEMENTS_RAW
from services.context import ServiceContext
from services.domain.errors import Rejected
from services.domain.models import StatementEntry
from services.durable_table import DurableWrites
from services.outbox import Outbox
from services.stage import Stage, batch_of, header_map, header_str, received_at

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
    schema = STATEMENT_ENTRIES.value_schema or "sinergi.StatementEntry"
    seen = app.Table(
        SEEN_TABLE,
        default=None,
        partitions=ctx.settings.kafka_partitions,
        key_type=bytes,
        value_type=bytes,
    )

    marks = DurableWrites(seen)
    batch = batch_of(ctx)

    @app.agent(topic(app, STATEMENTS_RAW.name), name=NAME)
    async def normalize(stream: faust.StreamT) -> None:
        async for events in batches_of(stream, NAME, *batch):
            await run_to_the_end(NAME, normalize_batch(events))

    async def normalize_batch(events: list[faust.EventT]) -> None:
        outbox = Outbox(app, NAME)
        emitted: dict[bytes, tuple[int, bytes]] = {}  # entry id -> (input partition, file id): marks to write
        accepted_at = []
        with phase(NAME, "decide"):
            for event in events:
                stage.consumed(event)
                msg = event.message
                headers = header_map(msg.headers)
                try:
                    entry = entry_from_raw(msg.value or b"", header_str(headers, "sinergi-bank"), ctx.banks)
                    value = ctx.codec.encode(schema, entry)
                except Rejected as rejected:
                    stage.dead_letter_into(outbox, event, rejected.reason, str(rejected))
                    continue
                except Exception as exc:  # never crash the worker on one record
                    stage.dead_letter_into(outbox, event, "UNENCODABLE", type(exc).__name__)
                    continue
                key = entry.entry_id.encode()
                if key in emitted or seen.get(key) is not None:
                    metrics.STATEMENT_DUPLICATES.labels(entry.bank_id).inc()
                    continue
                file_id = headers.get("sinergi-file-id", b"")
                outbox.add(
                    STATEMENT_ENTRIES.name,
                    entry.bank_id.encode(),
                    value,
                    [("sinergi-entry-id", key), ("sinergi-file-id", file_id)],
                )
                emitted[key] = (msg.partition, file_id or b"-")
                accepted_at.append(received_at(headers, msg.timestamp * 1000 if msg.timestamp else None))
        with phase(NAME, "emit"):
            await outbox.send()  # raises when Kafka refused: services/batches.py ends the worker before any mark
        # Marked only once Kafka took the entries (module docstring); to the input's changelog partition, as Faust
        # would write it.
        for key, (partition, file_id) in emitted.items():
            marks.put(partition, key, file_id)
        with phase(NAME, "settle"):
            await marks.settle()
        for accepted in accepted_at:
            stage.observe_latency(accepted)
