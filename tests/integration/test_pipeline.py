"""End to end through the real broker: offices enroll, banks pay, the core topic gets ACTIVE members.

The core topic is read with a stock confluent-kafka consumer using its own AvroDeserializer and
SchemaRegistryClient pointed at the hub's embedded registry: what the BPJS core system would run.
"""

from __future__ import annotations

import random
import uuid
from typing import Any

import httpx
import pytest
from confluent_kafka import Producer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from hubclient import enroll, enrollment_body, pay, poll_topic

from services.catalogue import CORE_MEMBER_RECORDS, ENROLLMENTS_RAW, PAYMENTS_RAW, dlq
from services.supervisor import Supervisor

pytestmark = pytest.mark.integration


def test_enrollments_and_payments_become_active_members_on_the_core_topic(hub: Supervisor) -> None:
    rng = random.Random(20261125)
    expected: dict[str, int] = {}
    niks: list[str] = []
    for office, bank in (("KBRI_KUALA_LUMPUR", "MANDIRI"), ("KDEI_TAIPEI", "BNI"), ("KBRI_KUALA_LUMPUR", "BNI")):
        body = enrollment_body(rng)
        niks.append(body["nik"])
        accepted = enroll(hub, office, body)
        assert accepted.status_code == 202, accepted.text
        doc = accepted.json()
        assert body["nik"] not in accepted.text
        amount = doc["bill"]["amount_idr"]
        assert amount == 37_500 + 332_500  # PLACED, 24-month contract (Permenaker 4/2023 Art. 18)
        paid = pay(hub, bank, doc["bill"]["virtual_accounts"][bank], amount)
        assert paid.status_code == 200, paid.text
        assert paid.json()["responseCode"] == "2002500"
        expected[doc["customer_no"]] = amount

    registry = SchemaRegistryClient({"url": hub.env["SINERGI_SCHEMA_REGISTRY_URL"]})
    stock = AvroDeserializer(registry)

    def all_active(msgs: list[Any]) -> bool:
        active = {m.value()["participant_id"] for m in msgs if m.value()["status"] == "ACTIVE"}
        return set(expected) <= active

    records = poll_topic(hub.bootstrap, CORE_MEMBER_RECORDS.name, all_active, deserializer=stock)
    for msg in records:
        value = msg.value()
        if value["participant_id"] not in expected:
            continue
        assert msg.key() == value["participant_id"].encode()
        if value["status"] == "ACTIVE":
            assert value["paid_amount_idr"] == expected[value["participant_id"]]
            assert value["coverage_start"] is not None and value["coverage_end"] > value["coverage_start"]
            assert len(value["payment_event_ids"]) == 1
    # Keys are keyed hashes: no NIK in any key of the raw, canonical or core topics.
    for topic in (ENROLLMENTS_RAW.name, PAYMENTS_RAW.name, CORE_MEMBER_RECORDS.name):
        msgs = poll_topic(hub.bootstrap, topic, lambda m: len(m) >= len(expected))
        for m in msgs:
            assert all(nik.encode() not in (m.key() or b"") for nik in niks)


def test_bad_input_is_refused_at_the_api_or_dead_lettered_while_good_traffic_flows(hub: Supervisor) -> None:
    rng = random.Random(7)
    bad = enrollment_body(rng)
    bad["nik"] = "99" + bad["nik"][2:]  # no such province
    refused = enroll(hub, "KDEI_TAIPEI", bad)
    assert refused.status_code == 422
    assert refused.json()["reason"] == "NIK_PROVINCE"
    assert bad["nik"] not in refused.text

    # Something that bypassed the API (another producer, an old client) reaches the processor.
    producer = Producer({"bootstrap.servers": hub.bootstrap})
    poison_key = b"poison-" + uuid.uuid4().hex.encode()
    producer.produce(
        ENROLLMENTS_RAW.name, key=poison_key, value=b"\xff{not json", headers=[("sinergi-office", b"KDEI_TAIPEI")]
    )
    producer.flush(10)

    good = enrollment_body(rng)
    accepted = enroll(hub, "KDEI_TAIPEI", good)
    assert accepted.status_code == 202
    customer_no = accepted.json()["customer_no"]

    dead = poll_topic(
        hub.bootstrap, dlq("normalize_enrollments").name, lambda ms: any(m.key() == poison_key for m in ms)
    )
    letter = next(m for m in dead if m.key() == poison_key)
    headers = dict(letter.headers())
    assert headers["dlq-reason"] == b"INVALID_JSON"
    assert headers["dlq-source-topic"] == ENROLLMENTS_RAW.name.encode()
    assert int(headers["dlq-source-offset"]) >= 0
    assert letter.value() == b"\xff{not json"

    registry = SchemaRegistryClient({"url": hub.env["SINERGI_SCHEMA_REGISTRY_URL"]})
    poll_topic(
        hub.bootstrap,
        CORE_MEMBER_RECORDS.name,
        lambda ms: any(m.value()["participant_id"] == customer_no for m in ms),
        deserializer=AvroDeserializer(registry),
    )


def test_no_nik_or_passport_in_any_log_line_or_metric(hub: Supervisor) -> None:
    """Canary identifiers sent through both APIs never appear in the hub's logs or metrics."""
    rng = random.Random(99)
    canaries: list[str] = []
    for _ in range(3):
        body = enrollment_body(rng)
        canaries += [body["nik"], body["passport_number"]]
        accepted = enroll(hub, "KBRI_KUALA_LUMPUR", body)
        assert accepted.status_code == 202
        doc = accepted.json()
        bill = doc["bill"]
        assert pay(hub, "MANDIRI", bill["virtual_accounts"]["MANDIRI"], bill["amount_idr"]).status_code == 200
        bad = dict(body, contract_months=0)  # refused: the error path logs too
        assert enroll(hub, "KBRI_KUALA_LUMPUR", bad).status_code == 422
        last_customer = doc["customer_no"]
    registry = SchemaRegistryClient({"url": hub.env["SINERGI_SCHEMA_REGISTRY_URL"]})
    poll_topic(
        hub.bootstrap,
        CORE_MEMBER_RECORDS.name,
        lambda ms: any(m.value()["participant_id"] == last_customer and m.value()["status"] == "ACTIVE" for m in ms),
        deserializer=AvroDeserializer(registry),
    )
    s = hub.settings
    scraped = [
        httpx.get(f"http://{s.http_host}:{port}/metrics", timeout=10).text
        for port in (s.bank_api_port, s.kbri_api_port)
    ] + [httpx.get(f"http://{s.http_host}:{s.metrics_port_base + i}/metrics", timeout=10).text for i in range(4)]
    # Every page is a real exposition (an API answering a redirect or an empty body would hide the canaries).
    assert all("sinergi_http_requests_total" in text for text in scraped[:2]), [t[:80] for t in scraped[:2]]
    assert all("# TYPE sinergi_" in text for text in scraped[2:])
    assert any("sinergi_events_in_total" in text for text in scraped)
    logs = [p.read_text(errors="replace") for p in (hub.log_dir).glob("*.log")]
    for canary in canaries:
        for text in scraped + logs:
            assert canary not in text
