"""Concept drift on joined labels: rolling performance of a model version and calibrated tests
for a rise of its loss against the model card's holdout reference, with the change point
that dates the drift's onset in event time."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import special

from stream.monitoring.dependence import DependenceTracker
from stream.monitoring.drift import DriftEvent
from stream.monitoring.performance_estimate import _auc

__all__ = ["PerformanceMonitor", "change_point", "holdout_reference"]


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


class PerformanceMonitor:
    """Rolling performance and concept-drift detection on joined labels.

    The loss of each labelled event is its error indicator (classification:
    ``(score >= threshold) != label``) or its absolute error (regression). The
    reference is the model card's holdout (``reference_loss`` on ``reference_size``
    rows, see :func:`holdout_reference`); without one, the first ``reference_size``
    losses (a cold start the report names). Every window length in ``windows`` is
    tested every ``window / checks_per_window`` labelled events for a *rise* of the
    mean loss, studentised with the loss's long-run and slow variances learned from
    the labelled stream itself (:class:`stream.monitoring.dependence.DependenceTracker`:
    errors come in bursts and follow the day, like features), one-sided at the
    Bonferroni level for ``expected_run_length`` labelled events between false alarms.
    The rise must also pass both gates: ``min_increase`` (absolute: error rate points,
    or MAE relative to the reference) and ``min_relative_increase`` (relative to the
    reference loss). A drift opens once (``concept_drift`` event) and closes when the
    rise in the middle window has stayed below ``leave_ratio`` times the gate for three checks.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> pm = PerformanceMonitor(reference_loss=0.1, reference_size=10_000)
    >>> y = rng.random(6000) < 0.5
    >>> err = rng.random(6000) < np.where(np.arange(6000) < 4000, 0.1, 0.3)
    >>> scores = np.where(y != err, 0.8, 0.2)
    >>> [(e.index, e.kind) for e in pm.update(scores, y.astype(float))]
    [(4149, 'concept_drift')]
    """

    BLOCK = 50  # labelled events per block of the dependence tracker

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
        model_name: str | None = None,
        model_version: str | None = None,
    ) -> None:
        if task not in ("classification", "regression"):
            raise ValueError(f"unknown task {task!r}")
        if window < 1 or not windows or reference_size < 1:
            raise ValueError("window, windows and reference_size must be positive")
        self.task, self.threshold, self.window = task, float(threshold), int(window)
        self.windows, self.checks_per_window = tuple(sorted(windows)), int(checks_per_window)
        self.steps = tuple(max(1, w // self.checks_per_window) for w in self.windows)
        self.expected_run_length = expected_run_length
        self.reference_size = reference_size
        self.min_increase = min_increase if min_increase is not None else (0.01 if task == "classification" else 0.1)
        self.min_relative_increase = float(min_relative_increase)
        self.leave_ratio = leave_ratio
        self.model_name, self.model_version = model_name, model_version
        self.alpha = [s / (expected_run_length * len(self.windows)) for s in self.steps]
        self.z_crit = [float(-special.ndtri(a)) for a in self.alpha]
        size = max(self.window, self.windows[-1])
        self._scores = np.zeros(size)
        self._times = np.full(size, np.nan)  # event times, when the caller knows them
        self._labels = np.zeros(size)
        self._loss = np.zeros(size)
        self.n = 0  # labelled events seen
        self._since_reset = 0
        self._ref_n = 0
        self._ref_sum = self._ref_sq = 0.0
        self.reference_source = "first labelled events"
        if reference_loss is not None:
            self._ref_n, self._ref_sum = reference_size, reference_loss * reference_size
            # second moment: Bernoulli for error rates; half-normal absolute errors for regression
            second = reference_loss if task == "classification" else reference_loss**2 * math.pi / 2
            self._ref_sq = second * reference_size
            self.reference_source = "model card holdout"
        self.tracker = DependenceTracker(1, self.BLOCK, scales=(2, 8, 32), history=64, min_batches=16, confidence=0.5)
        self._block_sum, self._block_n = 0.0, 0
        self.drifting = False
        self._calm = 0
        self.last_check: dict[int, dict[str, float]] = {}

    def _losses(self, scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
        if self.task == "classification":
            return ((scores >= self.threshold) != (labels > 0.5)).astype(float)
        return np.abs(scores - labels)

    def update(self, scores: np.ndarray | Sequence[float], labels: np.ndarray | Sequence[float],
               event_ts: np.ndarray | Sequence[float] | None = None) -> list[DriftEvent]:
        """Add labelled events; return ``concept_drift`` (and ``drift_resolved``) events.

        With ``event_ts``, a concept drift's evidence dates its onset (``change_event_ts``)."""
        times = np.full(len(scores), np.nan) if event_ts is None else np.asarray(event_ts, dtype=float)
        scores = np.asarray(scores, dtype=float)
        labels = np.asarray(labels, dtype=float)
        loss = self._losses(scores, labels)
        events: list[DriftEvent] = []
        pos, total = 0, loss.size
        while pos < total:
            if self._ref_n < self.reference_size:  # still building the reference
                take = min(self.reference_size - self._ref_n, total - pos)
                seg = loss[pos : pos + take]
                self._ref_n += take
                self._ref_sum += float(seg.sum())
                self._ref_sq += float((seg * seg).sum())
            else:  # up to the next event count at which some window is checked
                nxt = min((self._since_reset // st + 1) * st for st in self.steps)
                take = min(nxt - self._since_reset, total - pos)
                self._since_reset += take
            self._store(scores[pos : pos + take], labels[pos : pos + take], loss[pos : pos + take],
                        times[pos : pos + take])
            pos += take
            if self._ref_n >= self.reference_size and take and any(self._since_reset % st == 0 for st in self.steps):
                events += self._check()
        return events

    def _store(self, scores: np.ndarray, labels: np.ndarray, loss: np.ndarray, times: np.ndarray) -> None:
        idx = (self.n + np.arange(loss.size)) % self._loss.size
        self._scores[idx], self._labels[idx], self._loss[idx] = scores, labels, loss
        self._times[idx] = times
        self.n += loss.size
        for v in loss.tolist():  # blocks of the dependence tracker (frozen while a drift is open)
            self._block_sum += v
            self._block_n += 1
            if self._block_n == self.BLOCK:
                self.tracker.add(np.array([self._block_sum / self.BLOCK]), np.array([float(self.BLOCK)]),
                                 np.array([self.drifting]))
                self._block_sum, self._block_n = 0.0, 0

    def _change_event_ts(self, w: int) -> float | None:
        end = self.n % self._loss.size
        idx = np.arange(end - w, end) % self._loss.size
        times, loss = self._times[idx], self._loss[idx]
        known = ~np.isnan(times)
        if known.sum() < 2:
            return None
        order = np.argsort(times[known], kind="stable")
        return float(times[known][order][change_point(loss[known][order])])

    def _window(self, w: int) -> np.ndarray:
        end = self.n % self._loss.size
        return self._loss[end - w : end] if end >= w else np.concatenate([self._loss[end - w :], self._loss[:end]])

    def _gate(self, ref_mean: float) -> float:
        """The smallest rise that counts: absolute and relative gates together."""
        if self.task == "classification":
            return max(self.min_increase, self.min_relative_increase * ref_mean)
        return self.min_increase  # regression: the MAE rise is relative already

    def _check(self) -> list[DriftEvent]:
        fired: list[dict[str, Any]] = []
        ref_mean = self._ref_sum / self._ref_n
        g0 = max(self._ref_sq / self._ref_n - ref_mean**2, 1e-12)
        ready = self.tracker.ready()
        lr, slow = self.tracker.estimate(np.array([ref_mean]), np.array([g0]), np.array([float(self._ref_n)]))
        for k, (w, step) in enumerate(zip(self.windows, self.steps, strict=True)):
            if self._since_reset < w or self._since_reset % step:
                continue
            mean = float(self._window(w).mean())
            var = float(lr[0]) / w + g0 / self._ref_n + float(slow[0])
            stat = (mean - ref_mean) / math.sqrt(var)
            p = float(special.ndtr(-stat))
            if self.task == "classification":
                increase, metric = mean - ref_mean, "error_rate_increase"
            else:
                increase, metric = (mean - ref_mean) / max(ref_mean, 1e-12), "mae_relative_increase"
            gate = self._gate(ref_mean)
            self.last_check[w] = {"loss": mean, "reference_loss": ref_mean, "increase": increase, "p_value": p,
                                  "design_effect": float(lr[0]) / g0}
            if ready and stat > self.z_crit[k] and increase >= gate and not self.drifting:
                fired.append({"feature": "error_rate" if self.task == "classification" else "mae",
                              "test": "z", "statistic": float(stat), "threshold": self.z_crit[k],
                              "p_value": p, "alpha": self.alpha[k], "window": w,
                              "effect_metric": metric, "effect_size": float(increase),
                              "effect_threshold": gate, "reference": self.reference_source,
                              "n_reference": self._ref_n, "loss": mean, "reference_loss": ref_mean,
                              "design_effect": float(lr[0]) / g0})
        index = self.n - 1
        if fired:
            self.drifting, self._calm = True, 0
            # when the loss most likely rose, in event time, within the largest window that
            # fired (labels join out of event order; the trainer's onset window starts there)
            onset = self._change_event_ts(max(f["window"] for f in fired))
            for f in fired:
                if onset is not None:
                    f["change_event_ts"] = onset
            return [DriftEvent(index, "concept_drift", (fired[0]["feature"],), tuple(fired),
                               self.model_name, self.model_version)]
        mid = self.windows[len(self.windows) // 2]
        if self.drifting and self._since_reset >= mid and self._since_reset % self.steps[len(self.windows) // 2] == 0:
            gate = self._gate(ref_mean)
            calm = self.last_check.get(mid, {}).get("increase", math.inf) < self.leave_ratio * gate
            self._calm = self._calm + 1 if calm else 0
            if self._calm >= 3:
                self.drifting, self._calm, self._since_reset = False, 0, 0
                return [DriftEvent(index, "drift_resolved", ("error_rate" if self.task == "classification" else "mae",),
                                   (), self.model_name, self.model_version)]
        return []

    def snapshot(self) -> dict[str, float]:
        """Rolling performance over the last ``window`` labelled events (NaN where undefined)."""
        n = min(self.n, self.window)
        end = self.n % self._loss.size
        idx = (end - n + np.arange(n)) % self._loss.size
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
