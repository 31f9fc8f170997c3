"""A real Prometheus scraping the running hub evaluates every dashboard query and every rule expression.

Prometheus (Debian's package) starts on a free loopback port with deploy/prometheus/prometheus.yml rewritten to
the hub's loopback ports, a 1 s scrape and evaluation interval and the real rules files. The test drives the
traffic that makes the series exist (enrollments, payments, refusals, authentication failures, an idempotent
replay, a dead-lettered record, statement uploads, a feed poll, a bank enrollment, and webhook deliveries that a
failing office receiver turns into dead letters), then asks /api/v1/query for each expression: every one must
succeed and return data. Alert expressions are asked with their comparisons made `bool`, so an alert that is not
firing still answers with its series.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from confluent_kafka import Producer
from hubclient import BANK_TOKENS, OFFICE_TOKENS, PAY_PATH, enroll, enrollment_body, pay

from connectors.bank.snap_signing import sign_transactional_hmac
from connectors.embedded import free_port
from services.catalogue import ENROLLMENTS_RAW, office_updates_topic
from services.config import DEV_BANK_SECRETS
from services.domain.office_updates import CaseView, OfficeUpdate, UpdateType, update_id
from services.supervisor import METRICS_PORTS, WORKERS, Supervisor

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = REPO / "deploy" / "prometheus"
DASHBOARDS = REPO / "deploy" / "grafana" / "dashboards"
DEADLINE_S = 240.0
WIB = timezone(timedelta(hours=7))
WEBHOOK_OFFICE = "KJRI_HONG_KONG"  # an office nothing else in the session subscribes to
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "10m"}
STATEMENT_DATA = REPO / "tests" / "unit" / "data" / "statements"


def prometheus_binary() -> str:
    found = shutil.which("prometheus")
    if found:
        return found
    if os.geteuid() == 0 and Path("/etc/debian_version").exists():
        pytest.fail("prometheus is missing although this is Debian as root: `make system-deps` installs it")
    pytest.skip("prometheus is not installed (Debian package `prometheus`; `make test` installs it as root on Debian)")


# --- expressions under test --------------------------------------------------------------------------------------
def rule_expressions() -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for path in sorted((PROMETHEUS_DIR / "rules").glob("*.yml")):
        for group in yaml.safe_load(path.read_text(encoding="utf-8"))["groups"]:
            for rule in group["rules"]:
                name = rule.get("alert") or rule["record"]
                expr = rule["expr"]
                out.append((f"{path.stem}/{name}", as_bool(expr) if "alert" in rule else expr))
    return out


def dashboard_expressions() -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for path in sorted(DASHBOARDS.glob("*.json")):
        doc = json.loads(path.read_text(encoding="utf-8"))
        names = [v["name"] for v in doc["templating"]["list"]]
        for panel in doc["panels"]:
            for target in panel.get("targets", []):
                expr = target["expr"]
                for variable, value in GRAFANA_VARIABLES.items():
                    expr = expr.replace(variable, value)
                for name in names:
                    expr = re.sub(rf"\${name}\b", ".*", expr)
                out.append((f"{path.stem}/{panel['title']}/{target['refId']}", expr))
    return out


def as_bool(expr: str) -> str:
    """Every comparison outside label matchers and strings turned into a `bool` comparison (0/1 series)."""
    out: list[str] = []
    depth, i, quote = 0, 0, ""
    while i < len(expr):
        c = expr[i]
        if quote:
            out.append(c)
            if c == "\\":
                out.append(expr[i + 1])
                i += 1
            elif c == quote:
                quote = ""
        elif c in "\"'":
            quote = c
            out.append(c)
        elif c == "{":
            depth += 1
            out.append(c)
        elif c == "}":
            depth -= 1
            out.append(c)
        elif depth == 0 and (op := next((o for o in ("==", "!=", ">=", "<=", ">", "<") if expr.startswith(o, i)), "")):
            out.append(op)
            i += len(op)
            if not re.match(r"\s*bool\b", expr[i:]):
                out.append(" bool")
            continue
        else:
            out.append(c)
        i += 1
    return "".join(out)


def test_as_bool_leaves_matchers_and_strings_alone() -> None:
    assert as_bool('a{x!="1",y=~"b"} > 0.5 and b == 1') == 'a{x!="1",y=~"b"} > bool 0.5 and b == bool 1'
    assert as_bool("x >= bool 1") == "x >= bool 1"


# --- the hub's processes as Prometheus targets -------------------------------------------------------------------
def job_ports(hub: Supervisor, extra_webhooks_port: int) -> dict[str, list[int]]:
    s = hub.settings
    ports = {"sinergi-bank-api": [s.bank_api_port], "sinergi-kbri-api": [s.kbri_api_port]}
    for i, worker in enumerate(WORKERS):
        ports["sinergi-" + worker.replace("_", "-")] = [s.metrics_port_base + i]
    ports["sinergi-webhooks"] = [s.metrics_port_base + METRICS_PORTS - 1, extra_webhooks_port]
    return ports


def write_config(hub: Supervisor, directory: Path, prometheus_port: int, webhooks_port: int) -> Path:
    """The production config with every job pointed at the hub's loopback port(s) and 1 s intervals."""
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text(encoding="utf-8"))
    ports = job_ports(hub, webhooks_port)
    host = hub.settings.http_host
    for job in config["scrape_configs"]:
        name = job["job_name"]
        if name == "prometheus":
            targets = [f"127.0.0.1:{prometheus_port}"]
        else:
            assert name in ports, f"prometheus.yml scrapes {name}, which is no hub process"
            targets = [f"{host}:{port}" for port in ports[name]]
        job["static_configs"] = [{"targets": targets}]
    assert {j["job_name"] for j in config["scrape_configs"]} - {"prometheus"} == set(ports)
    config["global"].update({"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "1s"})
    config["rule_files"] = [str(PROMETHEUS_DIR / "rules" / "*.yml")]
    path = directory / "prometheus.yml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


# --- helpers for traffic -------------------------------------------------------------------------------------------
class FailingReceiver:
    """An office webhook endpoint on 127.0.0.1 that takes the first delivery (204), then is down (503)."""

    def __init__(self) -> None:
        self.hits = 0

        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                receiver.hits += 1
                self.send_response(204 if receiver.hits == 1 else 503)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FailingReceiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def wait_until(what: str, check: Callable[[], Any], deadline: float, procs: tuple[Path, ...] = ()) -> Any:
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except httpx.HTTPError as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(0.5)
    logs = "\n".join(p.read_text(errors="replace")[-2000:] for p in procs if p.exists())
    raise AssertionError(f"{what}: not within the deadline (last: {last!r})\n{logs}")


def signed_bank_post(hub: Supervisor, bank: str, path: str, raw: bytes, headers: dict[str, str]) -> httpx.Response:
    s = hub.settings
    token = {**BANK_TOKENS, "MAYBANK_MY": "dev-token-maybank"}[bank]
    ts = datetime.now(WIB).isoformat(timespec="seconds")
    signature = sign_transactional_hmac(DEV_BANK_SECRETS[bank].encode(), "POST", path.split("?")[0], token, raw, ts)
    return httpx.post(
        f"http://{s.http_host}:{s.bank_api_port}{path}",
        content=raw,
        headers={
            "Authorization": f"Bearer {token}",
            "X-PARTNER-ID": bank,
            "X-TIMESTAMP": ts,
            "X-SIGNATURE": signature,
            "CHANNEL-ID": "95221",
            **headers,
        },
        timeout=30,
    )


def drive_traffic(hub: Supervisor) -> None:
    s = hub.settings
    rng = random.Random(6_2026)
    kbri = f"http://{s.http_host}:{s.kbri_api_port}"
    paid: list[tuple[str, int]] = []
    for office, bank in (("KBRI_KUALA_LUMPUR", "MANDIRI"), ("KDEI_TAIPEI", "BNI")):
        accepted = enroll(hub, office, enrollment_body(rng))
        assert accepted.status_code == 202, accepted.text
        bill = accepted.json()["bill"]
        va = bill["virtual_accounts"][bank]
        partial = pay(hub, bank, va, bill["amount_idr"] // 2)  # partial, then the rest
        assert partial.status_code == 200, partial.text
        if bank == "MANDIRI":
            paid.append((partial.json()["virtualAccountData"]["paymentRequestId"], bill["amount_idr"] // 2))
        # The same payment notification twice with the same X-EXTERNAL-ID: the second is a stored replay.
        body = {
            "partnerServiceId": va[:8],
            "customerNo": va[8:],
            "virtualAccountNo": va,
            "virtualAccountName": "BUDI SANTOSO",
            "paymentRequestId": uuid.uuid4().hex,
            "paidAmount": {"value": f"{bill['amount_idr'] - bill['amount_idr'] // 2}.00", "currency": "IDR"},
            "trxDateTime": datetime.now(UTC).isoformat(timespec="seconds"),
            "channelCode": "6011",
        }
        raw = json.dumps(body).encode()
        external_id = str(rng.randint(10**15, 10**16))
        headers = {"Content-Type": "application/json", "X-EXTERNAL-ID": external_id}
        first = signed_bank_post(hub, bank, PAY_PATH, raw, headers)
        again = signed_bank_post(hub, bank, PAY_PATH, raw, headers)
        assert first.status_code == again.status_code == 200, (first.text, again.text)
    # Refusals: a domain rule (422), a bad office key and a bad bank signature (401).
    bad = dict(enrollment_body(rng), contract_months=0)
    assert enroll(hub, "KBRI_KUALA_LUMPUR", bad).status_code == 422
    unauthorized = httpx.get(f"{kbri}/v1/updates", headers={"Authorization": "Bearer not-a-key"}, timeout=30)
    assert unauthorized.status_code == 401
    forged = signed_bank_post(
        hub,
        "BNI",
        PAY_PATH,
        b'{"x": 1}',
        {"Content-Type": "application/json", "X-EXTERNAL-ID": "1", "X-SIGNATURE": "AA"},
    )
    assert forged.status_code == 401
    # A bank that enrolls at its counter (MAYBANK_MY) and one that may not (403).
    enrollment = json.dumps(enrollment_body(rng)).encode()
    for bank, status in (("MAYBANK_MY", 202), ("MANDIRI", 403)):
        resp = signed_bank_post(
            hub,
            bank,
            "/v1/bank/enrollments",
            enrollment,
            {
                "Content-Type": "application/json",
                "X-Request-Id": uuid.uuid4().hex,
                "X-EXTERNAL-ID": str(rng.randint(10**15, 10**16)),
            },
        )
        assert resp.status_code == status, resp.text
    # Statements: an MT940 file, and a CSV with one line that cannot be read.
    tag = uuid.uuid4().hex[:10].upper()
    mt940 = (
        (STATEMENT_DATA / "bni_20250715.sta")
        .read_bytes()
        .replace(b"BNI25071500", f"S{tag}".encode())
        .replace(b":20:STMT250715001", f":20:T{tag}".encode())
    )
    csv = (
        "account_no,booking_date,direction,amount,currency,bank_ref,status\n"
        f"800123456789,2025-07-16,CR,1000.00,IDR,C{tag}001,SUCCESS\n"
        f"800123456789,2025-07-16,CR,12.345,IDR,C{tag}002,SUCCESS\n"
    ).encode()
    for bank, raw, content_type in (("BNI", mt940, "text/plain"), ("MANDIRI", csv, "text/csv")):
        resp = signed_bank_post(
            hub,
            bank,
            "/v1.0/bank-statements",
            raw,
            {"Content-Type": content_type, "X-EXTERNAL-ID": str(rng.randint(10**15, 10**16))},
        )
        assert resp.status_code == 200, resp.text
    # A SNAP statement carrying a notified payment: statement reconciliation decides on it.
    now = datetime.now(WIB).isoformat(timespec="seconds")
    detail = [
        {
            "amount": {"value": f"{amount}.00", "currency": "IDR"},
            "transactionDate": now,
            "remark": "PEMBAYARAN VA BPJSTK PMI",
            "transactionId": ref,
            "type": "CREDIT",
            "transactionDetailStatus": "SUCCESS",
        }
        for ref, amount in paid
    ]
    snap = json.dumps({"responseCode": "2001400", "responseMessage": "Successful", "detailData": detail}).encode()
    resp = signed_bank_post(
        hub,
        "MANDIRI",
        "/v1.0/bank-statements?accountNo=0011223344&filename=statement.json",
        snap,
        {"Content-Type": "application/json", "X-EXTERNAL-ID": str(rng.randint(10**15, 10**16))},
    )
    assert resp.status_code == 200, resp.text
    # A record that bypassed the API reaches a normalizer and is dead-lettered.
    producer = Producer({"bootstrap.servers": hub.bootstrap})
    producer.produce(ENROLLMENTS_RAW.name, key=b"poison-" + tag.encode(), value=b"\xff{not json")
    assert producer.flush(10) == 0


def poll_feed(hub: Supervisor, office: str) -> bool:
    s = hub.settings
    resp = httpx.get(
        f"http://{s.http_host}:{s.kbri_api_port}/v1/updates",
        headers={"Authorization": f"Bearer {OFFICE_TOKENS[office]}"},
        timeout=30,
    )
    return resp.status_code == 200


def produce_office_updates(bootstrap: str, office: str, count: int) -> None:
    run = uuid.uuid4().hex[:8]
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True})
    for n in range(count):
        update = OfficeUpdate(
            update_id=update_id(office, UpdateType.CASE_UPDATED, f"{run}-{n}:1"),
            type=UpdateType.CASE_UPDATED,
            office=office,
            subject=f"{run}-{n}",
            sequence=1,
            occurred_at=datetime.now(UTC),
            case=CaseView(case_id=f"{run}-{n}", status="IN_PROGRESS", version=1),
        )
        producer.produce(
            office_updates_topic(office),
            key=update.subject.encode(),
            value=update.model_dump_json().encode(),
            headers=[("sinergi-update-id", update.update_id.encode())],
        )
    assert producer.flush(30) == 0


# --- fixtures ------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def failing_webhooks(hub: Supervisor, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    """A second `sinergi webhooks serve` (own group) subscribed for one office whose receiver is down."""
    directory = tmp_path_factory.mktemp("webhooks-metrics")
    port = free_port()
    log_file = directory / "webhooks.log"
    with FailingReceiver() as receiver:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SINERGI_")}
        env.update(
            {
                "SINERGI_KAFKA_BOOTSTRAP": hub.bootstrap,
                "SINERGI_DATA_DIR": str(directory),
                "SINERGI_HTTP_HOST": hub.settings.http_host,
                "SINERGI_WEBHOOKS_GROUP_ID": f"test-webhooks-metrics-{uuid.uuid4().hex[:8]}",
                "SINERGI_WEBHOOKS_ALLOW_PRIVATE": "true",
                "SINERGI_WEBHOOKS_BACKOFF_BASE_S": "0.05",
                "SINERGI_WEBHOOKS_BACKOFF_CAP_S": "0.2",
                "SINERGI_WEBHOOKS_MAX_ATTEMPTS": "2",
                "SINERGI_COMMIT_INTERVAL_S": "0.5",
                "SINERGI_OFFICE_WEBHOOKS": json.dumps(
                    {WEBHOOK_OFFICE: {"url": receiver.url, "secrets": ["whsec_" + "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3"]}}
                ),
            }
        )
        with open(log_file, "ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "services", "webhooks", "serve", "--metrics-port", str(port)],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            produce_office_updates(hub.bootstrap, WEBHOOK_OFFICE, 3)
            yield port, log_file
        finally:
            stop(proc)


@pytest.fixture(scope="module")
def prometheus(
    hub: Supervisor, failing_webhooks: tuple[int, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    binary = prometheus_binary()
    directory = tmp_path_factory.mktemp("prometheus")
    port = free_port()
    config = write_config(hub, directory, port, failing_webhooks[0])
    log_file = directory / "prometheus.log"
    with open(log_file, "ab") as out:
        proc = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={directory / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--storage.tsdb.retention.time=1h",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(
            "prometheus ready",
            lambda: httpx.get(f"{url}/-/ready", timeout=2).status_code == 200,
            time.monotonic() + 60,
            (log_file,),
        )
        yield url
    finally:
        stop(proc)
        print(f"----- prometheus.log (tail) -----\n{log_file.read_text(errors='replace')[-2000:]}")


def query(url: str, expr: str) -> dict[str, Any]:
    resp = httpx.get(f"{url}/api/v1/query", params={"query": expr}, timeout=10)
    body: dict[str, Any] = resp.json()
    return body


# --- the test ------------------------------------------------------------------------------------------------------
def test_every_dashboard_query_and_rule_expression_returns_data_from_the_running_hub(
    hub: Supervisor, prometheus: str, failing_webhooks: tuple[int, Path]
) -> None:
    started = time.monotonic()
    deadline = started + DEADLINE_S
    webhooks_log = failing_webhooks[1]
    drive_traffic(hub)
    wait_until("a feed poll", lambda: poll_feed(hub, "KBRI_KUALA_LUMPUR"), deadline)

    expected_targets = sum(len(ports) for ports in job_ports(hub, 0).values()) + 1  # + Prometheus itself

    def targets_up() -> bool:
        active = httpx.get(f"{prometheus}/api/v1/targets", timeout=10).json()["data"]["activeTargets"]
        return len(active) == expected_targets and all(t["health"] == "up" for t in active)

    wait_until("every target scraped", targets_up, deadline, (webhooks_log,))

    def rules_healthy() -> bool:
        groups = httpx.get(f"{prometheus}/api/v1/rules", timeout=10).json()["data"]["groups"]
        rules = [r for g in groups for r in g["rules"]]
        broken = [f"{r['name']}: {r.get('lastError')}" for r in rules if r["health"] == "err"]
        assert not broken, broken
        return bool(rules) and all(r["health"] == "ok" for r in rules)

    wait_until("every rule evaluated without error", rules_healthy, deadline)

    expressions = rule_expressions() + dashboard_expressions()
    pending = dict(expressions)
    answers: dict[str, dict[str, Any]] = {}
    while pending and time.monotonic() < deadline:
        for name, expr in list(pending.items()):
            answer = query(prometheus, expr)
            assert answer["status"] == "success", f"{name}: {answer.get('error')}\n{expr}"
            answers[name] = answer
            if answer["data"]["result"]:
                del pending[name]
        if pending:
            time.sleep(1.0)
    empty = {name: pending[name] for name in pending}
    assert not empty, f"{len(empty)} of {len(expressions)} expressions returned no data: {json.dumps(empty, indent=1)}"
    print(f"{len(expressions)} expressions answered with data after {time.monotonic() - started:.1f}s")
