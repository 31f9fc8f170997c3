import sys
import time
from pathlib import Path

from services.config import Settings
from services.supervisor import OPTIONAL_WORKERS, WORKERS, Child, Supervisor, plan


def test_plan_starts_every_worker_and_the_embedded_registry_only_when_no_registry_is_configured() -> None:
    names = [c.name for c in plan(Settings(), simulate=True, embedded_registry=True)]
    assert names[0] == "registry"
    assert {f"worker-{w}" for w in WORKERS} <= set(names)  # every worker is on by default
    switched_off = plan(Settings(statement_reconciliation_enabled=False), simulate=False, embedded_registry=False)
    off_names = {c.name for c in switched_off}
    assert {f"worker-{w}" for w in WORKERS if w not in OPTIONAL_WORKERS} <= off_names
    assert not {f"worker-{w}" for w in OPTIONAL_WORKERS} & off_names
    assert "simulator" in names and "api-bank" in names and "api-kbri" in names
    assert "registry" not in [c.name for c in plan(Settings(), simulate=False, embedded_registry=False)]


def test_a_child_that_dies_is_restarted_with_backoff(tmp_path: Path) -> None:
    supervisor = Supervisor(Settings(data_dir=tmp_path), simulate=False)
    supervisor.log_dir.mkdir(parents=True)
    child = Child("flaky", [sys.executable, "-c", "import sys; print('bye'); sys.exit(3)"])
    supervisor.children = [child]
    supervisor.spawn(child, {})
    assert child.proc is not None
    child.proc.wait(10)

    now = time.monotonic()
    supervisor._restart_exited(now)
    assert child.proc is None and child.restarts == 1
    assert child.restart_at == now + 1.0
    supervisor._restart_exited(now + 0.5)
    assert child.proc is None  # still backing off
    supervisor._restart_exited(now + 1.0)
    assert child.proc is not None
    child.proc.wait(10)
    supervisor._restart_exited(now + 2.0)
    assert child.restarts == 2 and child.restart_at == now + 4.0
    assert (supervisor.log_dir / "flaky.log").read_text().count("bye") == 2
