"""notify_kbri: what each office may learn, onto that office's own topic `kbri.updates.<OFFICE>.v1`.

Inputs, each turned into one OfficeUpdate (services.domain.office_updates) for the one office it belongs to:

    members.v1                       member.updated      the owning office (record.office_code)
    dlq.normalize_enrollments        enrollment.rejected the office named by `sinergi-office`, for an office's
                                                         own submission (a bank's refusals are the bank's)
    core.case-updates.v1             case.updated        the office that filed the case

Every input is keyed so that its subject stays on one partition, and a changelog-backed table per input
remembers what was forwarded: the last member version per participant, the last case version per case, the
rejection update ids. An input at or below what was forwarded is skipped (the reconciler re-emits its
current version after a redelivery; compaction and restarts replay). The mark is written only after Kafka
acknowledged the update. The other order could lose one: killed after the changelog write but before the
update left, the restarted worker would find the redelivered input "forwarded". This order can at worst send
an update twice, with the same update_id, which every consumer drops. The agents work a batch at a time
(SINERGI_STAGE_BATCH_MAX): every update of the batch is sent, one acknowledgement wait covers them all, then
their marks are written; waiting for each update alone held this stage to about 60 updates/s.

The NIK and passport are decrypted here and nowhere else in the hub's fan-out: the NIK only to mask it, the
passport only to compute the `sinergi-lookup-passport` header. Neither is logged, counted or dead-lettered
in clear. Anything that cannot be turned into an update goes to dlq.notify_kbri with a reason (UNDECODABLE,
INVALID_RECORD, PII_UNREADABLE, UNKNOWN_OFFICE, MISSING_REQUEST_ID, INVALID_DEAD_LETTER, UNEXPECTED).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import faust
import orjson
from pydantic import ValidationError

from services import metrics
from services.app import topic
from services.batches import batches_of, phase, run_to_the_end
from services.catalogue import CORE_CASE_UPDATES, MEMBERS, dlq, office_updates_topic
from services.context import ServiceContext
from services.domain.errors import Rejected
from services.domain.identity import passport_lookup_key
from services.domain.models import CaseUpdate, MemberRecord
from services.domain.office_updates import (
    OfficeUpdate,
    UpdateType,
    case_update,
    kafka_headers,
    member_update,
    rejected_field,
    rejection_update,
)
from services.durable_table import DurableWrites
from services.outbox import Outbox
from services.stage import Stage, header_map, header_str

NAME = "notify_kbri"
REJECTIONS_SOURCE = dlq("normalize_enrollments").name
MEMBER_VERSIONS_TABLE = "notify_kbri_member_versions"
CASE_VERSIONS_TABLE = "notify_kbri_case_versions"
REJECTIONS_TABLE = "notify_kbri_rejections_sent"

UNDECODABLE = "UNDECODABLE"
INVALID_RECORD = "INVALID_RECORD"
PII_UNREADABLE = "PII_UNREADABLE"
UNKNOWN_OFFICE = "UNKNOWN_OFFICE"
MISSING_REQUEST_ID = "MISSING_REQUEST_ID"
INVALID_DEAD_LETTER = "INVALID_DEAD_LETTER"
UNEXPECTED = "UNEXPECTED"

DUPLICATE = "DUPLICATE"
NOT_FOR_AN_OFFICE = "NOT_FOR_AN_OFFICE"
BANK_SUBMITTED = "BANK_SUBMITTED"
TOMBSTONE = "TOMBSTONE"


class Refused(Exception):
    """An input that cannot become an update; `message` names fields and types only, never a value."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(reason, message)
        self.reason = reason
        self.message = message


