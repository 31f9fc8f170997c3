"""The embedded broker and topic administration, against a real Tansu process."""

import os

import pytest

from connectors.embedded import EmbeddedBroker
from services.config import Settings
from services.topics import catalogue, create_topics

pytestmark = pytest.mark.integration


def test_broker_starts_on_loopback_answers_and_stops_without_leaving_a_process() -> None:
    broker = EmbeddedBroker().start()
    pid = broker.pid
    assert broker.bootstrap.startswith("127.0.0.1:")
    assert broker.running()
    broker.stop()
    assert not broker.running()
    assert pid is not None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_topics_create_is_idempotent(broker: EmbeddedBroker) -> None:
    settings = Settings()
    first = create_topics(broker.bootstrap, settings)
    second = create_topics(broker.bootstrap, settings)
    assert second == []
    assert set(first) <= {t.name for t in catalogue(settings)}
