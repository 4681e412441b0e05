"""The scoring worker: Kafka in, :class:`stream.scoring.pipeline.BatchScorer`, Kafka out.

Scale-out is Kafka's: every worker joins the consumer group ``<app_id>-scorer`` and owns some
partitions of the events topic. At-least-once: input offsets are committed only after every
output of their batch (predictions, dead letters, changelog, feature batch) is acknowledged
(:mod:`stream.scoring.commits`). On assignment a worker rebuilds each partition's entity state
from the changelog before it processes that partition (:mod:`stream.scoring.rebalance`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from stream.alerts import Notifier
from stream.config import Settings
from stream.domain import Domain
from stream.error_policy import ErrorPolicy
from stream.errors import BrokerError, KafkaCallError
from stream.kafka import (
    make_consumer,
    make_producer,
    recreations,
    send_messages,
    send_records,
    start_client,
    stop_quietly,
    wait_for_broker,
    within,
)
from stream.kafka_pacing import FetchPacing
from stream.metrics import Metrics, score_buckets
from stream.paused import PauseGuard
from stream.scoring.batch_output import BatchOutput
from stream.scoring.broker_faults import abort_transaction, as_call_error, topics_changed
from stream.scoring.commits import Commits
from stream.scoring.feed import FeedReader
from stream.scoring.pipeline import BatchScorer
from stream.scoring.rebalance import PartitionAssignment, RebalanceListener
from stream.scoring.serving import ModelServing
from stream.scoring.stable_offsets import subscribe
from stream.scoring.state import EntityStore
from stream.scoring.transactions import OutputTransaction, transactional_id

log = logging.getLogger(__name__)

EVICT_EVERY_S = 60.0


class ScoringWorker(PartitionAssignment):
    def __init__(self, settings: Settings, domain: Domain, metrics: Metrics, *,
                 emit_features: bool = True, create_topics: bool = True, feed: FeedReader | None = None):
        self.settings = settings
        self.feed = feed  # the model feed, caught up (None: poll the store, model_feed.mode "store")
        self.create_topics = create_topics  # recreate topics that disappear (else stop)
        self.domain = domain
        self.metrics = metrics
        self.notifier = Notifier(settings.alerts, metrics)
        # which version serves, its guard, and the versions scored beside it (shadow, canary)
        self.serving = ModelServing(settings, domain.features.columns, metrics, self.notifier)
        model = self.serving.load()
        metrics.use_score_buckets(score_buckets(domain.task, model.card.reference_profile))
        self.policy = ErrorPolicy.from_settings(settings, metrics)
        canary = self.serving.canary
        self.scorer = BatchScorer(domain, model, metrics, emit_features=emit_features, policy=self.policy,
                                  max_future_s=settings.scoring.max_future_s, source_topic=settings.topics.events,
                                  canary=canary if canary.share > 0 else None)
        self.group_id = f"{settings.app_id}-scorer"
        self.stores: dict[int, EntityStore] = {}
        self._lock = asyncio.Lock()
        self.commits = Commits(settings, self.stores)  # what the next commit covers, and how
        self.pauses = PauseGuard(settings.kafka.session_timeout_ms / 1000, role="scorer")  # a paused process's records
        # labelled series looked up once, not per micro-batch
        self._consumed = metrics.events_consumed.labels(settings.topics.events)
        self._produce_stage = metrics.stage_latency.labels("produce")
        self._lag: dict[int, Any] = {}
        self.consumer: AIOKafkaConsumer | None = None
        self.producer: AIOKafkaProducer | None = None
        self.txn: OutputTransaction | None = None  # exactly-once only
        self.processed = 0
        self._from_beginning = False  # after the broker lost its data: read the new topics whole
        self._restoring = False  # an assignment's restore left to the loop (see PartitionAssignment.on_assigned)

    async def run(self, stop: asyncio.Event) -> None:
        s = self.settings
        exactly_once = s.processing_guarantee == "exactly_once"
        self.producer = make_producer(s, transactional_id=transactional_id(s.app_id) if exactly_once else None)
        try:
            await start_client(self.producer, s.kafka.bootstrap_servers)
        except BaseException:  # the feed's consumer must not outlive a worker that never ran
            if self.feed is not None:
                await self.feed.close()
            raise
        if exactly_once:
            self.txn = OutputTransaction(self.producer, self.group_id)
        self.commits.producer, self.commits.txn = self.producer, self.txn
        await self.notifier.start()
        following = asyncio.ensure_future(self.feed.follow(stop)) if self.feed is not None else None
        try:
            # the shadow (and its canary) from the first batch: a restarted worker serves each entity as before it stopped
            await self.serving.shadows.refresh(self.scorer.model.version)
            while not stop.is_set():
                self.consumer = make_consumer(s, group_id=self.group_id, raw=True, max_poll_interval_ms=300_000)
                try:
                    await start_client(self.consumer, s.kafka.bootstrap_servers)
                except BrokerError as exc:  # the broker went again after a rejoin: wait for it again
                    log.warning("%s; waiting for the broker", exc)
                    try:
                        await wait_for_broker(s, stop)  # bounded by kafka.connect_timeout_s
                    except BrokerError:
                        if stop.is_set():
                            break
                        raise
                    continue
                subscribe(self.consumer, [s.topics.events], RebalanceListener(self), stable=exactly_once)
                self.metrics.worker_info.labels("scorer").set(1)
                try:
                    await self._loop(stop)
                except _Rejoin as exc:
                    await self._rejoin(str(exc), stop)
                    continue
                except _StartOver:
                    log.warning("the topics were recreated: reading them again with a new consumer")
                    # the broker lost its data: what was not committed is gone with it, and a
                    # new consumer reads the new topics from their committed offsets (none)
                    self.commits.forget()
                    self.stores.clear()
                    # offsets committed meanwhile may be positions in the old topics
                    self._from_beginning = True
                    await stop_quietly(self.consumer, s.kafka.request_deadline_s)
        finally:
            try:
                async with self._lock:
                    await self._commit()
            except BrokerError as exc:  # bounded by the deadline; the records are redelivered
                log.warning("last commit at shutdown failed (%s); uncommitted records will be "
                            "processed again", exc)
            finally:
                self.metrics.worker_info.labels("scorer").set(0)
                try:
                    if following is not None and self.feed is not None:
                        following.cancel()
                        await asyncio.gather(following, return_exceptions=True)
                        await self.feed.close()
                    await self.notifier.stop()
                    if self.consumer is not None:
                        await stop_quietly(self.consumer, s.kafka.request_deadline_s)
                finally:
                    await self.producer.stop()

    async def _loop(self, stop: asyncio.Event) -> None:
        assert self.consumer is not None
        sc = self.settings.scoring
        next_model_check = time.monotonic() + sc.model_poll_interval_s
        next_evict = time.monotonic() + EVICT_EVERY_S
        next_topic_check = time.monotonic() + self.settings.kafka.topic_check_interval_s
        seen = recreations()
        failures = 0
        pacing = FetchPacing(self.consumer, linger_ms=sc.fetch_linger_ms)
        self.pauses.start()
        # the topic check runs beside the loop: a fresh admin connection and a metadata round trip
        # every interval, awaited inline, held the batches behind it for its duration
        checking: asyncio.Future[bool] | None = None
        try:
            while not stop.is_set():
                try:
                    if self.commits.must_rewind:  # a rewind the broker did not answer: first, again
                        async with self._lock:
                            await within(self.commits.rewind(self.consumer), self.settings.kafka.request_deadline_s,
                                         "rewind")
                    if self._restoring:
                        async with self._lock:
                            await self._restore_assigned()
                    if self.commits.hold:
                        async with self._lock:
                            await self._commit()
                        self.commits.hold = False
                        log.info("offsets committed again: processing resumes")
                    try:
                        batches = await self.consumer.getmany(timeout_ms=max(sc.max_wait_ms, 1),
                                                              max_records=sc.max_batch_size)
                    except KafkaError as fetch_error:  # a group coordinator's error, handed over once
                        raise KafkaCallError(f"fetch failed: {type(fetch_error).__name__}") from None
                    if (self.pauses.stalled() or self.pauses.until) and await self.pauses.hold_back(
                            self.consumer, batches, self.commits.committed, self.settings.kafka.request_deadline_s):
                        batches = {}  # a paused process's old partitions: their new owners' now
                    pacing.observe(sum(map(len, batches.values())))  # events (not partitions) returned
                    if batches:
                        async with self._lock:
                            await self._process(batches)
                    now = time.monotonic()
                    if self.feed is not None:  # the feed wrote a version or states to the local store
                        if self.feed.changed.is_set():
                            self.feed.changed.clear()
                            await self.serving.refresh(self.scorer, self._lock)
                    elif now >= next_model_check:
                        next_model_check = now + sc.model_poll_interval_s
                        await self.serving.refresh(self.scorer, self._lock)
                    if now >= next_evict:
                        next_evict = now + EVICT_EVERY_S
                        async with self._lock:
                            await self._evict()
                    if not batches:
                        async with self._lock:
                            await self.commits.in_background(self.consumer)
                    if checking is not None and checking.done():  # are the topics still there?
                        changed, checking = checking.result(), None
                        if changed or recreations() != seen:
                            raise _StartOver
                    if now >= next_topic_check and checking is None:
                        next_topic_check = now + self.settings.kafka.topic_check_interval_s
                        checking = asyncio.ensure_future(topics_changed(self.settings, recreate=self.create_topics))
                    failures = 0
                except (KafkaCallError, KafkaError) as caught:
                    exc = as_call_error(caught)
                    failures += 1
                    if await topics_changed(self.settings, recreate=self.create_topics) or recreations() != seen:
                        raise _StartOver from None
                    if failures >= 3:
                        if self.txn is not None:  # a restarted worker's producer fences this one's transaction
                            raise BrokerError(f"{exc}; stopping so that the uncommitted records are "
                                              "processed again after a restart") from None
                        raise _Rejoin(str(exc)) from None
                    if exc.outputs_lost and self.txn is not None and \
                            not await abort_transaction(self.txn, self.settings.kafka.request_deadline_s):
                        raise BrokerError(f"{exc}; the open transaction could not be aborted: stopping so "
                                          "that the uncommitted records are processed again after a restart") from None
                    if exc.outputs_lost:
                        # what a restart would do, without one: back to the committed offsets, with
                        # state rebuilt from the changelog (at-least-once; a broker restart is survived)
                        log.warning("%s; rewinding to the committed offsets", exc)
                        self.commits.drop_uncommitted()  # the seek: at the top of the loop, before any record
                        continue
                    log.warning("%s; retrying", exc)
                    # a bounded backoff before the next attempt, cut short by SIGTERM
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), min(0.2 * 2 ** failures, 5.0))
        finally:
            if checking is not None:
                checking.cancel()

    async def _rejoin(self, why: str, stop: asyncio.Event) -> None:
        """The broker stayed unusable for three request deadlines: do what a restart would, in
        process. Uncommitted work is dropped (its records are read again), the consumer leaves,
        and once the broker answers a new one joins the group, with state rebuilt from the
        changelog. Offsets this worker committed are kept: a broker that restarted a moment ago
        may answer "no committed offset" while it loads the group (see ``Commits.committed``)."""
        log.warning("%s; the broker was unusable for three request deadlines: dropping the uncommitted "
                    "records (they are read again) and joining the group again, as a restart would", why)
        self.metrics.health.set("scorer", False, "broker unusable: joining the group again")
        self.commits.abandon()
        assert self.consumer is not None
        await stop_quietly(self.consumer, self.settings.kafka.request_deadline_s)
        while not stop.is_set():
            try:
                await wait_for_broker(self.settings, stop)
                return
            except BrokerError as exc:  # a worker that ran before has the right address: keep waiting
                log.warning("%s; still waiting", exc)

    async def _process(self, batches: dict[TopicPartition, list[Any]]) -> None:
        assert self.consumer is not None and self.producer is not None
        assigned = self.consumer.assignment()
        # records of a partition revoked meanwhile are left to its new owner (not committed)
        by_part = {tp.partition: recs for tp, recs in batches.items() if recs and tp in assigned}
        if not by_part:
            return
        # state must be as of each partition's first record: rebuilt if missing (fetched before
        # the assignment's restore, or dropped by a rewind), if the consumer went back behind
        # it, or if it starts past a changelog record the restore skipped (the committed offset
        # moved between the restore's look-up and the consumer's)
        stale = {p: recs[0].offset for p, recs in by_part.items()
                 if p not in self.stores or not self.stores[p].as_of(recs[0].offset)}
        if stale:
            for p in sorted(set(stale) & set(self.stores)):
                log.warning("partition %d: records from offset %d, state as of offset %s: state is rebuilt "
                            "as of %d", p, stale[p], self.stores[p].position, stale[p])
            await self._restore(sorted(stale), stale)
        n = sum(len(r) for r in by_part.values())
        self.metrics.batch_size.observe(n)
        self._consumed.inc(n)
        self.serving.canary.follow(self.serving.shadows.models.get("shadow"))  # dropped or replaced since the last batch?
        out = self.scorer.process(by_part, self.stores)
        for p, po in out.partitions.items():
            self.stores[p].position, self.stores[p].skipped_from = po.last_offset + 1, None
        self.serving.watch(self.scorer, out)
        t0 = time.perf_counter()
        futures = await self._send(out)
        self._produce_stage.observe(time.perf_counter() - t0)
        topic = self.settings.topics.events
        self.commits.record(topic, out, futures, n)
        self.processed += n
        for p, recs in by_part.items():
            tp = TopicPartition(topic, p)
            hw = self.consumer.highwater(tp)
            if hw is not None:
                lag = self._lag.get(p)
                if lag is None:
                    lag = self._lag[p] = self.metrics.consumer_lag.labels(self.group_id, topic, str(p))
                lag.set(max(0, hw - recs[-1].offset - 1))
        if self.commits.due():
            await self.commits.in_background(self.consumer)

    async def _send(self, out: BatchOutput) -> list[asyncio.Future[Any]]:
        assert self.producer is not None
        t = self.settings.topics
        futures: list[asyncio.Future[Any]] = []
        if self.txn is not None:
            await self.txn.ensure_open()
        for p, po in out.partitions.items():
            if po.prediction_values:
                futures += await send_records(self.producer, t.predictions, p, po.prediction_keys,
                                              po.prediction_values)
            if po.dead_letters:
                futures += await send_messages(self.producer, t.dead_letter, p, po.dead_letters)
            # (feature batches go out with the commit: Commits.record keeps them)
        futures += await self.serving.shadows.send(self.producer, out)  # the champion's outputs are out first
        return futures

    async def flush(self) -> None:
        """Commit now: every output so far acknowledged, offsets committed."""
        async with self._lock:
            await self._commit()

    async def _evict(self) -> None:
        assert self.producer is not None
        await self._commit()  # the changelog must hold every dirty row before rows are reused
        now = time.time()
        futures = []
        for p, store in self.stores.items():
            gone = store.evict(now, self.settings.scoring.state_ttl_s)
            if gone:
                if self.txn is not None:  # tombstones commit with the next transaction
                    await self.txn.ensure_open()
                futures += await send_records(self.producer, self.settings.topics.changelog, p,
                                              [k.encode() for k in gone], [None] * len(gone))
            self.metrics.entities.labels(str(p)).set(len(store))
        if self.txn is not None:
            self.commits.pending += futures
        elif futures:
            await within(asyncio.gather(*futures), self.settings.kafka.request_deadline_s,
                         "changelog tombstones")

class _Rejoin(Exception):
    """The broker stayed unusable for three request deadlines: a new consumer, as after a restart."""


class _StartOver(Exception):
    """The broker lost its data and the topics were recreated: read them with a new consumer."""