class Skip(Exception):
    """An input with nothing to forward (not an error); `reason` is a metric label."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Outgoing:
    """One update, ready for its office topic; `mark` is the table key that records it as forwarded."""

    update: OfficeUpdate
    mark: bytes
    passport_lookup: str | None = None

    @property
    def topic(self) -> str:
        return office_updates_topic(self.update.office)

    @property
    def key(self) -> bytes:
        return self.update.subject.encode()

    @property
    def value(self) -> bytes:
        return self.update.model_dump_json().encode()

    @property
    def headers(self) -> list[tuple[str, bytes]]:
        return kafka_headers(self.update, self.passport_lookup)


class Notifier:
    """Input record -> Outgoing, without Kafka or Faust (the agents below add dedup, sending and marks)."""

    def __init__(
        self,
        codec: Any,
        offices: frozenset[str],
        banks: Mapping[str, str],
        decrypt_pii: Callable[[bytes], bytes],
        passport_secret: bytes,
    ) -> None:
        self._codec = codec
        self._offices = offices
        self._banks = dict(banks)
        self._decrypt = decrypt_pii
        self._passport_secret = passport_secret

    @classmethod
    def from_context(cls, ctx: ServiceContext) -> Notifier:
        return cls(
            ctx.codec,
            ctx.offices,
            {bank_id: bank.partner_service_id for bank_id, bank in ctx.banks.items()},
            ctx.decrypt_pii,
            ctx.settings.participant_key_secret.get_secret_value().encode(),
        )

    def _office(self, code: str) -> str:
        if code not in self._offices:
            raise Refused(UNKNOWN_OFFICE, "office code is not in the office registry")
        return code

    def _decode(self, value: bytes | None, model: type[Any]) -> Any:
        if value is None:
            raise Skip(TOMBSTONE)
        try:
            return self._codec.decode_model(value, model)
        except ValidationError as exc:
            fields = sorted({".".join(str(p) for p in err["loc"]) for err in exc.errors()})
            raise Refused(INVALID_RECORD, f"invalid fields: {', '.join(fields)}"[:200]) from None
        except Exception as exc:  # the codec raises WireFormat/Decode/UnknownSchema errors, fastavro more
            raise Refused(UNDECODABLE, type(exc).__name__) from None

    def member(self, value: bytes | None) -> tuple[MemberRecord, Outgoing]:
        record: MemberRecord = self._decode(value, MemberRecord)
        self._office(record.office_code)
        nik, passport = self._pii(record.pii_encrypted)
        try:
            update = member_update(record, nik, self._banks)
        except (Rejected, ValidationError) as exc:
            raise Refused(INVALID_RECORD, type(exc).__name__) from None
        lookup = passport_lookup_key(passport, self._passport_secret) if passport else None
        return record, Outgoing(update, record.participant_id.encode(), lookup)

    def _pii(self, token: bytes) -> tuple[str, str | None]:
        try:
            pii = orjson.loads(self._decrypt(token))
        except Exception:  # InvalidToken (wrong key, tampered), not JSON: say so, never what it held
            raise Refused(PII_UNREADABLE, "pii_encrypted could not be decrypted and read") from None
        nik = pii.get("nik") if isinstance(pii, dict) else None
        if not isinstance(nik, str) or not nik:
            raise Refused(PII_UNREADABLE, "pii_encrypted holds no nik")
        passport = pii.get("passport_number")
        return nik, passport if isinstance(passport, str) and passport else None

    def case(self, value: bytes | None) -> tuple[CaseUpdate, Outgoing]:
        change: CaseUpdate = self._decode(value, CaseUpdate)
        self._office(change.office_code)
        return change, Outgoing(case_update(change), change.case_event_id.encode())

    def rejection(self, headers: Mapping[str, bytes], fallback_time: datetime) -> Outgoing:
        """The dead letter of a refused enrollment, from its headers alone: the body is never read."""
        office = header_str(headers, "sinergi-office")
        if not office:
            raise Skip(NOT_FOR_AN_OFFICE)
        if header_str(headers, "sinergi-submitted-by"):
            # A bank's submission: its request id is the bank's, which the office never saw; the bank had
            # the verdict in its own answer.
            raise Skip(BANK_SUBMITTED)
        self._office(office)
        request_id = header_str(headers, "sinergi-request-id")
        if not request_id:
            raise Refused(MISSING_REQUEST_ID, "the dead letter has no sinergi-request-id")
        reason = header_str(headers, "dlq-reason")
        stage = header_str(headers, "dlq-stage", "normalize_enrollments")
        field = rejected_field(reason, header_str(headers, "dlq-message"))
        try:
            update = rejection_update(office, request_id, reason, field, stage, _dlq_time(headers, fallback_time))
        except (ValueError, ValidationError):
            raise Refused(INVALID_DEAD_LETTER, "dlq-reason or dlq-stage is not a stable code") from None
        return Outgoing(update, update.update_id.encode())


def _dlq_time(headers: Mapping[str, bytes], fallback: datetime) -> datetime:
    raw = header_str(headers, "dlq-time")
    try:
        parsed = datetime.fromisoformat(raw) if raw else None
    except ValueError:
        parsed = None
    if parsed is None or parsed.tzinfo is None:
        return fallback
    return parsed.astimezone(UTC)


def _message_time(msg: Any) -> datetime:
    ts = getattr(msg, "timestamp", None)
    return datetime.fromtimestamp(ts, UTC) if ts else datetime.now(UTC)


def _version(raw: bytes | None) -> int:
    return int(raw) if raw else 0


@dataclass(frozen=True)
class Planned:
    """An update a batch will forward, and the mark (table, key, value) to write once Kafka took it; the mark goes
    to the changelog partition of the input it came from, as Faust itself would write it."""

    out: Outgoing
    table: str
    partition: int
    mark_value: bytes
    updated_at: datetime | None = None


@dataclass
class Batch:
    """What a batch already plans to forward, so a repeat inside one batch is a DUPLICATE before its mark exists."""

    planned: dict[tuple[str, bytes], int] = field(default_factory=dict)

    def forwarded(self, table: str, mark: bytes, stored: Any) -> int:
        return max(_version(stored.get(mark)), self.planned.get((table, mark), 0))

    def note(self, table: str, mark: bytes, version: int) -> None:
        self.planned[(table, mark)] = version


def register(app: faust.App, ctx: ServiceContext) -> None:
    stage = Stage(app, NAME)
    notifier = Notifier.from_context(ctx)
    partitions = ctx.settings.kafka_partitions

    def table(name: str) -> Any:
        return app.Table(name, default=None, partitions=partitions, key_type=bytes, value_type=bytes)

    member_versions, case_versions, rejections_sent = (
        table(MEMBER_VERSIONS_TABLE),
        table(CASE_VERSIONS_TABLE),
        table(REJECTIONS_TABLE),
    )

    marks = {
        MEMBER_VERSIONS_TABLE: DurableWrites(member_versions),
        CASE_VERSIONS_TABLE: DurableWrites(case_versions),
        REJECTIONS_TABLE: DurableWrites(rejections_sent),
    }
    batch_max, batch_within = ctx.settings.stage_batch_max, ctx.settings.stage_batch_within_ms / 1000.0

    async def forward_all(planned: list[Planned]) -> None:
        """Send a batch's updates in order and wait for Kafka's acknowledgement of all of them (one round trip
        per batch, not per update); raises what Kafka raised (services/batches.py ends the process)."""
        outbox = Outbox(app, NAME)
        for p in planned:
            outbox.add(p.out.topic, p.out.key, p.out.value, p.out.headers)
        await outbox.send()
        for p in planned:
            metrics.OFFICE_UPDATES_OUT.labels(p.out.update.office, p.out.update.type.value).inc()
            if p.updated_at is not None:
                stage.observe_latency(p.updated_at)

    async def each(stream: faust.StreamT, kind: UpdateType, plan: Callable[[faust.EventT, Batch], Planned]) -> None:
        async for events in batches_of(stream, NAME, batch_max, batch_within):
            await run_to_the_end(NAME, forward_batch(events, kind, plan))

    async def forward_batch(
        events: list[faust.EventT], kind: UpdateType, plan: Callable[[faust.EventT, Batch], Planned]
    ) -> None:
        batch = Batch()
        planned: list[Planned] = []
        for event in events:
            stage.consumed(event)
            try:
                planned.append(plan(event, batch))
            except Skip as skip:
                metrics.OFFICE_UPDATES_SKIPPED.labels(kind.value, skip.reason).inc()
            except Refused as refused:
                await stage.dead_letter(event, refused.reason, refused.message)
            except Exception as exc:  # never crash the worker on one record
                await stage.dead_letter(event, UNEXPECTED, type(exc).__name__)
        if not planned:
            return
        with phase(NAME, "emit"):
            await forward_all(planned)
        # Marked only once Kafka took every update of the batch: killed before, the redelivered inputs are
        # forwarded again with the same update ids (consumers drop them); the other order could lose one.
        writes = [marks[p.table] for p in planned]
        for p, w in zip(planned, writes, strict=True):
            w.put(p.partition, p.out.mark, p.mark_value)
        with phase(NAME, "settle"):
            for w in set(writes):
                await w.settle()

    def plan_member(event: faust.EventT, batch: Batch) -> Planned:
        record, out = notifier.member(event.message.value)
        if record.version <= batch.forwarded(MEMBER_VERSIONS_TABLE, out.mark, member_versions):
            raise Skip(DUPLICATE)
        batch.note(MEMBER_VERSIONS_TABLE, out.mark, record.version)
        return Planned(
            out, MEMBER_VERSIONS_TABLE, event.message.partition, str(record.version).encode(), record.updated_at
        )

    def plan_case(event: faust.EventT, batch: Batch) -> Planned:
        change, out = notifier.case(event.message.value)
        if change.version <= batch.forwarded(CASE_VERSIONS_TABLE, out.mark, case_versions):
            raise Skip(DUPLICATE)
        batch.note(CASE_VERSIONS_TABLE, out.mark, change.version)
        return Planned(out, CASE_VERSIONS_TABLE, event.message.partition, str(change.version).encode())

    def plan_rejection(event: faust.EventT, batch: Batch) -> Planned:
        msg = event.message
        out = notifier.rejection(header_map(msg.headers), _message_time(msg))
        if batch.forwarded(REJECTIONS_TABLE, out.mark, rejections_sent):
            raise Skip(DUPLICATE)
        batch.note(REJECTIONS_TABLE, out.mark, 1)
        return Planned(out, REJECTIONS_TABLE, msg.partition, b"1")

    @app.agent(topic(app, MEMBERS.name), name=f"{NAME}_members")
    async def notify_members(stream: faust.StreamT) -> None:
        await each(stream, UpdateType.MEMBER_UPDATED, plan_member)

    @app.agent(topic(app, REJECTIONS_SOURCE), name=f"{NAME}_rejections")
    async def notify_rejections(stream: faust.StreamT) -> None:
        await each(stream, UpdateType.ENROLLMENT_REJECTED, plan_rejection)

    @app.agent(topic(app, CORE_CASE_UPDATES.name), name=f"{NAME}_cases")
    async def notify_cases(stream: faust.StreamT) -> None:
        await each(stream, UpdateType.CASE_UPDATED, plan_case)
