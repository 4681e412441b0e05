"""Builds the Grafana dashboards and writes them as sorted, stable JSON next to this file, and
``docs/dashboards.md`` (every panel's title, type, description and queries) from the same build.

Run ``python -m dashboards.build`` (``make dashboards``); ``--check`` exits 1 when a committed
file differs from what the code builds. Grafana loads the files through
``ops/grafana/provisioning/dashboards/mlstream.yml``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders import dashboard
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import (
    DashboardCursorSync,
    VariableOption,
    VariableRefresh,
    VariableSort,
)

from dashboards import lifecycle as lc
from dashboards import panels as p
from dashboards import summaries as su

HERE = Path(__file__).resolve().parent
DOC = HERE.parent / "docs" / "dashboards.md"


def _variables() -> list[Any]:
    """$datasource (any Prometheus, the provisioned one by default), then $model and $instance
    read from the metrics themselves; multi-value with "All" as ``.*``."""
    ds = (dashboard.DatasourceVariable("datasource").label("Data source").type("prometheus")
          .current(VariableOption(text=p.PROVISIONED_UID, value=p.PROVISIONED_UID)))

    def from_label(name: str, label: str, metric: str) -> dashboard.QueryVariable:
        return (dashboard.QueryVariable(name).label(label).datasource(p.DATASOURCE)
                .query(f"label_values({metric}, {name})").refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
                .multi(True).include_all(True).all_value(".*").sort(VariableSort.ALPHABETICAL_ASC)
                .current(VariableOption(text="All", value="$__all")))

    # instances: every scraped mlstream process (workers and the trainer), not Prometheus itself
    return [ds, from_label("model", "Model", "mlstream_model_info"),
            from_label("instance", "Instance", 'up{job=~"mlstream.*"}')]


def _base(uid: str, title: str, description: str) -> dashboard.Dashboard:
    board = (dashboard.Dashboard(title).uid(uid).description(description)
             .tags(["mlstream", "generated"]).refresh("30s").time("now-1h", "now")
             .timezone("browser").tooltip(DashboardCursorSync.CROSSHAIR).editable()
             .annotation(p.drift_annotation()))
    for var in _variables():
        board = board.with_variable(var)
    return board


def pipeline() -> dashboard.Dashboard:
    return (_base("mlstream-pipeline", "mlstream / Pipeline overview",
                  "Is the stream flowing: throughput, latency, lag, dead letters, errors, workers.")
            .with_row(dashboard.Row("Health"))
            .with_panel(p.workers()).with_panel(p.dead_letter_ratio()).with_panel(p.entities())
            .with_row(dashboard.Row("Flow"))
            .with_panel(p.throughput()).with_panel(p.consumer_lag()).with_panel(p.monitor_behind())
            .with_panel(p.end_to_end_latency()).with_panel(p.stage_latency())
            .with_panel(p.batch_size()).with_panel(p.dead_letter_rate())
            .with_panel(p.errors()))


def model() -> dashboard.Dashboard:
    return (_base("mlstream-model", "mlstream / Model",
                  "What the model does: scores, version, performance from labels and before them; "
                  "how versions are tried in shadow, promoted, guarded and delivered.")
            .with_row(dashboard.Row("Serving and performance"))
            .with_panel(p.model_version()).with_panel(p.score_distribution())
            .with_panel(p.estimated_performance()).with_panel(p.performance())
            .with_panel(p.loss()).with_panel(p.labelled_events())
            .with_panel(p.predictions_by_version()).with_panel(p.label_joins())
            .with_panel(p.model_loads())
            .with_row(dashboard.Row("Lifecycle: shadow, guard, model feed"))
            .with_panel(lc.decisions()).with_panel(lc.live_loss())
            .with_panel(lc.comparison_progress()).with_panel(lc.shadow_scoring())
            .with_panel(lc.model_feed()))


def drift() -> dashboard.Dashboard:
    return (_base("mlstream-drift", "mlstream / Drift",
                  "Per-feature drift tests: statistic against threshold, p-value, effect size, state; "
                  "the rolling summaries behind them, current vs reference.")
            .with_row(dashboard.Row("Drift tests"))
            .with_panel(p.drift_ratio()).with_panel(p.drift_state())
            .with_panel(p.drift_statistic()).with_panel(p.drift_p_value())
            .with_panel(p.drift_effect_size()).with_panel(p.drift_events())
            .with_row(dashboard.Row("Rolling summaries: current window vs reference"))
            .with_panel(su.mean_shift()).with_panel(su.spread_ratio())
            .with_panel(su.quantile_shift()).with_panel(su.missing_rate())
            .with_panel(su.category_shares()).with_panel(su.entity_capped())
            .with_panel(su.summary_table()))


def alerts() -> dashboard.Dashboard:
    return (_base("mlstream-alerts", "mlstream / Alerts",
                  "Prometheus alerts and the direct Slack/webhook notifications.")
            .with_panel(p.alerts_firing()).with_panel(p.alert_failure_ratio())
            .with_panel(p.alert_deliveries()).with_panel(p.drift_events()))


DASHBOARDS: dict[str, Callable[[], dashboard.Dashboard]] = {
    "pipeline": pipeline, "model": model, "drift": drift, "alerts": alerts,
}


# The longer introduction of each dashboard in docs/dashboards.md (the panels' text there is
# their Grafana description, from dashboards/panels.py).
OVERVIEWS: dict[str, str] = {
    "pipeline": "Is the stream flowing? The first dashboard to open: health at a glance (top row), "
                "then the flow of events through the scorers.",
    "model": "What the model does: which version serves, how its scores are distributed, and how "
             "well it performs, estimated from scores at once and measured once delayed labels "
             "arrive (ratios, and the loss in its own unit: log loss, or MAE and RMSE for "
             "regression). The Lifecycle row follows a new version: scored in shadow beside the "
             "champion, promoted on live labels, guarded after promotion (rolled back if worse), "
             "and delivered to the scorers by the model feed.",
    "drift": "Per-feature drift detail: each feature's test statistic against its calibrated "
             "threshold, the p-value and effect size, and which features are in an open drift "
             "state. Below, the rolling summaries the tests compare: per feature the current "
             "window against the reference (mean and quantile shifts in reference standard "
             "deviations, spread ratio, missing rate, top category shares, and a table of the "
             "raw values).",
    "alerts": "Alerting: the Prometheus alert rules that are pending or firing, and the direct "
              "Slack/webhook notifications with their delivery outcomes.",
}

DOC_HEADER = """\
# Dashboards

