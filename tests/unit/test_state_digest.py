"""GET /state: the per-partition digest of a worker's tables (services/worker_health.py, TableDigests).

The digest is what the crash tests compare before and after a rebuild from the changelog, so these tests pin
what makes two digests equal (same key → value pairs on the partition, whatever order they were written in)
and different (one changed value, one key more or less, a key moved between partitions), and that nothing
but counts and hashes leaves the process.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiokafka.partitioner import DefaultPartitioner, murmur2
from faust.types import TP
from test_worker_health import call, healthy

from services.domain.ledger_items import item_key
from services.reconcile_statements import BankPartitions
from services.worker_health import TableDigests, canonical_bytes, partition_digests, probe_app


def by_table(mapping: dict[bytes, int]) -> Any:
    return mapping.get


def test_order_of_writes_does_not_matter_and_every_asked_partition_is_present() -> None:
    items = [(b"a", b"1"), (b"b", b"2"), (b"c", b"3")]
    where = {b"a": 0, b"b": 0, b"c": 1}
    one = partition_digests(items, where.get, [0, 1, 2])
    other = partition_digests(list(reversed(items)), where.get, [2, 1, 0])
    assert one == other
    assert [one[p]["keys"] for p in (0, 1, 2)] == [2, 1, 0]
    assert one[2]["sha256"] == partition_digests([], where.get, [2])[2]["sha256"]  # empty, but present


def test_a_changed_value_a_missing_key_or_a_moved_key_changes_only_its_partitions() -> None:
    where = {b"a": 0, b"b": 0, b"c": 1}
    base = partition_digests([(b"a", b"1"), (b"b", b"2"), (b"c", b"3")], where.get, [0, 1])
    changed = partition_digests([(b"a", b"1"), (b"b", b"X"), (b"c", b"3")], where.get, [0, 1])
    assert changed[0] != base[0] and changed[1] == base[1]
    missing = partition_digests([(b"a", b"1"), (b"c", b"3")], where.get, [0, 1])
    assert missing[0]["keys"] == 1 and missing[0] != base[0] and missing[1] == base[1]
    moved = partition_digests([(b"a", b"1"), (b"b", b"2"), (b"c", b"3")], {**where, b"b": 1}.get, [0, 1])
    assert moved[0] != base[0] and moved[1] != base[1]


def test_keys_of_other_partitions_and_deleted_keys_are_not_state() -> None:
    where = {b"a": 0, b"b": 3, b"gone": 0}
    assert partition_digests([(b"a", b"1"), (b"b", b"2"), (b"gone", None)], where.get, [0]) == partition_digests(
        [(b"a", b"1")], where.get, [0]
    )


def test_pairs_are_length_prefixed_so_boundaries_cannot_shift() -> None:
    where: dict[bytes, int] = {b"ab": 0, b"a": 0}
    assert partition_digests([(b"ab", b"c")], where.get, [0]) != partition_digests([(b"a", b"bc")], where.get, [0])


def test_canonical_bytes_is_stable_for_raw_text_and_structures() -> None:
    assert canonical_bytes(b"\x00raw") == b"\x00raw"
    assert canonical_bytes("text") == b"text"
    assert canonical_bytes({"b": 1, "a": [2, 3]}) == canonical_bytes({"a": [2, 3], "b": 1})


# --- TableDigests on a stand-in for a Faust app (the real one runs in the integration tests) -----------------
@dataclass
class Message:
    partition: int | None


@dataclass
class Sent:
    message: Message


@dataclass
class Store:
    data: dict[Any, Any] = field(default_factory=dict)
    _key_partition: dict[Any, int] = field(default_factory=dict)

    def items(self) -> Iterator[tuple[Any, Any]]:
        return iter(self.data.items())


class Topic:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    async def send(self, **kwargs: Any) -> Sent:
        self.sent.append(kwargs)
        return Sent(Message(kwargs.get("partition")))


class Table:
    """What TableDigests uses of a faust Table: name, partitions, data, changelog topic, send_changelog."""

    def __init__(self, name: str, partitions: int = 4) -> None:
        self.name = name
        self.partitions = partitions
        self.data = Store()
        self.changelog_topic_name = f"app-{name}-changelog"
        self.changelog_topic = Topic()
        self.sent: list[tuple[int | None, Any, Any]] = []

    def send_changelog(
        self, partition: int | None, key: Any, value: Any, key_serializer: Any = None, value_serializer: Any = None
    ) -> Sent:
        self.sent.append((partition, key, value))
        return Sent(Message(partition if partition is not None else 0))

    def write(self, key: bytes, value: bytes | None, partition: int) -> None:
        """As Table.on_key_set / on_key_del do: the store, then the changelog of the event's partition."""
        if value is None:
            self.data.data.pop(key, None)
        else:
            self.data.data[key] = value
        self.send_changelog(partition, key, value)


