"""Every Prometheus metric mlstream exports, in one object built on an injected registry.

Label values come from fixed sets (stage names, validation reasons, feature names of the
model, partitions): never entity or event ids, so the series count stays bounded.
The documented list is ``docs/metrics.md``; a test checks the two agree.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from stream.http import Health

PREFIX = "mlstream"
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2000, 5000, 10000)
DELAY_BUCKETS = (0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3_600.0, 4 * 3_600.0, 86_400.0, 7 * 86_400.0)
SCORE_BUCKETS = tuple(round(0.05 * i, 2) for i in range(1, 20)) + (1.0,)
# Fixed label sets. Their series are created at zero up front, so a dashboard or an alert
# rule sees "none yet" as 0 rather than as a missing series.
MODEL_LOAD_OUTCOMES = ("load_ok", "swap_ok", "swap_failed", "rolled_back")
LABEL_OUTCOMES = ("matched", "unmatched")
# why stream.model_feed refused a record or a version received on the models topic
FEED_REFUSALS = ("oversized", "malformed", "checksum", "missing_chunk")
# where a record or batch raised and was set aside by stream.error_policy
ERROR_STAGES = ("features", "score", "monitor", "trainer")
# stream.monitoring.drift (data, score, multivariate), stream.monitoring.labels (concept) and their resolution
DRIFT_KINDS = ("data_drift", "score_drift", "multivariate_drift", "concept_drift", "drift_resolved")
ALERT_CHANNELS = ("slack", "webhook")
ALERT_OUTCOMES = ("sent", "retried", "rejected", "failed", "rate_limited", "dropped", "suppressed")


@dataclass(frozen=True)
class Metrics:
    registry: CollectorRegistry
    events_consumed: Counter
    events_valid: Counter
    events_dead_lettered: Counter
    predictions: Counter
    batch_size: Histogram
    stage_latency: Histogram
    end_to_end_latency: Histogram
    score: Histogram
    consumer_lag: Gauge
    model_info: Gauge
    model_loads: Counter
    entities: Gauge
    state_restored: Counter
    processing_errors: Counter
    drift_events: Counter
    retrain_requests: Counter
    monitor_rows: Counter
    monitor_input_age: Gauge
    labels: Counter
    label_coverage: Gauge
    label_delay: Histogram
    labelled_examples: Counter
    alert_deliveries: Counter
    model_feed_versions: Counter
    model_feed_refused: Counter
    worker_info: Gauge
    monitor_active: Gauge
    shadow_predictions: Counter
    live_loss: Gauge
    shadow_labelled: Gauge
    shadow_verdicts: Counter
    canary_share: Gauge
    # readiness of the roles running in this process, served on /ready (not a Prometheus metric)
    health: Health = field(default_factory=Health)

    @classmethod
    def create(cls, registry: CollectorRegistry | None = None, prefix: str = PREFIX) -> Metrics:
        r = registry if registry is not None else CollectorRegistry()

        def name(n: str) -> str:
            return f"{prefix}_{n}"

        m = cls(
            registry=r,
            events_consumed=Counter(name("events_consumed"), "Events read from the events topic.",
                                    ["topic"], registry=r),
            events_valid=Counter(name("events_valid"), "Events that passed validation.", registry=r),
            events_dead_lettered=Counter(name("events_dead_lettered"),
                                         "Events sent to the dead-letter topic, by reason.",
                                         ["reason"], registry=r),
            predictions=Counter(name("predictions"), "Predictions produced, by model version.",
                                ["model", "version"], registry=r),
            batch_size=Histogram(name("batch_size_events"), "Events per micro-batch.",
                                 buckets=BATCH_BUCKETS, registry=r),
            stage_latency=Histogram(name("stage_duration_seconds"),
                                    "Time spent per micro-batch in each stage.", ["stage"],
                                    buckets=LATENCY_BUCKETS, registry=r),
            end_to_end_latency=Histogram(name("end_to_end_latency_seconds"),
                                         "From the event's Kafka timestamp to its prediction being sent.",
                                         buckets=LATENCY_BUCKETS, registry=r),
            score=Histogram(name("score"), "Distribution of model scores.", ["model"],
                            buckets=SCORE_BUCKETS, registry=r),
            consumer_lag=Gauge(name("consumer_lag_events"),
                               "Events behind the partition's high watermark.",
                               ["group", "topic", "partition"], registry=r),
            model_info=Gauge(name("model_info"), "The model being served (value 1).",
                             ["model", "version", "sha256"], registry=r),
            model_loads=Counter(name("model_loads"), "Model load and swap attempts by outcome.",
                                ["outcome"], registry=r),
            entities=Gauge(name("state_entities"), "Entities held in feature state.",
                           ["partition"], registry=r),
            state_restored=Counter(name("state_restored_records"),
                                   "Changelog records replayed into feature state.", registry=r),
            processing_errors=Counter(name("processing_errors"),
                                      "Records or messages that raised and were set aside, by stage.", ["stage"],
                                      registry=r),
            drift_events=Counter(name("drift_events"), "Drift events published, by kind.", ["kind"],
                                 registry=r),
            retrain_requests=Counter(name("retrain_requests"), "Retraining requests published.",
                                     registry=r),
            monitor_rows=Counter(name("monitor_rows"), "Rows (predictions) seen by the drift monitor.",
                                 registry=r),
            monitor_input_age=Gauge(name("monitor_input_age_seconds"),
                                    "Age of the newest feature batch the monitor's last poll fetched (0 when "
                                    "it fetched none): how far behind the scorers it is.", registry=r),
            labels=Counter(name("labels"), "Delayed labels by join outcome.", ["outcome"], registry=r),
            label_coverage=Gauge(name("label_coverage_ratio"),
                                 "Predictions joined with their label / predictions seen by the monitor.",
                                 registry=r),
            label_delay=Histogram(name("label_delay_seconds"),
                                  "From a prediction reaching the monitor to its label joining it.",
                                  buckets=DELAY_BUCKETS, registry=r),
            labelled_examples=Counter(name("labelled_examples"),
                                      "Labelled examples (inputs as scored + label) written for the trainer.",
                                      registry=r),
            alert_deliveries=Counter(name("alert_deliveries"), "Alert deliveries by channel and outcome.",
                                     ["channel", "outcome"], registry=r),
            model_feed_versions=Counter(name("model_feed_versions"),
                                        "Model versions received from the model feed, checked and written to the local store.",
                                        registry=r),
            model_feed_refused=Counter(name("model_feed_refused"),
                                       "Model feed records or versions refused, by reason.", ["reason"], registry=r),
            worker_info=Gauge(name("worker_info"), "A running worker and its role (value 1).",
                              ["role"], registry=r),
            monitor_active=Gauge(name("monitor_active"),
                                 "1 on the deployment's active monitor (it holds the monitor group's "
                                 "partitions), 0 on a standby.", registry=r),
            shadow_predictions=Counter(name("shadow_predictions"),
                                       "Events scored by a non-serving version (shadow or previous champion), "
                                       "by outcome.", ["model", "version", "role", "outcome"], registry=r),
            live_loss=Gauge(name("live_labelled_loss"),
                            "Live labelled loss (log loss or MAE) of the versions compared on the same events.",
                            ["model", "version", "role"], registry=r),
            shadow_labelled=Gauge(name("shadow_labelled_events"),
                                  "Labelled events compared so far, by compared version and role.",
                                  ["model", "version", "role"], registry=r),
            shadow_verdicts=Counter(name("shadow_verdicts"), "Live comparison verdicts published.",
                                    ["model", "role", "verdict"], registry=r),
            canary_share=Gauge(name("canary_share"),
                               "Share of entities served by the challenger in shadow (absent: no canary).",
                               ["model", "version"], registry=r),
        )
        for outcome in MODEL_LOAD_OUTCOMES:
            m.model_loads.labels(outcome)
        for outcome in LABEL_OUTCOMES:
            m.labels.labels(outcome)
        for reason in FEED_REFUSALS:
            m.model_feed_refused.labels(reason)
        for stage in ERROR_STAGES:
            m.processing_errors.labels(stage)
        for kind in DRIFT_KINDS:  # increase() then sees a first event (absent -> 1 would not)
            m.drift_events.labels(kind)
        for channel in ALERT_CHANNELS:
            for outcome in ALERT_OUTCOMES:
                m.alert_deliveries.labels(channel, outcome)
        return m

    def use_score_buckets(self, buckets: tuple[float, ...]) -> None:
        """Replace the score histogram by one with these buckets (before any score is observed:
        a regression model's scores are not probabilities).

        >>> m = Metrics.create()
        >>> m.use_score_buckets((10.0, 100.0))
        >>> m.observe_scores("price", np.array([5.0, 50.0, 500.0]))
        >>> m.registry.get_sample_value("mlstream_score_bucket", {"model": "price", "le": "100.0"})
        2.0
        """
        if tuple(self.score._upper_bounds[:-1]) == tuple(buckets):
            return
        self.registry.unregister(self.score)
        # frozen so that no caller rebinds a metric by accident; this is the one replacement
        object.__setattr__(self, "score", Histogram(self.score._name, self.score._documentation, ["model"],
                                                    buckets=buckets, registry=self.registry))

    def observe_scores(self, model: str, scores: Any) -> None:
        """Add a batch of scores to the score histogram in one step (not one call per score).

        Examples
        --------
        >>> m = Metrics.create()
        >>> m.observe_scores("fraud", np.array([0.01, 0.5, 0.97]))
        >>> m.registry.get_sample_value("mlstream_score_bucket", {"model": "fraud", "le": "0.5"})
        2.0
        >>> m.registry.get_sample_value("mlstream_score_count", {"model": "fraud"})
        3.0
        """
        values = np.asarray(scores, dtype=np.float64).ravel()
        if values.size == 0:
            return
        child = self.score.labels(model)
        # prometheus_client keeps per-bucket (non-cumulative) counts in _buckets and the sum in
        # _sum; bucket i counts values <= upper bound i and > bound i-1, as observe() does.
        bounds = np.asarray(child._upper_bounds[:-1])  # the last bound is +Inf
        counts = np.bincount(np.searchsorted(bounds, values, side="left"), minlength=len(bounds) + 1)
        for bucket, n in zip(child._buckets, counts.tolist()):
            if n:
                bucket.inc(n)
        child._sum.inc(float(values.sum()))


def score_buckets(task: str, reference_profile: dict[str, Any] | None, most: int = 20) -> tuple[float, ...]:
    """The score histogram's buckets: probabilities for a classifier; for a regression model
    the quantile edges of its reference scores (the distribution it was trained to produce),
    at most ``most`` of them, else powers of ten.

    >>> score_buckets("classification", None)[:3]
    (0.05, 0.1, 0.15)
    >>> score_buckets("regression", {"features": [{"name": "score", "edges": [12.5, 40.0, 90.25]}]})
    (12.5, 40.0, 90.25)
    >>> score_buckets("regression", None)[:3]
    (-1000000.0, -100000.0, -10000.0)
    """
    if task != "regression":
        return SCORE_BUCKETS
    for feature in (reference_profile or {}).get("features", []):
        if feature.get("name") == "score" and feature.get("edges"):
            edges = sorted({round(float(e), 6) for e in feature["edges"] if np.isfinite(e)})
            step = max(1, -(-len(edges) // most))  # every step-th edge: at most ``most`` buckets
            return tuple(edges[::step])
    powers = [10.0 ** k for k in range(-2, 7)]
    return tuple(sorted([-p for p in powers] + [0.0] + powers))
