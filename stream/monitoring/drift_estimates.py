"""What a drift monitor learns of the live stream, refreshed every few blocks, and which of its
tests may run on it: the dependence, slow-wander and seasonal estimates; the warm-up (longer when
entity ids show runs of one entity); the windows whose own lags are measured yet.
"""

from __future__ import annotations

import functools

import numpy as np

from stream.monitoring.drift_ingest import RowIngest
from stream.monitoring.drift_settings import DriftSettings

__all__ = ["StreamEstimates"]


@functools.lru_cache(maxsize=16)
def young_end(s: DriftSettings) -> int:
    """Block count where young estimates end: the second dependence scale has its batches (the
    estimate rests on a few dozen differences of the shortest until then), rounded up to where a
    young refresh period would double (read once per segment: cached per settings).

    >>> young_end(DriftSettings()), young_end(DriftSettings(dependence_scales=(3, 12, 48)))
    (128, 192)
    """
    short = min(s.refresh_blocks, 2 * s.dependence_scales[0])
    end = 8 * short
    while end < s.dependence_min_batches * s.dependence_scales[min(1, len(s.dependence_scales) - 1)]:
        end *= 2
    return end


@functools.lru_cache(maxsize=16)
def mature_start(s: DriftSettings) -> int:
    """Block count from which the estimates are refreshed every ``mature_refresh_blocks``: the
    longest dependence scale can have its batches (a multiple of that period, so segments stay
    aligned however rows are batched).

    >>> mature_start(DriftSettings()), mature_start(DriftSettings(mature_refresh_blocks=320))
    (512, 640)
    """
    need = s.dependence_min_batches * max(s.dependence_scales)
    return -(-need // s.mature_refresh_blocks) * s.mature_refresh_blocks


class StreamEstimates(RowIngest):
    """The estimates a :class:`stream.monitoring.drift.DriftMonitor` refreshes (mixin)."""

    def _refresh_period(self) -> int:
        """Blocks between estimate refreshes: short while warming up, so tests start as soon as they
        can; then ``refresh_blocks``, and on traffic with runs of one entity, until the second
        dependence scale has its batches (12,800 rows by default), about an eighth of the blocks
        seen (the short period doubled each time they double: each period divides the block count
        where the next takes over).

        Young estimates move with every burst they have not seen: on bursty traffic the x|y
        correlation's design effect, 8 from the first 6,400 rows, was 25 with the burst that came
        next, and the 2,000-row window holding that burst opened a false drift at row 9,999 on the
        estimate of row 6,400. Without runs of one entity the period stays long: every refresh
        between a change and its alarm learns some of the change (a 0.5 sd step on independent
        rows at row 10,000 took 299-399 rows instead of 199 on three seeds of six).

        Once every dependence scale can have its batches (51,200 rows by default) the estimates
        rest on hundreds of differences and a refresh moves them little: the period becomes
        ``mature_refresh_blocks`` (128 by default: the monitor's CPU per row 0.86x, a refresh and
        a segment's fixed costs paid half as often). Not from the start: the i.i.d. streams of make
        bench-drift change at 10,000 rows, and a period of 128 there took a 0.5 sd step 399-499
        rows instead of 99-299. The capped shares' daily profile keeps the short period (see
        ``DriftMonitor._segment``).

        >>> from types import SimpleNamespace
        >>> from stream.monitoring.drift_settings import DriftSettings
        >>> m = dict(settings=DriftSettings(), _ready=True, _clustered_estimated=True)
        >>> [StreamEstimates._refresh_period(SimpleNamespace(**m, _blocks=b)) for b in (32, 64, 100, 127, 128, 511, 512)]
        [4, 8, 8, 8, 64, 64, 128]
        >>> m["_clustered_estimated"] = False
        >>> [StreamEstimates._refresh_period(SimpleNamespace(**m, _blocks=b)) for b in (32, 64, 100)]
        [64, 64, 64]
        """
        s = self.settings
        short = min(s.refresh_blocks, 2 * s.dependence_scales[0])
        if not self._ready:
            return short
        if self._blocks >= mature_start(s):
            return s.mature_refresh_blocks
        if not self._clustered_estimated or self._blocks >= young_end(s):
            return s.refresh_blocks
        doublings = max((self._blocks // (8 * short)).bit_length() - 1, 0)
        return min(s.refresh_blocks, short << doublings)

    @property
    def warming_up(self) -> bool:
        """True until the stream's dependence can be estimated (no test runs before; with runs of
        one entity, until the window tests start at twice the warm-up)."""
        return not self.tracker.ready(times=2 if self._clustered else 1)

    def _estimates(self) -> None:
        """Refresh the dependence, slow and seasonal estimates (every :meth:`_refresh_period` blocks)."""
        # rows in runs of one entity (past its cap, or a run's without ids): dependence as long as a run is
        # not measurable from the first few runs (a design effect of 1-2 read where it is 10-40), so the
        # window tests wait for twice the warm-up, as the block CUSUM does (set block by block, see
        # EntityChannels._count_capped)
        clustered = self._clustered_estimated = self._clustered
        # checkpoints at every refresh of the warm-up, then at the first refresh of every
        # ``refresh_blocks`` blocks (however often young estimates are refreshed): the ring (see
        # Checkpoints) spans the rows a roll-back may reach back to
        s = self.settings
        checkpoint = not self._ready or self._blocks >= self._next_checkpoint
        # without ids, runs stand for entities in the share test once they are more than chance (for
        # good: the test's history needs its batches in a row); on independent rows it would only
        # repeat the reference-based tests at a tenth of a block's cost per row
        self._runs_clustered |= clustered and self.run_cap is not None
        self._ready = self.tracker.ready(times=2 if clustered else 1)
        self._cusum_ready = self.tracker.ready(all_scales=True)
        # the block CUSUM adds up small biases of blocks it takes as independent: it waits for twice
        # the history a window test needs (bursts of one entity are rare early on; still before
        # the shorter window tests could miss what a change at 10,000 rows does), and twice that
        # when entity ids show runs
        self._fast_ready = self.tracker.ready(times=4 if clustered else 2)
        # a window's variance needs the stream's dependence at lags near its length: it is tested once
        # the dependence scale of a tenth of its rows (or the shortest) has its batches (8,000 rows:
        # the 800-row scale, from 12,800 rows on; before, 800-row bursts read as independent there)
        self._window_known = [self.tracker.ready_scale(i) for i in self._window_scale]
        if self.seasonal is not None:  # the daily profile, judged on short-range noise (blind to the cycle)
            self.seasonal.settled = self._cusum_ready  # live rows weigh 1 / D once every scale has its batches
            dev, use = self.seasonal.centred(self.tracker.short_range(self._g0), self._g0)
            self.tracker.set_seasonal(dev if use.any() else None, self._presence)
        self._lr, self._slow = self.tracker.estimate(self._theta, self._g0, self._m, self._sitting_out())
        self._psi_skew = self.tracker.skewness(self._sl["psi"])  # the correlation tests' tails
        self._g0_live = self._live_variance()
        self._burst_floor()
        self._slow[self._sl["psi"]] = 0.0  # the reference holds no psi level
        self._coherent_slow()
        if self.seasonal is not None:
            self._season_dev, self._season_var = self.seasonal.centred_with_noise(self._lr, self._g0)
            self._visit_rows = self.seasonal.visit_blocks() * s.block_size
        self._refresh_cap_season()
        self._fast_gate()
        self._cusum_gate()
        self._wconst = None  # the window tests' constants follow the estimates
        if checkpoint:
            self._onset.take(self._blocks * s.block_size, self.seasonal, self.tracker)
            self._next_checkpoint = (self._blocks // s.refresh_blocks + 1) * s.refresh_blocks

    def _burst_floor(self) -> None:
        """Category shares vary at least as the runs of one entity seen make them (given entity
        ids, once runs show): Kish's ``1 + (m - 1) ICC`` per feature (:mod:`stream.monitoring.entity_runs`;
        ~20 for a category heavy entities repeat at 11-15 % of the traffic in runs of 20-200).
        Measured from batch means the first bursts read 1-4 (a handful of batches held one):
        500- and 2,000-row windows opened false drifts of the category at 6,399-12,399 rows on
        random bursty streams, before that estimate reached 15-30."""
        if self.entity_runs is None:
            return
        size, icc = self._run_figures = self.entity_runs.at(self._blocks * self.settings.block_size,
                                                              self._cat_chance)
        if not (self._clustered and self._entities_given):
            return
        floor = 1.0 + (size - 1.0) * icc  # [feature]
        sl = self._sl["cprops"]
        self._lr[sl] = np.maximum(self._lr[sl], (self._g0_live[sl].reshape(floor.size, -1) * floor[:, None]).ravel())

    def _live_variance(self) -> np.ndarray:
        """Per-row variance of each score as the live stream has it, for design effects.

        A bin or category indicator with mean ``m`` has variance ``m (1 - m)``. When the stream
        has moved mass into a bin the reference rarely used, the batch means of that bin vary
        with the live ``m``, not the reference's: measured against the reference's variance the
        move would read as a huge design effect (hundreds), thin every window and hide the very
        drift it is (a stream drifted from the monitor's start was never flagged). Used only
        where the live variance is clearly larger, so stationary traffic is judged as before."""
        g0 = self._g0.copy()
        m = self.tracker.live_mean()
        v = m * (1.0 - m)
        sl = self._sl
        indicator = np.zeros(len(g0), dtype=bool)
        for key in ("props", "cum", "miss", "cprops", "cmiss"):
            indicator[sl[key]] = True
        clearly = indicator & np.isfinite(v) & (v > 1.5 * g0)
        g0[clearly] = v[clearly]
        return g0

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
            self._slow[sl["spread"]] = r * self._g0[sl["spread"]]
        if fc:
            used = (self._theta[sl["cprops"]] > 0).reshape(fc, kc)
            r = np.where(used, rel[sl["cprops"]].reshape(fc, kc), 0.0).sum(axis=1) / np.maximum(used.sum(axis=1), 1)
            self._slow[sl["cprops"]] = np.repeat(r, kc) * self._g0[sl["cprops"]]
