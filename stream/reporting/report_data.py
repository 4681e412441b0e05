"""What a drift report shows, computed from monitored rows: pure numbers, no HTML, no Kafka.

The rows (feature columns and scores, as the monitor sees them) go through the same
:class:`DriftMonitor` the pipeline runs; every ``step`` rows its :meth:`~DriftMonitor.snapshot`
gives, per feature, the test statistic closest to its critical value and that test's effect
size, both as a ratio to their thresholds (a drift opens when both pass 1). Labelled
performance is computed on windows of labelled rows, estimated performance (CBPE) on windows
of scores. :mod:`stream.reporting.report_html` draws it.

Examples
--------
>>> rng = np.random.default_rng(0)
>>> prof = ReferenceProfile.from_columns({"x": rng.normal(size=5_000), "score": rng.uniform(size=5_000)})
>>> x = np.concatenate([rng.normal(size=3_000), rng.normal(2.0, 1.0, size=3_000)])
>>> data = build_report(prof, {"x": x, "score": rng.uniform(size=6_000)}, title="t")
>>> data.rows, [(e["index"], e["kind"], e["features"]) for e in data.events]
(6000, [(3599, 'data_drift', ['x'])])
>>> s = data.series["x"]
>>> max(s["significance"]) > 1 and max(s["effect"]) > 1, data.series["score"]["drifting"][-1]
(True, False)
>>> data.summary()["drift_openings"]
{'x': 1}
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from stream.monitoring.drift import DriftMonitor, DriftSettings
from stream.monitoring.labels import estimate_performance
from stream.monitoring.profile import ReferenceProfile, is_missing

__all__ = ["OPENING_KINDS", "ReportData", "build_report", "opened_on"]

OPENING_KINDS = ("data_drift", "score_drift", "multivariate_drift", "concept_drift")


def opened_on(kind: str, features: Sequence[str]) -> list[str]:
    """What a drift opening is about: its features, or ``multivariate`` for a correlation change
    (whose features are the pairs' members, each of which may show no drift of its own)."""
    if kind not in OPENING_KINDS:
        return []
    return ["multivariate"] if kind == "multivariate_drift" else list(features)
MAX_VALUES = 5_000  # current values kept per numeric feature for the histogram (a seeded subsample)


@dataclass
class ReportData:
    """Everything the HTML report draws, JSON-serialisable."""

    title: str
    rows: int
    model: dict[str, Any]
    settings: dict[str, Any]
    features: dict[str, str]  # name -> numeric | categorical
    distributions: dict[str, dict[str, Any]]
    series: dict[str, dict[str, list[Any]]]
    events: list[dict[str, Any]]
    performance: dict[str, dict[str, list[Any]]] = field(default_factory=dict)
    timeline: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        openings = Counter(f for e in self.events for f in opened_on(e["kind"], e["features"]))
        return {"rows": self.rows, "windows": self.settings["windows"],
                "drift_openings": dict(sorted(openings.items())),
                "resolved": sum(1 for e in self.events if e["kind"] == "drift_resolved")}


def _effect_thresholds(s: DriftSettings) -> dict[str, float]:
    return {"wasserstein": s.wasserstein_threshold, "psi": s.psi_threshold, "jensen_shannon": s.js_threshold,
            "missing_change": s.missing_threshold, "correlation_change": s.correlation_threshold}


def _ratio(value: float, limit: float | None) -> float:
    if not limit or not math.isfinite(value) or not math.isfinite(limit):
        return 0.0
    return round(float(value) / float(limit), 4)


def _distribution(kind: str, ref: Any, current: Sequence[Any] | np.ndarray, last: int,
                  rng: np.random.Generator) -> dict[str, Any]:
    if kind == "numeric":
        x = np.asarray(current, dtype=np.float64)
        present = x[~np.isnan(x)]
        recent = x[-last:]
        recent = recent[~np.isnan(recent)]

        def sub(v: np.ndarray) -> list[float]:
            v = v if v.size <= MAX_VALUES else rng.choice(v, MAX_VALUES, replace=False)
            return [round(float(a), 6) for a in v]

        return {"kind": kind, "reference": list(ref.sample), "current": sub(present), "recent": sub(recent),
                "missing": {"reference": ref.n_missing / max(ref.n + ref.n_missing, 1),
                            "current": 1 - present.size / max(x.size, 1)}}
    known = list(ref.categories)
    total_ref = max(ref.n + ref.n_missing, 1)

    def shares(values: Sequence[Any]) -> list[float]:
        c = Counter("(missing)" if is_missing(v) else (v if str(v) in known else "(other)") for v in values)
        n = max(len(values), 1)
        return [c.get(k, 0) / n for k in [*known, "(other)", "(missing)"]]

    values = list(current)
    return {"kind": kind, "categories": [*known, "(other)", "(missing)"],
            "reference": [c / total_ref for c in ref.counts] + [ref.other_count / total_ref, ref.n_missing / total_ref],
            "current": shares(values), "recent": shares(values[-last:])}


def _performance(scores: np.ndarray, labels: np.ndarray | None, task: str, threshold: float,
                 step: int) -> dict[str, dict[str, list[Any]]]:
    out: dict[str, dict[str, list[Any]]] = {}
    n = len(scores)
    window = max(step, 500)
    ends = list(range(window, n + 1, step)) or ([n] if n else [])
    if task == "classification" and n:
        est: dict[str, list[Any]] = {"index": [], "roc_auc": [], "accuracy": []}
        for end in ends:
            e = estimate_performance(scores[end - window : end] if end >= window else scores[:end], threshold)
            est["index"].append(end - 1)
            est["roc_auc"].append(_clean(e["roc_auc"]))
            est["accuracy"].append(_clean(e["accuracy"]))
        out["estimated"] = est
    if labels is not None:
        have = np.flatnonzero(~np.isnan(labels) & ~np.isnan(scores))
        if have.size:
            lab: dict[str, list[Any]] = {"index": []}
            lw = max(min(window, have.size // 4), 50)
            for end in range(lw, have.size + 1, max(lw // 2, 1)):
                rows = have[end - lw : end]
                s, y = scores[rows], labels[rows]
                lab["index"].append(int(rows[-1]))
                for k, v in _labelled(s, y, task, threshold).items():
                    lab.setdefault(k, []).append(_clean(v))
            out["labelled"] = lab
    return out


def _labelled(s: np.ndarray, y: np.ndarray, task: str, threshold: float) -> dict[str, float]:
    if task != "classification":
        return {"mae": float(np.mean(np.abs(s - y)))}
    from stream.monitoring.labels import _auc

    return {"roc_auc": _auc(s, y), "accuracy": float(np.mean((s >= threshold) == (y > 0.5)))}


def _clean(v: float) -> float | None:
    return None if v is None or not math.isfinite(v) else round(float(v), 5)


def build_report(profile: ReferenceProfile, columns: Mapping[str, Sequence[Any] | np.ndarray], *, title: str,
                 labels: np.ndarray | None = None, model: Mapping[str, Any] | None = None,
                 settings: DriftSettings | None = None, points: int = 300, timeline: Sequence[dict[str, Any]] = (),
                 extra_events: Sequence[dict[str, Any]] = (), seed: int = 0,
                 entities: Sequence[Any] | None = None) -> ReportData:
    """Run the drift monitor over ``columns`` (the profile's features, in stream order) and keep
    what the report draws; ``points`` bounds the samples per time series; ``entities``: each
    row's entity id, as the pipeline gives the deployment's monitor."""
    s = settings or DriftSettings()
    model = dict(model or {})
    n = len(next(iter(columns.values()))) if columns else 0
    mon = DriftMonitor(profile, s, model_name=model.get("name"), model_version=model.get("version"))
    # snapshots at block boundaries, about ``points`` of them
    step = max(s.block_size, -(-n // max(points, 1)) // s.block_size * s.block_size)
    eff = _effect_thresholds(s)
    series: dict[str, dict[str, list[Any]]] = {
        f: {"index": [], "significance": [], "effect": [], "test": [], "drifting": []}
        for f in [*profile.features, *(["multivariate"] if len(profile.numeric_names) >= 2 else [])]}
    events: list[dict[str, Any]] = []
    for start in range(0, n, step):
        chunk: dict[str, Any] = {k: v[start : start + step] for k, v in columns.items()}
        ents = entities[start : start + step] if entities is not None else None
        events += [e.to_dict() for e in mon.update_batch(chunk, entities=ents)]
        if start + step > n and (n - start) % s.block_size:
            continue  # a partial last block is not tested yet
        for name, snap in mon.snapshot().items():
            if name not in series or snap["test"] is None:
                continue
            ser = series[name]
            ser["index"].append(min(start + step, n) - 1)
            ser["significance"].append(_ratio(snap["statistic"], snap["threshold"]))
            ser["effect"].append(_ratio(snap["effect_size"], eff.get(snap["effect_metric"] or "")))
            ser["test"].append(f"{snap['test']} (window {snap['window']}, {snap['effect_metric']})")
            ser["drifting"].append(bool(snap["drifting"]))
    series = {k: v for k, v in series.items() if v["index"]}
    rng = np.random.default_rng(seed)
    last = max(s.windows)
    dists = {}
    for name, kind in profile.features.items():
        ref = profile.numeric.get(name) if kind == "numeric" else profile.categorical.get(name)
        col = columns.get(name)
        if ref is not None and col is not None:
            dists[name] = _distribution(kind, ref, col, last, rng)
    score = columns.get(s.score_feature)
    perf = {}
    if score is not None:
        perf = _performance(np.asarray(score, dtype=np.float64), labels, str(model.get("task", "classification")),
                            float(model.get("threshold", 0.5)), step)
    all_events = sorted([*events, *extra_events], key=lambda e: (e["index"], e["kind"]))
    return ReportData(title=title, rows=n, model=model,
                      settings={"windows": list(s.windows), "block_size": s.block_size,
                                "expected_run_length": s.expected_run_length, "recent_rows": last},
                      features=dict(profile.features), distributions=dists, series=series,
                      events=all_events, performance=perf, timeline=list(timeline))
