"""Builds the Grafana dashboards and writes them as sorted, stable JSON next to this file.

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
from grafana_foundation_sdk.models.dashboard import DashboardCursorSync

from dashboards import panels as p

HERE = Path(__file__).resolve().parent


def _base(uid: str, title: str, description: str) -> dashboard.Dashboard:
    return (dashboard.Dashboard(title).uid(uid).description(description)
            .tags(["mlstream", "generated"]).refresh("30s").time("now-1h", "now")
            .timezone("browser").tooltip(DashboardCursorSync.CROSSHAIR).editable()
            .annotation(p.drift_annotation()))


def pipeline() -> dashboard.Dashboard:
    return (_base("mlstream-pipeline", "mlstream / Pipeline overview",
                  "Is the stream flowing: throughput, latency, lag, dead letters, errors, workers.")
            .with_row(dashboard.Row("Health"))
            .with_panel(p.workers()).with_panel(p.dead_letter_ratio()).with_panel(p.entities())
            .with_row(dashboard.Row("Flow"))
            .with_panel(p.throughput()).with_panel(p.consumer_lag())
            .with_panel(p.end_to_end_latency()).with_panel(p.stage_latency())
            .with_panel(p.batch_size()).with_panel(p.dead_letter_rate())
            .with_panel(p.errors()))


def model() -> dashboard.Dashboard:
    return (_base("mlstream-model", "mlstream / Model",
                  "What the model does: scores, version, performance from labels and before them.")
            .with_panel(p.model_version()).with_panel(p.score_distribution())
            .with_panel(p.estimated_performance()).with_panel(p.performance())
            .with_panel(p.predictions_by_version()).with_panel(p.label_joins())
            .with_panel(p.model_loads()))


def drift() -> dashboard.Dashboard:
    return (_base("mlstream-drift", "mlstream / Drift",
                  "Per-feature drift tests: statistic against threshold, p-value, effect size, state.")
            .with_panel(p.drift_ratio()).with_panel(p.drift_state())
            .with_panel(p.drift_statistic()).with_panel(p.drift_p_value())
            .with_panel(p.drift_effect_size()).with_panel(p.drift_events()))


def alerts() -> dashboard.Dashboard:
    return (_base("mlstream-alerts", "mlstream / Alerts",
                  "Prometheus alerts and the direct Slack/webhook notifications.")
            .with_panel(p.alerts_firing()).with_panel(p.alert_failure_ratio())
            .with_panel(p.alert_deliveries()).with_panel(p.drift_events()))


DASHBOARDS: dict[str, Callable[[], dashboard.Dashboard]] = {
    "pipeline": pipeline, "model": model, "drift": drift, "alerts": alerts,
}


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


def render(name: str) -> str:
    """The dashboard's JSON text: sorted keys, two-space indent, trailing newline."""
    built = DASHBOARDS[name]().build()
    data = _finish(json.loads(json.dumps(built, cls=JSONEncoder)))
    return json.dumps(data, sort_keys=True, indent=2) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m dashboards.build", description=__doc__)
    ap.add_argument("--check", action="store_true", help="fail if a committed file is stale")
    ap.add_argument("--out", type=Path, default=HERE)
    args = ap.parse_args(argv)
    stale = []
    for name in DASHBOARDS:
        path = args.out / f"{name}.json"
        text = render(name)
        if args.check:
            if not path.is_file() or path.read_text() != text:
                stale.append(path.name)
        else:
            path.write_text(text)
            print(f"wrote {path}")
    if stale:
        print(f"stale dashboards (run `make dashboards`): {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
