"""Prometheus export of the monitor's state at scrape time: per-feature drift statistics,
thresholds and summaries, and the performance (joined and estimated) of each model version."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from stream.monitoring.worker import MonitorWorker


class DriftCollector(Collector):
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
