"""Streaming drift monitor: calibrated, effect-size gated, multi-window, O(1) state.

How it works
------------
Rows are grouped in blocks of ``block_size`` rows. Each finished block is reduced
to fixed-size sufficient statistics (per numeric feature: counts and value sums
in the reference quantile bins plus a missing count; per categorical feature:
counts per reference category plus "other" and missing; for the numeric
features together: pairwise-complete cross products of the bins' normal scores)
and written to a ring buffer holding the longest window. Every window length ``w`` in
``DriftSettings.windows`` is tested every ``w / checks_per_window`` rows (a
sliding window), by summing its last blocks.

The tests are, per numeric feature, two-sample KS, Mann-Whitney and chi-square
on the bins; per categorical feature, chi-square on the categories (unseen ones
count as "other"); per feature, a two-proportion z test of the missing rate;
per pair of numeric features, a Fisher z test of their correlation. A feature
drifts when a test is significant at its calibrated level (see
:mod:`stream.monitoring.calibration`) *and* an effect size passes its enter threshold:
Wasserstein distance normalised by the reference standard deviation or PSI for
numeric features, Jensen-Shannon distance for categorical ones, the absolute
change of the missing rate, and the change of a correlation for pairs.
Each feature then has an open drift state: one event when it opens, and one
``drift_resolved`` event when every effect size of the ``resolve_window`` stayed
below ``leave_ratio`` times its enter threshold for ``resolve_patience``
consecutive checks; the feature's windows then restart from empty.

All of it is computed per block, so :meth:`DriftMonitor.update` (one row) and
:meth:`DriftMonitor.update_batch` (vectorised) give identical events.

Examples
--------
>>> import numpy as np
>>> from stream.monitoring.profile import ReferenceProfile
>>> rng = np.random.default_rng(0)
>>> ref = ReferenceProfile.from_columns({"x": rng.normal(size=20_000),
...                                      "c": rng.choice(["a", "b", "c"], 20_000).tolist()})
>>> mon = DriftMonitor(ref, model_name="m", model_version="3")
>>> x = np.concatenate([rng.normal(size=5_000), rng.normal(1.0, 1.0, size=5_000)])
>>> c = rng.choice(["a", "b", "c"], 10_000).tolist()
>>> events = mon.update_batch({"x": x, "c": c})
>>> [(e.index, e.kind, e.features) for e in events]
[(5199, 'data_drift', ('x',))]
>>> ev = events[0].evidence[0]
>>> ev["test"], ev["window"], ev["effect_size"] > ev["effect_threshold"]
('ks', 500, True)
>>> mon.snapshot()["x"]["drifting"], mon.rows_seen
(True, 10000)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from itertools import repeat
from typing import Any

import numpy as np

from stream.monitoring import drift_stats as ds
from stream.monitoring.calibration import Calibration, DriftSettings, calibrate
from stream.monitoring.profile import CORRELATION_METHOD, ReferenceProfile, is_missing, reference_arrays

__all__ = ["DriftEvent", "DriftMonitor", "DriftSettings"]

MULTIVARIATE = "__multivariate__"


@dataclass(frozen=True)
class DriftEvent:
    """A drift state opened (or closed) at row ``index``, with its evidence."""

    index: int
    kind: str
    features: tuple[str, ...]
    evidence: tuple[dict[str, Any], ...] = field(default=())
    model: str | None = None
    model_version: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable, deterministic representation; with ``detected_at`` added, the
        fields of :class:`stream.messages.DriftEvent` (the message on the drift topic)."""
        return {
            "index": self.index,
            "kind": self.kind,
            "features": list(self.features),
            "evidence": [dict(sorted(e.items())) for e in self.evidence],
            "model": self.model,
            "model_version": self.model_version,
        }


def _f(x: Any) -> float:
    v = float(x)
    return v if math.isfinite(v) else (1e308 if v > 0 else -1e308)


