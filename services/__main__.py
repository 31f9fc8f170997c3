"""The `sinergi` command line and composition root."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from services import logs
from services.catalogue import STAGES
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
    "service",
    type=click.Choice(
        [
            "normalize_enrollments",
            "normalize_payments",
            "reconcile",
            "core_publisher",
            "normalize_statements",
            "notify_kbri",
            "reconcile_statements",
        ]
    ),
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


@cli.command("core-sim")
def core_sim() -> None:
    """A stand-in for the BPJS core system (demo): answers every case on kbri.cases.v1 (RECEIVED, ANSWERED)."""
    from services.core_sim import run_core_sim

    settings = _settings()
    run_core_sim(settings, _bootstrap(settings))


@cli.group()
def webhooks() -> None:
    """Office webhooks: the delivery service and the replay of its dead letters."""


@webhooks.command("serve")
@click.option("--metrics-port", type=int, default=None, help="serve /metrics on this port")
def webhooks_serve(metrics_port: int | None) -> None:
    """Deliver every office topic to the offices' webhook subscriptions (SINERGI_OFFICE_WEBHOOKS)."""
    from connectors.kbri.webhook_service import serve

    settings = _settings()
    sys.exit(serve(settings, _bootstrap(settings), metrics_port))


@webhooks.command("replay")
@click.option("--office", default=None, help="only this office's dead letters")
@click.option("--since", default=None, help="only those failed since: 90m, 6h, 2d or an ISO date/time (UTC default)")
@click.option("--attempts", type=click.IntRange(1, 100), default=3, show_default=True, help="attempts per update")
def webhooks_replay(office: str | None, since: str | None, attempts: int) -> None:
    """Send dead-lettered webhooks again (same webhook-id); exit status 1 if any still failed.

    Skips dead letters a replay already delivered and those whose member has a newer version on its office
    topic. Uses SINERGI_KAFKA_BOOTSTRAP or, when unset, the broker of a running `sinergi up`.
    """
    import asyncio
    import time

    from connectors.kbri.webhook_service import parse_since, run_replay
    from services.reference import load_offices
    from services.supervisor import read_bootstrap_file

    settings = _settings()
    if office is not None and office not in load_offices(settings.offices_file):
        raise click.BadParameter("not an office in the registry", param_hint="--office")
    try:
        since_unix = parse_since(since, time.time()) if since else None
    except ValueError:
        raise click.BadParameter("a duration like 90m, 6h, 2d or an ISO date/time", param_hint="--since") from None
    bootstrap = settings.kafka_bootstrap or read_bootstrap_file(settings.data_dir)
    if bootstrap is None:
        raise click.UsageError("no broker: set SINERGI_KAFKA_BOOTSTRAP or start `sinergi up`")
    summary = asyncio.run(run_replay(settings, bootstrap, office=office, since=since_unix, attempts=attempts))
    click.echo(summary.line())
    sys.exit(1 if summary.failed else 0)


@cli.command()
def status() -> None:
    """Serve the hub's status page (GET /status, /status.json) on SINERGI_STATUS_PORT, scraping every process."""
    from services.status_page import serve_status

    serve_status(_settings())


@cli.command("office-sim")
def office_sim() -> None:
    """The demo's embassy systems: a verifying webhook receiver and a pull-feed reader for two offices."""
    from services.office_sim import run_office_sim

    sys.exit(run_office_sim(_settings()))


@cli.command()
def registry() -> None:
    """Serve the embedded schema registry (Confluent REST subset)."""
    from connectors.serve import serve_registry

    serve_registry(_settings())


@cli.command()
@click.option("--rate", type=float, envvar="SINERGI_SOAK_RATE", default=50.0, show_default=True, help="events/s")
@click.option("--seconds", type=float, envvar="SINERGI_SOAK_SECONDS", default=60.0, show_default=True)
@click.option("--sample-s", type=float, envvar="SINERGI_SOAK_SAMPLE_S", default=5.0, show_default=True)
@click.option("--seed", type=int, envvar="SINERGI_TEST_SEED", default=None, help="default: random, printed")
def soak(rate: float, seconds: float, sample_s: float, seed: int | None) -> None:
    """Start a hub, load it at RATE raw events/s for SECONDS, judge its memory and lag, verify; exit 1 on failure."""
    import random

    from services.soak import SoakConfig, soak_command

    seed = seed if seed is not None else random.SystemRandom().randrange(1 << 31)
    sys.exit(soak_command(_settings(), SoakConfig(rate=rate, seconds=seconds, sample_s=sample_s, seed=seed)))


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
def offices() -> None:
    """Representation offices: credentials."""


