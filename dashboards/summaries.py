"""Panels of the drift dashboard's "Rolling summaries" row: per feature, the current window
(last ``monitor.summary_window`` rows) against the reference, from ``mlstream_feature_summary``
and ``mlstream_feature_category_share`` (``docs/metrics.md``). Shifts are in reference standard
deviations, so features of any scale share one axis; one panel per model, as elsewhere.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import prometheus, table, timeseries
from grafana_foundation_sdk.models.dashboard import DataTransformerConfig, DynamicConfigValue
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

from dashboards.panels import BOTH, DATASOURCE, default_timeseries, per_model, query

DASHED = [DynamicConfigValue(id_val="custom.lineStyle", value={"fill": "dash", "dash": [10, 10]})]


def stat(name: str, source: str, by: str = "feature") -> str:
    """One summary statistic per feature (``name`` may be a regex), current or reference."""
    op = "=~" if "*" in name else "="
    return f'max by ({by}) (mlstream_feature_summary{{stat{op}"{name}", source="{source}", {BOTH}}})'


# the reference spread; features constant in the reference (sd 0) are left out, not divided by 0
REF_SD = f'({stat("std", "reference")} > 0)'


def mean_shift() -> timeseries.Panel:
    return per_model(default_timeseries("Mean shift (reference sd)", "Per numeric feature: current "
                               "window mean minus reference mean, in reference standard "
                               "deviations. 0 is no shift; the drift tests judge whether a shift "
                               "is more than the stream's own noise.", "short")
            .with_target(query(f'({stat("mean", "current")} - {stat("mean", "reference")}) / {REF_SD}',
                               "{{feature}}")))


def spread_ratio() -> timeseries.Panel:
    return per_model(default_timeseries("Spread ratio (current sd / reference sd)", "Per numeric "
                               "feature: the current window's standard deviation over the "
                               "reference's. 1 is the reference spread; above, the feature "
                               "varies more than in training.", "short")
            .with_target(query(f'{stat("std", "current")} / {REF_SD}', "{{feature}}")))


def quantile_shift() -> timeseries.Panel:
    by = "feature, stat"
    return per_model(default_timeseries("Quantile shift (reference sd)", "Per numeric feature and "
                               "quantile (q0.05, q0.5, q0.95): current minus reference, in "
                               "reference standard deviations. A shape change (a tail growing) "
                               "shows here when the mean barely moves.", "short")
            .with_target(query(f'({stat("q.*", "current", by)} - {stat("q.*", "reference", by)}) '
                               f'/ on (feature) group_left() {REF_SD}', "{{feature}} {{stat}}")))


def missing_rate() -> timeseries.Panel:
    return per_model(default_timeseries("Missing rate", "Share of rows with the feature missing, "
                               "current window (solid) and reference (dashed).", "percentunit")
            .min(0)
            .with_target(query(f'{stat("missing_rate", "current")}', "{{feature}} current"))
            .with_target(query(f'{stat("missing_rate", "reference")}', "{{feature}} reference", ref="B"))
            .override_by_regexp(".* reference$", DASHED))


def category_shares() -> timeseries.Panel:
    share = "max by (feature, category) (mlstream_feature_category_share{{source=\"{}\", {}}})"
    return per_model(default_timeseries("Top category shares", "Per categorical feature, the share "
                               "of each of the top reference categories (the rest pooled as "
                               "__other__): current window (solid) and reference (dashed).",
                               "percentunit")
            .min(0).max(1)
            .with_target(query(share.format("current", BOTH), "{{feature}}={{category}} current"))
            .with_target(query(share.format("reference", BOTH), "{{feature}}={{category}} reference", ref="B"))
            .override_by_regexp(".* reference$", DASHED))


def entity_capped() -> timeseries.Panel:
    return per_model(default_timeseries("Rows past their entity's cap", "Share of the rows that the "
                               "entity-balanced category-share test leaves out (past 3 rows of one "
                               "entity per 1,000 or, without entity ids, past a run's cap): high when "
                               "a few heavy entities send most of the traffic.", "percentunit")
            .min(0).max(1)
            .with_target(query(f"max by (version) (mlstream_drift_entity_capped_ratio{{{BOTH}}})",
                               "version {{version}}")))


def summary_table() -> table.Panel:
    def target(source: str, ref: str) -> prometheus.Dataquery:
        return query(stat(".*", source, "feature, stat"), ref=ref, fmt=PromQueryFormat.TABLE).instant()

    return per_model(table.Panel().title("Feature summaries: current vs reference").description(
                "The latest rolling summary per feature and statistic (mean, std, quantiles, "
                "missing rate), current window next to the reference, one row each.")
            .datasource(DATASOURCE).height(10).span(12)
            .with_target(target("current", "A")).with_target(target("reference", "B"))
            .with_transformation(DataTransformerConfig(id_val="merge", options={}))
            .with_transformation(DataTransformerConfig(id_val="organize", options={
                "excludeByName": {"Time": True},
                "renameByName": {"Value #A": "current", "Value #B": "reference"},
                "indexByName": {"feature": 0, "stat": 1, "Value #A": 2, "Value #B": 3}})))
