"""VA inquiry end to end: the bank API process reads members.v1 (real broker) into its member book.

Enroll through the KBRI API, wait until the bank's inquiry shows the bill, pay it with a signed SNAP
notification, wait until the inquiry answers "Paid Bill". Nothing is injected: the answer comes from the
reconciler's member versions as the bank API's own Kafka reader saw them.
"""

from __future__ import annotations

import json
import random
import re
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
from hubclient import DEADLINE_S, enroll, enrollment_body

from connectors.bank.snap_signing import sign_transactional_hmac
from services.config import DEV_BANK_SECRETS
from services.supervisor import Supervisor

pytestmark = pytest.mark.integration

WIB = timezone(timedelta(hours=7))
INQUIRY = "/v1.0/transfer-va/inquiry"
PAYMENT = "/v1.0/transfer-va/payment"
BANK, TOKEN = "MANDIRI", "dev-token-mandiri"


def _signed_post(hub: Supervisor, path: str, body: dict[str, Any]) -> httpx.Response:
    s = hub.settings
    raw = json.dumps(body).encode()
    ts = datetime.now(WIB).isoformat(timespec="seconds")
    headers = {
        "Content-Type": "application/json",
        "Authorization": f"Bearer {TOKEN}",
        "X-PARTNER-ID": BANK,
        "X-EXTERNAL-ID": str(random.randint(10**15, 10**16)),
        "X-TIMESTAMP": ts,
        "X-SIGNATURE": sign_transactional_hmac(DEV_BANK_SECRETS[BANK].encode(), "POST", path, TOKEN, raw, ts),
        "CHANNEL-ID": "95221",
    }
    return httpx.post(f"http://{s.http_host}:{s.bank_api_port}{path}", content=raw, headers=headers, timeout=30)


def inquire(hub: Supervisor, va: str) -> httpx.Response:
    body = {
        "partnerServiceId": va[:8],
        "customerNo": va[8:],
        "virtualAccountNo": va,
        "inquiryRequestId": uuid.uuid4().hex,
        "channelCode": "6011",
    }
    return _signed_post(hub, INQUIRY, body)


def pay(hub: Supervisor, va: str, amount_idr: int) -> httpx.Response:
    body = {
        "partnerServiceId": va[:8],
        "customerNo": va[8:],
        "virtualAccountNo": va,
        "virtualAccountName": "BUDI SANTOSO",
        "paymentRequestId": uuid.uuid4().hex,
        "paidAmount": {"value": f"{amount_idr}.00", "currency": "IDR"},
        "trxDateTime": datetime.now(WIB).isoformat(timespec="seconds"),
        "channelCode": "6011",
    }
    return _signed_post(hub, PAYMENT, body)


def code_of(resp: httpx.Response) -> str:
    return str(resp.json().get("responseCode"))


def poll_inquiry(hub: Supervisor, va: str, until: str, passing: set[str]) -> httpx.Response:
    """Ask until the answer's responseCode is `until`; only the codes in `passing` may come meanwhile."""
    deadline = time.monotonic() + DEADLINE_S
    seen: list[str] = []
    while time.monotonic() < deadline:
        resp = inquire(hub, va)
        code = code_of(resp)
        if code == until:
            return resp
        assert code in passing, f"unexpected {resp.status_code} {resp.text}"
        if not seen or seen[-1] != code:
            seen.append(code)
        time.sleep(0.25)  # pacing between attempts, not synchronisation: the deadline decides
    raise AssertionError(f"inquiry never answered {until} within {DEADLINE_S}s; saw {seen}")


def _metric(hub: Supervisor, name: str, labels: str) -> float | None:
    s = hub.settings
    text = httpx.get(f"http://{s.http_host}:{s.bank_api_port}/metrics", timeout=10).text
    match = re.search(rf"^{re.escape(name)}\{{{re.escape(labels)}\}} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else None


def _eventually(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(what)
        time.sleep(0.25)


def test_inquiry_shows_the_bill_from_members_v1_and_paid_after_payment(hub: Supervisor) -> None:
    rng = random.Random(20261126)
    body = enrollment_body(rng)
    accepted = enroll(hub, "KBRI_KUALA_LUMPUR", body)
    assert accepted.status_code == 202, accepted.text
    doc = accepted.json()
    amount = doc["bill"]["amount_idr"]
    assert amount == 370_000
    va = doc["bill"]["virtual_accounts"][BANK]

    # 503 while the book loads, 4042412 until the reconciler's first version reaches it.
    open_bill = poll_inquiry(hub, va, "2002400", passing={"5002402", "4042412"})
    data = open_bill.json()["virtualAccountData"]
    assert data["virtualAccountNo"] == va and data["customerNo"] == doc["customer_no"]
    assert data["totalAmount"] == {"value": "370000.00", "currency": "IDR"}
    assert data["billDetails"][0]["billAmount"] == {"value": "370000.00", "currency": "IDR"}
    assert data["virtualAccountName"] == "BUDI SANTOSO"
    assert body["nik"] not in open_bill.text and body["passport_number"] not in open_bill.text

    # Ready now: an unknown VA is a real "not found", not a loading artefact.
    unknown = va[:8] + "9" * len(doc["customer_no"])
    assert code_of(inquire(hub, unknown)) == "4042412"

    paid = pay(hub, va, amount)
    assert paid.status_code == 200, paid.text
    assert code_of(paid) == "2002500"

    # The bill stays open until the reconciler's ACTIVE version reaches the book.
    done = poll_inquiry(hub, va, "4042414", passing={"2002400"})
    assert done.status_code == 404
    assert done.json()["reason"] == "BILL_PAID"

    labels = 'model="bank_inquiry"'
    _eventually(lambda: (_metric(hub, "sinergi_read_model_members", labels) or 0) >= 1, "members gauge never reached 1")
    assert (_metric(hub, "sinergi_read_model_records_total", labels) or 0) >= 2  # AWAITING_PAYMENT + ACTIVE
