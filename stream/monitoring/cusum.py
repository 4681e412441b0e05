"""Two-sided CUSUM on standardised batch means: small persistent shifts, found at the speed limit.

A sliding window sees a step only as the share of its rows after the change grows; on
persistent traffic (a design effect of 20+) that costs thousands of rows. Page's CUSUM
``S = max(0, S + z - k)`` on batch means standardised with the *measured* long-run and slow
variances (Runger & Willemain 1995: CUSUM on batch means much longer than the dependence)
accumulates the evidence instead. The alarm level ``h`` comes from Siegmund's approximation of
the in-control run length, ``ARL ~ (exp(2 k b) - 2 k b - 1) / (2 k^2)`` with ``b = h + 1.166``,
solved for the share of the false-alarm budget each score and side gets.

Examples
--------
>>> h = alarm_level(arl_batches=500_000, k=0.5)
>>> round(h, 1)
11.3
>>> c = Cusum(1, k=0.5, h=h)
>>> rng = np.random.default_rng(0)
>>> hits = [bool(c.step(np.array([z]), np.array([z]))[0]) for z in rng.normal(size=2000)]
>>> any(hits)
False
>>> hits = [bool(c.step(np.array([z]), np.array([z]))[0]) for z in rng.normal(1.5, 1, size=40)]
>>> 5 < hits.index(True) < 25   # a 1.5 sd shift per batch: about h / (1.5 - k) batches
True
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["Cusum", "Hold", "alarm_level", "run_length"]


def alarm_level(arl_batches: float, k: float) -> float:
    """``h`` whose in-control average run length (in batches) is ``arl_batches`` (Siegmund)."""
    b = 1.0
    for _ in range(50):  # fixed point of exp(2kb) = 2k^2 ARL + 2kb + 1
        b = math.log(2 * k * k * arl_batches + 2 * k * b + 1) / (2 * k)
    return max(b - 1.166, 0.5)


def run_length(h: float, k: float) -> float:
    """Siegmund's in-control average run length (in batches) of a one-sided CUSUM at level ``h``;
    ``1 / run_length(statistic, k)`` serves as the per-batch p-value of a CUSUM alarm.

    >>> round(run_length(alarm_level(500_000, 0.5), 0.5))
    500000
    """
    b = 2.0 * k * (h + 1.166)
    return float((math.exp(min(b, 700.0)) - b - 1.0) / (2.0 * k * k))


class Cusum:
    """Two-sided CUSUM per channel, with the run's mean shift for an effect-size gate."""

    def __init__(self, n_channels: int, k: float, h: float, *, upper_only: bool = False,
                 levels: np.ndarray | None = None) -> None:
        self.k, self.h = float(k), float(h)
        # per channel (a weighted budget: some channels at a higher level than ``h``)
        self.levels = np.full(n_channels, self.h) if levels is None else np.asarray(levels, dtype=float)
        self.upper_only = upper_only  # a statistic whose low values are no evidence (a chi-square)
        self.pos = np.zeros(n_channels)
        self.neg = np.zeros(n_channels)
        self.shift_sum = np.zeros(n_channels)  # sum of (standardised-by-sd) deviations over the run
        self.run = np.zeros(n_channels)  # batches since the statistic last sat at zero

    def step(self, z: np.ndarray, shift: np.ndarray, active: np.ndarray | None = None) -> np.ndarray:
        """One batch: ``z`` standardised deviations, ``shift`` deviations in score sd; channels not
        ``active`` stay at zero. Returns the channels whose statistic passes ``h``."""
        # in place: one step per block, and numpy's fixed cost per call is most of it
        pos = self.pos + z
        pos -= self.k
        np.maximum(0.0, pos, out=pos)
        neg = self.neg - z
        neg -= self.k
        np.maximum(0.0, neg, out=neg)
        if self.upper_only:
            neg[:] = 0.0
        idle = pos + neg == 0  # both zero: neither is negative
        if active is not None:
            off = ~active
            pos[off] = neg[off] = 0.0
            idle |= off
        self.pos, self.neg = pos, neg
        self.shift_sum += shift
        self.shift_sum[idle] = 0.0
        self.run += 1
        self.run[idle] = 0.0
        return np.maximum(pos, neg) > self.levels

    def reset(self, channels: np.ndarray) -> None:
        """Start ``channels`` afresh (a drift opened or closed on them)."""
        for a in (self.pos, self.neg, self.shift_sum, self.run):
            a[channels] = 0.0

    def statistic(self) -> np.ndarray:
        return np.maximum(self.pos, self.neg)

    def mean_shift(self) -> np.ndarray:
        """Mean deviation over the current run, in score standard deviations."""
        return np.abs(self.shift_sum) / np.maximum(self.run, 1.0)


class Hold:
    """Whether an open drift's channels still show their shift: per channel a two-sided CUSUM
    with reference value ``r``, at least ``k`` and half the effect gate, capped at ``4 r``; a
    channel holds while its statistic is ``2 r`` or more.

    A drift closes when its windows are calm, but a 2,000-row window cannot tell a drift that
    ended from one that shrank below what 2,000 rows see (the demo's score came most of the way
    back, closed, and its residual shift opened it again 14,000 rows later through the CUSUM).
    Once the shift is gone (z ~ 0) the statistic falls by ``r`` a batch: released after about
    two batches. A shift at the gate (``z >= 2 r``) keeps it at the cap, and a dip of ``2 r``
    against a drift of ``r`` a batch is rare (``exp(-4 r^2)``, Brownian approximation).

    ``z`` are a batch's standardised deviations, ``scale`` the sd of a batch mean in score sd
    (``shift = z / scale``).

    >>> hold = Hold(min_shift=np.array([0.1, 0.1]), k=1.0)
    >>> scale, on = np.array([20.0, 20.0]), np.array([True, True])
    >>> for _ in range(6):   # channel 0 shifted by the full gate (z = 2), channel 1 by a third of it
    ...     hold.step(np.array([2.0, 0.67]), scale, on)
    >>> [hold.holding(np.array([c == 0, c == 1])) for c in (0, 1)]
    [True, False]
    >>> states = []
    >>> for _ in range(4):   # the shift is gone: 4 -> 3, 2, 1, 0
    ...     hold.step(np.zeros(2), scale, on)
    ...     states.append(hold.holding(np.array([True, False])))
    >>> states
    [True, True, False, False]
    """

    def __init__(self, min_shift: np.ndarray, k: float) -> None:
        self.half = 0.5 * np.asarray(min_shift, dtype=float)
        self.k = float(k)
        self.pos = np.zeros(self.half.size)
        self.neg = np.zeros(self.half.size)
        self.ref = np.full(self.half.size, self.k)

    def step(self, z: np.ndarray, scale: np.ndarray, active: np.ndarray) -> None:
        """One batch; channels not ``active`` (of no open drift, or without rows) sit at zero."""
        self.ref = ref = np.maximum(self.k, self.half * scale)
        self.pos = np.where(active, np.clip(self.pos + z - ref, 0.0, 4.0 * ref), 0.0)
        self.neg = np.where(active, np.clip(self.neg - z - ref, 0.0, 4.0 * ref), 0.0)

    def holding(self, channels: np.ndarray) -> bool:
        """Any of ``channels`` still at ``2 r`` or above."""
        return bool((np.maximum(self.pos, self.neg)[channels] >= 2.0 * self.ref[channels]).any())

    def reset(self, channels: np.ndarray) -> None:
        self.pos[channels] = self.neg[channels] = 0.0
