"""The drift report as one self-contained HTML file (plotly.js inlined: it opens offline).

Figures are built here as plain plotly.js figure dicts (``data`` + ``layout``) from a
:class:`~stream.reporting.report_data.ReportData`; the page only loops ``Plotly.newPlot`` over
them. plotly.js comes from the ``plotly`` wheel (``mlstream[report]``), which bundles a
maintained, versioned ``plotly.min.js``: no CDN and no network at view time.

Examples
--------
>>> from stream.reporting.report_data import ReportData
>>> data = ReportData(title="t", rows=0, model={}, settings={"windows": [500], "recent_rows": 500},
...                   features={}, distributions={}, series={}, events=[])
>>> [f["id"] for f in figures(data)]
[]
>>> "No drift" in summary_lines(data)[-1]
True
"""

from __future__ import annotations

import html
import json
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from stream.errors import StreamError
from stream.reporting.report_data import OPENING_KINDS, ReportData, opened_on

REF, CUR, RECENT, ALERT = "#7f8c8d", "#1f77b4", "#ff7f0e", "#d62728"
_BASE = {"margin": {"l": 55, "r": 20, "t": 40, "b": 30}, "height": 260, "legend": {"orientation": "h", "y": -0.12},
         "hovermode": "x unified"}


def plotly_js() -> str:
    """plotly.min.js as shipped inside the plotly wheel."""
    try:
        return (resources.files("plotly") / "package_data" / "plotly.min.js").read_text(encoding="utf-8")
    except (ModuleNotFoundError, FileNotFoundError):
        raise StreamError("mlstream report needs plotly: pip install 'mlstream[report]'") from None


def _layout(title: str, **extra: Any) -> dict[str, Any]:
    return {**_BASE, "title": {"text": title, "font": {"size": 13}, "x": 0.01, "xanchor": "left"}, **extra}


def _event_marks(events: list[dict[str, Any]], feature: str | None) -> list[dict[str, Any]]:
    return [e for e in events if e["kind"] in OPENING_KINDS and (feature is None or feature in e["features"])]


def _drift_figure(name: str, ser: dict[str, list[Any]], events: list[dict[str, Any]]) -> dict[str, Any]:
    x = ser["index"]
    data: list[dict[str, Any]] = [
        {"type": "scatter", "mode": "lines", "name": "test statistic ÷ critical value", "x": x,
         "y": ser["significance"], "text": ser["test"], "line": {"color": CUR},
         "hovertemplate": "%{y:.2f} (%{text})<extra></extra>"},
        {"type": "scatter", "mode": "lines", "name": "effect size ÷ enter threshold", "x": x, "y": ser["effect"],
         "line": {"color": RECENT}, "hovertemplate": "%{y:.2f}<extra></extra>"},
    ]
    marks = [e for e in events if name in opened_on(e["kind"], e["features"])]
    top = max([*ser["significance"], *ser["effect"], 1.5])
    if marks:
        data.append({"type": "scatter", "mode": "markers", "name": "drift opened", "x": [e["index"] for e in marks],
                     "y": [top] * len(marks), "marker": {"symbol": "triangle-down", "size": 11, "color": ALERT},
                     "text": [e["kind"] for e in marks], "hovertemplate": "%{text} at row %{x}<extra></extra>"})
    shapes = [{"type": "line", "xref": "paper", "x0": 0, "x1": 1, "y0": 1, "y1": 1,
               "line": {"color": ALERT, "dash": "dash", "width": 1}}]
    start = None
    for i, on in enumerate(ser["drifting"] + [False]):  # shade the rows where the drift is open
        if on and start is None:
            start = x[i]
        elif not on and start is not None:
            shapes.append({"type": "rect", "xref": "x", "yref": "paper", "x0": start, "x1": x[i - 1], "y0": 0, "y1": 1,
                           "fillcolor": ALERT, "opacity": 0.08, "line": {"width": 0}})
            start = None
    return {"data": data, "layout": _layout(f"<b>{html.escape(name)}</b>", shapes=shapes,
                                            yaxis={"rangemode": "tozero"})}


