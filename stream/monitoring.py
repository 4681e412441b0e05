"""The monitoring worker: feature batches and delayed labels in, drift events and retraining
requests out. It runs beside the scorers in its own consumer group (``<app_id>-monitor``), so
monitoring never slows scoring; several monitor workers split the partitions between them.

The drift logic itself is pure (:mod:`stream.drift`, :mod:`stream.labels`); this module only
decodes messages, keeps one monitor per model version, and publishes what they return.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import orjson
from aiokafka import TopicPartition
from aiokafka.structs import OffsetAndMetadata
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from stream.config import Settings
from stream.drift import DriftMonitor, DriftSettings
from stream.errors import ModelLoadError
from stream.kafka import make_consumer, make_producer, send_messages, start_client
from stream.labels import LabelJoiner, PerformanceMonitor
from stream.metrics import Metrics
from stream.pipeline import Message
from stream.profile import ReferenceProfile
from stream.registry import ModelStore
from stream.retrain import RetrainPolicy
from stream.training import SCORE_COLUMN

log = logging.getLogger(__name__)


def decode_feature_batch(value: bytes, kinds: dict[str, str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A feature batch message as (header fields, monitor columns including the score)."""
    msg = orjson.loads(value)
    cols: dict[str, Any] = {}
    raw = msg["columns"]
    for name, kind in kinds.items():
        if name == SCORE_COLUMN:
            cols[name] = np.asarray(msg["scores"], dtype=np.float64)
        elif kind == "numeric":
            cols[name] = np.array([np.nan if v is None else v for v in raw[name]], dtype=np.float64)
        else:
            cols[name] = list(raw[name])
    return msg, cols


class ModelMonitor:
    """Drift, label join and performance for one model version (pure, no Kafka)."""

    def __init__(self, card: dict[str, Any], settings: Settings):
        self.name, self.version = str(card["name"]), str(card["version"])
        self.profile = ReferenceProfile.from_dict(card["reference_profile"])
        self.kinds = dict(self.profile.features)
        m = settings.monitor
        self.drift = DriftMonitor(self.profile, DriftSettings(expected_run_length=m.expected_run_length),
                                  model_name=self.name, model_version=self.version)
        self.joiner = LabelJoiner(ttl_s=m.label_ttl_s, max_pending=m.max_pending_labels)
        self.performance = PerformanceMonitor(task=card.get("task", "classification"),
                                              threshold=float(card.get("threshold", 0.5)))
        self.warmup_left = m.warmup_rows

    def on_features(self, msg: dict[str, Any], cols: dict[str, Any], now: float) -> list[Any]:
        n = len(msg["event_ids"])
        self.joiner.add_predictions(msg["event_ids"], np.asarray(msg["scores"]), now)
        if self.warmup_left >= n:
            self.warmup_left -= n
            return []
        if self.warmup_left:
            cols = {k: v[self.warmup_left:] for k, v in cols.items()}
            self.warmup_left = 0
        return self.drift.update_batch(cols)

    def on_labels(self, event_ids: list[str], labels: list[float], now: float) -> list[Any]:
        scores, truth = self.joiner.add_labels(event_ids, np.asarray(labels, dtype=np.float64), now)
        if len(scores) == 0:
            return []
        return self.performance.update(scores, truth)


