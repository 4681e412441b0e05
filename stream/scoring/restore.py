"""Entity state rebuilt from the changelog when a scorer is assigned a partition (start,
restart, rebalance) or goes back to its committed offsets: each changelog partition read up to
its end, bounded in time, applying the records as of the input offset processing resumes from."""

from __future__ import annotations

import logging
import time

from aiokafka import TopicPartition
from aiokafka.errors import KafkaError

from stream.config import Settings
from stream.errors import BrokerError, KafkaCallError
from stream.kafka import make_consumer, start_client, stop_quietly, within
from stream.scoring.state import EntityStore, decode_changelog

log = logging.getLogger(__name__)


async def restore_state(settings: Settings, width: int, partitions: list[int], max_entities: int,
                        upto: dict[int, int | None] | None = None) -> dict[int, EntityStore]:
    """Rebuild entity state by reading each changelog partition up to its high watermark
    (exactly-once: with every transaction before it decided, committed or aborted).

    ``upto`` is, per partition, the input offset processing resumes from (its committed offset):
    a record whose state is as of a later offset is skipped, as its events will be processed
    again (at-least-once: a crash after the changelog's acknowledgement, before the offset
    commit). Missing or ``None``: every record applies.

    The high watermark comes from fetch responses (not ListOffsets), which is right on Apache
    Kafka and on the embedded broker, whose ListOffsets is wrong for multi-record batches.
    """
    topic = settings.topics.changelog
    exactly_once = settings.processing_guarantee == "exactly_once"
    stores = {p: EntityStore(width, max_entities=max_entities) for p in partitions}
    limits = {p: (upto or {}).get(p) for p in partitions}
    skipped = dict.fromkeys(partitions, 0)
    # per entity, the input offset of the state applied (-1: untagged): a record as of an older
    # offset that comes later in the log was written late, by a worker paused past its session
    # timeout that wrote its last batch after the partition had moved on; the newer state stands
    applied: dict[int, dict[str, int]] = {p: {} for p in partitions}
    passed_over = dict.fromkeys(partitions, 0)
    skipped_from: dict[int, int] = {}
    consumer = make_consumer(settings, group_id=None, raw=True, fetch_max_wait_ms=50)
    try:
        await start_client(consumer, settings.kafka.bootstrap_servers)
    except BrokerError as exc:  # the broker restarting: the worker's loop retries the restore
        raise KafkaCallError(f"restoring state: {exc}") from None
    # exactly-once: a crashed worker's open transaction is aborted by the broker only after the
    # transaction timeout (plus the broker's check interval), and until then nothing past it is
    # readable: the wait for it is allowed on top of the usual deadline
    patience = settings.kafka.request_deadline_s
    if exactly_once:
        patience += 2 * settings.scoring.transaction_timeout_ms / 1000
    try:
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        pending = set(tps)
        waiting: set[TopicPartition] = set()
        now = time.time()
        progress = time.monotonic()
        while pending:
            if time.monotonic() - progress > patience:
                behind = sorted(tp.partition for tp in waiting)
                raise KafkaCallError(
                    f"restoring state from {topic} made no progress for {patience:g}s"
                    + (f"; a transaction on partitions {behind} stayed open" if behind else "")
                    + " (MLSTREAM_KAFKA__REQUEST_DEADLINE_S, MLSTREAM_SCORING__TRANSACTION_TIMEOUT_MS)")
            batches = await consumer.getmany(*pending, timeout_ms=200, max_records=50_000)
            if batches:
                progress = time.monotonic()
            for tp, records in batches.items():
                store, limit, seen = stores[tp.partition], limits[tp.partition], applied[tp.partition]
                for rec in records:
                    as_of, row = decode_changelog(rec.value or b"", width)
                    if limit is not None and as_of is not None and as_of > limit:
                        skipped[tp.partition] += 1  # ahead of the committed offset: replayed
                        skipped_from[tp.partition] = min(as_of, skipped_from.get(tp.partition, as_of))
                        continue
                    key = rec.key.decode() if rec.key else ""
                    rank = -1 if as_of is None else as_of
                    if rank < seen.get(key, -1):
                        passed_over[tp.partition] += 1
                        continue
                    if row is None:  # a tombstone: whatever comes next applies
                        seen.pop(key, None)
                    else:
                        seen[key] = rank
                    store.put(key, row, now)
                    store.restored += 1
            for tp in list(pending):
                # position() waits as long as the partition has no reachable leader
                position = await within(consumer.position(tp), patience, "changelog position")
                end = consumer.highwater(tp)
                if end is not None and position >= end:
                    pending.discard(tp)
                elif (exactly_once and end is not None and tp not in waiting
                      and (consumer.last_stable_offset(tp) or 0) <= position):
                    # read_committed stops at the last stable offset, the start of an open
                    # transaction: a crashed worker's, with a later owner's committed state
                    # possibly past it (restoring up to it would replay the later owner's events
                    # against older state). Reading on once the broker has aborted it.
                    waiting.add(tp)
                    log.info("restoring %s[%d]: waiting for an open transaction (a stopped "
                             "worker's) to be aborted", topic, tp.partition)
    except KafkaError as exc:  # e.g. a changelog partition's leader gone: the loop retries
        raise KafkaCallError(f"restoring state from {topic}: {type(exc).__name__}") from None
    finally:
        # a bare stop() raises CancelledError if a fetch to a dead leader is backing off
        await stop_quietly(consumer, settings.kafka.request_deadline_s)
    for p, store in stores.items():
        store.position, store.skipped_from = limits[p], skipped_from.get(p)
        if skipped[p]:
            log.info("restoring %s[%d]: %d records ahead of input offset %d skipped (their events are "
                     "processed again)", topic, p, skipped[p], limits[p])
        if passed_over[p]:
            log.warning("restoring %s[%d]: %d records older than a state already read passed over (written "
                        "late by a worker that had lost the partition)", topic, p, passed_over[p])
    return stores