def _distribution_figure(name: str, d: dict[str, Any], recent_rows: int, rows: int) -> dict[str, Any]:
    traces = [("reference", "reference", REF), ("current (all rows)", "current", CUR)]
    if rows > recent_rows:  # else the latest rows are all rows
        traces.append((f"latest {recent_rows} rows", "recent", RECENT))
    if d["kind"] == "numeric":
        values = [v for _, key, _ in traces for v in d[key]]
        # the central 99% of all values: one extreme value must not squash the histogram
        lo, hi = (float(np.quantile(values, 0.005)), float(np.quantile(values, 0.995))) if values else (0.0, 1.0)
        bins = {"start": lo, "end": hi + (hi - lo) * 1e-6 + 1e-12, "size": (hi - lo) / 40 or 1.0}
        data = [{"type": "histogram", "name": label, "x": d[key], "histnorm": "probability density", "xbins": bins,
                 "autobinx": False, "opacity": 0.5, "marker": {"color": color}}
                for label, key, color in traces if d[key]]
        miss = d["missing"]
        title = f"<b>{html.escape(name)}</b> (central 99%; missing {miss['reference']:.1%} → {miss['current']:.1%})"
        return {"data": data, "layout": _layout(title, barmode="overlay", xaxis={"range": [lo, hi]})}
    data = [{"type": "bar", "name": label, "x": d["categories"], "y": d[key], "marker": {"color": color}}
            for label, key, color in traces]
    return {"data": data, "layout": _layout(f"<b>{html.escape(name)}</b> (share of rows)", barmode="group")}


def _performance_figure(perf: dict[str, dict[str, list[Any]]], events: list[dict[str, Any]]) -> dict[str, Any] | None:
    data = []
    colors = {"roc_auc": CUR, "accuracy": "#2ca02c", "mae": CUR}
    for source, dash in (("labelled", "solid"), ("estimated", "dot")):
        ser = perf.get(source)
        if not ser:
            continue
        for metric in [k for k in ser if k != "index"]:
            data.append({"type": "scatter", "mode": "lines", "name": f"{metric} ({source})", "x": ser["index"],
                         "y": ser[metric], "line": {"dash": dash, "color": colors.get(metric, RECENT)},
                         "connectgaps": False})
    if not data:
        return None
    concept = [e for e in events if e["kind"] == "concept_drift"]
    shapes = [{"type": "line", "xref": "x", "yref": "paper", "x0": e["index"], "x1": e["index"], "y0": 0, "y1": 1,
               "line": {"color": ALERT, "dash": "dot"}} for e in concept]
    return {"data": data, "layout": _layout("labelled (solid), estimated from scores (dotted)", shapes=shapes)}


def _timeline_figure(data_: ReportData) -> dict[str, Any] | None:
    rows = [{"index": e["index"], "lane": "drift opened", "text": f"{e['kind']}: {', '.join(e['features'])}"}
            for e in _event_marks(data_.events, None)]
    rows += [{"index": e["index"], "lane": "drift resolved", "text": ", ".join(e["features"])}
             for e in data_.events if e["kind"] == "drift_resolved"]
    rows += [t for t in data_.timeline if t.get("index") is not None]
    if not rows:
        return None
    lanes = ["drift opened", "drift resolved", "retraining requested", "challenger rejected", "challenger promoted",
             "serving version"]
    colors = {"drift opened": ALERT, "drift resolved": "#2ca02c", "retraining requested": RECENT,
              "challenger rejected": REF, "challenger promoted": "#9467bd", "serving version": CUR}
    data = []
    for lane in lanes + sorted({r["lane"] for r in rows} - set(lanes)):
        pts = [r for r in rows if r["lane"] == lane]
        if pts:
            data.append({"type": "scatter", "mode": "markers", "name": lane, "x": [p["index"] for p in pts],
                         "y": [lane] * len(pts), "text": [p["text"] for p in pts],
                         "marker": {"size": 11, "color": colors.get(lane, CUR), "symbol": "diamond"},
                         "hovertemplate": "row %{x}: %{text}<extra></extra>"})
    return {"data": data, "layout": _layout("drift, retraining and promotion",
                                            height=120 + 40 * len(data), yaxis={"automargin": True},
                                            # a margin, so markers on the first and last row show whole
                                            xaxis={"range": [-0.02 * data_.rows, 1.02 * max(data_.rows - 1, 1)]},
                                            hovermode="closest", showlegend=False)}


