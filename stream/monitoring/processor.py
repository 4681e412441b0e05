"""The monitor's work on decoded input, without a broker: feature batches parked until the
partitions are in step, then tested per model version; labels joined to the predictions they
judge and credited to the version that made them; drift events and retraining requests out,
as messages for :class:`stream.monitoring.worker.MonitorWorker` to publish.

Tests drive it directly (``hold`` then ``handle``), as the worker does after each poll.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
from aiokafka import TopicPartition

from stream.alerts import Notifier
from stream.config import Settings
from stream.error_policy import ErrorPolicy
from stream.errors import ModelLoadError
from stream.messages import (
    SCORE_COLUMN,
    CategoryCodes,
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
from stream.monitoring.examples import labelled_example, scored_rows
from stream.monitoring.exporter import DriftCollector
from stream.monitoring.handover import OpenDrifts
from stream.monitoring.labels import LabelJoiner
from stream.monitoring.model_monitor import ENTITY_IDS, EVENT_IDS, EVENT_TS, ModelMonitor, merge_and_test, parse_label
from stream.monitoring.ordering import PartitionMerger
from stream.monitoring.retrain import RetrainPolicy
from stream.monitoring.shadow import ShadowComparator
from stream.registry import ModelStore

log = logging.getLogger(__name__)


class MonitorProcessor:
    """Decoded records in, drift/retrain messages and labelled examples out; no Kafka calls."""

    def __init__(self, settings: Settings, metrics: Metrics):
        self.settings = settings
        self.metrics = metrics
        self.store = ModelStore(settings.model_store)
        self.monitors: dict[str, ModelMonitor] = {}
        self.joiner = LabelJoiner(ttl_s=settings.monitor.label_ttl_s,
                                  max_pending=settings.monitor.max_pending_labels)
        self._label_counts = dict.fromkeys(("matched", "late", "unmatched", "expired", "evicted"), 0)
        self.policy = RetrainPolicy(settings.monitor.retrain_cooldown_s)
        self.open_drifts = OpenDrifts()  # what this deployment announced and has not resolved
        metrics.registry.register(DriftCollector(self))
        self.notifier = Notifier(settings.alerts, metrics)
        self.merger = PartitionMerger(idle_s=2.0, max_rows=200_000)
        self._early_matches: list[tuple[np.ndarray, np.ndarray, list[Any]]] = []
        # labelled examples to write (drained by the worker) and the version each model serves now
        self.examples_out: list[Message] = []
        self.serving: dict[str, tuple[int, str]] = {}  # model -> (newest ingest ms, version)
        self.drift_events = 0
        self.retrain_requests = 0
        self.errors = ErrorPolicy.from_settings(settings, metrics)
        self._dead: list[tuple[int, Message]] = []  # inputs set aside, to the dead-letter topic
        # champion against shadow / previous champion on the same labelled events
        self.shadow = ShadowComparator(settings, metrics, self._task_of)
        self._tasks: dict[tuple[str, str], str | None] = {}  # (model, version) -> task, before a monitor

    def _task_of(self, name: str, version: str) -> str | None:
        try:
            return self.store.load(name, version)[0].task
        except ModelLoadError as exc:
            log.error("cannot compare %s:%s: %s", name, version, exc)
            return None

    def _label_task(self) -> str | None:
        """The task of the model this app serves (a classifier's labels must be 0 or 1): that
        of its newest monitored version, else of its current card (None: no model yet)."""
        name = self.settings.model_name
        for mon in reversed(self.monitors.values()):
            if mon.name == name:
                return mon.task
        try:
            version = self.store.current_version(name)
        except ModelLoadError:
            return None
        if (name, version) not in self._tasks:  # a card is read once, not at every batch of labels
            self._tasks = {(name, version): self._task_of(name, version)}
        return self._tasks[(name, version)]

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
            if (small := self.monitors[key].profile.small_warning()) is not None:
                log.warning("model %s: %s", key, small)
            if previous:  # a new version of a model we already watch: it was promoted
                self.notifier.submit_promotion(ModelUpdate(
                    model=name, model_version=version, decision="promote", promoted=True,
                    previous_version=previous[-1], decided_at=time.time()))
            while len(self.monitors) > 4:  # keep the newest versions only
                self.monitors.pop(next(iter(self.monitors)))
        return self.monitors[key]

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
        inputs: Any = batch.inputs  # decoded only if a label joins one of its rows
        if inputs is not None and (n_inputs := inputs.rows()) != len(ts):
            raise ValueError(f"{n_inputs} input rows for {len(ts)} events")
        cols[EVENT_TS] = ts  # event times ride along: the monitor's daily profile reads them
        cols[ENTITY_IDS] = batch.entity_ids if batch.entity_ids is not None else [None] * len(ts)
        # rows timed in the future (or not at all) would hold the event-time merge back for good
        bad = ~(ts <= time.time() + self.settings.scoring.max_future_s)
        if bad.any():
            self.errors.failed("monitor", ValueError(f"{int(bad.sum())} event time(s) out of range"),
                               "rows of a feature batch", int(bad.sum()))
            keep = ~bad
            ts = ts[keep]
            cols = {k: (v[keep] if isinstance(v, (np.ndarray, CategoryCodes)) else [x for x, k_ in zip(v, keep) if k_])
                    for k, v in cols.items()}
            inputs = inputs.to_array()[keep] if inputs is not None else None
        # the version serving now scored the newest events (partitions lag apart)
        # (an ingest time from the future, which no broker gives, would pin the version for good)
        ingest = np.asarray(batch.ingest_ts_ms, dtype=np.float64)
        newest = int(ingest[ingest <= 1000.0 * (time.time() + self.settings.scoring.max_future_s)].max(initial=0.0))
        if newest >= self.serving.get(mon.name, (0, ""))[0]:
            self.serving[mon.name] = (newest, mon.version)
        event_ids = cols.pop(EVENT_IDS)  # taken by the label join here: the drift tests never read them
        tags = scored_rows(mon.name, mon.version, mon.kinds, cols, event_ids, ts, inputs)
        # the label join needs no ordering: predictions join it on arrival
        joined: list[Any] = []
        early = self.joiner.add_predictions(event_ids, np.asarray(cols[SCORE_COLUMN], dtype=np.float64),
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
        binary = bool(label_records) and self._label_task() == "classification"
        for rec in label_records:
            parsed, exc = self.errors.call("monitor", "a label", parse_label, rec, binary)
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
                # under the error policy: labels a monitor cannot take are counted, never a crash loop
                got, _ = self.errors.call("monitor", f"labels of {mon.name}:{mon.version}",
                                          mon.on_labels, scores[mask], truth[mask], ts)
                events += [(ev, mon) for ev in got or []]
        for tag, score, label in zip(tags, scores.tolist(), truth.tolist()):
            if tag is not None:  # the batch's inputs are decoded here, the first time one of its rows joins
                example, _ = self.errors.call("monitor", "a labelled example", labelled_example, tag, score, label, now)
                if example is not None:
                    self.examples_out.append(Message(tag[0].event_ids[tag[1]].encode(), encode(example)))
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