@offices.command("issue-key")
@click.argument("office")
def offices_issue_key(office: str) -> None:
    """Print a new API key for OFFICE and the hash line to add to SINERGI_OFFICE_CREDENTIALS_FILE.

    Hand the key to the office over a secure channel once; the hub stores only the hash. Keep the old
    hash beside the new one until the office has switched, then remove it.
    """
    from connectors.kbri.auth import new_key
    from services.reference import load_offices

    known = load_offices(get_settings().offices_file)
    if office not in known:
        raise click.BadParameter(f"not an office in the registry: {office}", param_hint="OFFICE")
    key, hashed = new_key(office)
    click.echo(f"key (give to {office}, shown once): {key}")
    click.echo(f'hash (add under "{office}" in the credentials file): {hashed}')


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
    from services.topics import catalogue

    settings = get_settings()
    for spec in catalogue(settings):
        parts = spec.partitions or settings.kafka_partitions
        click.echo(f"{spec.name:<32} {parts:>3}p  {spec.config()['cleanup.policy']:<8} key: {spec.key}")


@cli.group()
def statements() -> None:
    """Bank statement files."""


@statements.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--bank", "bank_id", required=True, help="partner bank id (banks.json), e.g. BNI")
@click.option("--account-no", default=None, help="statement account, when the file does not carry it")
@click.option("--dry-run", is_flag=True, help="parse and report only; produce nothing")
def statements_import(file: Path, bank_id: str, account_no: str | None, dry_run: bool) -> None:
    """Import a statement file (MT940, camt.053/054, SNAP JSON, CSV) exactly like an upload by the bank.

    Produces to SINERGI_KAFKA_BOOTSTRAP or, when unset, to the broker of a running `sinergi up`.
    Exit status: 0; 65 the file was refused as a whole; 69 Kafka did not acknowledge (import again).
    """
    from connectors.statement_ingest import import_file
    from services.reference import load_banks
    from services.supervisor import read_bootstrap_file

    settings = _settings()
    if bank_id not in load_banks(settings.banks_file):
        raise click.BadParameter("not a bank of the partner registry", param_hint="--bank")
    bootstrap = settings.kafka_bootstrap or read_bootstrap_file(settings.data_dir)
    if bootstrap is None and not dry_run:
        raise click.UsageError("no broker: set SINERGI_KAFKA_BOOTSTRAP or start `sinergi up`")
    code = import_file(
        settings, file, bank_id=bank_id, account_no=account_no, dry_run=dry_run, bootstrap=bootstrap, echo=click.echo
    )
    sys.exit(code)


@cli.group()
def report() -> None:
    """Reports for operators."""


@report.command("daily")
@click.option("--bank", "bank_id", required=True, help="partner bank id (banks.json), e.g. BNI")
@click.option("--date", "business_date", required=True, type=click.DateTime(["%Y-%m-%d"]), help="WIB business date")
@click.option("--csv", "as_csv", is_flag=True, help="CSV instead of a table")
def report_daily(bank_id: str, business_date: Any, as_csv: bool) -> None:
    """The statement reconciliation of one bank and WIB business date (from reconciliation.statements.v1).

    Reads SINERGI_KAFKA_BOOTSTRAP or, when unset, the broker of a running `sinergi up`.
    """
    from services.reference import load_banks
    from services.report_cli import daily_report
    from services.supervisor import read_bootstrap_file

    settings = _settings()
    if bank_id not in load_banks(settings.banks_file):
        raise click.BadParameter("not a bank of the partner registry", param_hint="--bank")
    bootstrap = settings.kafka_bootstrap or read_bootstrap_file(settings.data_dir)
    if bootstrap is None:
        raise click.UsageError("no broker: set SINERGI_KAFKA_BOOTSTRAP or start `sinergi up`")
    from confluent_kafka import KafkaException

    try:
        text, unreadable = daily_report(bootstrap, bank_id, business_date.date(), as_csv)
    except KafkaException as exc:
        raise click.ClickException(f"Kafka did not answer ({exc}); try again") from None
    click.echo(text, nl=False)
    if unreadable:
        click.echo(f"warning: {unreadable} unreadable decision record(s) skipped", err=True)


@cli.group("bank-sim")
def bank_sim() -> None:
    """A partner bank in the terminal: SNAP requests signed exactly like a bank (see docs/banks.md)."""