def figures(data: ReportData) -> list[dict[str, Any]]:
    """Every figure of the report with its section, in page order."""
    out: list[dict[str, Any]] = []
    drifted = {f for e in data.events for f in opened_on(e["kind"], e["features"])}
    order = sorted(data.series, key=lambda f: (f not in drifted, f != "score", f))
    for name in order:
        out.append({"id": f"drift-{len(out)}", "section": "drift", **_drift_figure(name, data.series[name], data.events)})
    for name in sorted(data.distributions, key=lambda f: (f not in drifted, f != "score", f)):
        fig = _distribution_figure(name, data.distributions[name], data.settings["recent_rows"], data.rows)
        out.append({"id": f"dist-{len(out)}", "section": "distributions", **fig})
    perf = _performance_figure(data.performance, data.events)
    if perf:
        out.append({"id": "performance", "section": "performance", **perf})
    timeline = _timeline_figure(data)
    if timeline:
        out.append({"id": "timeline", "section": "timeline", **timeline})
    return out


def summary_lines(data: ReportData) -> list[str]:
    s = data.summary()
    model = data.model
    head = f"{s['rows']:,} rows"
    if model.get("name"):
        head += f", model {model['name']} version {model.get('version')}"
    lines = [head + f"; drift windows {', '.join(str(w) for w in s['windows'])} rows"]
    if s["drift_openings"]:
        lines += [f"drift opened on {f}: {n}×" for f, n in s["drift_openings"].items()]
        if s["resolved"]:
            lines.append(f"{s['resolved']} drift state(s) resolved")
    else:
        lines.append("No drift detected: every test stayed within its threshold.")
    return lines


SECTIONS = (("drift", "Drift statistics over time",
             "Per feature: the test statistic closest to its critical value and that test's effect size, each "
             "divided by its threshold. A drift opens when both pass 1 (dashed line); red triangles mark openings, "
             "shading the rows while it stays open."),
            ("distributions", "Reference vs current distributions",
             "The reference profile's sample against the rows read, and against the latest rows (the longest "
             "drift window) when there are more."),
            ("performance", "Performance",
             "Labelled: on windows of rows whose label arrived. Estimated: from the scores alone (CBPE, valid "
             "for a calibrated classifier), on windows of all rows. The horizontal axis of every plot is the "
             "monitored row."),
            ("timeline", "Retraining and promotion", ""))


def render(data: ReportData) -> str:
    """The whole page as a string."""
    figs = figures(data)
    body = [f"<h1>{html.escape(data.title)}</h1>",
            "<ul id='summary'>" + "".join(f"<li>{html.escape(x)}</li>" for x in summary_lines(data)) + "</ul>"]
    body += [f"<p class='note'>{html.escape(n)}</p>" for n in data.notes]
    for key, title, text in SECTIONS:
        body.append(f"<h2>{title}</h2>")
        if text:
            body.append(f"<p class='help'>{html.escape(text)}</p>")
        ids = [f["id"] for f in figs if f["section"] == key]
        if not ids:
            body.append(f"<p class='empty'>Nothing to show: {_empty_reason(key)}</p>")
        body.append("<div class='grid'>" + "".join(f"<div class='plot' id='{i}'></div>" for i in ids) + "</div>")
    payload = json.dumps([{k: f[k] for k in ("id", "data", "layout")} for f in figs], allow_nan=False)
    payload = payload.replace("</", "<\\/")  # never close the script element early
    return _PAGE.format(title=html.escape(data.title), plotly=plotly_js(), body="\n".join(body), figures=payload)


def _empty_reason(section: str) -> str:
    return {"drift": "fewer rows than one drift check.",
            "distributions": "no monitored feature in the input.",
            "performance": "no scores (and no labels) in the input.",
            "timeline": "no drift, retraining request or model update in the input."}[section]


def write_report(data: ReportData, path: Path | str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(render(data), encoding="utf-8")
    tmp.replace(path)
    return path


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }}
h1 {{ font-size: 1.4em; }} h2 {{ font-size: 1.15em; margin-top: 1.5em; border-bottom: 1px solid #ddd; }}
.grid {{ display: grid; grid-template-columns: repeat(auto-fill, minmax(520px, 1fr)); gap: 8px; }}
.plot {{ min-width: 0; }} .note {{ color: #a15c00; }} .help, .empty {{ color: #555; font-size: .9em; }}
</style>
<script>{plotly}</script>
</head><body>
{body}
<script>
(function () {{
  var figures = {figures};
  figures.forEach(function (f) {{
    var div = document.getElementById(f.id);
    div.style.height = f.layout.height + "px";  // the grid row then fits the plot, whatever resizes later
    Plotly.newPlot(div, f.data, f.layout, {{displaylogo: false, responsive: true}});
  }});
}})();
</script>
</body></html>
"""
