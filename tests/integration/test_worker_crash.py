"""Kill the reconciler with SIGKILL mid-stream, restart it: nothing lost, nothing contradictory.

At-least-once with idempotent outputs: after the restart every member is ACTIVE exactly once on the
members topic, with one credited payment, and any version seen twice is byte-for-byte the same record.
"""

from __future__ import annotations

import os
import random
from collections import defaultdict
from typing import Any

import httpx
import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from hubclient import enroll, enrollment_body, pay, poll_topic

from services.catalogue import MEMBERS
from services.supervisor import Supervisor

pytestmark = pytest.mark.integration

MEMBERS_N = 120


def test_reconciler_killed_and_restarted_loses_and_duplicates_nothing(hub: Supervisor) -> None:
    seed = int.from_bytes(os.urandom(4), "big")
    print(f"seed={seed}")
    rng = random.Random(seed)
    bills: dict[str, tuple[str, int]] = {}
    for _ in range(MEMBERS_N):
        accepted = enroll(hub, "KBRI_KUALA_LUMPUR", enrollment_body(rng))
        assert accepted.status_code == 202, accepted.text
        doc = accepted.json()
        bills[doc["customer_no"]] = (doc["bill"]["virtual_accounts"]["MANDIRI"], doc["bill"]["amount_idr"])

    registry = SchemaRegistryClient({"url": hub.env["SINERGI_SCHEMA_REGISTRY_URL"]})
    decode = AvroDeserializer(registry)

    def ours(msgs: list[Any]) -> list[dict[str, Any]]:
        return [v for v in (m.value() for m in msgs) if v["participant_id"] in bills]

    kill_after = rng.randint(MEMBERS_N // 4, MEMBERS_N // 2)
    worker = hub.child("worker-reconcile")
    customers = list(bills)
    for i, customer_no in enumerate(customers):
        va, amount = bills[customer_no]
        assert pay(hub, "MANDIRI", va, amount).status_code == 200
        if i == kill_after:
            # wait until the reconciler is demonstrably mid-stream, then kill it without warning
            poll_topic(
                hub.bootstrap,
                MEMBERS.name,
                lambda ms: sum(v["status"] == "ACTIVE" for v in ours(ms)) >= kill_after // 2,
                deserializer=decode,
            )
            hub.kill(worker.name)  # SIGKILL; down until spawned again below
            print(f"killed reconciler after {i + 1} payments")
    hub.spawn(worker, hub.env)

    def all_active(msgs: list[Any]) -> bool:
        return {v["participant_id"] for v in ours(msgs) if v["status"] == "ACTIVE"} == set(bills)

    records = ours(poll_topic(hub.bootstrap, MEMBERS.name, all_active, deserializer=decode))
    by_version: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    for value in records:
        by_version[(value["participant_id"], value["version"])].append(value)
    for (pid, version), copies in by_version.items():
        assert all(c == copies[0] for c in copies), f"contradictory copies of {pid}:{version}"
    for pid, (_, amount) in bills.items():
        active = [v for v in records if v["participant_id"] == pid and v["status"] == "ACTIVE"]
        assert {v["version"] for v in active} == {2}
        assert active[0]["paid_amount_idr"] == amount
        assert len(active[0]["payment_event_ids"]) == 1

    health = httpx.get(f"http://{hub.settings.http_host}:{hub.settings.kbri_api_port}/healthz", timeout=5)
    assert health.status_code == 200
