"""The member story (services.domain.explain.story) from records and exceptions the reconciler produced."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from test_domain_reconcile import (
    LAPSE_AT,
    PID,
    PII,
    enroll,
    enrollment,
    lapsing,
    payment,
    reversal,
)

from services.domain.explain import story
from services.domain.models import MemberRecord, ReconciliationException
from services.domain.reconcile import Decision, MemberState, on_payment, on_reversal, on_tick


class Log:
    def __init__(self) -> None:
        self.records: list[MemberRecord] = []
        self.exceptions: list[ReconciliationException] = []

    def __call__(self, d: Decision) -> MemberState | None:
        self.records.extend(d.records)
        self.exceptions.extend(d.exceptions)
        return d.new_state


def held_partial_overpaid() -> Log:
    log = Log()
    s = log(on_payment(None, payment("P0", 100_000, minutes=-30)))
    s = log(enroll(s))
    s = log(on_payment(s, payment("P1", 300_000)))
    log(on_payment(s, payment("P2", 5_000, minutes=90)))
    return log


def test_story_tells_each_event_its_outcome_and_the_status_changes() -> None:
    log = held_partial_overpaid()
    p0, p1, p2 = (payment(n, 0).event_id for n in ("P0", "P1", "P2"))
    assert story(log.records, log.exceptions) == [
        f"member {PID}: 2 version(s), now ACTIVE",
        f"2025-08-15 09:30 WIB  exception PAYMENT_BEFORE_ENROLLMENT on {p0} (MANDIRI, Rp100,000): "
        "no enrollment for this customer number yet; payment held",
        f"2025-08-15 10:00 WIB  enrollment {enrollment().event_id} from KBRI_KUALA_LUMPUR (PLACED): "
        "bill Rp370,000 = PRE Rp37,500 + M24 Rp332,500, payable until 2025-09-14",
        "    status NEW -> AWAITING_PAYMENT (BILL_ISSUED)",
        f"2025-08-15 10:00 WIB  payment {p0} Rp100,000: PARTIAL "
        "(partial payment; Rp100,000 of Rp370,000 paid, Rp270,000 still due)",
        "    = version 1: AWAITING_PAYMENT, paid Rp100,000 of Rp370,000",
        f"2025-08-15 11:00 WIB  payment {p1} Rp300,000: OVERPAYMENT "
        "(pays beyond the bill; Rp400,000 of Rp370,000 paid, Rp30,000 credit)",
        "    status AWAITING_PAYMENT -> ACTIVE (OVERPAYMENT)",
        "    = version 2: ACTIVE, paid Rp400,000 of Rp370,000, credit Rp30,000",
        "    cover SEBELUM JKK+JKM 2025-08-15 to 2025-08-31",
        "    cover SELAMA JKK+JKM 2025-09-01 to 2027-09-30",
        "    cover SETELAH JKK+JKM 2027-10-01 to 2027-10-30",
        f"2025-08-15 11:00 WIB  exception OVERPAYMENT on {p1} (MANDIRI, Rp30,000): "
        "paid 400000 against a bill of 370000 rupiah; the excess is a credit",
        f"2025-08-15 11:30 WIB  exception PAYMENT_ON_PAID_BILL on {p2} (MANDIRI, Rp5,000): "
        "the bill is already paid; the payment was not credited",
    ]


def test_story_ignores_order_and_repeats() -> None:
    log = held_partial_overpaid()
    shuffled = list(reversed(log.records)) + log.records  # at-least-once topics deliver repeats
    assert story(shuffled, log.exceptions[::-1] * 2) == story(log.records, log.exceptions)


def test_story_holds_no_personal_data() -> None:
    log = held_partial_overpaid()
    text = "\n".join(story(log.records, log.exceptions))
    assert "Siti" not in text and "Aminah" not in text and "1987" not in text
    assert PII.decode("latin-1") not in text


def test_reversal_and_completion_by_partials() -> None:
    log = Log()
    p1 = payment("P1", 370_000)
    s = log(on_payment(enroll().new_state, p1))
    s = log(on_reversal(s, reversal("R1", p1)))
    log(on_payment(s, payment("P2", 370_000, minutes=600)))
    lines = story([enroll().records[0], *log.records], log.exceptions)
    assert lines[0] == f"member {PID}: 4 version(s), now ACTIVE"
    assert "2025-08-15 15:00 WIB  reversal R1: the bank took back Rp370,000" in lines
    assert "    status ACTIVE -> AWAITING_PAYMENT (REVERSAL)" in lines
    assert "    = version 3: AWAITING_PAYMENT, paid Rp0 of Rp370,000" in lines
    assert any(line.startswith("2025-08-15 15:00 WIB  exception REVERSAL on R1 about ") for line in lines)
    assert lines.index("    status ACTIVE -> AWAITING_PAYMENT (REVERSAL)") < lines.index(
        "    = version 4: ACTIVE, paid Rp370,000 of Rp370,000"
    )


def test_lapse_tells_the_re_registration_bill() -> None:
    s = lapsing()
    d = on_tick(s, LAPSE_AT)
    lines = story(d.records, d.exceptions)
    assert lines == [
        f"member {PID}: 1 version(s), now LAPSED_REREGISTER",
        "2025-06-10 00:00 WIB  pre-work cover ended before embarkation: re-registration bill "
        "Rp37,500 = PRE Rp37,500, payable until 2025-07-10",
        "    status NEW -> LAPSED_REREGISTER (LAPSED_REREGISTER)",
        "    = version 3: LAPSED_REREGISTER, paid Rp0 of Rp37,500",
        "    cover SEBELUM JKK+JKM 2025-01-10 to 2025-06-09",
        "    cover SELAMA JKK+JKM 2025-08-01 to 2027-08-31",
        "    cover SETELAH JKK+JKM 2027-09-01 to 2027-09-30",
    ]


def test_a_version_written_before_lineage_existed_is_still_told() -> None:
    [r] = enroll().records
    legacy = r.model_copy(update={"lineage": [], "bill_lines": []})
    assert story([legacy], []) == [
        f"member {PID}: 1 version(s), now AWAITING_PAYMENT",
        f"2025-08-15 10:00 WIB  version 1 caused by {r.caused_by_event_id}",
        "    = version 1: AWAITING_PAYMENT, paid Rp0 of Rp370,000",
    ]


def test_only_exceptions_and_nothing() -> None:
    d = on_payment(None, payment("P1", 1_000))
    lines = story([], d.exceptions)
    assert lines[0] == f"member {PID}: no member record (no enrollment)" and len(lines) == 2
    assert story([], []) == []


def test_one_participant_per_story() -> None:
    [r] = enroll().records
    other = ReconciliationException(
        exception_id="x",
        participant_id="999",
        reason="UNKNOWN_VA",
        event_id="e",
        occurred_at=datetime(2025, 8, 15, tzinfo=UTC) + timedelta(hours=1),
    )
    with pytest.raises(ValueError):
        story([r], [other])
