"""Reliability verification: what a run sent against what the hub wrote (issue 7, item 1).

Pure: the Kafka side (services.verify) reads the topics and hands this module plain facts; everything
here is a function of those facts, so a crash test, the CLI and a unit test judge the same way.

Inputs
------
* raw records (``kbri.enrollments.raw``, ``bank.payments.raw``) with their ``sinergi-event-id`` header;
* canonical events: :class:`PaymentFact` (``payments.v1``) and :class:`EnrollmentFact` (``enrollments.v1``);
* :class:`RecordFact` -- every MemberRecord on ``members.v1`` and ``core.member-records.v1`` in topic order
  per partition (a participant lives on one partition, so that is its order);
* :class:`ExceptionFact` (``reconciliation.exceptions.v1``) and :class:`DeadLetterFact` (``dlq.*``);
* statements: raw entries (``bank.statements.raw``, their ``sinergi-entry-id`` header),
  :class:`StatementEntryFact` (``statement-entries.v1``) and :class:`DecisionFact`
  (``reconciliation.statements.v1``, :func:`decision_fact` of a statement_match ``Decision``).

Rules
-----
* **One payment = one event id.** A bank re-sending the same transaction produces the same id
  (``event_uuid("payment", bank_id, paymentRequestId)``), so repeated notifications on ``payments.v1`` are
  counted once (``duplicate_notifications``, informational) and their money once.
* **A payment is accounted for** by the first of these that holds:

  1. *credited*: its id is in ``payment_event_ids`` of the LATEST version (highest) of the bill it was
     credited to. A bill is (enrollment_event_id, bill_issued_at): a lapse or a re-enrollment opens a new
     bill with paid_amount_idr 0, and a payment credited to an earlier bill stays credited there;
  2. *reversed*: a REVERSAL exception names it in ``related_event_id`` (the bank took the money back);
  3. *counted once*: a DUPLICATE_NOTIFICATION exception carries its id (the same bank transaction under
     another event id): neither money in nor money recorded;
  4. *held or refused*: any other exception carries its id as ``event_id`` (PAYMENT_BEFORE_ENROLLMENT still
     held, HELD_PAYMENT_AGED_OUT, UNKNOWN_VA, BILL_EXPIRED, PAYMENT_ON_PAID_BILL, PAYMENT_ON_CLOSED_BILL,
     FX_* under HOLD, ILLEGAL_TRANSITION): the money is recorded as not credited;
  5. *dead-lettered*: a dead letter carries its id in the ``sinergi-event-id`` header.

  Otherwise it is **missing**. A payment credited to the latest version of two bills, or listed twice in
  one record, is **credited twice**.
* **An enrollment is accounted for** when some record names it as ``enrollment_event_id``, an exception
  carries its id, or a dead letter does. A **raw record** is accounted for when its event id reached the
  canonical topic or a dead letter, or a dead letter names its (topic, partition, offset).
* **Money in** = the sum of ``amount_idr`` over distinct payment ids, less those of rule 3.
  **Money recorded** = credited (sum of ``paid_amount_idr`` of the latest version of every bill; an
  over-payment stays in paid_amount_idr, ``credit_idr`` is only its excess, so it is not added again; a
  reversal has already been subtracted there) + reversed + held/refused + dead-lettered. The latest version
  of each bill must also equal the sum of the payments it lists (``bills_unbalanced`` otherwise), which
  catches a record that says more or less than the payments it names.
* **Contradictory** (per output topic, per participant, in topic order): a version lower than one already
  seen whose content is not identical to the earlier record of that version, or two different records
  with the same (participant, version). An identical record again (an at-least-once re-emission after a
  restart) is a **repeat**: on members.v1 it is harmless (compacted, idempotent consumers) and only
  reported; on core.member-records.v1 the hub promises each version once, so it counts as **duplicated**.
* ``core_missing``: participants whose highest members.v1 version has not reached core.member-records.v1.

* **Statement entries** (services.domain.statement_match decides them; a day closes hours after it ends):

  - a decision re-sent after a crash has the same ``decision_id`` and the same content (ids, kind, amounts,
    resolves, detail; ``decided_at`` and the ageing are left out, as a close redone after a crash takes a
    new clock): a **repeat**, informational. The same id with other content is **contradictory**;
  - the *effective* decisions are the distinct ones less the breaks a later match resolved
    (statement_match.effective). An entry named by two effective decisions, or a payment by two effective
    decisions other than its REVERSAL, is **decided twice**;
  - a credit entry whose reference (bank_ref, end_to_end_id, customer_ref) names a notified payment of its
    bank (paymentRequestId or partnerReferenceNo, trimmed, case ignored) is decided at once by rule 1 of
    statement_match: without any effective decision, while that payment has none either, it is
    **undecided** (a lost decision). Any other entry without a decision (a credit no notification
    explains, a bank fee debit) is **waiting** for its day's close; it is **overdue** once its booking
    day ended more than ``Inputs.close_after`` before ``Inputs.as_of`` (when given). A dead-lettered entry
    is accounted for. Statement break exceptions (their ``exception_id`` is a decision id) are not
    payment fates: rule 4 above ignores them.

:attr:`VerificationReport.ok` holds when nothing is missing, duplicated, contradictory or unbalanced and
money in equals money recorded to the rupiah. Samples hold at most :data:`SAMPLE` ids each: event ids
(UUIDs) and participant keys (keyed hashes), never a NIK, VA or account number.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta

from services.domain.dates import WIB
from services.domain.statement_match import DEFAULT_CLOSE_GRACE, Decision, DecisionKind

MEMBERS_TOPIC = "members.v1"
CORE_TOPIC = "core.member-records.v1"
SAMPLE = 5
REVERSAL_REASON = "REVERSAL"
DUPLICATE_REASON = "DUPLICATE_NOTIFICATION"
CREDIT = "CREDIT"
#: statement_match's close grace plus two of the reconciler's 5-minute ticks of slack.
CLOSE_AFTER = DEFAULT_CLOSE_GRACE + timedelta(minutes=10)
# references that never match (statement_match's placeholders)
_PLACEHOLDER_REFS = frozenset({"NOTPROVIDED", "NONREF", "NONE", "NULL", "N/A", "NA", "-"})
# what a redone close changes in a decision without changing the decision
_CLOCK_FIELDS = frozenset({"decided_at", "ageing_days", "ageing_bucket"})


@dataclass(frozen=True)
class PaymentFact:
    event_id: str
    participant_id: str
    amount_idr: int
    bank_id: str = ""
    references: tuple[str, ...] = ()  # payment_request_id, partner_reference_no: what an entry can name


@dataclass(frozen=True)
class StatementEntryFact:
    entry_id: str
    bank_id: str
    direction: str  # CREDIT or DEBIT
    booking_date: date
    references: tuple[str, ...] = ()  # bank_ref, end_to_end_id, customer_ref (those present)


@dataclass(frozen=True)
class DecisionFact:
    decision_id: str
    kind: str
    bank_id: str
    entry_id: str | None = None
    payment_event_id: str | None = None
    resolves: tuple[str, ...] = ()
    content: str = ""  # equal for the same decision re-sent (see decision_fact)


def decision_fact(decision: Decision) -> DecisionFact:
    """The verifier's view of a statement decision; ``content`` leaves out the clock (module docstring)."""
    return DecisionFact(
        decision_id=decision.decision_id,
        kind=decision.kind.value,
        bank_id=decision.bank_id,
        entry_id=decision.entry_id,
        payment_event_id=decision.payment_event_id,
        resolves=tuple(decision.resolves),
        content=decision.model_dump_json(exclude=set(_CLOCK_FIELDS)),
    )


