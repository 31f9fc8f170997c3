"""services.domain.dlq_replay (selection, headers, ledger, listing) and services.dlq.dlq_reason."""

from __future__ import annotations

import json

import pytest
from pydantic import BaseModel, ValidationError

from services.avro import DecodeError, RegistryError, UnknownSchemaError, WireFormatError
from services.dlq import (
    INVALID_RECORD,
    REGISTRY_UNAVAILABLE,
    UNDECODABLE,
    UNEXPECTED,
    UNKNOWN_SCHEMA,
    dlq_reason,
    stage_topics,
)
from services.domain.dlq_replay import (
    REPLAY_OF,
    DeadLetter,
    ReplaySummary,
    coordinates,
    ledger_value,
    parse_dead_letter,
    plan_replay,
    render_tally,
    replay_headers,
    replayed,
    tally,
)
from services.domain.errors import Rejected


def letter(
    offset: int,
    *,
    stage: str = "normalize_payments",
    reason: str = "UNKNOWN_BANK",
    source: tuple[str, int, int] | None = ("bank.payments.raw", 2, 40),
    extra: list[tuple[str, bytes]] | None = None,
) -> DeadLetter:
    headers: list[tuple[str, bytes]] = [("sinergi-event-id", b"e-1"), ("sinergi-bank", b"NEWBANK")]
    headers += extra or []
    if source is not None:
        headers += [
            ("dlq-source-topic", source[0].encode()),
            ("dlq-source-partition", str(source[1]).encode()),
            ("dlq-source-offset", str(source[2]).encode()),
        ]
    headers += [("dlq-stage", stage.encode()), ("dlq-reason", reason.encode()), ("dlq-message", b"m")]
    return parse_dead_letter(f"dlq.{stage}", 0, offset, b"key", b"{}", headers)


def test_parse_reads_the_dlq_headers() -> None:
    d = letter(7)
    assert (d.stage, d.reason, d.source_topic, d.source_partition, d.source_offset) == (
        "normalize_payments",
        "UNKNOWN_BANK",
        "bank.payments.raw",
        2,
        40,
    )
    assert d.coordinates == "dlq.normalize_payments/0/7" == coordinates("dlq.normalize_payments", 0, 7)
    assert d.replayable


def test_parse_tolerates_missing_or_garbled_headers() -> None:
    d = parse_dead_letter("dlq.reconcile", 1, 3, None, None, [("dlq-source-partition", b"x")])
    assert (d.stage, d.reason, d.source_topic, d.source_partition, d.value) == ("reconcile", "UNKNOWN", None, None, b"")
    assert not d.replayable


def test_replay_headers_keep_the_original_drop_dlq_and_name_the_dead_letter() -> None:
    d = letter(7, extra=[(REPLAY_OF, b"dlq.normalize_payments/0/1")])
    out = replay_headers(d)
    assert out == [
        ("sinergi-event-id", b"e-1"),
        ("sinergi-bank", b"NEWBANK"),
        (REPLAY_OF, b"dlq.normalize_payments/0/7"),
    ]


def test_plan_selects_stage_and_reason_and_skips_what_the_ledger_holds() -> None:
    letters = [
        letter(0),
        letter(1),
        letter(2, reason="INVALID_JSON"),
        letter(3, stage="reconcile", reason="UNKNOWN_SCHEMA"),
        letter(4, source=None),
    ]
    done = {letters[0].coordinates}
    plan = plan_replay(letters, done, stage="normalize_payments", reason="UNKNOWN_BANK")
    assert [d.offset for d in plan.to_send] == [1]
    assert (plan.already_replayed, plan.not_selected, plan.unreplayable) == (1, 2, 1)
    every_reason = plan_replay(letters, done, stage="normalize_payments")
    assert [d.offset for d in every_reason.to_send] == [1, 2]


def test_a_dead_letter_from_a_compacted_topic_is_not_replayed() -> None:
    old = letter(0, stage="core_publisher", reason="UNDECODABLE", source=("members.v1", 1, 5))
    plan = plan_replay([old], set(), stage="core_publisher", compacted={"members.v1"})
    assert plan.to_send == [] and plan.unreplayable == 1
    assert plan_replay([old], set(), stage="core_publisher").to_send == [old]


def test_a_second_plan_after_recording_sends_nothing() -> None:
    letters = [letter(n) for n in range(3)]
    first = plan_replay(letters, set(), stage="normalize_payments")
    ledger = [(d.coordinates.encode(), ledger_value(d, 2, 100 + n, "t")) for n, d in enumerate(first.to_send)]
    second = plan_replay(letters, replayed(ledger), stage="normalize_payments")
    assert len(first.to_send) == 3 and second.to_send == [] and second.already_replayed == 3


