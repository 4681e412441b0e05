"""One loss series (per labelled event, in join order) tested for a rise of its mean against a
reference: sliding windows, a studentised one-sided z-test whose variance is learned from the
series itself, and the buffers that date the change. :class:`stream.monitoring.concept_drift.
PerformanceMonitor` runs one per channel (the error rate or MAE of every labelled event, and
the miss rate of the labelled positives)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
from scipy import special

from stream.monitoring.dependence import DependenceTracker

__all__ = ["RiseTest", "change_point", "count_tail"]


def change_point(loss: np.ndarray) -> int:
    """Index where the mean of ``loss`` most likely rose: the CUSUM estimate, argmax of
    ``S_k - k/n S_n`` (less drawn to the ends than the least-squares split on sparse errors).

    >>> change_point(np.r_[np.zeros(300), np.ones(100)] * 0.5 + np.tile([0, 0.1], 200))
    300
    """
    loss = np.asarray(loss, dtype=np.float64)
    n = len(loss)
    if n < 2:
        return 0
    c = np.cumsum(loss)
    k = np.arange(1, n)
    return int(k[np.argmax(k / n * c[-1] - c[:-1])])  # a rise: the partial sum lags most there


def count_tail(rate: float, n: float, p0: float) -> float:
    """P(a Binomial(n, p0) count >= rate * n), continuous in ``n`` (the effective rows of a window
    of a rate with a design effect): the regularised incomplete beta ``I_p0(k, n - k + 1)``.

    A rate's z-test is normal only when its window expects many events: at the shipped fraud
    model's 1.3 % error rate a 200-label window expects 2.5 errors, and 11 of them read z = 4.85,
    past the 4.71 of the budget, where the count's own tail is 5.7e-5 against 1.25e-6: one false
    concept drift in 3.2 million i.i.d. labels, three times the budget (and 2 in 800,000 labels of
    the payments simulator).

    >>> f"{count_tail(11 / 200, 200.0, 0.012628):.2g}"   # scipy.stats.binom.sf(10, 200, 0.012628)
    '5.7e-05'
    >>> count_tail(0.0, 200.0, 0.01), count_tail(0.5, 200.0, 0.0)
    (1.0, 0.0)
    """
    k = rate * n
    if k <= 0.0:
        return 1.0
    if p0 <= 0.0:
        return 0.0
    return float(special.betainc(k, max(n - k, 0.0) + 1.0, min(p0, 1.0)))


class RiseTest:
    """Window tests for a rise of one loss series' mean.

    Every window length in ``windows`` is tested every ``window / checks_per_window`` values for
    a *rise* of the mean against the reference (``ref_n`` values with sum ``ref_sum`` and sum
    of squares ``ref_sq``), studentised with the series' long-run and slow variances learned from
    the series itself (:class:`stream.monitoring.dependence.DependenceTracker`, in blocks of
    ``block`` values, frozen while a drift is open: losses come in bursts and follow the day),
    one-sided at the Bonferroni level for ``run_length`` values between false alarms. The
    effect is the rise of the mean, relative to the reference when ``relative`` (MAE).

    Examples
    --------
    >>> t = RiseTest("error_rate", (100, 400), 4, run_length=1_000_000, block=20)
    >>> t.ref_n, t.ref_sum, t.ref_sq = 10_000, 1_000.0, 1_000.0   # a 10 % reference rate
    >>> rng = np.random.default_rng(1)
    >>> def run(loss):   # evaluate at every check point, as PerformanceMonitor does
    ...     return [f for _ in t.feed(loss, np.full(loss.size, np.nan), bool) for f in t.evaluate(0.05)]
    >>> run((rng.random(2000) < 0.1) * 1.0)
    []
    >>> fired = run((rng.random(400) < 0.3) * 1.0); fired[0]["window"], fired[0]["loss"] > 0.25
    (100, True)
    """

    def __init__(self, feature: str, windows: tuple[int, ...], checks_per_window: int, *, run_length: float,
                 block: int, relative: bool = False, reference_size: int = 0, binary: bool = False) -> None:
        self.feature = feature
        self.binary = binary  # losses of 0 or 1 (error and miss rates): their count's own tail too
        self.metric = f"{feature}_relative_increase" if relative else f"{feature}_increase"
        self.relative = relative
        self.windows = tuple(sorted(windows))
        self.steps = tuple(max(1, w // checks_per_window) for w in self.windows)
        self.alpha = [s / (run_length * len(self.windows)) for s in self.steps]
        self.z_crit = [float(-special.ndtri(a)) for a in self.alpha]
        self.block = int(block)
        self.reference_size = int(reference_size)  # values the reference still takes from the series
        self.ref_n, self.ref_sum, self.ref_sq = 0, 0.0, 0.0
        size = self.windows[-1]
        self._loss = np.zeros(size)
        self._times = np.full(size, np.nan)  # event times, when the caller knows them
        self.n = 0  # values seen
        self.since_reset = 0  # values since the reference was complete or the last drift closed
        self.tracker = DependenceTracker(1, self.block, scales=(2, 8, 32), history=64, min_batches=16,
                                         confidence=0.5)
        self._block_sum, self._block_n = 0.0, 0
        self.last_check: dict[int, dict[str, float]] = {}
        self._due: list[int] = []

    @property
    def reference_mean(self) -> float:
        return self.ref_sum / self.ref_n if self.ref_n else math.nan

    def feed(self, loss: np.ndarray, times: np.ndarray, frozen: Callable[[], bool]) -> Iterator[None]:
        """Store ``loss`` (with event ``times``); yield at every check point (then call :meth:`evaluate`).

        ``frozen()`` says whether a drift is open now (its blocks do not teach the tracker)."""
        pos, total = 0, loss.size
        while pos < total:
            if self.ref_n < self.reference_size:  # still building the reference from the series
                take = min(self.reference_size - self.ref_n, total - pos)
                seg = loss[pos : pos + take]
                self.ref_n += take
                self.ref_sum += float(seg.sum())
                self.ref_sq += float((seg * seg).sum())
            else:  # up to the next count at which some window is checked
                nxt = min((self.since_reset // st + 1) * st for st in self.steps)
                take = min(nxt - self.since_reset, total - pos)
                self.since_reset += take
            self._store(loss[pos : pos + take], times[pos : pos + take], frozen())
            pos += take
            if self.ref_n >= self.reference_size and take:
                self._due = [w for w, st in zip(self.windows, self.steps, strict=True)
                             if self.since_reset >= w and self.since_reset % st == 0]
                if any(self.since_reset % st == 0 for st in self.steps):
                    yield

    def _store(self, loss: np.ndarray, times: np.ndarray, frozen: bool) -> None:
        idx = (self.n + np.arange(loss.size)) % self._loss.size
        self._loss[idx] = loss
        self._times[idx] = times
        self.n += loss.size
        for v in loss.tolist():
            self._block_sum += v
            self._block_n += 1
            if self._block_n == self.block:
                self.tracker.add(np.array([self._block_sum / self.block]), np.array([float(self.block)]),
                                 np.array([frozen]))
                self._block_sum, self._block_n = 0.0, 0

    def _window(self, w: int) -> np.ndarray:
        end = self.n % self._loss.size
        return self._loss[end - w : end] if end >= w else np.concatenate([self._loss[end - w :], self._loss[:end]])

    def evaluate(self, gate: float) -> list[dict[str, Any]]:
        """Test the windows due at this check point; the evidence of those whose rise is
        significant and at least ``gate`` (``last_check`` keeps every window's figures)."""
        if not self.ref_n:
            return []
        fired: list[dict[str, Any]] = []
        ref_mean = self.reference_mean
        # (losses are at most 1e100; a holdout error past 1e150 would make ``**`` raise)
        g0 = max(self.ref_sq / self.ref_n - (ref_mean**2 if abs(ref_mean) < 1e150 else math.inf), 1e-12)
        ready = self.tracker.ready()
        lr, slow = self.tracker.estimate(np.array([ref_mean]), np.array([g0]), np.array([float(self.ref_n)]))
        for k, w in enumerate(self.windows):
            if w not in self._due:
                continue
            mean = float(self._window(w).mean())
            stat = (mean - ref_mean) / math.sqrt(float(lr[0]) / w + g0 / self.ref_n + float(slow[0]))
            p = float(special.ndtr(-stat))
            increase = (mean - ref_mean) / max(ref_mean, 1e-12) if self.relative else mean - ref_mean
            design = float(lr[0]) / g0
            if self.binary and p < self.alpha[k]:
                p = max(p, count_tail(mean, w / max(design, 1.0), ref_mean))
            self.last_check[w] = {"loss": mean, "reference_loss": ref_mean, "increase": increase, "p_value": p,
                                  "design_effect": design}
            if ready and p < self.alpha[k] and stat > self.z_crit[k] and increase >= gate:
                fired.append({"feature": self.feature, "test": "z", "statistic": float(stat),
                              "threshold": self.z_crit[k], "p_value": p, "alpha": self.alpha[k], "window": w,
                              "effect_metric": self.metric, "effect_size": float(increase),
                              "effect_threshold": gate, "n_reference": self.ref_n, "loss": mean,
                              "reference_loss": ref_mean, "design_effect": design})
        self._due = []
        return fired

    def change_event_ts(self, w: int) -> float | None:
        """When the mean most likely rose within the last ``w`` values, in event time."""
        w = min(w, self.n, self._loss.size)
        end = self.n % self._loss.size
        idx = np.arange(end - w, end) % self._loss.size
        times, loss = self._times[idx], self._loss[idx]
        known = ~np.isnan(times)
        if known.sum() < 2:
            return None
        order = np.argsort(times[known], kind="stable")
        return float(times[known][order][change_point(loss[known][order])])
