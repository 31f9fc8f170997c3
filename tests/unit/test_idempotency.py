"""The X-EXTERNAL-ID store (connectors.bank.idempotency): replay, conflict, single-flight, bounds."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import date

import pytest
from prometheus_client import REGISTRY

from connectors.bank.idempotency import ExternalIdConflict, IdempotencyKey, IdempotencyStore, StoredResponse

DAY = date(2025, 9, 1)
NEXT_DAY = date(2025, 9, 2)
OK = StoredResponse(200, b'{"responseCode":"2002500"}')
BAD = StoredResponse(400, b'{"responseCode":"4002501"}', reason="AMOUNT_FORMAT")
DOWN = StoredResponse(503, b'{"responseCode":"5002502"}', (("Retry-After", "5"),), "BROKER_UNAVAILABLE")
ENDPOINT = "unit_test"


def key(external_id: str = "1", day: date = DAY, bank: str = "MANDIRI") -> IdempotencyKey:
    return IdempotencyKey(bank, external_id, day)


def replays(outcome: str) -> float:
    labels = {"api": "bank", "endpoint": ENDPOINT, "outcome": outcome}
    return REGISTRY.get_sample_value("sinergi_idempotent_replays_total", labels) or 0.0


class Work:
    """A work function that records its calls and answers `response`."""

    def __init__(self, response: StoredResponse = OK) -> None:
        self.calls = 0
        self.response = response

    async def __call__(self) -> StoredResponse:
        self.calls += 1
        return self.response


class GatedWork(Work):
    """Does not finish until `gate` is set: the first request of a burst stays in flight."""

    def __init__(self, response: StoredResponse = OK) -> None:
        super().__init__(response)
        self.gate = asyncio.Event()

    async def __call__(self) -> StoredResponse:
        self.calls += 1
        await self.gate.wait()
        return self.response


async def until(condition: Callable[[], bool], deadline_s: float = 5.0) -> None:
    """Poll with a deadline (the other tasks run while this one waits)."""
    end = time.monotonic() + deadline_s
    while not condition():
        if time.monotonic() > end:
            raise AssertionError("condition not met before the deadline")
        await asyncio.sleep(0.001)


def store(max_entries: int = 100) -> IdempotencyStore:
    return IdempotencyStore(max_entries, api="bank", endpoint=ENDPOINT)


async def test_first_request_does_the_work_then_replays() -> None:
    s, work = store(), Work()
    before = replays("replayed")
    first = await s.run(key(), "fp", work)
    again = await s.run(key(), "fp", work)
    assert (first.response, first.replayed) == (OK, False)
    assert again.response is first.response
    assert again.replayed
    assert work.calls == 1
    assert replays("replayed") == before + 1


async def test_same_key_other_body_conflicts_and_keeps_the_first_outcome() -> None:
    s, work = store(), Work()
    await s.run(key(), "fp", work)
    before = replays("conflict")
    with pytest.raises(ExternalIdConflict):
        await s.run(key(), "other", work)
    assert replays("conflict") == before + 1
    assert (await s.run(key(), "fp", work)).response == OK
    assert work.calls == 1


async def test_keys_are_per_bank_and_per_external_id() -> None:
    s, work = store(), Work()
    await s.run(key("1"), "fp", work)
    assert not (await s.run(key("2"), "other", work)).replayed
    assert not (await s.run(key("1", bank="BNI"), "other", work)).replayed
    assert work.calls == 3


async def test_domain_refusal_is_stored_server_error_is_not() -> None:
    s = store()
    bad = Work(BAD)
    await s.run(key("1"), "fp", bad)
    assert (await s.run(key("1"), "fp", bad)).replayed
    assert bad.calls == 1

    down = Work(DOWN)
    assert (await s.run(key("2"), "fp", down)).response == DOWN
    down.response = OK  # the broker is back: the retry must be processed again
    retried = await s.run(key("2"), "fp", down)
    assert (retried.response, retried.replayed) == (OK, False)
    assert down.calls == 2
    assert len(s) == 2


async def test_concurrent_identical_requests_are_single_flight() -> None:
    s, work = store(), GatedWork()
    tasks = [asyncio.create_task(s.run(key(), "fp", work)) for _ in range(50)]
    await until(lambda: s.waiting(key()) == 49)
    assert work.calls == 1
    assert not any(t.done() for t in tasks)
    work.gate.set()
    served = await asyncio.gather(*tasks)
    assert work.calls == 1
    assert all(r.response is OK for r in served)
    assert sum(not r.replayed for r in served) == 1
    assert s.waiting(key()) == 0


async def test_waiters_share_a_503_and_the_next_retry_is_processed() -> None:
    s, work = store(), GatedWork(DOWN)
    tasks = [asyncio.create_task(s.run(key(), "fp", work)) for _ in range(5)]
    await until(lambda: s.waiting(key()) == 4)
    work.gate.set()
    assert all(r.response == DOWN for r in await asyncio.gather(*tasks))
    assert work.calls == 1  # one broker attempt for the burst, not five
    assert len(s) == 0
    work.response = OK
    assert not (await s.run(key(), "fp", work)).replayed
    assert work.calls == 2


async def test_other_body_while_in_flight_conflicts_at_once() -> None:
    s, work = store(), GatedWork()
    leader = asyncio.create_task(s.run(key(), "fp", work))
    await until(lambda: work.calls == 1)
    with pytest.raises(ExternalIdConflict):
        await s.run(key(), "other", work)
    work.gate.set()
    assert (await leader).response == OK


async def test_leader_cancelled_a_waiter_takes_over() -> None:
    s, work = store(), GatedWork()
    leader = asyncio.create_task(s.run(key(), "fp", work))
    await until(lambda: work.calls == 1)
    waiter = asyncio.create_task(s.run(key(), "fp", work))
    await until(lambda: s.waiting(key()) == 1)
    leader.cancel()
    await until(lambda: work.calls == 2)  # the waiter became the leader and does the work itself
    work.gate.set()
    served = await waiter
    assert (served.response, served.replayed) == (OK, False)
    assert (await asyncio.gather(leader, return_exceptions=True))[0].__class__ is asyncio.CancelledError


async def test_failing_work_leaves_nothing_behind() -> None:
    s = store()

    async def boom() -> StoredResponse:
        raise RuntimeError("bug")

    with pytest.raises(RuntimeError):
        await s.run(key(), "fp", boom)
    assert len(s) == 0
    assert not (await s.run(key(), "fp", Work())).replayed


async def test_next_wib_day_is_a_new_request_and_drops_the_past_day() -> None:
    s, work = store(), Work()
    await s.run(key("1", DAY), "fp", work)
    await s.run(key("2", DAY), "fp", work)
    served = await s.run(key("1", NEXT_DAY), "other", work)  # same id, next day: neither replay nor conflict
    assert not served.replayed
    assert work.calls == 3
    assert len(s) == 1  # both entries of the past day are gone


async def test_late_request_of_the_past_day_is_not_kept() -> None:
    s, work = store(), Work()
    await s.run(key("1", NEXT_DAY), "fp", work)
    await s.run(key("9", DAY), "fp", work)  # received before midnight, looked up after
    assert len(s) == 1
    assert not (await s.run(key("9", DAY), "fp", work)).replayed


async def test_bounded_oldest_evicted() -> None:
    s, work = store(max_entries=3), Work()
    for n in range(5):
        await s.run(key(str(n)), "fp", work)
    assert len(s) == 3
    assert (await s.run(key("4"), "fp", work)).replayed
    assert not (await s.run(key("0"), "fp", work)).replayed  # evicted: done again
    assert work.calls == 6


def test_max_entries_must_be_positive() -> None:
    with pytest.raises(ValueError):
        IdempotencyStore(0, api="bank", endpoint=ENDPOINT)