class MonitorWorker:
    def __init__(self, settings: Settings, metrics: Metrics):
        self.settings = settings
        self.metrics = metrics
        self.store = ModelStore(settings.model_store)
        self.monitors: dict[str, ModelMonitor] = {}
        self.policy = RetrainPolicy(settings.monitor.retrain_cooldown_s)
        self.group_id = f"{settings.app_id}-monitor"
        metrics.registry.register(_DriftCollector(self))
        self.drift_events = 0
        self.retrain_requests = 0

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
            self.monitors[key] = ModelMonitor(card.data, self.settings)
            while len(self.monitors) > 4:  # keep the newest versions only
                self.monitors.pop(next(iter(self.monitors)))
        return self.monitors[key]

    async def run(self, stop: asyncio.Event) -> None:
        s = self.settings
        producer = make_producer(s)
        await start_client(producer, s.kafka.bootstrap_servers)
        consumer = make_consumer(s, s.topics.features, s.topics.labels, group_id=self.group_id,
                                 max_partition_fetch_bytes=16 * 1024 * 1024)
        try:
            await start_client(consumer, s.kafka.bootstrap_servers)
            self.metrics.worker_info.labels("monitor").set(1)
            while not stop.is_set():
                batches = await consumer.getmany(timeout_ms=200, max_records=500)
                if not batches:
                    continue
                out: list[Message] = []
                retrain: list[Message] = []
                for tp, records in batches.items():
                    for rec in records:
                        self._handle(tp.topic, rec.value or b"", out, retrain)
                futures = []
                if out:
                    futures += await send_messages(producer, s.topics.drift, 0, out)
                if retrain:
                    futures += await send_messages(producer, s.topics.retrain, 0, retrain)
                if futures:
                    await asyncio.gather(*futures)
                await consumer.commit({tp: OffsetAndMetadata(recs[-1].offset + 1, "")
                                       for tp, recs in batches.items() if recs})
        finally:
            await consumer.stop()
            await producer.stop()
            self.metrics.worker_info.labels("monitor").set(0)

    def _handle(self, topic: str, value: bytes, out: list[Message], retrain: list[Message]) -> None:
        now = time.time()
        try:
            if topic == self.settings.topics.features:
                head = orjson.loads(value)
                mon = self.monitor_for(head["model"], head["model_version"])
                if mon is None:
                    return
                msg, cols = decode_feature_batch(value, mon.kinds)
                self.metrics.monitor_rows.inc(len(msg["event_ids"]))
                events = mon.on_features(msg, cols, now)
            else:
                events = self._on_label(value, now)
                mon = None
        except (KeyError, TypeError, ValueError, orjson.JSONDecodeError) as exc:
            self.metrics.processing_errors.labels("monitor").inc()
            log.warning("skipping a malformed %s message: %s", topic, str(exc)[:200])
            return
        for ev in events:
            self._publish(ev, now, out, retrain)

    def _on_label(self, value: bytes, now: float) -> list[Any]:
        label = orjson.loads(value)
        found = False
        events: list[Any] = []
        for mon in list(self.monitors.values()):
            if label["event_id"] in mon.joiner:
                found = True
                events += mon.on_labels([label["event_id"]], [float(label["label"])], now)
                self.metrics.labels.labels("matched").inc()
                break
        if not found:
            # not (yet) joined: park it with the newest model's joiner until its prediction comes
            newest = next(reversed(self.monitors.values()), None)
            if newest is not None:
                newest.joiner.add_labels([label["event_id"]], np.asarray([float(label["label"])]), now)
            self.metrics.labels.labels("unmatched").inc()
        return events

    def _publish(self, ev: Any, now: float, out: list[Message], retrain: list[Message]) -> None:
        drift = ev.to_dict()
        drift["detected_at"] = now
        out.append(Message(None, orjson.dumps(drift, option=orjson.OPT_SERIALIZE_NUMPY)))
        self.metrics.drift_events.labels(drift["kind"]).inc()
        self.drift_events += 1
        if drift["kind"] == "drift_resolved":
            return
        request = self.policy.request(drift, model=drift.get("model_name") or "",
                                      version=drift.get("model_version") or "", now=now)
        if request is not None:
            retrain.append(Message(request["request_id"].encode(),
                                   orjson.dumps(request, option=orjson.OPT_SERIALIZE_NUMPY)))
            self.metrics.retrain_requests.inc()
            self.retrain_requests += 1


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
        }
        perf = GaugeMetricFamily("mlstream_model_performance", "Rolling performance from joined labels.",
                                 labels=["model", "version", "metric"])
        for mon in list(self.worker.monitors.values()):
            for feature, snap in mon.drift.snapshot().items():
                for key, fam in fams.items():
                    value = snap.get(key)
                    if value is not None:
                        fam.add_metric([mon.name, mon.version, feature], float(value))
            for metric, value in mon.performance.snapshot().items():
                if isinstance(value, (int, float)) and value == value:
                    perf.add_metric([mon.name, mon.version, metric], float(value))
        yield from fams.values()
        yield perf
