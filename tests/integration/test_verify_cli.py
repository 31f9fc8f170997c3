"""`sinergi verify` against the real hub: a clean run verifies, one stale record is the one contradiction."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
import uuid

import pytest
from confluent_kafka import Producer
from hubclient import enroll, enrollment_body, pay

from services.avro import AvroCodec
from services.catalogue import MEMBERS
from services.codec import build_codec
from services.config import Settings
from services.domain.models import MemberRecord, MemberStatus
from services.domain.verification import VerificationReport
from services.supervisor import Supervisor
from services.verify import read_topics, reading_codec, verify

pytestmark = pytest.mark.integration

MEMBERS_N = 20
DEADLINE_S = 120.0


def _pay(hub: Supervisor, bank: str, va: str, amount: int, request_id: str | None = None) -> int:
    """Pay once the bank API knows the VA: the bill reaches its member book through Kafka, a moment after
    the enrollment's 202 (a 404 before that is the API being right, not the hub losing anything)."""
    deadline = time.monotonic() + DEADLINE_S
    while True:
        status = pay(hub, bank, va, amount, payment_request_id=request_id).status_code
        if status != 404 or time.monotonic() > deadline:
            return status
        time.sleep(0.2)  # poll interval of a deadline loop


def _verified(hub: Supervisor, participants: set[str], until: str) -> VerificationReport:
    """Poll the verifier until the hub has caught up (``until`` holds) or the deadline passes."""
    url = hub.env["SINERGI_SCHEMA_REGISTRY_URL"]
    codec = reading_codec(url)
    deadline = time.monotonic() + DEADLINE_S
    while True:
        report = verify(hub.bootstrap, url, participants=participants, codec=codec)
        if until == "ok" and report.ok:
            return report
        if until == "contradiction" and report.contradictions and not report.core_missing:
            return report
        if time.monotonic() > deadline:
            raise AssertionError(f"verifier not {until} within {DEADLINE_S}s:\n{report.summary()}")
        time.sleep(0.5)  # poll interval of a deadline loop, not a synchronisation


def test_verify_a_clean_run_then_find_the_one_stale_record(hub: Supervisor) -> None:
    # A seed no other test uses: the same NIKs are the same participants on the session's shared hub, and
    # test_notify_kbri's (20261202) are already paid there, so their new payments were refused as BILL_PAID.
    rng = random.Random(20261207)
    participants: dict[str, int] = {}
    money_in = 0
    duplicate_of = over_paid = ""
    for i in range(MEMBERS_N):
        office, bank = (("KBRI_KUALA_LUMPUR", "MANDIRI"), ("KDEI_TAIPEI", "BNI"))[i % 2]
        accepted = enroll(hub, office, enrollment_body(rng))
        assert accepted.status_code == 202, accepted.text
        doc = accepted.json()
        pid, bill = doc["customer_no"], doc["bill"]
        va, amount = bill["virtual_accounts"][bank], bill["amount_idr"]
        if i == 0:  # the bank re-sends one notification: the same transaction, counted once
            request_id = uuid.uuid4().hex
            for _ in range(2):
                assert _pay(hub, bank, va, amount, request_id) == 200
            duplicate_of = pid
        elif i == 1:  # an over-payment: credited whole, the excess is the member's credit
            amount += 12_345
            assert _pay(hub, bank, va, amount) == 200
            over_paid = pid
        else:
            assert _pay(hub, bank, va, amount) == 200
        participants[pid] = amount
        money_in += amount

    report = _verified(hub, set(participants), "ok")
    print(report.summary())
    assert report.payments_in == MEMBERS_N
    assert report.payments_credited == MEMBERS_N
    assert report.enrollments_in == MEMBERS_N
    assert report.money_in_idr == report.money_recorded_idr == money_in
    assert duplicate_of and over_paid

    # The CLI agrees, as a machine reads it.
    out = subprocess.run(
        [sys.executable, "-m", "services", "verify", "--json"],
        env={**hub.env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    figures = json.loads(out.stdout)
    assert figures["payments_in"] >= MEMBERS_N, out.stderr[-2000:]

    # A second writer (a zombie reconciler, say) publishes the member's latest version again, saying
    # otherwise: two different records claiming one version is a contradiction.
    settings = Settings(kafka_bootstrap=hub.bootstrap, schema_registry_url=hub.env["SINERGI_SCHEMA_REGISTRY_URL"])
    codec = build_codec(settings)
    victim = over_paid
    latest = _latest_record(hub, codec, victim)
    bogus = latest.model_copy(update={"status": MemberStatus.CANCELLED, "paid_amount_idr": 0})
    producer = Producer({"bootstrap.servers": hub.bootstrap})
    producer.produce(MEMBERS.name, key=victim.encode(), value=codec.encode(MEMBERS.value_schema or "", bogus))
    assert producer.flush(10) == 0

    found = _verified(hub, set(participants), "contradiction")
    print(found.summary())
    assert found.problems == {"contradictions": 1}
    assert found.samples["contradictions"] == (latest.record_id,)
    assert found.money_in_idr == found.money_recorded_idr == money_in

    cli = subprocess.run(
        [sys.executable, "-m", "services", "verify"], env={**hub.env}, capture_output=True, text=True, timeout=120
    )
    assert cli.returncode == 1, cli.stdout[-2000:] + cli.stderr[-2000:]
    assert "CONTRADICTORY records" in cli.stdout


def _latest_record(hub: Supervisor, codec: AvroCodec, pid: str) -> MemberRecord:
    best: MemberRecord | None = None
    for msg in read_topics(hub.bootstrap, [MEMBERS.name]):
        if msg.key() != pid.encode() or not msg.value():
            continue
        record = codec.decode_model(msg.value(), MemberRecord)
        if best is None or record.version > best.version:
            best = record
    assert best is not None
    return best
