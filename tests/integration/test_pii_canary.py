"""Canary personal values (NIK, passport, VA and account numbers) sent through the hub, accepted and refused,
appear in no log file, no /metrics page (APIs and workers), no API error body and no dead-letter header.
"""

from __future__ import annotations

import json
import random
import time
import uuid
from typing import Any

import httpx
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from hubclient import enroll, enrollment_body, pay
from test_statements import upload

from services.catalogue import ENROLLMENTS_RAW, PAYMENTS_RAW
from services.supervisor import WORKERS, Supervisor, enabled_workers

pytestmark = pytest.mark.integration

DEADLINE_S = 120.0


def read_all(bootstrap: str, topic: str) -> list[Any]:
    """Every record of a topic, by partition assignment (no group join), up to the end offsets seen now."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"canary-{uuid.uuid4().hex}", "enable.auto.commit": False}
    )
    try:
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in meta.partitions}
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in meta.partitions])
        out: list[Any] = []
        done = {p for p, end in ends.items() if end == 0}
        deadline = time.monotonic() + 30
        while len(done) < len(ends) and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                # Tansu lists a batch's end as its base + 1: an idle poll at the reported end is the end
                positions = consumer.position([TopicPartition(topic, p) for p in ends])
                done |= {tp.partition for tp in positions if tp.offset >= ends[tp.partition]}
                continue
            if msg.error():
                continue
            out.append(msg)
            if msg.offset() + 1 >= ends[msg.partition()]:
                done.add(msg.partition())
        return out
    finally:
        consumer.close()


def test_canary_values_appear_in_no_log_metric_error_body_or_dead_letter_header(hub: Supervisor) -> None:
    rng = random.Random(0xCA7A)
    canaries: set[str] = set()
    bodies: list[str] = []

    # Accepted: enrollments and payments at both banks.
    for office, bank in (("KBRI_KUALA_LUMPUR", "MANDIRI"), ("KDEI_TAIPEI", "BNI")):
        body = (
            enrollment_body(rng) if office != "KDEI_TAIPEI" else {**enrollment_body(rng), "destination_country": "TW"}
        )
        canaries |= {body["nik"], body["passport_number"]}
        accepted = enroll(hub, office, body)
        assert accepted.status_code == 202, accepted.text
        bill = accepted.json()["bill"]
        va = bill["virtual_accounts"][bank]
        canaries.add(va.strip())
        paid = pay(hub, bank, va, bill["amount_idr"])
        assert paid.status_code == 200, paid.text
        # Refused at the API: a domain rule, a malformed passport, a VA that does not match its parts.
        for bad in (dict(body, contract_months=0), dict(body, passport_number="X" + body["passport_number"] + "!!")):
            refused = enroll(hub, office, bad)
            assert refused.status_code == 422, refused.text
            bodies.append(refused.text)
        wrong_va = va + "12345"  # customerNo beyond 20 digits: refused at the API
        canaries.add(wrong_va.strip())
        refused = pay(hub, bank, wrong_va, 1)
        assert 400 <= refused.status_code < 500, refused.text
        bodies.append(refused.text)

    # A statement with a canary account number: one line good, one line refused.
    account = f"7{rng.randint(10**10, 10**11 - 1)}"
    canaries.add(account)
    tag = uuid.uuid4().hex[:8].upper()
    csv = (
        "account_no,booking_date,direction,amount,currency,bank_ref,status\n"
        f"{account},2025-07-16,CR,1000.00,IDR,C{tag}1,SUCCESS\n"
        f"{account},2025-07-16,CR,12.345,IDR,C{tag}2,SUCCESS\n"
    ).encode()
    uploaded = upload(hub, "MANDIRI", csv, str(rng.randint(10**15, 10**16 - 1)))
    assert uploaded.status_code == 200, uploaded.text
    assert uploaded.json()["statement"]["rejected"] == 1
    bodies.append(uploaded.text)

    # Bad input that bypassed the API: dead-lettered by the normalizers (the DLQ keeps the bytes, not the headers).
    poison_nik, poison_passport = "3201019999990001", f"C{rng.randint(1000000, 9999999)}"
    canaries |= {poison_nik, poison_passport}
    producer = Producer({"bootstrap.servers": hub.bootstrap})
    poison_keys = [uuid.uuid4().hex.encode() for _ in range(2)]
    under_age = dict(enrollment_body(rng), nik=poison_nik, passport_number=poison_passport, date_of_birth="2020-01-01")
    producer.produce(
        ENROLLMENTS_RAW.name,
        key=poison_keys[0],
        value=json.dumps(under_age).encode(),
        headers=[("sinergi-office", b"KBRI_KUALA_LUMPUR"), ("sinergi-request-id", b"canary-1")],
    )
    bad_payment = {
        "virtualAccountNo": "   88001" + poison_nik + "00",
        "paidAmount": {"value": "1.5", "currency": "IDR"},
    }
    producer.produce(PAYMENTS_RAW.name, key=poison_keys[1], value=json.dumps(bad_payment).encode())
    assert producer.flush(30) == 0

    dlq_topics = [f"dlq.{w}" for w in enabled_workers(hub.settings)]
    deadline = time.monotonic() + DEADLINE_S
    letters: list[Any] = []
    while time.monotonic() < deadline:
        letters = [m for t in dlq_topics for m in read_all(hub.bootstrap, t)]
        if set(poison_keys) <= {m.key() for m in letters}:
            break
        time.sleep(1)
    assert set(poison_keys) <= {m.key() for m in letters}, "the poison records were not dead-lettered"

    s = hub.settings
    pages = [
        httpx.get(f"http://{s.http_host}:{port}/metrics", timeout=10).text
        for port in (s.bank_api_port, s.kbri_api_port)
    ]
    for i, worker in enumerate(WORKERS):
        if worker in enabled_workers(s):
            pages.append(httpx.get(f"http://{s.http_host}:{s.metrics_port_base + i}/metrics", timeout=10).text)
    assert all("# TYPE sinergi_" in page for page in pages)
    # Every worker of the hub serves its probes beside /metrics and becomes ready once it consumes.
    for i, worker in enumerate(WORKERS):
        if worker not in enabled_workers(s):
            continue
        url = f"http://{s.http_host}:{s.metrics_port_base + i}"
        assert httpx.get(f"{url}/healthz", timeout=10).json() == {"status": "ok"}
        while httpx.get(f"{url}/readyz", timeout=10).status_code != 200:
            assert time.monotonic() < deadline + DEADLINE_S, f"{worker} never ready"
            time.sleep(0.5)
    logs = {p.name: p.read_text(errors="replace") for p in hub.log_dir.glob("*.log")}
    assert any(name.startswith("worker-") for name in logs)
    headers = [f"{k}={v!r}" for m in letters for k, v in (m.headers() or [])]

    for canary in sorted(canaries):
        for where, text in [*logs.items(), *(("metrics", p) for p in pages), *(("error body", b) for b in bodies)]:
            assert canary not in text, f"canary found in {where}"
        for header in headers:
            assert canary not in header, "canary found in a dead-letter header"
