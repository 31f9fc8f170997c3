"""Running one batch of a stage to its end, or ending the process before its inputs are committed.

Faust's ``take_events`` acks a batch's events when the loop body is left, however it is left: after an
exception or a cancellation too (a ``finally``). Acked offsets are committed at the next commit. A batch whose
state changes were written but whose outputs were not sent would be committed, and the outputs never sent.

Two rules close that:
- a cancellation (a graceful stop, a rebalance that stops the agent) lets the batch finish, bounded by
  ``FINISH_S``, and then propagates;
- an exception (Kafka refusing a write, a bug) ends the process at once with ``EXIT_BATCH_FAILED``, before
  anything more is committed; the supervisor (or Kubernetes) restarts the worker, which redoes the batch from
  its committed offsets. Bad input never gets here: a stage dead-letters it per event.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator, Coroutine, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn, cast

import faust

from services import metrics

log = logging.getLogger(__name__)

FINISH_S = 30.0
EXIT_BATCH_FAILED = 70  # EX_SOFTWARE


async def run_to_the_end(stage: str, work: Coroutine[Any, Any, None]) -> None:
    task = asyncio.ensure_future(work)
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        if not task.done():
            try:
                await asyncio.wait_for(asyncio.shield(task), FINISH_S)
            except BaseException as exc:
                exit_now(stage, exc)
        elif not task.cancelled() and task.exception() is not None:
            exit_now(stage, task.exception())
        raise
    except Exception as exc:
        exit_now(stage, exc)


def exit_now(stage: str, exc: BaseException | None) -> NoReturn:
    # The exception's type only: its text may quote a record (personal data stays out of logs).
    log.critical(
        "stage %s: a batch failed (%s); exiting before its inputs are committed, to redo it after the restart",
        stage,
        type(exc).__name__,
    )
    for handler in logging.getLogger().handlers:
        handler.flush()  # os._exit skips the interpreter's shutdown, which would flush them
    os._exit(EXIT_BATCH_FAILED)


async def batches_of(stream: faust.StreamT, stage: str, max_events: int, within_s: float) -> AsyncIterator[list[Any]]:
    """Faust's take_events, measured: each batch's size and the time the stage waited for it (phase "take")."""
    waited_from = time.perf_counter()
    async for events in cast(Any, stream).take_events(max_events, within=within_s):  # not on faust's StreamT
        metrics.STAGE_BATCH_SECONDS.labels(stage, "take").observe(time.perf_counter() - waited_from)
        metrics.STAGE_BATCH_EVENTS.labels(stage).observe(len(events))
        yield events
        waited_from = time.perf_counter()


@contextmanager
def phase(stage: str, name: str) -> Iterator[None]:
    """Time one phase of a batch (decide, settle, emit...) into sinergi_stage_batch_seconds."""
    started = time.perf_counter()
    try:
        yield
    finally:
        metrics.STAGE_BATCH_SECONDS.labels(stage, name).observe(time.perf_counter() - started)
