"""The payment endpoint consults the inquiry read model: a settled or expired bill is refused before the bank
takes the money; a repeat of a credited payment and a payment before any enrollment are accepted."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import httpx
import pytest
from test_bank_api import CUSTOMER_NO, assert_snap_error, pay, payment
from test_bank_inquiry import WIB, member

from connectors.bank.app import create_bank_app
from connectors.bank.member_book import MemberBook
from connectors.kafka_edge import InMemoryProducer
from services.config import Settings
from services.domain.identity import event_uuid
from services.domain.models import MemberStatus

CREDITED_REQUEST = "MDR-20250901-000001"


@pytest.fixture
def book() -> MemberBook:
    b = MemberBook("FULL")
    b.mark_ready()
    return b


@pytest.fixture
async def client(book: MemberBook, producer: InMemoryProducer) -> AsyncIterator[httpx.AsyncClient]:
    app = create_bank_app(Settings(), producer, book=book)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bank.test") as c:
        yield c


def settle(book: MemberBook) -> None:
    credited = event_uuid("payment", "MANDIRI", CREDITED_REQUEST)
    book.apply(
        member(CUSTOMER_NO, 2, status=MemberStatus.ACTIVE, paid_amount_idr=370_000, payment_event_ids=[credited])
    )


async def test_new_payment_on_a_settled_bill_is_refused_404xx14_and_not_recorded(
    client: httpx.AsyncClient, book: MemberBook, producer: InMemoryProducer
) -> None:
    settle(book)
    resp = await pay(client, payment(paymentRequestId="MDR-20250901-000999"))
    assert_snap_error(resp, 404, "4042514", "BILL_PAID")
    assert producer.records == []


async def test_the_credited_payment_sent_again_is_accepted(
    client: httpx.AsyncClient, book: MemberBook, producer: InMemoryProducer
) -> None:
    settle(book)
    resp = await pay(client, payment(paymentRequestId=CREDITED_REQUEST))
    assert resp.status_code == 200, resp.text
    assert resp.json()["virtualAccountData"]["paymentFlagStatus"] == "00"
    assert len(producer.records) == 1  # downstream drops it by event id: it was credited already


async def test_payment_on_an_expired_bill_is_refused_404xx19(
    client: httpx.AsyncClient, book: MemberBook, producer: InMemoryProducer
) -> None:
    from datetime import datetime

    yesterday = datetime.now(WIB).date() - timedelta(days=1)
    book.apply(member(CUSTOMER_NO, bill_expires_on=yesterday))
    resp = await pay(client, payment())
    assert_snap_error(resp, 404, "4042519", "BILL_EXPIRED")
    assert producer.records == []


async def test_payment_for_a_customer_the_book_does_not_know_is_accepted_to_be_held(
    client: httpx.AsyncClient, producer: InMemoryProducer
) -> None:
    resp = await pay(client, payment())
    assert resp.status_code == 200, resp.text
    assert len(producer.records) == 1


async def test_open_bill_payment_is_accepted(
    client: httpx.AsyncClient, book: MemberBook, producer: InMemoryProducer
) -> None:
    book.apply(member(CUSTOMER_NO))
    resp = await pay(client, payment())
    assert resp.status_code == 200, resp.text
    assert len(producer.records) == 1


async def test_readyz_follows_the_read_model(producer: InMemoryProducer) -> None:
    book = MemberBook("FULL")
    app = create_bank_app(Settings(), producer, book=book)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bank.test") as c:
        loading = await c.get("/readyz")
        assert loading.status_code == 503
        assert loading.json() == {"ready": False, "checks": {"member_book": False}}
        book.mark_ready()
        ready = await c.get("/readyz")
        assert ready.status_code == 200
        assert ready.json() == {"ready": True, "checks": {"member_book": True}}
        assert (await c.get("/healthz")).status_code == 200
