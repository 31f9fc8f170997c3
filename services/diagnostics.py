"""The stack of every asyncio task of every event loop of the process, for a worker about to give up.

A worker that hangs in a rebalance waits in a coroutine, so a thread profiler shows every thread idle in
`select`; mode's SIGUSR1 dump covers the main loop only, while Faust runs the Kafka consumer (the group
coordinator: joins, heartbeats, rebalance callbacks) on a second loop in its own thread. Each task's
await chain is followed to the innermost coroutine (Task.print_stack stops at the outermost frame). The
dump holds code locations only, never values.
"""

from __future__ import annotations

import asyncio
import gc
import io
from collections.abc import Iterator
from types import FrameType
from typing import Any


def _await_chain(coro: Any) -> Iterator[FrameType]:
    seen = 0
    while coro is not None and seen < 40:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None) or getattr(coro, "ag_frame", None)
        if frame is not None:
            yield frame
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None) or getattr(coro, "ag_await", None)
        seen += 1


def dump_tasks() -> str:
    out = io.StringIO()
    loops = [o for o in gc.get_objects() if isinstance(o, asyncio.AbstractEventLoop) and not o.is_closed()]
    for n, loop in enumerate(loops):
        try:
            tasks = list(asyncio.all_tasks(loop))
        except RuntimeError:  # another thread's loop changed its task set while we copied it
            out.write(f"--- event loop {n}: busy, skipped\n")
            continue
        out.write(f"--- event loop {n} (running={loop.is_running()}): {len(tasks)} tasks\n")
        for task in tasks:
            out.write(f"task {task.get_name()}\n")
            for frame in _await_chain(task.get_coro()):
                out.write(f"    {frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}\n")
    return out.getvalue()
