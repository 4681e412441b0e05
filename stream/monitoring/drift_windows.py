"""The drift monitor's window tests: every feature's window against the reference, studentised.

:class:`WindowTests` turns the sufficient statistics of a window (from the ring of
running totals) into studentised Mann-Whitney, KS, chi-square (Rao-Scott), missing-rate
and correlation statistics at many check points at once, with their critical values
(:mod:`stream.monitoring.calibration`), effect sizes, effect gates and p-values. Statistics with few
effective rows behind their variance are referred to their distributions by
:mod:`stream.monitoring.window_dist`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import special

from stream.monitoring import drift_stats as ds
from stream.monitoring.drift_core import MonitorCore
from stream.monitoring.drift_event import nan_to_num
from stream.monitoring.seasonal import hour_mix
from stream.monitoring.window_dist import (
    binomial_skew,
    cell_df,
    chi2_equivalent,
    in_one_call,
    satterthwaite,
    skewed_z,
    z_equivalent,
)

__all__ = ["Picked", "WindowTests"]


def _pick(st: dict[str, Any], i: int) -> dict[str, Any]:
    """Check point ``i`` of statistics computed for several check points at once."""
    out: dict[str, Any] = {}
    for key, v in st.items():
        if isinstance(v, dict):
            out[key] = _pick(v, i)
        else:
            out[key] = None if v is None else v[i]
    return out


class Picked(dict[str, Any]):
    """Check point ``i`` of ``st``, picked only when first read (most check points never are)."""

    def __init__(self, st: dict[str, Any], i: int) -> None:
        super().__init__()
        self._src: tuple[dict[str, Any], int] | None = (st, i)

    def __missing__(self, key: str) -> Any:
        if self._src is None:
            raise KeyError(key)
        st, i = self._src
        self._src = None
        self.update(_pick(st, i))
        return self[key]

    def get(self, key: str, default: Any = None) -> Any:
        try:
            return self[key]
        except KeyError:
            return default


class WindowTests(MonitorCore):
    """Window sums, studentised tests, critical values, effect sizes and p-values of a drift monitor."""

    def window_sums(self, nblocks: int | np.ndarray, at: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Sufficient statistics of the ``nblocks`` blocks ending at block count ``at`` (an array of
        counts: a leading axis; default: now), with their hour-of-day row histogram."""
        end = np.asarray(self._blocks if at is None else at)
        now, past = end % self._ring_len, (end - nblocks) % self._ring_len
        return {key: ring[now] - ring[past] for key, ring in self._ring.items()}

    def _constants(self) -> dict[str, Any]:
        """What the window tests read from the estimates alone, computed once per refresh (dropped by
        ``DriftMonitor._estimates``): numpy's fixed cost per call is most of a test pass."""
        if self._wconst is not None:
            return self._wconst
        sl, fn, fc, k, kc = self._sl, len(self._num), len(self._cat), self._k, self._kc
        design = self._lr / self._g0_live  # against the live per-row variance (see DriftMonitor._live_variance)
        c: dict[str, Any] = {"design": design, "g0m": self._g0 / self._m,
                             "psi_skew": self._window_skew(self._wblocks_arr) if self._psi_skew.any() else None}
        if fn:
            p = self._theta[sl["props"]].reshape(fn, k)
            dp, dc = design[sl["props"]].reshape(fn, k), design[sl["cum"]].reshape(fn, k - 1)
            g0c = self._g0[sl["cum"]].reshape(fn, k - 1)
            # the feature's design effect: its location score's, or the bins' median if larger (a max over
            # 20 noisy per-bin estimates would make every short window look thin)
            c["num"] = {"p": p, "p_pos": p > 0, "dp": dp, "d_u": design[sl["u"]],
                        "d_feat": np.maximum(design[sl["u"]], np.median(dp, axis=-1)),
                        "d_ks": np.maximum((g0c * dc).sum(axis=-1) / np.maximum(g0c.sum(axis=-1), 1e-12), 1.0)[:, None],
                        "inv_m_cum": 1.0 / self._m[sl["cum"]].reshape(fn, k - 1),
                        "slow_sd": np.sqrt(self._slow[sl["u"]] / self._g0[sl["u"]]), **self._rs_constants("props", p),
                        "empty": p == 0}
        if fc:
            p = self._theta[sl["cprops"]].reshape(fc, kc)
            slow_rel = (self._slow[sl["cprops"]].reshape(fc, kc) * p).sum(axis=-1) / np.maximum(
                (self._g0[sl["cprops"]].reshape(fc, kc) * p).sum(axis=-1), 1e-12)
            c["cat"] = {"p": p, "p_pos": p > 0, "dp": design[sl["cprops"]].reshape(fc, kc),
                        "slow_sd": np.sqrt(slow_rel), **self._rs_constants("cprops", p)}
        self._wconst = c
        return c

    def _rs_constants(self, key: str, p: np.ndarray) -> dict[str, Any]:
        sl = self._sl[key]
        return {"g0": self._g0[sl].reshape(p.shape), "inv_m": 1.0 / self._m[sl].reshape(p.shape),
                "slow": self._slow[sl], "one_minus_p": (1 - p).clip(0.5), "sl": sl}

    def _test_window(self, nblocks: np.ndarray, at: np.ndarray) -> dict[str, Any]:
        """Studentised statistics of the windows of ``nblocks`` blocks ending at block counts ``at``
        (leading axis: one row per check point, of any window), per feature and test.

        Nothing but the sums depends on the window: one pass tests every window's check points
        of a segment (numpy's fixed cost per call dominated four passes)."""
        win = self.window_sums(nblocks, at)
        means, weights = ds.channel_means(win["num"], win["cat"], win["corr"] if self._mv else None,
                                          self._uref, self._rho, self._pairs)
        adj: Any = 0.0
        noise: Any = 0.0
        if self._season_dev is not None:
            assert self._season_var is not None  # set together with _season_dev
            adj, noise = hour_mix(win["hours"], self._season_dev, self._season_var, self._presence)
        delta = nan_to_num(means - adj - self._theta)  # a fresh array: written into below
        sl, fn, fc, k, kc, L = self._sl, len(self._num), len(self._cat), self._k, self._kc, len(at)
        r = None
        if self._mv:
            r = ds.correlation_from_sums(win["corr"][:, 0], win["corr"][:, 1], win["corr"][:, 2], win["corr"][:, 3])
            delta[:, sl["psi"]] = r[:, self._pairs[0], self._pairs[1]] - self._rho[self._pairs]
        n = np.maximum(weights, 1e-12)
        const = self._constants()
        design = const["design"]
        extra = self._slow + noise  # [L, C] or [C]
        rel: Any = 1.0
        if self._season_dev is not None:
            # a share the window's hours raise varies as theirs does: p_h (1 - p_h), not the day's
            # p (1 - p) (a missing rate of 5 % +-80 % over the day read a 5.9 sd excursion, exact
            # binomial p 7e-8, as 7.1 sd); never below the day's, quiet hours make no test keener
            rel = self._share_variance_ratio(adj)
        var = self._lr * rel / n + const["g0m"] + extra
        out: dict[str, Any] = {"sums": win, "r": r, "num": {}, "cat": {}, "mv": {}}
        min_eff = self.settings.min_effective_rows

        # the special functions' fixed cost per call: every z (chi-square) test of the pass in one call
        zq: list[tuple[str, str, np.ndarray, tuple[np.ndarray, ...]]] = []
        cq: list[tuple[str, str, np.ndarray, tuple[np.ndarray, ...]]] = []

        def z(group: str, test: str, key: str, df: np.ndarray, keep: np.ndarray | None = None) -> None:
            keep = ~(df < min_eff) if keep is None else keep
            t = delta[:, sl[key]] / np.sqrt(var[:, sl[key]])
            if key == "psi" and const["psi_skew"] is not None:  # per window, the pairs' skewness
                t = skewed_z(t, const["psi_skew"][np.searchsorted(self._wblocks_arr, nblocks)])
            if key in ("miss", "cmiss"):  # a rare share's skewed tails, from its effective count
                floor = 0.5 / self._m[sl[key]]  # as the share's variance (drift_channels.reference_channels)
                ph = np.clip(self._theta[sl[key]] + (adj[:, sl[key]] if np.ndim(adj) else 0.0), floor, 1.0 - floor)
                pd = np.clip(self._theta[sl[key]], floor, 1.0 - floor)
                ps = np.where(ph * (1.0 - ph) < pd * (1.0 - pd), pd, ph)  # the binomial whose variance t uses
                t = t * binomial_skew(means[:, sl[key]] - ph + ps, ps, df)
            zq.append((group, test, keep, (t, df)))

        if fn:
            c = const["num"]
            p, dp, d_feat = c["p"], c["dp"], c["d_feat"]
            counts = win["num"][:, :, :k]
            present = counts.sum(axis=-1)
            pres1 = np.maximum(present, 1.0)[..., None]
            used = c["p_pos"] | (counts > 0)
            dof = used.sum(axis=-1) - 1
            neff = present / d_feat
            x2 = self._rao_scott(delta[:, sl["props"]].reshape(L, fn, k), c, dp, used, pres1, noise,
                                 rel[:, sl["props"]].reshape(L, fn, k) if np.ndim(rel) else 1.0)
            # second order: the bins move together along the location score, with its design effect
            # (bursts of one entity's level), the other directions with the bins' mean one
            wb = np.where(used, c["g0"], 0.0)
            dbar = np.maximum((wb * dp).sum(axis=-1) / np.maximum(wb.sum(axis=-1), 1e-12), 1.0)
            scale, dof_eff = satterthwaite(np.maximum(c["d_u"] / dbar, 1.0), dof)
            # KS as Weiss (1978): the unweighted largest cumulative difference, rows scaled by the
            # cumulative indicators' (variance-weighted) design effect; unweighted, so the tails do
            # not weigh more (a burst of one entity lands in them)
            dcum = delta[:, sl["cum"]].reshape(L, fn, k - 1)
            slow_c = np.broadcast_to(extra, (L, extra.shape[-1]))[:, sl["cum"]].reshape(L, fn, k - 1)
            den = np.sqrt(c["d_ks"] / pres1 + c["inv_m_cum"] + 4.0 * slow_c)
            ks = (np.abs(dcum) / den).max(axis=-1, initial=0.0)
            thin = (neff < min_eff) | (present == 0)
            out["num"] = {"thin": thin, "ks": np.where(thin, 0.0, ks), "mannwhitney": None, "chi2": None,
                          "dof": np.maximum(dof, 0), "missing": None,
                          "n": present, "n_rows": present + win["num"][:, :, k],
                          "design_effect": np.repeat(d_feat[None], L, axis=0),
                          "slow_sd": np.repeat(c["slow_sd"][None], L, axis=0)}
            z("num", "mannwhitney", "u", neff, ~thin)  # thin covers neff < min_eff
            cq.append(("num", "chi2", ~thin, (x2 / scale, dof, cell_df(neff, present, p, dp, used), dof_eff)))
            miss_df = weights[:, sl["miss"]] / design[sl["miss"]]
            out["num"]["missing_thin"] = miss_df < min_eff  # no missing test: no sign of calm either
            z("num", "missing", "miss", miss_df)
        if fc:
            c = const["cat"]
            p, dp = c["p"], c["dp"]
            counts = win["cat"][:, :, :kc]
            present = counts.sum(axis=-1)
            used = c["p_pos"] | (counts > 0)
            dof = used.sum(axis=-1) - 1
            gp = np.where(used, c["g0"], 0.0)
            d_feat = np.maximum((gp * dp).sum(axis=-1) / np.maximum(gp.sum(axis=-1), 1e-12), 1.0)
            neff = present / d_feat
            x2 = self._rao_scott(delta[:, sl["cprops"]].reshape(L, fc, kc), c, dp, used,
                                 np.maximum(present, 1.0)[..., None], noise,
                                 rel[:, sl["cprops"]].reshape(L, fc, kc) if np.ndim(rel) else 1.0)
            thin = (neff < min_eff) | (present == 0)
            out["cat"] = {"thin": thin, "chi2": None, "dof": np.maximum(dof, 0), "missing": None, "n": present,
                          "n_rows": present + win["cat"][:, :, kc], "design_effect": d_feat,
                          "slow_sd": np.repeat(c["slow_sd"][None], L, axis=0)}
            # no Satterthwaite correction: the degrees of freedom themselves (as floats: the same values)
            cq.append(("cat", "chi2", ~thin, (x2, dof, cell_df(neff, present, p, dp, used),
                                              np.maximum(dof, 1).astype(float))))
            miss_df = weights[:, sl["cmiss"]] / design[sl["cmiss"]]
            out["cat"]["missing_thin"] = miss_df < min_eff
            z("cat", "missing", "cmiss", miss_df)
        if self._mv:
            out["mv"] = {"correlation": None, "correlation_change": np.abs(delta[:, sl["psi"]]),
                         "design_effect": np.repeat(design[None, sl["psi"]], L, axis=0),
                         "n": weights[:, sl["psi"]], "thin": weights[:, sl["psi"]] / design[sl["psi"]] < min_eff}
            z("mv", "correlation", "psi", weights[:, sl["psi"]] / design[sl["psi"]])
        in_one_call(out, zq, z_equivalent)
        in_one_call(out, cq, chi2_equivalent)
        return out

    def _window_skew(self, nblocks: np.ndarray) -> np.ndarray:
        """``[check point, pair]``: the skewness of each pair's correlation in windows of ``nblocks``
        blocks, from its batch means' (``DependenceTracker.skewness``): a mean of ``W / B`` batches
        of ``B`` rows has ``sqrt(B / W)`` of their skewness; the largest of the scales up to the window."""
        b = self.settings.block_size
        rows = np.asarray(nblocks, dtype=float)[:, None] * b
        batch = np.array(self.settings.dependence_scales, dtype=float)[None, :] * b
        f = np.where(batch <= rows, np.sqrt(batch / rows), 0.0)  # [L, scale]
        g = f[:, :, None] * self._psi_skew[None]
        pick = np.abs(g).argmax(axis=1)[:, None, :]
        return np.take_along_axis(g, pick, axis=1)[:, 0, :]

    @staticmethod
    def _rao_scott(delta: np.ndarray, c: dict[str, Any], design: np.ndarray, used: np.ndarray,
                   pres1: np.ndarray, noise: Any, rel: Any = 1.0) -> np.ndarray:
        """Pearson chi-square of the bin (category) shares with each share's variance from its own
        design effect, at least the variance-weighted mean design effect of the feature (first-order
        Rao-Scott; a rare bin's few clusters do not make it count more). Leading axis: check points;
        ``c``: the group's constants, ``pres1``: rows present (at least 1), ``rel``: each share's
        per-row variance in the window's hours relative to the day's (at least 1).

        A bin the reference never filled (a discrete feature's values past the training range,
        ``c["empty"]``) is judged as holding at least one row of the window: a count one past the
        training set's largest is no change of distribution, but its one row in a 500-row window
        read as a chi-square past 60 (a Poisson count whose rate follows the day: 5 false openings
        on 6 i.i.d. streams of 200,000 rows). A feature leaving its range still adds about ``c^2 / d``
        for ``c`` such rows (less at windows near the reference's size), and KS sees it."""
        g0 = c["g0"]
        w = np.where(used, g0, 0.0)
        mean_d = (w * design).sum(axis=-1) / np.maximum(w.sum(axis=-1), 1e-12)
        d = np.maximum(design, mean_d[..., None])
        extra = (c["slow"] + (noise[:, c["sl"]] if np.ndim(noise) else 0.0)).reshape((-1,) + g0.shape)
        if "empty" in c:
            g0 = np.where(c["empty"], np.maximum(g0, 1.0 / pres1), g0)
        var = g0 * (d * rel / pres1 + c["inv_m"]) + extra
        return np.where(used, delta**2 / var * c["one_minus_p"], 0.0).sum(axis=-1)

    def crit(self, w: int, group: str, st: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Critical value of every test of ``group`` in window ``w``."""
        cal = self.calibration
        if group == "mv":
            return {"correlation": np.full(st["correlation"].shape, cal.corr_crit[w])}
        off, n = (0, len(self._num)) if group == "num" else (len(self._num), len(self._cat))
        out = {"ks": cal.ks_crit[w], "mannwhitney": cal.z_crit[w, off : off + n]} if group == "num" else {}
        out["chi2"] = cal.chi2_crit[w, off + np.arange(n), st["dof"]]
        out["missing"] = cal.z_crit[w, off : off + n]
        return out

    def effects(self, w: int, group: str) -> dict[str, np.ndarray]:
        """Effect sizes of window ``w`` (computed on demand, cached with the window's statistics)."""
        last = self._last[w]
        if "effects" not in last[group]:
            last[group]["effects"] = self._effects_of(last["sums"], group, last)
        return last[group]["effects"]

    def gated_effects(self, w: int, group: str) -> dict[str, np.ndarray]:
        """What window ``w``'s effect gates read at the current block. In the shortest window a
        category's Jensen-Shannon distance and a missing rate's change are also read on its newest
        fifth, the larger counting: a drift that began inside the window shows there at its own
        size, diluted over the whole window by the rows before it (a new category at 5 % reads
        1 % in a 500-row window 100 rows after it appears), while this window's significance
        already needs effects far past the numeric gates. The newest fifth's distance is taken
        net of the bias a sample of its size has (``(slots - 1) D / (8 n ln 2)`` in divergence),
        a change of rate is unbiased; significance is still the whole window's."""
        eff = self.effects(w, group)
        if w or group == "mv":
            return eff
        nb = max(1, int(self._wblocks[w]) // 5)
        win, out = self.window_sums(nb), dict(eff)
        out["missing_change"] = np.maximum(eff["missing_change"], self._missing_change(win, group))
        if group == "cat":
            d = np.maximum(np.asarray(self._last[w]["cat"]["design_effect"], dtype=float), 1.0)
            bias = (self._kc - 1) * d / (8.0 * nb * self.settings.block_size * np.log(2.0))
            js2 = ds.js_distance(self.ref.cat_counts, win["cat"][:, : self._kc].astype(float)) ** 2
            out["jensen_shannon"] = np.maximum(eff["jensen_shannon"], np.sqrt(np.maximum(js2 - bias, 0.0)))
        return out

    def _missing_change(self, win: dict[str, np.ndarray], group: str) -> np.ndarray:
        """Change of each feature's missing rate in the window sums ``win`` against the reference."""
        if group == "num":
            k, counts, ref_miss, ref_counts = self._k, win["num"], self.ref.num_missing, self.ref.num_counts
        else:
            k, counts, ref_miss, ref_counts = self._kc, win["cat"], self.ref.cat_missing, self.ref.cat_counts
        present = counts[:, :k].astype(float).sum(axis=1)
        return ds.missing_stats(counts[:, k], present, ref_miss, ref_counts.sum(axis=1))["missing_change"]

    def _effects_of(self, win: dict[str, np.ndarray], group: str, last: Any) -> dict[str, np.ndarray]:
        """Effect sizes of the window sums ``win`` against the reference (``last``: the check's
        statistics, which hold the correlation change)."""
        k, kc = self._k, self._kc
        if group == "num":
            c = win["num"][:, :k].astype(float)
            bm = np.where(c > 0, win["sum"] / np.maximum(c, 1.0), self.ref.num_bin_means)
            e = {"psi": ds.psi(self.ref.num_counts, c),
                 "wasserstein": ds.binned_wasserstein(self.ref.num_bin_means, self.ref.num_counts, bm, c) / self.ref.std}
        elif group == "cat":
            c = win["cat"][:, :kc].astype(float)
            e = {"jensen_shannon": ds.js_distance(self.ref.cat_counts, c), "psi": ds.psi(self.ref.cat_counts, c)}
        else:
            return {"correlation_change": last["mv"]["correlation_change"]}
        e["missing_change"] = self._missing_change(win, group)
        return e

    def gate(self, group: str, test: str) -> tuple[str, float]:
        """The effect size gating ``test`` and its enter level."""
        s = self.settings
        if group == "mv":
            return "correlation_change", s.correlation_threshold
        if test == "missing":
            return "missing_change", s.missing_threshold
        if group == "cat":
            return "jensen_shannon", s.js_threshold
        return ("psi", s.psi_threshold) if test == "chi2" else ("wasserstein", s.wasserstein_threshold)

    def passes_gate(self, group: str, test: str, eff: dict[str, np.ndarray]) -> np.ndarray:
        """Which features' effect sizes reach ``test``'s enter level. A numeric chi-square (the
        distribution's shape) passes on PSI or on the Wasserstein distance, either at its level
        being a change a user set out to hear about. A window partly past a change reads PSI (a
        divergence) at about the square of that part and W1 at the part itself, so W1 passes
        first (a uniform shape for a normal one, PSI 0.16 and W1 0.15 in full: a 2,000-row window
        70 % past it reads ~0.08 and ~0.105); and a change of shape at the same mean and variance
        can move mass within the bins more than their shares (two modes at -0.8 and +0.8 sd for
        one normal: PSI 0.06, W1 0.10), where KS, gated by W1, sees a CDF gap of 0.046."""
        (metric, thr), other = self.gate(group, test), self._other_gate(group, test)
        ok = eff[metric] >= thr
        if other is not None:
            ok |= eff[other[0]] >= other[1]
        return ok

    def gate_of(self, group: str, test: str, eff: dict[str, np.ndarray], j: int) -> tuple[str, float]:
        """The effect size and level reported for feature ``j``'s alarm: the test's own gate, or the
        other one where only it passed (see :meth:`passes_gate`)."""
        (metric, thr), other = self.gate(group, test), self._other_gate(group, test)
        if other is not None and not eff[metric][j] >= thr:  # NaN fails, as in passes_gate
            return other
        return metric, thr

    def _other_gate(self, group: str, test: str) -> tuple[str, float] | None:
        """The second effect size a test may pass on: the Wasserstein distance for a numeric chi-square."""
        return ("wasserstein", self.settings.wasserstein_threshold) if (group, test) == ("num", "chi2") else None


    def p_value(self, group: str, test: str, stat: float, st: dict[str, Any], j: int) -> float:
        """p-value of a studentised statistic (KS: Bonferroni over the bins' cumulative differences)."""
        if test == "chi2":  # scipy.special, not scipy.stats: the same functions without per-call overhead
            dof = int(st["dof"][j])
            return float(special.chdtrc(dof, stat)) if dof > 0 else 1.0
        if test == "ks":
            return float(special.kolmogorov(stat))
        return float(2.0 * special.ndtr(-abs(stat)))


    def _any_significant(self, wi: np.ndarray, st: dict[str, Any]) -> np.ndarray:
        """Per check point (of window ``wi[row]``) and per state owner (numeric features, then
        categorical ones, then the pairs' joint state): does any of its tests pass its critical
        value (before effect gates and state)?"""
        cal, fn, fc = self.calibration, len(self._num), len(self._cat)
        hit = np.zeros((len(wi), fn + fc + 1), dtype=bool)
        z_crit = cal.z_crit[wi]
        if st["num"]:
            g = st["num"]
            hit[:, :fn] = ((g["ks"] > cal.ks_crit[wi]) | (g["mannwhitney"] > z_crit[:, :fn])
                           | (g["missing"] > z_crit[:, :fn])
                           | (g["chi2"] > cal.chi2_crit[wi[:, None], np.arange(fn), g["dof"]]))
        if st["cat"]:
            g = st["cat"]
            hit[:, fn : fn + fc] = ((g["missing"] > z_crit[:, fn:])
                                    | (g["chi2"] > cal.chi2_crit[wi[:, None], fn + np.arange(fc), g["dof"]]))
        if st["mv"]:
            hit[:, fn + fc] = (st["mv"]["correlation"] > cal.corr_crit[wi][:, None]).any(axis=-1)
        return hit
