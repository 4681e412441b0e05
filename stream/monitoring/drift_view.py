"""Read-only views of a :class:`stream.monitoring.drift.DriftMonitor` for dashboards.

* :func:`snapshot`: per feature, the latest test closest to (or furthest past) its
  critical value, with the drift state, the measured design effect and every window's
  statistics; the Prometheus collector exports it.
* :func:`summary`: rolling summary statistics per feature in the monitor's
  ``summary_window`` against the reference: mean, standard deviation, quantiles and
  missing rate of numeric features, shares of the top categories of categorical ones
  (computed from the window's bin counts, sums and sums of squares: quantiles are
  interpolated within the reference bins).

Examples
--------
>>> import numpy as np
>>> from stream.monitoring.drift import DriftMonitor
>>> from stream.monitoring.profile import ReferenceProfile
>>> rng = np.random.default_rng(0)
>>> mon = DriftMonitor(ReferenceProfile.from_columns({"x": rng.normal(size=10_000), "c": ["a", "b"] * 5_000}))
>>> _ = mon.update_batch({"x": rng.normal(1.0, 1.0, 4_000), "c": ["a", "a", "a", "b"] * 1_000})
>>> s = summary(mon)
>>> round(s["x"]["current"]["mean"], 1), round(s["x"]["reference"]["mean"], 1), s["c"]["current"]["share"]["a"]
(1.0, 0.0, 0.75)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from stream.monitoring.drift_event import MULTIVARIATE

if TYPE_CHECKING:
    from stream.monitoring.drift import DriftMonitor

__all__ = ["snapshot", "summary"]

TESTS = {"num": ("ks", "mannwhitney", "chi2", "missing"), "cat": ("chi2", "missing"), "mv": ("correlation",)}


def snapshot(mon: DriftMonitor) -> dict[str, dict[str, Any]]:
    """Latest statistics per feature and ``"multivariate"`` (see module docstring)."""
    out: dict[str, dict[str, Any]] = {}
    for group, names, _ in mon._groups():
        keys = [MULTIVARIATE] if group == "mv" else names
        for key in keys:
            best: dict[str, Any] = {"statistic": 0.0, "threshold": None, "p_value": 1.0, "test": None, "window": None,
                                    "effect_size": 0.0, "effect_metric": None, "drifting": mon._open[key],
                                    "warming_up": mon.warming_up, "design_effect": None, "windows": {}}
            ratio = -1.0
            for w in sorted(mon._last):
                st = mon._last[w][group]
                if not st or not names:
                    continue
                crit, eff = mon.crit(w, group, st), mon.effects(w, group)
                # one row per feature; the multivariate entry is its pair with the largest statistic
                j = int(np.argmax(st["correlation"])) if group == "mv" else names.index(key)
                view = {t: float(st[t][j]) for t in TESTS[group]}
                view.update({m: float(v[j]) for m, v in eff.items()})
                view["design_effect"] = float(st["design_effect"][j])
                best["windows"][mon.settings.windows[w]] = view
                for t in TESTS[group]:
                    v, c = float(st[t][j]), float(crit[t][j])
                    if c > 0 and v / c > ratio:
                        ratio = v / c
                        metric, _ = mon.gate_of(group, t, eff, j)
                        best.update(statistic=v, threshold=c, test=t, window=mon.settings.windows[w],
                                    effect_metric=metric, effect_size=float(eff[metric][j]),
                                    p_value=mon.p_value(group, t, v, st, j), design_effect=view["design_effect"])
            out["multivariate" if key == MULTIVARIATE else key] = best
    return out


def _quantiles(counts: np.ndarray, lo: np.ndarray, hi: np.ndarray, qs: tuple[float, ...]) -> list[float]:
    total = counts.sum()
    if total <= 0:
        return [float("nan")] * len(qs)
    cum = np.cumsum(counts) / total
    out = []
    for q in qs:
        b = min(int(np.searchsorted(cum, q)), counts.size - 1)
        below = cum[b - 1] if b else 0.0
        frac = (q - below) / max(cum[b] - below, 1e-12)
        out.append(float(lo[b] + min(max(frac, 0.0), 1.0) * (hi[b] - lo[b])))
    return out


def summary(mon: DriftMonitor) -> dict[str, dict[str, Any]]:
    """Current (last ``summary_window`` rows, fewer at start) vs reference summary per feature."""
    s, ref, k, kc = mon.settings, mon.ref, mon._k, mon._kc
    nbk = min(s.summary_window // s.block_size, mon._blocks)
    win = mon.window_sums(nbk) if nbk else None
    qs = tuple(s.summary_quantiles)
    out: dict[str, dict[str, Any]] = {}
    for j, name in enumerate(mon._num):
        edges, means = ref.edges[j], ref.num_bin_means[j]
        nbins = edges.size + 1
        lo = np.concatenate([[2 * means[0] - edges[0]] if edges.size else [means[0]], edges])
        hi = np.concatenate([edges, [2 * means[nbins - 1] - edges[-1]] if edges.size else [means[0]]])
        rc = ref.num_counts[j, :nbins]
        r_rows = rc.sum() + ref.num_missing[j]
        reference: dict[str, Any] = {"mean": float(ref.mean[j]), "std": float(ref.std[j]),
                     "quantiles": dict(zip(map(str, qs), _quantiles(rc, lo, hi, qs), strict=True)),
                     "missing_rate": float(ref.num_missing[j] / max(r_rows, 1.0))}
        current: dict[str, Any] = {"rows": 0}
        if win is not None:
            c = win["num"][j, :nbins].astype(float)
            n = c.sum()
            mean = float(win["sum"][j].sum() / n) if n else float("nan")
            var = float(win["sq"][j] / n - mean * mean) if n else float("nan")
            current = {"rows": int(n + win["num"][j, k]), "mean": mean, "std": float(np.sqrt(max(var, 0.0))),
                       "quantiles": dict(zip(map(str, qs), _quantiles(c, lo, hi, qs), strict=True)),
                       "missing_rate": float(win["num"][j, k] / max(n + win["num"][j, k], 1.0))}
        out[name] = {"kind": "numeric", "current": current, "reference": reference}
    for j, name in enumerate(mon._cat):
        cref = mon.profile.categorical[name]
        top = list(cref.categories[: s.summary_top_categories])
        rc = ref.cat_counts[j]
        r_n = max(rc.sum(), 1.0)
        reference = {"share": {c: float(rc[i] / r_n) for i, c in enumerate(top)},
                     "missing_rate": float(ref.cat_missing[j] / max(r_n + ref.cat_missing[j], 1.0))}
        reference["share"]["__other__"] = float(1.0 - sum(reference["share"].values()))
        current = {"rows": 0}
        if win is not None:
            c = win["cat"][j, :kc].astype(float)
            n = max(c.sum(), 1.0)
            share = {cat: float(c[i] / n) for i, cat in enumerate(top)}
            share["__other__"] = float(1.0 - sum(share.values())) if c.sum() else 0.0
            current = {"rows": int(c.sum() + win["cat"][j, kc]), "share": share,
                       "missing_rate": float(win["cat"][j, kc] / max(c.sum() + win["cat"][j, kc], 1.0))}
        out[name] = {"kind": "categorical", "current": current, "reference": reference}
    return out
