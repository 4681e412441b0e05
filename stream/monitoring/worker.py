"""The monitoring worker: feature batches and delayed labels in, drift events and retraining
requests out. It runs beside the scorers in its own consumer group (``<app_id>-monitor``), so
monitoring never slows scoring. That group gives every partition to one worker
(:mod:`stream.monitoring.assignor`): one logical monitor per deployment, the others standby;
one taking over reads the open drift states back first (:mod:`stream.monitoring.handover`).

What it does with the records is :mod:`stream.monitoring.processor` (no broker there); this
module is the Kafka side: poll, publish what the processor returns, commit. Its Prometheus
export is :mod:`stream.monitoring.exporter`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from aiokafka import TopicPartition
from aiokafka.errors import KafkaError

from stream.config import Settings
from stream.errors import BrokerError, KafkaCallError
from stream.kafka import (
    acknowledged,
    check_topics,
    commit_or_redeliver,
    make_consumer,
    make_producer,
    recreations,
    send_messages,
    start_client,
    stop_quietly,
)
from stream.messages import Message, encode
from stream.metrics import Metrics
from stream.monitoring.assignor import OneActiveAssignor
from stream.monitoring.handover import restore
from stream.monitoring.model_monitor import (  # re-exported: callers import them from here
    EVENT_IDS,
    EVENT_TS,
    ModelMonitor,
    RecentTimes,
    merge_slices,
)
from stream.monitoring.processor import MonitorProcessor
from stream.monitoring.rebalance import ForgetRevoked
from stream.paused import PauseGuard

__all__ = ["EVENT_IDS", "EVENT_TS", "ModelMonitor", "MonitorProcessor", "MonitorWorker", "RecentTimes",
           "merge_slices"]

log = logging.getLogger(__name__)


class MonitorWorker(MonitorProcessor):
    """:class:`MonitorProcessor` on Kafka: poll, process, publish, then commit (at-least-once)."""

    def __init__(self, settings: Settings, metrics: Metrics, *, create_topics: bool = True):
        super().__init__(settings, metrics)
        self.create_topics = create_topics  # recreate topics that disappear (else stop)
        self._stage = metrics.stage_latency.labels("monitor")  # one poll's work, waits excluded
        self.group_id = f"{settings.app_id}-monitor"
        self.assignor = OneActiveAssignor()  # one active monitor per deployment
        # offsets whose outputs are acknowledged, committed on a cadence (see MonitorSettings)
        self._uncommitted: dict[TopicPartition, int] = {}
        self._committed: dict[TopicPartition, int] = {}  # accepted by the group: the stall probe
        # woken past the session timeout: the successor's backlog is not tested a second time
        self.pauses = PauseGuard(settings.kafka.session_timeout_ms / 1000, role="monitor")
        self._committed_at = time.monotonic()
        self._consumer: Any = None
        self.input_age_s = 0.0  # the newest fetched feature batch's age (stream.cpu_priority)
        self._input_age = metrics.monitor_input_age

    async def run(self, stop: asyncio.Event) -> None:
        s = self.settings
        producer = make_producer(s)
        await start_client(producer, s.kafka.bootstrap_servers)
        await self.notifier.start()
        consumer = None
        from_beginning = False
        try:
            while not stop.is_set():
                consumer = make_consumer(s, group_id=self.group_id, max_partition_fetch_bytes=s.monitor.max_partition_fetch_bytes,
                                         partition_assignment_strategy=self.assignor.strategies(),
                                         fetch_min_bytes=s.monitor.fetch_min_bytes,
                                         fetch_max_wait_ms=s.monitor.fetch_max_wait_ms)
                listener = ForgetRevoked(self.merger, s.topics.features, self.metrics, consumer, from_beginning,
                                         self._on_role, on_revoked=self._commit_on_revoke,
                                         deadline_s=s.kafka.request_deadline_s, pauses=self.pauses)
                self._consumer = consumer
                consumer.subscribe([s.topics.features, s.topics.labels, s.topics.shadow_predictions],
                                   listener=listener)
                await start_client(consumer, s.kafka.bootstrap_servers)
                self.metrics.worker_info.labels("monitor").set(1)
                if not await self._loop(consumer, producer, stop):
                    await self._commit_on_revoke()  # stopping: what is done is not done again
                    break
                # the broker lost its data: start over on the new topics with a new consumer
                self.merger.forget_all()
                self._uncommitted = {}
                self._committed = {}
                self._dead = []
                from_beginning = True  # offsets committed meanwhile may be old-topic positions
                await stop_quietly(consumer, s.kafka.request_deadline_s)
        finally:
            self.metrics.worker_info.labels("monitor").set(0)
            try:
                await self.notifier.stop()
                if consumer is not None:
                    await stop_quietly(consumer, s.kafka.request_deadline_s)
            finally:
                await producer.stop()

    async def _on_role(self, active: bool) -> None:
        if active:  # taking over: read the open drift states back (no clearing: new rows may be in)
            await restore(self.settings, self.open_drifts, self.policy)
        else:  # a standby's tests would be stale when it takes over again
            self.monitors.clear()

    async def _loop(self, consumer: Any, producer: Any, stop: asyncio.Event) -> bool:
        """Poll until stopped (False) or until the topics were recreated (True)."""
        s = self.settings
        next_check = time.monotonic() + s.kafka.topic_check_interval_s
        seen = recreations()
        failures = 0
        self.pauses.start()
        while not stop.is_set():
            try:
                await self._step(consumer, producer)
                if time.monotonic() >= next_check:  # are the topics still there?
                    next_check = time.monotonic() + s.kafka.topic_check_interval_s
                    try:
                        if await check_topics(s, recreate=self.create_topics) or recreations() != seen:
                            return True
                    except BrokerError as exc:
                        # the broker restarting: in a process of its own (worker --role all) this
                        # monitor does not see the scorer recreate the topics, so it retries
                        raise KafkaCallError(str(exc)) from None
                failures = 0
            except KafkaCallError as exc:
                failures += 1
                try:
                    recreated = await check_topics(s, recreate=self.create_topics)
                except BrokerError:  # still restarting: counted as one more failure
                    recreated = False
                if recreated or recreations() != seen:
                    return True
                if exc.outputs_lost or failures >= 3:
                    raise BrokerError(f"{exc}; stopping so that the uncommitted records are "
                                      "processed again after a restart") from None
                log.warning("%s; retrying", exc)
        return False

    async def _step(self, consumer: Any, producer: Any) -> bool:
        """One poll: hold feature batches, handle what the merger releases and the labels,
        publish, commit. True if records came in."""
        s = self.settings
        deadline = s.kafka.request_deadline_s
        try:
            batches = await consumer.getmany(timeout_ms=100, max_records=500)
        except KafkaError as exc:  # a group coordinator's error, handed over once: nothing lost
            raise KafkaCallError(f"fetch failed: {type(exc).__name__}") from None
        # stood still past the session timeout: nothing tested, released or published until the
        # group confirms this member or the rebalance says whose the partitions are
        if (self.pauses.stalled() or self.pauses.until) and (
                await self.pauses.hold_back(consumer, batches, self._committed, deadline) or self.pauses.until):
            return False
        t0 = time.perf_counter()
        features = {tp: recs for tp, recs in batches.items() if tp.topic == s.topics.features}
        newest = max((recs[-1].timestamp for recs in features.values() if recs), default=None)
        self.input_age_s = 0.0 if newest is None else max(0.0, time.time() - newest / 1000.0)
        self._input_age.set(self.input_age_s)
        labels = {tp: recs for tp, recs in batches.items() if tp.topic == s.topics.labels}
        self.hold(features, time.monotonic())
        shadow = {tp: recs for tp, recs in batches.items() if tp.topic == s.topics.shadow_predictions}
        self._shadow_predictions([r for recs in shadow.values() for r in recs])
        released, offsets = self.merger.release(time.monotonic())
        if not released and not labels and not self._early_matches and not self._dead and not self.examples_out \
                and not shadow and not self.shadow.out:
            if batches:  # feature batches decoded and held: monitor work too
                self._stage.observe(time.perf_counter() - t0)
            elif self._uncommitted:  # idle: nothing to wait for, commit now
                await self._commit(consumer)
            return bool(batches)
        drift, retrain = self.handle(released, [r for recs in labels.values() for r in recs],
                                     time.time())
        self._stage.observe(time.perf_counter() - t0)  # decode, merge, tests, label join
        futures = []
        dead, self._dead = self._dead, []
        for partition, message in dead:
            futures += await send_messages(producer, s.topics.dead_letter, partition, [message])
        if drift:
            futures += await send_messages(producer, s.topics.drift, 0, drift)
        if retrain:
            futures += await send_messages(producer, s.topics.retrain, 0, retrain)
        verdicts = self.shadow.take()
        if verdicts:  # for the trainer, which owns the registry
            futures += await send_messages(producer, s.topics.shadow_verdicts, 0,
                                           [Message(v.verdict_id.encode(), encode(v)) for v in verdicts])
        examples, self.examples_out = self.examples_out, []
        if examples:  # labelled examples, for the trainer
            futures += await send_messages(producer, s.topics.labelled_examples, 0, examples)
            self.metrics.labelled_examples.inc(len(examples))
        if futures:
            await acknowledged(futures, deadline)
        offsets.update({tp: recs[-1].offset + 1 for tp, recs in (labels | shadow).items() if recs})
        self._uncommitted.update(offsets)
        if not batches or time.monotonic() - self._committed_at >= s.monitor.commit_interval_s:
            await self._commit(consumer)
        return bool(batches)

    async def _commit(self, consumer: Any) -> None:
        """Commit the offsets whose outputs are acknowledged (at-least-once)."""
        offsets, self._uncommitted = self._uncommitted, {}
        self._committed_at = time.monotonic()
        try:
            if await commit_or_redeliver(consumer, offsets, self.settings.kafka.request_deadline_s):
                self._committed.update(offsets)
        except KafkaCallError:
            self._uncommitted = {**offsets, **self._uncommitted}  # still to commit, unless newer ones came
            raise

    async def _commit_on_revoke(self) -> None:
        """Before partitions go to another worker, or on stop: commit what is done. A failure
        only means those records are read again (at-least-once), so it is logged, not raised."""
        if self._uncommitted and self._consumer is not None:
            try:
                await self._commit(self._consumer)
            except KafkaCallError as exc:
                log.warning("%s; those records will be processed again", exc)
        # every partition is revoked (the eager protocol): given back later, another member may have
        # committed past these, and a stall's probe must not commit them back
        self._committed = {}
