"""`sinergi up`: the embedded broker (unless a cluster is configured), then every process of the hub.

Each service runs as its own OS process, exactly as it would in production (independent consumer
groups, one core each). Ctrl-C or SIGTERM stops the children first, then the broker; nothing is left
behind.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from connectors.embedded import EmbeddedBroker, free_port
from services.bank_client import ProvisionedKeys, provision_dev_bank_keys
from services.config import Settings
from services.demo_status import CoreTopicStatus, OfficeStatus
from services.reference import load_offices
from services.topics import create_topics

log = logging.getLogger(__name__)

WORKERS = (
    "normalize_enrollments",
    "normalize_payments",
    "reconcile",
    "core_publisher",
    "normalize_statements",
    "notify_kbri",
    "reconcile_statements",
)
# /metrics ports used from SINERGI_METRICS_PORT_BASE: one per worker, then the webhooks service.
METRICS_PORTS = len(WORKERS) + 1
# Workers a setting can switch off (each keeps its port slot either way).
OPTIONAL_WORKERS = {"reconcile_statements": "statement_reconciliation_enabled"}


def enabled_workers(settings: Settings) -> tuple[str, ...]:
    return tuple(w for w in WORKERS if w not in OPTIONAL_WORKERS or getattr(settings, OPTIONAL_WORKERS[w]))


BOOTSTRAP_FILE = Path("run") / "kafka.bootstrap"


def bootstrap_file(data_dir: Path) -> Path:
    """Where `sinergi up` publishes the embedded broker's address for side commands (`statements import`)."""
    return Path(data_dir) / BOOTSTRAP_FILE


