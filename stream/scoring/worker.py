"""The scoring worker: Kafka in, :class:`stream.scoring.pipeline.BatchScorer`, Kafka out.

Scale-out is Kafka's: every worker joins the consumer group ``<app_id>-scorer`` and owns some
partitions of the events topic. At-least-once: input offsets are committed only after every
output of their batch (predictions, dead letters, changelog, feature batch) is acknowledged.
On assignment a worker rebuilds each partition's entity state from the changelog before it
processes that partition.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition

from stream.config import Settings
from stream.domain import Domain
from stream.errors import ModelLoadError
from stream.kafka import commit_or_redeliver, make_consumer, make_producer, send_messages, send_records, start_client
from stream.metrics import Metrics
from stream.scoring.pipeline import BatchOutput, BatchScorer
from stream.registry import ModelStore
from stream.scoring.model import Model, load_model
from stream.scoring.state import EntityStore, decode_state, encode_states

log = logging.getLogger(__name__)

MODEL_POLL_S = 2.0
EVICT_EVERY_S = 60.0


class ScoringWorker:
    def __init__(self, settings: Settings, domain: Domain, metrics: Metrics, *,
                 emit_features: bool = True):
        self.settings = settings
        self.domain = domain
        self.metrics = metrics
        self.store = ModelStore(settings.model_store)
        model = load_model(self.store, settings.model_name, domain.features.columns)
        self._announce(model, "load_ok")
        self.scorer = BatchScorer(domain, model, metrics, emit_features=emit_features)
        self.group_id = f"{settings.app_id}-scorer"
        self.stores: dict[int, EntityStore] = {}
        self._lock = asyncio.Lock()
        # since the last commit: delivery futures, entities changed, offsets reached
        self._pending: list[asyncio.Future[Any]] = []
        self._dirty: dict[int, dict[str, int]] = {}
        self._offsets: dict[TopicPartition, int] = {}
        self._batches_since_commit = 0
        self._last_commit = time.monotonic()
        self.consumer: AIOKafkaConsumer | None = None
        self.producer: AIOKafkaProducer | None = None
        self.processed = 0

    def _announce(self, model: Model, outcome: str) -> None:
        self.metrics.model_info.clear()
        self.metrics.model_info.labels(model.name, model.version, model.card.sha256).set(1)
        self.metrics.model_loads.labels(outcome).inc()
        log.info("serving model %s version %s (%s)", model.name, model.version, outcome)

    async def run(self, stop: asyncio.Event) -> None:
        s = self.settings
        self.producer = make_producer(s)
        await start_client(self.producer, s.kafka.bootstrap_servers)
        self.consumer = make_consumer(s, group_id=self.group_id,
                                      max_poll_interval_ms=300_000)
        self.consumer.subscribe([s.topics.events], listener=_Rebalance(self))
        try:
            await start_client(self.consumer, s.kafka.bootstrap_servers)
            self.metrics.worker_info.labels("scorer").set(1)
            await self._loop(stop)
        finally:
            try:
                async with self._lock:
                    await self._commit()
            finally:
                self.metrics.worker_info.labels("scorer").set(0)
                try:
                    await self.consumer.stop()
                finally:
                    await self.producer.stop()

    async def _loop(self, stop: asyncio.Event) -> None:
        assert self.consumer is not None
        sc = self.settings.scoring
        next_model_check = time.monotonic() + MODEL_POLL_S
        next_evict = time.monotonic() + EVICT_EVERY_S
        while not stop.is_set():
            batches = await self.consumer.getmany(timeout_ms=max(sc.max_wait_ms, 1),
                                                  max_records=sc.max_batch_size)
            if batches:
                async with self._lock:
                    await self._process(batches)
            now = time.monotonic()
            if now >= next_model_check:
                next_model_check = now + MODEL_POLL_S
                await self._maybe_swap_model()
            if now >= next_evict:
                next_evict = now + EVICT_EVERY_S
                async with self._lock:
                    await self._evict()
            if not batches:
                async with self._lock:
                    await self._commit()

    async def _process(self, batches: dict[TopicPartition, list[Any]]) -> None:
        assert self.consumer is not None and self.producer is not None
        assigned = self.consumer.assignment()
        # records of a partition revoked meanwhile are left to its new owner (not committed)
        by_part = {tp.partition: recs for tp, recs in batches.items() if recs and tp in assigned}
        if not by_part:
            return
        missing = [p for p in by_part if p not in self.stores]
        if missing:  # fetched before the assignment callback finished restoring
            await self._restore(missing)
        n = sum(len(r) for r in by_part.values())
        self.metrics.batch_size.observe(n)
        self.metrics.events_consumed.labels(self.settings.topics.events).inc(n)
        out = self.scorer.process(by_part, self.stores)
        t0 = time.perf_counter()
        self._pending += await self._send(out)
        self.metrics.stage_latency.labels("produce").observe(time.perf_counter() - t0)
        topic = self.settings.topics.events
        for p, po in out.partitions.items():
            self._dirty.setdefault(p, {}).update(po.touched)
            self._offsets[TopicPartition(topic, p)] = po.last_offset + 1
        self._batches_since_commit += 1
        self.processed += n
        for p, recs in by_part.items():
            tp = TopicPartition(topic, p)
            hw = self.consumer.highwater(tp)
            if hw is not None:
                self.metrics.consumer_lag.labels(self.group_id, topic, str(p)).set(
                    max(0, hw - recs[-1].offset - 1))
        sc = self.settings.scoring
        if (self._batches_since_commit >= sc.max_in_flight_batches
                or time.monotonic() - self._last_commit >= sc.commit_interval_ms / 1000):
            await self._commit()

    async def _send(self, out: BatchOutput) -> list[asyncio.Future[Any]]:
        assert self.producer is not None
        t = self.settings.topics
        futures: list[asyncio.Future[Any]] = []
        for p, po in out.partitions.items():
            if po.prediction_values:
                futures += await send_records(self.producer, t.predictions, p, po.prediction_keys,
                                              po.prediction_values)
            if po.dead_letters:
                futures += await send_messages(self.producer, t.dead_letter, p, po.dead_letters)
            if po.features is not None:
                futures += await send_records(self.producer, t.features, p, [None], [po.features])
        return futures

    async def flush(self) -> None:
        """Commit now: every output so far acknowledged, offsets committed."""
        async with self._lock:
            await self._commit()

    async def _commit(self) -> None:
        """Write the changelog of entities changed since the last commit, wait for every output
        to be acknowledged, then commit the input offsets (at-least-once).

        Like Kafka Streams' record cache, an entity updated many times between commits is
        written once, with its latest state."""
        assert self.consumer is not None and self.producer is not None
        futures = self._pending
        self._pending = []
        for p, touched in self._dirty.items():
            store = self.stores.get(p)
            if store is None or not touched:
                continue
            keys = [k.encode() for k in touched]
            values = encode_states(store.matrix[list(touched.values())])
            futures += await send_records(self.producer, self.settings.topics.changelog, p, keys, values)
        self._dirty = {}
        if futures:
            await asyncio.gather(*futures)
        offsets = {tp: o for tp, o in self._offsets.items() if tp.partition in self.stores}
        self._offsets = {}
        await commit_or_redeliver(self.consumer, offsets)
        self._batches_since_commit = 0
        self._last_commit = time.monotonic()

    async def _maybe_swap_model(self) -> None:
        name = self.settings.model_name
        try:
            current = self.store.current_version(name)
        except ModelLoadError:
            return
        if current == self.scorer.model.version:
            return
        try:
            model = await asyncio.to_thread(load_model, self.store, name,
                                            self.domain.features.columns, current)
        except ModelLoadError as exc:
            self.metrics.model_loads.labels("swap_failed").inc()
            log.error("keeping model version %s: %s", self.scorer.model.version, exc)
            return
        async with self._lock:
            self.scorer.swap_model(model)
        self._announce(model, "swap_ok")

    async def _evict(self) -> None:
        assert self.producer is not None
        await self._commit()  # the changelog must hold every dirty row before rows are reused
        now = time.time()
        futures = []
        for p, store in self.stores.items():
            gone = store.evict(now, self.settings.scoring.state_ttl_s)
            if gone:
                futures += await send_records(self.producer, self.settings.topics.changelog, p,
                                              [k.encode() for k in gone], [None] * len(gone))
            self.metrics.entities.labels(str(p)).set(len(store))
        if futures:
            await asyncio.gather(*futures)

    # -- rebalancing -------------------------------------------------------------------
    async def on_revoked(self, revoked: set[TopicPartition]) -> None:
        async with self._lock:
            await self._commit()
            for tp in revoked:
                self.stores.pop(tp.partition, None)
        self.metrics.health.set("scorer", False, "rebalancing")
        log.info("partitions revoked: %s", sorted(tp.partition for tp in revoked))

    async def on_assigned(self, assigned: set[TopicPartition]) -> None:
        async with self._lock:
            new = sorted(tp.partition for tp in assigned if tp.partition not in self.stores)
            if new:
                await self._restore(new)
        self.metrics.health.set("scorer", True, f"model {self.scorer.model.version}, "
                                f"{len(assigned)} partitions assigned, state restored")
        log.info("partitions assigned: %s (state restored for %s)",
                 sorted(tp.partition for tp in assigned), new)

    async def _restore(self, partitions: list[int]) -> None:
        restored = await restore_state(self.settings, self.domain.features.state_width, partitions,
                                       self.settings.scoring.max_entities_per_partition)
        for p, store in restored.items():
            self.stores[p] = store
            self.metrics.entities.labels(str(p)).set(len(store))
        self.metrics.state_restored.inc(sum(s.restored for s in restored.values()))


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, worker: ScoringWorker):
        self.worker = worker

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self.worker.on_revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self.worker.on_assigned(assigned)


async def restore_state(settings: Settings, width: int, partitions: list[int],
                        max_entities: int) -> dict[int, EntityStore]:
    """Rebuild entity state by reading each changelog partition up to its high watermark.

    The high watermark comes from fetch responses (not ListOffsets), which is right on Apache
    Kafka and on the embedded broker, whose ListOffsets is wrong for multi-record batches.
    """
    topic = settings.topics.changelog
    stores = {p: EntityStore(width, max_entities=max_entities) for p in partitions}
    consumer = make_consumer(settings, group_id=None, fetch_max_wait_ms=50)
    await start_client(consumer, settings.kafka.bootstrap_servers)
    try:
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        pending = set(tps)
        now = time.time()
        while pending:
            batches = await consumer.getmany(*pending, timeout_ms=200, max_records=50_000)
            for tp, records in batches.items():
                store = stores[tp.partition]
                for rec in records:
                    key = rec.key.decode() if rec.key else ""
                    store.put(key, decode_state(rec.value or b"", width), now)
                store.restored += len(records)
            for tp in list(pending):
                hw = consumer.highwater(tp)
                if hw is not None and await consumer.position(tp) >= hw:
                    pending.discard(tp)
    finally:
        await consumer.stop()
    return stores
