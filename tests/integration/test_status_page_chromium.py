"""The status page as an operator sees it: headless Chromium renders /status (after its script fetched
/status.json) while the hub carries a little traffic; the DOM shows every stage moving, the dead letter, and a
row per configured office."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import time
import uuid
from datetime import datetime, timedelta, timezone
from html.parser import HTMLParser
from pathlib import Path

import httpx
import pytest
from confluent_kafka import Producer
from hubclient import enroll, enrollment_body, pay

from connectors.bank.snap_signing import sign_transactional_hmac
from services.catalogue import ENROLLMENTS_RAW
from services.config import DEV_BANK_SECRETS
from services.reference import load_offices
from services.status_page import expected_stages, targets
from services.supervisor import Supervisor

pytestmark = pytest.mark.integration

DEADLINE_S = 150.0
WIB = timezone(timedelta(hours=7))
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


def chromium() -> str:
    path = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
    if path is None:
        if os.geteuid() == 0 and Path("/etc/debian_version").exists():
            pytest.fail("chromium is missing: `make test` installs it when run as root on Debian")
        pytest.skip("chromium is not installed (make test installs it only as root on Debian)")
    return path


class Tables(HTMLParser):
    """table id -> [(the row's data-* key, [cell texts])], and the <body> attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[tuple[str | None, list[str]]]] = {}
        self.body: dict[str, str | None] = {}
        self._table: str | None = None
        self._row: tuple[str | None, list[str]] | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "body":
            self.body = a
        elif tag == "table":
            self._table = a.get("id") or ""
            self.tables[self._table] = []
        elif tag == "tr" and self._table is not None:
            key = next((v for k, v in a.items() if k.startswith("data-")), None)
            self._row = (key, [])
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._row is not None and self._cell is not None:
            self._row[1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._row is not None and self._table is not None:
            if self._row[0] is not None:  # header rows carry no key
                self.tables[self._table].append(self._row)
            self._row = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)

    def rows(self, table: str) -> dict[str, list[str]]:
        return {key: cells for key, cells in self.tables.get(table, []) if key is not None}


def render(browser: str, url: str, profile: Path) -> Tables:
    """The DOM after the page's script ran: virtual time lets its fetch and a refresh or two happen."""
    out = subprocess.run(
        [browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=8000", "--dump-dom", url],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    dom = Tables()
    dom.feed(out.stdout)
    return dom


def upload_statement(hub: Supervisor, refs: list[tuple[str, int]]) -> None:
    """A SNAP bank statement from MANDIRI whose credits are the payments just made."""
    s, bank, token, path = hub.settings, "MANDIRI", "dev-token-mandiri", "/v1.0/bank-statements"
    now = datetime.now(WIB).isoformat(timespec="seconds")
    detail = [
        {
            "amount": {"value": f"{amount}.00", "currency": "IDR"},
            "transactionDate": now,
            "remark": "VA payment",
            "transactionId": ref,
            "type": "CREDIT",
            "transactionDetailStatus": "SUCCESS",
        }
        for ref, amount in refs
    ]
    raw = json.dumps({"responseCode": "2001400", "responseMessage": "Successful", "detailData": detail}).encode()
    ts = datetime.now(WIB).isoformat(timespec="seconds")
    resp = httpx.post(
        f"http://{s.http_host}:{s.bank_api_port}{path}",
        params={"accountNo": "0011223344", "filename": "statement.json"},
        content=raw,
        headers={
            "Authorization": f"Bearer {token}",
            "X-PARTNER-ID": bank,
            "X-EXTERNAL-ID": str(random.randint(10**15, 10**16)),
            "X-TIMESTAMP": ts,
            "X-SIGNATURE": sign_transactional_hmac(DEV_BANK_SECRETS[bank].encode(), "POST", path, token, raw, ts),
            "Content-Type": "application/json",
        },
        timeout=30,
    )
    assert resp.status_code == 200, resp.text


def send_traffic(hub: Supervisor) -> list[str]:
    """Enrollments paid at two banks, one statement, one poison record past the API; returns the NIKs."""
    rng = random.Random()
    niks, mandiri = [], []
    for office, bank in (("KBRI_KUALA_LUMPUR", "MANDIRI"), ("KDEI_TAIPEI", "BNI"), ("KBRI_KUALA_LUMPUR", "MANDIRI")):
        body = enrollment_body(rng)
        niks += [body["nik"], body["passport_number"]]
        accepted = enroll(hub, office, body)
        assert accepted.status_code == 202, accepted.text
        bill = accepted.json()["bill"]
        paid = pay(hub, bank, bill["virtual_accounts"][bank], bill["amount_idr"])
        assert paid.status_code == 200, paid.text
        if bank == "MANDIRI":
            mandiri.append((paid.json()["virtualAccountData"]["paymentRequestId"], bill["amount_idr"]))
    upload_statement(hub, mandiri)
    producer = Producer({"bootstrap.servers": hub.bootstrap})
    producer.produce(
        ENROLLMENTS_RAW.name,
        key=b"poison-" + uuid.uuid4().hex.encode(),
        value=b"\xff{not json",
        headers=[("sinergi-office", b"KDEI_TAIPEI")],
    )
    assert producer.flush(10) == 0
    return niks


def number(text: str) -> float:
    return 0.0 if text in ("", "-") else float(text)


def test_the_status_page_renders_every_stage_the_dead_letters_and_every_office(hub: Supervisor, tmp_path: Path) -> None:
    browser = chromium()
    status = hub.child("status")
    assert status.url is not None
    base = status.url.removesuffix("/status")
    niks = send_traffic(hub)

    settings = hub.settings
    # The webhooks service consumes office topics only for subscribed offices; the hub fixture has none.
    stages = [s for s in expected_stages(settings) if s != "webhooks"]
    processes = {t.name for t in targets(settings)}
    offices = set(load_offices(settings.offices_file))

    def problems(dom: Tables) -> list[str]:
        found = []
        if int(dom.body.get("data-rendered") or 0) < 1:
            found.append("the script has not rendered yet")
        rows = dom.rows("stages")
        for stage in stages:
            cells = rows.get(stage)
            # stage, events in, in/s, events out, out/s, p50, p99, dead letters
            if cells is None or not (number(cells[1]) > 0 or number(cells[3]) > 0):
                found.append(f"stage {stage}: {cells}")
        procs = dom.rows("processes")
        down = [p for p in processes if procs.get(p, ["", "", ""])[2] != "up"]
        if down:
            found.append(f"down: {down}")
        dead = dom.rows("dead-letters")
        if "normalize_enrollments/INVALID_JSON" not in dead:
            found.append(f"dead letters: {dead}")
        if set(dom.rows("offices")) != offices:
            found.append(f"offices: {sorted(dom.rows('offices'))}")
        return found

    deadline, attempt, left = time.monotonic() + DEADLINE_S, 0, ["not rendered"]
    while time.monotonic() < deadline:
        attempt += 1
        dom = render(browser, f"{base}/status", tmp_path / f"profile-{attempt}")
        left = problems(dom)
        if not left:
            break
    assert not left, f"after {attempt} renders: {left}"

    assert "(unknown)" not in dom.rows("processes")
    tpe = dom.rows("offices")["KDEI_TAIPEI"]  # office, feed position, updates out, ...
    assert number(tpe[1]) > 0 and number(tpe[2]) > 0  # its member updates reached its topic
    apis = dom.rows("apis")
    assert number(apis["kbri"][1]) >= 3 and number(apis["bank"][1]) >= 4  # requests
    for tid in ("unmatched", "ageing"):
        assert tid in dom.tables
    # Never a person: none of the identifiers sent appears in the page or its data.
    body = httpx.get(f"{base}/status.json", timeout=10).text + httpx.get(f"{base}/status", timeout=10).text
    assert not [n for n in niks if n in body]
    assert httpx.get(f"{base}/healthz", timeout=10).status_code == 200