@dataclass(frozen=True)
class EnrollmentFact:
    event_id: str
    participant_id: str


@dataclass(frozen=True)
class RawFact:
    topic: str
    partition: int
    offset: int
    event_id: str | None
    key: str = ""


@dataclass(frozen=True)
class RecordFact:
    topic: str
    participant_id: str
    version: int
    status: str
    paid_amount_idr: int
    record_id: str
    enrollment_event_id: str
    bill_issued_at: str  # ISO text: with enrollment_event_id it names the bill
    payment_event_ids: tuple[str, ...] = ()
    reversal_event_ids: tuple[str, ...] = ()
    fingerprint: str = ""  # equal for identical records; derived from the fields when empty

    def content(self) -> str:
        if self.fingerprint:
            return self.fingerprint
        return json.dumps(
            [
                self.version,
                self.status,
                self.paid_amount_idr,
                self.enrollment_event_id,
                self.bill_issued_at,
                self.payment_event_ids,
                self.reversal_event_ids,
            ]
        )

    @property
    def bill(self) -> tuple[str, str, str]:
        return (self.participant_id, self.enrollment_event_id, self.bill_issued_at)


@dataclass(frozen=True)
class ExceptionFact:
    exception_id: str
    participant_id: str
    reason: str
    event_id: str
    amount_idr: int | None = None
    related_event_id: str | None = None


