"""The fault suite runs on Apache Kafka of its own (one KRaft node it may kill and restart)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from stream.tools.kafka_server import KafkaServer


@pytest.fixture(scope="module")
def fault_kafka() -> Iterator[KafkaServer]:
    with KafkaServer() as server:
        yield server


@pytest.fixture()
def broker_kind() -> str:
    return "kafka"


@pytest.fixture()
def bootstrap(fault_kafka: KafkaServer) -> str:
    return fault_kafka.bootstrap
