"""Statement reconciliation through the real broker: pay, upload the bank's statement, read the decisions and the
daily report.

pay (bank API) -> payments.v1 -> reconcile_statements (re-keyed by bank) and upload (bank API) ->
statement-entries.v1 -> reconcile_statements -> reconciliation.statements.v1 (+ reconciliation.exceptions.v1);
then `sinergi report daily` as a separate process reads the decisions topic.
"""

from __future__ import annotations

import csv
import io
import json
import os
import random
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from hubclient import enroll, enrollment_body, pay, poll_topic

from connectors.bank.snap_signing import sign_transactional_hmac
from services.catalogue import EXCEPTIONS, STATEMENT_DECISIONS
from services.config import DEV_BANK_SECRETS, REPO_ROOT
from services.domain.identity import event_uuid
from services.domain.statement_match import Decision, DecisionKind, effective
from services.supervisor import Supervisor

pytestmark = pytest.mark.integration

BANK = "MANDIRI"
TOKEN = "dev-token-mandiri"
PATH = "/v1.0/bank-statements"
REPORT_PATH = "/v1/reports/daily"
WIB = timezone(timedelta(hours=7))


def _paid_request_id(hub: Supervisor, rng: random.Random) -> tuple[str, int]:
    accepted = enroll(hub, "KBRI_KUALA_LUMPUR", enrollment_body(rng))
    assert accepted.status_code == 202, accepted.text
    bill = accepted.json()["bill"]
    paid = pay(hub, BANK, bill["virtual_accounts"][BANK], bill["amount_idr"])
    assert paid.status_code == 200, paid.text
    return paid.json()["virtualAccountData"]["paymentRequestId"], bill["amount_idr"]


def _snap_statement(lines: list[tuple[str, int]]) -> bytes:
    """A SNAP bank-statement response whose credits carry the given paymentRequestIds as transactionId."""
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
        for ref, amount in lines
    ]
    return json.dumps({"responseCode": "2001400", "responseMessage": "Successful", "detailData": detail}).encode()


def _upload(hub: Supervisor, raw: bytes) -> httpx.Response:
    s = hub.settings
    ts = datetime.now(WIB).isoformat(timespec="seconds")
    return httpx.post(
        f"http://{s.http_host}:{s.bank_api_port}{PATH}",
        params={"accountNo": "0011223344", "filename": "statement.json"},
        content=raw,
        headers={
            "Authorization": f"Bearer {TOKEN}",
            "X-PARTNER-ID": BANK,
            "X-EXTERNAL-ID": str(random.randint(10**15, 10**16)),
            "X-TIMESTAMP": ts,
            "X-SIGNATURE": sign_transactional_hmac(DEV_BANK_SECRETS[BANK].encode(), "POST", PATH, TOKEN, raw, ts),
            "Content-Type": "application/json",
        },
        timeout=30,
    )


def _decisions(msgs: list[Any]) -> list[Decision]:
    return [Decision.model_validate_json(m.value()) for m in msgs if m.key() == BANK.encode()]


