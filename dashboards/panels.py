"""One function per Grafana panel, plus the shared defaults they use.

Every query uses the metrics of ``docs/metrics.md`` through the ``$datasource`` variable (by
default the Prometheus provisioned by ``ops/grafana/provisioning/datasources/prometheus.yml``)
and is narrowed by the ``$model`` and ``$instance`` variables; model panels repeat per model, so
no panel mixes two models.
``tests/test_prometheus_scrape.py`` runs each query against a real Prometheus scraping a
pipeline, so a query that returns nothing fails the suite. Each panel's description says what
it shows and what it is for: Grafana shows it as the panel's tooltip, and ``dashboards.build``
writes it, with the title, type and queries, to ``docs/dashboards.md``.
"""

from __future__ import annotations

from typing import Any

from grafana_foundation_sdk.builders import common as cb
from grafana_foundation_sdk.builders import (
    dashboard,
    heatmap,
    prometheus,
    stat,
    statetimeline,
    timeseries,
)
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models.dashboard import (
    DataSourceRef,
    DynamicConfigValue,
    Threshold,
    ThresholdsMode,
)
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

PROVISIONED_UID = "mlstream-prometheus"
DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
RATE = "$__rate_interval"
# label matchers of the dashboard variables (multi-value, "All" = ".*")
INST = 'instance=~"$instance"'
MODEL = 'model=~"$model"'
BOTH = f"{MODEL}, {INST}"


# -- shared defaults ----------------------------------------------------------------------


def query(expr: str, legend: str = "", *, ref: str = "A", fmt: PromQueryFormat | None = None) -> prometheus.Dataquery:
    q = prometheus.Dataquery().expr(expr).legend_format(legend or "__auto").ref_id(ref)
    return q.format(fmt) if fmt is not None else q


def default_timeseries(title: str, description: str, unit: str = "short") -> timeseries.Panel:
    return (timeseries.Panel().title(title).description(description).datasource(DATASOURCE)
            .unit(unit).height(8).span(12).fill_opacity(10).line_width(1)
            .legend(cb.VizLegendOptions().show_legend(True)
                    .display_mode(common.LegendDisplayMode.TABLE)
                    .placement(common.LegendPlacement.BOTTOM).calcs(["lastNotNull", "max"])))


def default_stat(title: str, description: str, unit: str = "short") -> stat.Panel:
    return (stat.Panel().title(title).description(description).datasource(DATASOURCE)
            .unit(unit).height(4).span(6))


def red_above(value: float) -> dashboard.ThresholdsConfig:
    return (dashboard.ThresholdsConfig().mode(ThresholdsMode.ABSOLUTE)
            .steps([Threshold(value=None, color="green"),
                    Threshold(value=value, color="red")]))


def quantiles(metric: str, by: str = "") -> list[prometheus.Dataquery]:
    group = f"le, {by}" if by else "le"
    suffix = f" {{{{{by}}}}}" if by else ""
    return [query(f"histogram_quantile({q}, sum by ({group}) (rate({metric}_bucket{{{INST}}}[{RATE}])))",
                  f"p{int(q * 100)}{suffix}", ref=ref)
            for q, ref in ((0.5, "A"), (0.95, "B"), (0.99, "C"))]


def per_model(panel: Any) -> Any:
    """One panel per model selected in ``$model`` (Grafana repeats it), so no panel mixes models."""
    return panel.repeat("model").repeat_direction("h")


# -- pipeline overview --------------------------------------------------------------------


def throughput() -> timeseries.Panel:
    return (default_timeseries("Throughput", "Events consumed, events valid and predictions "
                               "produced per second, over all workers.", "ops")
            .with_target(query(f"sum by (topic) (rate(mlstream_events_consumed_total{{{INST}}}[{RATE}]))",
                               "consumed {{topic}}"))
            .with_target(query(f"sum(rate(mlstream_events_valid_total{{{INST}}}[{RATE}]))", "valid", ref="B"))
            .with_target(query(f"sum by (model, version) (rate(mlstream_predictions_total{{{BOTH}}}[{RATE}]))",
                               "predictions {{model}} v{{version}}", ref="C")))


def end_to_end_latency() -> timeseries.Panel:
    return (default_timeseries("End-to-end latency", "From the event's Kafka timestamp to its "
                               "prediction being sent: p50, p95, p99.", "s")
            .targets(quantiles("mlstream_end_to_end_latency_seconds")))