class Assignor:
    def __init__(self) -> None:
        self.actives: set[TP] = set()

    def assigned_actives(self) -> set[TP]:
        return set(self.actives)


class App:
    def __init__(self, *tables: Table) -> None:
        self.tables = {t.name: t for t in tables}
        self.assignor = Assignor()
        self.rebalancing = False
        self.rebalancing_count = 1
        self.consumer_generation_id = 7

    def assign(self, *partitions: int) -> None:
        self.assignor.actives = {TP("input", p) for p in partitions} | {
            TP(t.changelog_topic_name, p) for t in self.tables.values() for p in partitions
        }


def test_live_writes_are_placed_by_the_partition_they_were_written_to_not_by_the_key() -> None:
    ledger = Table("ledger")
    app = App(ledger)
    digests = TableDigests(app)  # type: ignore[arg-type]
    # A ledger item key says nothing about its partition: it goes to its event's (the bank's) partition.
    key = b"ledger:BANK_A:item-1"
    by_key = (murmur2(key) & 0x7FFFFFFF) % 4
    by_event = (by_key + 1) % 4
    ledger.write(key, b"v1", partition=by_event)
    assert ledger.sent == [(by_event, key, b"v1")]  # the wrapper still sends to the changelog
    app.assign(by_event)
    status, body = digests.snapshot()
    assert status == 200 and body["generation"] == 7
    assert body["tables"]["ledger"]["partitions"][str(by_event)]["keys"] == 1
    app.assign(by_key)
    assert digests.snapshot()[1]["tables"]["ledger"]["partitions"] == {
        str(by_key): partition_digests([], by_table({}), [by_key])[by_key]
    }


def test_writes_sent_straight_to_the_changelog_topic_are_placed_too() -> None:
    members = Table("members")
    app = App(members)
    digests = TableDigests(app)  # type: ignore[arg-type]
    key = b"participant"
    by_event = ((murmur2(key) & 0x7FFFFFFF) % 4 + 2) % 4
    members.data.data[key] = b"state"  # as services/durable_table.py does: local data, then the topic itself
    asyncio.run(members.changelog_topic.send(key=key, value=b"state", partition=by_event))
    assert members.changelog_topic.sent == [{"key": key, "value": b"state", "partition": by_event}]
    assert digests.partition_of(members, key) == by_event


def test_writes_sent_as_a_batch_of_their_own_are_placed_too() -> None:
    ledger = Table("ledger")
    app = App(ledger)
    digests = TableDigests(app)  # type: ignore[arg-type]
    key = b"ledger:BANK_A:item-2"
    by_event = ((murmur2(key) & 0x7FFFFFFF) % 4 + 3) % 4
    # services/durable_table.py sends each partition's last write itself (aiokafka send_batch) and says so
    ledger.note_changelog_write(key, b"v", by_event)  # type: ignore[attr-defined]
    assert digests.partition_of(ledger, key) == by_event
    ledger.note_changelog_write(key, None, by_event)  # type: ignore[attr-defined]
    assert digests.partition_of(ledger, key) == (murmur2(key) & 0x7FFFFFFF) % 4


