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
(:class:`stream.monitoring.seasonal.SeasonalProfile`). Tests: studentised
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

The parts live in their own modules: score channels (:mod:`stream.monitoring.drift_channels`), window
tests (:mod:`stream.monitoring.drift_windows`), the per-feature state machine (:mod:`stream.monitoring.drift_states`),
the CUSUM and score detector (:mod:`stream.monitoring.drift_sequential`), row ingestion
(:mod:`stream.monitoring.drift_ingest`), what the monitor learns of the stream and which tests may run
(:mod:`stream.monitoring.drift_estimates`) and the event record (:mod:`stream.monitoring.drift_event`);
this module assembles them and runs a block's checks in order.

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
>>> ev["window"], ev["effect_size"] > ev["effect_threshold"], ev["design_effect"] < 2
(500, True, True)
>>> mon.snapshot()["x"]["drifting"], mon.rows_seen
(True, 10000)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from stream.monitoring import drift_stats as ds
from stream.monitoring.calibration import Calibration, DriftSettings, calibrate
from stream.monitoring.dependence import DependenceTracker
from stream.monitoring.drift_channels import reference_channels
from stream.monitoring.drift_estimates import StreamEstimates
from stream.monitoring.drift_event import MULTIVARIATE, DriftEvent
from stream.monitoring.drift_ingest import comoments
from stream.monitoring.drift_view import snapshot, summary
from stream.monitoring.drift_windows import Picked
from stream.monitoring.onset import Checkpoints
from stream.monitoring.profile import CORRELATION_METHOD, ReferenceProfile, reference_arrays
from stream.monitoring.profile_arrays import hourly_arrays
from stream.monitoring.seasonal import SeasonalProfile, hour_presence, within_hour

VALUE_REACH = 1e6  # reference sd from its mean: the farthest a value counts in the sums (see __init__)
MAX_VALUE = 1e100  # and in any case at most this far from 0
MAX_COUNTED_EDGES = 64  # binned by counting edges up to this many (by search beyond; see __init__)

__all__ = ["DriftEvent", "DriftMonitor", "DriftSettings"]

DAY_S, HOUR_S = 86_400.0, 3_600.0


def _hour_of_day(ts: np.ndarray) -> np.ndarray:
    """UTC hour of each event time (epoch seconds), -1 where unknown (NaN)."""
    h = ts % DAY_S
    h //= HOUR_S
    np.minimum(h, 23.0, out=h)  # a time a hair before midnight (-1e-13 % 86,400 is 86,400.0) is hour 23
    unknown = np.isnan(h)
    if unknown.any():
        h[unknown] = -1.0
    return h.astype(np.int64)


