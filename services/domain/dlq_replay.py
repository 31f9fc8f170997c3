"""Dead-letter replay, the pure part (`sinergi dlq list` / `sinergi dlq replay`; services.dlq does the Kafka side).

A dead letter (services.stage.Stage.dead_letter) is the original key, value and headers of a record a stage
could not accept, plus ``dlq-*`` headers: source topic, partition and offset, stage, reason, message, time.
A replay puts the original record back where it came from -- same topic, same partition (the reconciler's
tables are co-partitioned with their source, so another partition would not find the member), same key,
value and headers -- with one added header naming the dead letter it replays. The ``dlq-*`` headers are
dropped: they describe the failure, not the record.

The replay ledger (``dlq.replays.v1``, compacted) holds one record per replayed dead letter, keyed by the
dead letter's own coordinates (``dlq.<stage>/<partition>/<offset>``). A dead letter whose coordinates are in
the ledger is never sent again, so running a replay twice sends each dead letter once. A replayed record
that fails again is dead-lettered again under new coordinates: that is a new dead letter, replayable after
the next fix. A replay reads the dead-letter topic once, before it sends anything, so what it causes to be
dead-lettered again is never part of the same run (no loop).

Everything a command prints is a count by stage and reason: never a key, a value or a header value.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

Headers = list[tuple[str, bytes]]

DLQ_PREFIX = "dlq."
DLQ_HEADER_PREFIX = "dlq-"
REPLAY_OF = "sinergi-replay-of"  # on a replayed record: the coordinates of the dead letter it replays
H_SOURCE_TOPIC = "dlq-source-topic"
H_SOURCE_PARTITION = "dlq-source-partition"
H_SOURCE_OFFSET = "dlq-source-offset"
H_STAGE = "dlq-stage"
H_REASON = "dlq-reason"


def coordinates(topic: str, partition: int, offset: int) -> str:
    """The stable name of one dead letter: its own topic, partition and offset (the ledger key)."""
    return f"{topic}/{partition}/{offset}"


@dataclass(frozen=True)
class DeadLetter:
    topic: str  # dlq.<stage>
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...]
    stage: str
    reason: str
    source_topic: str | None  # None: the dead letter does not say where it came from (not replayable)
    source_partition: int | None
    source_offset: int | None

    @property
    def coordinates(self) -> str:
        return coordinates(self.topic, self.partition, self.offset)

    @property
    def replayable(self) -> bool:
        return bool(self.source_topic) and self.source_partition is not None and self.source_partition >= 0


def _text(headers: Mapping[str, bytes], name: str) -> str | None:
    value = headers.get(name)
    return value.decode("utf-8", "replace") if value else None


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def parse_dead_letter(
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    headers: Sequence[tuple[str, bytes]],
) -> DeadLetter:
    """A dead letter as read from ``topic``; headers keep their order (the last of a repeated name wins
    in the lookups, as in Stage.header_map)."""
    named = dict(headers)
    return DeadLetter(
        topic=topic,
        partition=partition,
        offset=offset,
        key=key,
        value=value or b"",
        headers=tuple(headers),
        stage=_text(named, H_STAGE) or topic.removeprefix(DLQ_PREFIX),
        reason=_text(named, H_REASON) or "UNKNOWN",
        source_topic=_text(named, H_SOURCE_TOPIC),
        source_partition=_int(_text(named, H_SOURCE_PARTITION)),
        source_offset=_int(_text(named, H_SOURCE_OFFSET)),
    )


def replay_headers(letter: DeadLetter) -> Headers:
    """The original record's headers (no ``dlq-*``, no earlier replay mark) plus the replay mark."""
    kept = [(k, v) for k, v in letter.headers if not k.startswith(DLQ_HEADER_PREFIX) and k != REPLAY_OF]
    return [*kept, (REPLAY_OF, letter.coordinates.encode())]


# --- the ledger ---------------------------------------------------------------------------------------------


