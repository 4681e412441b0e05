"""Streaming drift monitor for real traffic: dependence-aware, calibrated, effect-size gated, O(1) state.

How it works
------------
Rows are grouped in blocks of ``block_size`` rows; each block is reduced to fixed-size
sufficient statistics (numeric features: counts and value sums in the reference
quantile bins, a missing count, a sum of squares; categorical features: counts per
reference category, "other" and missing; numeric pairs: sums of the bins' normal
scores and their products). Running totals and a ring of their past values give the
sum over any sliding window in ``DriftSettings.windows`` in O(1); each window length
``w`` is tested every ``w / checks_per_window`` rows.

Every test compares a window mean of per-row scores with the reference
(:func:`stream.monitoring.drift_stats.channel_means`): bin and cumulative-bin
indicators (chi-square, KS), the reference mid-rank (Mann-Whitney), the missing
indicator, category indicators, the linearised correlation of each numeric pair.
On real traffic those window means vary far more than i.i.d. formulas say, so each
difference ``theta_w - theta_ref`` is studentised with

    var = s2_lr / n + g0 / m + s2_slow (+ the seasonal profile's own error)

where ``g0 / m`` is the i.i.d. reference's sampling error, ``s2_lr`` the score's
long-run variance and ``s2_slow`` its slow stationary wander, both learned from the
live stream (:class:`stream.monitoring.dependence.DependenceTracker`), and a daily
profile learned from event times is taken out when the hours differ
(:class:`stream.monitoring.dependence.SeasonalProfile`). Tests: studentised
Mann-Whitney and missing-rate z; KS as the largest studentised cumulative
difference (Bonferroni over the bins); chi-square as the sum of studentised squared
bin differences (a first-order Rao-Scott correction, one design effect per bin);
correlation z from the linearised correlation's own long-run variance (Bartlett's
correction, measured rather than modelled). Critical values come from
:mod:`stream.monitoring.calibration` (Bonferroni split of one false alarm per
``expected_run_length`` rows).

A feature drifts when a test passes its critical value *and* its effect size its
enter level. Its state then stays open (one event) and its dependence and seasonal
estimators are frozen, so the drift is not learned as normal; it closes
(``drift_resolved``) when every test of ``resolve_window`` has a p-value above
``leave_p`` for ``resolve_patience`` checks in a row. Until the shortest dependence
scale has ``dependence_min_batches`` batches the monitor is *warming up*: no test runs.

:meth:`DriftMonitor.update` (one row) and :meth:`DriftMonitor.update_batch` (vectorised)
give identical events.

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
[(5099, 'data_drift', ('x',))]
>>> ev = events[0].evidence[0]
>>> ev["window"], ev["effect_size"] > ev["effect_threshold"], ev["design_effect"] < 2
(500, True, True)
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
from scipy import special, stats

from stream.monitoring import drift_stats as ds
from stream.monitoring.calibration import Calibration, DriftSettings, calibrate
from stream.monitoring.cusum import Cusum, alarm_level
from stream.monitoring.dependence import DependenceTracker, SeasonalProfile, _group_sums
from stream.monitoring.drift_view import snapshot, summary
from stream.monitoring.profile import CORRELATION_METHOD, ReferenceProfile, is_missing, reference_arrays

__all__ = ["DriftEvent", "DriftMonitor", "DriftSettings"]

MULTIVARIATE = "__multivariate__"
DAY_S, HOUR_S = 86_400.0, 3_600.0


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


def _chi2_equivalent(x2: np.ndarray, dof: np.ndarray, df: np.ndarray) -> np.ndarray:
    """A studentised chi-square with ``df`` effective rows behind its variances, as the chi-square
    value of the same p-value: ``X2 / dof`` is referred to F(dof, df)."""
    dof = np.maximum(dof, 1)
    with np.errstate(all="ignore"):
        p = special.fdtrc(dof, df, x2 / dof)
        return np.where(p < 1.0, special.chdtri(dof, np.maximum(p, 1e-300)), 0.0)


def _cell_df(neff: np.ndarray, present: np.ndarray, p: np.ndarray, design: np.ndarray, used: np.ndarray) -> np.ndarray:
    """Degrees of freedom behind a chi-square: the effective rows, but at most twice the smallest
    bin's effective expected count (a bin filled by two bursts is far from normal)."""
    cell = np.where(used & (p > 0), present[..., None] * p / np.maximum(design, 1.0), np.inf).min(axis=-1)
    return np.minimum(neff, 2.0 * cell)


def _z_equivalent(t: np.ndarray, df: np.ndarray) -> np.ndarray:
    """|t| with ``df`` effective rows as the |z| of the same two-sided p-value."""
    with np.errstate(all="ignore"):
        z = -special.ndtri(special.stdtr(np.clip(df, 1.0, 1e7), -np.abs(t)))
    return np.where(z == z, np.minimum(z, 1e308), 0.0)


def _pick(st: dict[str, Any], i: int) -> dict[str, Any]:
    """Check point ``i`` of statistics computed for several check points at once."""
    out: dict[str, Any] = {}
    for key, v in st.items():
        if isinstance(v, dict):
            out[key] = _pick(v, i)
        else:
            out[key] = None if v is None else v[i]
    return out


def _f(x: Any) -> float:
    v = float(x)
    return v if math.isfinite(v) else (1e308 if v > 0 else -1e308)