def test_a_table_that_knows_its_partitions_remembers_only_the_writes_that_went_elsewhere() -> None:
    ledger = Table("ledger")
    ledger.partition_of_key = BankPartitions(4)  # type: ignore[attr-defined]
    app = App(ledger)
    digests = TableDigests(app)  # type: ignore[arg-type]
    home = (murmur2(b"BANK_A") & 0x7FFFFFFF) % 4
    at_home, elsewhere = item_key("BANK_A", "settled", "p1").encode(), item_key("BANK_A", "settled", "p2").encode()
    ledger.write(at_home, b"v", partition=home)
    ledger.note_changelog_write(elsewhere, b"v", (home + 1) % 4)  # type: ignore[attr-defined]
    assert digests._written["ledger"] == {elsewhere: (home + 1) % 4}  # one note, not one per item
    assert digests.partition_of(ledger, at_home) == home
    assert digests.partition_of(ledger, elsewhere) == (home + 1) % 4  # where it really went wins
    ledger.note_changelog_write(elsewhere, b"v2", home)  # type: ignore[attr-defined]
    assert digests._written["ledger"] == {} and digests.partition_of(ledger, elsewhere) == home
    app.assign(home)
    assert digests.snapshot()[1]["tables"]["ledger"]["partitions"][str(home)]["keys"] == 1
    # Recovered from another partition, then written at home: the note is what tells that it moved.
    moved = item_key("BANK_A", "settled", "p3").encode()
    ledger.data._key_partition[moved] = (home + 2) % 4
    assert digests.partition_of(ledger, moved) == (home + 2) % 4
    ledger.write(moved, b"v", partition=home)
    assert digests.partition_of(ledger, moved) == home


def test_a_ledger_item_belongs_to_its_banks_partition_as_the_producer_places_the_banks_inputs() -> None:
    partitioner = DefaultPartitioner()
    of_key = BankPartitions(6)
    for bank in ("MANDIRI", "BNI", "MAYBANK_MY", "B"):
        key = item_key(bank, "seen_events", "e-1").encode()
        assert of_key(key) == partitioner(bank.encode(), list(range(6)), list(range(6)))
    assert of_key(b"no separator") is None


def test_recovered_keys_use_the_stores_own_partition_and_unknown_keys_the_default_partitioner() -> None:
    members = Table("members")
    app = App(members)
    digests = TableDigests(app)  # type: ignore[arg-type]
    members.data.data[b"recovered"] = b"x"
    members.data._key_partition[b"recovered"] = 2
    members.data.data[b"never-placed"] = b"y"
    assert digests.partition_of(members, b"recovered") == 2
    assert digests.partition_of(members, b"never-placed") == (murmur2(b"never-placed") & 0x7FFFFFFF) % 4


def test_the_same_state_written_live_and_rebuilt_from_the_changelog_digests_equal() -> None:
    live_table, rebuilt_table = Table("members"), Table("members")
    live, rebuilt = App(live_table), App(rebuilt_table)
    live_digests, rebuilt_digests = TableDigests(live), TableDigests(rebuilt)  # type: ignore[arg-type]
    live.assign(0, 1)
    rebuilt.assign(0, 1)
    live_table.write(b"k1", b"old", 0)
    live_table.write(b"k2", b"v", 1)
    live_table.write(b"k1", b"new", 0)
    live_table.write(b"k3", b"tmp", 1)
    live_table.write(b"k3", None, 1)
    live_table.data.data[b"standby"] = b"z"  # a standby replica's key: held, not this worker's state
    live_table.data._key_partition[b"standby"] = 3
    # The rebuild: the changelog replayed in order into an empty store, as Store.apply_changelog_batch does.
    for partition, key, value in live_table.sent:
        rebuilt_table.data._key_partition[key] = partition or 0
        if value is None:
            rebuilt_table.data.data.pop(key, None)
        else:
            rebuilt_table.data.data[key] = value
    assert live_digests.snapshot() == rebuilt_digests.snapshot()
    rebuilt_table.data.data[b"k2"] = b"drifted"
    assert live_digests.snapshot() != rebuilt_digests.snapshot()


