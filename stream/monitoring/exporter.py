"""Prometheus export of the monitor's state at scrape time: per-feature drift statistics,
thresholds and summaries, and the performance (joined and estimated) of each model version."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Protocol

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from stream.monitoring.model_monitor import ModelMonitor


class MonitoredModels(Protocol):
    """What the export reads at scrape time (a :class:`stream.monitoring.processor.MonitorProcessor`)."""

    monitors: dict[str, ModelMonitor]  # "<model>:<version>" -> its monitor
    serving: dict[str, tuple[int, str]]  # model -> (newest ingest ms, the version serving it)


# One gauge per unit (docs/metrics.md): each key of a performance snapshot goes to the family
# named here, with ``metric="<key>"`` in the ratio families; keys not listed are not exported.
RATIOS = ("auc", "accuracy", "error_rate", "precision", "recall", "f1", "positive_rate")
LABELLED = {
    "ratio": ("mlstream_model_performance_ratio",
              "Rolling performance on joined labels, a ratio in [0, 1], by metric "
              "(auc, accuracy, error_rate, precision, recall)."),
    "log_loss": ("mlstream_model_performance_log_loss", "Rolling log loss on joined labels (nats)."),
    "mae": ("mlstream_model_performance_mae", "Rolling mean absolute error on joined labels, in the target's unit."),
    "rmse": ("mlstream_model_performance_rmse", "Rolling root mean squared error on joined labels, in the target's unit."),
    "window": ("mlstream_model_performance_window_events",
               "Labelled events the rolling performance is computed on (at most the window)."),
    "labelled": ("mlstream_model_performance_labelled_events",
                 "Labelled events joined for this version since the monitor started."),
    "drifting": ("mlstream_model_performance_drifting",
                 "1 while the label-based (concept) drift test is in an open drift state, else 0."),
}
ESTIMATED = {
    "ratio": ("mlstream_model_performance_estimated_ratio",
              "An estimate: performance from recent scores alone (CBPE), before labels, a ratio in [0, 1], "
              "by metric (auc, accuracy, precision, recall, f1, positive_rate)."),
    "n": ("mlstream_model_performance_estimated_window_events", "Recent scores the estimate is computed on."),
}


def performance_families(estimated: bool = False) -> dict[str, GaugeMetricFamily]:
    """The performance gauges, one per unit, keyed as :func:`add_performance` files them."""
    return {key: GaugeMetricFamily(name, doc, labels=["model", "version", "metric"] if key == "ratio"
                                   else ["model", "version"])
            for key, (name, doc) in (ESTIMATED if estimated else LABELLED).items()}


def add_performance(fams: dict[str, GaugeMetricFamily], labels: list[str], snapshot: dict[str, float]) -> None:
    """File a performance snapshot (labelled or estimated) into ``fams``; NaN is left out.

    >>> fams = performance_families()
    >>> add_performance(fams, ["fraud", "1"], {"auc": 0.9, "log_loss": 0.2, "window": 50.0, "recall": float("nan")})
    >>> [(f.name, s.labels, s.value) for f in fams.values() for s in f.samples]  # doctest: +NORMALIZE_WHITESPACE
    [('mlstream_model_performance_ratio', {'model': 'fraud', 'version': '1', 'metric': 'auc'}, 0.9),
     ('mlstream_model_performance_log_loss', {'model': 'fraud', 'version': '1'}, 0.2),
     ('mlstream_model_performance_window_events', {'model': 'fraud', 'version': '1'}, 50.0)]
    """
    for metric, value in snapshot.items():
        metric = "auc" if metric == "roc_auc" else metric  # the estimate's name for it
        if not isinstance(value, (int, float)) or value != value:
            continue
        if metric in RATIOS and "ratio" in fams:
            fams["ratio"].add_metric([*labels, metric], float(value))
        elif metric in fams:
            fams[metric].add_metric(labels, float(value))


class DriftCollector(Collector):
    """Exports each monitor's per-feature drift state at scrape time."""

    def __init__(self, worker: MonitoredModels):
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
        labelled, estimated = performance_families(), performance_families(estimated=True)
        valid = GaugeMetricFamily("mlstream_model_performance_estimate_valid",
                                  "1 while the label-free estimate agrees with the joined labels, 0 when not.",
                                  labels=["model", "version"])
        warming = GaugeMetricFamily("mlstream_drift_warming_up",
                                    "1 while the monitor still learns the stream's dependence (no test runs).",
                                    labels=["model", "version"])
        capped = GaugeMetricFamily("mlstream_drift_entity_capped_ratio",
                                   "Share of the rows left out of the entity-balanced category shares (past their "
                                   "entity's cap, or in a run of one category longer than chance gives).",
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
            n_capped, n_rows = mon.drift.capped_rows()
            if n_rows:
                capped.add_metric([mon.name, mon.version], n_capped / n_rows)
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
            if serving:
                add_performance(labelled, [mon.name, mon.version], mon.performance.snapshot())
            add_performance(estimated, [mon.name, mon.version], mon.estimated_performance())
        yield from fams.values()
        yield from labelled.values()
        yield from estimated.values()
        yield from (valid, warming, capped, summary, shares)