@bank_sim.command("sign")
@click.option("--secret", required=True, help="the bank's HMAC client secret")
@click.option("--token", required=True, help="the bearer token the request carries")
@click.option("--path", "endpoint", required=True, help="EndpointUrl, e.g. /v1.0/transfer-va/payment")
@click.option("--body", required=True, type=click.File("rb"), help="file with the exact body bytes ('-': stdin)")
@click.option("--timestamp", required=True, help="the X-TIMESTAMP header, e.g. 2026-12-01T10:55:00+07:00")
@click.option("--method", default="POST", show_default=True)
def bank_sim_sign(secret: str, token: str, endpoint: str, body: Any, timestamp: str, method: str) -> None:
    """Print the string to sign and the X-SIGNATURE of a transactional call."""
    from services.bank_client import sign_for_cli

    click.echo(sign_for_cli(secret, token, endpoint, body.read(), timestamp, method))


def _bank_sim_options(command: Callable[..., None]) -> Callable[..., None]:
    options = [
        click.option("--url", default=None, help="bank API base URL [default: http://127.0.0.1:<bank_api_port>]"),
        click.option("--bank", "bank_id", default="MANDIRI", show_default=True, help="bank id (banks.json)"),
        click.option("--secret", default=None, help="HMAC client secret [default: from the settings]"),
        click.option(
            "--key",
            "key_file",
            default=None,
            type=click.Path(exists=True, dir_okay=False, path_type=Path),
            help="RSA private key (PEM) for the B2B token [default: <bank_sim_key_dir>/<bank>.pem if present]",
        ),
        click.option("--token", default=None, help="bearer token to use as is (no B2B token call)"),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _bank_sim(
    action: str,
    url: str | None,
    bank_id: str,
    secret: str | None,
    key_file: Path | None,
    token: str | None,
    **args: Any,
) -> None:
    import asyncio

    from services.bank_client import bank_sim_call, cli_credentials, default_url

    settings = get_settings()
    try:
        creds = cli_credentials(settings, bank_id, secret=secret, key_file=key_file, token=None)
        text, ok = asyncio.run(bank_sim_call(url or default_url(settings), creds, action, explicit_token=token, **args))
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    click.echo(text)
    sys.exit(0 if ok else 1)


@bank_sim.command("token")
@_bank_sim_options
def bank_sim_token(**options: Any) -> None:
    """POST /v1.0/access-token/b2b signed SHA256withRSA with the bank's private key."""
    _bank_sim("token", **options)


@bank_sim.command("inquire")
@click.option("--va", required=True, help="virtual account number (with or without the padding spaces)")
@click.option("--request-id", default=None, help="inquiryRequestId [default: generated]")
@_bank_sim_options
def bank_sim_inquire(**options: Any) -> None:
    """POST /v1.0/transfer-va/inquiry: the outstanding bill of a VA."""
    _bank_sim("inquire", **options)


@bank_sim.command("pay")
@click.option("--va", required=True, help="virtual account number (with or without the padding spaces)")
@click.option("--amount", required=True, help="paidAmount.value, exactly 2 decimals, e.g. 370000.00")
@click.option("--currency", default="IDR", show_default=True, help="paidAmount.currency")
@click.option("--fx-rate", default=None, help="additionalInfo.fxRate (IDR per unit) for a foreign currency")
@click.option("--request-id", default=None, help="paymentRequestId [default: generated]")
@_bank_sim_options
def bank_sim_pay(**options: Any) -> None:
    """POST /v1.0/transfer-va/payment: a payment notification."""
    _bank_sim("pay", **options)


@bank_sim.command("statement")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--content-type", default=None, help="[default: from the file extension]")
@_bank_sim_options
def bank_sim_statement(file: Path, content_type: str | None, **options: Any) -> None:
    """POST /v1.0/bank-statements?filename=<name>: upload a statement file (MT940, camt, SNAP JSON, CSV)."""
    _bank_sim("statement", content=file.read_bytes(), filename=file.name, content_type=content_type, **options)


def _broker_of(settings: Settings) -> str:
    from services.supervisor import read_bootstrap_file

    bootstrap = settings.kafka_bootstrap or read_bootstrap_file(settings.data_dir)
    if bootstrap is None:
        raise click.UsageError("no broker: set SINERGI_KAFKA_BOOTSTRAP or start `sinergi up`")
    return bootstrap


@cli.command()
@click.argument("number")
def explain(number: str) -> None:
    """A member's story from its customer number or VA number (records and exceptions; never a person).

    Reads SINERGI_KAFKA_BOOTSTRAP or, when unset, the broker of a running `sinergi up`.
    Exit status: 0; 1 nothing about that participant; 69 Kafka did not answer.
    """
    from services.codec import build_codec
    from services.explain_cli import NotACustomerNumber, cli_settings, explain_command, participant_of

    settings = cli_settings(_settings())
    try:
        participant_of(number, settings.customer_no_digits)
    except NotACustomerNumber as exc:
        raise click.BadParameter(str(exc), param_hint="NUMBER") from None
    bootstrap = _broker_of(settings)
    sys.exit(explain_command(settings, bootstrap, build_codec(settings), number, echo=click.echo))


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="print the figures as JSON")
def verify(as_json: bool) -> None:
    """Reliability check of every topic: missing, duplicated, contradictory records and money in vs recorded.

    Reads SINERGI_KAFKA_BOOTSTRAP or, when unset, the broker of a running `sinergi up`.
    Exit status: 0 ok; 1 something is missing, duplicated, contradictory or unbalanced; 69 Kafka did not answer.
    """
    from services.explain_cli import cli_settings
    from services.verify import verify_command

    settings = cli_settings(_settings())
    sys.exit(verify_command(settings, _broker_of(settings), as_json=as_json, echo=click.echo))