Grafana dashboards are built from code (`dashboards/panels.py`: one function per panel, \
`dashboards/build.py`: one function per dashboard) with grafana-foundation-sdk, and written as \
sorted, stable JSON to `dashboards/*.json` by `make dashboards`. `tests/test_dashboards.py` \
checks the committed JSON is what the code builds, byte for byte; \
`tests/test_prometheus_scrape.py` runs every panel's query against a real Prometheus scraping a \
pipeline with drift injected and requires data from each.

Grafana loads them at start through `ops/grafana/provisioning/` (data source uid \
`mlstream-prometheus`, dashboards in the `mlstream` folder); with `docker compose up` they are \
at http://localhost:3000 (anonymous viewer). Every dashboard shows drift events as red \
annotations (`increase(mlstream_drift_events_total[1m]) > 0`, titled by kind).

No screenshot can be made here, so each panel is described below: what it shows (its title and \
description in Grafana are the same text) and the query behind it. This page is written by \
`make dashboards` from the same code, and `tests/test_dashboards.py` checks it is current: edit \
a panel's description in `dashboards/panels.py`, not this file.
"""


def _finish(data: dict[str, Any]) -> dict[str, Any]:
    """What the SDK leaves to us: unique panel ids in layout order (links to a panel use
    them), and the Prometheus annotation's title and tags (absent from its model)."""
    for i, panel in enumerate(data.get("panels", []), start=1):
        panel["id"] = i
    for ann in data.get("annotations", {}).get("list", []):
        if ann.get("expr"):
            ann.setdefault("titleFormat", "Drift: {{kind}}")
            ann.setdefault("tagKeys", "kind")
            ann.setdefault("step", "1m")
    return data


def _data(name: str) -> dict[str, Any]:
    built = DASHBOARDS[name]().build()
    return _finish(json.loads(json.dumps(built, cls=JSONEncoder)))


def render(name: str) -> str:
    """The dashboard's JSON text: sorted keys, two-space indent, trailing newline."""
    return json.dumps(_data(name), sort_keys=True, indent=2) + "\n"


def _cell(text: str) -> str:
    """Text for one Markdown table cell: one line, pipes escaped."""
    return " ".join(text.split()).replace("|", "\\|")


def render_doc() -> str:
    """docs/dashboards.md: per dashboard its overview, then per panel (rows left out) its
    title, type, description and queries, in layout order."""
    out = [DOC_HEADER]
    for name in DASHBOARDS:
        data = _data(name)
        out += [f"## {data['title']} (`{data['uid']}`)", "", OVERVIEWS[name], "",
                "| panel | type | what it shows, what it is for | query |",
                "| --- | --- | --- | --- |"]
        for panel in data.get("panels", []):
            if panel["type"] == "row":
                continue
            queries = "<br>".join(f"`{_cell(t['expr'])}`" for t in panel.get("targets", []))
            out.append(f"| {_cell(panel['title'])} | {panel['type']} | "
                       f"{_cell(panel.get('description', ''))} | {queries} |")
        out.append("")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m dashboards.build", description=__doc__)
    ap.add_argument("--check", action="store_true", help="fail if a committed file is stale")
    ap.add_argument("--out", type=Path, default=HERE, help="directory for the dashboard JSON")
    ap.add_argument("--doc", type=Path, default=DOC, help="path of the Markdown panel reference")
    args = ap.parse_args(argv)
    stale = []
    files = [(args.out / f"{name}.json", lambda name=name: render(name)) for name in DASHBOARDS]
    files.append((args.doc, render_doc))
    for path, make in files:
        text = make()
        if args.check:
            if not path.is_file() or path.read_text() != text:
                stale.append(path.name)
        else:
            path.write_text(text)
            print(f"wrote {path}")
    if stale:
        print(f"stale dashboard files (run `make dashboards`): {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