@dataclass(frozen=True)
class DeadLetterFact:
    stage: str
    reason: str
    source_topic: str
    source_partition: int
    source_offset: int
    event_id: str | None = None
    key: str = ""
    entry_id: str | None = None  # a statement entry's sinergi-entry-id header


@dataclass(frozen=True)
class Inputs:
    payments: tuple[PaymentFact, ...] = ()
    enrollments: tuple[EnrollmentFact, ...] = ()
    raw: tuple[RawFact, ...] = ()
    records: tuple[RecordFact, ...] = ()
    exceptions: tuple[ExceptionFact, ...] = ()
    dead_letters: tuple[DeadLetterFact, ...] = ()
    # Keys of canonical or output values no schema could read: never accountable.
    undecodable: tuple[str, ...] = ()
    statement_entries: tuple[StatementEntryFact, ...] = ()
    decisions: tuple[DecisionFact, ...] = ()
    as_of: datetime | None = None  # when the topics were read; None: nothing is overdue
    close_after: timedelta = CLOSE_AFTER  # how long after its booking day ends an entry may stay undecided


@dataclass(frozen=True)
class VerificationReport:
    payments_in: int = 0
    duplicate_notifications: int = 0
    enrollments_in: int = 0
    raw_in: int = 0
    records_seen: dict[str, int] = field(default_factory=dict)
    payments_credited: int = 0
    payments_reversed: int = 0
    payments_held_or_refused: int = 0
    payments_counted_once: int = 0
    payments_dead_lettered: int = 0
    payments_missing: int = 0
    enrollments_missing: int = 0
    raw_unaccounted: int = 0
    payments_credited_twice: int = 0
    contradictions: int = 0
    core_duplicates: int = 0
    members_repeats: int = 0
    core_missing: int = 0
    bills_unbalanced: int = 0
    undecodable: int = 0
    money_in_idr: int = 0
    money_credited_idr: int = 0
    money_reversed_idr: int = 0
    money_held_or_refused_idr: int = 0
    money_dead_lettered_idr: int = 0
    statement_entries_in: int = 0
    statement_entry_repeats: int = 0
    statement_entries_decided: int = 0
    statement_entries_matched: int = 0
    statement_entries_broken: int = 0
    statement_entries_dead_lettered: int = 0
    statement_entries_waiting: int = 0
    statement_entries_undecided: int = 0
    statement_entries_overdue: int = 0
    statement_decisions: int = 0
    statement_decision_repeats: int = 0
    statement_decisions_contradictory: int = 0
    statement_entries_decided_twice: int = 0
    statement_payments_decided_twice: int = 0
    samples: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def statement_entries_accounted(self) -> int:
        """Entries decided, dead-lettered or legitimately waiting for their day's close."""
        return self.statement_entries_decided + self.statement_entries_dead_lettered + self.statement_entries_waiting

    @property
    def money_recorded_idr(self) -> int:
        return (
            self.money_credited_idr
            + self.money_reversed_idr
            + self.money_held_or_refused_idr
            + self.money_dead_lettered_idr
        )

    @property
    def problems(self) -> dict[str, int]:
        """Every failing figure, by name (empty when ok)."""
        found = {
            "payments_missing": self.payments_missing,
            "enrollments_missing": self.enrollments_missing,
            "raw_unaccounted": self.raw_unaccounted,
            "payments_credited_twice": self.payments_credited_twice,
            "contradictions": self.contradictions,
            "core_duplicates": self.core_duplicates,
            "core_missing": self.core_missing,
            "bills_unbalanced": self.bills_unbalanced,
            "undecodable": self.undecodable,
            "money_difference_idr": self.money_in_idr - self.money_recorded_idr,
            "statement_entries_undecided": self.statement_entries_undecided,
            "statement_entries_overdue": self.statement_entries_overdue,
            "statement_decisions_contradictory": self.statement_decisions_contradictory,
            "statement_entries_decided_twice": self.statement_entries_decided_twice,
            "statement_payments_decided_twice": self.statement_payments_decided_twice,
        }
        return {k: v for k, v in found.items() if v}

    @property
    def ok(self) -> bool:
        return not self.problems

    def rows(self) -> list[tuple[str, str]]:
        """(figure, value) pairs in print order."""
        out: list[tuple[str, str]] = [
            ("payments in (distinct event ids)", str(self.payments_in)),
            ("  duplicate notifications (counted once)", str(self.duplicate_notifications)),
            ("enrollments in", str(self.enrollments_in)),
            ("raw records in", str(self.raw_in)),
        ]
        out += [(f"records on {t}", str(n)) for t, n in sorted(self.records_seen.items())]
        out += [
            ("payments credited", str(self.payments_credited)),
            ("payments reversed", str(self.payments_reversed)),
            ("payments held or refused", str(self.payments_held_or_refused)),
            ("payments counted once (same bank transaction)", str(self.payments_counted_once)),
            ("payments dead-lettered", str(self.payments_dead_lettered)),
            ("MISSING payments", str(self.payments_missing)),
            ("MISSING enrollments", str(self.enrollments_missing)),
            ("MISSING raw records (no canonical, no dead letter)", str(self.raw_unaccounted)),
            ("DUPLICATED credits", str(self.payments_credited_twice)),
            ("DUPLICATED core records", str(self.core_duplicates)),
            ("CONTRADICTORY records", str(self.contradictions)),
            ("members.v1 repeats (identical re-emission)", str(self.members_repeats)),
            ("latest versions not on core", str(self.core_missing)),
            ("bills whose paid amount != their payments", str(self.bills_unbalanced)),
            ("values no schema could decode", str(self.undecodable)),
            ("money in (IDR)", str(self.money_in_idr)),
            ("  credited", str(self.money_credited_idr)),
            ("  reversed", str(self.money_reversed_idr)),
            ("  held or refused", str(self.money_held_or_refused_idr)),
            ("  dead-lettered", str(self.money_dead_lettered_idr)),
            ("money recorded (IDR)", str(self.money_recorded_idr)),
            ("statement entries in", str(self.statement_entries_in)),
            ("  re-emitted entries (counted once)", str(self.statement_entry_repeats)),
            ("  decided", str(self.statement_entries_decided)),
            ("    matched", str(self.statement_entries_matched)),
            ("    breaks", str(self.statement_entries_broken)),
            ("  dead-lettered", str(self.statement_entries_dead_lettered)),
            ("  waiting for their day's close", str(self.statement_entries_waiting)),
            ("statement decisions (distinct)", str(self.statement_decisions)),
            ("  repeats (same id, same content)", str(self.statement_decision_repeats)),
            ("UNDECIDED statement entries (payment notified)", str(self.statement_entries_undecided)),
            ("OVERDUE statement entries (day long closed)", str(self.statement_entries_overdue)),
            ("CONTRADICTORY statement decisions", str(self.statement_decisions_contradictory)),
            ("DUPLICATED decisions for one entry", str(self.statement_entries_decided_twice)),
            ("DUPLICATED decisions for one payment", str(self.statement_payments_decided_twice)),
            ("verdict", "OK" if self.ok else "FAILED: " + ", ".join(f"{k}={v}" for k, v in self.problems.items())),
        ]
        return out

    def summary(self) -> str:
        width = max(len(name) for name, _ in self.rows())
        lines = [f"{name.ljust(width)}  {value}" for name, value in self.rows()]
        lines += [f"sample {name}: {', '.join(ids)}" for name, ids in sorted(self.samples.items()) if ids]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "problems": self.problems,
            "payments_in": self.payments_in,
            "duplicate_notifications": self.duplicate_notifications,
            "enrollments_in": self.enrollments_in,
            "raw_in": self.raw_in,
            "records_seen": dict(self.records_seen),
            "payments_credited": self.payments_credited,
            "payments_reversed": self.payments_reversed,
            "payments_held_or_refused": self.payments_held_or_refused,
            "payments_counted_once": self.payments_counted_once,
            "payments_dead_lettered": self.payments_dead_lettered,
            "payments_missing": self.payments_missing,
            "enrollments_missing": self.enrollments_missing,
            "raw_unaccounted": self.raw_unaccounted,
            "payments_credited_twice": self.payments_credited_twice,
            "contradictions": self.contradictions,
            "core_duplicates": self.core_duplicates,
            "members_repeats": self.members_repeats,
            "core_missing": self.core_missing,
            "bills_unbalanced": self.bills_unbalanced,
            "undecodable": self.undecodable,
            "money_in_idr": self.money_in_idr,
            "money_credited_idr": self.money_credited_idr,
            "money_reversed_idr": self.money_reversed_idr,
            "money_held_or_refused_idr": self.money_held_or_refused_idr,
            "money_dead_lettered_idr": self.money_dead_lettered_idr,
            "money_recorded_idr": self.money_recorded_idr,
            "statement_entries_in": self.statement_entries_in,
            "statement_entry_repeats": self.statement_entry_repeats,
            "statement_entries_decided": self.statement_entries_decided,
            "statement_entries_matched": self.statement_entries_matched,
            "statement_entries_broken": self.statement_entries_broken,
            "statement_entries_dead_lettered": self.statement_entries_dead_lettered,
            "statement_entries_waiting": self.statement_entries_waiting,
            "statement_entries_undecided": self.statement_entries_undecided,
            "statement_entries_overdue": self.statement_entries_overdue,
            "statement_decisions": self.statement_decisions,
            "statement_decision_repeats": self.statement_decision_repeats,
            "statement_decisions_contradictory": self.statement_decisions_contradictory,
            "statement_entries_decided_twice": self.statement_entries_decided_twice,
            "statement_payments_decided_twice": self.statement_payments_decided_twice,
            "samples": {k: list(v) for k, v in self.samples.items()},
        }