class DriftMonitor:
    """Dependence-aware multi-window drift monitor over a :class:`ReferenceProfile` (see module docstring).

    Attributes
    ----------
    rows_seen
        Rows passed to :meth:`update` / :meth:`update_batch` so far.
    calibration
        The per-test levels and critical values in use.
    """

    def __init__(self, profile: ReferenceProfile, settings: DriftSettings | None = None, *,
                 model_name: str | None = None, model_version: str | None = None) -> None:
        self.profile = profile
        self.settings = s = settings or DriftSettings()
        s.validate()
        self.model_name, self.model_version = model_name, model_version
        self.rows_seen = 0
        self._num, self._cat = profile.numeric_names, profile.categorical_names
        self._names = self._num + self._cat
        fn, fc = len(self._num), len(self._cat)
        self._mv = s.multivariate and fn >= 2 and profile.correlation_method == CORRELATION_METHOD
        ref = self.ref = reference_arrays(profile)
        self._edges, self._k, self._kc = ref.edges, ref.k, ref.kc
        k, kc, b = ref.k, ref.kc, s.block_size
        self._scores = ref.num_scores
        self._cat_maps, self._cat_other = ref.cat_codes, ref.cat_other
        self._pairs = np.triu_indices(fn, 1) if self._mv else (np.zeros(0, int), np.zeros(0, int))
        self._rho = ref.corr if self._mv else np.zeros((fn, fn))
        self._wblocks = [w // b for w in s.windows]
        self._sblocks = [st // b for st in s.steps()]
        self._resolve_w = s.windows.index(s.resolve_window)
        # with the CUSUM on, windows and CUSUM each get half of the false-alarm budget
        erl = s.expected_run_length * (2 if s.cusum else 1)
        self.calibration: Calibration = calibrate(
            profile, windows=s.windows, steps=s.steps(), expected_run_length=erl,
            multivariate=self._mv, max_dof=max(k, kc + 1))
        self._init_reference(fn, fc, k, kc)
        self._init_cusum(erl)
        # running totals and a ring of their past values: any window's sums in O(1)
        self._ring_len = r = self._wblocks[-1] + s.refresh_blocks + 1
        self._tot = {"num": np.zeros((fn, k + 1), np.int64), "sum": np.zeros((fn, k)), "sq": np.zeros(fn),
                     "cat": np.zeros((fc, kc + 1), np.int64), "hours": np.zeros(24)}
        if self._mv:
            self._tot["corr"] = np.zeros((4, fn, fn))
        self._ring = {key: np.zeros((r,) + v.shape, v.dtype) for key, v in self._tot.items()}
        self._ring_num = self._ring["num"]
        self._blocks = 0
        n_ch = self._theta.size
        self.tracker = DependenceTracker(n_ch, b, s.dependence_scales, s.dependence_history,
                                         s.dependence_min_batches, s.dependence_confidence)
        self.seasonal = SeasonalProfile(n_ch, s.seasonal_min_rows, s.seasonal_memory_rows, s.seasonal_alpha) \
            if s.seasonal else None
        self._ready = self._cusum_ready = False
        self._season_dev: np.ndarray | None = None
        self._season_var: np.ndarray | None = None
        self._lr = self._g0.copy()
        self._slow = np.zeros(n_ch)
        all_names = self._names + [MULTIVARIATE]
        self._reset_at = dict.fromkeys(all_names, 0)
        self._open = dict.fromkeys(all_names, False)
        self._open_arr = np.zeros(len(all_names), dtype=bool)
        self._calm = dict.fromkeys(all_names, 0)
        self._last: dict[int, dict[str, Any]] = {}
        self._open_features: dict[str, list[str]] = {}
        self._effects = {"num": {"wasserstein": s.wasserstein_threshold, "psi": s.psi_threshold},
                         "cat": {"jensen_shannon": s.js_threshold}}
        self._buf_num = np.empty((b, fn))
        self._buf_cat = np.empty((b, fc), dtype=np.int64)
        self._buf_ts = np.full(b, np.nan)
        self._buf_len = 0
        self._score_j = self._num.index(s.score_feature) if s.score_feature in self._num else -1
        self._detector: Any = None
        if s.score_detector and self._score_j >= 0:
            from river import drift as rdrift

            self._detector = rdrift.PageHinkley() if s.score_detector == "page_hinkley" else rdrift.ADWIN()

    def _init_reference(self, fn: int, fc: int, k: int, kc: int) -> None:
        """Reference mean ``theta``, per-row variance ``g0`` and size ``m`` of every score channel."""
        ref = self.ref
        self._ref_num = np.concatenate([ref.num_counts, ref.num_missing[:, None]], axis=1)
        self._ref_cat = np.concatenate([ref.cat_counts, ref.cat_missing[:, None]], axis=1)
        p = ref.num_counts / np.maximum(ref.num_counts.sum(axis=1, keepdims=True), 1.0)
        self._uref = np.cumsum(p, axis=1) - p / 2
        theta, m = ds.channel_means(self._ref_num[None].astype(float), self._ref_cat[None].astype(float), None,
                                    self._uref, self._rho, self._pairs)
        theta, m = np.nan_to_num(theta[0]), m[0].copy()
        npairs = self._pairs[0].size
        sizes = [fn * k, fn * (k - 1), fn, fn, fc * kc, fc, npairs]
        edges = np.cumsum([0] + sizes)
        self._sl = {key: slice(int(a), int(z)) for key, a, z in
                    zip(("props", "cum", "u", "miss", "cprops", "cmiss", "psi"), edges[:-1], edges[1:], strict=True)}
        owner = np.concatenate([np.repeat(np.arange(fn), k), np.repeat(np.arange(fn), k - 1), np.arange(fn),
                                np.arange(fn), fn + np.repeat(np.arange(fc), kc), fn + np.arange(fc),
                                np.full(npairs, fn + fc)])
        self._owner = owner.astype(np.int64)
        m[self._sl["psi"]] = ref.corr_n[self._pairs] if npairs else m[self._sl["psi"]]
        self._m = np.maximum(m, 1.0)
        floor = 0.5 / self._m  # a share never seen in the reference: as if half a row had it
        pp = np.clip(theta, floor, 1 - floor)
        g0 = pp * (1 - pp)
        ju = self._sl["u"]
        # a constant reference feature has no spread: floor it as a share seen in half a row
        g0[ju] = np.maximum((p * (self._uref - 0.5) ** 2).sum(axis=1), 0.25 / self._m[ju])
        if npairs:
            g0[self._sl["psi"]] = (1 - self._rho[self._pairs] ** 2) ** 2
        theta[self._sl["psi"]] = 0.0
        self._theta, self._g0 = theta, np.maximum(g0, 1e-9)  # a perfect reference correlation has no spread

    def _init_cusum(self, erl: float) -> None:
        """CUSUM channels: each numeric feature's mid-rank (location), each category's share, missing rates."""
        s, sl = self.settings, self._sl
        mask = np.zeros(self._theta.size, dtype=bool)
        for key in ("u", "miss", "cprops", "cmiss"):
            mask[sl[key]] = True
        mask &= self._theta > 0  # shares the reference never saw are the window tests' job
        self._cus_mask = mask
        rows = s.cusum_blocks * s.block_size
        arl = erl * max(2 * int(mask.sum()), 1) / rows  # per channel and side, in batches
        self._cusum = Cusum(self._theta.size, s.cusum_k, alarm_level(arl, s.cusum_k)) if s.cusum else None
        self._cus_sum, self._cus_w = np.zeros(self._theta.size), np.zeros(self._theta.size)
        self._cus_hours, self._cus_nblk = np.zeros(24), 0

    # ---------------------------------------------------------------- ingestion
    def _code(self, j: int, v: Any) -> int:
        if is_missing(v):
            return self._kc
        key = v if isinstance(v, str) else str(v)
        return self._cat_maps[j].get(key, self._cat_other[j])

    def update(self, row: Mapping[str, float | int | str | None], ts: float | None = None) -> list[DriftEvent]:
        """Add one row (``ts``: its event time in seconds, for the daily profile); return the events that fired."""
        i = self._buf_len
        for j, name in enumerate(self._num):
            v = row.get(name)
            self._buf_num[i, j] = np.nan if v is None else float(v)
        for j, name in enumerate(self._cat):
            self._buf_cat[i, j] = self._code(j, row.get(name))
        self._buf_ts[i] = np.nan if ts is None else float(ts)
        self._buf_len += 1
        self.rows_seen += 1
        if self._buf_len < self.settings.block_size:
            return []
        self._buf_len = 0
        return self._process(self._buf_num, self._buf_cat, self._buf_ts, self.rows_seen - self.settings.block_size)

    def update_batch(self, columns: Mapping[str, np.ndarray | list[Any]], ts: np.ndarray | None = None) -> list[DriftEvent]:
        """Add many rows given as columns (``ts``: event times in seconds); same events as :meth:`update`."""
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
        t = np.full(n, np.nan) if ts is None else np.asarray(ts, dtype=float)
        return self._ingest(num, cat, t)

    def _ingest(self, num: np.ndarray, cat: np.ndarray, ts: np.ndarray) -> list[DriftEvent]:
        b, n, pos, events = self.settings.block_size, num.shape[0], 0, []
        if self._buf_len:
            take = min(b - self._buf_len, n)
            sl = slice(self._buf_len, self._buf_len + take)
            self._buf_num[sl], self._buf_cat[sl], self._buf_ts[sl] = num[:take], cat[:take], ts[:take]
            self._buf_len += take
            pos = take
            if self._buf_len == b:
                self._buf_len = 0
                events += self._process(self._buf_num, self._buf_cat, self._buf_ts, self.rows_seen + pos - b)
        full = (n - pos) // b * b
        if full:
            sl = slice(pos, pos + full)
            events += self._process(num[sl], cat[sl], ts[sl], self.rows_seen + pos)
            pos += full
        rest = n - pos
        if rest:
            self._buf_num[:rest], self._buf_cat[:rest], self._buf_ts[:rest] = num[pos:], cat[pos:], ts[pos:]
            self._buf_len = rest
        self.rows_seen += n
        return events

    def _process(self, num: np.ndarray, cat: np.ndarray, ts: np.ndarray, start: int) -> list[DriftEvent]:
        """Reduce whole blocks to sufficient statistics, learn the stream's structure, run the due checks."""
        b, k, kc = self.settings.block_size, self._k, self._kc
        nb, fn, fc = num.shape[0] // b, len(self._num), len(self._cat)
        blk = np.repeat(np.arange(nb), b)
        missing = np.isnan(num)
        bins = np.empty(num.shape, dtype=np.int64)
        for j in range(fn):
            bins[:, j] = np.searchsorted(self._edges[j], num[:, j], side="right")
        bins[missing] = k
        idx = ((blk[:, None] * fn + np.arange(fn)) * (k + 1) + bins).ravel()
        counts = np.bincount(idx, minlength=nb * fn * (k + 1)).reshape(nb, fn, k + 1)
        val = np.where(missing, 0.0, num)
        sums = np.bincount(idx, weights=val.ravel(), minlength=nb * fn * (k + 1)).reshape(nb, fn, k + 1)[:, :, :k]
        sq = (val * val).reshape(nb, b, fn).sum(axis=1)
        cidx = ((blk[:, None] * fc + np.arange(fc)) * (kc + 1) + cat).ravel()
        ccounts = np.bincount(cidx, minlength=nb * fc * (kc + 1)).reshape(nb, fc, kc + 1)
        corr = None
        if self._mv:  # normal scores of the bins, as the profile's correlation (0 where missing)
            z = np.where(missing, 0.0, self._scores[np.arange(fn), np.where(missing, 0, bins)]).reshape(nb, b, fn)
            pr = (~missing).astype(float).reshape(nb, b, fn)
            zz, pp = z[:, :, :, None], pr[:, :, None, :]  # broadcast sums: tiny products, no BLAS threads
            corr = np.stack([(pr[:, :, :, None] * pp).sum(axis=1), (zz * pp).sum(axis=1),
                             (zz * zz * pp).sum(axis=1), (zz * z[:, :, None, :]).sum(axis=1)], axis=1)
        means, weights = ds.channel_means(counts, ccounts, corr, self._uref, self._rho, self._pairs)
        mid = ts[b // 2 :: b][:nb]
        hours = np.where(np.isnan(mid), -1, (np.nan_to_num(mid) % DAY_S) // HOUR_S).astype(np.int64)
        hour_hot = np.zeros((nb, 24))
        hour_hot[np.flatnonzero(hours >= 0), hours[hours >= 0]] = b
        per_block = {"num": counts, "sum": sums, "sq": sq, "cat": ccounts, "hours": hour_hot}
        if corr is not None:
            per_block["corr"] = corr
        events: list[DriftEvent] = []
        i = 0
        while i < nb:  # segments end where the estimates are refreshed, so any batching gives the same events
            refresh = self._refresh_period()
            seg = min(nb - i, refresh - self._blocks % refresh)
            events += self._segment(i, seg, per_block, means, weights, hours, num, start)
            i += seg
        return events

    def _segment(self, i0: int, seg: int, per_block: dict[str, np.ndarray], means: np.ndarray, weights: np.ndarray,
                 hours: np.ndarray, num: np.ndarray, start: int) -> list[DriftEvent]:
        """Blocks ``i0 .. i0+seg`` of a batch: totals, vectorised tests at every check point, then
        the state machine block by block."""
        b, c0 = self.settings.block_size, self._blocks
        slots = (c0 + 1 + np.arange(seg)) % self._ring_len
        for key, arr in per_block.items():
            # cumsum from the running total: the same additions in the same order however rows are batched
            cum = np.cumsum(np.concatenate([self._tot[key][None], arr[i0 : i0 + seg]]), axis=0)[1:]
            self._ring[key][slots] = cum
            self._tot[key] = cum[-1].copy()
        pre: dict[int, tuple[list[int], dict[str, Any], np.ndarray]] = {}
        if self._ready:
            for w, (nbk, step) in enumerate(zip(self._wblocks, self._sblocks, strict=True)):
                at = [c for c in range(c0 + 1, c0 + seg + 1) if c % step == 0 and c >= nbk]
                if at:
                    st = self._test_window(w, np.array(at))
                    pre[w] = (at, st, self._any_significant(w, st))
        cus = self._cusum_segment(i0, seg, means, weights, hours) if self._cusum is not None else {}
        events: list[DriftEvent] = []
        frozen = np.empty((seg, self._owner.size), dtype=bool)
        for j in range(seg):
            i = i0 + j
            frozen[j] = self._open_arr[self._owner]  # the state each block is learned under
            self._blocks += 1
            if self._detector is not None:
                events += self._run_detector(num[i * b : (i + 1) * b, self._score_j], start + i * b)
            fired: dict[str, list[dict[str, Any]]] = {}
            watching = self._open_arr.any()
            for w, (at, st, sig) in pre.items():
                if self._blocks in at:
                    pos = at.index(self._blocks)
                    if sig[pos] or watching:  # the state machine needs this check point's statistics
                        self._last[w] = _pick(st, pos)
                        self._fire(w, self._last[w], fired)
            if self._blocks in cus:
                self._cusum_step(*cus[self._blocks], fired)
            events += self._transition(start + (i + 1) * b - 1, fired)
        for w, (at, st, _) in pre.items():  # the latest statistics, for snapshots
            self._last[w] = _pick(st, len(at) - 1)
        # the stream's structure is learned once per segment (estimates are only read at refreshes)
        sl = slice(i0, i0 + seg)
        if self.seasonal is not None:
            self.seasonal.add_many(hours[sl], means[sl], weights[sl], frozen)
        self.tracker.add_many(means[sl], weights[sl], frozen, hours[sl])
        if self._blocks % self._refresh_period() == 0:
            self._estimates()
        return events

    def _refresh_period(self) -> int:
        """Blocks between estimate refreshes: short while warming up, so tests start as soon as they can."""
        s = self.settings
        return s.refresh_blocks if self._ready else min(s.refresh_blocks, 2 * s.dependence_scales[0])

    def _cusum_segment(self, i0: int, seg: int, means: np.ndarray, weights: np.ndarray,
                       hours: np.ndarray) -> dict[int, tuple[np.ndarray, ...]]:
        """Sums of the batches of ``cusum_blocks`` blocks completed in this segment, by the block
        count that completes them (the open batch carries over)."""
        cb, sl, c0 = self.settings.cusum_blocks, slice(i0, i0 + seg), self._blocks
        w = weights[sl]
        contrib = np.where(w > 0, np.nan_to_num(means[sl]) * w, 0.0)
        hot = np.zeros((seg, 24))
        known = np.flatnonzero(hours[sl] >= 0)
        hot[known, hours[sl][known]] = self.settings.block_size
        pos = self._cus_nblk + np.arange(seg)
        bid = pos // cb
        starts = np.flatnonzero(np.r_[True, bid[1:] != bid[:-1]])
        sums, ws = _group_sums(contrib, starts, self._cus_sum), _group_sums(w, starts, self._cus_w)
        hrs = _group_sums(hot, starts, self._cus_hours)
        last_block = np.r_[starts[1:], seg] - 1
        complete = pos[last_block] % cb == cb - 1
        out: dict[int, tuple[np.ndarray, ...]] = {}
        for g in np.flatnonzero(complete):  # the CUSUM steps themselves run in block order (they see the state)
            out[c0 + int(last_block[g]) + 1] = (sums[g], ws[g], hrs[g])
        tail = len(starts) - 1
        if complete[tail]:
            self._cus_sum, self._cus_w, self._cus_hours, self._cus_nblk = 0.0 * sums[0], 0.0 * ws[0], 0.0 * hrs[0], 0
        else:
            self._cus_sum, self._cus_w, self._cus_hours = sums[tail], ws[tail], hrs[tail]
            self._cus_nblk = int(pos[last_block[tail]] % cb) + 1
        return out

    def _cusum_step(self, sums: np.ndarray, ws: np.ndarray, hrs: np.ndarray,
                    fired: dict[str, list[dict[str, Any]]]) -> None:
        """One CUSUM batch, standardised with the current estimates (features in drift sit out).
        It starts once every dependence scale has its batches: a CUSUM sums small biases, so an
        underestimated variance during the warm-up would add up to an alarm."""
        if not self._cusum_ready:
            return
        ok = ws > 0
        m = np.where(ok, sums / np.where(ok, ws, 1.0), self._theta)
        adj = noise = 0.0
        if self._season_dev is not None and hrs.any():
            share = hrs / hrs.sum()
            adj = np.einsum("h,hc->c", share, self._season_dev)
            noise = np.einsum("h,hc->c", share * share, self._season_var)
        dev = m - adj - self._theta
        var = self._lr / np.where(ok, ws, 1.0) + self._g0 / self._m + self._slow + noise
        c = self.settings.cusum_clip  # one burst moves the statistic by a bounded step
        z = np.clip(dev / np.sqrt(var), -c, c)
        cus = self._cusum
        hit = cus.step(z, dev / np.sqrt(self._g0), self._cus_mask & ~self._open_arr[self._owner] & ok)  # type: ignore[union-attr]
        if hit.any():
            self._fire_cusum(hit, cus.statistic(), cus.mean_shift(), cus.run, fired)  # type: ignore[union-attr]

    def _fire_cusum(self, hit: np.ndarray, stat: np.ndarray, shift: np.ndarray, run: np.ndarray,
                    fired: dict[str, list[dict[str, Any]]]) -> None:
        """CUSUM alarms of features not in drift whose run's mean shift passes ``cusum_min_shift``."""
        s, names = self.settings, self._names
        for ch in np.flatnonzero(hit & (shift >= s.cusum_min_shift)):
            name = names[self._owner[ch]]
            if self._open[name] or self._blocks - self._reset_at[name] < self._wblocks[0]:
                continue
            fired.setdefault(name, []).append({
                "feature": name, "test": "cusum", "statistic": _f(stat[ch]), "threshold": _f(self._cusum.h),  # type: ignore[union-attr]
                "p_value": None, "effect_metric": "mean_shift_sd", "effect_size": _f(shift[ch]),
                "effect_threshold": s.cusum_min_shift, "window": int(run[ch]) * s.cusum_blocks * s.block_size,
                "n": int(run[ch]) * s.cusum_blocks * s.block_size, "reference": "profile",
                "n_reference": int(self._m[ch]), "design_effect": _f(self._lr[ch] / self._g0[ch]),
                "score": self._channel_name(ch)})

    def _channel_name(self, ch: int) -> str:
        for key, part in self._sl.items():
            if part.start <= ch < part.stop:
                if key == "cprops":
                    j, slot = divmod(ch - part.start, self._kc)
                    cats = self.profile.categorical[self._cat[j]].categories
                    return f"share:{cats[slot]}" if slot < len(cats) else "share:__other__"
                return {"u": "location", "miss": "missing", "cmiss": "missing"}.get(key, key)
        return "?"

    def _any_significant(self, w: int, st: dict[str, Any]) -> np.ndarray:
        """Per check point: does any test pass its critical value (before effect gates and state)?"""
        cal, fn = self.calibration, len(self._num)
        hit = np.zeros(len(next(iter(st["sums"].values()))), dtype=bool)
        if st["num"]:
            g = st["num"]
            hit |= (g["ks"] > cal.ks_crit[w]).any(axis=-1) | (g["mannwhitney"] > cal.z_crit[w, :fn]).any(axis=-1)
            hit |= (g["missing"] > cal.z_crit[w, :fn]).any(axis=-1)
            hit |= (g["chi2"] > cal.chi2_crit[w, np.arange(fn), g["dof"]]).any(axis=-1)
        if st["cat"]:
            g, fc = st["cat"], len(self._cat)
            hit |= (g["missing"] > cal.z_crit[w, fn:]).any(axis=-1)
            hit |= (g["chi2"] > cal.chi2_crit[w, fn + np.arange(fc), g["dof"]]).any(axis=-1)
        if st["mv"]:
            hit |= (st["mv"]["correlation"] > cal.corr_crit[w]).any(axis=-1)
        return hit

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

    # ---------------------------------------------------------------- tests
    @property
    def warming_up(self) -> bool:
        """True until the stream's dependence can be estimated (no test runs before)."""
        return not self.tracker.ready()

    def _estimates(self) -> None:
        """Refresh the dependence, slow and seasonal estimates (every ``refresh_blocks`` blocks)."""
        self._ready = self.tracker.ready()
        self._cusum_ready = self.tracker.ready(all_scales=True)
        if self.seasonal is not None:  # the daily profile, judged on short-range noise (blind to the cycle)
            dev, use = self.seasonal.centred(self.tracker.short_range(self._g0))
            self.tracker.set_seasonal(dev if use.any() else None)
        self._lr, self._slow = self.tracker.estimate(self._theta, self._g0, self._m)
        self._slow[self._sl["psi"]] = 0.0  # the reference holds no psi level
        self._coherent_slow()
        if self.seasonal is not None:
            self._season_dev, self._season_var = self.seasonal.centred_with_noise(self._lr)

    def _coherent_slow(self) -> None:
        """A slow movement moves all bins of a feature together: give every score of a feature the same
        slow variance relative to its own variance (the larger of the mid-rank's and the bins' mean)."""
        sl, fn, fc, k, kc = self._sl, len(self._num), len(self._cat), self._k, self._kc
        rel = np.where(self._g0 > 0, self._slow / self._g0, 0.0)
        if fn:
            used = (self._theta[sl["props"]] > 0).reshape(fn, k)
            bins = np.where(used, rel[sl["props"]].reshape(fn, k), 0.0).sum(axis=1) / np.maximum(used.sum(axis=1), 1)
            r = np.maximum(rel[sl["u"]], bins)
            for key, size in (("props", k), ("cum", k - 1)):
                self._slow[sl[key]] = (np.repeat(r, size) * self._g0[sl[key]])
            self._slow[sl["u"]] = r * self._g0[sl["u"]]
        if fc:
            used = (self._theta[sl["cprops"]] > 0).reshape(fc, kc)
            r = np.where(used, rel[sl["cprops"]].reshape(fc, kc), 0.0).sum(axis=1) / np.maximum(used.sum(axis=1), 1)
            self._slow[sl["cprops"]] = np.repeat(r, kc) * self._g0[sl["cprops"]]

    def window_sums(self, nblocks: int, at: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Sufficient statistics of the ``nblocks`` blocks ending at block count ``at`` (an array of
        counts: a leading axis; default: now), with their hour-of-day row histogram."""
        end = np.asarray(self._blocks if at is None else at)
        now, past = end % self._ring_len, (end - nblocks) % self._ring_len
        return {key: ring[now] - ring[past] for key, ring in self._ring.items()}

    def _test_window(self, w: int, at: np.ndarray) -> dict[str, Any]:
        """Studentised statistics of window ``w`` against the reference at block counts ``at``
        (leading axis), per feature and test."""
        win = self.window_sums(self._wblocks[w], at)
        means, weights = ds.channel_means(win["num"], win["cat"], win["corr"] if self._mv else None,
                                          self._uref, self._rho, self._pairs)
        adj = noise = 0.0
        if self._season_dev is not None:
            share = win["hours"] / np.maximum(win["hours"].sum(axis=-1, keepdims=True), 1.0)
            # einsum, not BLAS: tiny products, and BLAS threads stall on a busy machine
            adj = np.einsum("lh,hc->lc", share, self._season_dev)
            noise = np.einsum("lh,hc->lc", share * share, self._season_var)
        delta = np.nan_to_num(means - adj - self._theta)
        sl, fn, fc, k, kc, L = self._sl, len(self._num), len(self._cat), self._k, self._kc, len(at)
        r = None
        if self._mv:
            r = ds.correlation_from_sums(win["corr"][:, 0], win["corr"][:, 1], win["corr"][:, 2], win["corr"][:, 3])
            delta[:, sl["psi"]] = r[:, self._pairs[0], self._pairs[1]] - self._rho[self._pairs]
        n = np.maximum(weights, 1e-12)
        design = self._lr / self._g0
        extra = self._slow + noise  # [L, C] or [C]
        var = self._lr / n + self._g0 / self._m + extra
        out: dict[str, Any] = {"sums": win, "r": r, "num": {}, "cat": {}, "mv": {}}
        min_eff = self.settings.min_effective_rows

        def z(key: str, df: np.ndarray) -> np.ndarray:
            return np.where(df < min_eff, 0.0, _z_equivalent(delta[:, sl[key]] / np.sqrt(var[:, sl[key]]), df))

        if fn:
            p = self._theta[sl["props"]].reshape(fn, k)
            counts = win["num"][:, :, :k]
            present = counts.sum(axis=-1)
            used = (p > 0) | (counts > 0)
            dp, dc = design[sl["props"]].reshape(fn, k), design[sl["cum"]].reshape(fn, k - 1)
            # the feature's design effect: its location score's, or the bins' median if larger (a max over
            # 20 noisy per-bin estimates would make every short window look thin)
            d_feat = np.maximum(design[sl["u"]], np.median(dp, axis=-1))
            neff = present / d_feat
            x2 = self._rao_scott(delta[:, sl["props"]].reshape(L, fn, k), p, dp, used, present, sl["props"], noise)
            # KS as Weiss (1978): the unweighted largest cumulative difference, rows scaled by the
            # cumulative indicators' (variance-weighted) design effect; unweighted, so the tails do
            # not weigh more (a burst of one entity lands in them)
            dcum = delta[:, sl["cum"]].reshape(L, fn, k - 1)
            slow_c = np.broadcast_to(extra, (L, extra.shape[-1]))[:, sl["cum"]].reshape(L, fn, k - 1)
            g0c = self._g0[sl["cum"]].reshape(fn, k - 1)
            d_ks = np.maximum((g0c * dc).sum(axis=-1) / np.maximum(g0c.sum(axis=-1), 1e-12), 1.0)
            den = np.sqrt(d_ks[:, None] / np.maximum(present, 1.0)[..., None]
                          + 1.0 / self._m[sl["cum"]].reshape(fn, k - 1) + 4.0 * slow_c)
            ks = (np.abs(dcum) / den).max(axis=-1, initial=0.0)
            thin = (neff < min_eff) | (present == 0)
            out["num"] = {"thin": thin, "ks": np.where(thin, 0.0, ks), "mannwhitney": np.where(thin, 0.0, z("u", neff)),
                          "chi2": np.where(thin, 0.0, _chi2_equivalent(x2, used.sum(axis=-1) - 1,
                                                                        _cell_df(neff, present, p, dp, used))),
                          "dof": np.maximum(used.sum(axis=-1) - 1, 0),
                          "missing": z("miss", weights[:, sl["miss"]] / design[sl["miss"]]),
                          "n": present, "n_rows": present + win["num"][:, :, k], "design_effect": np.broadcast_to(d_feat, (L, fn)),
                          "slow_sd": np.broadcast_to(np.sqrt(self._slow[sl["u"]] / self._g0[sl["u"]]), (L, fn))}
        if fc:
            p = self._theta[sl["cprops"]].reshape(fc, kc)
            counts = win["cat"][:, :, :kc]
            present = counts.sum(axis=-1)
            used = (p > 0) | (counts > 0)
            dp = design[sl["cprops"]].reshape(fc, kc)
            gp = np.where(used, self._g0[sl["cprops"]].reshape(fc, kc), 0.0)
            d_feat = np.maximum((gp * dp).sum(axis=-1) / np.maximum(gp.sum(axis=-1), 1e-12), 1.0)
            neff = present / d_feat
            x2 = self._rao_scott(delta[:, sl["cprops"]].reshape(L, fc, kc), p, dp, used, present, sl["cprops"], noise)
            thin = (neff < min_eff) | (present == 0)
            slow_rel = (self._slow[sl["cprops"]].reshape(fc, kc) * p).sum(axis=-1) / np.maximum(
                (self._g0[sl["cprops"]].reshape(fc, kc) * p).sum(axis=-1), 1e-12)
            chi2 = _chi2_equivalent(x2, used.sum(axis=-1) - 1, _cell_df(neff, present, p, dp, used))
            out["cat"] = {"thin": thin, "chi2": np.where(thin, 0.0, chi2),
                          "dof": np.maximum(used.sum(axis=-1) - 1, 0),
                          "missing": z("cmiss", weights[:, sl["cmiss"]] / design[sl["cmiss"]]), "n": present,
                          "n_rows": present + win["cat"][:, :, kc], "design_effect": np.broadcast_to(d_feat, (L, fc)),
                          "slow_sd": np.broadcast_to(np.sqrt(slow_rel), (L, fc))}
        if self._mv:
            out["mv"] = {"correlation": z("psi", weights[:, sl["psi"]] / design[sl["psi"]]),
                         "correlation_change": np.abs(delta[:, sl["psi"]]),
                         "design_effect": np.broadcast_to(design[sl["psi"]], (L, sl["psi"].stop - sl["psi"].start)),
                         "n": weights[:, sl["psi"]]}
        return out

    def _rao_scott(self, delta: np.ndarray, p: np.ndarray, design: np.ndarray, used: np.ndarray,
                   present: np.ndarray, sl: slice, noise: Any) -> np.ndarray:
        """Pearson chi-square of the bin (category) shares with each share's variance from its own
        design effect, at least the variance-weighted mean design effect of the feature (first-order
        Rao-Scott; a rare bin's few clusters do not make it count more). Leading axis: check points."""
        g0 = self._g0[sl].reshape(p.shape)
        w = np.where(used, g0, 0.0)
        mean_d = (w * design).sum(axis=-1) / np.maximum(w.sum(axis=-1), 1e-12)
        d = np.maximum(design, mean_d[..., None])
        extra = (self._slow[sl] + (noise[:, sl] if np.ndim(noise) else 0.0)).reshape((-1,) + p.shape)
        var = g0 * (d / np.maximum(present, 1.0)[..., None] + 1.0 / self._m[sl].reshape(p.shape)) + extra
        return np.where(used, delta**2 / var * (1 - p).clip(0.5), 0.0).sum(axis=-1)

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
            win, k, kc = last["sums"], self._k, self._kc
            if group == "num":
                c = win["num"][:, :k].astype(float)
                bm = np.where(c > 0, win["sum"] / np.maximum(c, 1.0), self.ref.num_bin_means)
                e = {"psi": ds.psi(self.ref.num_counts, c),
                     "wasserstein": ds.binned_wasserstein(self.ref.num_bin_means, self.ref.num_counts, bm, c) / self.ref.std}
                miss = ds.missing_stats(win["num"][:, k], c.sum(axis=1), self.ref.num_missing, self.ref.num_counts.sum(axis=1))
            elif group == "cat":
                c = win["cat"][:, :kc].astype(float)
                e = {"jensen_shannon": ds.js_distance(self.ref.cat_counts, c), "psi": ds.psi(self.ref.cat_counts, c)}
                miss = ds.missing_stats(win["cat"][:, kc], c.sum(axis=1), self.ref.cat_missing, self.ref.cat_counts.sum(axis=1))
            else:
                return {"correlation_change": last["mv"]["correlation_change"]}
            e["missing_change"] = miss["missing_change"]
            last[group]["effects"] = e
        return last[group]["effects"]

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

    def _groups(self) -> list[tuple[str, list[str], int]]:
        out = [("num", self._num, 0), ("cat", self._cat, len(self._num))]
        return out + ([("mv", [f"{self._num[i]}|{self._num[j]}" for i, j in zip(*self._pairs, strict=True)], -1)]
                      if self._mv else [])

    def _fire(self, w: int, last: dict[str, Any], fired: dict[str, list[dict[str, Any]]]) -> None:
        for group, names, off in self._groups():
            st = last[group]
            if not names or not st:
                continue
            crit = self.crit(w, group, st)
            owners = [MULTIVARIATE] * len(names) if group == "mv" else names
            valid = np.array([self._blocks - self._reset_at[o] >= self._wblocks[w] and not self._open[o] for o in owners])
            sig = {t: (st[t] > crit[t]) & valid for t in crit}
            if not any(m.any() for m in sig.values()):
                continue
            eff = self.effects(w, group)
            for t, m in sig.items():
                metric, thr = self.gate(group, t)
                for j in np.flatnonzero(m & (eff[metric] >= thr)):
                    fired.setdefault(owners[j], []).append(self._evidence(w, group, t, j, names[j], st, crit, eff))

    def _evidence(self, w: int, group: str, test: str, j: int, name: str, st: dict[str, Any],
                  crit: dict[str, np.ndarray], eff: dict[str, np.ndarray]) -> dict[str, Any]:
        metric, thr = self.gate(group, test)
        stat, c = float(st[test][j]), float(crit[test][j])
        n_key = "n_rows" if test == "missing" else "n"
        ev = {"feature": name, "test": test, "statistic": _f(stat), "threshold": _f(c),
              "alpha": self.calibration.alpha_pair[w] if group == "mv" else self.calibration.alpha_feature[name][w],
              "p_value": self.p_value(group, test, stat, st, j), "effect_metric": metric,
              "effect_size": _f(eff[metric][j]), "effect_threshold": thr, "window": self.settings.windows[w],
              "n": int(st[n_key][j]), "reference": "profile", "n_reference": int(self._n_reference(group, test, j)),
              "design_effect": _f(st["design_effect"][j])}
        if group == "mv":
            i1, i2 = self._pairs[0][j], self._pairs[1][j]
            ev.update(r=_f(self._last[w]["r"][i1, i2]), r_reference=_f(self._rho[i1, i2]))
        elif metric != "psi" and test != "missing":
            ev["psi"] = _f(eff["psi"][j])
        return ev

    def _n_reference(self, group: str, test: str, j: int) -> float:
        if group == "mv":
            return float(self.ref.corr_n[self._pairs[0][j], self._pairs[1][j]])
        counts, miss = (self.ref.num_counts, self.ref.num_missing) if group == "num" else (self.ref.cat_counts, self.ref.cat_missing)
        return float(counts[j].sum() + (miss[j] if test == "missing" else 0))

    def p_value(self, group: str, test: str, stat: float, st: dict[str, Any], j: int) -> float:
        """p-value of a studentised statistic (KS: Bonferroni over the bins' cumulative differences)."""
        if test == "chi2":
            return ds.chi2_pvalue(stat, int(st["dof"][j]))
        if test == "ks":
            return float(stats.kstwobign.sf(stat))
        return float(2.0 * special.ndtr(-abs(stat)))

    def _calm_window(self, name: str) -> int:
        """The window that decides whether ``name``'s drift is over: ``resolve_window``, or the
        shortest longer one with enough effectively independent rows."""
        group, j = self._locate(name)
        for w in range(self._resolve_w, len(self.settings.windows)):
            st = self._last.get(w, {}).get(group)
            if st and (group == "mv" or not st["thin"][j]):
                return w
        return len(self.settings.windows) - 1

    def _locate(self, name: str) -> tuple[str, int]:
        if name == MULTIVARIATE:
            return "mv", 0
        return ("num", self._num.index(name)) if name in self.profile.numeric else ("cat", self._cat.index(name))

    def _calm_now(self, name: str, w: int) -> bool:
        leave = self.settings.leave_p
        group, j = self._locate(name)
        st = self._last.get(w, {}).get(group)
        if not st:
            return False
        if group == "mv":
            return bool(np.all(2.0 * special.ndtr(-st["correlation"]) > leave))
        if st["thin"][j]:
            return False
        tests = ("ks", "mannwhitney", "chi2", "missing") if group == "num" else ("chi2", "missing")
        return all(self.p_value(group, t, float(st[t][j]), st, j) > leave for t in tests)

    def _transition(self, index: int, fired: dict[str, list[dict[str, Any]]]) -> list[DriftEvent]:
        opened: dict[str, list[str]] = {}
        evidence: dict[str, list[dict[str, Any]]] = {}
        all_names = self._names + [MULTIVARIATE]
        for name in all_names:
            if name in fired and not self._open[name]:
                self._set_open(name, True)
                kind = ("multivariate_drift" if name == MULTIVARIATE else
                        "score_drift" if name == self.settings.score_feature else "data_drift")
                feats = ([f for f in dict.fromkeys(p for e in fired[name] for p in e["feature"].split("|"))]
                         if name == MULTIVARIATE else [name])
                opened.setdefault(kind, []).extend(feats)
                self._open_features[name] = feats
                evidence.setdefault(kind, []).extend(fired[name])
        closed = []
        for name in all_names:
            if not self._open[name] or name in fired:
                continue
            rw = self._calm_window(name)
            if self._blocks % self._sblocks[rw] or self._blocks < self._wblocks[rw] or not self.tracker.ready():
                continue
            self._calm[name] = self._calm[name] + 1 if self._calm_now(name, rw) else 0
            if self._calm[name] >= self.settings.resolve_patience:
                self._set_open(name, False)
                self._reset_at[name] = self._blocks
                closed.append(name)
        events = [self._event(index, kind, tuple(opened[kind]), tuple(evidence[kind]))
                  for kind in ("data_drift", "score_drift", "multivariate_drift") if kind in opened]
        if closed and self.settings.emit_resolved:
            names = tuple(dict.fromkeys(f for n in closed for f in self._open_features.pop(n, [n])))
            events.append(self._event(index, "drift_resolved", names, ()))
        return events

    def _set_open(self, name: str, state: bool) -> None:
        self._open[name], self._calm[name] = state, 0
        j = (self._names + [MULTIVARIATE]).index(name)
        self._open_arr[j] = state
        if self._cusum is not None:  # its CUSUM starts afresh
            self._cusum.reset(self._owner == j)

    def _event(self, index: int, kind: str, feats: tuple[str, ...], ev: tuple[dict[str, Any], ...]) -> DriftEvent:
        return DriftEvent(index, kind, feats, ev, self.model_name, self.model_version)

    # ---------------------------------------------------------------- views
    def snapshot(self) -> dict[str, dict[str, Any]]:
        """Latest statistics per feature (and ``"multivariate"``), for Prometheus export; see
        :func:`stream.monitoring.drift_view.snapshot`."""
        return snapshot(self)

    def summary(self) -> dict[str, dict[str, Any]]:
        """Rolling summary statistics per feature, current window vs reference; see
        :func:`stream.monitoring.drift_view.summary`."""
        return summary(self)

    def state_size(self) -> int:
        """Number of array elements held (constant for a given profile and settings)."""
        arrays = [*self._ring.values(), *self._tot.values(), self._buf_num, self._buf_cat, self._buf_ts]
        return int(sum(a.size for a in arrays))