def test_no_digest_while_rebalancing_or_before_the_first_assignment() -> None:
    app = App(Table("members"))
    digests = TableDigests(app)  # type: ignore[arg-type]
    app.rebalancing_count = 0
    assert digests.snapshot()[0] == 503
    app.rebalancing_count, app.rebalancing = 1, True
    assert digests.snapshot() == (503, {"ready": False, "reason": "REBALANCING"})


@pytest.fixture
def loop_thread() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield loop
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    loop.close()


def test_state_path_answers_counts_and_hashes_only(loop_thread: asyncio.AbstractEventLoop) -> None:
    members = Table("members")
    app = App(members)
    digests = TableDigests(app)  # type: ignore[arg-type]
    app.assign(0, 1, 2, 3)
    secret_key, secret_value = b"participant-key-0001", b'{"nik_hash":"do-not-leak"}'
    members.write(secret_key, secret_value, (murmur2(secret_key) & 0x7FFFFFFF) % 4)
    health, _ = healthy("unit_state")
    app_wsgi = probe_app(health)
    status, _, body = call(app_wsgi, "/state")
    assert status.startswith("404")  # no Faust tables installed on this worker (yet)

    health.state_source = digests.serve_from(loop_thread)
    status, headers, body = call(app_wsgi, "/state")
    assert status.startswith("200") and headers["Content-Type"] == "application/json"
    doc = json.loads(body)
    assert sum(p["keys"] for p in doc["tables"]["members"]["partitions"].values()) == 1
    assert secret_key not in body and b"do-not-leak" not in body


def test_a_busy_loop_is_a_503_not_a_hang(loop_thread: asyncio.AbstractEventLoop, monkeypatch: Any) -> None:
    import services.worker_health as wh

    monkeypatch.setattr(wh, "STATE_TIMEOUT_S", 0.2)
    app = App(Table("members"))
    digests = TableDigests(app)  # type: ignore[arg-type]
    release = threading.Event()
    loop_thread.call_soon_threadsafe(release.wait, 5.0)  # the loop is stuck in one long callback
    try:
        assert digests.serve_from(loop_thread)() == (503, {"ready": False, "reason": "BUSY"})
    finally:
        release.set()


# --- recovery reads a changelog to its real end (services/app.py), what makes the rebuilt digests equal -------
class FetchedHighwaters:
    def __init__(self, fetched: dict[TP, int]) -> None:
        self.fetched = fetched

    def highwater(self, tp: TP) -> int:
        return self.fetched[tp]  # KeyError: not assigned, as aiokafka refuses


def test_recovery_waits_for_the_fetched_highwater_when_the_listed_end_is_short() -> None:
    from collections import Counter
    from types import SimpleNamespace

    from faust.tables.recovery import Recovery

    from services.app import _patch_recovery_highwaters

    _patch_recovery_highwaters()
    short, exact, unfetched = TP("c", 0), TP("c", 1), TP("c", 2)
    # Tansu listed the last batch's end as its base offset + 1 (Faust keeps end - 1): 4, but a fetch says 10.
    recovery: Any = SimpleNamespace(
        app=SimpleNamespace(consumer=FetchedHighwaters({short: 10, exact: 3})),
        active_highwaters=Counter({short: 4, exact: 7, unfetched: 2}),
        active_offsets=Counter({short: 4, exact: 7, unfetched: 1}),
    )
    remaining = Recovery.active_remaining(recovery)
    assert remaining == Counter({short: 5, exact: 0, unfetched: 1})  # a lower fetched value never shrinks it
    assert recovery.active_highwaters[short] == 9