def restrict(
    inputs: Inputs, participants: Iterable[str] = (), event_ids: Iterable[str] = (), entry_ids: Iterable[str] = ()
) -> Inputs:
    """Only the traffic of ``participants``, of the participants of ``event_ids`` and the statement entries
    ``entry_ids`` (a test sharing a broker with others). Raw records and dead letters are kept by their key,
    event id or entry id; statement decisions when they name a kept entry or payment."""
    wanted = set(participants)
    ids = set(event_ids)
    entries = set(entry_ids)
    if ids:
        wanted |= {p.participant_id for p in inputs.payments if p.event_id in ids}
        wanted |= {e.participant_id for e in inputs.enrollments if e.event_id in ids}
    known = {p.event_id for p in inputs.payments if p.participant_id in wanted}
    known |= {e.event_id for e in inputs.enrollments if e.participant_id in wanted}
    known |= ids
    known |= entries

    def mine(key: str, event_id: str | None) -> bool:
        return key in wanted or (event_id is not None and event_id in known)

    def decision_mine(d: DecisionFact) -> bool:
        return (d.entry_id is not None and d.entry_id in entries) or (
            d.payment_event_id is not None and d.payment_event_id in known
        )

    return Inputs(
        payments=tuple(p for p in inputs.payments if p.participant_id in wanted),
        enrollments=tuple(e for e in inputs.enrollments if e.participant_id in wanted),
        raw=tuple(r for r in inputs.raw if mine(r.key, r.event_id)),
        records=tuple(r for r in inputs.records if r.participant_id in wanted),
        exceptions=tuple(x for x in inputs.exceptions if x.participant_id in wanted),
        dead_letters=tuple(
            d
            for d in inputs.dead_letters
            if mine(d.key, d.event_id) or (d.entry_id is not None and d.entry_id in entries)
        ),
        undecodable=tuple(k for k in inputs.undecodable if k in wanted),
        statement_entries=tuple(e for e in inputs.statement_entries if e.entry_id in entries),
        decisions=tuple(d for d in inputs.decisions if decision_mine(d)),
        as_of=inputs.as_of,
        close_after=inputs.close_after,
    )


