"""The monitoring worker: feature batches and delayed labels in, drift events and retraining
requests out. It runs beside the scorers in its own consumer group (``<app_id>-monitor``), so
monitoring never slows scoring. That group gives every partition to one worker
(:mod:`stream.monitoring.assignor`): one logical monitor per deployment, the others standby;
one taking over reads the open drift states back first (:mod:`stream.monitoring.handover`).

The drift logic itself is pure (:mod:`stream.monitoring.model_monitor`); this module only
decodes messages, keeps one monitor per model version, and publishes what they return.
Its Prometheus export is :mod:`stream.monitoring.exporter`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import numpy as np
from aiokafka import TopicPartition

from stream.alerts import Notifier
from stream.config import Settings
from stream.error_policy import ErrorPolicy
from stream.errors import BrokerError, KafkaCallError, ModelLoadError
from stream.kafka import (
    check_topics,
    commit_or_redeliver,
    make_consumer,
    make_producer,
    recreations,
    send_messages,
    start_client,
    stop_quietly,
    within,
)
from stream.messages import (
    SCORE_COLUMN,
    DeadLetter,
    DriftEvent,
    FeatureBatch,
    Message,
    ModelUpdate,
    ShadowPrediction,
    decode,
    encode,
)
from stream.metrics import Metrics
from stream.monitoring.assignor import OneActiveAssignor
from stream.monitoring.examples import labelled_example, scored_rows
from stream.monitoring.exporter import DriftCollector
from stream.monitoring.handover import OpenDrifts, restore
from stream.monitoring.labels import LabelJoiner
from stream.monitoring.model_monitor import (  # re-exported: callers import them from here
    EVENT_IDS,
    EVENT_TS,
    ModelMonitor,
    RecentTimes,
    merge_and_test,
    merge_slices,
    parse_label,
)
from stream.monitoring.ordering import PartitionMerger
from stream.monitoring.rebalance import ForgetRevoked
from stream.monitoring.retrain import RetrainPolicy
from stream.monitoring.shadow import ShadowComparator
from stream.registry import ModelStore

__all__ = ["EVENT_IDS", "EVENT_TS", "ModelMonitor", "MonitorWorker", "RecentTimes", "merge_slices"]

log = logging.getLogger(__name__)


class MonitorWorker:
    def __init__(self, settings: Settings, metrics: Metrics, *, create_topics: bool = True):
        self.settings = settings
        self.create_topics = create_topics  # recreate topics that disappear (else stop)
        self.metrics = metrics
        self._stage = metrics.stage_latency.labels("monitor")  # one poll's work, waits excluded
        self.store = ModelStore(settings.model_store)
        self.monitors: dict[str, ModelMonitor] = {}
        self.joiner = LabelJoiner(ttl_s=settings.monitor.label_ttl_s,
                                  max_pending=settings.monitor.max_pending_labels)
        self._label_counts = dict.fromkeys(("matched", "late", "unmatched", "expired", "evicted"), 0)
        self.policy = RetrainPolicy(settings.monitor.retrain_cooldown_s)
        self.group_id = f"{settings.app_id}-monitor"
        self.assignor, self.open_drifts = OneActiveAssignor(), OpenDrifts()  # one active monitor
        metrics.registry.register(DriftCollector(self))
        self.notifier = Notifier(settings.alerts, metrics)
        self.merger = PartitionMerger(idle_s=2.0, max_rows=200_000)
        self._early_matches: list[tuple[np.ndarray, np.ndarray, list[Any]]] = []
        # labelled examples to write (drained by run) and the version each model serves now
        self.examples_out: list[Message] = []
        self.serving: dict[str, tuple[int, str]] = {}  # model -> (newest ingest ms, version)
        self.drift_events = 0
        self.retrain_requests = 0
        self.errors = ErrorPolicy.from_settings(settings, metrics)
        self._dead: list[tuple[int, Message]] = []  # inputs set aside, to the dead-letter topic
        # offsets whose outputs are acknowledged, committed on a cadence (see MonitorSettings)
        self._uncommitted: dict[TopicPartition, int] = {}
        self._committed_at = time.monotonic()
        self._consumer: Any = None
        # champion against shadow / previous champion on the same labelled events
        self.shadow = ShadowComparator(settings, metrics, self._task_of)

    def _task_of(self, name: str, version: str) -> str | None:
        try:
            return self.store.load(name, version)[0].task
        except ModelLoadError as exc:
            log.error("cannot compare %s:%s: %s", name, version, exc)
            return None

    def monitor_for(self, name: str, version: str) -> ModelMonitor | None:
        key = f"{name}:{version}"
        if key not in self.monitors:
            try:
                card, _ = self.store.load(name, version)
            except ModelLoadError as exc:
                log.error("cannot monitor %s: %s", key, exc)
                return None
            if not card.reference_profile:
                log.error("model %s has no reference profile; drift tests are off for it", key)
                return None
            previous = [m.version for m in self.monitors.values() if m.name == name]
            self.monitors[key] = ModelMonitor(card.data, self.settings)
            if previous:  # a new version of a model we already watch: it was promoted
                self.notifier.submit_promotion(ModelUpdate(
                    model=name, model_version=version, decision="promote", promoted=True,
                    previous_version=previous[-1], decided_at=time.time()))
            while len(self.monitors) > 4:  # keep the newest versions only
                self.monitors.pop(next(iter(self.monitors)))
        return self.monitors[key]

    async def run(self, stop: asyncio.Event) -> None:
        s = self.settings
        producer = make_producer(s)
        await start_client(producer, s.kafka.bootstrap_servers)
        await self.notifier.start()
        consumer = None
        from_beginning = False
        try:
            while not stop.is_set():
                consumer = make_consumer(s, group_id=self.group_id, max_partition_fetch_bytes=16 * 1024 * 1024,
                                         partition_assignment_strategy=self.assignor.strategies())
                listener = ForgetRevoked(self.merger, s.topics.features, self.metrics, consumer, from_beginning,
                                         self._on_role, on_revoked=self._commit_on_revoke)
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
        batches = await consumer.getmany(timeout_ms=100, max_records=500)
        t0 = time.perf_counter()
        labels = {tp: recs for tp, recs in batches.items() if tp.topic == s.topics.labels}
        self.hold({tp: recs for tp, recs in batches.items() if tp.topic == s.topics.features},
                  time.monotonic())
        shadow = {tp: recs for tp, recs in batches.items() if tp.topic == s.topics.shadow_predictions}
        self._shadow_predictions([r for recs in shadow.values() for r in recs])
        released, offsets = self.merger.release(time.monotonic())
        if not released and not labels and not self._early_matches and not self._dead and not self.examples_out \
                and not shadow and not self.shadow.out:
            if not batches and self._uncommitted:  # idle: nothing to wait for, commit now
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
            try:
                await within(asyncio.gather(*futures), deadline, "produce acknowledgements")
            except KafkaCallError as exc:
                exc.outputs_lost = True
                raise
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
            await commit_or_redeliver(consumer, offsets, self.settings.kafka.request_deadline_s)
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

    def hold(self, batches: dict[TopicPartition, list[Any]], now: float) -> None:
        """Decode feature batches and park their rows until the partitions are in step.

        A batch that cannot be decoded goes through the error policy: counted, logged,
        dead-lettered, and its offset still committed once the rows before it are out."""
        for tp, records in batches.items():
            for rec in records:
                held, exc = self.errors.call("monitor", "a feature batch", self._decode, rec)
                ts, cols, mon = held if held is not None else (np.empty(0), {}, None)
                if exc is not None:
                    self._dead_letter(rec, exc)
                self.merger.add(tp, offset=rec.offset, ts=ts if mon is not None else np.empty(0),
                                columns=cols, meta=mon, now=now)

    def _decode(self, rec: Any) -> tuple[np.ndarray, dict[str, Any], ModelMonitor | None]:
        batch = decode(rec.value, FeatureBatch)  # MessageError names what is malformed
        mon = self.monitor_for(batch.model, batch.model_version)
        ts = np.asarray(batch.event_ts, dtype=np.float64)
        if mon is None:
            return ts, {}, None
        cols = batch.monitor_columns(mon.kinds)
        cols[EVENT_IDS] = batch.event_ids
        X = batch.inputs.to_array() if batch.inputs is not None else None
        if X is not None and len(X) != len(ts):
            raise ValueError(f"{len(X)} input rows for {len(ts)} events")
        cols[EVENT_TS] = ts  # event times ride along: the monitor's daily profile reads them
        # rows timed in the future (or not at all) would hold the event-time merge back for good
        bad = ~(ts <= time.time() + self.settings.scoring.max_future_s)
        if bad.any():
            self.errors.failed("monitor", ValueError(f"{int(bad.sum())} event time(s) out of range"),
                               "rows of a feature batch", int(bad.sum()))
            keep = ~bad
            ts = ts[keep]
            cols = {k: (v[keep] if isinstance(v, np.ndarray) else [x for x, k_ in zip(v, keep) if k_])
                    for k, v in cols.items()}
            X = X[keep] if X is not None else None
        # the version serving now scored the newest events (partitions lag apart)
        newest = max(batch.ingest_ts_ms, default=0)
        if newest >= self.serving.get(mon.name, (0, ""))[0]:
            self.serving[mon.name] = (newest, mon.version)
        tags = scored_rows(mon.name, mon.version, mon.kinds, cols, cols[EVENT_IDS], ts, X)
        # the label join needs no ordering: predictions join it on arrival
        joined: list[Any] = []
        early = self.joiner.add_predictions(cols[EVENT_IDS], np.asarray(cols[SCORE_COLUMN], dtype=np.float64),
                                            time.time(), tags=tags, joined=joined)
        if len(early[0]):
            self._early_matches.append((*early, joined))
        return ts, cols, mon

    def _shadow_predictions(self, records: list[Any]) -> None:
        parsed = []
        for rec in records:
            p, exc = self.errors.call("monitor", "a shadow prediction", decode, rec.value, ShadowPrediction)
            if p is not None:
                parsed.append(p)
            elif exc is not None:
                self._dead_letter(rec, exc)
        if parsed:
            self.shadow.add(parsed, time.time())

    def _dead_letter(self, rec: Any, exc: Exception) -> None:
        """An input the policy set aside, to the dead-letter topic (same partition number)."""
        dl = DeadLetter(key=rec.key, value=rec.value, reason="processing_error",
                        message=self.errors.describe(exc), source_topic=rec.topic,
                        source_partition=rec.partition, source_offset=rec.offset,
                        headers=list(rec.headers or ()), timestamp_ms=rec.timestamp,
                        error_class=type(exc).__name__)
        self._dead.append((rec.partition, dl.to_message()))

    def handle(self, released: list[Any], label_records: list[Any],
               now: float) -> tuple[list[Message], list[Message]]:
        """Rows released in event-time order, and labels -> drift and retrain messages."""
        events: list[tuple[Any, ModelMonitor]] = []
        by_model: dict[str, tuple[ModelMonitor, list[tuple[np.ndarray, dict[str, Any]]]]] = {}
        for ts, cols, mon in released:
            if mon is not None and len(ts):
                by_model.setdefault(f"{mon.name}:{mon.version}", (mon, []))[1].append((ts, cols))
        for mon, slices in by_model.values():
            merged, _ = self.errors.call("monitor", f"rows of {mon.name}:{mon.version}",
                                         merge_and_test, mon, slices)
            if merged is not None:
                self.metrics.monitor_rows.inc(merged[0])
                events += [(ev, mon) for ev in merged[1]]
        label_ids: list[str] = []
        label_values: list[float] = []
        for rec in label_records:
            parsed, exc = self.errors.call("monitor", "a label", parse_label, rec)
            if parsed is not None:
                label_ids.append(parsed[0])
                label_values.append(parsed[1])
            elif exc is not None:
                self._dead_letter(rec, exc)
        matches = self._early_matches  # labels that waited for their prediction, then new ones
        self._early_matches = []
        if label_ids:
            self.shadow.add_labels(label_ids, np.asarray(label_values), now)
            joined: list[Any] = []
            matches.append((*self.joiner.add_labels(label_ids, np.asarray(label_values), now,
                                                    joined=joined), joined))
        for scores, truth, tags in matches:
            events += self._credit(scores, truth, tags, now)
        self.joiner.expire(now)
        self._count_labels()
        drift: list[Message] = []
        retrain: list[Message] = []
        for ev, mon in events:
            self._publish(ev, mon, now, drift, retrain)
        return drift, retrain

    def _credit(self, scores: np.ndarray, truth: np.ndarray, tags: list[Any], now: float) -> list[Any]:
        """Joined labels go to the version that made each prediction, and become examples."""
        events: list[Any] = []
        if not len(scores):
            return events
        keys = [(t[0].model, t[0].version) if t is not None else None for t in tags]
        for key in dict.fromkeys(keys):
            mon = self.monitor_for(*key) if key is not None else next(reversed(self.monitors.values()), None)
            if mon is not None:
                mask = np.fromiter((k == key for k in keys), bool, len(keys))
                ts = np.array([t[0].event_ts[t[1]] for t, m in zip(tags, mask) if m]) if key is not None else None
                events += [(ev, mon) for ev in mon.on_labels(scores[mask], truth[mask], ts)]
        for tag, score, label in zip(tags, scores.tolist(), truth.tolist()):
            if tag is not None:
                self.examples_out.append(Message(tag[0].event_ids[tag[1]].encode(),
                                                 encode(labelled_example(tag, score, label, now))))
        return events

    def _count_labels(self) -> None:
        for delay in self.joiner.delays:
            self.metrics.label_delay.observe(delay)
        self.joiner.delays.clear()
        if self.joiner.predictions:
            self.metrics.label_coverage.set(self.joiner.matched / self.joiner.predictions)
        counts = self.joiner.counters()
        for outcome, before in self._label_counts.items():
            now = counts.get(outcome, 0)
            if now > before:
                self.metrics.labels.labels(outcome).inc(now - before)
                self._label_counts[outcome] = now

    def _publish(self, ev: Any, mon: ModelMonitor, now: float, out: list[Message],
                 retrain: list[Message]) -> None:
        # the performance monitor's events carry no model: the monitor that made them knows it
        fields = {**ev.to_dict(), "model": mon.name, "model_version": mon.version}
        drift = self.open_drifts.admit(DriftEvent(**fields, detected_at=now, onset_event_ts=mon.onset_event_ts(fields)))
        if drift is None:  # announced before a takeover, still open
            return
        out.append(Message(None, encode(drift)))
        self.notifier.submit_drift(drift)
        self.metrics.drift_events.labels(drift.kind).inc()
        self.drift_events += 1
        if drift.kind == "drift_resolved":
            return
        request = self.policy.request(drift, now=now)
        if request is not None:
            retrain.append(Message(request.request_id.encode(), encode(request)))
            self.metrics.retrain_requests.inc()
            self.notifier.submit_retrain(request)
            self.retrain_requests += 1
