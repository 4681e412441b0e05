"""Delayed labels: join to predictions, rolling performance, concept drift, label-free estimates.

* :class:`LabelJoiner` joins labels to earlier predictions by event id, with
  bounded state (time-to-live and a maximum number of pending predictions) and
  counters for matched, late (prediction already expired), unmatched (a label
  whose prediction never came within the time-to-live) and expired events; a label
  that arrives before its prediction waits for it.
* :class:`PerformanceMonitor` keeps rolling performance over the last labelled
  events (AUC, log loss, accuracy, precision and recall at an operating
  threshold for classifiers; MAE and RMSE for regression) and detects concept
  drift as a rise of the loss (error indicator or absolute error) against a
  reference, with calibrated sliding-window tests and hysteresis, like
  :class:`stream.monitoring.drift.DriftMonitor`.
* :func:`estimate_performance` estimates, from the scores alone, the
  performance of a calibrated binary classifier while labels are missing
  (confidence-based performance estimation, as NannyML's CBPE).

Examples
--------
>>> import numpy as np
>>> j = LabelJoiner(ttl_s=60.0, max_pending=1000)
>>> _ = j.add_predictions(["a", "b", "c"], np.array([0.9, 0.2, 0.7]), ts=0.0)
>>> s, y = j.add_labels(["a", "c", "zz"], np.array([1.0, 0.0, 1.0]), ts=5.0)
>>> s.tolist(), y.tolist(), j.counters()
([0.9, 0.7], [1.0, 0.0], {'matched': 2, 'late': 0, 'unmatched': 0, 'expired': 0, 'evicted': 0, 'pending': 1, 'waiting_labels': 1})
>>> j.add_predictions(["zz"], np.array([0.4]), ts=6.0)   # its label was waiting
(array([0.4]), array([1.]))
>>> estimate_performance(j.pending_scores(), threshold=0.5)["accuracy"]  # "b" (0.2) still unlabelled
0.8
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import special, stats

from stream.monitoring.dependence import DependenceTracker
from stream.monitoring.drift import DriftEvent

__all__ = ["EstimateValidity", "LabelJoiner", "PerformanceMonitor", "estimate_performance", "holdout_reference"]


class LabelJoiner:
    """Join delayed labels to predictions by event id, in bounded memory.

    Parameters
    ----------
    ttl_s
        A prediction waits at most this many seconds for its label.
    max_pending
        At most this many predictions wait; the oldest is evicted beyond it.
        The ids of expired/evicted predictions are remembered (as many again)
        to tell a late label from an unmatched one.
    """

    def __init__(self, ttl_s: float, max_pending: int = 100_000) -> None:
        if ttl_s <= 0 or max_pending < 1:
            raise ValueError("ttl_s must be > 0 and max_pending >= 1")
        self.ttl_s, self.max_pending = float(ttl_s), int(max_pending)
        self._pending: OrderedDict[str, tuple[float, float, Any]] = OrderedDict()
        # seconds from prediction to label of the joins since the caller last cleared it
        self.delays: deque[float] = deque(maxlen=100_000)
        self._gone: OrderedDict[str, None] = OrderedDict()
        # labels that came before their prediction (a lagging scorer): they wait, bounded too
        self._early: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self.matched = self.late = self.unmatched = self.expired = self.evicted = 0
        self.predictions = 0  # registered, for coverage (labelled / scored)

    def __len__(self) -> int:
        return len(self._pending)

    def _forget(self, event_id: str) -> None:
        self._gone[event_id] = None
        if len(self._gone) > self.max_pending:
            self._gone.popitem(last=False)

    def add_predictions(
        self, event_ids: Sequence[str], scores: np.ndarray | Sequence[float], ts: float,
        tags: Sequence[Any] | None = None, joined: list[Any] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Register predictions made at time ``ts`` (seconds); return the ``(scores, labels)``
        of those whose label was already waiting.

        ``tags`` (one per prediction, e.g. the model version and inputs behind it) ride along
        with the prediction; the tags of the predictions joined now are appended to ``joined``,
        in the order of the returned arrays."""
        self.expire(ts)
        self.predictions += len(event_ids)
        got_s, got_y = [], []
        tag_list = list(tags) if tags is not None else None
        for i, (eid, score) in enumerate(zip(event_ids, np.asarray(scores, dtype=float).tolist(), strict=True)):
            tag = tag_list[i] if tag_list is not None else None
            early = self._early.pop(eid, None) if self._early else None
            if early is not None:
                got_s.append(score)
                got_y.append(early[0])
                if joined is not None:
                    joined.append(tag)
                self.delays.append(0.0)  # the label was there first
                continue
            self._pending[eid] = (score, float(ts), tag)
            self._pending.move_to_end(eid)
        self.matched += len(got_s)
        while len(self._pending) > self.max_pending:
            eid, _ = self._pending.popitem(last=False)
            self.evicted += 1
            self._forget(eid)
        return np.asarray(got_s, dtype=float), np.asarray(got_y, dtype=float)

    def add_labels(
        self, event_ids: Sequence[str], labels: np.ndarray | Sequence[float], ts: float,
        joined: list[Any] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Join labels arriving at time ``ts``; return the matched ``(scores, labels)`` (and
        append their predictions' tags to ``joined``)."""
        self.expire(ts)
        scores, truth = [], []
        for eid, label in zip(event_ids, np.asarray(labels, dtype=float).tolist(), strict=True):
            hit = self._pending.pop(eid, None)
            if hit is not None:
                scores.append(hit[0])
                truth.append(label)
                self.delays.append(max(0.0, ts - hit[1]))
                if joined is not None:
                    joined.append(hit[2])
            elif eid in self._gone:
                self.late += 1
            else:  # no prediction yet: wait for it (unmatched if it never comes)
                self._early[eid] = (label, float(ts))
                self._early.move_to_end(eid)
                if len(self._early) > self.max_pending:
                    self._early.popitem(last=False)
                    self.unmatched += 1
        self.matched += len(scores)
        return np.asarray(scores, dtype=float), np.asarray(truth, dtype=float)

    def expire(self, now: float) -> int:
        """Drop predictions older than the time-to-live; return how many. Labels that waited
        as long for a prediction are counted unmatched."""
        limit, n = now - self.ttl_s, 0
        while self._early and next(iter(self._early.values()))[1] < limit:
            self._early.popitem(last=False)
            self.unmatched += 1
        while self._pending:
            eid, (_, t, _) = next(iter(self._pending.items()))
            if t >= limit:
                break
            self._pending.popitem(last=False)
            self._forget(eid)
            n += 1
        self.expired += n
        return n

    def pending_scores(self) -> np.ndarray:
        """Scores of the predictions still waiting for a label (for :func:`estimate_performance`)."""
        return np.fromiter((p[0] for p in self._pending.values()), float, len(self._pending))

    def counters(self) -> dict[str, int]:
        return {"matched": self.matched, "late": self.late, "unmatched": self.unmatched,
                "expired": self.expired, "evicted": self.evicted, "pending": len(self._pending),
                "waiting_labels": len(self._early)}


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


def _auc(scores: np.ndarray, labels: np.ndarray) -> float:
    pos = labels > 0.5
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return math.nan
    ranks = stats.rankdata(scores)
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def estimate_performance(scores: np.ndarray | Sequence[float], threshold: float = 0.5) -> dict[str, float]:
    """Expected performance of a calibrated binary classifier from its scores alone.

    If the model is calibrated, row i is positive with probability ``s_i``, so the
    expected confusion matrix at ``threshold`` is ``TP = sum(s_i)`` over predicted
    positives, ``FP = sum(1 - s_i)`` over them, and likewise for the negatives
    (NannyML's CBPE). The expected ROC AUC weighs each pair (i, j) by
    ``s_i (1 - s_j)``.

    Examples
    --------
    >>> est = estimate_performance(np.array([0.9, 0.8, 0.3, 0.1]), threshold=0.5)
    >>> {k: round(v, 3) for k, v in est.items()}
    {'n': 4, 'accuracy': 0.825, 'precision': 0.85, 'recall': 0.81, 'f1': 0.829, 'positive_rate': 0.5, 'roc_auc': 0.922}
    """
    s = np.clip(np.asarray(scores, dtype=float), 0.0, 1.0)
    s = s[~np.isnan(s)]
    if s.size == 0:
        return {"n": 0, "accuracy": math.nan, "precision": math.nan, "recall": math.nan, "f1": math.nan,
                "positive_rate": math.nan, "roc_auc": math.nan}
    pred = s >= threshold
    tp, fp = s[pred].sum(), (1 - s[pred]).sum()
    fn, tn = s[~pred].sum(), (1 - s[~pred]).sum()
    precision = tp / (tp + fp) if tp + fp > 0 else math.nan
    recall = tp / (tp + fn) if tp + fn > 0 else math.nan
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else math.nan
    # expected AUC: sum over pairs i != j of s_i (1 - s_j) [s_i > s_j] (+ half on ties)
    u, inv = np.unique(s, return_inverse=True)
    p_k = np.bincount(inv, weights=s, minlength=u.size)
    q_k = np.bincount(inv, weights=1 - s, minlength=u.size)
    below = np.cumsum(q_k) - q_k
    num = float(np.sum(p_k * (below + 0.5 * q_k)) - 0.5 * np.sum(s * (1 - s)))
    den = float(s.sum() * (1 - s).sum() - np.sum(s * (1 - s)))
    return {"n": int(s.size), "accuracy": float((tp + tn) / s.size), "precision": float(precision),
            "recall": float(recall), "f1": float(f1), "positive_rate": float(pred.mean()),
            "roc_auc": num / den if den > 0 else math.nan}


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


class EstimateValidity:
    """Does the label-free estimate still hold? Checked on the predictions whose labels joined.

    The estimate (:func:`estimate_performance`) assumes a calibrated model: under concept drift
    it keeps reading "fine" while the model fails. So the estimate of the last ``window`` joined
    predictions is compared with their realised AUC and accuracy; ``valid`` turns False when
    either differs by more than ``tolerance`` (None until ``min_labels`` have joined).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> s = rng.random(3000)
    >>> v = EstimateValidity(tolerance=0.05, window=2000, min_labels=500)
    >>> v.update(s, (rng.random(3000) < s).astype(float)); v.valid     # calibrated: holds
    True
    >>> v.update(s, (rng.random(3000) < 0.5).astype(float)); v.valid   # labels unrelated to scores
    False
    """

    def __init__(self, tolerance: float = 0.05, window: int = 2000, min_labels: int = 500) -> None:
        if not 0 < tolerance < 1 or window < 1 or not 1 <= min_labels <= window:
            raise ValueError("need 0 < tolerance < 1 and 1 <= min_labels <= window")
        self.tolerance, self.window, self.min_labels = float(tolerance), int(window), int(min_labels)
        self._s = np.zeros(window)
        self._y = np.zeros(window)
        self.n = 0
        self.valid: bool | None = None
        self.gap: dict[str, float] = {}

    def update(self, scores: np.ndarray, labels: np.ndarray) -> None:
        """Add joined ``(score, label)`` pairs and re-judge the estimate."""
        scores, labels = np.asarray(scores, float)[-self.window :], np.asarray(labels, float)[-self.window :]
        idx = (self.n + np.arange(scores.size)) % self.window
        self._s[idx], self._y[idx] = scores, labels
        self.n += scores.size
        if self.n < self.min_labels or scores.size == 0:
            return
        n = min(self.n, self.window)
        s, y = self._s[:n] if self.n < self.window else self._s, self._y[:n] if self.n < self.window else self._y
        est = estimate_performance(s)
        pred = s >= 0.5
        actual = {"roc_auc": _auc(s, y), "accuracy": float((pred == (y > 0.5)).mean())}
        self.gap = {k: abs(est[k] - v) for k, v in actual.items() if v == v and est[k] == est[k]}
        self.valid = all(g <= self.tolerance for g in self.gap.values())


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