def write_bootstrap_file(data_dir: Path, bootstrap: str) -> Path:
    path = bootstrap_file(data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(bootstrap + "\n", encoding="utf-8")
    tmp.replace(path)  # atomic: a reader never sees half an address
    return path


def read_bootstrap_file(data_dir: Path) -> str | None:
    try:
        text = bootstrap_file(data_dir).read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    return text or None


@dataclass
class Child:
    name: str
    argv: list[str]
    url: str | None = None
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    restart_at: float | None = None
    env: dict[str, str] = field(default_factory=dict)  # this child only (e.g. the demo's webhook secrets)


def _sinergi(*args: str) -> list[str]:
    return [sys.executable, "-m", "services", *args]


def plan(settings: Settings, simulate: bool, embedded_registry: bool) -> list[Child]:
    host = settings.http_host
    children: list[Child] = []
    if embedded_registry:
        children.append(Child("registry", _sinergi("registry"), f"http://{host}:{settings.registry_port}/subjects"))
    children += [
        Child("api-bank", _sinergi("api", "bank"), f"http://{host}:{settings.bank_api_port}/docs"),
        Child("api-kbri", _sinergi("api", "kbri"), f"http://{host}:{settings.kbri_api_port}/docs"),
    ]
    enabled = enabled_workers(settings)
    for i, worker in enumerate(WORKERS):
        if worker not in enabled:
            continue
        port = settings.metrics_port_base + i
        children.append(
            Child(
                f"worker-{worker}",
                _sinergi("worker", worker, "--metrics-port", str(port)),
                f"http://{host}:{port}/metrics",
            )
        )
    children.append(Child("core-sim", _sinergi("core-sim")))  # the BPJS core system's case desk, simulated
    port = settings.metrics_port_base + METRICS_PORTS - 1
    webhooks_argv = _sinergi("webhooks", "serve", "--metrics-port", str(port))
    children.append(Child("webhooks", webhooks_argv, f"http://{host}:{port}/metrics"))
    children.append(Child("status", _sinergi("status"), f"http://{host}:{settings.status_port}/status"))
    if simulate:
        children.append(Child("simulator", _sinergi("simulate", "--forever")))
        children.append(Child("office-sim", _sinergi("office-sim")))
    return children


def configure_demo_webhooks(settings: Settings, children: list[Child]) -> None:
    """`up --simulate`: the two simulated offices subscribe to webhooks at office-sim's receiver. Their secrets
    exist only in the environment of the webhooks and office-sim children; loopback delivery is allowed for
    the webhooks child alone, and never in production."""
    from services.office_sim import demo_subscriptions

    if settings.environment == "production":
        return
    port = settings.office_sim_port or free_port(settings.http_host)
    subscriptions = demo_subscriptions(settings, port)
    for child in children:
        if child.name == "webhooks":
            child.env.update({"SINERGI_OFFICE_WEBHOOKS": subscriptions, "SINERGI_WEBHOOKS_ALLOW_PRIVATE": "true"})
        elif child.name == "office-sim":
            child.env.update({"SINERGI_OFFICE_WEBHOOKS": subscriptions, "SINERGI_OFFICE_SIM_PORT": str(port)})


class Supervisor:
    def __init__(self, settings: Settings, simulate: bool) -> None:
        self.settings = settings
        self.simulate = simulate
        self.broker: EmbeddedBroker | None = None
        self.children: list[Child] = []
        self.log_dir = Path(settings.data_dir) / "logs"
        self.bootstrap = ""
        self.env: dict[str, str] = {}
        self.status: CoreTopicStatus | None = None
        self.bootstrap_file: Path | None = None
        self.bank_keys = ProvisionedKeys()
        self._stop = False
        # Children are spawned, killed and restarted from the main loop, a watcher thread and tests.
        self._children_lock = threading.RLock()
        self._watcher: threading.Thread | None = None

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._stop = True

    def start(self) -> None:
        """Broker (if embedded), topics, then every child process; returns once the APIs answer."""
        s = self.settings
        self.log_dir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        self.bank_keys = provision_dev_bank_keys(s, env)  # B2B token keys for the simulator, when none configured
        bootstrap = s.kafka_bootstrap
        if bootstrap is None:
            self.broker = EmbeddedBroker(log_file=self.log_dir / "broker.log").start()
            bootstrap = self.broker.bootstrap
            self.bootstrap_file = write_bootstrap_file(s.data_dir, bootstrap)
            print(f"embedded broker (Tansu)  kafka://{bootstrap}", flush=True)
        self.bootstrap = bootstrap
        env["SINERGI_KAFKA_BOOTSTRAP"] = bootstrap
        created = create_topics(bootstrap, s)
        print(f"topics: {len(created)} created", flush=True)
        embedded_registry = s.schema_registry_url is None
        if embedded_registry:
            env["SINERGI_SCHEMA_REGISTRY_URL"] = f"http://{s.http_host}:{s.registry_port}"
        self.children = plan(s, self.simulate, embedded_registry)
        if self.simulate:
            configure_demo_webhooks(s, self.children)
        for child in self.children:
            self.spawn(child, env)
            if child.name == "registry":
                _wait_http(f"http://{s.http_host}:{s.registry_port}/subjects", 30.0)
        for port in (s.bank_api_port, s.kbri_api_port):
            _wait_http(f"http://{s.http_host}:{port}/healthz", 60.0)
        self.env = env

    def spawn(self, child: Child, env: dict[str, str]) -> None:
        with self._children_lock, open(self.log_dir / f"{child.name}.log", "ab") as out:
            child.proc = subprocess.Popen(  # noqa: S603
                child.argv, env={**env, **child.env}, stdout=out, stderr=subprocess.STDOUT
            )
            child.restart_at = None

    def kill(self, name: str) -> Child:
        """SIGKILL a child and keep it down until :meth:`spawn` (fault injection): no restart in between."""
        with self._children_lock:
            child = self.child(name)
            if child.proc is not None:
                child.proc.send_signal(signal.SIGKILL)
                child.proc.wait(10)
            child.proc, child.restart_at = None, None
            return child

    def watch_children(self) -> None:
        """Restart children that exit, from a thread, for a supervisor started without :meth:`run` (tests):
        a worker that exits on purpose (a stalled rebalance) comes back as it would in production."""

        def loop() -> None:
            while not self._stop:
                self._restart_exited(time.monotonic())
                time.sleep(0.5)  # a process manager's check interval

        self._watcher = threading.Thread(target=loop, name="sinergi-supervisor-watch", daemon=True)
        self._watcher.start()

    def child(self, name: str) -> Child:
        return next(c for c in self.children if c.name == name)

    def run(self) -> int:
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGTERM, self._on_signal)
        try:
            self.start()
            self._print_urls(self.log_dir)
            if self.simulate:
                self._start_status()
            while not self._stop:
                self._restart_exited(time.monotonic())
                time.sleep(0.5)
            return 0
        finally:
            self.shutdown()

    def _start_status(self) -> None:
        registry = self.env.get("SINERGI_SCHEMA_REGISTRY_URL", self.settings.schema_registry_url)
        settings = self.settings.model_copy(update={"schema_registry_url": registry})
        webhooks = next((c for c in self.children if c.name == "webhooks"), None)
        offices = OfficeStatus(sorted(load_offices(settings.offices_file)), webhooks.url if webhooks else None)
        self.status = CoreTopicStatus(settings, self.bootstrap, offices=offices)
        self.status.start()

    def _restart_exited(self, now: float) -> None:
        """Like a process manager in production: a child that died comes back, with backoff."""
        with self._children_lock:
            self._restart_exited_locked(now)

    def _restart_exited_locked(self, now: float) -> None:
        if self._stop:
            return  # Ctrl-C reaches the whole process group: children exiting now are meant to
        for child in self.children:
            if child.proc is not None and child.proc.poll() is not None:
                delay = min(30.0, 2.0**child.restarts)
                print(
                    f"{child.name} exited with {child.proc.returncode}; restarting in {delay:.0f}s "
                    f"(see {self.log_dir}/{child.name}.log)",
                    flush=True,
                )
                child.proc, child.restart_at = None, now + delay
                child.restarts += 1
            elif child.proc is None and child.restart_at is not None and now >= child.restart_at:
                self.spawn(child, self.env)

    def _print_urls(self, log_dir: Path) -> None:
        print("\nsinergi is up:", flush=True)
        for child in self.children:
            if child.url:
                print(f"  {child.name:<30} {child.url}", flush=True)
        print(f"  logs                           {log_dir}/", flush=True)
        print("Ctrl-C stops everything.\n", flush=True)

    def shutdown(self) -> None:
        self._stop = True  # nothing is restarted from here on
        if self._watcher is not None:
            self._watcher.join(5.0)
        if self.status is not None:
            self.status.stop()
        for child in reversed(self.children):
            if child.proc is not None and child.proc.poll() is None:
                child.proc.terminate()
        deadline = time.monotonic() + 15.0
        for child in self.children:
            if child.proc is None:
                continue
            try:
                child.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.proc.kill()
                child.proc.wait(5)
        self.bank_keys.remove()
        if self.bootstrap_file is not None:  # first: no side command should find a stopping broker
            self.bootstrap_file.unlink(missing_ok=True)
            self.bootstrap_file = None
        if self.broker is not None:
            self.broker.stop()
            print("stopped.", flush=True)


def _wait_http(url: str, timeout_s: float) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1.0).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer within {timeout_s}s")


__all__ = ["Supervisor", "free_port"]