def ledger_value(letter: DeadLetter, partition: int, offset: int, replayed_at: str) -> bytes:
    """What the ledger keeps about a replay: where the record went and when (no payload, no key)."""
    return json.dumps(
        {
            "dead_letter": letter.coordinates,
            "stage": letter.stage,
            "reason": letter.reason,
            "target_topic": letter.source_topic,
            "target_partition": partition,
            "target_offset": offset,
            "replayed_at": replayed_at,
        },
        sort_keys=True,
    ).encode()


def replayed(ledger: Iterable[tuple[bytes | None, bytes | None]]) -> set[str]:
    """Coordinates replayed so far, from the ledger's (key, value) records in offset order. A tombstone
    (empty value) forgets a replay: the way to let an operator send one dead letter again on purpose."""
    done: set[str] = set()
    for key, value in ledger:
        if not key:
            continue
        name = key.decode("utf-8", "replace")
        if value:
            done.add(name)
        else:
            done.discard(name)
    return done


# --- selection ----------------------------------------------------------------------------------------------


@dataclass
class ReplayPlan:
    to_send: list[DeadLetter] = field(default_factory=list)
    already_replayed: int = 0
    not_selected: int = 0
    unreplayable: int = 0  # no source coordinates, or a compacted source topic


def plan_replay(
    letters: Iterable[DeadLetter],
    done: set[str],
    *,
    stage: str,
    reason: str | None = None,
    compacted: Collection[str] = (),
) -> ReplayPlan:
    """The dead letters of ``stage`` (and ``reason``) not yet replayed, in DLQ order.

    A dead letter from a ``compacted`` topic is not replayed: appended now, an old record would become
    the latest of its key there (members.v1 would go back a version). Such a record is re-derived by its
    producer, not replayed.
    """
    plan = ReplayPlan()
    for letter in letters:
        if letter.stage != stage or (reason is not None and letter.reason != reason):
            plan.not_selected += 1
        elif letter.coordinates in done:
            plan.already_replayed += 1
        elif not letter.replayable or letter.source_topic in compacted:
            plan.unreplayable += 1
        else:
            plan.to_send.append(letter)
    return plan


@dataclass
class ReplaySummary:
    sent: int = 0
    failed: int = 0  # the broker did not take the replayed record: nothing recorded, a later replay sends it
    unrecorded: int = 0  # taken, but the ledger write failed: a later replay sends it again (deduplicated)
    already_replayed: int = 0
    not_selected: int = 0
    unreplayable: int = 0
    dry_run: bool = False

    @property
    def ok(self) -> bool:
        return self.failed == 0 and self.unrecorded == 0

    def line(self) -> str:
        verb = "would send" if self.dry_run else "sent"
        return (
            f"dlq replay: {verb} {self.sent}, failed {self.failed}, unrecorded {self.unrecorded}, "
            f"already replayed {self.already_replayed}, unreplayable {self.unreplayable}, "
            f"not selected {self.not_selected}"
        )


# --- listing ------------------------------------------------------------------------------------------------


def tally(letters: Iterable[DeadLetter], done: set[str], stage: str | None = None) -> list[tuple[str, str, int, int]]:
    """(stage, reason, dead letters, of which replayed), sorted; counts only, nothing of the records."""
    total: Counter[tuple[str, str]] = Counter()
    replays: Counter[tuple[str, str]] = Counter()
    for letter in letters:
        if stage is not None and letter.stage != stage:
            continue
        total[(letter.stage, letter.reason)] += 1
        if letter.coordinates in done:
            replays[(letter.stage, letter.reason)] += 1
    return [(s, r, n, replays[(s, r)]) for (s, r), n in sorted(total.items())]


def render_tally(rows: Sequence[tuple[str, str, int, int]]) -> str:
    if not rows:
        return "no dead letters\n"
    width = max(len("stage"), *(len(s) for s, *_ in rows))
    rwidth = max(len("reason"), *(len(r) for _, r, *_ in rows))
    out = [f"{'stage':<{width}}  {'reason':<{rwidth}}  {'dead':>7}  {'replayed':>8}"]
    out += [f"{s:<{width}}  {r:<{rwidth}}  {n:>7}  {done:>8}" for s, r, n, done in rows]
    return "\n".join(out) + "\n"
