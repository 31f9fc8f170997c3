"""services.batches: a batch runs to its end through a cancellation, and a failure ends the process."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import REGISTRY

from services import batches


class Exited(BaseException):
    pass


@pytest.fixture
def exits(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    codes: list[int] = []

    def fake_exit(code: int) -> None:
        codes.append(code)
        raise Exited

    monkeypatch.setattr(batches.os, "_exit", fake_exit)
    return codes


async def test_a_batch_that_ends_normally_just_returns(exits: list[int]) -> None:
    done: list[str] = []

    async def work() -> None:
        done.append("sent")

    await batches.run_to_the_end("s", work())
    assert done == ["sent"] and exits == []


async def test_a_cancelled_batch_finishes_its_outputs_before_the_cancellation_goes_on(exits: list[int]) -> None:
    started, release = asyncio.Event(), asyncio.Event()
    done: list[str] = []

    async def work() -> None:
        done.append("states written")
        started.set()
        await release.wait()  # waiting for Kafka's acknowledgement when the stop comes
        done.append("outputs sent")

    runner = asyncio.ensure_future(batches.run_to_the_end("s", work()))
    await started.wait()
    runner.cancel()
    await asyncio.sleep(0)
    assert not runner.done(), "the cancellation waits for the batch"
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await runner
    assert done == ["states written", "outputs sent"] and exits == []


async def test_a_failing_batch_ends_the_process(exits: list[int], caplog: pytest.LogCaptureFixture) -> None:
    async def work() -> None:
        raise RuntimeError("NotEnoughReplicas for 3201234567890001")

    with pytest.raises(Exited):
        await batches.run_to_the_end("reconcile", work())
    assert exits == [batches.EXIT_BATCH_FAILED]
    assert "RuntimeError" in caplog.text and "3201234567890001" not in caplog.text


async def test_a_batch_failing_while_it_finishes_after_a_cancellation_ends_the_process(exits: list[int]) -> None:
    started, release = asyncio.Event(), asyncio.Event()

    async def work() -> None:
        started.set()
        await release.wait()
        raise RuntimeError("refused")

    runner = asyncio.ensure_future(batches.run_to_the_end("s", work()))
    await started.wait()
    runner.cancel()
    await asyncio.sleep(0)
    release.set()
    with pytest.raises(Exited):
        await runner
    assert exits == [batches.EXIT_BATCH_FAILED]


def test_a_phase_is_timed_into_the_batch_histogram_even_when_it_raises() -> None:
    def count() -> float:
        value = REGISTRY.get_sample_value("sinergi_stage_batch_seconds_count", {"stage": "t", "phase": "emit"})
        return value or 0.0

    before = count()
    with batches.phase("t", "emit"):
        pass
    with pytest.raises(RuntimeError), batches.phase("t", "emit"):
        raise RuntimeError("refused")
    assert count() == before + 2
