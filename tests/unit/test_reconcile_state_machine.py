"""The member state machine under arbitrary interleavings (hypothesis RuleBasedStateMachine).

Rules: enroll, pay the exact remainder, pay partially, pay the same event twice, repeat a bank transaction
under a new event id, pay before enrolling, reverse a payment, let time pass (held payments age out), and
restart (the state goes through the Faust table's JSON and back; replaying the whole input log from
scratch gives identical decisions). Invariants after every step are listed on the invariant methods.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from services.domain.identity import event_uuid
from services.domain.models import (
    Enrollment,
    MemberRecord,
    MemberStatus,
    ParticipantType,
    Payment,
    Program,
    ReconciliationException,
    Sex,
)
from services.domain.reconcile import (
    CREDITED_OUTCOMES,
    TRANSITIONS,
    Decision,
    EventKind,
    MemberState,
    ReconcilePolicy,
    Reversal,
    current_record,
    on_enrollment,
    on_payment,
    on_reversal,
    on_tick,
)
from services.domain.tariff import Package, Tariff

PID = "123456789012345678"
T0 = datetime(2025, 8, 15, 3, 0, tzinfo=UTC)
POLICY = ReconcilePolicy(held_payment_max_age_days=3)
VALIDITY = 30
TARIFF = Tariff(
    version="test",
    effective_from=date(2023, 2, 22),
    pre_placement_idr=37_500,
    packages=(Package(code="M24", months=24, amount_idr=332_500),),
    excess_month_idr=13_500,
    extension_month_idr=13_500,
    jht_monthly_min_idr=50_000,
    jht_monthly_max_idr=600_000,
    between_packages_rule="NEXT_PACKAGE_UP",
    pre_departure_cover_months=5,
    return_preparation_months=1,
)
BILL = 370_000

Event = Enrollment | Payment | Reversal | datetime  # a datetime is a tick


def _enrollment(at: datetime) -> Enrollment:
    return Enrollment(
        event_id=event_uuid("enrollment", "KBRI_KUALA_LUMPUR", "req-1"),
        participant_id=PID,
        office_code="KBRI_KUALA_LUMPUR",
        office_request_id="req-1",
        pii_encrypted=b"\x00pii",
        full_name="Siti Aminah",
        date_of_birth=date(1987, 11, 12),
        sex=Sex.F,
        participant_type=ParticipantType.PLACED,
        destination_country="MY",
        departure_date=date(2025, 12, 1),
        contract_start=date(2025, 12, 1),
        contract_months=24,
        programs=[Program.JKK, Program.JKM],
        channel="PERWAKILAN_RI",
        received_at=at,
    )


def _payment(n: int, amount: int, at: datetime, *, event_id: str | None = None) -> Payment:
    return Payment(
        event_id=event_id or event_uuid("payment", "MANDIRI", f"PRQ-{n}"),
        participant_id=PID,
        bank_id="MANDIRI",
        partner_service_id="   88001",
        virtual_account_no="   88001" + PID,
        payment_request_id=f"PRQ-{n}",
        external_id=str(n),
        amount_idr=amount,
        original_amount=Decimal(amount).quantize(Decimal("0.01")),
        original_currency="IDR",
        trx_time=at - timedelta(seconds=30),
        trx_utc_offset_minutes=420,
        received_at=at,
    )


def _apply(state: MemberState | None, event: Event) -> Decision:
    if isinstance(event, Enrollment):
        return on_enrollment(state, event, TARIFF, VALIDITY, policy=POLICY)
    if isinstance(event, Payment):
        return on_payment(state, event, policy=POLICY)
    if isinstance(event, Reversal):
        return on_reversal(state, event, policy=POLICY)
    return on_tick(state, event, policy=POLICY)


def _kind(event: Event) -> EventKind | None:
    if isinstance(event, Enrollment):
        return EventKind.ENROLLMENT
    if isinstance(event, Payment):
        return EventKind.PAYMENT
    if isinstance(event, Reversal):
        return EventKind.REVERSAL
    return None


def _replay(events: list[Event]) -> tuple[MemberState | None, list[Decision]]:
    state: MemberState | None = None
    decisions = []
    for event in events:
        d = _apply(state, event)
        decisions.append(d)
        if d.new_state is not None:
            state = d.new_state
    return state, decisions


class MemberMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.now = T0
        self.state: MemberState | None = None
        self.log: list[Event] = []
        self.decisions: list[Decision] = []
        self.records: list[MemberRecord] = []
        self.exceptions: list[ReconciliationException] = []
        self.payments: dict[str, Payment] = {}  # every payment event sent, by id
        self.ever_credited: set[str] = set()
        self.n = 0

    # --- plumbing ----------------------------------------------------------------------------------------------
    def _tick_clock(self, minutes: int) -> datetime:
        self.now += timedelta(minutes=minutes)
        return self.now

    def _send(self, event: Event) -> Decision:
        before = self.state
        d = _apply(before, event)
        self.log.append(event)
        self.decisions.append(d)
        self.records.extend(d.records)
        self.exceptions.extend(d.exceptions)
        if d.new_state is not None:
            self._check_step(before, event, d)
            self.state = d.new_state
        return d

    def _check_step(self, before: MemberState | None, event: Event, d: Decision) -> None:
        after = d.new_state
        assert after is not None
        old = before.status_name if before is not None else "PENDING_ENROLLMENT"
        kind = _kind(event)
        # statuses a decision passes through: its records, then where it ends
        path = [r.status.value for r in d.records] + [after.status_name]
        if kind is not None:  # no lapse here (departure is within the pre-work cover): one step per event
            assert d.outcome != "ILLEGAL_TRANSITION"
            assert path[-1] in TRANSITIONS[(old, kind)], (old, kind, path)
        for a, b in zip([old, *path], path, strict=False):
            if (a, b) == ("ACTIVE", "AWAITING_PAYMENT"):
                assert isinstance(event, Reversal), "ACTIVE went back to AWAITING_PAYMENT without a reversal"
            assert b != "PENDING_ENROLLMENT" or a == "PENDING_ENROLLMENT"
        new_credits = set(after.payment_event_ids) - set(before.payment_event_ids if before is not None else ())
        assert not (new_credits & self.ever_credited), "a payment was credited twice"
        self.ever_credited |= new_credits

    def _remaining(self) -> int:
        s = self.state
        if s is None or s.bill is None:
            return BILL
        return max(1, s.bill.amount_idr - s.paid_amount_idr)

    def _pay(self, amount: int) -> None:
        self.n += 1
        p = _payment(self.n, amount, self._tick_clock(7))
        self.payments[p.event_id] = p
        self._send(p)

    # --- rules ---------------------------------------------------------------------------------------------------
    @rule(minutes=st.integers(min_value=1, max_value=600))
    def enroll(self, minutes: int) -> None:
        self._send(_enrollment(self._tick_clock(minutes)))

    @rule()
    def pay_exact(self) -> None:
        self._pay(self._remaining())

    @rule(share=st.integers(min_value=1, max_value=99))
    def pay_partially(self, share: int) -> None:
        self._pay(max(1, self._remaining() * share // 100))

    @precondition(lambda self: bool(self.payments))
    @rule(data=st.data())
    def pay_twice(self, data: st.DataObject) -> None:
        p = data.draw(st.sampled_from(sorted(self.payments)))
        d = self._send(self.payments[p].model_copy(update={"received_at": self._tick_clock(1)}))
        assert d.is_empty and d.outcome == "DUPLICATE_NOTIFICATION"

    @precondition(lambda self: bool(self.payments))
    @rule(data=st.data())
    def same_transaction_new_event_id(self, data: st.DataObject) -> None:
        p = self.payments[data.draw(st.sampled_from(sorted(self.payments)))]
        self.n += 1
        copy = p.model_copy(update={"event_id": f"copy-{self.n}", "received_at": self._tick_clock(1)})
        self.payments[copy.event_id] = copy
        d = self._send(copy)
        assert d.outcome == "DUPLICATE_NOTIFICATION" and not d.records
        # the step may first age out a held payment (its own exception): find the duplicate's
        (duplicate,) = [x for x in d.exceptions if x.reason == "DUPLICATE_NOTIFICATION"]
        assert duplicate.related_event_id is not None

    @precondition(lambda self: self.state is None or self.state.enrollment is None)
    @rule(amount=st.integers(min_value=1, max_value=400_000))
    def pay_before_enroll(self, amount: int) -> None:
        self._pay(amount)

    @precondition(lambda self: bool(self.payments))
    @rule(data=st.data())
    def reverse(self, data: st.DataObject) -> None:
        p = self.payments[data.draw(st.sampled_from(sorted(self.payments)))]
        self.n += 1
        self._send(
            Reversal(
                event_id=f"rev-{self.n}",
                participant_id=PID,
                bank_id=p.bank_id,
                reverses_event_id=p.event_id,
                received_at=self._tick_clock(3),
            )
        )

    @rule(hours=st.integers(min_value=1, max_value=100))
    def time_passes(self, hours: int) -> None:
        self._send(self._tick_clock(60 * hours))

    @rule()
    def restart(self) -> None:
        if self.state is not None:
            stored = self.state.to_json_bytes()  # what the reconciler keeps in its table
            assert json.loads(stored) == self.state.to_json()
            back = MemberState.from_json_bytes(stored)
            assert back == self.state and current_record(back) == current_record(self.state)
            assert MemberState.from_json(json.loads(stored)) == back
            self.state = back
        final, decisions = _replay(self.log)
        assert final == self.state and decisions == self.decisions

    # --- invariants ------------------------------------------------------------------------------------------
    @invariant()
    def paid_total_is_the_sum_of_unique_credited_payments(self) -> None:
        s = self.state
        if s is None:
            return
        ids = list(s.payment_event_ids)
        assert len(ids) == len(set(ids)), "a payment credited twice to one bill"
        assert ids == [c.event_id for c in s.credits]
        assert s.paid_amount_idr == sum(self.payments[i].amount_idr for i in ids)
        last = current_record(s)
        if last is not None:
            assert (last.paid_amount_idr, last.payment_event_ids) == (s.paid_amount_idr, ids)
            assert last.credit_idr == max(0, last.paid_amount_idr - last.bill_amount_idr)
            credited = [e for e in last.lineage if e.kind == "PAYMENT" and e.outcome in CREDITED_OUTCOMES]
            reversed_ = {r.payment_event_id for r in s.reversals}
            assert {e.event_id for e in credited} - reversed_ == set(ids)

    @invariant()
    def status_follows_the_money(self) -> None:
        s = self.state
        if s is None or s.bill is None:
            return
        covered = s.paid_amount_idr >= s.bill.amount_idr
        assert (s.status == MemberStatus.ACTIVE) == covered
        assert (s.coverage_start is not None) == covered

    @invariant()
    def every_payment_ends_credited_or_in_an_exception(self) -> None:
        s = self.state
        if s is None:
            return
        accounted = set(s.payment_event_ids) | {x.event_id for x in self.exceptions}
        accounted |= {x.related_event_id for x in self.exceptions if x.reason == "REVERSAL" and x.related_event_id}
        missing = set(self.payments) - accounted
        assert not missing, f"payments neither credited nor in an exception: {missing}"

    @invariant()
    def versions_strictly_increase(self) -> None:
        versions = [r.version for r in self.records]
        assert versions == list(range(1, len(versions) + 1))
        assert all(r.record_id == f"{PID}:{r.version}" for r in self.records)
        if self.state is not None:
            assert self.state.version == len(versions)

    @invariant()
    def exception_ids_are_deterministic(self) -> None:
        for x in self.exceptions:
            assert x.exception_id == event_uuid(x.reason, x.event_id)


MemberMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=30, deadline=None)
test_member_state_machine = MemberMachine.TestCase
