"""A value read from a file and re-read when the file changes: secrets that rotate without a restart.

Meant for a mounted Kubernetes Secret: the file's modification time is checked at most once per
`reload_every_s` (a stat, on the request path), and the file is re-read only when that time changed. The first
read happens in the constructor, so a broken file fails start-up loudly; a later broken edit keeps the
previous value in force and is counted, so one bad edit never locks every partner out.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

from services.metrics import SECRET_RELOADS

log = logging.getLogger(__name__)

T = TypeVar("T")


class ReloadingFile(Generic[T]):
    def __init__(
        self,
        path: Path,
        load: Callable[[Path], T],
        *,
        what: str,
        errors: tuple[type[Exception], ...] = (OSError, ValueError),
        reload_every_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._path = path
        self._load = load
        self._what = what
        self._errors = errors
        self._reload_every_s = reload_every_s
        self._clock = clock
        self._lock = threading.Lock()
        self._checked_at = clock()
        self._mtime = os.stat(path).st_mtime_ns
        self._value = load(path)

    def current(self) -> T:
        """The value, re-read first if the file changed since the last check (rate-limited)."""
        now = self._clock()
        if now - self._checked_at < self._reload_every_s:
            return self._value
        with self._lock:
            if now - self._checked_at >= self._reload_every_s:
                self._checked_at = now
                self._reload()
        return self._value

    def _reload(self) -> None:
        try:
            mtime = os.stat(self._path).st_mtime_ns
            if mtime == self._mtime:
                return
            value = self._load(self._path)
        except self._errors as exc:
            SECRET_RELOADS.labels("failed").inc()
            log.error("%s not reloaded, the previous ones stay in force: %s", self._what, type(exc).__name__)
            return
        self._mtime = mtime
        self._value = value
        SECRET_RELOADS.labels("reloaded").inc()
        log.warning("%s reloaded", self._what)
