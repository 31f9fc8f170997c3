"""The verifier's statement rules (services.domain.verification, issue 7): every statement entry that went in
has at most one effective decision, a re-sent decision is a repeat, an entry the reconciler decides on
arrival is never left undecided, and the mixed stream's statement files (services.simulation.backlog) judged
after statement_match come out clean."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest

from services.config import Settings
from services.domain.models import StatementEntry
from services.domain.payment import normalize_payment
from services.domain.statement_match import (
    BankLedger,
    Decision,
    DecisionKind,
    apply_entry,
    apply_payment,
)
from services.domain.verification import (
    DeadLetterFact,
    DecisionFact,
    ExceptionFact,
    Inputs,
    PaymentFact,
    StatementEntryFact,
    VerificationReport,
    decision_fact,
    restrict,
    verify,
)
from services.reference import load_banks
from services.simulation.backlog import MixedStream, build_mixed_stream

BANK = "BANKA"
DAY = date(2026, 3, 2)
AT = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)


def decision(
    kind: DecisionKind,
    *,
    entry: str | None = "e1",
    payment: str | None = "p1",
    amount_idr: int = 100_000,
    resolves: tuple[str, ...] = (),
    decided_at: datetime = AT,
    decision_id: str | None = None,
) -> DecisionFact:
    return decision_fact(
        Decision(
            decision_id=decision_id or f"{kind.value}:{payment}:{entry}",
            kind=kind,
            bank_id=BANK,
            business_date=DAY,
            payment_event_id=payment,
            entry_id=entry,
            participant_id="pid-1" if payment else None,
            statement_amount=Decimal(amount_idr),
            statement_currency="IDR",
            amount_idr=amount_idr,
            resolves=resolves,
            decided_at=decided_at,
        )
    )


def credit(entry_id: str = "e1", *refs: str, booked: date = DAY) -> StatementEntryFact:
    return StatementEntryFact(entry_id, BANK, "CREDIT", booked, refs or ("PRQ-1",))


def paid(event_id: str = "p1", *refs: str) -> PaymentFact:
    return PaymentFact(event_id, "pid-1", 100_000, bank_id=BANK, references=refs or ("PRQ-1",))


def statement_problems(report: VerificationReport) -> dict[str, int]:
    """The statement figures only (these facts carry payments no member record credits)."""
    return {k: v for k, v in report.problems.items() if k.startswith("statement")}


# --- decisions: repeats, contradictions, decided twice ------------------------------------------------------


def test_a_decision_resent_after_a_crash_is_a_repeat_even_with_a_new_clock() -> None:
    first = decision(DecisionKind.MATCHED_BY_REF)
    again = decision(DecisionKind.MATCHED_BY_REF, decided_at=AT + timedelta(minutes=7))  # a redone close
    report = verify(Inputs(statement_entries=(credit(),), decisions=(first, again, first)))
    assert report.statement_decisions == 1
    assert report.statement_decision_repeats == 2
    assert report.statement_entries_matched == report.statement_entries_decided == 1
    assert report.problems == {}


def test_the_same_decision_id_with_other_content_is_contradictory() -> None:
    first = decision(DecisionKind.MATCHED_BY_REF, decision_id="d1")
    other = decision(DecisionKind.MATCHED_BY_REF, decision_id="d1", amount_idr=99_000)
    report = verify(Inputs(statement_entries=(credit(),), decisions=(first, other)))
    assert report.statement_decisions_contradictory == 1
    assert report.problems == {"statement_decisions_contradictory": 1}
    assert report.samples["statement_decisions_contradictory"] == ("d1",)


def test_two_different_decisions_for_one_entry_are_a_duplicate() -> None:
    one = decision(DecisionKind.MATCHED_BY_REF, payment="p1")
    two = decision(DecisionKind.MATCHED_BY_REF, payment="p2")
    report = verify(Inputs(statement_entries=(credit(),), decisions=(one, two)))
    assert report.statement_entries_decided_twice == 1
    assert report.statement_entries_decided == 1  # the entry itself is counted once
    assert "statement_entries_decided_twice" in report.problems


def test_two_different_decisions_for_one_payment_are_a_duplicate_but_its_reversal_is_not() -> None:
    matched = decision(DecisionKind.MATCHED_BY_REF, entry="e1")
    reversal = decision(DecisionKind.REVERSAL, entry="debit-1")
    assert verify(Inputs(decisions=(matched, reversal))).problems == {}
    again = decision(DecisionKind.MATCHED_BY_REF, entry="e2")
    report = verify(Inputs(decisions=(matched, again)))
    assert report.statement_payments_decided_twice == 1
    assert report.samples["statement_decided_twice"] == ("p1",)


def test_a_break_a_later_match_resolved_is_not_a_second_decision() -> None:
    standing = decision(DecisionKind.ON_STATEMENT_NOT_NOTIFIED, payment=None, decision_id="brk")
    late = decision(DecisionKind.MATCHED_BY_VA_AMOUNT_DATE, resolves=("brk",))
    report = verify(Inputs(statement_entries=(credit(),), decisions=(standing, late)))
    assert report.statement_entries_matched == 1 and report.statement_entries_broken == 0
    assert report.statement_decisions == 2
    assert report.problems == {}


def test_a_mismatch_is_a_decided_break() -> None:
    report = verify(Inputs(statement_entries=(credit(),), decisions=(decision(DecisionKind.AMOUNT_MISMATCH),)))
    assert report.statement_entries_broken == report.statement_entries_decided == 1
    assert report.statement_entries_matched == 0 and report.problems == {}


# --- entries without a decision ---------------------------------------------------------------------------


def test_a_credit_naming_a_notified_payment_without_any_decision_is_undecided() -> None:
    report = verify(Inputs(payments=(paid(),), statement_entries=(credit("e1", " prq-1 "),)))
    assert report.statement_entries_undecided == 1
    assert report.samples["statement_entries_undecided"] == ("e1",)
    assert "statement_entries_undecided" in report.problems


def test_a_reference_of_another_bank_or_a_placeholder_names_no_payment() -> None:
    other_bank = PaymentFact("p1", "pid-1", 100_000, bank_id="BANKB", references=("PRQ-1",))
    placeholder = PaymentFact("p2", "pid-2", 100_000, bank_id=BANK, references=("NOTPROVIDED",))
    entries = (credit("e1", "PRQ-1"), credit("e2", "NOTPROVIDED"))
    report = verify(Inputs(payments=(other_bank, placeholder), statement_entries=entries))
    assert report.statement_entries_waiting == 2 and statement_problems(report) == {}


def test_a_credit_whose_payment_was_decided_with_another_entry_waits() -> None:
    # the bank listed one transaction twice under two references: the second copy waits for its day's close
    report = verify(
        Inputs(
            payments=(paid(),),
            statement_entries=(credit("e1"), credit("e2")),
            decisions=(decision(DecisionKind.MATCHED_BY_REF, entry="e1"),),
        )
    )
    assert report.statement_entries_matched == 1 and report.statement_entries_waiting == 1
    assert statement_problems(report) == {}


def test_an_unexplained_credit_waits_until_its_day_is_long_closed() -> None:
    entry = credit("e9", "UNKNOWN-REF")
    close = datetime(2026, 3, 3, 0, 0, tzinfo=UTC) - timedelta(hours=7) + timedelta(hours=12, minutes=10)
    soon = verify(Inputs(statement_entries=(entry,), as_of=close - timedelta(seconds=1)))
    assert soon.statement_entries_waiting == 1 and soon.problems == {}
    late = verify(Inputs(statement_entries=(entry,), as_of=close))
    assert late.statement_entries_overdue == 1 and late.problems == {"statement_entries_overdue": 1}
    assert verify(Inputs(statement_entries=(entry,))).statement_entries_waiting == 1  # no clock: never overdue


def test_a_debit_taking_back_nothing_waits_and_a_dead_lettered_entry_is_accounted_for() -> None:
    fee = StatementEntryFact("fee", BANK, "DEBIT", DAY, ("PRQ-1",))
    bad = credit("bad")
    dead = DeadLetterFact("reconcile_statements", "X", "statement-entries.v1", 0, 3, entry_id="bad")
    report = verify(Inputs(payments=(paid(),), statement_entries=(fee, bad), dead_letters=(dead,)))
    assert report.statement_entries_waiting == 1 and report.statement_entries_dead_lettered == 1
    assert report.statement_entries_accounted == report.statement_entries_in == 2
    # ``bad`` names p1 but went to a dead letter: not undecided
    assert statement_problems(report) == {}


def test_an_entry_emitted_twice_is_counted_once() -> None:
    report = verify(Inputs(statement_entries=(credit(), credit()), decisions=(decision(DecisionKind.MATCHED_BY_REF),)))
    assert report.statement_entries_in == 1 and report.statement_entry_repeats == 1


def test_a_statement_break_exception_is_not_a_payment_fate() -> None:
    """An AMOUNT_MISMATCH exception carries the payment's event id; it says nothing of the member side, so a
    payment nobody credited stays missing."""
    mismatch = decision(DecisionKind.AMOUNT_MISMATCH, decision_id="mm")
    exception = ExceptionFact("mm", "pid-1", "AMOUNT_MISMATCH", "p1", 100_000, "e1")
    report = verify(Inputs(payments=(paid(),), exceptions=(exception,), decisions=(mismatch,)))
    assert report.payments_missing == 1 and report.payments_held_or_refused == 0
    held = ExceptionFact("x1", "pid-1", "UNKNOWN_VA", "p1", 100_000)
    assert verify(Inputs(payments=(paid(),), exceptions=(exception, held), decisions=(mismatch,))).ok


def test_restrict_keeps_the_entries_asked_for_and_the_decisions_about_them() -> None:
    mine, theirs = credit("e1"), credit("e2", "PRQ-2")
    about_entry = decision(DecisionKind.MATCHED_BY_REF, entry="e1", payment="p1")
    about_payment = decision(DecisionKind.NOTIFIED_NOT_ON_STATEMENT, entry=None, payment="p1")
    foreign = decision(DecisionKind.MATCHED_BY_REF, entry="e2", payment="p2")
    raw_entry = DeadLetterFact("normalize_statements", "X", "bank.statements.raw", 0, 1, key=BANK, entry_id="e1")
    facts = Inputs(
        payments=(paid(), PaymentFact("p2", "pid-2", 5, bank_id=BANK)),
        statement_entries=(mine, theirs),
        decisions=(about_entry, about_payment, foreign),
        dead_letters=(raw_entry,),
        as_of=AT,
    )
    kept = restrict(facts, participants={"pid-1"}, entry_ids={"e1"})
    assert kept.statement_entries == (mine,)
    assert kept.decisions == (about_entry, about_payment)
    assert kept.dead_letters == (raw_entry,)
    assert kept.as_of == AT
    assert restrict(facts, participants={"pid-1"}).statement_entries == ()


def test_the_summary_and_json_name_the_statement_figures() -> None:
    report = verify(Inputs(statement_entries=(credit(),), decisions=(decision(DecisionKind.MATCHED_BY_REF),)))
    text = report.summary()
    assert "statement entries in" in text and "UNDECIDED statement entries" in text
    assert report.to_dict()["statement_entries_matched"] == 1


# --- the mixed stream's statements, through statement_match, judged -----------------------------------------

SETTINGS = Settings()
NOW = datetime(2026, 3, 2, 3, 0, tzinfo=UTC)  # 10:00 WIB: every payment of the stream is on one business day
MEMBERS = 900  # enough for two files at each bank, so every format of the rotation appears


@pytest.fixture(scope="module")
def stream() -> MixedStream:
    return build_mixed_stream(SETTINGS, MEMBERS, 11, NOW, statements=True)


def replay(stream: MixedStream) -> tuple[list[PaymentFact], list[StatementEntryFact], list[Decision]]:
    """The stream through the normalizers and statement_match, in its order, offline."""
    banks = load_banks(SETTINGS.banks_file)
    ledgers: dict[str, BankLedger] = {}
    payments: list[PaymentFact] = []
    entries: list[StatementEntryFact] = []
    decisions: list[Decision] = []
    for record in stream.records:
        headers = {k: v.decode() for k, v in record.headers}
        if record.topic == "bank.payments.raw":
            bank = banks[headers["sinergi-bank"]]
            p = normalize_payment(
                json.loads(record.value),
                bank_id=bank.bank_id,
                partner_service_id=bank.partner_service_id,
                allowed_currencies=bank.currencies,
                external_id=headers["sinergi-external-id"],
                received_at=NOW,
            )
            refs = tuple(r for r in (p.payment_request_id, p.partner_reference_no) if r)
            payments.append(PaymentFact(p.event_id, p.participant_id, p.amount_idr, p.bank_id, refs))
            step = apply_payment(ledgers.get(p.bank_id) or BankLedger.empty(p.bank_id), p)
        elif record.topic == "bank.statements.raw":
            e = StatementEntry.model_validate_json(record.value)
            assert headers["sinergi-entry-id"] == e.entry_id and record.key == e.bank_id.encode()
            refs = tuple(r for r in (e.bank_ref, e.end_to_end_id, e.customer_ref) if r)
            entries.append(StatementEntryFact(e.entry_id, e.bank_id, e.direction.value, e.booking_date, refs))
            step = apply_entry(ledgers.get(e.bank_id) or BankLedger.empty(e.bank_id), e)
        else:
            continue
        ledgers[step.ledger.bank_id] = step.ledger
        decisions.extend(step.decisions)
    return payments, entries, decisions


def test_the_mixed_stream_carries_statements_of_every_format_with_breaks(stream: MixedStream) -> None:
    traffic = stream.statements
    assert traffic is not None
    on_topic = [r for r in stream.records if r.topic == "bank.statements.raw"]
    assert len(on_topic) == traffic.entries > 0.9 * stream.payments  # most payments are listed
    assert set(traffic.formats) == {"SNAP_STATEMENT", "MT940", "CSV", "CAMT054"}
    assert traffic.breaks["AMOUNT_MISMATCH"] >= 1 and traffic.breaks["ON_STATEMENT_NOT_NOTIFIED"] >= 1
    assert traffic.decided_at_once + traffic.waiting_for_close == traffic.entries


def test_statements_leave_the_rest_of_the_stream_unchanged_and_are_deterministic(stream: MixedStream) -> None:
    plain = build_mixed_stream(SETTINGS, MEMBERS, 11, NOW)
    assert plain.statements is None
    assert [r for r in stream.records if r.topic != "bank.statements.raw"] == plain.records
    again = build_mixed_stream(SETTINGS, MEMBERS, 11, NOW, statements=True)
    assert again.records == stream.records


def test_the_stream_through_statement_match_verifies_clean_even_with_decisions_resent(stream: MixedStream) -> None:
    traffic = stream.statements
    assert traffic is not None
    payments, entries, decisions = replay(stream)
    resent = decisions[: len(decisions) // 3]  # a reconciler killed after Kafka acknowledged, before its ledger
    facts = Inputs(
        payments=tuple(payments),
        statement_entries=tuple(entries),
        decisions=tuple(decision_fact(d) for d in [*decisions, *resent]),
        as_of=NOW + timedelta(hours=1),
    )
    report = verify(restrict(facts, entry_ids=traffic.entry_ids, event_ids={p.event_id for p in payments}))
    assert report.statement_entries_in == traffic.entries
    assert report.statement_entries_decided == traffic.decided_at_once
    assert report.statement_entries_broken == traffic.breaks["AMOUNT_MISMATCH"]
    assert report.statement_entries_waiting == traffic.waiting_for_close
    assert report.statement_decision_repeats == len(resent)
    assert statement_problems(report) == {}


def test_a_lost_decision_is_found(stream: MixedStream) -> None:
    payments, entries, decisions = replay(stream)
    lost = next(d for d in decisions if d.kind is DecisionKind.MATCHED_BY_REF)
    kept = [decision_fact(d) for d in decisions if d is not lost]
    report = verify(Inputs(payments=tuple(payments), statement_entries=tuple(entries), decisions=tuple(kept)))
    assert report.statement_entries_undecided == 1
    assert report.samples["statement_entries_undecided"] == (lost.entry_id,)
