"""The KBRI API's read side in-process: member inquiry, the pull feed and case intake over a hand-filled book.

Two offices each have one member: KBRI Kuala Lumpur (KL) and KJRI Johor Bahru (JB). THE MATRIX: KL's key
asking for JB's member in every way it can (customer number, NIK, passport, VA number; JB's updates in KL's
feed; a case about JB's member) gets exactly what it gets for a member that does not exist.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime
from typing import Any

import httpx
import pytest

from connectors.kafka_edge import InMemoryProducer
from connectors.kbri.app import build_context, create_kbri_app
from connectors.kbri.cases import CodecLoader
from connectors.kbri.office_book import OfficeBook, encode_cursor
from connectors.registry.app import SchemaStore, create_registry_app, preload
from services.avro import AvroCodec, RegistryClient, load_schemas, topic_value_schemas
from services.config import Settings
from services.domain.identity import compose_va, participant_id, passport_lookup_key
from services.domain.models import Case, CaseCategory
from services.domain.office_updates import (
    BillView,
    CaseView,
    CoverageView,
    MemberView,
    OfficeUpdate,
    RejectionView,
    UpdateType,
    update_id,
)
from services.reference import load_offices

KL, JB = "KBRI_KUALA_LUMPUR", "KJRI_JOHOR_BAHRU"
TOKENS = {KL: "dev-token-kbri-kl", JB: "dev-token-kjri-jb"}
NIK_KL, PASSPORT_KL = "3602045211870001", "C1234567"
NIK_JB, PASSPORT_JB = "3201011203900002", "B7654321"
NIK_NOBODY, PASSPORT_NOBODY = "3201011203900003", "A1111111"
T0 = datetime(2026, 11, 1, 3, 0, tzinfo=UTC)
PSIDS = {"MANDIRI": "   88001", "BNI": "   88002", "MAYBANK_MY": "   88003"}
SETTINGS = Settings()
SECRET = SETTINGS.participant_key_secret.get_secret_value().encode()


def customer_of(nik: str) -> str:
    return participant_id(nik, SECRET, SETTINGS.customer_no_digits)


CUST_KL, CUST_JB, CUST_NOBODY = customer_of(NIK_KL), customer_of(NIK_JB), customer_of(NIK_NOBODY)


def member(office: str, nik: str, version: int, status: str = "AWAITING_PAYMENT") -> OfficeUpdate:
    customer_no = customer_of(nik)
    paid = 370_000 if status == "ACTIVE" else 0
    return OfficeUpdate(
        update_id=update_id(office, UpdateType.MEMBER_UPDATED, f"{customer_no}:{version}"),
        type=UpdateType.MEMBER_UPDATED,
        office=office,
        subject=customer_no,
        sequence=version,
        occurred_at=T0.replace(minute=version),
        member=MemberView(
            customer_no=customer_no,
            nik_masked="*" * 12 + nik[-4:],
            full_name="Siti Aminah" if office == KL else "Budi Santoso",
            status=status,
            version=version,
            bill=BillView(
                amount_idr=370_000,
                paid_idr=paid,
                outstanding_idr=370_000 - paid,
                expires_on=date(2026, 12, 1),
                virtual_accounts={bank: compose_va(psid, customer_no) for bank, psid in PSIDS.items()},
            ),
            coverage=CoverageView(start=date(2027, 1, 10), end=date(2029, 1, 31))
            if status == "ACTIVE"
            else CoverageView(),
            payments_credited=1 if paid else 0,
            enrollment_event_id=f"enrollment-{office}",
        ),
    )


def rejection(office: str, request_id: str) -> OfficeUpdate:
    return OfficeUpdate(
        update_id=update_id(office, UpdateType.ENROLLMENT_REJECTED, f"{request_id}:NIK_PROVINCE"),
        type=UpdateType.ENROLLMENT_REJECTED,
        office=office,
        subject=request_id,
        sequence=1,
        occurred_at=T0,
        rejection=RejectionView(
            request_id=request_id, reason="NIK_PROVINCE", field="nik", stage="normalize_enrollments"
        ),
    )


def case_answer(office: str, case_id: str, version: int) -> OfficeUpdate:
    return OfficeUpdate(
        update_id=update_id(office, UpdateType.CASE_UPDATED, f"{case_id}:{version}"),
        type=UpdateType.CASE_UPDATED,
        office=office,
        subject=case_id,
        sequence=version,
        occurred_at=T0,
        case=CaseView(case_id=case_id, status="ANSWERED", version=version, answer="Sudah diproses."),
    )


def filled_book(max_updates: int = 1000) -> OfficeBook:
    """KL: its member AWAITING_PAYMENT then ACTIVE, and a rejection. JB: its member and a case answer."""
    book = OfficeBook(load_offices(SETTINGS.offices_file), max_updates)
    kl_key, jb_key = passport_lookup_key(PASSPORT_KL, SECRET), passport_lookup_key(PASSPORT_JB, SECRET)
    book.apply(KL, 0, member(KL, NIK_KL, 1), kl_key)
    book.apply(KL, 1, rejection(KL, "kl-req-9"))
    book.apply(KL, 2, member(KL, NIK_KL, 2, "ACTIVE"), kl_key)
    book.apply(JB, 0, member(JB, NIK_JB, 1), jb_key)
    book.apply(JB, 1, case_answer(JB, "jb-case-1", 2))
    book.mark_ready()
    return book


@pytest.fixture
async def codec() -> AsyncIterator[AvroCodec]:
    """The real Avro codec over an in-process embedded registry (ASGI: nothing leaves the process)."""
    store = SchemaStore()
    preload(store, SETTINGS.schemas_dir)
    registry = RegistryClient("http://registry.test", transport=httpx.ASGITransport(app=create_registry_app(store)))
    schemas = load_schemas(SETTINGS.schemas_dir)
    started = AvroCodec(registry, schemas, topic_value_schemas(schemas))
    await started.start()
    yield started
    await registry.aclose()


@pytest.fixture
def book() -> OfficeBook:
    return filled_book()


@pytest.fixture
async def client(book: OfficeBook, codec: AvroCodec, producer: InMemoryProducer) -> AsyncIterator[httpx.AsyncClient]:
    app = create_kbri_app(SETTINGS, producer, book=book, codec=codec)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://kbri.test") as c:
        yield c


def auth(office: str = KL) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[office]}"}


async def search(client: httpx.AsyncClient, body: Any, office: str = KL) -> httpx.Response:
    return await client.post("/v1/members/search", json=body, headers=auth(office))


def assert_error(resp: httpx.Response, status: int, reason: str, field: str | None = None) -> None:
    assert resp.status_code == status, resp.text
    assert resp.json() == {"reason": reason, "field": field, "message": resp.json()["message"]}


def assert_no_personal_data(text: str) -> None:
    for value in (NIK_KL, NIK_JB, NIK_NOBODY, PASSPORT_KL, PASSPORT_JB, PASSPORT_NOBODY):
        assert value not in text


# --- inquiry ---------------------------------------------------------------------------------------------------
async def test_an_office_reads_its_own_member_by_customer_number(client: httpx.AsyncClient) -> None:
    resp = await client.get(f"/v1/members/{CUST_KL}", headers=auth())
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["customer_no"] == CUST_KL
    assert body["status"] == "ACTIVE" and body["version"] == 2  # the latest version
    assert body["nik_masked"] == "************0001"
    assert body["full_name"] == "Siti Aminah"
    assert body["bill"] == {
        "amount_idr": 370_000,
        "paid_idr": 370_000,
        "outstanding_idr": 0,
        "expires_on": "2026-12-01",
        "virtual_accounts": {bank: compose_va(psid, CUST_KL) for bank, psid in PSIDS.items()},
    }
    assert body["coverage"] == {"start": "2027-01-10", "end": "2029-01-31"}
    assert body["payments_credited"] == 1
    assert datetime.fromisoformat(body["updated_at"]) == T0.replace(minute=2)
    assert_no_personal_data(resp.text)


@pytest.mark.parametrize(
    "query",
    [
        {"nik": NIK_KL},
        {"nik": f"  {NIK_KL} "},
        {"passport_number": PASSPORT_KL},
        {"passport_number": "c123 4567"},  # case and spaces do not matter
        {"virtual_account_no": compose_va("   88002", CUST_KL)},
    ],
    ids=["nik", "nik-padded", "passport", "passport-normalised", "va"],
)
async def test_an_office_finds_its_own_member_by_identifier(client: httpx.AsyncClient, query: dict[str, str]) -> None:
    resp = await search(client, query)
    assert resp.status_code == 200, resp.text
    assert resp.json()["customer_no"] == CUST_KL
    assert_no_personal_data(resp.text)


# --- THE MATRIX: another office's member is an unknown member -------------------------------------------------------
MATRIX = [
    pytest.param(("get", CUST_JB), ("get", CUST_NOBODY), id="customer_no"),
    pytest.param(("search", {"nik": NIK_JB}), ("search", {"nik": NIK_NOBODY}), id="nik"),
    pytest.param(
        ("search", {"passport_number": PASSPORT_JB}), ("search", {"passport_number": PASSPORT_NOBODY}), id="passport"
    ),
    pytest.param(
        ("search", {"virtual_account_no": compose_va("   88001", CUST_JB)}),
        ("search", {"virtual_account_no": compose_va("   88001", CUST_NOBODY)}),
        id="va",
    ),
]


async def _ask(client: httpx.AsyncClient, how: tuple[str, Any]) -> httpx.Response:
    kind, what = how
    if kind == "get":
        return await client.get(f"/v1/members/{what}", headers=auth(KL))
    return await search(client, what, KL)


@pytest.mark.parametrize(("other_office", "nobody"), MATRIX)
async def test_another_office_s_member_is_answered_exactly_like_an_unknown_one(
    client: httpx.AsyncClient, other_office: tuple[str, Any], nobody: tuple[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    theirs, unknown = await _ask(client, other_office), await _ask(client, nobody)
    assert_error(theirs, 404, "MEMBER_NOT_FOUND")
    assert (theirs.status_code, theirs.content) == (unknown.status_code, unknown.content)
    same_headers = {k: v for k, v in theirs.headers.items() if k != "date"}
    assert same_headers == {k: v for k, v in unknown.headers.items() if k != "date"}
    assert_no_personal_data(theirs.text + caplog.text)
    # ... and the owner does find it the same way.
    kind, what = other_office
    owner = (
        await client.get(f"/v1/members/{what}", headers=auth(JB)) if kind == "get" else await search(client, what, JB)
    )
    assert owner.status_code == 200 and owner.json()["customer_no"] == CUST_JB


async def test_another_office_s_updates_never_appear_in_the_feed(client: httpx.AsyncClient) -> None:
    kl = (await client.get("/v1/updates", headers=auth(KL))).json()
    jb = (await client.get("/v1/updates", headers=auth(JB))).json()
    assert {u["office"] for u in kl["updates"]} == {KL}
    assert [u["subject"] for u in kl["updates"]] == [CUST_KL, "kl-req-9", CUST_KL]
    assert [u["subject"] for u in jb["updates"]] == [CUST_JB, "jb-case-1"]
    assert not {u["update_id"] for u in kl["updates"]} & {u["update_id"] for u in jb["updates"]}
    # A cursor earned in JB's feed gives KL nothing of JB's: cursors are positions in the caller's own topic.
    again = (await client.get("/v1/updates", params={"after": jb["next"]}, headers=auth(KL))).json()
    assert {u["office"] for u in again["updates"]} <= {KL}


async def test_a_case_about_another_office_s_member_is_refused_like_an_unknown_one(
    client: httpx.AsyncClient, producer: InMemoryProducer
) -> None:
    theirs = await client.post("/v1/cases", json=case_body(customer_no=CUST_JB), headers=auth(KL))
    unknown = await client.post("/v1/cases", json=case_body(customer_no=CUST_NOBODY), headers=auth(KL))
    assert_error(theirs, 404, "MEMBER_NOT_FOUND")
    assert (theirs.status_code, theirs.content) == (unknown.status_code, unknown.content)
    assert producer.records == []  # nothing filed


# --- inquiry refusals --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("body", "reason", "field"),
    [
        ({}, "SEARCH_KEY", None),
        ({"nik": NIK_KL, "passport_number": PASSPORT_KL}, "SEARCH_KEY", None),
        ({"name": "Siti Aminah"}, "SEARCH_KEY", None),
        ({"nik": "12345"}, "NIK_FORMAT", "nik"),
        ({"nik": 3602045211870001}, "INVALID_FIELD", "nik"),
        ({"passport_number": "C1"}, "PASSPORT_FORMAT", "passport_number"),
        ({"passport_number": "C" * 100}, "PASSPORT_FORMAT", "passport_number"),
        ({"virtual_account_no": "   88001"}, "VA_FORMAT", "virtual_account_no"),
        ({"virtual_account_no": "   88001" + "1" * 21}, "VA_FORMAT", "virtual_account_no"),
    ],
)
async def test_a_malformed_search_is_refused_with_its_reason(
    client: httpx.AsyncClient, body: dict[str, Any], reason: str, field: str | None
) -> None:
    resp = await search(client, body)
    assert_error(resp, 422, reason, field)
    assert_no_personal_data(resp.text)


async def test_search_transport_errors(client: httpx.AsyncClient) -> None:
    not_json = await client.post("/v1/members/search", content=b"{nik", headers=auth())
    assert_error(not_json, 400, "INVALID_JSON")
    wrong_type = await client.post(
        "/v1/members/search", content=b"nik=1", headers={**auth(), "Content-Type": "text/plain"}
    )
    assert_error(wrong_type, 415, "UNSUPPORTED_MEDIA_TYPE")
    too_big = await client.post("/v1/members/search", content=b" " * (SETTINGS.max_body_bytes + 1), headers=auth())
    assert_error(too_big, 413, "BODY_TOO_LARGE")


async def test_a_malformed_customer_number_is_a_400(client: httpx.AsyncClient) -> None:
    assert_error(await client.get("/v1/members/12ab", headers=auth()), 400, "INVALID_FIELD", "customer_no")


# --- the feed ------------------------------------------------------------------------------------------------------
async def test_the_feed_pages_with_an_opaque_cursor(client: httpx.AsyncClient) -> None:
    first = await client.get("/v1/updates", params={"limit": "2"}, headers=auth())
    assert first.status_code == 200
    page = first.json()
    assert [(u["type"], u["sequence"]) for u in page["updates"]] == [("member.updated", 1), ("enrollment.rejected", 1)]
    assert page["has_more"] is True
    assert page["next"] == encode_cursor(2)
    # Each item is the topic's OfficeUpdate document as is.
    assert OfficeUpdate.model_validate(page["updates"][0]) == member(KL, NIK_KL, 1)

    rest = (await client.get("/v1/updates", params={"after": page["next"], "limit": "2"}, headers=auth())).json()
    assert [u["member"]["status"] for u in rest["updates"]] == ["ACTIVE"]
    assert rest["has_more"] is False
    # At-least-once: the same cursor again gives the same page; the end cursor gives nothing new.
    again = (await client.get("/v1/updates", params={"after": page["next"], "limit": "2"}, headers=auth())).json()
    assert again == rest
    idle = (await client.get("/v1/updates", params={"after": rest["next"]}, headers=auth())).json()
    assert idle == {"updates": [], "next": rest["next"], "has_more": False}


async def test_a_new_update_appears_after_the_stored_cursor(client: httpx.AsyncClient, book: OfficeBook) -> None:
    end = (await client.get("/v1/updates", headers=auth())).json()["next"]
    book.apply(KL, 3, member(KL, NIK_KL, 3, "EXPIRED"))
    page = (await client.get("/v1/updates", params={"after": end}, headers=auth())).json()
    assert [u["member"]["status"] for u in page["updates"]] == ["EXPIRED"]


@pytest.mark.parametrize(
    "after",
    ["garbage", "djE6LTE", base64.urlsafe_b64encode(b"v1:2").decode(), "%00"],
    ids=["garbage", "negative", "padded", "nul"],
)
async def test_a_malformed_cursor_is_a_400(client: httpx.AsyncClient, after: str) -> None:
    resp = await client.get("/v1/updates", params={"after": after}, headers=auth())
    assert_error(resp, 400, "CURSOR_INVALID", "after")


@pytest.mark.parametrize("limit", ["0", "501", "-1", "ten", "1.5"])
async def test_an_out_of_range_limit_is_a_400(client: httpx.AsyncClient, limit: str) -> None:
    resp = await client.get("/v1/updates", params={"limit": limit}, headers=auth())
    assert_error(resp, 400, "LIMIT_INVALID", "limit")


async def test_an_expired_cursor_is_a_410_that_points_to_inquiry(codec: AvroCodec, producer: InMemoryProducer) -> None:
    book = OfficeBook([KL, JB], max_updates=2)
    for offset, version in enumerate(range(1, 6)):
        book.apply(KL, offset, member(KL, NIK_KL, version))
    book.mark_ready()
    app = create_kbri_app(SETTINGS, producer, book=book, codec=codec)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://kbri.test") as c:
        resp = await c.get("/v1/updates", params={"after": encode_cursor(1)}, headers=auth())
        assert_error(resp, 410, "CURSOR_EXPIRED", "after")
        assert "/v1/members/" in resp.json()["message"]
        # The resync path: from the oldest held, then inquiry for the rest.
        oldest = (await c.get("/v1/updates", headers=auth())).json()
        assert [u["sequence"] for u in oldest["updates"]] == [4, 5]


# --- not ready: 503, never a false answer ---------------------------------------------------------------------------
async def test_everything_that_reads_the_book_waits_for_it(codec: AvroCodec, producer: InMemoryProducer) -> None:
    loading = OfficeBook([KL, JB])
    loading.apply(KL, 0, member(KL, NIK_KL, 1))  # partly loaded: must not be answered from
    app = create_kbri_app(SETTINGS, producer, book=loading, codec=codec)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://kbri.test") as c:
        answers = [
            await c.get(f"/v1/members/{CUST_KL}", headers=auth()),
            await c.post("/v1/members/search", json={"nik": NIK_KL}, headers=auth()),
            await c.get("/v1/updates", headers=auth()),
            await c.post("/v1/cases", json=case_body(customer_no=CUST_KL), headers=auth()),
        ]
        for resp in answers:
            assert_error(resp, 503, "READ_MODEL_NOT_READY")
            assert resp.headers["Retry-After"] == "5"
        ready = await c.get("/readyz")
        assert ready.status_code == 503 and ready.json()["checks"]["office_book"] is False
        # A case about no member does not need the book.
        assert (await c.post("/v1/cases", json=case_body(), headers=auth())).status_code == 202
        loading.mark_ready()
        assert (await c.get("/readyz")).status_code == 200
        assert (await c.get(f"/v1/members/{CUST_KL}", headers=auth())).status_code == 200


# --- authentication -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", f"/v1/members/{CUST_KL}", None),
        ("POST", "/v1/members/search", {"nik": NIK_KL}),
        ("GET", "/v1/updates", None),
        ("POST", "/v1/cases", {"case_id": "x", "category": "OTHER", "text": "t"}),
    ],
)
@pytest.mark.parametrize("authorization", [None, "Bearer nope", "Basic ZGV2LXRva2VuLWticmkta2w=", "Bearer "])
async def test_no_valid_key_no_answer(
    client: httpx.AsyncClient,
    producer: InMemoryProducer,
    method: str,
    path: str,
    body: dict[str, Any] | None,
    authorization: str | None,
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    resp = await client.request(method, path, json=body, headers=headers)
    assert_error(resp, 401, "UNAUTHORIZED")
    assert resp.headers["WWW-Authenticate"] == "Bearer"
    assert producer.records == []
    assert_no_personal_data(resp.text)


# --- cases ------------------------------------------------------------------------------------------------------------
def case_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "case_id": "KL-CASE-0001",
        "category": "CLAIM_INQUIRY",
        "text": f"Pekerja (NIK {NIK_KL}, paspor {PASSPORT_KL}) menanyakan klaim JKK.",
        "attachments": [{"ref": "https://dms.kbri-kl.example/c/1.pdf", "media_type": "application/pdf"}],
    }
    body.update(overrides)
    return body


async def test_a_case_is_accepted_after_kafka_acked_as_avro(
    client: httpx.AsyncClient, producer: InMemoryProducer, codec: AvroCodec, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    resp = await client.post("/v1/cases", json=case_body(customer_no=CUST_KL), headers=auth())
    assert resp.status_code == 202, resp.text
    accepted = resp.json()
    assert accepted["status"] == "RECEIVED"
    assert_no_personal_data(resp.text + caplog.text)

    (record,) = producer.records
    assert record.topic == "kbri.cases.v1"
    assert record.key == accepted["case_event_id"].encode()
    assert record.header("sinergi-office") == KL.encode()
    assert record.value[0] == 0  # Confluent wire format
    case = codec.decode_model(record.value, Case)
    assert case.case_event_id == accepted["case_event_id"]
    assert case.case_id == "KL-CASE-0001" and case.office_code == KL
    assert case.participant_id == CUST_KL
    assert case.category is CaseCategory.CLAIM_INQUIRY
    assert case.text == case_body()["text"]
    assert [(a.ref, a.media_type) for a in case.attachments] == [
        ("https://dms.kbri-kl.example/c/1.pdf", "application/pdf")
    ]
    assert abs((datetime.now(UTC) - case.received_at).total_seconds()) < 60


async def test_the_same_case_id_is_the_same_case_event(client: httpx.AsyncClient, producer: InMemoryProducer) -> None:
    first = (await client.post("/v1/cases", json=case_body(), headers=auth())).json()
    second = (await client.post("/v1/cases", json=case_body(), headers=auth())).json()
    other_case = (await client.post("/v1/cases", json=case_body(case_id="KL-CASE-0002"), headers=auth())).json()
    other_office = (await client.post("/v1/cases", json=case_body(), headers=auth(JB))).json()
    assert first["case_event_id"] == second["case_event_id"]
    assert len({first["case_event_id"], other_case["case_event_id"], other_office["case_event_id"]}) == 3
    assert [r.key for r in producer.records][:2] == [first["case_event_id"].encode()] * 2


@pytest.mark.parametrize(
    ("overrides", "reason", "field"),
    [
        ({"case_id": "has space"}, "CASE_ID_FORMAT", "case_id"),
        ({"category": "GOSSIP"}, "CASE_CATEGORY", "category"),
        ({"text": "x" * 4001}, "CASE_TEXT", "text"),
        ({"text": f"NIK {NIK_KL}\x07"}, "CASE_TEXT", "text"),
        ({"attachments": [{"ref": "ftp://x"}] * 11}, "ATTACHMENTS", "attachments"),
        ({"attachments": [{"ref": "http://dms.example/a"}]}, "ATTACHMENT_REF", "attachments[0].ref"),
        ({"customer_no": "abc"}, "INVALID_FIELD", "customer_no"),
    ],
)
async def test_a_case_breaking_a_rule_is_refused_and_not_produced(
    client: httpx.AsyncClient,
    producer: InMemoryProducer,
    overrides: dict[str, Any],
    reason: str,
    field: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    resp = await client.post("/v1/cases", json=case_body(**overrides), headers=auth())
    assert_error(resp, 422, reason, field)
    assert producer.records == []
    assert_no_personal_data(resp.text + caplog.text)  # the text names a NIK and a passport


async def test_case_transport_errors(client: httpx.AsyncClient) -> None:
    assert_error(await client.post("/v1/cases", content=b"[1]", headers=auth()), 400, "BODY_NOT_OBJECT")
    dup = b'{"case_id": "a", "case_id": "b"}'
    assert_error(await client.post("/v1/cases", content=dup, headers=auth()), 400, "DUPLICATE_KEY", "case_id")
    text = {**auth(), "Content-Type": "text/plain"}
    assert_error(await client.post("/v1/cases", content=b"{}", headers=text), 415, "UNSUPPORTED_MEDIA_TYPE")


async def test_a_case_kafka_did_not_ack_is_a_503_to_retry(
    client: httpx.AsyncClient, producer: InMemoryProducer
) -> None:
    producer.failing = "TIMEOUT"
    resp = await client.post("/v1/cases", json=case_body(), headers=auth())
    assert_error(resp, 503, "BROKER_UNAVAILABLE")
    assert resp.headers["Retry-After"] == "5"
    producer.failing = None
    retried = await client.post("/v1/cases", json=case_body(), headers=auth())
    assert retried.status_code == 202 and len(producer.records) == 1


async def test_cases_wait_for_the_codec(book: OfficeBook, producer: InMemoryProducer, codec: AvroCodec) -> None:
    app = create_kbri_app(SETTINGS, producer, book=book)  # no codec yet: the registry was not reached
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://kbri.test") as c:
        resp = await c.post("/v1/cases", json=case_body(), headers=auth())
        assert_error(resp, 503, "CASES_UNAVAILABLE")
        assert resp.headers["Retry-After"] == "5"
    assert producer.records == []


async def test_the_codec_loader_retries_until_the_registry_answers(book: OfficeBook, codec: AvroCodec) -> None:
    ctx = build_context(SETTINGS.model_copy(update={"read_model_retry_max_s": 0.01}), InMemoryProducer(), book=book)
    failures = iter([ConnectionError("registry down"), ConnectionError("still down")])

    def build(_settings: Settings) -> AvroCodec:
        for failure in failures:
            raise failure
        return codec

    loader = CodecLoader(ctx.settings, ctx, build=build)
    await loader.start()
    try:
        deadline = time.monotonic() + 10
        while not await loader.ready():
            assert time.monotonic() < deadline, "codec never built"
            await asyncio.sleep(0.005)
        assert ctx.codec is codec and loader.attempts == 3
    finally:
        await loader.close()


# --- OpenAPI --------------------------------------------------------------------------------------------------------
async def test_the_read_side_is_documented(client: httpx.AsyncClient) -> None:
    doc = (await client.get("/openapi.json")).json()
    assert {"/v1/members/{customer_no}", "/v1/members/search", "/v1/updates", "/v1/cases"} <= set(doc["paths"])
    search_body = doc["paths"]["/v1/members/search"]["post"]["requestBody"]["content"]["application/json"]
    assert search_body["schema"]["$ref"].endswith("/MemberSearchRequest")
    assert "410" in doc["paths"]["/v1/updates"]["get"]["responses"]
    assert "404" in doc["paths"]["/v1/cases"]["post"]["responses"]
    assert json.dumps(doc).count("passport_number") >= 1  # documented, never a query parameter
    assert all(p["name"] not in ("nik", "passport_number") for p in doc["paths"]["/v1/updates"]["get"]["parameters"])