class DriftMonitor:
    """Calibrated multi-window drift monitor over a :class:`ReferenceProfile` (see module docstring).

    Attributes
    ----------
    rows_seen
        Rows passed to :meth:`update` / :meth:`update_batch` so far.
    calibration
        The per-test levels and critical values in use.
    """

    def __init__(
        self,
        profile: ReferenceProfile,
        settings: DriftSettings | None = None,
        *,
        model_name: str | None = None,
        model_version: str | None = None,
    ) -> None:
        self.profile = profile
        self.settings = s = settings or DriftSettings()
        s.validate()
        self.model_name, self.model_version = model_name, model_version
        self.rows_seen = 0
        self._num, self._cat = profile.numeric_names, profile.categorical_names
        self._names = self._num + self._cat
        fn, fc = len(self._num), len(self._cat)
        self._mv = s.multivariate and fn >= 2 and profile.correlation_method == CORRELATION_METHOD
        ref = reference_arrays(profile)
        self._edges, self._k, self._kc = ref.edges, ref.k, ref.kc
        self._ref_num, self._ref_mean_bins, self._ref_num_miss = ref.num_counts, ref.num_bin_means, ref.num_missing
        self._std, self._scores = ref.std, ref.num_scores
        self._ref_cat, self._ref_cat_miss = ref.cat_counts, ref.cat_missing
        self._cat_maps, self._cat_other = ref.cat_codes, ref.cat_other
        self._ref_r, self._ref_rn = ref.corr, ref.corr_n
        self._pairs = np.triu_indices(fn, 1)
        self._phi_num, self._phi_cat = ref.dispersion(s.windows)  # serial dependence, per window and feature
        k, kc = self._k, self._kc
        b = s.block_size
        self._wblocks = [w // b for w in s.windows]
        self._sblocks = [st // b for st in s.steps()]
        self._resolve_w = s.windows.index(s.resolve_window)
        self.calibration: Calibration = calibrate(
            profile, windows=s.windows, steps=s.steps(), expected_run_length=s.expected_run_length,
            multivariate=self._mv, max_dof=max(k, kc + 1),
        )
        # ring buffers over the longest window: fixed size, O(1) in the stream length
        self._ring_len = r_len = self._wblocks[-1]
        self._ring_num = np.zeros((r_len, fn, k + 1), dtype=np.int64)
        self._ring_sum = np.zeros((r_len, fn, k))
        self._ring_cat = np.zeros((r_len, fc, kc + 1), dtype=np.int64)
        self._ring_corr = np.zeros((r_len, 4, fn, fn)) if self._mv else np.zeros((0,))
        self._blocks = 0
        self._reset_at = {n: 0 for n in self._names + [MULTIVARIATE]}
        self._open = {n: False for n in self._names + [MULTIVARIATE]}
        self._calm = {n: 0 for n in self._names + [MULTIVARIATE]}
        self._stats: dict[str, dict[int, dict[str, np.ndarray]]] = {"num": {}, "cat": {}, "mv": {}}
        self._raw: dict[str, dict[int, tuple[Any, tuple[np.ndarray, ...]]]] = {"num": {}, "cat": {}}
        self._effects = {"num": {"wasserstein": s.wasserstein_threshold, "psi": s.psi_threshold},
                         "cat": {"jensen_shannon": s.js_threshold}}
        self._open_features: dict[str, list[str]] = {}
        self._buf_num = np.empty((b, fn))
        self._buf_cat = np.empty((b, fc), dtype=np.int64)
        self._buf_len = 0
        self._score_j = self._num.index(s.score_feature) if s.score_feature in self._num else -1
        self._detector: Any = None
        if s.score_detector and self._score_j >= 0:
            from river import drift as rdrift

            self._detector = rdrift.PageHinkley() if s.score_detector == "page_hinkley" else rdrift.ADWIN()

    def _code(self, j: int, v: Any) -> int:
        if is_missing(v):
            return self._kc
        key = v if isinstance(v, str) else str(v)
        return self._cat_maps[j].get(key, self._cat_other[j])

    def update(self, row: Mapping[str, float | int | str | None]) -> list[DriftEvent]:
        """Add one row; return the events that fired (at most at block ends)."""
        i = self._buf_len
        for j, name in enumerate(self._num):
            v = row.get(name)
            self._buf_num[i, j] = np.nan if v is None else float(v)
        for j, name in enumerate(self._cat):
            self._buf_cat[i, j] = self._code(j, row.get(name))
        self._buf_len += 1
        self.rows_seen += 1
        if self._buf_len < self.settings.block_size:
            return []
        self._buf_len = 0
        return self._process(self._buf_num, self._buf_cat, self.rows_seen - self.settings.block_size)

    def update_batch(self, columns: Mapping[str, np.ndarray | list[Any]]) -> list[DriftEvent]:
        """Add many rows given as columns; same events as :meth:`update` row by row."""
        n = len(next(iter(columns.values()))) if columns else 0
        if n == 0:
            return []
        num = np.empty((n, len(self._num)))
        for j, name in enumerate(self._num):
            col = columns.get(name)
            num[:, j] = np.nan if col is None else np.asarray(col, dtype=float)
        cat = np.empty((n, len(self._cat)), dtype=np.int64)
        for j, name in enumerate(self._cat):
            col = columns.get(name)
            if col is None:
                cat[:, j] = self._kc
                continue
            # fast path: dict look-up; anything not found (unseen, NaN, non-str) takes the slow path
            codes = np.fromiter(map(self._cat_maps[j].get, col, repeat(-1)), np.int64, n)
            for i in np.flatnonzero(codes < 0):
                codes[i] = self._code(j, col[i])
            cat[:, j] = codes
        return self._ingest(num, cat)

    def _ingest(self, num: np.ndarray, cat: np.ndarray) -> list[DriftEvent]:
        b, n, pos, events = self.settings.block_size, num.shape[0], 0, []
        if self._buf_len:
            take = min(b - self._buf_len, n)
            self._buf_num[self._buf_len : self._buf_len + take] = num[:take]
            self._buf_cat[self._buf_len : self._buf_len + take] = cat[:take]
            self._buf_len += take
            pos = take
            if self._buf_len == b:
                self._buf_len = 0
                events += self._process(self._buf_num, self._buf_cat, self.rows_seen + pos - b)
        full = (n - pos) // b * b
        if full:
            events += self._process(num[pos : pos + full], cat[pos : pos + full], self.rows_seen + pos)
            pos += full
        rest = n - pos
        if rest:
            self._buf_num[:rest] = num[pos:]
            self._buf_cat[:rest] = cat[pos:]
            self._buf_len = rest
        self.rows_seen += n
        return events

    def _process(self, num: np.ndarray, cat: np.ndarray, start: int) -> list[DriftEvent]:
        """Reduce whole blocks to sufficient statistics and run the due checks."""
        b, k, kc = self.settings.block_size, self._k, self._kc
        nb, fn, fc = num.shape[0] // b, len(self._num), len(self._cat)
        blk = np.repeat(np.arange(nb), b)
        counts = sums = ccounts = None
        if fn:
            bins = np.empty(num.shape, dtype=np.int64)
            for j in range(fn):
                bins[:, j] = np.searchsorted(self._edges[j], num[:, j], side="right")
            missing = np.isnan(num)
            bins[missing] = k
            idx = (blk[:, None] * fn + np.arange(fn)) * (k + 1) + bins
            counts = np.bincount(idx.ravel(), minlength=nb * fn * (k + 1)).reshape(nb, fn, k + 1)
            sums = np.bincount(idx.ravel(), weights=np.where(missing, 0.0, num).ravel(), minlength=nb * fn * (k + 1))
            sums = sums.reshape(nb, fn, k + 1)[:, :, :k]
            # normal scores of the bins, as the profile's correlation (0 where missing)
            z = np.where(missing, 0.0, self._scores[np.arange(fn), np.where(missing, 0, bins)])
            present = (~missing).astype(float)
        if fc:
            cidx = (blk[:, None] * fc + np.arange(fc)) * (kc + 1) + cat
            ccounts = np.bincount(cidx.ravel(), minlength=nb * fc * (kc + 1)).reshape(nb, fc, kc + 1)
        events: list[DriftEvent] = []
        for i in range(nb):
            slot = self._blocks % self._ring_len
            if fn:
                self._ring_num[slot] = counts[i]  # type: ignore[index]
                self._ring_sum[slot] = sums[i]  # type: ignore[index]
            if fc:
                self._ring_cat[slot] = ccounts[i]  # type: ignore[index]
            if self._mv:
                zi, mi = z[i * b : (i + 1) * b], present[i * b : (i + 1) * b]
                rc = self._ring_corr[slot]
                rc[0], rc[1], rc[2], rc[3] = mi.T @ mi, zi.T @ mi, (zi * zi).T @ mi, zi.T @ zi
            self._blocks += 1
            if self._detector is not None:
                events += self._run_detector(num[i * b : (i + 1) * b, self._score_j], start + i * b)
            events += self._check(start + (i + 1) * b - 1)
        return events

    def _run_detector(self, scores: np.ndarray, start: int) -> list[DriftEvent]:
        out = []
        for i, v in enumerate(scores.tolist()):
            if v != v:  # NaN: missing score
                continue
            self._detector.update(v)
            if self._detector.drift_detected:
                adwin = self.settings.score_detector == "adwin"  # ADWIN: mean after the cut; PH: the value
                ev = {"feature": self.settings.score_feature, "test": self.settings.score_detector, "window": None,
                      "statistic": float(self._detector.estimation if adwin else v), "reference": "stream",
                      "threshold": float(self._detector.delta if adwin else self._detector.threshold)}
                out.append(self._event(start + i, "score_drift", (self.settings.score_feature,), (ev,)))
        return out

    def _window_sum(self, ring: np.ndarray, nblocks: int) -> np.ndarray:
        end = self._blocks % self._ring_len
        begin = end - nblocks
        return ring[begin:end].sum(axis=0) if begin >= 0 else ring[begin:].sum(axis=0) + ring[:end].sum(axis=0)

    def _check(self, index: int) -> list[DriftEvent]:
        fired: dict[str, list[dict[str, Any]]] = {}
        for w, (nbk, step) in enumerate(zip(self._wblocks, self._sblocks, strict=True)):
            if self._blocks % step or self._blocks < nbk:
                continue
            valid = np.array([self._blocks - self._reset_at[n] >= nbk and not self._open[n] for n in self._names])
            if self._num:
                k = self._k
                win = self._window_sum(self._ring_num, nbk)
                args = (win[:, :k], self._window_sum(self._ring_sum, nbk), win[:, k],
                        self._ref_num, self._ref_num_miss, self._ref_mean_bins, self._std, self._phi_num[w])
                self._fire(w, "num", ds.numeric_window_stats, args, valid[: len(self._num)], fired)
            if self._cat:
                win = self._window_sum(self._ring_cat, nbk)
                args = (win[:, : self._kc], win[:, self._kc], self._ref_cat, self._ref_cat_miss, self._phi_cat[w])
                self._fire(w, "cat", ds.categorical_window_stats, args, valid[len(self._num) :], fired)
            if self._mv and self.settings.windows[w] >= self.settings.multivariate_min_window:
                self._check_multivariate(w, nbk, fired)
        return self._transition(index, fired)

    def _crit(self, w: int, group: str, st: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        cal = self.calibration
        off, n = (0, len(self._num)) if group == "num" else (len(self._num), len(self._cat))
        crit = {"ks": cal.ks_crit[w], "mannwhitney": cal.z_crit[w, off : off + n]} if group == "num" else {}
        crit["chi2"] = cal.chi2_crit[w, off + np.arange(n), st["dof"]]
        crit["missing"] = cal.z_crit[w, off : off + n]
        return crit

    def _fire(self, w: int, group: str, stats_fn: Any, args: tuple[np.ndarray, ...], valid: np.ndarray,
              fired: dict[str, list[dict[str, Any]]]) -> None:
        # significance first; effect sizes only when something is significant, a
        # drift is open (to decide when it resolves) or at snapshot time (lazily)
        s = self.settings
        st = stats_fn(*args, effects=False)
        crit = self._crit(w, group, st)
        names = self._num if group == "num" else self._cat
        need = any(self._open[n] for n in names) or any(bool(np.any((st[t] > crit[t]) & valid)) for t in crit)
        self._raw[group][w] = (stats_fn, args)
        self._stats[group].pop(w, None)
        if not need:
            return
        st = self._stats[group][w] = stats_fn(*args, effects=True)
        # each test is gated by its own effect size (a chi-square test fired by a few
        # rare values must not pass on an unrelated Wasserstein fluctuation)
        gate = {t: self._gate(group, t) for t in crit}
        sig = {t: (st[t] > crit[t]) & (st[gate[t][0]] >= gate[t][1]) for t in crit}
        hit = np.zeros(valid.shape, dtype=bool)
        for m in sig.values():
            hit |= m
        for j in np.flatnonzero(hit & valid):
            for t in crit:
                if not sig[t][j]:
                    continue
                metric, thr = gate[t]
                extra = {"psi": st["psi"][j]} if metric != "psi" and t != "missing" else {}
                fired.setdefault(names[j], []).append(self._evidence(
                    names[j], t, st[t][j], crit[t][j], w, metric, st[metric][j], thr,
                    st["n_rows" if t == "missing" else "n"][j], st["n_rows_ref" if t == "missing" else "n_ref"][j],
                    aux=st["dof"][j] if t == "chi2" else None, **extra))

    def _gate(self, group: str, test: str) -> tuple[str, float]:
        s = self.settings
        if test == "missing":
            return "missing_change", s.missing_threshold
        if group == "cat":
            return "jensen_shannon", s.js_threshold
        return ("psi", s.psi_threshold) if test == "chi2" else ("wasserstein", s.wasserstein_threshold)

    def _check_multivariate(self, w: int, nbk: int, fired: dict[str, list[dict[str, Any]]]) -> None:
        s, cal = self.settings, self.calibration
        n_, sx, qx, p = self._window_sum(self._ring_corr, nbk)
        r = ds.correlation_from_sums(n_, sx, qx, p)
        iu, ju = self._pairs
        phi = np.sqrt(self._phi_num[w][iu, 1] * self._phi_num[w][ju, 1])  # serial dependence of the pair
        z = np.abs(ds.fisher_z(r[iu, ju], n_[iu, ju], self._ref_r[iu, ju], self._ref_rn[iu, ju])) / np.sqrt(phi)
        diff = np.abs(r[iu, ju] - self._ref_r[iu, ju])
        self._stats["mv"][w] = {"correlation": z, "correlation_change": diff}
        if self._blocks - self._reset_at[MULTIVARIATE] < nbk or self._open[MULTIVARIATE]:
            return
        for h in np.flatnonzero((z > cal.corr_crit[w]) & (diff >= s.correlation_threshold)):
            name = f"{self._num[iu[h]]}|{self._num[ju[h]]}"
            ev = self._evidence(name, "correlation", z[h], cal.corr_crit[w], w, "correlation_change", diff[h],
                                s.correlation_threshold, n_[iu[h], ju[h]], self._ref_rn[iu[h], ju[h]],
                                r=float(r[iu[h], ju[h]]), r_reference=float(self._ref_r[iu[h], ju[h]]))
            fired.setdefault(MULTIVARIATE, []).append(ev)

    def _evidence(self, feature: str, test: str, stat: float, crit: float, w: int, metric: str, effect: float,
                  effect_thr: float, n: float, n_ref: float, aux: float | None = None, **extra: Any) -> dict[str, Any]:
        alpha = self.calibration.alpha_feature.get(feature, self.calibration.alpha_pair)[w]
        ev = {"feature": feature, "test": test, "statistic": _f(stat), "threshold": _f(crit), "alpha": alpha,
              "p_value": ds.p_value(test, float(stat), float(n), float(n_ref), aux), "effect_metric": metric,
              "effect_size": _f(effect), "effect_threshold": _f(effect_thr), "window": self.settings.windows[w],
              "n": int(n), "reference": "profile", "n_reference": int(n_ref)}
        ev.update({k: _f(v) for k, v in extra.items()})
        return ev

    def _calm_now(self, name: str) -> bool:
        s, w = self.settings, self._resolve_w
        if name == MULTIVARIATE:
            st = self._stats["mv"].get(w)
            return st is not None and bool(np.all(st["correlation_change"] < s.leave_ratio * s.correlation_threshold))
        group, j = ("num", self._num.index(name)) if name in self.profile.numeric else ("cat", self._cat.index(name))
        st = self._full_stats(group, w)
        if st is None:
            return False
        limits = dict(self._effects[group], missing_change=s.missing_threshold)
        return all(st[m][j] < s.leave_ratio * thr for m, thr in limits.items())

    def _full_stats(self, group: str, w: int) -> dict[str, np.ndarray] | None:
        if group == "mv" or w in self._stats[group]:
            return self._stats[group].get(w)
        if w not in self._raw[group]:
            return None
        fn, args = self._raw[group][w]
        st = self._stats[group][w] = fn(*args, effects=True)
        return st

    def _transition(self, index: int, fired: dict[str, list[dict[str, Any]]]) -> list[DriftEvent]:
        opened: dict[str, list[str]] = {}
        evidence: dict[str, list[dict[str, Any]]] = {}
        for name in self._names + [MULTIVARIATE]:
            if name in fired and not self._open[name]:
                self._open[name], self._calm[name] = True, 0
                kind = ("multivariate_drift" if name == MULTIVARIATE else
                        "score_drift" if name == self.settings.score_feature else "data_drift")
                feats = ([f for f in dict.fromkeys(p for e in fired[name] for p in e["feature"].split("|"))]
                         if name == MULTIVARIATE else [name])
                opened.setdefault(kind, []).extend(feats)
                self._open_features[name] = feats
                evidence.setdefault(kind, []).extend(fired[name])
        closed = []
        if self._blocks % self._sblocks[self._resolve_w] == 0:
            for name in self._names + [MULTIVARIATE]:
                if self._open[name] and name not in fired:
                    self._calm[name] = self._calm[name] + 1 if self._calm_now(name) else 0
                    if self._calm[name] >= self.settings.resolve_patience:
                        self._open[name], self._calm[name], self._reset_at[name] = False, 0, self._blocks
                        closed.append(name)
        events = [self._event(index, kind, tuple(opened[kind]), tuple(evidence[kind]))
                  for kind in ("data_drift", "score_drift", "multivariate_drift") if kind in opened]
        if closed and self.settings.emit_resolved:
            names = tuple(dict.fromkeys(f for n in closed for f in self._open_features.pop(n, [n])))
            events.append(self._event(index, "drift_resolved", names, ()))
        return events

    def _event(self, index: int, kind: str, feats: tuple[str, ...], ev: tuple[dict[str, Any], ...]) -> DriftEvent:
        return DriftEvent(index, kind, feats, ev, self.model_name, self.model_version)

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """Latest statistics per feature (and ``"multivariate"``), for Prometheus export.

        For each feature, the window and test whose statistic is closest to (or
        furthest past) its critical value is reported at the top level
        (``statistic``, ``threshold``, ``p_value``, ``test``, ``window``, and its
        ``effect_size`` / ``effect_metric``), with ``drifting`` the open/closed
        drift state; ``windows`` maps each window length to all its statistics.
        """
        out: dict[str, dict[str, Any]] = {}
        groups = [("num", self._num), ("cat", self._cat)] + ([("mv", [MULTIVARIATE])] if self._mv else [])
        for group, names in groups:
            for j, name in enumerate(names):
                best: dict[str, Any] = {"statistic": 0.0, "threshold": None, "p_value": 1.0, "test": None,
                                        "window": None, "effect_size": 0.0, "effect_metric": None,
                                        "drifting": self._open[name], "windows": {}}
                ratio = -1.0
                for w in range(len(self.settings.windows)):
                    st = self._full_stats(group, w)
                    if st is None:
                        continue
                    best["windows"][self.settings.windows[w]] = self._window_view(group, w, st, j)
                    for t, (v, c, metric, eff) in self._tests_view(group, w, st, j).items():
                        if v / c > ratio:
                            ratio = v / c
                            aux = st["dof"][j] if t == "chi2" else None
                            n_key = ("n_rows", "n_rows_ref") if t == "missing" else ("n", "n_ref")
                            p = 1.0 if group == "mv" else ds.p_value(t, v, st[n_key[0]][j], st[n_key[1]][j], aux)
                            best.update(statistic=v, threshold=c, test=t, window=self.settings.windows[w],
                                        effect_metric=metric, effect_size=eff, p_value=p)
                out["multivariate" if name == MULTIVARIATE else name] = best
        return out

    def _tests_view(
        self, group: str, w: int, st: dict[str, np.ndarray], j: int
    ) -> dict[str, tuple[float, float, str, float]]:
        if group == "mv":
            top = int(np.argmax(st["correlation"])) if st["correlation"].size else 0
            z = float(st["correlation"][top]) if st["correlation"].size else 0.0
            return {"correlation": (z, float(self.calibration.corr_crit[w]), "correlation_change",
                                    float(st["correlation_change"].max(initial=0.0)))}
        crit = self._crit(w, group, st)
        return {t: (float(st[t][j]), _f(crit[t][j]), self._gate(group, t)[0], float(st[self._gate(group, t)[0]][j]))
                for t in crit}

    def _window_view(self, group: str, w: int, st: dict[str, np.ndarray], j: int) -> dict[str, float]:
        if group == "mv":
            return {"correlation": float(st["correlation"].max(initial=0.0)),
                    "correlation_change": float(st["correlation_change"].max(initial=0.0))}
        return {k: float(v[j]) for k, v in st.items()}

    def state_size(self) -> int:
        """Number of array elements held (constant for a given profile and settings)."""
        arrays = (self._ring_num, self._ring_sum, self._ring_cat, self._ring_corr, self._buf_num, self._buf_cat)
        return int(sum(a.size for a in arrays))
