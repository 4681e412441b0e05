"""The daily profile of every score, learned from event times: the daily cycle taken out of window
means (see :mod:`stream.monitoring.dependence` for the dependence it is judged against)."""

from __future__ import annotations

from typing import cast

import numpy as np
from scipy import special

__all__ = ["SeasonalProfile"]


class SeasonalProfile:
    """Hour-of-day profile of every channel, learned from the live stream (event time, UTC).

    ``s_h`` is a running mean of the block means in hour ``h`` (weights capped at
    ``memory_rows`` per hour, so it follows slow changes over weeks). Centred on the
    traffic-weighted mean over the day it absorbs a daily *shape*, not a level: a
    step that lasts shifts every hour alike and stays visible. It is used for a
    channel only once every hour has at least ``min_rows`` rows and the hours differ
    significantly (chi-square of the hour means at level ``alpha``).

    Examples
    --------
    >>> sp = SeasonalProfile(1, min_rows=200)
    >>> for day in range(3):
    ...     for h in range(24):
    ...         for _ in range(3):
    ...             sp.add(h, np.array([0.5 + 0.1 * np.sin(2 * np.pi * h / 24)]), np.array([100.0]), np.zeros(1, bool))
    >>> adj, noise = sp.adjustment(np.bincount([6, 6, 7], minlength=24) * 100.0, np.array([1e-4]))
    >>> round(float(adj[0]), 3)   # hours 6-7 sit ~0.1 above the daily mean
    0.099
    """

    HOURS = 24

    def __init__(self, n_channels: int, min_rows: float = 2_000.0, memory_rows: float = 5_000_000.0,
                 alpha: float = 1e-4) -> None:
        self.c = int(n_channels)
        self.min_rows, self.memory_rows = float(min_rows), float(memory_rows)
        self.crit = float(special.chdtri(self.HOURS - 1, alpha))  # scipy.stats.chi2.isf
        self._mean = np.zeros((self.HOURS, self.c))
        self._w = np.zeros((self.HOURS, self.c))
        self._known = np.zeros(self.c, dtype=bool)  # channels whose profile the reference gave
        self._w_ref = np.zeros((self.HOURS, self.c))  # the reference's rows behind each hour's mean
        self._ref_share: np.ndarray | None = None  # the reference's rows per hour, as shares
        # blocks per hour and visits of each hour (the days it was seen): the live traffic's mix of
        # hours is blocks per visit, whatever part of the last day has been seen
        self._blocks = np.zeros(self.HOURS)
        self._visits = np.zeros(self.HOURS)
        self._last_hour = -1
        self.version = 0

    def seed(self, means: np.ndarray, weights: np.ndarray, min_rows: float) -> None:
        """Start from the reference's own hour-of-day means (``[24, channel]``, with their rows):
        a channel whose every hour has ``min_rows`` reference rows is usable at once (still only
        where the hours differ significantly); live blocks then add to the same means."""
        w = np.where(np.isfinite(means) & (weights > 0), weights, 0.0)
        self._mean = np.where(w > 0, np.nan_to_num(means), 0.0)
        self._w = np.minimum(w, self.memory_rows)
        self._w_ref = self._w.copy()
        self._known = cast(np.ndarray, (w >= min_rows).all(axis=0))
        # the reference level is its traffic's mix of hours: profiles are centred on that mix, not
        # on the live rows' (a day and a half seen counts some hours twice: a constant offset)
        self._ref_share = w / np.maximum(w.sum(axis=0), 1.0)
        self.version += 1

    def _still_frozen(self, frozen: np.ndarray) -> np.ndarray:
        """The frozen flags that hold: a channel whose profile has never been usable learns anyway.
        Frozen from its first rows, a feature that opened before a day was seen (a daily cycle
        without event times in the reference: an hour away from the daily mean) never learned the
        cycle, and closed and opened again with it for good (7 of 10 seasonal streams at 100,000
        events a day). Until every hour has its rows the profile takes nothing out, and it is
        centred on the day, so a step learned into it moves every hour alike once a day is seen."""
        return frozen & ((self._w >= self.min_rows).all(axis=0) | self._known)

    def add(self, hour: int, means: np.ndarray, weights: np.ndarray, frozen: np.ndarray) -> None:
        """One block in ``hour``: per channel its mean, weight and frozen flag."""
        w = np.where(self._still_frozen(frozen) | ~(weights > 0), 0.0, weights)
        new = np.minimum(self._w[hour] + w, self.memory_rows)
        step = np.where(new > 0, w / np.where(new > 0, new, 1.0), 0.0)
        self._mean[hour] += step * (np.nan_to_num(means) - self._mean[hour])
        self._w[hour] = new
        self._count_hours(np.array([hour]))
        self.version += 1

    def _count_hours(self, hours: np.ndarray) -> None:
        known = hours[hours >= 0]
        if known.size == 0:
            return
        entered = np.flatnonzero(np.diff(np.concatenate([[self._last_hour], known])) != 0)
        np.add.at(self._visits, known[entered], 1.0)
        np.add.at(self._blocks, known, 1.0)
        self._last_hour = int(known[-1])

    def add_many(self, hours: np.ndarray, means: np.ndarray, weights: np.ndarray, frozen: np.ndarray) -> None:
        """Several blocks (``[n, channel]``) with their hours."""
        self._count_hours(hours)
        idx = np.flatnonzero(hours >= 0)
        if idx.size == 0:
            return
        h = hours[idx]
        # the r-th block of every hour in one step: per hour the same updates in the same order as
        # block by block (hours are independent), so the same arithmetic however rows are batched
        order = np.argsort(h, kind="stable")
        first = np.searchsorted(h[order], h[order], side="left")
        rank = np.empty(idx.size, dtype=np.int64)
        rank[order] = np.arange(idx.size) - first
        w_all = np.where(self._still_frozen(frozen[idx]) | ~(weights[idx] > 0), 0.0, weights[idx])
        x_all = means[idx]
        x_all = x_all if np.isfinite(x_all).all() else np.nan_to_num(x_all)  # fancy indexing: a copy
        for r in range(int(rank.max()) + 1):
            sel = np.flatnonzero(rank == r)
            hr, w = h[sel], w_all[sel]
            new = np.minimum(self._w[hr] + w, self.memory_rows)
            step = np.where(new > 0, w / np.where(new > 0, new, 1.0), 0.0)
            self._mean[hr] += step * (x_all[sel] - self._mean[hr])
            self._w[hr] = new
        self.version += idx.size

    def _mean_variance(self, lr: np.ndarray, g0: np.ndarray | None) -> np.ndarray:
        """Variance of each hour's mean: ``lr`` per live row, ``g0`` per reference row.

        The reference is an i.i.d. sample (a training set), as the tests take it for its overall
        mean (``g0 / m``): its hour means carry no dependence. Judged at the live design effect
        (10-25 on bursty, autocorrelated traffic) a reference's daily cycle read as noise: bins of
        a feature whose mean follows the day went without their profile until a day of live rows
        was in, and a day's first hours opened false drifts. Once an hour's weight reaches
        ``memory_rows`` the reference's part fades: all rows count as live."""
        live = np.maximum(lr, 1e-12)
        w = np.maximum(self._w, 1.0)
        if g0 is None:
            return live / w
        mixed = (self._w > 0) & (self._w < self.memory_rows)  # _w only grows from the reference's _w_ref
        return np.where(mixed, (self._w_ref * np.maximum(g0, 1e-12) + (w - self._w_ref) * live) / (w * w), live / w)

    def centred(self, lr: np.ndarray, g0: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(s_h - s_bar)`` per hour and channel (zero where not used), and the use mask per channel;
        ``lr`` and ``g0`` the per-row variances of live and reference rows (see :meth:`_mean_variance`)."""
        full = cast(np.ndarray, (self._w >= self.min_rows).all(axis=0)) | self._known  # one flag per channel
        if not full.any():
            return np.zeros_like(self._mean), full
        # centred on the traffic's mix of hours: rows per visit of each hour (a day and a half seen
        # counts some hours twice in the rows themselves, a constant offset of the whole profile)
        rate = self._blocks / np.maximum(self._visits, 1.0)
        pi = np.broadcast_to((rate / max(rate.sum(), 1e-12))[:, None], self._w.shape)
        if self._ref_share is not None:
            pi = np.where(self._known, self._ref_share, pi)
        centre = (pi * self._mean).sum(axis=0)
        dev = self._mean - centre
        chi2 = (dev**2 / self._mean_variance(lr, g0)).sum(axis=0)
        use = full & (chi2 > self.crit)
        return np.where(use, dev, 0.0), use

    def centred_shares(self, design: float) -> np.ndarray | None:
        """The centred profile of share channels (indicator means ``m``), judged at ``design`` times
        the binomial variance ``m (1 - m)`` per row; None when no channel uses it."""
        full = (self._w > 0).any(axis=0)
        m = np.clip((self._mean * self._w).sum(axis=0) / np.maximum(self._w.sum(axis=0), 1.0), 0.0, 1.0)
        dev, use = self.centred(np.where(full, design * np.maximum(m * (1.0 - m), 1e-6), 1.0))
        return dev if use.any() else None

    def centred_with_noise(self, lr: np.ndarray, g0: np.ndarray | None = None) -> tuple[np.ndarray | None, np.ndarray | None]:
        """The centred profile and its estimation variance per hour (see :meth:`_mean_variance`),
        or ``(None, None)`` when no channel uses it."""
        dev, use = self.centred(lr, g0)
        if not use.any():
            return None, None
        return dev, np.where(use, self._mean_variance(lr, g0), 0.0)

    def adjustment(self, rows_per_hour: np.ndarray, lr: np.ndarray,
                   g0: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """For a window with ``rows_per_hour`` rows in each hour: the seasonal part of its mean per
        channel, and the variance the profile's own estimation error adds."""
        dev, use = self.centred(lr, g0)
        share = rows_per_hour / max(float(rows_per_hour.sum()), 1.0)
        adj = np.einsum("h,hc->c", share, dev)
        noise = np.where(use, (share[:, None] ** 2 * self._mean_variance(lr, g0)).sum(axis=0), 0.0)
        return adj, noise