class DriftMonitor(StreamEstimates):
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
        # the edges side by side, NaN past a feature's own (no value is >= NaN): a value's bin is
        # the count of edges at or below it, which is searchsorted(side="right") to the bit and,
        # as one comparison per edge over every feature at once, ~40 % faster than a search per
        # feature at the default 20 bins (up to MAX_COUNTED_EDGES; searched beyond)
        self._edge_rows = np.full((max(ref.k - 1, 0), len(ref.edges)), np.nan)
        for j, e in enumerate(ref.edges):
            self._edge_rows[: e.size, j] = e
        # values go into running totals (a window's sums are differences of two): one absurd value
        # (1e300, or 1e20 on a feature of unit scale) would overflow them or cancel every later
        # window's digits for good, so the sums see values within a million reference sd of its
        # mean, and within 1e100 (squares stay finite whatever the reference holds)
        reach = VALUE_REACH * np.nan_to_num(ref.std, nan=1.0, posinf=MAX_VALUE)
        centre = np.nan_to_num(ref.mean, nan=0.0, posinf=MAX_VALUE, neginf=-MAX_VALUE)
        self._value_lo = np.clip(centre - reach, -MAX_VALUE, MAX_VALUE)
        self._value_hi = np.clip(centre + reach, -MAX_VALUE, MAX_VALUE)
        k, kc, b = ref.k, ref.kc, s.block_size
        # the bins' normal scores flat, a zero for the missing bin: a row's score in one take
        self._score_table = np.concatenate([ref.num_scores, np.zeros((len(ref.edges), 1))], axis=1).ravel()
        self._score_at = np.arange(len(ref.edges)) * (ref.k + 1)
        self._cat_maps, self._cat_other = ref.cat_codes, ref.cat_other
        self._pairs = np.triu_indices(fn, 1) if self._mv else (np.zeros(0, int), np.zeros(0, int))
        self._rho = ref.corr if self._mv else np.zeros((fn, fn))
        hourly = hourly_arrays(profile, k, kc) if s.seasonal else None
        # features that follow the day together: correlations within the hour, on both sides
        self._within = within_hour(hourly[0], ref.num_scores, self._rho, s.seasonal_alpha) \
            if self._mv and hourly is not None else None
        if self._within is not None:
            self._rho = self._within.rho
        self._wblocks = [w // b for w in s.windows]
        self._wblocks_arr = np.array(self._wblocks)
        self._sblocks = [st // b for st in s.steps()]
        self._resolve_w = s.windows.index(s.resolve_window)
        # the entity-balanced share test takes its part of the false-alarm budget (categorical
        # features only); with the CUSUM on, windows and CUSUM each get half of the rest
        e_share = s.entity_share_budget if fc and s.entity_max_rows else 0.0
        erl = s.expected_run_length / (1.0 - e_share) * (2 if s.cusum else 1)
        self.calibration: Calibration = calibrate(
            profile, windows=s.windows, steps=s.steps(), expected_run_length=erl,
            multivariate=self._mv, max_dof=max(k, kc + 1))
        ch = reference_channels(ref, fn, fc, self._rho, self._pairs)
        self._ref_num, self._ref_cat, self._uref, self._sl = ch.ref_num, ch.ref_cat, ch.uref, ch.sl
        self._owner, self._indicator, self._theta, self._g0, self._m = ch.owner, ch.indicator, ch.theta, ch.g0, ch.m
        self._init_cusum(erl)
        self._init_entity_shares(kc, e_share)
        # running totals and a ring of their past values: any window's sums in O(1)
        self._ring_len = r = self._wblocks[-1] + s.mature_refresh_blocks + 1  # a segment: at most a period
        self._tot = {"num": np.zeros((fn, k + 1), np.int64), "sum": np.zeros((fn, k)), "sq": np.zeros(fn),
                     "cat": np.zeros((fc, kc + 1), np.int64), "hours": np.zeros(24)}
        if self._mv:
            self._tot["corr"] = np.zeros((4, fn, fn))
        self._ring = {key: np.zeros((r,) + v.shape, v.dtype) for key, v in self._tot.items()}
        self._ring_num = self._ring["num"]
        self._blocks = 0
        n_ch = self._theta.size
        self.tracker = DependenceTracker(n_ch, b, s.dependence_scales, s.dependence_history,
                                         s.dependence_min_batches, s.dependence_confidence,
                                         s.dependence_scale_confidence)
        self.seasonal = SeasonalProfile(n_ch, s.seasonal_min_rows, s.seasonal_memory_rows, s.seasonal_alpha) \
            if s.seasonal else None
        self._presence = hour_presence(*hourly, self._k, self._kc, self._pairs, s.seasonal_alpha) \
            if hourly is not None else None
        if hourly is not None:  # the training data's daily cycle, expected from the first row
            means = ds.channel_means(*hourly, None, self._uref, self._rho, self._pairs)
            self.seasonal.seed(*means, s.seasonal_reference_min_rows, self._presence)  # type: ignore[union-attr]
            self._seed_share_cycle(*means)
            self.tracker.known_day = self.seasonal.from_reference  # type: ignore[union-attr]
        # checkpoints back past the longest window, to forget a drift's onset when it opens
        self._onset = Checkpoints(-(-2 * s.windows[-1] // (s.refresh_blocks * b)) + 2)
        self._ready = self._cusum_ready = self._fast_ready = False
        self._window_known = [False] * len(s.windows)
        # the dependence scale each window waits for: a tenth of its rows, or the shortest
        scale_rows = [sc * b for sc in s.dependence_scales]
        self._window_scale = [max([i for i, r in enumerate(scale_rows) if r <= w // 10] or [0]) for w in s.windows]
        self._clustered = False  # entity ids show runs of one entity (see _estimates)
        self._next_checkpoint = 0  # block count of the next checkpoint once ready (see _estimates)
        self._season_dev: np.ndarray | None = None
        self._season_var: np.ndarray | None = None
        self._visit_rows = np.zeros(24)  # live rows per visit of each hour (SeasonalProfile.visit_blocks)
        self._lr = self._g0.copy()
        self._g0_live = self._g0.copy()
        self._slow = np.zeros(n_ch)
        self._psi_skew = np.zeros((len(s.dependence_scales), self._sl["psi"].stop - self._sl["psi"].start))
        self._wconst = None
        # the states, in the order of their channels' owners: the features, then the joint state
        self._states = self._names + [MULTIVARIATE]
        self._state_index = {name: i for i, name in enumerate(self._states)}
        self._reset_at = dict.fromkeys(self._states, 0)
        self._open = dict.fromkeys(self._states, False)
        self._open_arr = np.zeros(len(self._states), dtype=bool)
        self._calm = dict.fromkeys(self._states, 0)
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

    def _process(self, num: np.ndarray, cat: np.ndarray, ts: np.ndarray, start: int) -> list[DriftEvent]:
        """Reduce whole blocks to sufficient statistics, learn the stream's structure, run the due checks."""
        b, k, kc = self.settings.block_size, self._k, self._kc
        nb, fn, fc = num.shape[0] // b, len(self._num), len(self._cat)
        blk = np.repeat(np.arange(nb), b)
        missing = np.isnan(num)
        if len(self._edge_rows) <= MAX_COUNTED_EDGES:
            count = np.zeros(num.shape, dtype=np.int8)
            ge = np.empty(num.shape, dtype=bool)
            for edge in self._edge_rows:
                count += np.greater_equal(num, edge, out=ge)
            bins = count.astype(np.int64)
        else:  # many bins: a pass per edge over every feature would cost more than a search
            bins = np.empty(num.shape, dtype=np.int64)
            for j in range(fn):
                bins[:, j] = np.searchsorted(self._edges[j], num[:, j], side="right")
        bins[missing] = k
        idx = ((blk[:, None] * fn + np.arange(fn)) * (k + 1) + bins).ravel()
        counts = np.bincount(idx, minlength=nb * fn * (k + 1)).reshape(nb, fn, k + 1)
        val = np.where(missing, 0.0, np.clip(num, self._value_lo, self._value_hi))
        sums = np.bincount(idx, weights=val.ravel(), minlength=nb * fn * (k + 1)).reshape(nb, fn, k + 1)[:, :, :k]
        sq = (val * val).reshape(nb, b, fn).sum(axis=1)
        capped = cat > kc  # rows past their entity's cap come as code + kc + 1 (see update_batch)
        has_capped = bool(capped.any())
        if has_capped:
            cat = np.where(capped, cat - (kc + 1), cat)  # every row counts in the reference-based tests
        cidx = ((blk[:, None] * fc + np.arange(fc)) * (kc + 1) + cat).ravel()
        ccounts = np.bincount(cidx, minlength=nb * fc * (kc + 1)).reshape(nb, fc, kc + 1)
        ccap = None  # the entity-balanced counts (rows past their entity's or run's cap left out)
        if self._eshare is not None:  # read only (summed into the test's batches): no copy when nothing is capped
            ccap = ccounts - np.bincount(cidx[capped.ravel()], minlength=ccounts.size).reshape(ccounts.shape) \
                if has_capped else ccounts
        crows = capped.reshape(nb, b, fc).any(axis=2).sum(axis=1) if has_capped else None
        rh = _hour_of_day(ts[: nb * b])  # each row's
        hours = rh[b // 2 :: b]  # each block's, at its middle row
        corr = None
        if self._mv:  # normal scores of the bins, as the profile's correlation (0 where missing)
            z = self._score_table.take(bins + self._score_at).reshape(nb, b, fn)
            if self._within is not None:  # less their hour's mean (row -1: no event time, as they are)
                z = (z - self._within.offset[rh].reshape(nb, b, fn)) * self._within.scale[rh].reshape(nb, b, fn)
                z = np.where(missing.reshape(nb, b, fn), 0.0, z)
            corr = comoments(z, missing.reshape(nb, b, fn))
            if self._within is not None:  # rows without event time keep the day's correlation: judged against it
                zu = np.where((rh < 0).reshape(nb, b, 1), z, 0.0)
                pr = (~missing.reshape(nb, b, fn)).astype(float) * (rh < 0).reshape(nb, b, 1)
                s2 = np.einsum("nbi,nbj->nij", zu * zu, pr)
                corr[:, 3] += (self._rho - self.ref.corr)[None] * (s2 + s2.transpose(0, 2, 1)) / 2
        means, weights = ds.channel_means(counts, ccounts, corr, self._uref, self._rho, self._pairs)
        # each block's rows per hour of the day, row by row: a 100-row block spans hours at a quiet
        # night (38 events an hour at 5,000 a day), and counted at its middle row's hour some hours
        # were never fed to the capped shares' profile, which then never served
        slot = np.repeat(np.arange(0, nb * 24, 24), b) + rh  # block * 24 + hour, row by row
        timed = rh >= 0
        if not timed.all():
            slot = slot[timed]
        hour_hot = np.bincount(slot, minlength=nb * 24).reshape(nb, 24).astype(float)
        per_block = {"num": counts, "sum": sums, "sq": sq, "cat": ccounts, "hours": hour_hot}
        if corr is not None:
            per_block["corr"] = corr
        events: list[DriftEvent] = []
        i = 0
        while i < nb:  # segments end where the estimates are refreshed, so any batching gives the same events
            refresh = self._refresh_period()
            seg = min(nb - i, refresh - self._blocks % refresh)
            events += self._segment(i, seg, per_block, means, weights, hours, num, start, ccap, crows)
            i += seg
        return events

    def _segment(self, i0: int, seg: int, per_block: dict[str, np.ndarray], means: np.ndarray, weights: np.ndarray,
                 hours: np.ndarray, num: np.ndarray, start: int, ccap: np.ndarray | None = None,
                 crows: np.ndarray | None = None) -> list[DriftEvent]:
        """Blocks ``i0 .. i0+seg`` of a batch: totals, vectorised tests at every check point, then
        the state machine block by block."""
        b, c0, short = self.settings.block_size, self._blocks, self.settings.refresh_blocks
        slots = (c0 + 1 + np.arange(seg)) % self._ring_len
        for key, arr in per_block.items():
            # cumsum from the running total: the same additions in the same order however rows are batched
            cum = np.cumsum(np.concatenate([self._tot[key][None], arr[i0 : i0 + seg]]), axis=0)[1:]
            self._ring[key][slots] = cum
            self._tot[key] = cum[-1].copy()
        checks: dict[int, dict[int, int]] = {}  # block count -> {window: its row in the statistics}
        latest: dict[int, int] = {}  # window -> row of its last check point
        st: dict[str, Any] = {}
        sig = np.zeros((0, self._open_arr.size), dtype=bool)
        if self._ready:  # every window's check points in one pass
            ats: list[int] = []
            wis: list[int] = []
            for w, (nbk, step) in enumerate(zip(self._wblocks, self._sblocks, strict=True)):
                if not self._window_known[w]:
                    continue
                for c in range(c0 + 1, c0 + seg + 1):
                    if c % step == 0 and c >= nbk:
                        checks.setdefault(c, {})[w] = latest[w] = len(ats)
                        ats.append(c)
                        wis.append(w)
            if ats:
                wi = np.array(wis)
                st = self._test_window(self._wblocks_arr[wi], np.array(ats))
                sig = self._any_significant(wi, st)
        cus = self._cusum_segment(i0, seg, means, weights, hours) if self._cusum is not None else {}
        fast = self._fast_z(slice(i0, i0 + seg), means, weights, hours)
        # the entity-balanced batches completed in this segment, by the block that completes them
        ent = {j: (c, h) for j, c, h in self._eshare.batches(ccap[i0 : i0 + seg], per_block["hours"][i0 : i0 + seg])} \
            if ccap is not None and self._eshare is not None and self._share_test_fed() else {}
        events: list[DriftEvent] = []
        frozen = np.empty((seg, self._owner.size), dtype=bool)
        for j in range(seg):
            i = i0 + j
            frozen[j] = self._sitting_out()  # the state each block is learned under
            self._blocks += 1
            held = self._count_capped(crows, i)
            if self._detector is not None:
                events += self._run_detector(num[i * b : (i + 1) * b, self._score_j], start + i * b)
            fired: dict[str, list[dict[str, Any]]] = {}
            for w, row in checks.get(self._blocks, {}).items():
                self._last[w] = Picked(st, row)  # read by the state machine only when a state is open
                # no test past its critical value, or only those of states already open: nothing can fire
                if not held[0] and (sig[row] & ~self._open_arr).any():
                    self._fire(w, self._last[w], fired)
            if self._blocks in cus:
                self._cusum_step(*cus[self._blocks], fired)
            if fast is not None and not held[1]:
                self._fast_step(fast, j, fired)
            if j in ent:
                self._entity_step(*ent[j], fired)
            # the capped shares' profile keeps the short period where no refresh comes (mature
            # estimates: a profile usable 6,400 rows later missed a step)
            if self._blocks % short == 0 and self._blocks % self._refresh_period():
                self._refresh_cap_season()
            events += self._transition(start + (i + 1) * b - 1, fired)
        for w, row in latest.items():  # the latest statistics, for snapshots
            self._last[w] = Picked(st, row)
        # the stream's structure is learned once per segment (estimates are only read at refreshes)
        # (a state that opened in the segment forgets its onset right after the block it opened at:
        # what its channels learn after that, never-usable daily profiles, stays, as row by row)
        j0 = 0
        for j1 in [*(a - c0 for a in self._onset.due_at()), seg]:
            if j1 > j0:
                sl = slice(i0 + j0, i0 + j1)
                if self.seasonal is not None:
                    self.seasonal.add_many(hours[sl], means[sl], weights[sl], frozen[j0:j1])
                self.tracker.add_many(means[sl], weights[sl], frozen[j0:j1], hours[sl])
                j0 = j1
            self._onset.settle(self.seasonal, self.tracker, c0 + j1)
        if self._blocks % self._refresh_period() == 0:
            self._estimates()
        return events

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
