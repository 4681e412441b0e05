"""The daily profile of every score, learned from event times: the daily cycle taken out of window
means (see :mod:`stream.monitoring.dependence` for the dependence it is judged against)."""

from __future__ import annotations

from typing import NamedTuple, cast

import numpy as np
from scipy import special

__all__ = ["SeasonalProfile", "WithinHour", "hour_mix", "hour_presence", "within_hour"]


QUIET_SHARE = 0.05  # share of the reference's rows its hours below min_rows may hold together
ABSENT = 0.05  # an hour whose rows hold a channel's value less often than this: the value is absent then
PRESENCE_PRIOR_ROWS = 5.0  # an hour's share of rows holding a value, shrunk towards the day's by so many rows


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
        # the live rows' hour means (running, weights capped at memory_rows) and the reference's,
        # combined as they are read at the live design effect (_combined)
        self._mean = np.zeros((self.HOURS, self.c))
        self._w = np.zeros((self.HOURS, self.c))
        self._known = np.zeros(self.c, dtype=bool)  # channels whose profile the reference gave
        self._ref_mean = np.zeros((self.HOURS, self.c))
        self._w_ref = np.zeros((self.HOURS, self.c))  # the reference's rows behind each hour's mean
        self._ref_share: np.ndarray | None = None  # the reference's rows per hour, as shares
        # blocks per hour and visits of each hour (the days it was seen): the live traffic's mix of
        # hours is blocks per visit, whatever part of the last day has been seen
        self._blocks = np.zeros(self.HOURS)
        self._visits = np.zeros(self.HOURS)
        self._last_hour = -1
        self.version = 0
        self.presence: np.ndarray | None = None  # [24, channel]: rows with the channel's value, by hour
        self.settled = False  # the live design effect is known (set by the monitor): see _design
        self._absent: np.ndarray | None = None

    def seed(self, means: np.ndarray, weights: np.ndarray, min_rows: float,
             presence: np.ndarray | None = None) -> None:
        """Start from the reference's own hour-of-day means (``[24, channel]``, with their rows):
        a channel whose every hour has ``min_rows`` reference rows is usable at once (still only
        where the hours differ significantly); live blocks then add to their own means, read with
        the reference's at each one's precision (:meth:`_combined`).
        ``presence`` (``[24, channel]``, see :func:`hour_mix`): the share of each hour's rows
        that hold the channel's value; an hour where it has none does not hold a profile back."""
        self.presence = presence
        self._absent = presence < ABSENT if presence is not None else None  # hours without the channel's value
        w = np.where(np.isfinite(means) & (weights > 0), weights, 0.0)
        self._ref_mean = np.where(w > 0, np.nan_to_num(means), 0.0)
        self._w_ref = np.minimum(w, self.memory_rows)
        # hours too quiet for min_rows (a night at a few % of the day's traffic) do not hold the
        # whole profile back when together they carry at most QUIET_SHARE of the rows: their means
        # count at their own noise (g0 / rows, see _mean_variance). Held back, the cycle stayed in the
        # long batches that span a night, read as dependence (design effect ~25 -> ~180 on day 3),
        # and a 0.5 sd shift was never found.
        quiet = np.where(w >= min_rows, 0.0, w).sum(axis=0) <= QUIET_SHARE * w.sum(axis=0)
        seen = (w > 0) | self._absent if self._absent is not None else w > 0
        self._known = cast(np.ndarray, seen.all(axis=0) & quiet)
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
        return frozen & (self._filled() | self._known)

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

    @property
    def from_reference(self) -> np.ndarray:
        """Channels whose profile the reference's event times gave (usable from the first row)."""
        return self._known

    def state(self) -> tuple[np.ndarray, np.ndarray]:
        """Copies of the hour means and weights (``[24, channel]``), for :meth:`restore`."""
        return self._mean.copy(), self._w.copy()

    def restore(self, state: tuple[np.ndarray, ...], channels: np.ndarray) -> None:
        """Put ``channels`` (a mask) back to a :meth:`state`."""
        self._mean[:, channels], self._w[:, channels] = state[0][:, channels], state[1][:, channels]
        self.version += 1

    def _filled(self) -> np.ndarray:
        """Per channel: every hour has ``min_rows`` rows, reference and live."""
        return cast(np.ndarray, (self._w_ref + self._w >= self.min_rows).all(axis=0))

    def _design(self, lr: np.ndarray, g0: np.ndarray | None) -> np.ndarray | float:
        """The live rows' design effect ``lr / g0`` (at least 1), once :attr:`settled`; 1 before
        (or without ``g0``): the young estimates are upper bounds from a few dozen batches, and
        early live rows weighed by them left a step in the first hours in the reference's profile,
        where, counted as dependence, it held the first windows back (found at 20,000-21,000 rows
        on 4 of 16 seeds, against 8,400-14,800)."""
        return 1.0 if g0 is None or not self.settled else np.maximum(lr / np.maximum(g0, 1e-12), 1.0)

    def _combined(self, design: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
        """Each hour's mean over reference and live rows, a live row weighing ``1 / design``
        (inverse-variance weights: a reference row is an independent draw, a live row of persistent
        traffic tells ``D`` times less), and the weight behind it.

        Weighed by rows, a day of live rows on AR(1) 0.9 traffic (D ~ 20, 833 rows an hour) took 80 %
        of an hour's mean and made it four times noisier than the reference's 833 rows alone, for
        days; the CUSUM, which adds up an hour's error over its batches, opened false drifts on it."""
        live = self._w / design
        total = self._w_ref + live
        mean = np.where(total > 0, (self._w_ref * self._ref_mean + live * self._mean) / np.maximum(total, 1e-300), 0.0)
        return mean, total

    def _mean_variance(self, lr: np.ndarray, g0: np.ndarray | None) -> np.ndarray:
        """Variance of each hour's mean (:meth:`_combined`): ``lr`` per live row, ``g0`` per reference row.

        The reference is an i.i.d. sample (a training set), as the tests take it for its overall
        mean (``g0 / m``): its hour means carry no dependence. Judged at the live design effect
        (10-25 on bursty, autocorrelated traffic) a reference's daily cycle read as noise: bins of
        a feature whose mean follows the day went without their profile until a day of live rows
        was in, and a day's first hours opened false drifts."""
        live = np.maximum(lr, 1e-12)
        d = self._design(lr, g0)
        total = self._w_ref + self._w / d  # the weight behind each hour's mean (as _combined's)
        ref = self._w_ref * (live if g0 is None else np.maximum(g0, 1e-12))
        return np.where(total > 0, (ref + self._w / (d * d) * live) / np.maximum(total, 1e-12) ** 2, live)

    def centred(self, lr: np.ndarray, g0: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(s_h - s_bar)`` per hour and channel (zero where not used), and the use mask per channel;
        ``lr`` and ``g0`` the per-row variances of live and reference rows (see :meth:`_mean_variance`)."""
        full = self._filled() | self._known  # one flag per channel
        if not full.any():
            return np.zeros_like(self._mean), full
        mean, _ = self._combined(self._design(lr, g0))
        # centred on the traffic's mix of hours: rows per visit of each hour (a day and a half seen
        # counts some hours twice in the rows themselves, a constant offset of the whole profile)
        mix = self.visit_blocks()[:, None] * (self.presence if self.presence is not None else 1.0)  # the channel's own rows
        pi = np.broadcast_to(mix / np.maximum(mix.sum(axis=0), 1e-12), self._w.shape)
        if self._ref_share is not None:
            pi = np.where(self._known, self._ref_share, pi)
        centre = (pi * mean).sum(axis=0)
        dev = mean - centre
        if self._absent is not None:  # an hour without the channel's value has no mean of it
            dev = np.where(self._absent, 0.0, dev)
        chi2 = (dev**2 / self._mean_variance(lr, g0)).sum(axis=0)
        use = full & (chi2 > self.crit)
        return np.where(use, dev, 0.0), use

    def visit_blocks(self) -> np.ndarray:
        """Live blocks per visit of each hour of the day (0 for an hour not seen yet): how many
        consecutive blocks share that hour's profile, and so its estimation error."""
        return np.where(self._visits > 0, self._blocks / np.maximum(self._visits, 1.0), 0.0)

    def centred_shares(self, design: float) -> np.ndarray | None:
        """The centred profile of share channels (indicator means ``m``), judged at ``design`` times
        the binomial variance ``m (1 - m)`` per row; None when no channel uses it."""
        mean, w = self._combined(1.0)
        full = (w > 0).any(axis=0)
        m = np.clip((mean * w).sum(axis=0) / np.maximum(w.sum(axis=0), 1.0), 0.0, 1.0)
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
        adj, noise = hour_mix(rows_per_hour, dev, np.where(use, self._mean_variance(lr, g0), 0.0), self.presence)
        return adj, np.asarray(noise)


def hour_mix(hours: np.ndarray, dev: np.ndarray, var: np.ndarray | None,
             presence: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | float]:
    """The seasonal part of windows' means per channel and the variance its estimation adds, for
    windows holding ``hours`` rows in each hour (``[..., 24]``), the centred profile ``dev`` and
    its variance ``var`` (``[24, channel]``; None: the part alone, the variance read as 0.0: the
    batch means' history is deseasonalised at every refresh, and the variance was half the cost).

    A channel's mean is over the rows holding its value: with ``presence`` (the share of each
    hour's rows that do) its hours count as its rows do. A feature missing half the time in the
    mornings, when its daily cycle peaks, read a 9.6-sd drift in a window spanning the morning
    and the afternoon when every row counted.

    >>> dev = np.zeros((24, 1)); dev[6] = 1.0        # hour 6 one unit above the day
    >>> hours = np.zeros(24); hours[[6, 15]] = 100.0  # a window: half at 6 h, half at 15 h
    >>> presence = np.ones((24, 1)); presence[6] = 0.5
    >>> flat = np.zeros((24, 1))
    >>> float(hour_mix(hours, dev, flat, None)[0][0]), round(float(hour_mix(hours, dev, flat, presence)[0][0]), 3)
    (0.5, 0.333)
    """
    if presence is None:
        share = hours / np.maximum(hours.sum(axis=-1, keepdims=True), 1.0)
        # einsum, not BLAS: tiny products, and BLAS threads stall on a busy machine
        adj = np.einsum("...h,hc->...c", share, dev)
        return adj, 0.0 if var is None else np.einsum("...h,hc->...c", share * share, var)
    den = np.maximum(np.einsum("...h,hc->...c", hours, presence), 1e-12)
    adj = np.einsum("...h,hc->...c", hours, presence * dev) / den
    if var is None:
        return adj, 0.0
    return adj, np.einsum("...h,hc->...c", hours * hours, presence * presence * var) / (den * den)


class WithinHour(NamedTuple):
    """The reference's daily cycle in the numeric features' normal scores (see :func:`within_hour`).
    Rows ``0-23`` are the hours of the day; row 24 (index -1) serves rows without an event time."""

    offset: np.ndarray  # [25, feature]: each hour's mean score less the day's (0 for a flat feature)
    scale: np.ndarray  # [25, feature]: sqrt(total / within-hour variance), to keep the scores' spread
    rho: np.ndarray  # [feature, feature]: the correlation within an hour


MIN_HOUR_ROWS = 30  # an hour's mean score from fewer rows is left out (a quiet night): offset 0


def within_hour(hourly: np.ndarray, scores: np.ndarray, rho: np.ndarray, alpha: float) -> WithinHour | None:
    """The correlation of numeric features *within* an hour of the day, from the reference's counts
    per hour (``[24, feature, bin + missing]``), its bins' normal scores (``[feature, bin]``) and its
    overall correlation of those scores; None when no feature's hour means differ (chi-square at
    ``alpha`` over the hours with ``MIN_HOUR_ROWS`` rows, which must hold 95 % of the rows).

    Features that follow the day together are correlated across the day (the training set's
    ``rho``), not within the hours a window spans: a window's correlation sat ~0.2 below the
    reference's for good on traffic whose amounts and levels both rise in the day. Scores taken
    less their hour's mean compare like with like: the live window's correlation, of scores less
    their hour's mean, against this within-hour correlation, from the law of total covariance
    ``cov = within + between`` with ``between = sum_h p_h d_i(h) d_j(h)``.

    >>> rng = np.random.default_rng(0)
    >>> hour = rng.integers(0, 24, 50_000)
    >>> season = np.sin(2 * np.pi * hour / 24)
    >>> x, y = season + rng.normal(size=hour.size), season + rng.normal(size=hour.size)  # independent within an hour
    >>> edges = np.quantile(np.r_[x, y], np.linspace(0, 1, 11)[1:-1])
    >>> bins = np.stack([np.searchsorted(edges, v, side="right") for v in (x, y)], axis=1)
    >>> hourly = np.zeros((24, 2, 11))
    >>> np.add.at(hourly, (np.repeat(hour, 2), np.tile([0, 1], hour.size), bins.ravel()), 1)
    >>> from scipy import special
    >>> grid = special.ndtri((np.arange(10) + 0.5) / 10)
    >>> z = grid[bins]
    >>> overall = np.corrcoef(z.T)
    >>> round(float(overall[0, 1]), 2), round(float(within_hour(hourly, np.stack([grid, grid]), overall, 0.01).rho[0, 1]), 2)
    (0.34, 0.01)
    """
    k = scores.shape[1]
    counts = hourly[:, :, :k]
    n_h = counts.sum(axis=2)  # [24, feature]
    rows_h = hourly.sum(axis=2)[:, 0] if hourly.shape[1] else np.zeros(24)  # every row of the hour
    n = np.maximum(n_h.sum(axis=0), 1.0)
    s1, s2 = (counts * scores[None]).sum(axis=2), (counts * scores[None] ** 2).sum(axis=2)
    mean = s1.sum(axis=0) / n
    var = s2.sum(axis=0) / n - mean**2
    counted = n_h >= MIN_HOUR_ROWS
    dev = np.where(counted, s1 / np.maximum(n_h, 1.0) - mean, 0.0)
    between = (n_h * dev**2).sum(axis=0) / n
    within = var - between
    chi2 = (n_h * dev**2).sum(axis=0) / np.maximum(within, 1e-12)
    dof = np.maximum(counted.sum(axis=0) - 1, 1)
    daily = ((n_h * counted).sum(axis=0) >= 0.95 * n) & (within > 0.05 * var) & (chi2 > special.chdtri(dof, alpha))
    if not daily.any():
        return None
    dev = np.where(daily, dev, 0.0)
    within = np.where(daily, within, var)
    rho_w = _pairs_within(n_h, rows_h, s1, s2, counted & daily, mean, within, rho)
    np.fill_diagonal(rho_w, 1.0)
    scale = np.sqrt(np.maximum(var, 1e-12) / np.maximum(within, 1e-12))
    return WithinHour(offset=np.vstack([dev, np.zeros(dev.shape[1])]),
                      scale=np.vstack([np.broadcast_to(scale, dev.shape), np.ones(dev.shape[1])]), rho=rho_w)


def _pairs_within(n_h: np.ndarray, rows_h: np.ndarray, s1: np.ndarray, s2: np.ndarray, used: np.ndarray,
                  mean: np.ndarray, within: np.ndarray, rho: np.ndarray) -> np.ndarray:
    """Each pair's within-hour correlation from its pairwise-complete ``rho``: the pair's rows are
    those where both are present, so each hour weighs ``rows_h * present_i(h) * present_j(h)``
    (missing values independent of each other within an hour). A feature missing in some hours of
    the day (a sensor off in the mornings) otherwise moved a pair of features independent within
    the hour to a within-hour correlation of 0.13-0.28 and opened false drifts. ``used`` marks
    the hour means used (daily features, hours with enough rows); other hours count at the
    feature's mean and its within-hour variance."""
    nz = np.maximum(n_h, 1.0)
    m = np.where(used, s1 / nz, mean)
    v = np.where(used, np.maximum(s2 / nz - (s1 / nz) ** 2, 0.0), within)
    w = np.einsum("hi,hj->hij", n_h, n_h) / np.maximum(rows_h, 1.0)[:, None, None]
    big_w = np.maximum(w.sum(axis=0), 1e-12)
    mi = np.einsum("hij,hi->ij", w, m) / big_w  # feature i's mean over the pair's rows
    mij = np.einsum("hij,hi,hj->ij", w, m, m) / big_w
    qi = np.einsum("hij,hi->ij", w, m * m + v) / big_w
    wi = np.einsum("hij,hi->ij", w, v) / big_w  # i's within-hour variance over the pair's rows
    var_i = np.maximum(qi - mi**2, 1e-12)
    cov_between = mij - mi * mi.T
    rho_w = (rho * np.sqrt(var_i * var_i.T) - cov_between) / np.sqrt(np.maximum(wi, 1e-12) * np.maximum(wi.T, 1e-12))
    rho_w = np.where(w.sum(axis=0) > 0, rho_w, rho)
    return np.clip(rho_w, -0.999, 0.999)


def hour_presence(num: np.ndarray, cat: np.ndarray, k: int, kc: int, pairs: tuple[np.ndarray, np.ndarray],
                  alpha: float) -> np.ndarray | None:
    """Per hour and channel of a drift monitor (reference counts per hour ``num``
    ``[24, numeric feature, k bins + missing]`` and ``cat`` ``[24, categorical feature, kc slots +
    missing]``, the numeric ``pairs``), the share of the reference's rows holding the channel's value
    (present features; a pair's both), relative to the channel's busiest hour; None when no
    feature's missing rate follows the day (chi-square over the hours at ``alpha``:
    missing equally in every hour, an hour's own sampling noise would only add noise). An
    hour's share is shrunk towards the day's by ``PRESENCE_PRIOR_ROWS`` rows: a quiet hour whose
    few reference rows happen to miss the value is not taken as absent."""

    def present(c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # [24, feature], [feature]
        rows, miss = c.sum(axis=2), c[:, :, -1]
        q = miss.sum(axis=0) / np.maximum(rows.sum(axis=0), 1.0)  # the day's missing rate
        var = rows * q * (1.0 - q)
        chi2 = np.where(var > 0, (miss - rows * q) ** 2 / np.maximum(var, 1e-12), 0.0).sum(axis=0)
        dof = np.maximum((rows > 0).sum(axis=0) - 1, 1)
        daily = (q > 0) & (chi2 > special.chdtri(dof, alpha))
        shrunk = (rows - miss + PRESENCE_PRIOR_ROWS * (1.0 - q)) / (rows + PRESENCE_PRIOR_ROWS)
        return np.where(daily, shrunk, 1.0), daily

    fn, fc = num.shape[1], cat.shape[1]
    (pn, dn), (pc, dc) = present(num), present(cat)
    if not (dn.any() or dc.any()):
        return None
    one = np.ones((24, fn + fc))
    out = np.concatenate([np.repeat(pn, k, axis=1), np.repeat(pn, k - 1, axis=1), pn, pn, one[:, :fn],
                          np.repeat(pc, kc, axis=1), one[:, fn:], pn[:, pairs[0]] * pn[:, pairs[1]]],
                         axis=1)
    return out / np.maximum(out.max(axis=0), 1e-12)
