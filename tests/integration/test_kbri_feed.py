"""The KBRI read side end to end: enroll at two offices, and each office's pull feed and inquiry show its
member only, from the real office topics (notify_kbri wrote them; the KBRI API's own reader loaded them).

Nothing is injected: the member view comes from the reconciler's member version, fanned out by notify_kbri
to kbri.updates.<office>.v1, read by the KBRI API process into its office book. A case filed through the API
is read back from kbri.cases.v1 by a stock Confluent consumer with its own AvroDeserializer.
"""

from __future__ import annotations

import random
import time
from typing import Any

import httpx
import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from hubclient import DEADLINE_S, OFFICE_TOKENS, enroll, enrollment_body, poll_topic

from services.supervisor import Supervisor

pytestmark = pytest.mark.integration

KL, TPE = "KBRI_KUALA_LUMPUR", "KDEI_TAIPEI"


def _api(hub: Supervisor) -> str:
    return f"http://{hub.settings.http_host}:{hub.settings.kbri_api_port}"


def _auth(office: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {OFFICE_TOKENS[office]}"}


def _until(what: str, attempt: Any) -> Any:
    """Call `attempt()` until it returns something, within the deadline (a short pause between tries)."""
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        found = attempt()
        if found is not None:
            return found
        time.sleep(0.25)
    raise AssertionError(f"not within {DEADLINE_S}s: {what}")


class FeedReader:
    """An office's pull-feed client: keeps `next` only after a page was read, as the guide says."""

    def __init__(self, hub: Supervisor, office: str) -> None:
        self.hub, self.office = hub, office
        self.cursor: str | None = None
        self.updates: list[dict[str, Any]] = []

    def poll(self) -> None:
        params = {"limit": "50"} if self.cursor is None else {"limit": "50", "after": self.cursor}
        resp = httpx.get(f"{_api(self.hub)}/v1/updates", params=params, headers=_auth(self.office), timeout=30)
        if resp.status_code == 503:  # the API's book is still loading
            assert resp.json()["reason"] == "READ_MODEL_NOT_READY" and resp.headers["Retry-After"]
            return
        assert resp.status_code == 200, resp.text
        page = resp.json()
        self.updates.extend(page["updates"])
        self.cursor = page["next"]

    def member_awaiting(self, customer_no: str) -> dict[str, Any] | None:
        self.poll()
        for update in self.updates:
            member = update.get("member") or {}
            if member.get("customer_no") == customer_no and member.get("status") == "AWAITING_PAYMENT":
                return update
        return None


def test_each_office_feed_shows_its_own_member_with_the_bill(hub: Supervisor) -> None:
    rng = random.Random(4242)
    bodies = {KL: enrollment_body(rng), TPE: {**enrollment_body(rng), "destination_country": "TW"}}
    accepted = {}
    for office, body in bodies.items():
        resp = enroll(hub, office, body)
        assert resp.status_code == 202, resp.text
        accepted[office] = resp.json()
    customer = {office: answer["customer_no"] for office, answer in accepted.items()}

    readers = {office: FeedReader(hub, office) for office in bodies}
    for office, reader in readers.items():
        update = _until(f"{office}'s member in its feed", lambda r=reader, o=office: r.member_awaiting(customer[o]))
        assert update["office"] == office and update["type"] == "member.updated"
        assert update["subject"] == customer[office]
        bill = update["member"]["bill"]
        assert bill["amount_idr"] == accepted[office]["bill"]["amount_idr"] == 370_000
        assert bill["outstanding_idr"] == 370_000
        assert bill["virtual_accounts"] == accepted[office]["bill"]["virtual_accounts"]
        assert update["member"]["nik_masked"] == "*" * 12 + bodies[office]["nik"][-4:]

    for office, reader in readers.items():
        other = TPE if office == KL else KL
        reader.poll()  # whatever else arrived meanwhile
        assert {u["office"] for u in reader.updates} == {office}
        assert customer[other] not in {u["subject"] for u in reader.updates}
        text = str(reader.updates)
        for body in bodies.values():
            assert body["nik"] not in text and body["passport_number"] not in text
        # Every update once per (subject, sequence) after the office's own dedup by update_id.
        unique = {u["update_id"]: (u["subject"], u["sequence"]) for u in reader.updates}
        assert len(set(unique.values())) == len(unique)


def test_inquiry_by_nik_and_passport_answers_the_owner_only(hub: Supervisor) -> None:
    rng = random.Random(777)
    body = enrollment_body(rng)
    resp = enroll(hub, KL, body)
    assert resp.status_code == 202, resp.text
    customer_no = resp.json()["customer_no"]

    def search(office: str, query: dict[str, str]) -> httpx.Response:
        return httpx.post(f"{_api(hub)}/v1/members/search", json=query, headers=_auth(office), timeout=30)

    def owner_sees() -> httpx.Response | None:
        found = search(KL, {"nik": body["nik"]})
        if found.status_code == 200:
            return found
        assert found.status_code in (404, 503), found.text  # not applied yet / still loading
        return None

    answer = _until("the owner's inquiry by NIK", owner_sees).json()
    assert answer["customer_no"] == customer_no and answer["status"] in ("AWAITING_PAYMENT", "ACTIVE")
    assert body["nik"] not in str(answer) and body["passport_number"] not in str(answer)

    by_passport = search(KL, {"passport_number": body["passport_number"]})
    assert by_passport.status_code == 200 and by_passport.json()["customer_no"] == customer_no
    by_number = httpx.get(f"{_api(hub)}/v1/members/{customer_no}", headers=_auth(KL), timeout=30)
    assert by_number.status_code == 200

    for query in ({"nik": body["nik"]}, {"passport_number": body["passport_number"]}):
        theirs = search(TPE, query)
        assert theirs.status_code == 404 and theirs.json()["reason"] == "MEMBER_NOT_FOUND"
    theirs = httpx.get(f"{_api(hub)}/v1/members/{customer_no}", headers=_auth(TPE), timeout=30)
    assert theirs.status_code == 404 and theirs.json()["reason"] == "MEMBER_NOT_FOUND"


def test_a_case_is_stored_as_avro_a_stock_consumer_can_read(hub: Supervisor) -> None:
    case = {"case_id": f"kl-case-{random.Random().randrange(10**9)}", "category": "QUESTION", "text": "Apa kabar?"}

    def file_case() -> httpx.Response | None:
        resp = httpx.post(f"{_api(hub)}/v1/cases", json=case, headers=_auth(KL), timeout=30)
        if resp.status_code == 503:  # the case codec is still being built against the registry
            return None
        return resp

    resp = _until("case intake", file_case)
    assert resp.status_code == 202, resp.text
    event_id = resp.json()["case_event_id"]

    registry_url = hub.env["SINERGI_SCHEMA_REGISTRY_URL"]
    deserializer = AvroDeserializer(SchemaRegistryClient({"url": registry_url}))
    messages = poll_topic(
        hub.bootstrap,
        "kbri.cases.v1",
        lambda seen: any(m.key() == event_id.encode() for m in seen),
        deserializer=deserializer,
    )
    (record,) = [m.value() for m in messages if m.key() == event_id.encode()][-1:]
    assert record["case_id"] == case["case_id"] and record["office_code"] == KL
    assert record["category"] == "QUESTION" and record["text"] == "Apa kabar?"
    assert record["participant_id"] is None and record["attachments"] == []
