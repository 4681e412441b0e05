"""Concept drift on joined labels: rolling performance of a model version and calibrated tests
for a rise of its loss against the model card's holdout reference, with the change point
that dates the drift's onset in event time."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from stream.monitoring.drift import DriftEvent
from stream.monitoring.loss_rise import RiseTest, change_point
from stream.monitoring.performance_estimate import _auc

if TYPE_CHECKING:
    from stream.config import PerformanceSettings

__all__ = ["PerformanceMonitor", "change_point", "holdout_miss_rate", "holdout_reference"]

MAX_LOSS = 1e100  # a regression's absolute error counts at most this (its square stays finite)
# ... and at most this many times the reference's typical error (the 90th percentile of the first
# labels' errors, or twice the holdout MAE: about 16 sd of a normal error either way), so that one
# absurd label (a unit slip, 1e90) cannot make the reference's mean, its variance (at 100 times,
# one label in 2,000 multiplied the reference variance by 13: no rise was significant) or a
# 200-label window's mean what it likes; a rise of the errors' bulk is what the test is for
LOSS_CAP = 10.0


def holdout_reference(card: dict[str, Any]) -> tuple[float, int] | None:
    """Reference loss and its sample size from a model card's holdout metrics, or None.

    Classifiers: the error rate at the operating threshold, ``FN + FP`` from the holdout's
    recall ``R``, precision ``P`` and positive rate ``pi``: ``(1 - R) pi + R pi (1 / P - 1)``.
    Regression: the holdout MAE.

    Examples
    --------
    >>> card = {"task": "classification", "training": {"rows_test": 9000, "metrics":
    ...         {"recall": 0.8, "precision": 0.9, "positive_rate": 0.05}}}
    >>> ref, n = holdout_reference(card)
    >>> round(ref, 4), n
    (0.0144, 9000)
    """
    training = card.get("training") or {}
    metrics, n = training.get("metrics") or {}, int(training.get("rows_test") or 0)
    try:
        if card.get("task", "classification") == "regression":
            loss = float(metrics["mae"])
        else:
            r, p, pi = float(metrics["recall"]), float(metrics["precision"]), float(metrics["positive_rate"])
            loss = (1 - r) * pi + (r * pi * (1 / p - 1) if p > 0 else 0.0)
    except (KeyError, TypeError, ValueError):
        return None
    return (loss, n) if n > 0 and math.isfinite(loss) else None


def holdout_miss_rate(card: dict[str, Any]) -> tuple[float, int] | None:
    """A classifier's holdout miss rate (1 - recall) and its number of positives, or None.

    >>> card = {"training": {"rows_test": 9000, "metrics": {"recall": 0.8, "positive_rate": 0.05}}}
    >>> holdout_miss_rate(card)
    (0.19999999999999996, 450)
    """
    if card.get("task", "classification") != "classification":
        return None
    training = card.get("training") or {}
    metrics = training.get("metrics") or {}
    try:
        miss, positives = 1.0 - float(metrics["recall"]), round(float(metrics["positive_rate"]) * int(training["rows_test"]))
    except (KeyError, TypeError, ValueError):
        return None
    return (miss, positives) if positives > 0 and 0.0 <= miss < 1.0 else None


class PerformanceMonitor:
    """Rolling performance and concept-drift detection on joined labels.

    The loss of each labelled event is its error indicator (classification:
    ``(score >= threshold) != label``) or its absolute error (regression). The
    reference is the model card's holdout (``reference_loss`` on ``reference_size``
    rows, see :func:`holdout_reference`); without one, the first ``reference_size``
    losses (a cold start the report names). Each channel is a
    :class:`stream.monitoring.loss_rise.RiseTest`: every window length in ``windows`` is
    tested every ``window / checks_per_window`` labelled events for a *rise* of the mean
    loss, studentised with the loss's long-run and slow variances learned from the labelled
    stream itself (errors come in bursts and follow the day, like features), one-sided at the
    Bonferroni level for ``expected_run_length`` labelled events between false alarms. The
    rise must also pass both gates: ``min_increase`` (absolute: error rate points, or MAE
    relative to the reference) and ``min_relative_increase`` (relative to the reference loss).

    A classifier whose holdout recall is known (``reference_miss_rate`` on
    ``reference_positives``, :func:`holdout_miss_rate`) has a second channel: the miss rate
    (1 - recall) of the labelled positives, in windows of ``miss_windows`` positives, gated by
    ``min_miss_increase`` and ``min_relative_increase``. Concept drift on rare positives (fraud
    that changes its signature) moves the pooled error rate by a few points and the miss rate
    by tens of points: this channel sees it from far fewer labels, and a change of the positive
    rate alone (label shift) does not move it. The channels share the false-alarm budget half
    and half (the miss channel's run length counted in positives at the holdout's positive rate).

    A drift opens once (``concept_drift`` event, the features that fired) and closes when the
    rise in every channel's middle window has stayed below ``leave_ratio`` times its gate for
    three checks.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> pm = PerformanceMonitor(reference_loss=0.1, reference_size=10_000)
    >>> y = rng.random(6000) < 0.5
    >>> err = rng.random(6000) < np.where(np.arange(6000) < 4000, 0.1, 0.3)
    >>> scores = np.where(y != err, 0.8, 0.2)
    >>> [(e.index, e.kind) for e in pm.update(scores, y.astype(float))]
    [(4149, 'concept_drift')]

    Rare positives whose recall collapses: the miss rate fires first.

    >>> pm = PerformanceMonitor(reference_loss=0.012, reference_size=15_000, reference_miss_rate=0.3,
    ...                         reference_positives=450)
    >>> y = rng.random(30_000) < 0.03
    >>> caught = rng.random(30_000) < np.where(np.arange(30_000) < 20_000, 0.7, 0.0)
    >>> scores = np.where(y, np.where(caught, 0.9, 0.1), np.where(rng.random(30_000) < 0.003, 0.9, 0.1))
    >>> [(e.index, e.kind, e.features) for e in pm.update(scores, y.astype(float))]
    [(20638, 'concept_drift', ('miss_rate',))]
    """

    BLOCK = 50  # labelled events per block of the dependence tracker
    MISS_BLOCK = 5  # labelled positives per block of the miss channel's tracker

    @classmethod
    def from_card(cls, card: dict[str, Any], settings: PerformanceSettings | None = None, *,
                  expected_run_length: int = 10_000_000, misses: bool = True) -> PerformanceMonitor:
        """The monitor a worker runs for a model card: task and threshold from the card, the
        holdout's error rate (and a classifier's miss rate, unless ``misses`` is off) as
        reference, the rest from ``settings`` (``monitor.performance``; defaults when None).
        Without holdout metrics the first ``reference_size`` labelled events are the reference."""
        if settings is None:
            from stream.config import PerformanceSettings

            settings = PerformanceSettings()
        p = settings
        holdout = holdout_reference(card)
        miss = holdout_miss_rate(card) if misses and holdout is not None else None
        return cls(
            task=str(card.get("task", "classification")), threshold=float(card.get("threshold", 0.5)),
            window=p.window, windows=p.windows, checks_per_window=p.checks_per_window,
            expected_run_length=expected_run_length,
            reference_size=holdout[1] if holdout else p.reference_size,
            reference_loss=holdout[0] if holdout else None, min_increase=p.min_increase,
            min_relative_increase=p.min_relative_increase, leave_ratio=p.leave_ratio,
            reference_miss_rate=miss[0] if miss else None, reference_positives=miss[1] if miss else 0,
            miss_windows=p.miss_windows, min_miss_increase=p.min_miss_increase,
            model_name=str(card["name"]) if "name" in card else None,
            model_version=str(card["version"]) if "version" in card else None)

    def __init__(
        self,
        task: str = "classification",
        threshold: float = 0.5,
        window: int = 1000,
        *,
        windows: tuple[int, ...] = (200, 500, 2000, 5000),
        checks_per_window: int = 4,
        expected_run_length: int = 10_000_000,
        reference_size: int = 2000,
        reference_loss: float | None = None,
        min_increase: float | None = None,
        min_relative_increase: float = 0.5,
        leave_ratio: float = 0.5,
        reference_miss_rate: float | None = None,
        reference_positives: int = 0,
        miss_windows: tuple[int, ...] = (20, 50, 100, 250),
        min_miss_increase: float = 0.1,
        model_name: str | None = None,
        model_version: str | None = None,
    ) -> None:
        if task not in ("classification", "regression"):
            raise ValueError(f"unknown task {task!r}")
        if window < 1 or not windows or reference_size < 1:
            raise ValueError("window, windows and reference_size must be positive")
        self.task, self.threshold, self.window = task, float(threshold), int(window)
        self.windows, self.checks_per_window = tuple(sorted(windows)), int(checks_per_window)
        self.expected_run_length = expected_run_length
        self.reference_size = reference_size
        self.min_increase = min_increase if min_increase is not None else (0.01 if task == "classification" else 0.1)
        self.min_relative_increase = float(min_relative_increase)
        self.min_miss_increase = float(min_miss_increase)
        self.leave_ratio = leave_ratio
        self.model_name, self.model_version = model_name, model_version
        feature = "error_rate" if task == "classification" else "mae"
        misses = (task == "classification" and reference_miss_rate is not None and reference_positives > 0
                  and math.isfinite(reference_miss_rate) and 0 <= reference_miss_rate < 1)
        share = 2.0 if misses else 1.0  # Bonferroni over the channels
        self.loss = RiseTest(feature, self.windows, self.checks_per_window, run_length=expected_run_length * share,
                             block=self.BLOCK, relative=task == "regression", reference_size=reference_size,
                             binary=task == "classification")
        self.steps, self.alpha, self.z_crit = self.loss.steps, self.loss.alpha, self.loss.z_crit
        self.reference_source = "first labelled events"
        if reference_loss is not None:
            # second moment: Bernoulli for error rates; half-normal absolute errors for regression
            second = reference_loss if task == "classification" else reference_loss**2 * math.pi / 2
            self.loss.ref_n, self.loss.ref_sum = reference_size, reference_loss * reference_size
            self.loss.ref_sq = second * reference_size
            self.reference_source = "model card holdout"
        # a regression's loss cap (_capped): from the holdout, or once the first labels are in
        self._cap: float | None = LOSS_CAP * 2.0 * reference_loss if reference_loss else None
        self._waiting: list[tuple[np.ndarray, np.ndarray]] = []
        self.misses: RiseTest | None = None
        if misses:
            assert reference_miss_rate is not None
            positive_rate = reference_positives / max(reference_size, reference_positives)
            self.misses = RiseTest("miss_rate", tuple(sorted(miss_windows)), self.checks_per_window,
                                   run_length=expected_run_length * share * positive_rate, block=self.MISS_BLOCK,
                                   binary=True)
            self.misses.ref_n = reference_positives
            self.misses.ref_sum = self.misses.ref_sq = reference_miss_rate * reference_positives
        size = max(self.window, self.windows[-1])
        self._scores = np.zeros(size)
        self._labels = np.zeros(size)
        self.n = 0  # labelled events seen
        self.drifting = False
        self._calm = 0

    def _losses(self, scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
        if self.task == "classification":
            return ((scores >= self.threshold) != (labels > 0.5)).astype(float)
        # an absurd label (1e160 passes as a number) must not overflow the squared sums
        return np.minimum(np.abs(scores - labels), MAX_LOSS)

    def update(self, scores: np.ndarray | Sequence[float], labels: np.ndarray | Sequence[float],
               event_ts: np.ndarray | Sequence[float] | None = None) -> list[DriftEvent]:
        """Add labelled events; return ``concept_drift`` (and ``drift_resolved``) events.

        With ``event_ts``, a concept drift's evidence dates its onset (``change_event_ts``)."""
        times = np.full(len(scores), np.nan) if event_ts is None else np.asarray(event_ts, dtype=float)
        scores = np.asarray(scores, dtype=float)
        labels = np.asarray(labels, dtype=float)
        known = np.isfinite(scores) & np.isfinite(labels)
        if not known.all():  # a prediction without a score (null) has no loss: the reference would keep a NaN
            scores = np.compress(known, scores)
            labels = np.compress(known, labels)
            times = np.compress(known, times)
        if not len(scores):
            return []
        loss = self._losses(scores, labels)
        idx = (self.n + np.arange(loss.size)) % self._scores.size
        self._scores[idx], self._labels[idx] = scores, labels
        self.n += loss.size
        events: list[DriftEvent] = []
        if self.task == "regression":
            loss, times = self._capped(loss, times)
        # the channels in step, a piece of at most the shortest check interval at a time
        piece = self.steps[0] if self.misses is not None else max(loss.size, 1)
        for a in range(0, loss.size, piece):
            seg, ts = loss[a : a + piece], times[a : a + piece]
            for _ in self.loss.feed(seg, ts, lambda: self.drifting):
                events += self._check(self.loss, self.loss.n - 1)  # index: the newest labelled event
            if self.misses is not None:
                start, before = self.n - loss.size + a, self.misses.n
                positive = np.flatnonzero(labels[a : a + piece] > 0.5)
                for _ in self.misses.feed(seg[positive], ts[positive], lambda: self.drifting):
                    events += self._check(self.misses, start + int(positive[self.misses.n - before - 1]))
        return events

    def _capped(self, loss: np.ndarray, times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """A regression's errors at most :data:`LOSS_CAP` times the reference's typical one. Without
        a holdout the first ``reference_size`` errors wait (nothing is tested before them anyway)
        until their 90th percentile sets the cap (a perfect model's 0: no cap)."""
        if self._cap is None:
            self._waiting.append((loss, times))
            if sum(len(w) for w, _ in self._waiting) < self.reference_size:
                return loss[:0], times[:0]
            loss, times = (np.concatenate(parts) for parts in zip(*self._waiting))
            self._waiting = []
            q = float(np.quantile(loss[: self.reference_size], 0.9))
            self._cap = LOSS_CAP * q if q > 0 else MAX_LOSS
        return np.minimum(loss, self._cap), times

    def _gate(self, test: RiseTest) -> float:
        """The smallest rise that counts: absolute and relative gates together."""
        if test is self.misses:
            return max(self.min_miss_increase, self.min_relative_increase * test.reference_mean)
        if self.task == "classification":
            return max(self.min_increase, self.min_relative_increase * test.reference_mean)
        return self.min_increase  # regression: the MAE rise is relative already

    def _check(self, test: RiseTest, index: int) -> list[DriftEvent]:
        fired = test.evaluate(self._gate(test))
        if fired and not self.drifting:
            self.drifting, self._calm = True, 0
            # when the loss most likely rose, in event time (labels join out of event order: the
            # trainer's onset window starts there), within the longest window since the last reset:
            # a short window that fired holds only post-onset labels of the fastest partitions
            onset = test.change_event_ts(max(max(f["window"] for f in fired),
                                             min(test.windows[-1], test.since_reset)))
            for f in fired:
                f["reference"] = self.reference_source if test is self.loss else "model card holdout"
                if onset is not None:
                    f["change_event_ts"] = onset
            return [DriftEvent(index, "concept_drift", (test.feature,), tuple(fired),
                               self.model_name, self.model_version)]
        if test is not self.loss:
            return []
        mid, step = self.windows[len(self.windows) // 2], self.steps[len(self.windows) // 2]
        if self.drifting and test.since_reset >= mid and test.since_reset % step == 0:
            self._calm = self._calm + 1 if all(self._calm_in(t) for t in (self.loss, self.misses) if t) else 0
            if self._calm >= 3:
                self.drifting, self._calm = False, 0
                for t in (self.loss, self.misses):
                    if t is not None:
                        t.since_reset = 0
                return [DriftEvent(index, "drift_resolved", (self.loss.feature,), (), self.model_name,
                                   self.model_version)]
        return []

    def _calm_in(self, test: RiseTest) -> bool:
        """Whether ``test``'s middle window has its rise below ``leave_ratio`` times its gate."""
        mid = test.windows[len(test.windows) // 2]
        unseen = math.inf if test is self.loss else -math.inf  # the miss channel may not have a check yet
        return test.last_check.get(mid, {}).get("increase", unseen) < self.leave_ratio * self._gate(test)

    def snapshot(self) -> dict[str, float]:
        """Rolling performance over the last ``window`` labelled events (NaN where undefined)."""
        n = min(self.n, self.window)
        end = self.n % self._scores.size
        idx = (end - n + np.arange(n)) % self._scores.size
        s, y = self._scores[idx], self._labels[idx]
        out: dict[str, float] = {"labelled": float(self.n), "window": float(n), "drifting": float(self.drifting)}
        if n == 0:
            return out
        if self.task == "regression":
            err = s - y
            out.update(mae=float(np.abs(err).mean()), rmse=float(np.sqrt((err**2).mean())))
            return out
        pred, pos = s >= self.threshold, y > 0.5
        tp = float((pred & pos).sum())
        p = np.clip(s, 1e-15, 1 - 1e-15)
        out.update(
            auc=_auc(s, y),
            log_loss=float(-np.mean(np.where(pos, np.log(p), np.log(1 - p)))),
            accuracy=float((pred == pos).mean()),
            error_rate=float((pred != pos).mean()),
            precision=tp / float(pred.sum()) if pred.any() else math.nan,
            recall=tp / float(pos.sum()) if pos.any() else math.nan,
        )
        return out