def _sample(ids: Iterable[str]) -> tuple[str, ...]:
    return tuple(sorted(set(ids))[:SAMPLE])


@dataclass
class _TopicScan:
    contradictions: list[str] = field(default_factory=list)
    repeats: list[str] = field(default_factory=list)
    highest: dict[str, int] = field(default_factory=dict)
    versions: dict[str, set[int]] = field(default_factory=lambda: defaultdict(set))


def _scan(records: Iterable[RecordFact]) -> _TopicScan:
    scan = _TopicScan()
    content: dict[tuple[str, int], str] = {}
    for r in records:
        key = (r.participant_id, r.version)
        seen = content.get(key)
        top = scan.highest.get(r.participant_id)
        if seen is not None:
            (scan.repeats if seen == r.content() else scan.contradictions).append(r.record_id)
        elif top is not None and r.version < top:
            scan.contradictions.append(r.record_id)  # a lower version never seen before, after a higher
        else:
            content[key] = r.content()
        if seen is None and not (top is not None and r.version < top):
            scan.highest[r.participant_id] = r.version if top is None else max(top, r.version)
        scan.versions[r.participant_id].add(r.version)
    return scan


def verify(inputs: Inputs) -> VerificationReport:
    """Judge ``inputs`` by the rules of the module docstring."""
    payments: dict[str, PaymentFact] = {}
    for p in inputs.payments:
        payments.setdefault(p.event_id, p)
    enrollments = {e.event_id: e for e in inputs.enrollments}
    members = [r for r in inputs.records if r.topic == MEMBERS_TOPIC]
    core = [r for r in inputs.records if r.topic == CORE_TOPIC]

    # Latest (highest) version of every bill, from members.v1 (the hub's own statement of state).
    latest: dict[tuple[str, str, str], RecordFact] = {}
    for r in members:
        held = latest.get(r.bill)
        if held is None or r.version > held.version:
            latest[r.bill] = r

    credited_in: dict[str, int] = defaultdict(int)
    unbalanced: list[str] = []
    for r in latest.values():
        for eid in set(r.payment_event_ids):
            credited_in[eid] += 1
        listed = sum(payments[e].amount_idr for e in r.payment_event_ids if e in payments)
        if listed != r.paid_amount_idr:
            unbalanced.append(r.record_id)

    statement_breaks = {d.decision_id for d in inputs.decisions}
    member_exceptions = [x for x in inputs.exceptions if x.exception_id not in statement_breaks]
    reversed_ids = {x.related_event_id for x in member_exceptions if x.reason == REVERSAL_REASON}
    once_ids = {x.event_id for x in member_exceptions if x.reason == DUPLICATE_REASON}
    excepted_ids = {x.event_id for x in member_exceptions}
    dead_ids = {d.event_id for d in inputs.dead_letters if d.event_id}
    dead_coords = {(d.source_topic, d.source_partition, d.source_offset) for d in inputs.dead_letters}

    fates: dict[str, list[str]] = defaultdict(list)
    money: dict[str, int] = defaultdict(int)
    for eid, p in payments.items():
        if credited_in.get(eid):
            fate = "credited"
        elif eid in reversed_ids:
            fate = "reversed"
        elif eid in once_ids:
            fate = "counted_once"
        elif eid in excepted_ids:
            fate = "held_or_refused"
        elif eid in dead_ids:
            fate = "dead_lettered"
        else:
            fate = "missing"
        fates[fate].append(eid)
        if fate not in ("counted_once", "missing", "credited"):
            money[fate] += p.amount_idr
    twice = [eid for eid, n in credited_in.items() if n > 1]
    twice += [r.record_id for r in latest.values() if len(set(r.payment_event_ids)) != len(r.payment_event_ids)]

    named = {r.enrollment_event_id for r in inputs.records}
    enrollments_missing = [
        eid for eid in enrollments if eid not in named and eid not in excepted_ids and eid not in dead_ids
    ]
    stm = _judge_statements(inputs, payments.values())
    canonical_ids = set(payments) | set(enrollments) | {e.entry_id for e in inputs.statement_entries}
    raw_missing = [
        f"{r.topic}:{r.partition}:{r.offset}"
        for r in inputs.raw
        if (r.topic, r.partition, r.offset) not in dead_coords
        and not (r.event_id is not None and (r.event_id in canonical_ids or r.event_id in dead_ids))
    ]

    m_scan, c_scan = _scan(members), _scan(core)
    core_missing = [pid for pid, top in m_scan.highest.items() if top not in c_scan.versions.get(pid, set())]
    records_seen = {MEMBERS_TOPIC: len(members), CORE_TOPIC: len(core)}
    samples = {
        "payments_missing": _sample(fates["missing"]),
        "enrollments_missing": _sample(enrollments_missing),
        "raw_unaccounted": _sample(raw_missing),
        "credited_twice": _sample(twice),
        "contradictions": _sample(m_scan.contradictions + c_scan.contradictions),
        "core_duplicates": _sample(c_scan.repeats),
        "core_missing": _sample(core_missing),
        "bills_unbalanced": _sample(unbalanced),
        "statement_entries_undecided": _sample(stm.undecided),
        "statement_entries_overdue": _sample(stm.overdue),
        "statement_decisions_contradictory": _sample(stm.contradictory),
        "statement_decided_twice": _sample(stm.entries_twice + stm.payments_twice),
    }
    return VerificationReport(
        payments_in=len(payments),
        duplicate_notifications=len(inputs.payments) - len(payments),
        enrollments_in=len(enrollments),
        raw_in=len(inputs.raw),
        records_seen=records_seen,
        payments_credited=len(fates["credited"]),
        payments_reversed=len(fates["reversed"]),
        payments_held_or_refused=len(fates["held_or_refused"]),
        payments_counted_once=len(fates["counted_once"]),
        payments_dead_lettered=len(fates["dead_lettered"]),
        payments_missing=len(fates["missing"]),
        enrollments_missing=len(enrollments_missing),
        raw_unaccounted=len(raw_missing),
        payments_credited_twice=len(twice),
        contradictions=len(m_scan.contradictions) + len(c_scan.contradictions),
        core_duplicates=len(c_scan.repeats),
        members_repeats=len(m_scan.repeats),
        core_missing=len(core_missing),
        bills_unbalanced=len(unbalanced),
        undecodable=len(inputs.undecodable),
        money_in_idr=sum(p.amount_idr for eid, p in payments.items() if eid not in once_ids),
        money_credited_idr=sum(r.paid_amount_idr for r in latest.values()),
        money_reversed_idr=money["reversed"],
        money_held_or_refused_idr=money["held_or_refused"],
        money_dead_lettered_idr=money["dead_lettered"],
        statement_entries_in=stm.entries_in,
        statement_entry_repeats=len(inputs.statement_entries) - stm.entries_in,
        statement_entries_decided=stm.matched + stm.broken,
        statement_entries_matched=stm.matched,
        statement_entries_broken=stm.broken,
        statement_entries_dead_lettered=stm.dead_lettered,
        statement_entries_waiting=stm.waiting,
        statement_entries_undecided=len(stm.undecided),
        statement_entries_overdue=len(stm.overdue),
        statement_decisions=stm.decisions,
        statement_decision_repeats=stm.repeats,
        statement_decisions_contradictory=len(stm.contradictory),
        statement_entries_decided_twice=len(stm.entries_twice),
        statement_payments_decided_twice=len(stm.payments_twice),
        samples={k: v for k, v in samples.items() if v},
    )


