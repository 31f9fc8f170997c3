"""A member's story in plain lines, from its MemberRecord versions and ReconciliationExceptions
(``sinergi explain``).

Pure: the caller reads members.v1 / core.member-records.v1 and reconciliation.exceptions.v1 for one
participant and passes what it found, in any order and with duplicates (at-least-once topics). Each record
carries the decision log of its bill (``lineage``), so the story is rebuilt from the records alone; the
exceptions add what produced no version (a refused or held payment, an overpayment, a reversal).

The lines name events, offices, banks, codes, amounts and dates, never a person: no name, NIK, passport or
account number is in a record's lineage or in an exception, and this module does not read ``full_name`` or
``pii_encrypted``, so the story can be pasted into a ticket.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from services.domain.dates import WIB
from services.domain.models import LineageEntry, MemberRecord, ReconciliationException

_PAYMENT_OUTCOMES = {
    "EXACT": "pays the bill exactly",
    "PARTIAL": "partial payment",
    "COMPLETED_BY_PARTIALS": "completes the bill with the earlier partial payments",
    "OVERPAYMENT": "pays beyond the bill",
}
_CREDITED = frozenset(_PAYMENT_OUTCOMES)


def _rp(amount: int | None) -> str:
    return f"Rp{amount:,}" if amount is not None else "Rp?"


def _when(at: datetime) -> str:
    return at.astimezone(WIB).strftime("%Y-%m-%d %H:%M WIB")


def _bill(record: MemberRecord) -> str:
    if not record.bill_lines:
        return _rp(record.bill_amount_idr)
    parts = " + ".join(f"{line.code} {_rp(line.amount_idr)}" for line in record.bill_lines)
    return f"{_rp(record.bill_amount_idr)} = {parts}"


def _periods(record: MemberRecord) -> list[str]:
    return [
        f"    cover {p.phase} {'+'.join(p.programs)} {p.start.isoformat()} to {p.end.isoformat()}"
        for p in record.coverage_periods
    ]


def _entry_line(entry: LineageEntry, record: MemberRecord, paid_before: int) -> str:
    at, eid = _when(entry.at), entry.event_id
    if entry.kind == "ENROLLMENT":
        return (
            f"{at}  enrollment {eid} from {record.office_code} ({record.participant_type.value}): "
            f"bill {_bill(record)}, payable until {record.bill_expires_on.isoformat()}"
        )
    if entry.kind == "PAYMENT":
        text = f"{at}  payment {eid} {_rp(entry.amount_idr)}: {entry.outcome}"
        what = _PAYMENT_OUTCOMES.get(entry.outcome)
        if what is not None:
            paid = paid_before + (entry.amount_idr or 0)
            text += f" ({what}; {_rp(paid)} of {_rp(record.bill_amount_idr)} paid"
            if paid < record.bill_amount_idr:
                text += f", {_rp(record.bill_amount_idr - paid)} still due"
            elif paid > record.bill_amount_idr:
                text += f", {_rp(paid - record.bill_amount_idr)} credit"
            text += ")"
        return text
    if entry.kind == "REVERSAL":
        return f"{at}  reversal {eid}: the bank took back {_rp(entry.amount_idr)}"
    if entry.kind == "LAPSE":
        return (
            f"{at}  pre-work cover ended before embarkation: re-registration bill {_bill(record)}, "
            f"payable until {record.bill_expires_on.isoformat()}"
        )
    return f"{at}  {entry.kind.lower()} {eid}: {entry.outcome}"


def _record_block(record: MemberRecord, previous: MemberRecord | None) -> list[tuple[datetime, list[str]]]:
    """(time, lines) items for what ``record`` adds to ``previous``."""
    same_bill = previous is not None and previous.bill_issued_at == record.bill_issued_at
    known = {(e.event_id, e.kind) for e in previous.lineage} if previous is not None and same_bill else set()
    status = previous.status.value if previous is not None else None
    items: list[tuple[datetime, list[str]]] = []
    paid = 0
    for entry in record.lineage:
        before = paid
        if entry.kind == "PAYMENT" and entry.outcome in _CREDITED:
            paid += entry.amount_idr or 0
        elif entry.kind == "REVERSAL":
            paid -= entry.amount_idr or 0
        if (entry.event_id, entry.kind) in known:
            status = entry.status
            continue
        lines = [_entry_line(entry, record, before)]
        if entry.status != status:
            lines.append(f"    status {status or 'NEW'} -> {entry.status} ({entry.outcome})")
            status = entry.status
        items.append((entry.at, lines))
    summary = [
        f"    = version {record.version}: {record.status.value}, paid {_rp(record.paid_amount_idr)} "
        f"of {_rp(record.bill_amount_idr)}" + (f", credit {_rp(record.credit_idr)}" if record.credit_idr else "")
    ]
    if not record.lineage:  # a version written before lineage existed: only its cause is known
        summary.insert(0, f"{_when(record.updated_at)}  version {record.version} caused by {record.caused_by_event_id}")
    if record.coverage_periods and (previous is None or previous.coverage_periods != record.coverage_periods):
        summary.extend(_periods(record))
    items.append((record.updated_at, summary))
    return items


def _exception_line(x: ReconciliationException) -> str:
    about = f" about {x.related_event_id}" if x.related_event_id else ""
    where = ", ".join(p for p in (x.bank_id or "", _rp(x.amount_idr) if x.amount_idr is not None else "") if p)
    where = f" ({where})" if where else ""
    return f"{_when(x.occurred_at)}  exception {x.reason} on {x.event_id}{about}{where}: {x.detail}"


def story(records: Iterable[MemberRecord], exceptions: Iterable[ReconciliationException]) -> list[str]:
    """The member's story, oldest first (see the module docstring). Records and exceptions of one
    participant; repeats (same record_id / exception_id) are told once."""
    by_version = {r.record_id: r for r in records}
    ordered = sorted(by_version.values(), key=lambda r: r.version)
    unique = sorted({x.exception_id: x for x in exceptions}.values(), key=lambda x: (x.occurred_at, x.exception_id))
    participants = {r.participant_id for r in ordered} | {x.participant_id for x in unique}
    if len(participants) > 1:
        raise ValueError("a story is about one participant")
    if not participants:
        return []
    pid = participants.pop()
    # (time, rank, sequence): an event's own lines come before the exceptions raised at the same instant
    timeline: list[tuple[datetime, int, int, list[str]]] = []
    previous: MemberRecord | None = None
    for record in ordered:
        for at, lines in _record_block(record, previous):
            timeline.append((at, 0, len(timeline), lines))
        previous = record
    for x in unique:
        timeline.append((x.occurred_at, 1, len(timeline), [_exception_line(x)]))
    timeline.sort(key=lambda item: item[:3])
    head = f"member {pid}: " + (
        f"{len(ordered)} version(s), now {ordered[-1].status.value}" if ordered else "no member record (no enrollment)"
    )
    return [head, *(line for *_, lines in timeline for line in lines)]
