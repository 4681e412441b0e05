"""The monitoring worker: feature batches and delayed labels in, drift events and retraining
requests out. It runs beside the scorers in its own consumer group (``<app_id>-monitor``), so
monitoring never slows scoring; several monitor workers split the partitions between them.

The drift logic itself is pure (:mod:`stream.monitoring.drift`, :mod:`stream.monitoring.labels`); this module only
decodes messages, keeps one monitor per model version, and publishes what they return.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
from aiokafka import ConsumerRebalanceListener, TopicPartition
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

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
    Label,
    Message,
    ModelUpdate,
    decode,
    encode,
)
from stream.metrics import Metrics
from stream.monitoring.drift import DriftMonitor
from stream.monitoring.examples import ScoredRows, labelled_example
from stream.monitoring.labels import (
    EstimateValidity,
    LabelJoiner,
    PerformanceMonitor,
    estimate_performance,
    holdout_reference,
)
from stream.monitoring.ordering import PartitionMerger
from stream.monitoring.profile import ReferenceProfile
from stream.monitoring.retrain import RetrainPolicy
from stream.registry import ModelStore

log = logging.getLogger(__name__)
EVENT_IDS = "__event_ids"  # rides along with the monitored columns through the merger
EVENT_TS = "__event_ts"  # event times, for the monitor's daily profile


class ModelMonitor:
    """Drift tests and performance for one model version (pure, no Kafka)."""

    ONSET_ROWS = 100_000  # event times kept to date a data drift's onset (a release can be large)

    def __init__(self, card: dict[str, Any], settings: Settings):
        self.name, self.version = str(card["name"]), str(card["version"])
        self.task = str(card.get("task", "classification"))
        self.threshold = float(card.get("threshold", 0.5))
        self.profile = ReferenceProfile.from_dict(card["reference_profile"])
        self.kinds = dict(self.profile.features)
        m, p = settings.monitor, settings.monitor.performance
        self.drift = DriftMonitor(self.profile, m.drift_settings(), model_name=self.name, model_version=self.version)
        # the reference error rate is the model card's holdout, not the first live labels
        holdout = holdout_reference(card)
        self.performance = PerformanceMonitor(
            task=self.task, threshold=self.threshold, window=p.window, windows=p.windows,
            checks_per_window=p.checks_per_window, expected_run_length=m.expected_run_length,
            reference_size=holdout[1] if holdout else p.reference_size,
            reference_loss=holdout[0] if holdout else None, min_increase=p.min_increase,
            min_relative_increase=p.min_relative_increase, leave_ratio=p.leave_ratio,
            model_name=self.name, model_version=self.version)
        self.estimate_validity = EstimateValidity(p.estimate_tolerance, p.estimate_window,
                                                  min(p.estimate_min_labels, p.estimate_window))
        self.warmup_left = m.warmup_rows
        # event times of the rows tested, to date a data drift's onset
        self.row_times = RecentTimes(self.ONSET_ROWS)
        self._estimate_rows = p.estimate_rows
        self._recent = np.full(p.estimate_rows, np.nan)
        self._recent_at = 0

    def on_features(self, cols: dict[str, Any], ts: np.ndarray | None = None) -> list[Any]:
        scores = np.asarray(cols[SCORE_COLUMN])
        rows = self._estimate_rows
        idx = (self._recent_at + np.arange(len(scores))) % rows
        self._recent[idx[-rows:]] = scores[-rows:]
        self._recent_at += len(scores)
        n = len(scores)
        if self.warmup_left >= n:
            self.warmup_left -= n
            return []
        if self.warmup_left:
            cols = {k: v[self.warmup_left:] for k, v in cols.items()}
            ts = None if ts is None else ts[self.warmup_left:]
            self.warmup_left = 0
        self.row_times.add(ts if ts is not None else np.full(len(cols[SCORE_COLUMN]), np.nan))
        return self.drift.update_batch(cols, ts=ts)

    def on_labels(self, scores: np.ndarray, labels: np.ndarray,
                  event_ts: np.ndarray | None = None) -> list[Any]:
        if not len(scores):
            return []
        if self.task == "classification":
            self.estimate_validity.update(scores, labels)
        return self.performance.update(scores, labels, event_ts)

    def onset_event_ts(self, drift: dict[str, Any]) -> float | None:
        """Event time the drift is in force from (the trainer's "onset" window starts there).

        Concept drift: the change point the performance monitor found in the loss
        (``change_event_ts`` in its evidence). Other drift: the start of the largest window that fired."""
        evidence = drift.get("evidence", [])
        windows = [int(e["window"]) for e in evidence if e.get("window")]
        index = drift.get("index")
        if not windows or not isinstance(index, int):
            return None
        if drift.get("kind") == "concept_drift":
            changes = [float(e["change_event_ts"]) for e in evidence if e.get("change_event_ts") is not None]
            return min(changes) if changes else None
        return self.row_times.at(max(0, index + 1 - max(windows)))  # index is the window's last row

    def estimated_performance(self) -> dict[str, float]:
        if self.task != "classification":
            return {}
        recent = self._recent[~np.isnan(self._recent)]
        return estimate_performance(recent, self.threshold) if len(recent) else {}


class RecentTimes:
    """The last ``size`` event times, by the count of rows added (a drift event's index).

    >>> t = RecentTimes(3); t.add(np.array([1.0, 2.0, 3.0, 4.0])); t.at(2), t.at(0), t.at(9)
    (3.0, 2.0, 4.0)
    """

    def __init__(self, size: int):
        self._ts = np.full(size, np.nan)
        self._n = 0

    def add(self, ts: np.ndarray) -> None:
        ts = np.asarray(ts, dtype=np.float64)
        kept = ts[-len(self._ts):]
        idx = (self._n + len(ts) - len(kept) + np.arange(len(kept))) % len(self._ts)
        self._ts[idx] = kept
        self._n += len(ts)

    @property
    def n(self) -> int:
        return self._n

    def at(self, i: int) -> float | None:
        """The time of the ``i``-th row ever added, or the oldest kept if it is gone."""
        if self._n == 0:
            return None
        i = min(max(i, self._n - len(self._ts), 0), self._n - 1)
        value = self._ts[i % len(self._ts)]
        return float(value) if value == value else None


def merge_slices(slices: list[tuple[np.ndarray, dict[str, Any]]]) -> dict[str, Any]:
    """Released rows of several partitions as one set of columns, in event-time order."""
    if len(slices) == 1:
        return slices[0][1]
    order = np.argsort(np.concatenate([ts for ts, _ in slices]), kind="stable")
    merged: dict[str, Any] = {}
    for name in slices[0][1]:
        parts = [c[name] for _, c in slices]
        if isinstance(parts[0], np.ndarray):
            merged[name] = np.concatenate(parts)[order]
        else:
            flat = [v for p in parts for v in p]
            merged[name] = [flat[i] for i in order]
    return merged


class MonitorWorker:
    def __init__(self, settings: Settings, metrics: Metrics, *, create_topics: bool = True):
        self.settings = settings
        self.create_topics = create_topics  # recreate topics that disappear (else stop)
        self.metrics = metrics
        self.store = ModelStore(settings.model_store)
        self.monitors: dict[str, ModelMonitor] = {}
        self.joiner = LabelJoiner(ttl_s=settings.monitor.label_ttl_s,
                                  max_pending=settings.monitor.max_pending_labels)
        self._label_counts = dict.fromkeys(("matched", "late", "unmatched", "expired", "evicted"), 0)
        self.policy = RetrainPolicy(settings.monitor.retrain_cooldown_s)
        self.group_id = f"{settings.app_id}-monitor"
        metrics.registry.register(_DriftCollector(self))
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
                consumer = make_consumer(s, group_id=self.group_id, max_partition_fetch_bytes=16 * 1024 * 1024)
                listener = _ForgetRevoked(self.merger, s.topics.features, self.metrics, consumer, from_beginning)
                consumer.subscribe([s.topics.features, s.topics.labels], listener=listener)
                await start_client(consumer, s.kafka.bootstrap_servers)
                self.metrics.worker_info.labels("monitor").set(1)
                if not await self._loop(consumer, producer, stop):
                    break
                # the broker lost its data: start over on the new topics with a new consumer
                self.merger.forget_all()
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
        labels = {tp: recs for tp, recs in batches.items() if tp.topic == s.topics.labels}
        self.hold({tp: recs for tp, recs in batches.items() if tp.topic == s.topics.features},
                  time.monotonic())
        released, offsets = self.merger.release(time.monotonic())
        if not released and not labels and not self._early_matches and not self._dead and not self.examples_out:
            return bool(batches)
        drift, retrain = self.handle(released, [r for recs in labels.values() for r in recs],
                                     time.time())
        futures = []
        dead, self._dead = self._dead, []
        for partition, message in dead:
            futures += await send_messages(producer, s.topics.dead_letter, partition, [message])
        if drift:
            futures += await send_messages(producer, s.topics.drift, 0, drift)
        if retrain:
            futures += await send_messages(producer, s.topics.retrain, 0, retrain)
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
        offsets.update({tp: recs[-1].offset + 1 for tp, recs in labels.items() if recs})
        await commit_or_redeliver(consumer, offsets, deadline)
        return bool(batches)

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
        tags = self._scored_rows(mon, cols, ts, X)
        # the label join needs no ordering: predictions join it on arrival
        joined: list[Any] = []
        early = self.joiner.add_predictions(cols[EVENT_IDS], np.asarray(cols[SCORE_COLUMN], dtype=np.float64),
                                            time.time(), tags=tags, joined=joined)
        if len(early[0]):
            self._early_matches.append((*early, joined))
        return ts, cols, mon

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
                                         _merge_and_test, mon, slices)
            if merged is not None:
                self.metrics.monitor_rows.inc(merged[0])
                events += [(ev, mon) for ev in merged[1]]
        label_ids: list[str] = []
        label_values: list[float] = []
        for rec in label_records:
            parsed, exc = self.errors.call("monitor", "a label", _parse_label, rec)
            if parsed is not None:
                label_ids.append(parsed[0])
                label_values.append(parsed[1])
            elif exc is not None:
                self._dead_letter(rec, exc)
        matches = self._early_matches  # labels that waited for their prediction, then new ones
        self._early_matches = []
        if label_ids:
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

    def _scored_rows(self, mon: ModelMonitor, cols: dict[str, Any], ts: np.ndarray,
                     X: np.ndarray | None) -> list[Any] | None:
        """Tags pointing each prediction at its model inputs, when the batch carries them."""
        if X is None:
            return None
        cats = {k: list(v) for k, v in cols.items() if k != EVENT_IDS and mon.kinds.get(k) == "categorical"}
        rows = ScoredRows(mon.name, mon.version, list(cols[EVENT_IDS]), X, ts, cats)
        return [(rows, i) for i in range(len(X))]

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
        if self.joiner.delays:
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
        drift = DriftEvent(**fields, detected_at=now, onset_event_ts=mon.onset_event_ts(fields))
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


def _merge_and_test(mon: ModelMonitor, slices: list[tuple[np.ndarray, dict[str, Any]]]) -> tuple[int, list[Any]]:
    cols = merge_slices(slices)
    ids = cols.pop(EVENT_IDS)
    ts = cols.pop(EVENT_TS, None)
    return len(ids), mon.on_features(cols, None if ts is None else np.asarray(ts, dtype=np.float64))


def _parse_label(rec: Any) -> tuple[str, float]:
    label = decode(rec.value, Label)
    value = float(label.label)
    if not np.isfinite(value):
        raise ValueError(f"label {value} is not finite")
    return label.event_id, value


class _ForgetRevoked(ConsumerRebalanceListener):
    """Held feature batches of a revoked partition belong to its new owner."""

    def __init__(self, merger: PartitionMerger, topic: str, metrics: Metrics, consumer: Any = None,
                 from_beginning: bool = False):
        self.merger = merger
        self.topic = topic
        self.metrics = metrics
        self.consumer = consumer
        self.from_beginning = from_beginning

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        for tp in revoked:
            self.merger.forget(tp)
        self.metrics.health.set("monitor", False, "rebalancing")

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        if self.from_beginning and self.consumer is not None and assigned:
            self.from_beginning = False
            for tp in assigned:  # a plain seek: committed offsets may be old-topic positions
                self.consumer.seek(tp, 0)
        now = time.monotonic()
        for tp in assigned:
            if tp.topic == self.topic:
                self.merger.track(tp, now)
        self.metrics.health.set("monitor", True, f"{len(assigned)} partitions assigned")


class _DriftCollector(Collector):
    """Exports each monitor's per-feature drift state at scrape time."""

    def __init__(self, worker: MonitorWorker):
        self.worker = worker

    def collect(self) -> Iterator[GaugeMetricFamily]:
        fams = {
            "statistic": GaugeMetricFamily("mlstream_drift_statistic", "Latest drift test statistic per feature.",
                                           labels=["model", "version", "feature"]),
            "effect_size": GaugeMetricFamily("mlstream_drift_effect_size", "Latest drift effect size per feature.",
                                             labels=["model", "version", "feature"]),
            "threshold": GaugeMetricFamily("mlstream_drift_threshold", "Calibrated alarm threshold per feature.",
                                           labels=["model", "version", "feature"]),
            "p_value": GaugeMetricFamily("mlstream_drift_p_value", "Latest p-value per feature (where defined).",
                                         labels=["model", "version", "feature"]),
            "drifting": GaugeMetricFamily("mlstream_drift_state", "1 while a feature's drift state is open.",
                                          labels=["model", "version", "feature"]),
            "design_effect": GaugeMetricFamily("mlstream_drift_design_effect",
                                               "Measured design effect (long-run / i.i.d. variance) per feature.",
                                               labels=["model", "version", "feature"]),
        }
        perf = GaugeMetricFamily("mlstream_model_performance", "Rolling performance from joined labels.",
                                 labels=["model", "version", "metric"])
        estimated = GaugeMetricFamily("mlstream_model_performance_estimated",
                                      "Performance estimated from recent scores alone (CBPE), before labels.",
                                      labels=["model", "version", "metric"])
        valid = GaugeMetricFamily("mlstream_model_performance_estimate_valid",
                                  "1 while the label-free estimate agrees with the joined labels, 0 when not.",
                                  labels=["model", "version"])
        warming = GaugeMetricFamily("mlstream_drift_warming_up",
                                    "1 while the monitor still learns the stream's dependence (no test runs).",
                                    labels=["model", "version"])
        summary = GaugeMetricFamily("mlstream_feature_summary",
                                    "Rolling summary statistic per feature, current window or reference.",
                                    labels=["model", "version", "feature", "stat", "source"])
        shares = GaugeMetricFamily("mlstream_feature_category_share",
                                   "Share of the top reference categories (and __other__), current or reference.",
                                   labels=["model", "version", "feature", "category", "source"])
        for mon in list(self.worker.monitors.values()):
            for feature, snap in mon.drift.snapshot().items():
                for key, fam in fams.items():
                    value = snap.get(key)
                    if value is not None:
                        fam.add_metric([mon.name, mon.version, feature], float(value))
            warming.add_metric([mon.name, mon.version], float(mon.drift.warming_up))
            if mon.estimate_validity.valid is not None:
                valid.add_metric([mon.name, mon.version], float(mon.estimate_validity.valid))
            for feature, summ in mon.drift.summary().items():
                for source in ("current", "reference"):
                    part = summ[source]
                    stats = {k: part.get(k) for k in ("mean", "std", "missing_rate")}
                    stats.update({f"q{q}": v for q, v in (part.get("quantiles") or {}).items()})
                    for stat, value in stats.items():
                        if isinstance(value, float) and value == value:
                            summary.add_metric([mon.name, mon.version, feature, stat, source], value)
                    for cat, value in (part.get("share") or {}).items():
                        shares.add_metric([mon.name, mon.version, feature, cat, source], float(value))
            # a retired version's labels still join for a while; its performance is not exported
            serving = self.worker.serving.get(mon.name, (0, None))[1] == mon.version
            for metric, value in mon.performance.snapshot().items() if serving else ():
                if isinstance(value, (int, float)) and value == value:
                    perf.add_metric([mon.name, mon.version, metric], float(value))
            for metric, value in mon.estimated_performance().items():
                metric = "auc" if metric == "roc_auc" else metric  # same name as the labelled one
                if isinstance(value, (int, float)) and value == value:
                    estimated.add_metric([mon.name, mon.version, metric], float(value))
        yield from fams.values()
        yield perf
        yield estimated
        yield from (valid, warming, summary, shares)
