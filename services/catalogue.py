"""The topic catalogue: every topic the hub owns, in one place.

Kept apart from the Faust app so that connectors (which hold no Faust code) and the admin CLI can
read it too. Keys never carry a raw NIK: the participant key is a keyed hash (services.domain.identity),
and it doubles as the VA customer number, so enrollments and payments for one worker land on the
same partition of every topic without a repartition hop.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum


class Encoding(StrEnum):
    JSON = "json"  # raw partner input, exactly as received
    AVRO = "avro"  # Confluent wire format, schema in the registry
    BYTES = "bytes"  # dead letters: the original bytes, whatever they were


@dataclass(frozen=True)
class TopicSpec:
    name: str
    key: str
    encoding: Encoding
    value_schema: str | None = None  # Avro full name, e.g. "sinergi.Enrollment"
    partitions: int | None = None  # None: Settings.kafka_partitions
    compacted: bool = False
    retention_ms: int | None = None
    doc: str = ""
    extra_config: dict[str, str] = field(default_factory=dict)

    def config(self) -> dict[str, str]:
        cfg = {"cleanup.policy": "compact" if self.compacted else "delete"}
        if self.retention_ms is not None:
            cfg["retention.ms"] = str(self.retention_ms)
        cfg.update(self.extra_config)
        return cfg


PARTICIPANT_KEY = "participant key (keyed hash of the NIK, = VA customer number)"
SEVEN_DAYS_MS = 7 * 24 * 3600 * 1000

ENROLLMENTS_RAW = TopicSpec(
    "kbri.enrollments.raw",
    PARTICIPANT_KEY,
    Encoding.JSON,
    retention_ms=SEVEN_DAYS_MS,
    doc="Enrollment requests as offices sent them (JSON + intake headers).",
)
PAYMENTS_RAW = TopicSpec(
    "bank.payments.raw",
    PARTICIPANT_KEY,
    Encoding.JSON,
    retention_ms=SEVEN_DAYS_MS,
    doc="SNAP payment notifications as banks sent them (JSON + intake headers).",
)
STATEMENTS_RAW = TopicSpec(
    "bank.statements.raw",
    "bank id",
    Encoding.JSON,
    retention_ms=SEVEN_DAYS_MS,
    doc="One StatementEntry JSON per line of an uploaded or imported statement file (+ file headers).",
)
ENROLLMENTS = TopicSpec(
    "enrollments.v1",
    PARTICIPANT_KEY,
    Encoding.AVRO,
    "sinergi.Enrollment",
    doc="Validated enrollments.",
)
PAYMENTS = TopicSpec(
    "payments.v1",
    PARTICIPANT_KEY,
    Encoding.AVRO,
    "sinergi.Payment",
    doc="Validated payments, amount in integer rupiah plus the original currency.",
)
STATEMENT_ENTRIES = TopicSpec(
    "statement-entries.v1", "bank id", Encoding.AVRO, "sinergi.StatementEntry", doc="One entry per statement line."
)
FX_RATES = TopicSpec(
    "fx-rates.v1",
    "currency",
    Encoding.AVRO,
    "sinergi.FxRate",
    partitions=1,
    compacted=True,
    doc="Reference FX rates by currency and value date.",
)
MEMBERS = TopicSpec(
    "members.v1",
    PARTICIPANT_KEY,
    Encoding.AVRO,
    "sinergi.MemberRecord",
    compacted=True,
    doc="Latest MemberRecord per participant, versioned.",
)
EXCEPTIONS = TopicSpec(
    "reconciliation.exceptions.v1",
    PARTICIPANT_KEY,
    Encoding.AVRO,
    "sinergi.ReconciliationException",
    doc="Payments and entries the reconciler could not match, with a reason.",
)
STATEMENTS_BY_BANK = TopicSpec(
    "reconcile_statements.by-bank.v1",
    "bank id",
    Encoding.BYTES,
    retention_ms=SEVEN_DAYS_MS,
    doc="Internal to reconcile_statements: payments.v1 re-keyed by bank id (Avro bytes unchanged, header "
    "sinergi-kind=payment) and day-close ticks (sinergi-kind=tick, empty value).",
)
STATEMENT_DECISIONS = TopicSpec(
    "reconciliation.statements.v1",
    "bank id",
    Encoding.JSON,
    doc="Statement reconciliation decisions (statement_match.Decision JSON): matches and breaks per bank.",
)
REVERSALS = TopicSpec(
    "reversals.v1",
    PARTICIPANT_KEY,
    Encoding.AVRO,
    "sinergi.Reversal",
    doc="Payments taken back by their bank (statement REVERSAL / ERROR CORRECTION debits tied to a payment).",
)
CORE_MEMBER_RECORDS = TopicSpec(
    "core.member-records.v1",
    PARTICIPANT_KEY,
    Encoding.AVRO,
    "sinergi.MemberRecord",
    doc="What the BPJS core system consumes: each member version once, in order per member.",
)


KBRI_CASES = TopicSpec(
    "kbri.cases.v1",
    "case event id (UUIDv5 of office + the office's case id)",
    Encoding.AVRO,
    "sinergi.Case",
    doc="Consultation cases offices forward to BPJS (question, complaint, ...), idempotent by case id.",
)
CORE_CASE_UPDATES = TopicSpec(
    "core.case-updates.v1",
    "case event id",
    Encoding.AVRO,
    "sinergi.CaseUpdate",
    doc="Status changes and answers of cases, written by the BPJS core system (core-sim in the demo).",
)
WEBHOOK_DEAD_LETTERS = TopicSpec(
    "kbri.webhooks.dlq.v1",
    "webhook dead-letter key (office + webhook id)",
    Encoding.BYTES,
    retention_ms=30 * 24 * 3600 * 1000,
    doc="Office webhook deliveries that exhausted their retries; `sinergi webhooks replay` re-sends them.",
)
OFFICE_UPDATES_PREFIX = "kbri.updates."


def office_updates_topic(office_code: str) -> str:
    """`kbri.updates.<OFFICE>.v1`: everything one office may learn, and nothing of another office."""
    return f"{OFFICE_UPDATES_PREFIX}{office_code}.v1"


def office_update_topics(office_codes: Iterable[str]) -> tuple[TopicSpec, ...]:
    """One topic per office of the registry (offices.json): adding an office adds its topic."""
    return tuple(
        TopicSpec(
            office_updates_topic(code),
            "subject of the update (customer number, request id or case id)",
            Encoding.JSON,
            partitions=1,  # one office's updates are totally ordered; the feed cursor is the offset
            retention_ms=30 * 24 * 3600 * 1000,
            doc=f"OfficeUpdate JSON for {code} only (member status, rejections, case answers).",
        )
        for code in sorted(office_codes)
    )


def dlq(stage: str) -> TopicSpec:
    return TopicSpec(
        f"dlq.{stage}",
        "the original key",
        Encoding.BYTES,
        retention_ms=30 * 24 * 3600 * 1000,
        doc=f"Input the {stage} stage could not accept: original bytes, headers with reason and coordinates.",
    )


STAGES = (
    "normalize_enrollments",
    "normalize_payments",
    "reconcile",
    "core_publisher",
    "normalize_statements",
    "notify_kbri",
    "reconcile_statements",
)
DEAD_LETTERS = tuple(dlq(stage) for stage in STAGES)
DLQ_REPLAYS = TopicSpec(
    "dlq.replays.v1",
    "the replayed dead letter's coordinates (dlq.<stage>/<partition>/<offset>)",
    Encoding.JSON,
    partitions=1,
    compacted=True,
    doc="`sinergi dlq replay`'s ledger: one record per dead letter replayed (where it went, when), so a "
    "second replay sends nothing twice.",
)

ALL_TOPICS: tuple[TopicSpec, ...] = (
    ENROLLMENTS_RAW,
    PAYMENTS_RAW,
    STATEMENTS_RAW,
    ENROLLMENTS,
    PAYMENTS,
    STATEMENT_ENTRIES,
    FX_RATES,
    MEMBERS,
    EXCEPTIONS,
    STATEMENTS_BY_BANK,
    STATEMENT_DECISIONS,
    REVERSALS,
    CORE_MEMBER_RECORDS,
    KBRI_CASES,
    CORE_CASE_UPDATES,
    WEBHOOK_DEAD_LETTERS,
    *DEAD_LETTERS,
    DLQ_REPLAYS,
)


def all_topics(office_codes: Iterable[str]) -> tuple[TopicSpec, ...]:
    """The static catalogue plus the per-office update topics of the given registry."""
    return ALL_TOPICS + office_update_topics(office_codes)


def by_name(name: str) -> TopicSpec:
    for spec in ALL_TOPICS:
        if spec.name == name:
            return spec
    raise KeyError(name)
