"""Create the catalogue's topics, idempotently (`sinergi topics create`)."""

from __future__ import annotations

import logging

from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError

from services.catalogue import ALL_TOPICS, TopicSpec
from services.config import Settings

log = logging.getLogger(__name__)


def new_topic(spec: TopicSpec, settings: Settings) -> NewTopic:
    return NewTopic(
        name=spec.name,
        num_partitions=spec.partitions or settings.kafka_partitions,
        replication_factor=settings.kafka_replication_factor,
        topic_configs=spec.config(),
    )


def create_topics(bootstrap: str, settings: Settings, specs: tuple[TopicSpec, ...] = ALL_TOPICS) -> list[str]:
    """Create what is missing; return the names created. Existing topics are left as they are."""
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
