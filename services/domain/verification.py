"""Reliability verification: what a run sent against what the hub wrote (issue 7, item 1).

Pure: the Kafka side (services.verify) reads the topics and hands this module plain facts; everything
here is a function of those facts, so a crash test, the CLI and a unit test judge the same way.

Inputs
------
* raw records (``kbri.enrollments.raw``, ``bank.payments.raw``) with their ``sinergi-event-id`` header;
* canonical events: :class:`PaymentFact` (``payments.v1``) and :class:`EnrollmentFact` (``enrollments.v1``);
* :class:`RecordFact` -- every MemberRecord on ``members.v1`` and ``core.member-records.v1`` in topic order
  per partition (a participant lives on one partition, so that is its order);
* :class:`ExceptionFact` (``reconciliation.exceptions.v1``) and :class:`DeadLetterFact` (``dlq.*``).

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

:attr:`VerificationReport.ok` holds when nothing is missing, duplicated, contradictory or unbalanced and
money in equals money recorded to the rupiah. Samples hold at most :data:`SAMPLE` ids each: event ids
(UUIDs) and participant keys (keyed hashes), never a NIK, VA or account number.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

MEMBERS_TOPIC = "members.v1"
CORE_TOPIC = "core.member-records.v1"
SAMPLE = 5
REVERSAL_REASON = "REVERSAL"
DUPLICATE_REASON = "DUPLICATE_NOTIFICATION"


@dataclass(frozen=True)
class PaymentFact:
    event_id: str
    participant_id: str
    amount_idr: int


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
    samples: dict[str, tuple[str, ...]] = field(default_factory=dict)

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
            "samples": {k: list(v) for k, v in self.samples.items()},
        }


def restrict(inputs: Inputs, participants: Iterable[str] = (), event_ids: Iterable[str] = ()) -> Inputs:
    """Only the traffic of ``participants`` and of the participants of ``event_ids`` (a test sharing a
    broker with others). Raw records and dead letters are kept by their key or event id."""
    wanted = set(participants)
    ids = set(event_ids)
    if ids:
        wanted |= {p.participant_id for p in inputs.payments if p.event_id in ids}
        wanted |= {e.participant_id for e in inputs.enrollments if e.event_id in ids}
    known = {p.event_id for p in inputs.payments if p.participant_id in wanted}
    known |= {e.event_id for e in inputs.enrollments if e.participant_id in wanted}
    known |= ids

    def mine(key: str, event_id: str | None) -> bool:
        return key in wanted or (event_id is not None and event_id in known)

    return Inputs(
        payments=tuple(p for p in inputs.payments if p.participant_id in wanted),
        enrollments=tuple(e for e in inputs.enrollments if e.participant_id in wanted),
        raw=tuple(r for r in inputs.raw if mine(r.key, r.event_id)),
        records=tuple(r for r in inputs.records if r.participant_id in wanted),
        exceptions=tuple(x for x in inputs.exceptions if x.participant_id in wanted),
        dead_letters=tuple(d for d in inputs.dead_letters if mine(d.key, d.event_id)),
        undecodable=tuple(k for k in inputs.undecodable if k in wanted),
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

    reversed_ids = {x.related_event_id for x in inputs.exceptions if x.reason == REVERSAL_REASON}
    once_ids = {x.event_id for x in inputs.exceptions if x.reason == DUPLICATE_REASON}
    excepted_ids = {x.event_id for x in inputs.exceptions}
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
    canonical_ids = set(payments) | set(enrollments)
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
        samples={k: v for k, v in samples.items() if v},
    )