@cli.group()
def dlq() -> None:
    """Dead letters (dlq.<stage>): counts by stage and reason, and their replay after a fix."""


@dlq.command("list")
@click.option("--stage", type=click.Choice(STAGES), default=None, help="only this stage's dead letters")
def dlq_list(stage: str | None) -> None:
    """Dead letters by stage and reason, and how many were replayed (counts only, never a record).

    Reads SINERGI_KAFKA_BOOTSTRAP or, when unset, the broker of a running `sinergi up`.
    Exit status: 0; 69 Kafka did not answer.
    """
    from services.dlq import list_command

    settings = _settings()
    sys.exit(list_command(_broker_of(settings), stage, echo=click.echo))


@dlq.command("replay")
@click.option("--stage", type=click.Choice(STAGES), required=True, help="the stage whose dead letters to replay")
@click.option("--reason", default=None, help="only dead letters with this reason code (the one the fix cures)")
@click.option("--dry-run", is_flag=True, help="count what would be sent; send nothing")
def dlq_replay(stage: str, reason: str | None, dry_run: bool) -> None:
    """Send dead letters back to their source topic and partition (original key, value, headers).

    Idempotent: each replay is recorded in dlq.replays.v1 once the broker took it, and never sent again.
    A record that fails again is dead-lettered again (new coordinates), replayable after the next fix.
    Exit status: 0; 1 some were not taken or not recorded (replay again); 69 Kafka did not answer.
    """
    from services.dlq import replay_command

    settings = _settings()
    sys.exit(
        replay_command(settings, _broker_of(settings), stage=stage, reason=reason, dry_run=dry_run, echo=click.echo)
    )


@cli.group()
def fx() -> None:
    """Reference FX rates (fx-rates.v1), which the reconciler checks foreign-currency payments against."""


@fx.command("publish")
@click.option("--currency", required=True, help="ISO 4217 code, e.g. MYR")
@click.option("--date", "value_date", required=True, type=click.DateTime(["%Y-%m-%d"]), help="value date (WIB)")
@click.option("--rate", required=True, help="IDR per one unit, e.g. 3521.25")
@click.option("--source", default="OPERATOR", show_default=True, help="who published it")
def fx_publish(currency: str, value_date: Any, rate: str, source: str) -> None:
    """Publish one reference rate (the same currency and date again replaces it).

    Exit status: 0; 69 Kafka did not acknowledge (publish again).
    """
    from decimal import Decimal, InvalidOperation

    from pydantic import ValidationError

    from services.codec import build_codec
    from services.explain_cli import cli_settings
    from services.fx_rates import SOURCE_OPERATOR, fx_rate, publish_command

    try:
        record = fx_rate(currency, value_date.date(), Decimal(rate), source=source or SOURCE_OPERATOR)
    except (InvalidOperation, ValidationError) as exc:
        raise click.BadParameter(f"not a valid rate for a 3-letter currency ({type(exc).__name__})") from None
    settings = cli_settings(_settings())
    bootstrap = _broker_of(settings)
    sys.exit(publish_command(settings, bootstrap, build_codec(settings), record, echo=click.echo))


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
