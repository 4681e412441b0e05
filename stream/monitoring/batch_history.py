"""Batch means of per-row scores at a few scales, over a long history: what
:class:`stream.monitoring.dependence.DependenceTracker` estimates the stream's dependence from.

Blocks of rows come in (each channel's mean, weight and frozen flag, and the block's hour of
day); every ``scale`` blocks make one batch, whose mean per channel is kept (NaN where a
frozen block or no row is in it) with the batch's hour-of-day shares, the oldest dropped past
``history`` batches. Fed block by block or many blocks at once, the same batches.

Examples
--------
>>> import numpy as np
>>> h = BatchHistory(1, block_rows=100, scales=(2,), history=4, min_batches=4)
>>> for m in [1.0, 3.0, 5.0, 7.0]:
...     h.add(np.array([m]), np.array([100.0]), np.zeros(1, bool))
>>> h._series(0).ravel().tolist()      # two batches of two blocks
[2.0, 6.0]
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

from stream.monitoring.batch_math import group_sums, groups_of, nanmean
from stream.monitoring.seasonal import hour_mix

__all__ = ["BatchHistory"]


class BatchHistory:
    """Per scale, the last ``history`` batch means of ``n_channels`` scores (see module docstring)."""

    def __init__(self, n_channels: int, block_rows: int, scales: Sequence[int] = (2, 8, 32), history: int = 128,
                 min_batches: int = 16) -> None:
        if not scales or min(scales) < 1 or history < 4 or not 4 <= min_batches <= history:
            raise ValueError("need scales >= 1, history >= 4, 4 <= min_batches <= history")
        self.c, self.block_rows = int(n_channels), int(block_rows)
        self.scales, self.history, self.min_batches = tuple(scales), int(history), int(min_batches)
        self._sum = np.zeros((len(scales), self.c))  # current batch: weighted sums and weights
        self._w = np.zeros((len(scales), self.c))
        self._bad = np.zeros((len(scales), self.c), dtype=bool)  # a frozen block in the batch
        self._nblk = np.zeros(len(scales), dtype=np.int64)
        self._hist = np.full((len(scales), self.history, self.c), np.nan)
        self._hours = np.zeros((len(scales), self.history, 24))  # hour-of-day shares of each batch
        self._hacc = np.zeros((len(scales), 24))
        self._dev: np.ndarray | None = None  # seasonal profile taken out of the batch means
        self._presence: np.ndarray | None = None  # its hours' shares of rows holding each channel
        self._count = np.zeros(len(scales), dtype=np.int64)  # batches written per scale
        # per scale, figures derived from its batches (see DependenceTracker), dropped with each new batch
        self._cache: list[tuple[np.ndarray, np.ndarray, np.ndarray] | None] = [None] * len(scales)
        self._series_cache: dict[int, np.ndarray] = {}  # per scale, dropped with _cache
        self.version = 0  # bumped whenever a batch is written (estimates may change)

    def add(self, means: np.ndarray, weights: np.ndarray, frozen: np.ndarray, hour: int = -1) -> None:
        """One block: per channel its mean score, weight (rows behind it) and whether it is frozen;
        ``hour``: its hour of day (event time), -1 if unknown."""
        if hour >= 0:
            self._hacc[:, hour] += 1.0
        ok = weights > 0
        contrib = np.where(ok, means * weights, 0.0)
        self._sum += contrib
        self._w += weights
        self._bad |= frozen
        self._nblk += 1
        for i, s in enumerate(self.scales):
            if self._nblk[i] < s:
                continue
            m = np.where((self._w[i] > 0) & ~self._bad[i], self._sum[i] / np.where(self._w[i] > 0, self._w[i], 1), np.nan)
            self._hist[i, self._count[i] % self.history] = m
            self._hours[i, self._count[i] % self.history] = self._hacc[i] / s
            self._hacc[i] = 0.0
            self._count[i] += 1
            self._sum[i] = 0.0
            self._w[i] = 0.0
            self._bad[i] = False
            self._nblk[i] = 0
            self._cache[i] = None
            self._series_cache.pop(i, None)
            self.version += 1

    def add_many(self, means: np.ndarray, weights: np.ndarray, frozen: np.ndarray, hours: np.ndarray) -> None:
        """Several blocks at once (``[block, channel]``); the same batches as :meth:`add` one by one."""
        n = means.shape[0]
        if n == 0:
            return
        c = self.c
        hot = np.zeros((n, 24))
        known = np.flatnonzero(hours >= 0)
        hot[known, hours[known]] = 1.0
        # contributions, weights and hours side by side: one pass of group sums (the same additions)
        x = np.concatenate([np.where(weights > 0, means * weights, 0.0), weights, hot], axis=1)
        for i, s in enumerate(self.scales):
            nblk = int(self._nblk[i])
            starts, lasts, complete = groups_of(nblk, n, s)
            tot = group_sums(x, starts, np.concatenate([self._sum[i], self._w[i], self._hacc[i]]))
            sums, ws, hrs = tot[:, :c], tot[:, c : 2 * c], tot[:, 2 * c :]
            bad = np.logical_or.reduceat(frozen, starts, axis=0)
            bad[0] |= self._bad[i]
            done = [g for g, full in enumerate(complete) if full]
            if done:  # the completed batches' means into the history, in order
                g = np.array(done[-self.history :])
                slots = (self._count[i] + len(done) - g.size + np.arange(g.size)) % self.history
                wg = ws[g]
                self._hist[i, slots] = np.where((wg > 0) & ~bad[g], sums[g] / np.where(wg > 0, wg, 1), np.nan)
                self._hours[i, slots] = hrs[g] / s
                self._count[i] += len(done)
                self._cache[i] = None
                self._series_cache.pop(i, None)
                self.version += len(done)
            if complete[-1]:
                self._sum[i], self._w[i], self._bad[i], self._hacc[i], self._nblk[i] = 0.0, 0.0, False, 0.0, 0
            else:
                self._sum[i], self._w[i], self._bad[i], self._hacc[i] = sums[-1], ws[-1], bad[-1], hrs[-1]
                self._nblk[i] = (nblk + lasts[-1]) % s + 1

    def ready(self, all_scales: bool = False, times: int = 1) -> bool:
        """Enough batches at the shortest scale for any estimate (at every scale: ``all_scales``;
        ``times`` the batches an estimate needs)."""
        return bool(self._count[-1 if all_scales else 0] >= times * self.min_batches)

    def ready_scale(self, i: int) -> bool:
        """Scale ``i`` has the batches an estimate needs."""
        return bool(self._count[i] >= self.min_batches)

    def set_seasonal(self, dev: np.ndarray | None, presence: np.ndarray | None = None) -> None:
        """Take this hour-of-day profile (``[24, channel]``, centred) out of every batch mean, each
        hour counted as the rows holding the channel's value do (``presence``, see
        :func:`stream.monitoring.seasonal.hour_mix`: a feature missing in the hours its cycle
        peaks read a design effect of ~1,400 from batches spanning those hours)."""
        same = dev is self._dev or (dev is not None and self._dev is not None and np.array_equal(dev, self._dev))
        self._dev, self._presence = dev, presence
        if not same:  # the same profile gives the same series and estimates
            self._cache = [None] * len(self.scales)
            self._series_cache = {}

    def _series(self, i: int) -> np.ndarray:
        """Scale ``i``'s batch means in time order, deseasonalised."""
        if i not in self._series_cache:  # read several times per refresh (estimates, levels, live mean)
            n = min(int(self._count[i]), self.history)
            order = np.arange(n) if self._count[i] <= self.history else \
                (np.arange(self.history) + int(self._count[i])) % self.history
            h = self._hist[i, order]
            self._series_cache[i] = h if self._dev is None else \
                h - hour_mix(self._hours[i, order], self._dev, None, self._presence)[0]
        return self._series_cache[i]

    def live_mean(self) -> np.ndarray:
        """Each score's mean over the shortest scale's history (NaN before any batch)."""
        series = self._series(0)
        if series.shape[0] == 0:
            return np.full(self.c, np.nan)
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return nanmean(series)
