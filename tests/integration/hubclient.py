"""Traffic helpers for integration tests: real HTTP requests to the hub and topic polling with a deadline."""

from __future__ import annotations

import json
import random
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
from confluent_kafka import Consumer, DeserializingConsumer

from connectors.bank.snap_signing import sign_transactional_hmac
from services.supervisor import Supervisor

DEADLINE_S = 120.0
OFFICE_TOKENS = {"KBRI_KUALA_LUMPUR": "dev-token-kbri-kl", "KDEI_TAIPEI": "dev-token-kdei-tpe"}
BANK_TOKENS = {"MANDIRI": "dev-token-mandiri", "BNI": "dev-token-bni"}
PAY_PATH = "/v1.0/transfer-va/payment"


def make_nik(rng: random.Random, female: bool = False) -> str:
    day = rng.randint(1, 28) + (40 if female else 0)
    district, month, year, serial = rng.randint(1, 30), rng.randint(1, 12), rng.randint(80, 99), rng.randint(1, 9999)
    return f"3201{district:02d}{day:02d}{month:02d}{year:02d}{serial:04d}"


def enrollment_body(rng: random.Random) -> dict[str, Any]:
    nik = make_nik(rng)
    return {
        "nik": nik,
        "full_name": "Budi Santoso",
        "date_of_birth": f"19{nik[10:12]}-{nik[8:10]}-{nik[6:8]}",
        "sex": "M",
        "participant_type": "PLACED",
        "passport_number": f"C{rng.randint(1000000, 9999999)}",
        "destination_country": "MY",
        "departure_date": "2027-01-10",
        "contract_start": "2027-01-15",
        "contract_months": 24,
        "programs": ["JKK", "JKM"],
    }


def enroll(hub: Supervisor, office: str, body: dict[str, Any]) -> httpx.Response:
    s = hub.settings
    return httpx.post(
        f"http://{s.http_host}:{s.kbri_api_port}/v1/enrollments",
        json=body,
        headers={"Authorization": f"Bearer {OFFICE_TOKENS[office]}", "X-Request-Id": uuid.uuid4().hex},
        timeout=30,
    )


def pay(hub: Supervisor, bank: str, va: str, amount_idr: int, payment_request_id: str | None = None) -> httpx.Response:
    s = hub.settings
    psid, customer_no = va[:8], va[8:]
    body = {
        "partnerServiceId": psid,
        "customerNo": customer_no,
        "virtualAccountNo": va,
        "virtualAccountName": "BUDI SANTOSO",
        "paymentRequestId": payment_request_id or uuid.uuid4().hex,  # the same id again: a re-sent notification
        "paidAmount": {"value": f"{amount_idr}.00", "currency": "IDR"},
        "trxDateTime": datetime.now(UTC).isoformat(timespec="seconds"),
        "channelCode": "6011",
    }
    raw = json.dumps(body).encode()
    token = BANK_TOKENS[bank]
    timestamp = datetime.now(UTC).isoformat(timespec="seconds")
    # Signed like a bank: HMAC-SHA512 with the bank's (first) client secret over the exact bytes sent.
    secret = s.bank_client_secrets[bank][0].get_secret_value().encode()
    return httpx.post(
        f"http://{s.http_host}:{s.bank_api_port}{PAY_PATH}",
        content=raw,
        headers={
            "Content-Type": "application/json",
            "Authorization": f"Bearer {token}",
            "X-PARTNER-ID": bank,
            "X-EXTERNAL-ID": str(random.randint(10**15, 10**16)),
            "X-TIMESTAMP": timestamp,
            "X-SIGNATURE": sign_transactional_hmac(secret, "POST", PAY_PATH, token, raw, timestamp),
            "CHANNEL-ID": "95221",
        },
        timeout=30,
    )


def poll_topic(bootstrap: str, topic: str, until: Callable[[list[Any]], bool], deserializer: Any = None) -> list[Any]:
    """Read a topic from the start until `until(messages)` holds or the deadline passes."""
    conf = {
        "bootstrap.servers": bootstrap,
        "group.id": f"test-{uuid.uuid4().hex}",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "session.timeout.ms": 6000,
    }
    consumer: Any
    if deserializer is not None:
        consumer = DeserializingConsumer({**conf, "value.deserializer": deserializer})
    else:
        consumer = Consumer(conf)
    consumer.subscribe([topic])
    seen: list[Any] = []
    deadline = time.monotonic() + DEADLINE_S
    judged_at = 0.0
    try:
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and not msg.error():
                seen.append(msg)
                # Judging every record against all before it is quadratic: late in a session a topic holds
                # 15,000 records and that alone outlasted the deadline. Judge when idle or twice a second.
                if time.monotonic() - judged_at < 0.5:
                    continue
            judged_at = time.monotonic()
            if until(seen):
                return seen
        if until(seen):
            return seen
    finally:
        consumer.close()
    raise AssertionError(f"{topic}: condition not met within {DEADLINE_S}s after {len(seen)} messages")
