"""Component tier: the partner APIs in-process (httpx + ASGITransport) with the in-memory producer."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from connectors.bank.app import create_bank_app
from connectors.kafka_edge import InMemoryProducer
from connectors.kbri.app import create_kbri_app
from services.config import Settings


@pytest.fixture
def edge_settings() -> Settings:
    return Settings()


@pytest.fixture
def producer() -> InMemoryProducer:
    return InMemoryProducer()


@pytest.fixture
async def kbri_client(edge_settings: Settings, producer: InMemoryProducer) -> AsyncIterator[httpx.AsyncClient]:
    app = create_kbri_app(edge_settings, producer)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://kbri.test") as client:
        yield client


@pytest.fixture
async def bank_client(edge_settings: Settings, producer: InMemoryProducer) -> AsyncIterator[httpx.AsyncClient]:
    app = create_bank_app(edge_settings, producer)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bank.test") as client:
        yield client
