"""notify_kbri's batch bookkeeping: a repeat inside one batch is a duplicate before its mark is written."""

from __future__ import annotations

from services.notify_kbri import MEMBER_VERSIONS_TABLE, REJECTIONS_TABLE, Batch


def test_forwarded_is_the_higher_of_the_stored_mark_and_what_the_batch_plans() -> None:
    stored = {b"p1": b"3"}
    batch = Batch()
    assert batch.forwarded(MEMBER_VERSIONS_TABLE, b"p1", stored) == 3
    assert batch.forwarded(MEMBER_VERSIONS_TABLE, b"p2", stored) == 0
    batch.note(MEMBER_VERSIONS_TABLE, b"p2", 5)
    assert batch.forwarded(MEMBER_VERSIONS_TABLE, b"p2", stored) == 5
    batch.note(MEMBER_VERSIONS_TABLE, b"p1", 4)
    assert batch.forwarded(MEMBER_VERSIONS_TABLE, b"p1", stored) == 4


def test_tables_do_not_share_marks() -> None:
    batch = Batch()
    batch.note(REJECTIONS_TABLE, b"same-key", 1)
    assert batch.forwarded(REJECTIONS_TABLE, b"same-key", {}) == 1
    assert batch.forwarded(MEMBER_VERSIONS_TABLE, b"same-key", {}) == 0