def stage_latency() -> timeseries.Panel:
    return (default_timeseries("Stage latency p95", "Time per micro-batch in each stage "
                               "(validate, features, score, serialize, produce; monitor: one monitor poll's work).", "s")
            .with_target(query("histogram_quantile(0.95, sum by (le, stage) "
                               f"(rate(mlstream_stage_duration_seconds_bucket{{{INST}}}[{RATE}])))",
                               "{{stage}}")))


def batch_size() -> timeseries.Panel:
    return (default_timeseries("Micro-batch size", "Events per micro-batch: p50 and p95. Large "
                               "batches mean the worker is catching up.", "short")
            .targets(quantiles("mlstream_batch_size_events")[:2]))


def consumer_lag() -> timeseries.Panel:
    return (default_timeseries("Consumer lag", "Events behind the high watermark, per partition "
                               "of the events topic. A line that keeps rising means the workers "
                               "do not keep up.", "short")
            .with_target(query(f"sum by (topic, partition) (mlstream_consumer_lag_events{{{INST}}})",
                               "{{topic}}/{{partition}}")))


def monitor_behind() -> timeseries.Panel:
    return (default_timeseries("Monitor behind", "Age of the newest feature batch the drift monitor "
                               "fetched: how far behind the scorers it tests. Beside a scorer it runs at "
                               "idle CPU priority up to monitor.idle_max_behind_s, then at its niced one.", "s")
            .with_target(query(f"max(mlstream_monitor_input_age_seconds{{{INST}}})", "monitor")))


def dead_letter_rate() -> timeseries.Panel:
    return (default_timeseries("Dead letters", "Events sent to the dead-letter topic per second, "
                               "by validation reason.", "ops")
            .with_target(query(f"sum by (reason) (rate(mlstream_events_dead_lettered_total{{{INST}}}[{RATE}]))",
                               "{{reason}}")))


def dead_letter_ratio() -> stat.Panel:
    return (default_stat("Dead-letter ratio", "Share of consumed events dead-lettered.",
                         "percentunit")
            .thresholds(red_above(0.05))
            .with_target(query(f"sum(rate(mlstream_events_dead_lettered_total{{{INST}}}[{RATE}])) / "
                               f"clamp_min(sum(rate(mlstream_events_consumed_total{{{INST}}}[{RATE}])), 1e-9)",
                               "dead-letter ratio")))


def errors() -> timeseries.Panel:
    return (default_timeseries("Errors", "Batches that raised (by stage) and failed model "
                               "loads or swaps.", "short")
            .with_target(query(f"sum by (stage) (increase(mlstream_processing_errors_total{{{INST}}}[{RATE}]))",
                               "processing error {{stage}}"))
            .with_target(query("sum by (outcome) (increase(mlstream_model_loads_total"
                               f"{{outcome=~\".*failed\", {INST}}}[{RATE}]))", "model {{outcome}}", ref="B")))


def workers() -> stat.Panel:
    return (default_stat("Workers", "Running worker stages by role (each process reports "
                         "mlstream_worker_info).", "none")
            .with_target(query(f"sum by (role) (mlstream_worker_info{{{INST}}})", "{{role}}")))


def entities() -> stat.Panel:
    return (default_stat("Entities in state", "Entities held in feature state over all "
                         "partitions (evicted after the state TTL).", "short")
            .with_target(query(f"sum(mlstream_state_entities{{{INST}}})", "entities")))


# -- model ----------------------------------------------------------------------------------


def score_distribution() -> heatmap.Panel:
    return per_model(heatmap.Panel().title("Score distribution").description(
                "Scores per bucket over time; a shift of mass between buckets is a score drift.")
            .datasource(DATASOURCE).height(8).span(12)
            .with_target(query(f"sum by (le) (increase(mlstream_score_bucket{{{BOTH}}}[{RATE}]))", "{{le}}",
                               fmt=PromQueryFormat.HEATMAP)))


def model_version() -> statetimeline.Panel:
    return per_model(statetimeline.Panel().title("Model version served").description(
                "Which model version each worker serves, over time (swaps show as a change).")
            .datasource(DATASOURCE).height(6).span(12)
            .with_target(query(f"max by (model, version) (mlstream_model_info{{{BOTH}}})",
                               "{{model}} v{{version}}")))


