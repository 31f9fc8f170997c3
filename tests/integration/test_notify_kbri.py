"""notify_kbri and core-sim through the real broker: each office's topic gets its own members' updates, its
refused enrollments and its case answers, and nothing of another office.

Traffic: two members enrolled at KBRI Kuala Lumpur (one of them pays), one at KDEI Taipei, all through the
KBRI API; one enrollment the normalizer refuses, produced straight to kbri.enrollments.raw with the intake
headers (the API would have refused it itself); one case produced to kbri.cases.v1, which core-sim answers.
"""

from __future__ import annotations

import json
import random
import uuid
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

import pytest
from confluent_kafka import Producer
from hubclient import enroll, enrollment_body, pay, poll_topic

from connectors.http_common import iso_utc
from connectors.intake import CHANNEL_OFFICE, H_CHANNEL, H_EVENT_ID, H_OFFICE, H_RECEIVED_AT, H_REQUEST_ID
from services.catalogue import ENROLLMENTS_RAW, KBRI_CASES, office_updates_topic
from services.codec import build_codec
from services.domain.identity import event_uuid, passport_lookup_key
from services.domain.models import Case, CaseCategory
from services.domain.office_updates import H_LOOKUP_PASSPORT, H_UPDATE_ID
from services.supervisor import Supervisor

pytestmark = pytest.mark.integration

KL = "KBRI_KUALA_LUMPUR"
TPE = "KDEI_TAIPEI"


def _updates(msgs: list[Any]) -> list[dict[str, Any]]:
    return [json.loads(m.value()) for m in msgs]


def _produce(hub: Supervisor, topic: str, key: bytes, value: bytes, headers: list[tuple[str, bytes]]) -> None:
    producer = Producer({"bootstrap.servers": hub.bootstrap, "acks": "all"})
    producer.produce(topic, key=key, value=value, headers=headers)
    assert producer.flush(30) == 0


