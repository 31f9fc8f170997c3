"""Create the catalogue's topics, idempotently (`sinergi topics create`)."""

from __future__ import annotations

import logging

from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError

from services.catalogue import TopicSpec, all_topics
from services.config import Settings
from services.reference import load_offices

log = logging.getLogger(__name__)


def new_topic(spec: TopicSpec, settings: Settings) -> NewTopic:
    return NewTopic(
        name=spec.name,
        num_partitions=spec.partitions or settings.kafka_partitions,
        replication_factor=settings.kafka_replication_factor,
        topic_configs=spec.config(),
    )


def catalogue(settings: Settings) -> tuple[TopicSpec, ...]:
    """Every topic of this deployment: the static catalogue and one update topic per registered office."""
    return all_topics(load_offices(settings.offices_file))


def create_topics(bootstrap: str, settings: Settings, specs: tuple[TopicSpec, ...] | None = None) -> list[str]:
    """Create what is missing; return the names created. Existing topics are left as they are."""
    if specs is None:
        specs = catalogue(settings)
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="sinergi-topics")
    try:
        existing = set(admin.list_topics())
        missing = [new_topic(s, settings) for s in specs if s.name not in existing]
        created: list[str] = []
        for topic in missing:
            try:
                admin.create_topics([topic])
                created.append(topic.name)
            except TopicAlreadyExistsError:
                pass  # created concurrently by another process: that is the desired state
        return created
    finally:
        admin.close()