def predictions_by_version() -> timeseries.Panel:
    return per_model(default_timeseries("Predictions by model version", "Predictions per second by "
                               "model version; during a swap both appear briefly.", "ops")
            .with_target(query(f"sum by (model, version) (rate(mlstream_predictions_total{{{BOTH}}}[{RATE}]))",
                               "{{model}} v{{version}}")))


def performance() -> timeseries.Panel:
    return per_model(default_timeseries("Performance (labelled)", "Rolling performance over the last "
                               "labelled predictions, once delayed labels arrive and are joined: "
                               "ratios in [0, 1] (classification).",
                               "percentunit")
            .min(0).max(1)
            .with_target(query(f'mlstream_model_performance_ratio{{metric=~"auc|precision|recall|accuracy", {BOTH}}}',
                               "{{metric}} {{model}} v{{version}}")))


def loss() -> timeseries.Panel:
    """Log loss (classification) or MAE and RMSE (regression, in the target's unit): one query,
    so the panel shows whichever the model's task exports."""
    parts = [f'label_replace(mlstream_model_performance_{name}{{{BOTH}}}, "metric", "{name}", "", "")'
             for name in ("log_loss", "mae", "rmse")]
    return per_model(default_timeseries("Loss (labelled)", "Rolling loss on joined labels: log loss "
                               "for a classifier; MAE and RMSE, in the target's unit, for a "
                               "regression model. Lower is better.", "short")
            .min(0)
            .with_target(query(" or ".join(parts), "{{metric}} {{model}} v{{version}}")))


def labelled_events() -> timeseries.Panel:
    return per_model(default_timeseries("Labelled events behind the performance", "Labelled events "
                               "the rolling performance is computed on (the window fills, then "
                               "stays), and the label-free estimate's recent scores. Few events: "
                               "wide error bars.", "short")
            .with_target(query(f"max by (model, version) (mlstream_model_performance_window_events{{{BOTH}}})",
                               "labelled, {{model}} v{{version}}"))
            .with_target(query(f"max by (model, version) (mlstream_model_performance_estimated_window_events{{{BOTH}}})",
                               "scores behind the estimate, {{model}} v{{version}}", ref="B")))


def estimated_performance() -> timeseries.Panel:
    return per_model(default_timeseries("Estimated performance (before labels)",
                               "An estimate: performance expected from the scores alone (confidence-based "
                               "performance estimation: right if the model is calibrated), "
                               "available at once, long before labels arrive. Dashed: 1 while "
                               "the estimate agrees with the joined labels, 0 when it does not "
                               "(then do not trust it). Compare with the labelled panel.",
                               "percentunit")
            .min(0).max(1)
            .with_target(query(f'mlstream_model_performance_estimated_ratio{{metric=~"auc|precision|recall|accuracy", {BOTH}}}',
                               "estimated {{metric}} {{model}} v{{version}}"))
            .with_target(query(f"max by (model, version) (mlstream_model_performance_estimate_valid{{{BOTH}}})",
                               "estimate valid {{model}} v{{version}}", ref="B"))
            .override_by_regexp("^estimate valid .*", [
                DynamicConfigValue(id_val="custom.lineStyle", value={"fill": "dash", "dash": [10, 10]})]))


def label_joins() -> timeseries.Panel:
    return (default_timeseries("Label joins", "Delayed labels per second by join outcome "
                               "(matched to a prediction, or parked unmatched).", "ops")
            .with_target(query(f"sum by (outcome) (rate(mlstream_labels_total{{{INST}}}[{RATE}]))",
                               "{{outcome}}")))


def model_loads() -> timeseries.Panel:
    return (default_timeseries("Model loads and swaps", "Load and hot-swap attempts by outcome.",
                               "short")
            .with_target(query(f"sum by (outcome) (increase(mlstream_model_loads_total{{{INST}}}[{RATE}]))",
                               "{{outcome}}")))


# -- drift ----------------------------------------------------------------------------------


def drift_ratio() -> timeseries.Panel:
    return per_model(default_timeseries("Drift statistic / threshold", "Each feature's latest test "
                               "statistic divided by its calibrated threshold: above 1 (red) the "
                               "test alarms.", "short")
            .thresholds(red_above(1.0))
            .thresholds_style(cb.GraphThresholdsStyleConfig()
                              .mode(common.GraphTresholdsStyleMode.LINE))
            .with_target(query(f"max by (model, version, feature) (mlstream_drift_statistic{{{BOTH}}}) / "
                               f"max by (model, version, feature) (mlstream_drift_threshold{{{BOTH}}})",
                               "{{feature}}")))


