"""services.dlq.run_replay / replay_command / list_command with the Kafka side replaced by fakes:
where a replay goes, that only what the broker took is recorded, and the exit statuses."""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import KafkaException

from services import dlq as dlq_module
from services.config import Settings
from services.domain.dlq_replay import REPLAY_OF, DeadLetter, parse_dead_letter


def _letter(offset: int, reason: str = "UNKNOWN_SCHEMA", source_partition: int = 3) -> DeadLetter:
    return parse_dead_letter(
        "dlq.reconcile",
        0,
        offset,
        f"k{offset}".encode(),
        f"v{offset}".encode(),
        [
            ("sinergi-event-id", f"e{offset}".encode()),
            ("dlq-source-topic", b"payments.v1"),
            ("dlq-source-partition", str(source_partition).encode()),
            ("dlq-source-offset", str(100 + offset).encode()),
            ("dlq-stage", b"reconcile"),
            ("dlq-reason", reason.encode()),
        ],
    )


class FakeSender:
    def __init__(self, refuse: set[str]) -> None:
        self.refuse = refuse  # topics or keys (decoded) whose sends the "broker" refuses
        self.sent: list[tuple[str, bytes | None, bytes, list[tuple[str, bytes]], int]] = []
        self._pending: list[tuple[Any, str, bytes | None]] = []

    def send(
        self, topic: str, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]], partition: int = -1
    ) -> Any:
        delivery = dlq_module._Delivery()
        self._pending.append((delivery, topic, key))
        self.sent.append((topic, key, value, headers, partition))
        return delivery

    def flush(self) -> int:
        for delivery, topic, key in self._pending:
            delivery.done = True
            if topic in self.refuse or (key or b"").decode() in self.refuse:
                delivery.error = "_MSG_TIMED_OUT"
            else:
                delivery.partition, delivery.offset = 3, 500
        self._pending.clear()
        return 0


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    state: dict[str, Any] = {"letters": [_letter(0), _letter(1), _letter(2, reason="UNDECODABLE")], "ledger": set()}
    state["sender"] = FakeSender(set())
    monkeypatch.setattr(dlq_module, "read_dead_letters", lambda _b, _t, timeout_s=0: state["letters"])
    monkeypatch.setattr(dlq_module, "read_ledger", lambda _b, timeout_s=0: set(state["ledger"]))
    monkeypatch.setattr(dlq_module, "_Sender", lambda _b, _s: state["sender"])
    monkeypatch.setattr("services.topics.create_topics", lambda *a, **k: [])
    return state


def test_replay_goes_to_the_source_partition_then_the_ledger(world: dict[str, Any]) -> None:
    summary = dlq_module.run_replay(Settings(), "b:1", stage="reconcile", reason="UNKNOWN_SCHEMA")
    assert (summary.sent, summary.failed, summary.unrecorded, summary.not_selected) == (2, 0, 0, 1)
    sent = world["sender"].sent
    replays = [s for s in sent if s[0] == "payments.v1"]
    ledger = [s for s in sent if s[0] == "dlq.replays.v1"]
    assert [(k, v, p) for _, k, v, _, p in replays] == [(b"k0", b"v0", 3), (b"k1", b"v1", 3)]
    assert dict(replays[0][3]) == {"sinergi-event-id": b"e0", REPLAY_OF: b"dlq.reconcile/0/0"}
    assert [k for _, k, *_ in ledger] == [b"dlq.reconcile/0/0", b"dlq.reconcile/0/1"]
    assert sent.index(ledger[0]) > sent.index(replays[-1])  # recorded only after the broker took them


def test_a_refused_replay_is_not_recorded(world: dict[str, Any]) -> None:
    world["sender"].refuse = {"k1"}
    summary = dlq_module.run_replay(Settings(), "b:1", stage="reconcile", reason="UNKNOWN_SCHEMA")
    assert (summary.sent, summary.failed) == (1, 1) and not summary.ok
    ledger = [k for t, k, *_ in world["sender"].sent if t == "dlq.replays.v1"]
    assert ledger == [b"dlq.reconcile/0/0"]


def test_a_ledger_write_that_fails_is_reported(world: dict[str, Any]) -> None:
    world["sender"].refuse = {"dlq.replays.v1"}
    summary = dlq_module.run_replay(Settings(), "b:1", stage="reconcile")
    assert (summary.sent, summary.unrecorded) == (3, 3) and not summary.ok


def test_dry_run_and_already_replayed_send_nothing(world: dict[str, Any]) -> None:
    world["ledger"] = {"dlq.reconcile/0/0"}
    dry = dlq_module.run_replay(Settings(), "b:1", stage="reconcile", dry_run=True)
    assert (dry.sent, dry.already_replayed) == (2, 1) and world["sender"].sent == []
    world["ledger"] = {"dlq.reconcile/0/0", "dlq.reconcile/0/1", "dlq.reconcile/0/2"}
    done = dlq_module.run_replay(Settings(), "b:1", stage="reconcile")
    assert (done.sent, done.already_replayed) == (0, 3) and world["sender"].sent == []


def test_exit_statuses(world: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    lines: list[str] = []
    assert (
        dlq_module.replay_command(Settings(), "b:1", stage="reconcile", reason=None, dry_run=False, echo=lines.append)
        == 0
    )
    assert lines[-1].startswith("dlq replay: sent 3,")
    world["ledger"] = set()
    world["sender"] = FakeSender({"payments.v1"})
    assert (
        dlq_module.replay_command(Settings(), "b:1", stage="reconcile", reason=None, dry_run=False, echo=lines.append)
        == 1
    )

    def unreachable(*_a: Any, **_k: Any) -> Any:
        raise KafkaException("no progress within 20s")

    monkeypatch.setattr(dlq_module, "read_dead_letters", unreachable)
    assert (
        dlq_module.replay_command(Settings(), "b:1", stage="reconcile", reason=None, dry_run=True, echo=lines.append)
        == 69
    )
    assert dlq_module.list_command("b:1", None, echo=lines.append) == 69


def test_list_prints_counts(world: dict[str, Any]) -> None:
    world["ledger"] = {"dlq.reconcile/0/0"}
    lines: list[str] = []
    assert dlq_module.list_command("b:1", "reconcile", echo=lines.append) == 0
    text = "\n".join(lines)
    assert "UNKNOWN_SCHEMA" in text and "UNDECODABLE" in text
    assert "k0" not in text and "e0" not in text