@dataclass
class _StatementJudgement:
    entries_in: int = 0
    matched: int = 0
    broken: int = 0
    dead_lettered: int = 0
    waiting: int = 0
    decisions: int = 0
    repeats: int = 0
    undecided: list[str] = field(default_factory=list)
    overdue: list[str] = field(default_factory=list)
    contradictory: list[str] = field(default_factory=list)
    entries_twice: list[str] = field(default_factory=list)
    payments_twice: list[str] = field(default_factory=list)


def _reference(value: str) -> str | None:
    text = value.strip().upper()
    return None if not text or text in _PLACEHOLDER_REFS else text


def _day_closed_by(booking_date: date, close_after: timedelta) -> datetime:
    return datetime.combine(booking_date + timedelta(days=1), time(0), tzinfo=WIB) + close_after


def _judge_statements(inputs: Inputs, payments: Iterable[PaymentFact]) -> _StatementJudgement:
    """The statement rules of the module docstring."""
    out = _StatementJudgement()
    unique: dict[str, DecisionFact] = {}
    for d in inputs.decisions:
        first = unique.get(d.decision_id)
        if first is None:
            unique[d.decision_id] = d
        elif first.content == d.content:
            out.repeats += 1
        else:
            out.contradictory.append(d.decision_id)
    out.decisions = len(unique)
    resolved = {r for d in unique.values() for r in d.resolves}
    effective = [d for d in unique.values() if d.decision_id not in resolved]

    by_entry: dict[str, list[DecisionFact]] = defaultdict(list)
    by_payment: dict[str, list[DecisionFact]] = defaultdict(list)
    for d in effective:
        if d.entry_id is not None:
            by_entry[d.entry_id].append(d)
        if d.payment_event_id is not None and d.kind != DecisionKind.REVERSAL.value:
            by_payment[d.payment_event_id].append(d)
    out.entries_twice = [eid for eid, ds in by_entry.items() if len(ds) > 1]
    out.payments_twice = [pid for pid, ds in by_payment.items() if len(ds) > 1]

    # (bank, reference) -> the notified payments an entry naming it is matched against at once
    named: dict[tuple[str, str], set[str]] = defaultdict(set)
    for p in payments:
        for ref in p.references:
            key = _reference(ref)
            if key is not None:
                named[(p.bank_id, key)].add(p.event_id)
    dead = {d.entry_id for d in inputs.dead_letters if d.entry_id}
    matches = {DecisionKind.MATCHED_BY_REF.value, DecisionKind.MATCHED_BY_VA_AMOUNT_DATE.value}
    entries: dict[str, StatementEntryFact] = {}
    for e in inputs.statement_entries:
        entries.setdefault(e.entry_id, e)
    out.entries_in = len(entries)
    for eid, e in entries.items():
        decided = by_entry.get(eid)
        if decided:
            if any(d.kind in matches for d in decided):
                out.matched += 1
            else:
                out.broken += 1
            continue
        if eid in dead:
            out.dead_lettered += 1
            continue
        refs = {k for k in map(_reference, e.references) if k is not None}
        partners = {pid for ref in refs for pid in named.get((e.bank_id, ref), ())}
        if e.direction == CREDIT and partners and not any(by_payment.get(pid) for pid in partners):
            out.undecided.append(eid)  # rule 1 decides such a pair on arrival, whatever the order
        elif inputs.as_of is not None and _day_closed_by(e.booking_date, inputs.close_after) <= inputs.as_of:
            out.overdue.append(eid)
        else:
            out.waiting += 1
    return out