def drift_statistic() -> timeseries.Panel:
    return per_model(default_timeseries("Drift statistic and threshold", "Raw statistic per feature (solid) "
                               "and its threshold (dashed).", "short")
            .with_target(query(f"max by (feature) (mlstream_drift_statistic{{{BOTH}}})", "{{feature}}"))
            .with_target(query(f"max by (feature) (mlstream_drift_threshold{{{BOTH}}})",
                               "threshold {{feature}}", ref="B"))
            .override_by_regexp("^threshold .*", [
                DynamicConfigValue(id_val="custom.lineStyle",
                                   value={"fill": "dash", "dash": [10, 10]})]))


def drift_state() -> statetimeline.Panel:
    return per_model(statetimeline.Panel().title("Drift state").description(
                "Per feature: 1 (red) while its drift state is open, 0 (green) otherwise; the last "
                "line is the label-based (concept drift) test on joined labels.")
            .datasource(DATASOURCE).height(8).span(12)
            .thresholds(red_above(1.0))
            .with_target(query(f"max by (feature) (mlstream_drift_state{{{BOTH}}})", "{{feature}}"))
            .with_target(query(f"max(mlstream_model_performance_drifting{{{BOTH}}})",
                               "labels (concept drift)", ref="B")))


def drift_p_value() -> timeseries.Panel:
    return per_model(default_timeseries("p-value", "Latest p-value per feature, for the tests that define "
                               "one (log scale).", "short")
            .scale_distribution(cb.ScaleDistributionConfig()
                                .type(common.ScaleDistribution.LOG).log(10))
            .with_target(query(f"max by (feature) (mlstream_drift_p_value{{{BOTH}}})", "{{feature}}")))


def drift_effect_size() -> timeseries.Panel:
    return per_model(default_timeseries("Effect size", "Latest effect size per feature: how large the "
                               "shift is, apart from how sure the test is.", "short")
            .with_target(query(f"max by (feature) (mlstream_drift_effect_size{{{BOTH}}})", "{{feature}}")))


def drift_events() -> timeseries.Panel:
    return (default_timeseries("Drift events and retraining requests", "Drift events by kind and "
                               "retraining requests published.", "short")
            .with_target(query(f"sum by (kind) (increase(mlstream_drift_events_total{{{INST}}}[{RATE}]))",
                               "{{kind}}"))
            .with_target(query(f"sum(increase(mlstream_retrain_requests_total{{{INST}}}[{RATE}]))",
                               "retraining requests", ref="B")))


def drift_annotation() -> dashboard.AnnotationQuery:
    """Each drift event as an annotation across the dashboard's graphs."""
    return (dashboard.AnnotationQuery().name("Drift events").datasource(DATASOURCE)
            .enable(True).icon_color("red")
            .expr(f"sum by (kind) (increase(mlstream_drift_events_total{{{INST}}}[1m])) > 0"))


# -- alerts ---------------------------------------------------------------------------------


def alerts_firing() -> timeseries.Panel:
    return (default_timeseries("Prometheus alerts", "mlstream alert rules pending or firing, by "
                               "alert and severity.", "short")
            .with_target(query('sum by (alertname, alertstate, severity) (ALERTS{alertname=~"Mlstream.*"})',
                               "{{alertname}} {{alertstate}} ({{severity}})")))


def alert_deliveries() -> timeseries.Panel:
    return (default_timeseries("Notification deliveries", "Direct Slack and webhook notifications "
                               "by channel and outcome (sent, retried, rejected, failed, "
                               "rate_limited, dropped, suppressed).", "short")
            .with_target(query(f"sum by (channel, outcome) (increase(mlstream_alert_deliveries_total{{{INST}}}[{RATE}]))",
                               "{{channel}} {{outcome}}")))


def alert_failure_ratio() -> stat.Panel:
    return (default_stat("Notification failure ratio", "Share of notifications that ended "
                         "rejected, failed, rate limited or dropped over the last hour.",
                         "percentunit")
            .thresholds(red_above(0.01))
            .with_target(query(f'sum(increase(mlstream_alert_deliveries_total{{outcome=~"rejected|failed|rate_limited|dropped", {INST}}}[1h])) / '
                               f'clamp_min(sum(increase(mlstream_alert_deliveries_total{{outcome=~"sent|rejected|failed|rate_limited|dropped", {INST}}}[1h])), 1)',
                               "failure ratio")))
