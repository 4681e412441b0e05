"""How much a live stream's window statistics really vary: learned from the stream itself.

Every drift test compares a window mean of per-row *scores* (a bin or category
indicator, the reference mid-rank ``u`` of a value, a missing indicator, a
cross-product) with the reference. For i.i.d. rows its variance is ``g0 / n``
(``g0`` the score's variance); on real traffic rows are dependent (rolling features,
bursts of one entity) and it is ``s2_lr / n`` with the long-run variance
``s2_lr = g0 * D``, ``D`` the design effect. Slow stationary movements (the daily
cycle, a slowly wandering mix) add a nuisance variance ``s2_slow`` to every window.
The reference is an i.i.d. training sample, so it cannot tell either; the stream can.

:class:`DependenceTracker` keeps, per score ("channel"), the means of consecutive
batches of ``scale`` blocks, for a few scales, over a long history, and estimates

* ``s2_lr`` from *differences* of consecutive batch means: ``E d^2 = 2 s2_lr / B``
  when ``B`` is much longer than the dependence, and a step change touches one
  difference only, so a drift barely moves the estimate (a winsorised mean of
  ``d^2`` keeps the one large difference from counting). Slow cycles cancel in
  differences too. The largest estimate over the scales with enough batches is
  used (short scales miss long-range dependence, long ones take long to fill),
  times an upper-confidence factor for the number of differences behind it;
* ``s2_slow`` from the *level* of the batch means against the reference:
  ``median((m - ref)^2) / 0.455`` minus what ``s2_lr`` and the reference's own
  sampling error explain, when the excess is significant (0 otherwise).

Channels of a feature whose drift state is open are frozen (their batches are
not recorded), so a drift is not learned as "dependence"; they keep their estimates
(see :meth:`DependenceTracker.estimate`).

Examples
--------
>>> import numpy as np
>>> from scipy import signal
>>> rng = np.random.default_rng(0)
>>> x = signal.lfilter([1.0], [1.0, -0.9], rng.normal(size=200_000) * np.sqrt(1 - 0.81))
>>> tr = DependenceTracker(1, block_rows=100, scales=(2, 8, 32), history=128)
>>> blocks = x.reshape(-1, 100).mean(axis=1)
>>> for m in blocks:
...     tr.add(np.array([m]), np.array([100.0]), np.zeros(1, bool))
>>> lr, slow = tr.estimate(np.array([0.0]), np.array([1.0]), np.array([20_000.0]))
>>> bool(15 < lr[0] < 26), float(slow[0])   # AR(1) phi 0.9: D = 19; no slow component
(True, 0.0)
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
from scipy import special

from stream.monitoring.batch_history import BatchHistory
from stream.monitoring.batch_math import nanmedian, order_stat, winsor_table

__all__ = ["DependenceTracker"]

# a batch level against the reference counts as wander or dependence up to this many times the
# batch means' spread around their own centre (a constant offset is drift, see _level); with the
# daily cycle known from the reference's own event times, only that spread: nothing is left that
# makes batch means sit off the reference together
OWN_LEVEL_CAP = 8.0
KNOWN_DAY_LEVEL_CAP = 1.0
_MEDIAN_CHI2_1 = 0.4549  # median of chi-square(1): median((m - ref)^2) / this estimates E (m - ref)^2
# mean of chi-square(1) below its 80 % quantile: the lower 80 % of n squared normal deviations average
# this; and the relative sd (times sqrt(n)) of that trimmed mean: its asymptotic variance is the kept
# values' variance plus the cut share times the squared gap from the cut to their mean, over the kept
# share (1.78, where the untrimmed mean's sqrt(2) = 1.41 had been used: a 3 sd margin was 2.4 sd).
# Integrals of the chi-square density, computed once (see _chi2_ppf)
_TRIMMED_CHI2_1 = 0.4377245949169316
_TRIMMED_REL_SD = 1.784906256678387
# a skewness of batch means counts past this many of its standard errors, shrunk by them: on
# independent rows it is ~0 and a test's tails stay the normal's
SKEW_MARGIN = 2.0


def _chi2_ppf(p: float, df: np.ndarray) -> np.ndarray:
    """``scipy.stats.chi2.ppf(p, df)`` by the special function it calls: scipy.stats takes ~1 s to
    load, a monitor process's start-up. The module's constants come from scipy.stats too:

    >>> from scipy import stats
    >>> df = np.array([1.0, 7.5, 76.8])
    >>> bool((_chi2_ppf(0.25, df) == stats.chi2.ppf(0.25, df)).all())
    True
    >>> q = stats.chi2.ppf(0.8, 1)
    >>> m = stats.chi2.expect(lambda x: x, args=(1,), ub=q) / 0.8
    >>> v = stats.chi2.expect(lambda x: (x - m) ** 2, args=(1,), ub=q) / 0.8
    >>> float(m) == _TRIMMED_CHI2_1, float(np.sqrt((v + (1 - 0.8) * (q - m) ** 2) / 0.8) / m) == _TRIMMED_REL_SD
    (True, True)
    """
    return np.asarray(2.0 * special.gammaincinv(df / 2.0, p))


class DependenceTracker(BatchHistory):
    """Long-run and slow-component variances of ``n_channels`` per-row scores (see module docstring).

    Parameters
    ----------
    n_channels
        Number of scores.
    block_rows
        Rows per block (the unit :meth:`add` receives).
    scales
        Blocks per batch, one history per scale.
    history
        Batch means kept per scale (the estimation span is ``history * scale`` blocks).
    min_batches
        Batches a scale needs before its estimate counts.
    confidence
        The long-run variance is divided by the ``confidence`` quantile of its sampling
        distribution (chi-square with ~0.6 df per difference), an upper bound that shrinks as history grows.
    scale_confidence
        The longest scale's estimate is used only where its lower bound at this one-sided level
        is above the shorter scales' estimates (see :meth:`_select_and_keep`).
    """

    def __init__(self, n_channels: int, block_rows: int, scales: Sequence[int] = (2, 8, 32), history: int = 128,
                 min_batches: int = 16, confidence: float = 0.25, scale_confidence: float = 0.1) -> None:
        super().__init__(n_channels, block_rows, scales, history, min_batches)
        self.confidence, self.scale_confidence = float(confidence), float(scale_confidence)
        # each channel's estimates when it was last learned from, and per scale its point estimate,
        # upper and lower bound when that scale last had the differences it needs (NaN: never)
        self._held = np.full((2, self.c), np.nan)
        self._held_scales = [np.full((3, self.c), np.nan) for _ in self.scales]
        # channels whose daily profile the reference's event times give: no cycle to mistake for an offset
        self.known_day: np.ndarray | None = None
        # upper-confidence factor per number of differences (chi-square with ~0.6 df per difference)
        df = np.maximum(0.6 * np.arange(self.history + 1), 1.0)
        self._inflate = df / _chi2_ppf(self.confidence, df)
        df0 = np.maximum(0.7 * np.arange(self.history + 1), 1.0)
        self._inflate_level = df0 / _chi2_ppf(self.confidence, df0)
        self._deflate = df / _chi2_ppf(1.0 - self.scale_confidence, df)  # lower-bound factor

    def _scale_estimate(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """(long-run variance per row, number of usable differences) at scale ``i``."""
        if self._cache[i] is None:
            h = self._series(i)
            d = np.diff(h, axis=0)
            good = ~np.isnan(d)
            nd = good.sum(axis=0)
            a = np.abs(d)
            with np.errstate(all="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                # winsorised mean square, the two largest differences cut to the third largest: a step
                # touches one or two differences, while bursts of one entity make many large ones (a
                # cap at a few robust sd cuts those too and understated burst-driven dependence ~2-3x)
                ms = np.zeros(self.c)
                df = nd
                if a.shape[0]:
                    cap = order_stat(a, np.maximum(nd - 3, 0))  # NaN last
                    # means over the usable differences (``nd`` of them, 0 elsewhere): nanmean's sums
                    # without its passes; min(a, cap)^2 is min(a^2, cap^2) to the bit (rounding is monotone)
                    a2 = np.where(good, a * a, 0.0)
                    ms = np.minimum(a2, cap * cap).sum(axis=0) / nd / winsor_table(self.history)[nd]
                    # heavy-tailed differences (bursts of one entity: most batches quiet, a few far
                    # off) make a mean square far less certain than its count says: a variance
                    # estimate from n values of kurtosis k has ~2n / (k - 1) degrees of freedom.
                    # (a2 not winsorised: the tail is what makes the estimate uncertain)
                    kurt = ((a2 * a2).sum(axis=0) / nd) / np.maximum(a2.sum(axis=0) / nd, 1e-300) ** 2
                    df = np.clip(np.nan_to_num(nd * np.minimum(1.0, 2.0 / np.maximum(kurt - 1.0, 1e-9)),
                                               nan=0.0).astype(np.int64), 0, nd)
            rows = self.scales[i] * self.block_rows
            self._cache[i] = (np.nan_to_num(ms) * rows / 2.0, nd, df)
        cached = self._cache[i]
        assert cached is not None
        return cached[0], cached[1]

    def _scale_df(self, i: int) -> np.ndarray:
        """Effective number of differences behind scale ``i``'s estimate (fewer when heavy-tailed)."""
        self._scale_estimate(i)
        cached = self._cache[i]
        assert cached is not None
        return cached[2]

    def short_range(self, g0: np.ndarray) -> np.ndarray:
        """Long-run variance from the shortest scale alone (blind to slow cycles, unlike long scales)."""
        if self._count[0] < self.min_batches:
            return g0
        return np.maximum(g0, self._scale_estimate(0)[0])

    def skewness(self, channels: slice = slice(None)) -> np.ndarray:
        """Per scale and channel (``[scale, channel]``, of ``channels``), the skewness of the batch means, shrunk
        towards 0 by ``SKEW_MARGIN`` standard errors (0 at a scale short of ``min_batches``
        batches): bursts of one entity make some scores' batch means skewed (see
        :func:`stream.monitoring.window_dist.skewed_z`), which no variance tells.

        >>> rng = np.random.default_rng(1)
        >>> tr = DependenceTracker(2, block_rows=10, scales=(1,), history=400)
        >>> for _ in range(400):
        ...     tr.add(np.array([rng.normal(), rng.gamma(1.0)]), np.array([10.0, 10.0]), np.zeros(2, bool))
        >>> [round(float(g), 1) for g in tr.skewness()[0]]   # a normal's (0) and an exponential's (2, less 2 se)
        [0.0, 1.8]
        """
        out = []
        for i in range(len(self.scales)):  # a scale short of min_batches has fewer usable batches: 0
            s = self._series(i)[:, channels]
            ok = ~np.isnan(s)
            n = ok.sum(axis=0)
            nn = np.maximum(n, 1)
            d = np.where(ok, s - np.where(ok, s, 0.0).sum(axis=0) / nn, 0.0)
            m2, m3 = (d * d).sum(axis=0) / nn, (d * d * d).sum(axis=0) / nn
            g = m3 / np.maximum(m2**1.5, 1e-300)  # a constant channel: 0
            nf = np.maximum(n, 4).astype(float)
            se = np.sqrt(6.0 * nf * (nf - 1) / ((nf - 2) * (nf + 1) * (nf + 3)))
            out.append(np.where(n >= self.min_batches, np.sign(g) * np.maximum(np.abs(g) - SKEW_MARGIN * se, 0.0), 0.0))
        return np.array(out) + 0.0  # + 0.0: no -0.0 where a negative skewness shrank to nothing

    def _level(self, i: int, ref_mean: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Robust mean square of scale ``i``'s batch means around the reference, and their count.

        Capped by a multiple of their mean square around their own centre (:meth:`_own_cap`):
        wander shows as batch means moving against each other, while a stream already shifted when
        the monitor starts (or shifted during its warm-up) sits at a constant offset, which is drift
        to detect, not wander to allow for."""
        series = self._series(i)
        dev2 = (series - ref_mean) ** 2
        cnt = (~np.isnan(dev2)).sum(axis=0)
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            level = nanmedian(dev2) / _MEDIAN_CHI2_1
            own = nanmedian((series - nanmedian(series)) ** 2) / _MEDIAN_CHI2_1
            level = np.fmin(level, self._own_cap(i) * own)
        return np.nan_to_num(level), cnt

    def _own_cap(self, i: int, margin: np.ndarray | float = 0.0) -> np.ndarray | float:
        """Per channel, ``OWN_LEVEL_CAP``; ``KNOWN_DAY_LEVEL_CAP`` (plus ``margin``, for an estimate
        as noisy as the spread it is capped by) where the reference's event times give the daily
        cycle (taken out of the batch means); none while event times show less than a day and the
        reference has no profile of the channel (part of the cycle looks like an offset).

        With the day known, a step in the first hours of a persistent stream (0.5-1 sd at rows
        0-12,000, AR(1) 0.9) sat in half the batch means when the longer scales filled and counted as
        wander up to 8 times their own spread: found 44,000-55,000 rows late, where a step after the
        first day takes 3,200-8,000."""
        seen = self._hours[i, : min(int(self._count[i]), self.history)].sum(axis=0) > 0
        if not seen.any():
            return OWN_LEVEL_CAP
        cap = OWN_LEVEL_CAP if seen.all() else 1e300
        return cap if self.known_day is None else np.where(self.known_day, KNOWN_DAY_LEVEL_CAP + margin, cap)

    def estimate(self, ref_mean: np.ndarray, g0: np.ndarray, m_ref: np.ndarray,
                 hold: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(s2_lr, s2_slow)`` per channel: long-run variance per row (at least ``g0``) and slow variance.

        ``ref_mean``, ``g0``, ``m_ref``: the reference mean, per-row variance and size of each score.
        Channels with ``g0 == 0`` (empty reference bins) get ``g0`` and no slow term.

        ``hold``: channels frozen now (a drift open), which keep the estimates they had when it
        opened (or those :meth:`restore_held` gives them, see :mod:`stream.monitoring.onset`).
        Recomputed from a history that only shrinks while frozen, the estimate wandered (a design
        effect of 20 read 11 after 30,000 rows, and the drift, long over, stayed open for good).
        """
        hold = np.zeros(self.c, dtype=bool) if hold is None else hold
        lr, slow = self._estimate(ref_mean, g0, m_ref, hold)
        if self._count[0] >= self.min_batches:
            self._held[:, ~hold] = lr[~hold], slow[~hold]
        keep = hold & ~np.isnan(self._held[0])
        return np.where(keep, self._held[0], lr), np.where(keep, self._held[1], slow)

    def held_state(self) -> tuple[np.ndarray, ...]:
        """Copies of the held estimates (see :meth:`estimate`), for :meth:`restore_held`."""
        return (self._held.copy(), *(h.copy() for h in self._held_scales))

    def restore_held(self, state: tuple[np.ndarray, ...], channels: np.ndarray) -> None:
        """Put the held estimates of ``channels`` (a mask) back to a :meth:`held_state`."""
        for now, then in zip((self._held, *self._held_scales), state, strict=True):
            known = channels & ~np.isnan(then[0])  # a checkpoint from the warm-up holds no estimate yet
            now[:, known] = then[:, known]

    def _estimate(self, ref_mean: np.ndarray, g0: np.ndarray, m_ref: np.ndarray,
                  hold: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`estimate` from the history alone."""
        lr = g0.astype(float).copy()
        slow = np.zeros(self.c)
        ready = [i for i in range(len(self.scales)) if self._count[i] >= self.min_batches]
        if not ready:
            return lr, slow
        best = ready[-1]
        lr = np.maximum(lr, self._select_and_keep(ready, hold))
        # cold start (only the shortest scale filled): also from its batch means' level around
        # the reference. Differences miss dependence that spans neighbouring batches (bursts as
        # long as a batch), levels do not; they also count slow movements, hence only until a
        # longer scale can take over
        if best > 0:
            return lr, self._slow_part(best, lr, ref_mean, g0, m_ref)
        # the batch means' mean square around the reference, without its top 20 % (a step during the
        # warm-up is not "dependence"; nearly as efficient as the mean, unlike the median)
        series0 = self._series(0)
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            own0 = nanmedian((series0 - nanmedian(series0)) ** 2) / _MEDIAN_CHI2_1  # see _level
        dev2 = np.sort((series0 - ref_mean) ** 2, axis=0)  # NaN last
        cnt0 = (~np.isnan(dev2)).sum(axis=0)
        keep = np.maximum((0.8 * cnt0).astype(int), 1)
        csum = np.nancumsum(dev2, axis=0)
        lvl = np.take_along_axis(csum, (keep - 1)[None], axis=0)[0] / keep / _TRIMMED_CHI2_1
        # a trimmed mean square capped by a median one: both noisy, so the cap 1 comes with a margin
        # (without it the cold-start dependence read ~10 % low on independent rows)
        lvl = np.fmin(lvl, self._own_cap(0, 3.0 * _TRIMMED_REL_SD / np.sqrt(np.maximum(cnt0, 1))) * own0)
        rows0 = self.scales[0] * self.block_rows
        lvl_lr = (lvl - g0 / np.maximum(m_ref, 1.0)) * rows0
        diff_lr, _ = self._scale_estimate(0)
        # used only where it clearly exceeds the differences' estimate (dependence across batches)
        clear = lvl_lr > np.maximum(diff_lr, g0) * (1.0 + 3.0 * _TRIMMED_REL_SD / np.sqrt(np.maximum(cnt0, 1)))
        # a batch level beyond the differences is either dependence (shrinks with the window) or slow
        # wander (does not): unknown this early, so it counts as both until a longer scale is filled
        slow = self._slow_part(best, lr, ref_mean, g0, m_ref)
        lr = np.maximum(lr, np.where((cnt0 >= self.min_batches) & clear, lvl_lr * self._inflate_level[cnt0], 0.0))
        return lr, slow

    def _select_and_keep(self, ready: list[int], hold: np.ndarray) -> np.ndarray:
        """Upper bound of the long-run variance: the largest over the shorter scales, and the
        longest scale's where it clearly exceeds them; each scale's figures kept for when it loses
        its differences.

        The longest batch sees dependence the others miss, from the fewest differences (30 after
        100,000 rows): taken at its upper bound like the others, its noise alone read a design
        effect of ~22 as 30-46, and a 0.5 sd shift in mixed traffic took 11,199 rows instead of
        ~4,000. So it counts only where its lower bound (one-sided ``scale_confidence``) is above
        the shorter scales' estimates (Lepski's rule). The shorter ones, with 4-16x the
        differences, all count: bursts of one entity live between them.

        A scale whose differences a channel has lost (frozen past its history) counts with the
        figures it last had, kept while ``hold`` (frozen now) is off: emptied, the shortest scale
        gave a design effect of 1 where it had been 10-25 (correlations of AR(1) features on mixed
        traffic: once the drift ended, the same pairs opened false drifts at a 500-row window),
        and without it the longer ones alone read 15 as 11."""
        longest = ready[-1] if len(ready) > 1 and ready[-1] == len(self.scales) - 1 else None
        upper, point = np.zeros(self.c), np.zeros(self.c)
        for i in ready:
            est, nd = self._scale_estimate(i)
            df = self._scale_df(i)
            figs = np.stack([est, est * self._inflate[df], est * self._deflate[df]])
            valid = nd >= self.min_batches - 1
            fresh = valid & ~hold
            self._held_scales[i][:, fresh] = figs[:, fresh]
            lost = ~valid & ~np.isnan(self._held_scales[i][0])
            est, bound, lower = np.where(lost, self._held_scales[i], figs)
            valid |= lost
            if i == longest:
                clearly = valid & (lower > point)
                return np.where(clearly, np.maximum(upper, est), upper)
            upper = np.maximum(upper, np.where(valid, bound, 0.0))
            point = np.maximum(point, np.where(valid, est, 0.0))
        return upper

    def _slow_part(self, best: int, lr: np.ndarray, ref_mean: np.ndarray, g0: np.ndarray,
                   m_ref: np.ndarray) -> np.ndarray:
        """Slow variance at scale ``best``: the batch means' level variance beyond ``lr`` and the reference's error."""
        level, cnt = self._level(best, ref_mean)
        rows = self.scales[best] * self.block_rows
        noise = lr / rows + g0 / np.maximum(m_ref, 1.0)
        # the median of n chi-square(1) values has relative sd ~ 1.9 / sqrt(n): keep 3 of them
        excess = np.nan_to_num(level) - noise * (1.0 + 5.7 / np.sqrt(np.maximum(cnt, 1)))
        return np.where((cnt >= self.min_batches) & (g0 > 0), np.maximum(excess, 0.0), 0.0)