def test_a_statement_line_with_the_payment_reference_is_matched_and_counted_in_the_daily_report(
    hub: Supervisor,
) -> None:
    rng = random.Random()
    matched_ref, matched_amount = _paid_request_id(hub, rng)
    short_ref, short_amount = _paid_request_id(hub, rng)
    # payment event ids are UUIDv5 of bank + paymentRequestId (connectors/bank/payment.py)
    matched_id, short_id = (event_uuid("payment", BANK, r) for r in (matched_ref, short_ref))
    # the second line credits 1,000 rupiah less than was notified: an AMOUNT_MISMATCH break
    uploaded = _upload(hub, _snap_statement([(matched_ref, matched_amount), (short_ref, short_amount - 1000)]))
    assert uploaded.status_code == 200, uploaded.text

    def mine(msgs: list[Any]) -> dict[str | None, Decision]:
        return {d.payment_event_id: d for d in _decisions(msgs) if d.payment_event_id in (matched_id, short_id)}

    msgs = poll_topic(hub.bootstrap, STATEMENT_DECISIONS.name, lambda ms: len(mine(ms)) == 2)
    match, mismatch = mine(msgs)[matched_id], mine(msgs)[short_id]
    assert match.kind is DecisionKind.MATCHED_BY_REF and match.amount_idr == matched_amount
    assert mismatch.kind is DecisionKind.AMOUNT_MISMATCH and mismatch.difference == -1000
    for m in msgs:  # decisions carry ids, codes and amounts only: never the VA number or the account
        assert b"0011223344" not in m.value() and b"   88001" not in m.value()

    # the break, and not the match, is on the exceptions topic
    stock = AvroDeserializer(SchemaRegistryClient({"url": hub.env["SINERGI_SCHEMA_REGISTRY_URL"]}))
    exc = poll_topic(
        hub.bootstrap,
        EXCEPTIONS.name,
        lambda ms: any(m.value()["exception_id"] == mismatch.decision_id for m in ms),
        deserializer=stock,
    )
    assert match.decision_id not in {m.value()["exception_id"] for m in exc}
    (record,) = [m.value() for m in exc if m.value()["exception_id"] == mismatch.decision_id]
    assert (record["reason"], record["bank_id"], record["event_id"]) == ("AMOUNT_MISMATCH", BANK, short_id)
    assert record["participant_id"] == mismatch.participant_id != ""

    # the report, from a separate process, counts the match (other tests may add decisions of the same day)
    day = match.business_date
    env = {**os.environ, "SINERGI_KAFKA_BOOTSTRAP": hub.bootstrap}
    argv = [sys.executable, "-m", "services", "report", "daily", "--bank", BANK, "--date", day.isoformat(), "--csv"]
    done = subprocess.run(argv, env=env, cwd=REPO_ROOT, capture_output=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout.decode() + done.stderr.decode()
    rows = [r for r in csv.DictReader(io.StringIO(done.stdout.decode())) if r["section"] == "CATEGORY"]
    by_category = {r["category"]: r for r in rows}
    seen = [d for d in effective(_decisions(msgs)) if d.business_date == day]
    for kind in (DecisionKind.MATCHED_BY_REF, DecisionKind.AMOUNT_MISMATCH):
        counted = int(by_category[kind.value]["decisions"])
        assert counted >= sum(d.kind is kind for d in seen) >= 1
    assert int(by_category[DecisionKind.MATCHED_BY_REF.value]["amount_idr"]) >= matched_amount

    table = subprocess.run(argv[:-1], env=env, cwd=REPO_ROOT, capture_output=True, timeout=120, check=False)
    assert table.returncode == 0, table.stderr.decode()
    assert f"RECONCILIATION {BANK} {day.isoformat()}" in table.stdout.decode()

    # the same report over the bank API, signed over the empty body, for the calling bank only
    s = hub.settings
    ts = datetime.now(WIB).isoformat(timespec="seconds")
    signature = sign_transactional_hmac(DEV_BANK_SECRETS[BANK].encode(), "GET", REPORT_PATH, TOKEN, b"", ts)
    resp = httpx.get(
        f"http://{s.http_host}:{s.bank_api_port}{REPORT_PATH}",
        params={"bank": BANK, "date": day.isoformat()},
        headers={"Authorization": f"Bearer {TOKEN}", "X-PARTNER-ID": BANK, "X-TIMESTAMP": ts, "X-SIGNATURE": signature},
        timeout=120,
    )
    assert resp.status_code == 200, resp.text
    over_http = {c["category"]: c["decisions"] for c in resp.json()["categories"]}
    assert over_http[DecisionKind.MATCHED_BY_REF.value] >= int(
        by_category[DecisionKind.MATCHED_BY_REF.value]["decisions"]
    )
