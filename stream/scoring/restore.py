"""Entity state rebuilt from the changelog when a scorer is assigned a partition (start,
restart, rebalance): each changelog partition read up to its end, bounded in time."""

from __future__ import annotations

import time

from aiokafka import TopicPartition

from stream.config import Settings
from stream.errors import KafkaCallError
from stream.kafka import make_consumer, start_client
from stream.scoring.state import EntityStore, decode_state


async def restore_state(settings: Settings, width: int, partitions: list[int],
                        max_entities: int) -> dict[int, EntityStore]:
    """Rebuild entity state by reading each changelog partition up to its high watermark.

    The high watermark comes from fetch responses (not ListOffsets), which is right on Apache
    Kafka and on the embedded broker, whose ListOffsets is wrong for multi-record batches.
    """
    topic = settings.topics.changelog
    exactly_once = settings.processing_guarantee == "exactly_once"
    stores = {p: EntityStore(width, max_entities=max_entities) for p in partitions}
    consumer = make_consumer(settings, group_id=None, fetch_max_wait_ms=50)
    await start_client(consumer, settings.kafka.bootstrap_servers)
    try:
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        pending = set(tps)
        now = time.time()
        progress = time.monotonic()
        while pending:
            if time.monotonic() - progress > settings.kafka.request_deadline_s:
                raise KafkaCallError(f"restoring state from {topic} made no progress for "
                                     f"{settings.kafka.request_deadline_s:g}s (MLSTREAM_KAFKA__REQUEST_DEADLINE_S)")
            batches = await consumer.getmany(*pending, timeout_ms=200, max_records=50_000)
            if batches:
                progress = time.monotonic()
            for tp, records in batches.items():
                store = stores[tp.partition]
                for rec in records:
                    key = rec.key.decode() if rec.key else ""
                    store.put(key, decode_state(rec.value or b"", width), now)
                store.restored += len(records)
            for tp in list(pending):
                # exactly-once: up to the last stable offset, since records past it belong to
                # a transaction that never commits (its worker crashed) or is not ours to read
                hw = consumer.last_stable_offset(tp) if exactly_once else consumer.highwater(tp)
                if hw is not None and await consumer.position(tp) >= hw:
                    pending.discard(tp)
    finally:
        await consumer.stop()
    return stores
