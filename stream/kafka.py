"""Kafka plumbing shared by every stage: client options from settings, topics, batched sends
(how long fetches wait at the broker: :mod:`stream.kafka_pacing`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Sequence
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    CommitFailedError,
    IllegalStateError,
    KafkaConnectionError,
    KafkaError,
    TopicAlreadyExistsError,
)
from aiokafka.helpers import create_ssl_context
from aiokafka.structs import OffsetAndMetadata

from stream.config import KafkaSettings, Settings
from stream.errors import BrokerError, KafkaCallError
from stream.kafka_records import install as install_raw_records
from stream.kafka_records import raw_records
from stream.messages import Message

log = logging.getLogger(__name__)
T = TypeVar("T")


def client_options(kafka: KafkaSettings) -> dict[str, Any]:
    """aiokafka keyword arguments for the cluster, including SASL/TLS. Never logged."""
    opts: dict[str, Any] = {"bootstrap_servers": kafka.bootstrap_servers, "client_id": kafka.client_id,
                            "security_protocol": kafka.security_protocol}
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


def make_producer(settings: Settings, *, transactional_id: str | None = None, **extra: Any) -> AIOKafkaProducer:
    """A producer that waits for every in-sync replica; transactional when given an id
    (exactly-once processing, see :mod:`stream.scoring.transactions`; the model feed's publishes),
    its transactions timed out after ``scoring.transaction_timeout_ms`` unless ``extra`` says."""
    if transactional_id is not None:
        extra = {"transaction_timeout_ms": settings.scoring.transaction_timeout_ms, **extra,
                 "transactional_id": transactional_id, "enable_idempotence": True}
    return AIOKafkaProducer(**client_options(settings.kafka), acks="all", linger_ms=settings.kafka.linger_ms,
                            max_batch_size=512 * 1024, max_request_size=4 * 1024 * 1024, **extra)


def make_consumer(settings: Settings, *topics: str, group_id: str | None, raw: bool = False,
                  **extra: Any) -> AIOKafkaConsumer:
    """A consumer on the project's settings; ``raw``: its records are the decoder's own (offset,
    key, value, timestamp, headers; no topic or partition), without an object per record
    (:mod:`stream.kafka_records`)."""
    if raw and ("value_deserializer" in extra or "key_deserializer" in extra):
        raise ValueError("a raw consumer's records are the decoder's own bytes: no deserializers")
    if raw and install_raw_records():
        extra["value_deserializer"] = raw_records
    opts = dict(
        group_id=group_id, enable_auto_commit=False, auto_offset_reset="earliest",
        fetch_max_wait_ms=settings.kafka.fetch_max_wait_ms, fetch_min_bytes=settings.kafka.fetch_min_bytes,
        session_timeout_ms=settings.kafka.session_timeout_ms,
        heartbeat_interval_ms=settings.kafka.heartbeat_interval_ms,
        max_partition_fetch_bytes=4 * 1024 * 1024,
        # under exactly-once, outputs of aborted transactions (a crash cut short) are never read
        isolation_level=("read_committed" if settings.processing_guarantee == "exactly_once"
                         else "read_uncommitted"),
    )
    opts.update(extra)
    return AIOKafkaConsumer(*topics, **client_options(settings.kafka), **opts)


async def start_client(client: AIOKafkaConsumer | AIOKafkaProducer | AIOKafkaAdminClient,
                       servers: str) -> None:
    try:
        await client.start()
    except (KafkaConnectionError, KafkaError, OSError, asyncio.CancelledError) as exc:
        await asyncio.shield(_close_quietly(client))  # stopping mid-start too: connections closed
        if isinstance(exc, asyncio.CancelledError):
            raise
        raise BrokerError(f"cannot connect to Kafka at {servers}: {type(exc).__name__}") from None


async def wait_for_broker(settings: Settings, stop: asyncio.Event | None = None) -> None:
    """Wait for the cluster at start: retry with doubling backoff (up to
    ``kafka.connect_backoff_max_s``) for ``kafka.connect_timeout_s``, logging "not ready"
    meanwhile, then give up with one line naming the setting."""
    k = settings.kafka
    began = time.monotonic()
    delay = min(0.2, k.connect_backoff_max_s)
    while True:
        admin = AIOKafkaAdminClient(**client_options(k))
        try:
            await start_client(admin, k.bootstrap_servers)
        except BrokerError:
            waited = time.monotonic() - began
            if waited >= k.connect_timeout_s or (stop is not None and stop.is_set()):
                raise BrokerError(f"Kafka at {k.bootstrap_servers} not reachable after {waited:.0f}s "
                                  "(MLSTREAM_KAFKA__CONNECT_TIMEOUT_S)") from None
            log.warning("Kafka at %s not ready; waiting (up to %ss)", k.bootstrap_servers,
                        f"{k.connect_timeout_s:g}")
            delay = min(delay, k.connect_timeout_s - waited)
            if stop is not None:
                with contextlib.suppress(TimeoutError):  # the backoff, cut short by a stop
                    await asyncio.wait_for(stop.wait(), delay)
            else:
                await asyncio.sleep(delay)  # backoff between connection attempts
            delay = min(max(delay, 0.1) * 2, k.connect_backoff_max_s)
            continue
        await admin.close()
        if time.monotonic() - began > 1:
            log.info("Kafka at %s is ready", k.bootstrap_servers)
        return


async def stop_quietly(consumer: AIOKafkaConsumer, deadline_s: float) -> None:
    """Stop a consumer, giving up after ``deadline_s`` (a broker that stopped answering)."""
    try:
        await asyncio.wait_for(consumer.stop(), deadline_s)
    except (TimeoutError, KafkaError) as exc:
        log.warning("consumer did not close cleanly: %s", type(exc).__name__)
    except asyncio.CancelledError:
        # aiokafka's fetcher cancels a fetch task sleeping out a retry backoff and awaits it, so
        # stop() raises the cancellation while the broker is down; ours, if we are cancelled, goes on
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise
        log.warning("consumer did not close cleanly: a fetch it cancelled raised")


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
            t.labelled_examples: 1, t.models: 1, t.shadow_predictions: same, t.shadow_verdicts: 1}


def topic_configs(settings: Settings, name: str) -> dict[str, str]:
    """Per-topic configuration: compacted changelog and models, bounded labelled examples."""
    t = settings.topics
    if name == t.changelog:
        return {"cleanup.policy": "compact", "min.compaction.lag.ms": str(t.changelog_min_compaction_lag_ms)}
    if name == t.models:
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
            await _wait_for_leaders(admin, {t.name: t.num_partitions for t in wanted})
    except (KafkaError, TimeoutError) as exc:  # a node died meanwhile, a controller not ready
        raise KafkaCallError(f"creating topics failed: {type(exc).__name__}") from None
    finally:
        await admin.close()


async def _wait_for_leaders(admin: AIOKafkaAdminClient, partitions: dict[str, int],
                            timeout_s: float = 30.0) -> None:
    """Apache Kafka answers CreateTopics before every partition has a leader; a client that
    starts then gets NotLeaderForPartition and its group may rebalance. Wait for the leaders."""
    deadline = time.monotonic() + timeout_s
    while True:
        topics = await admin.describe_topics(list(partitions))
        led = {t["topic"]: sum(1 for p in t["partitions"] if p["leader"] >= 0 and not p["error_code"])
               for t in topics if not t["error_code"]}
        if all(led.get(name, 0) >= n for name, n in partitions.items()):
            return
        if time.monotonic() > deadline:
            raise KafkaCallError(f"topics have no leader after {timeout_s:.0f} s: "
                              f"{sorted(n for n in partitions if led.get(n, 0) < partitions[n])}")
        await asyncio.sleep(0.1)  # polling the cluster's metadata: there is nothing to wait on


async def within(aw: Awaitable[T], deadline_s: float, what: str) -> T:
    """Await a Kafka call the client would retry forever, for at most ``deadline_s``."""
    try:
        return await asyncio.wait_for(aw, deadline_s)
    except TimeoutError:
        raise KafkaCallError(f"{what} not answered within {deadline_s:g}s "
                                 "(MLSTREAM_KAFKA__REQUEST_DEADLINE_S)") from None


async def missing_topics(settings: Settings) -> list[str]:
    """mlstream's topics that the cluster does not have (any more)."""
    admin = AIOKafkaAdminClient(**client_options(settings.kafka))
    await start_client(admin, settings.kafka.bootstrap_servers)
    try:
        existing = set(await within(admin.list_topics(), settings.kafka.request_deadline_s,
                                    "listing topics"))
    except KafkaError as exc:  # e.g. asked a node that just died, before the cluster fenced it
        raise KafkaCallError(f"listing topics failed: {type(exc).__name__}") from None
    finally:
        await admin.close()
    return [name for name in all_topics(settings) if name not in existing]


_recreated = [0]  # topic recreations by this process: every stage in it starts over


def recreations() -> int:
    """How many times this process recreated lost topics (a stage that sees the number
    change starts over: its read positions belong to topics that no longer exist)."""
    return _recreated[0]


async def check_topics(settings: Settings, *, recreate: bool, missing: list[str] | None = None) -> bool:
    """Are our topics still there (``missing``: as just listed)? A worker that creates topics
    recreates missing ones (True); one that does not stops with one line (BrokerError)."""
    if missing is None:
        missing = await missing_topics(settings)
    if not missing:
        return False
    if not recreate:
        raise BrokerError(f"topic(s) {', '.join(sorted(missing))} no longer exist on the cluster "
                          "and this worker does not create topics; stopping")
    log.error("topic(s) %s disappeared from the cluster (a broker restarted without its data?); "
              "recreating them", ", ".join(sorted(missing)))
    await ensure_topics(settings)
    _recreated[0] += 1
    return True


async def commit_or_redeliver(consumer: AIOKafkaConsumer, offsets: dict[TopicPartition, int],
                              deadline_s: float = 30.0) -> bool:
    """Commit offsets; if the group rebalanced meanwhile, the records are redelivered to the
    partitions' new owners (at-least-once), which is not an error of this worker. A commit
    not answered within ``deadline_s`` raises :class:`KafkaCallError`."""
    if not offsets:
        return True
    try:
        await within(consumer.commit({tp: OffsetAndMetadata(o, "") for tp, o in offsets.items()}),
                     deadline_s, "offset commit")
        return True
    except (CommitFailedError, IllegalStateError) as exc:
        log.warning("offsets not committed (%s); those records will be processed again",
                    type(exc).__name__)
        return False
    except KafkaError as exc:
        raise KafkaCallError(f"offset commit failed: {type(exc).__name__}") from None


async def send_records(producer: AIOKafkaProducer, topic: str, partition: int,
                       keys: Sequence[bytes | None], values: Sequence[bytes | None]) -> list[asyncio.Future[Any]]:
    """Like :func:`send_messages` for plain key/value pairs, without an object per record."""
    futures = []
    batch = producer.create_batch()
    append = batch.append
    for key, value in zip(keys, values):
        if append(key=key, value=value, timestamp=None) is None:
            futures.append(await _send_batch(producer, batch, topic, partition))
            batch = producer.create_batch()
            append = batch.append
            if append(key=key, value=value, timestamp=None) is None:
                raise BrokerError(f"a record of {len(value or b'')} bytes does not fit a produce batch")
    if batch.record_count():
        futures.append(await _send_batch(producer, batch, topic, partition))
    return futures


async def send_messages(producer: AIOKafkaProducer, topic: str, partition: int,
                        messages: Sequence[Message]) -> list[asyncio.Future[Any]]:
    """Append messages into as few produce batches as fit; returns the delivery futures."""
    futures = []
    batch = producer.create_batch()
    for m in messages:
        meta = batch.append(key=m.key, value=m.value, timestamp=m.timestamp_ms, headers=m.headers or [])
        if meta is None:
            futures.append(await _send_batch(producer, batch, topic, partition))
            batch = producer.create_batch()
            if batch.append(key=m.key, value=m.value, timestamp=m.timestamp_ms,
                            headers=m.headers or []) is None:
                raise BrokerError(f"a message of {len(m.value or b'')} bytes does not fit a produce batch")
    if batch.record_count():
        futures.append(await _send_batch(producer, batch, topic, partition))
    return futures


async def acknowledged(futures: list[asyncio.Future[Any]], deadline_s: float) -> None:
    """Wait for produce acknowledgements. Any failure, or none within ``deadline_s``, raises
    :class:`KafkaCallError` with ``outputs_lost``: the offsets behind them must not be committed."""
    try:
        await within(asyncio.gather(*futures), deadline_s, "produce acknowledgements")
    except KafkaCallError as exc:
        exc.outputs_lost = True
        raise
    except KafkaError as exc:
        raise KafkaCallError(f"produce failed: {type(exc).__name__}", outputs_lost=True) from None


async def _send_batch(producer: AIOKafkaProducer, batch: Any, topic: str, partition: int) -> asyncio.Future[Any]:
    """Queue one produce batch. With the partition's earlier batch still unsent (its leader
    gone), aiokafka waits up to its request timeout and then raises: this batch is never written,
    so what produced it must be done again (``outputs_lost``)."""
    try:
        return await producer.send_batch(batch, topic, partition=partition)
    except KafkaError as exc:
        raise KafkaCallError(f"produce to {topic}[{partition}] failed: {type(exc).__name__}",
                             outputs_lost=True) from None


async def read_all(settings: Settings, topic: str, *, max_wait_s: float = 30.0) -> list[Any]:
    """Every record now in ``topic`` (all partitions), read from the start up to the high
    watermarks each fetch reports (the embedded broker's ListOffsets is not exact), within
    ``max_wait_s``."""
    consumer = make_consumer(settings, group_id=None, fetch_max_wait_ms=20)
    await start_client(consumer, settings.kafka.bootstrap_servers)
    try:
        parts = consumer.partitions_for_topic(topic)
        if parts is None:
            await consumer._client.force_metadata_update()
            parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        if not tps:
            return []
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        records: list[Any] = []
        pending = set(tps)
        deadline = time.monotonic() + max_wait_s
        while pending and time.monotonic() < deadline:
            for recs in (await consumer.getmany(*pending, timeout_ms=100, max_records=50_000)).values():
                records += recs
            for tp in list(pending):
                hw = consumer.highwater(tp)
                if hw is not None and await consumer.position(tp) >= hw:
                    pending.discard(tp)
        return records
    finally:
        await stop_quietly(consumer, settings.kafka.request_deadline_s)