def test_a_failure_again_is_a_new_dead_letter_and_replayable() -> None:
    first = letter(0)
    again = letter(9, extra=[(REPLAY_OF, first.coordinates.encode())])  # the replay of 0, dead-lettered again
    plan = plan_replay([first, again], {first.coordinates}, stage="normalize_payments")
    assert [d.offset for d in plan.to_send] == [9]
    assert dict(replay_headers(plan.to_send[0]))[REPLAY_OF] == again.coordinates.encode()


def test_ledger_tombstone_forgets_a_replay_and_keys_are_required() -> None:
    a, b = b"dlq.reconcile/0/1", b"dlq.reconcile/0/2"
    assert replayed([(a, b"{}"), (b, b"{}"), (a, None), (None, b"{}")]) == {"dlq.reconcile/0/2"}
    assert replayed([(a, None), (a, b"{}")]) == {"dlq.reconcile/0/1"}


def test_ledger_value_names_places_not_people() -> None:
    d = letter(5)
    value = json.loads(ledger_value(d, 2, 99, "2026-12-06T00:00:00+00:00"))
    assert value == {
        "dead_letter": "dlq.normalize_payments/0/5",
        "stage": "normalize_payments",
        "reason": "UNKNOWN_BANK",
        "target_topic": "bank.payments.raw",
        "target_partition": 2,
        "target_offset": 99,
        "replayed_at": "2026-12-06T00:00:00+00:00",
    }
    assert b"key" not in ledger_value(d, 2, 99, "t")


def test_tally_counts_by_stage_and_reason_and_prints_no_record() -> None:
    letters = [letter(0), letter(1), letter(2, reason="INVALID_JSON"), letter(3, stage="reconcile", reason="X")]
    rows = tally(letters, {letters[0].coordinates})
    assert rows == [
        ("normalize_payments", "INVALID_JSON", 1, 0),
        ("normalize_payments", "UNKNOWN_BANK", 2, 1),
        ("reconcile", "X", 1, 0),
    ]
    assert tally(letters, set(), stage="reconcile") == [("reconcile", "X", 1, 0)]
    text = render_tally(rows)
    assert "UNKNOWN_BANK" in text and "NEWBANK" not in text and "e-1" not in text
    assert render_tally([]) == "no dead letters\n"


def test_summary_line_and_status() -> None:
    assert ReplaySummary(sent=2, already_replayed=1).ok
    assert not ReplaySummary(sent=2, failed=1).ok
    assert not ReplaySummary(sent=2, unrecorded=1).ok
    assert ReplaySummary(sent=3, dry_run=True).line().startswith("dlq replay: would send 3,")
    assert "sent 0," in ReplaySummary().line()


def test_stage_topics() -> None:
    assert stage_topics("reconcile") == ["dlq.reconcile"]
    assert "dlq.normalize_payments" in stage_topics(None) and "dlq.replays.v1" not in stage_topics(None)


class _M(BaseModel):
    n: int


def _validation_error() -> ValidationError:
    try:
        _M.model_validate({"n": "x"})
    except ValidationError as exc:
        return exc
    raise AssertionError("expected a ValidationError")


def _unknown_schema(status: int) -> UnknownSchemaError:
    try:
        raise UnknownSchemaError("schema id 99") from RegistryError(status, 40403, "Schema not found")
    except UnknownSchemaError as exc:
        return exc


@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        (WireFormatError("magic byte 123"), UNDECODABLE),
        (DecodeError("sinergi.Payment: EOFError"), UNDECODABLE),
        (_unknown_schema(404), UNKNOWN_SCHEMA),
        (_unknown_schema(0), REGISTRY_UNAVAILABLE),
        (_unknown_schema(503), REGISTRY_UNAVAILABLE),
        (UnknownSchemaError("no cause"), UNKNOWN_SCHEMA),
        (Rejected("INVALID_FIELD", "participant_type", "must be PLACED or PERSEORANGAN"), "INVALID_FIELD"),
        (_validation_error(), INVALID_RECORD),
        (ValueError("bad"), INVALID_RECORD),
        (KeyError("x"), UNEXPECTED),
    ],
)
def test_dlq_reason(exc: BaseException, reason: str) -> None:
    assert dlq_reason(exc) == reason
