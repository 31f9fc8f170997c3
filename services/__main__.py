"""The `sinergi` command line and composition root."""

from __future__ import annotations

import logging
import sys

import click

from services import logs
from services.config import Settings, get_settings

log = logging.getLogger("sinergi")


def _settings() -> Settings:
    settings = get_settings()
    settings.check_production_safety()
    logs.configure(settings.log_level, settings.log_json)
    return settings


def _bootstrap(settings: Settings) -> str:
    if settings.kafka_bootstrap is None:
        raise click.UsageError("SINERGI_KAFKA_BOOTSTRAP is not set (use `sinergi up` for the embedded broker)")
    return settings.kafka_bootstrap


@click.group()
def cli() -> None:
    """sinergi: the hub between KBRI offices, partner banks and BPJS Ketenagakerjaan."""


@cli.command()
@click.option("--simulate/--no-simulate", default=False, help="also run the traffic simulator")
def up(simulate: bool) -> None:
    """Start everything: broker (embedded unless configured), registry, APIs, processors."""
    from services.supervisor import Supervisor

    sys.exit(Supervisor(_settings(), simulate).run())


@cli.command()
@click.argument(
    "service", type=click.Choice(["normalize_enrollments", "normalize_payments", "reconcile", "core_publisher"])
)
@click.option("--metrics-port", type=int, default=None, help="serve /metrics on this port")
def worker(service: str, metrics_port: int | None) -> None:
    """Run one stream processor alone."""
    from services.worker import run_worker

    settings = _settings()
    run_worker(service, settings, _bootstrap(settings), metrics_port)


@cli.command()
@click.argument("which", type=click.Choice(["bank", "kbri"]))
def api(which: str) -> None:
    """Serve a partner API (bank: SNAP biller; kbri: office intake)."""
    from connectors.serve import serve_api

    settings = _settings()
    serve_api(which, settings, _bootstrap(settings))


@cli.command()
def registry() -> None:
    """Serve the embedded schema registry (Confluent REST subset)."""
    from connectors.serve import serve_registry

    serve_registry(_settings())


@cli.command()
@click.option("--forever", is_flag=True, help="keep sending until stopped")
@click.option("--members", type=int, default=50, help="workers to enroll per round")
@click.option("--rate", type=float, default=20.0, help="requests per second")
@click.option("--seed", type=int, default=None)
def simulate(forever: bool, members: int, rate: float, seed: int | None) -> None:
    """Send realistic traffic through the public HTTP APIs."""
    from services.simulator import run_simulator

    sys.exit(run_simulator(_settings(), forever=forever, members=members, rate=rate, seed=seed))


@cli.group()
def topics() -> None:
    """Topic administration."""


@topics.command("create")
def topics_create() -> None:
    """Create every catalogue topic that is missing (idempotent)."""
    from services.topics import create_topics

    settings = _settings()
    created = create_topics(_bootstrap(settings), settings)
    click.echo(f"created {len(created)} topic(s): {', '.join(created) or '-'}")


@topics.command("list")
def topics_list() -> None:
    """Print the topic catalogue."""
    from services.catalogue import ALL_TOPICS

    settings = get_settings()
    for spec in ALL_TOPICS:
        parts = spec.partitions or settings.kafka_partitions
        click.echo(f"{spec.name:<32} {parts:>3}p  {spec.config()['cleanup.policy']:<8} key: {spec.key}")


@cli.command()
@click.option("--events", type=int, default=20000)
def bench(events: int) -> None:
    """End-to-end throughput and latency against a raw aiokafka baseline, same broker, same run."""
    from services.bench import run_bench

    sys.exit(run_bench(_settings(), events))


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
