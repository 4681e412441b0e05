"""Kafka plumbing shared by every stage: client options from settings, topics, batched sends."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka import TopicPartition
from aiokafka.errors import (
    CommitFailedError,
    IllegalStateError,
    KafkaConnectionError,
    KafkaError,
    TopicAlreadyExistsError,
)
from aiokafka.structs import OffsetAndMetadata
from aiokafka.helpers import create_ssl_context

from stream.config import KafkaSettings, Settings
from stream.errors import BrokerError
from stream.messages import Message

log = logging.getLogger(__name__)


def client_options(kafka: KafkaSettings) -> dict[str, Any]:
    """aiokafka keyword arguments for the cluster, including SASL/TLS. Never logged."""
    opts: dict[str, Any] = {
        "bootstrap_servers": kafka.bootstrap_servers,
        "client_id": kafka.client_id,
        "security_protocol": kafka.security_protocol,
    }
    if kafka.security_protocol in ("SSL", "SASL_SSL"):
        opts["ssl_context"] = create_ssl_context(
            cafile=str(kafka.ssl_cafile) if kafka.ssl_cafile else None,
            certfile=str(kafka.ssl_certfile) if kafka.ssl_certfile else None,
            keyfile=str(kafka.ssl_keyfile) if kafka.ssl_keyfile else None,
            password=kafka.ssl_key_password.get_secret_value() if kafka.ssl_key_password else None,
        )
    if kafka.security_protocol.startswith("SASL"):
        opts["sasl_mechanism"] = kafka.sasl_mechanism or "PLAIN"
        opts["sasl_plain_username"] = kafka.sasl_username
        opts["sasl_plain_password"] = (kafka.sasl_password.get_secret_value()
                                       if kafka.sasl_password else None)
    return opts


def make_producer(settings: Settings, **extra: Any) -> AIOKafkaProducer:
    return AIOKafkaProducer(**client_options(settings.kafka), acks="all", linger_ms=2,
                            max_batch_size=512 * 1024, max_request_size=4 * 1024 * 1024, **extra)


def make_consumer(settings: Settings, *topics: str, group_id: str | None, **extra: Any) -> AIOKafkaConsumer:
    opts = dict(
        group_id=group_id, enable_auto_commit=False, auto_offset_reset="earliest",
        fetch_max_wait_ms=settings.kafka.fetch_max_wait_ms,
        session_timeout_ms=settings.kafka.session_timeout_ms,
        heartbeat_interval_ms=settings.kafka.heartbeat_interval_ms,
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    opts.update(extra)
    return AIOKafkaConsumer(*topics, **client_options(settings.kafka), **opts)


async def start_client(client: AIOKafkaConsumer | AIOKafkaProducer | AIOKafkaAdminClient,
                       servers: str) -> None:
    try:
        await client.start()
    except (KafkaConnectionError, KafkaError, OSError) as exc:
        await _close_quietly(client)
        raise BrokerError(f"cannot connect to Kafka at {servers}: {type(exc).__name__}") from None


async def _close_quietly(client: Any) -> None:
    try:
        await (client.close() if isinstance(client, AIOKafkaAdminClient) else client.stop())
    except Exception:  # already broken; the caller reports the first error
        pass


def all_topics(settings: Settings) -> dict[str, int]:
    t = settings.topics
    same = t.partitions  # changelog, predictions and features are co-partitioned with events
    return {t.events: same, t.labels: same, t.predictions: same, t.dead_letter: same,
            t.features: same, t.changelog: same, t.drift: 1, t.retrain: 1, t.model_updates: 1,
            t.labelled_examples: 1}


def topic_configs(settings: Settings, name: str) -> dict[str, str]:
    """Per-topic configuration: compacted changelog, bounded labelled examples."""
    t = settings.topics
    if name == t.changelog:
        return {"cleanup.policy": "compact"}
    if name == t.labelled_examples:
        return {"cleanup.policy": "delete", "retention.ms": str(t.labelled_examples_retention_ms),
                "retention.bytes": str(t.labelled_examples_retention_bytes)}
    return {}


async def ensure_topics(settings: Settings, extra: dict[str, int] | None = None) -> None:
    """Create missing topics (idempotent), and ``extra`` ones (name: partitions). On a managed
    cluster, pre-create them instead."""
    admin = AIOKafkaAdminClient(**client_options(settings.kafka))
    await start_client(admin, settings.kafka.bootstrap_servers)
    try:
        existing = set(await admin.list_topics())
        wanted = [NewTopic(name, n, settings.topics.replication_factor,
                           topic_configs=topic_configs(settings, name))
                  for name, n in {**all_topics(settings), **(extra or {})}.items() if name not in existing]
        if wanted:
            try:
                await admin.create_topics(wanted)
            except TopicAlreadyExistsError:
                pass  # another worker won the race
    finally:
        await admin.close()


async def commit_or_redeliver(consumer: AIOKafkaConsumer, offsets: dict[TopicPartition, int]) -> bool:
    """Commit offsets; if the group rebalanced meanwhile, the records are redelivered to the
    partitions' new owners (at-least-once), which is not an error of this worker."""
    if not offsets:
        return True
    try:
        await consumer.commit({tp: OffsetAndMetadata(o, "") for tp, o in offsets.items()})
        return True
    except (CommitFailedError, IllegalStateError) as exc:
        log.warning("offsets not committed (%s); those records will be processed again",
                    type(exc).__name__)
        return False


async def send_records(producer: AIOKafkaProducer, topic: str, partition: int,
                       keys: Sequence[bytes | None], values: Sequence[bytes | None]) -> list[asyncio.Future[Any]]:
    """Like :func:`send_messages` for plain key/value pairs, without an object per record."""
    futures = []
    batch = producer.create_batch()
    append = batch.append
    for key, value in zip(keys, values):
        if append(key=key, value=value, timestamp=None) is None:
            futures.append(await producer.send_batch(batch, topic, partition=partition))
            batch = producer.create_batch()
            append = batch.append
            if append(key=key, value=value, timestamp=None) is None:
                raise BrokerError(f"a record of {len(value or b'')} bytes does not fit a produce batch")
    if batch.record_count():
        futures.append(await producer.send_batch(batch, topic, partition=partition))
    return futures


async def send_messages(producer: AIOKafkaProducer, topic: str, partition: int,
                        messages: Sequence[Message]) -> list[asyncio.Future[Any]]:
    """Append messages into as few produce batches as fit; returns the delivery futures."""
    futures = []
    batch = producer.create_batch()
    for m in messages:
        meta = batch.append(key=m.key, value=m.value, timestamp=m.timestamp_ms, headers=m.headers or [])
        if meta is None:
            futures.append(await producer.send_batch(batch, topic, partition=partition))
            batch = producer.create_batch()
            if batch.append(key=m.key, value=m.value, timestamp=m.timestamp_ms,
                            headers=m.headers or []) is None:
                raise BrokerError(f"a message of {len(m.value)} bytes does not fit a produce batch")
    if batch.record_count():
        futures.append(await producer.send_batch(batch, topic, partition=partition))
    return futures