def test_each_office_topic_gets_its_own_members_rejections_and_case_answers(hub: Supervisor) -> None:
    rng = random.Random(20261202)
    secret = hub.settings.participant_key_secret.get_secret_value().encode()
    sent: dict[str, dict[str, Any]] = {}  # customer_no -> enrollment body
    owner: dict[str, str] = {}  # customer_no -> office
    bills: dict[str, dict[str, Any]] = {}  # customer_no -> the bill the API answered
    for office in (KL, KL, TPE):
        body = enrollment_body(rng)
        accepted = enroll(hub, office, body)
        assert accepted.status_code == 202, accepted.text
        customer_no = accepted.json()["customer_no"]
        sent[customer_no], owner[customer_no], bills[customer_no] = body, office, accepted.json()["bill"]
    paid_member = next(c for c, o in owner.items() if o == KL)
    bill = bills[paid_member]

    def awaiting(msgs: list[Any]) -> bool:
        return any(
            u["subject"] == paid_member and (u["member"] or {}).get("status") == "AWAITING_PAYMENT"
            for u in _updates(msgs)
        )

    # Paid only once the bill is out, so that the member has two versions (a payment the reconciler holds
    # for a later enrollment is credited in the first one).
    poll_topic(hub.bootstrap, office_updates_topic(KL), awaiting)
    paid = pay(hub, "MANDIRI", bill["virtual_accounts"]["MANDIRI"], bill["amount_idr"])
    assert paid.status_code == 200, paid.text

    # An enrollment that got past the edge (another producer, an old client): the normalizer refuses it.
    refused_body = enrollment_body(rng)
    refused_body["nik"] = "99" + refused_body["nik"][2:]  # no such province
    refused_request = f"tpe-{uuid.uuid4().hex[:12]}"
    _produce(
        hub,
        ENROLLMENTS_RAW.name,
        key=f"test-{refused_request}".encode(),
        value=json.dumps(refused_body).encode(),
        headers=[
            (H_OFFICE, TPE.encode()),
            (H_REQUEST_ID, refused_request.encode()),
            (H_EVENT_ID, event_uuid("enrollment", TPE, refused_request).encode()),
            (H_RECEIVED_AT, iso_utc(datetime.now(UTC)).encode()),
            (H_CHANNEL, CHANNEL_OFFICE.encode()),
        ],
    )

    # A case filed by KL about its paid member, as the KBRI API writes it.
    case_id = f"KL-CASE-{uuid.uuid4().hex[:8]}"
    case_event_id = event_uuid("case", KL, case_id)
    codec = build_codec(hub.settings.model_copy(update={"schema_registry_url": hub.env["SINERGI_SCHEMA_REGISTRY_URL"]}))
    case = Case(
        case_event_id=case_event_id,
        case_id=case_id,
        office_code=KL,
        participant_id=paid_member,
        category=CaseCategory.QUESTION,
        text="Kapan kartu peserta dikirim?",
        received_at=datetime.now(UTC).replace(microsecond=0),
    )
    _produce(hub, KBRI_CASES.name, case_event_id.encode(), codec.encode("sinergi.Case", case), [])

    def kl_done(msgs: list[Any]) -> bool:
        ups = _updates(msgs)
        members = {(u["subject"], u["member"]["status"]) for u in ups if u["type"] == "member.updated"}
        answered = any(u["type"] == "case.updated" and u["subject"] == case_id and u["sequence"] == 2 for u in ups)
        kl_members = {c for c, o in owner.items() if o == KL}
        return answered and (paid_member, "ACTIVE") in members and kl_members <= {s for s, _ in members}

    def tpe_done(msgs: list[Any]) -> bool:
        ups = _updates(msgs)
        subjects = {u["subject"] for u in ups}
        return refused_request in subjects and {c for c, o in owner.items() if o == TPE} <= subjects

    topics = {KL: poll_topic(hub.bootstrap, office_updates_topic(KL), kl_done)}
    topics[TPE] = poll_topic(hub.bootstrap, office_updates_topic(TPE), tpe_done)

    niks = [b["nik"].encode() for b in (*sent.values(), refused_body)]
    passports = [b["passport_number"].encode() for b in (*sent.values(), refused_body)]
    for office, msgs in topics.items():
        ids_by_position: dict[tuple[str, str, int], set[str]] = defaultdict(set)
        positions_by_id: dict[str, set[tuple[str, str, int]]] = defaultdict(set)
        for msg in msgs:
            update = json.loads(msg.value())
            headers = dict(msg.headers() or [])
            # Isolation: an office's topic holds that office's updates only, and none of another office's members.
            assert update["office"] == office
            if update["subject"] in owner:
                assert owner[update["subject"]] == office
            assert msg.key() == update["subject"].encode()
            assert headers[H_UPDATE_ID] == update["update_id"].encode()
            for blob in (msg.value(), msg.key(), *headers.values()):
                assert not any(nik in blob for nik in niks)
                assert not any(passport in blob for passport in passports)
            position = (update["type"], update["subject"], update["sequence"])
            ids_by_position[position].add(update["update_id"])
            positions_by_id[update["update_id"]].add(position)
        # Redeliveries carry the same id: one id per (subject, sequence), one (subject, sequence) per id.
        assert all(len(ids) == 1 for ids in ids_by_position.values())
        assert all(len(positions) == 1 for positions in positions_by_id.values())

    kl = _updates(topics[KL])
    paid_versions = [u for u in kl if u["type"] == "member.updated" and u["subject"] == paid_member]
    sequences = [u["sequence"] for u in paid_versions]
    assert sequences == sorted(sequences) and {1, 2} <= set(sequences)  # one partition: versions in order
    first = next(u["member"] for u in paid_versions if u["member"]["status"] == "AWAITING_PAYMENT")
    active = next(u["member"] for u in paid_versions if u["member"]["status"] == "ACTIVE")
    assert active["nik_masked"] == "*" * 12 + sent[paid_member]["nik"][-4:]
    amount = bill["amount_idr"]
    assert (first["bill"]["outstanding_idr"], first["payments_credited"]) == (amount, 0)
    assert (active["bill"]["paid_idr"], active["bill"]["outstanding_idr"], active["payments_credited"]) == (
        amount,
        0,
        1,
    )
    # The office can hand the worker the same VA numbers the API answered at enrollment, at every bank.
    assert active["bill"]["virtual_accounts"] == bill["virtual_accounts"]
    assert active["coverage"]["start"] is not None
    for msg in topics[KL]:
        update = json.loads(msg.value())
        if update["type"] == "member.updated" and update["subject"] in sent:
            passport = sent[update["subject"]]["passport_number"]
            assert dict(msg.headers())[H_LOOKUP_PASSPORT] == passport_lookup_key(passport, secret).encode()

    case_updates = sorted(
        (u for u in kl if u["type"] == "case.updated" and u["subject"] == case_id), key=lambda u: u["sequence"]
    )
    assert [(u["sequence"], u["case"]["status"]) for u in case_updates] == [(1, "RECEIVED"), (2, "ANSWERED")]
    assert case_updates[0]["case"]["answer"] is None and case_updates[1]["case"]["answer"]
    assert not any(u["subject"] == case_id for u in _updates(topics[TPE]))

    rejection = next(u for u in _updates(topics[TPE]) if u["subject"] == refused_request)
    assert rejection["type"] == "enrollment.rejected"
    assert rejection["rejection"] == {
        "request_id": refused_request,
        "reason": "NIK_PROVINCE",
        "field": "nik",
        "stage": "normalize_enrollments",
    }
    assert not any(u["subject"] == refused_request for u in kl)
