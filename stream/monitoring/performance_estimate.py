"""Label-free performance estimates: what a calibrated binary classifier's scores alone say about
its accuracy, precision, recall and ROC AUC while labels are missing (confidence-based
performance estimation, as NannyML's CBPE), and whether that estimate still holds on the
predictions whose labels have joined (it fails silently under concept drift)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["EstimateValidity", "estimate_performance"]


def _ranks(a: np.ndarray) -> np.ndarray:
    """Ranks from 1, ties given their average: ``scipy.stats.rankdata``'s arithmetic (exact halves),
    without loading scipy.stats (~1 s of a monitor process's start-up); NaN anywhere gives NaN ranks.

    >>> from scipy import stats
    >>> a = np.random.default_rng(0).integers(0, 5, 50).astype(float)
    >>> bool((_ranks(a) == stats.rankdata(a)).all()), _ranks(np.array([0.3, np.nan])).tolist()
    (True, [nan, nan])
    """
    a = np.asarray(a, dtype=float)
    if np.isnan(a).any():
        return np.full(a.shape, np.nan)
    order = np.argsort(a, kind="mergesort")
    s = a[order]
    first = np.r_[True, s[1:] != s[:-1]]
    dense = np.empty(a.size, dtype=np.int64)
    dense[order] = np.cumsum(first)
    ends = np.r_[np.flatnonzero(first), a.size]
    return 0.5 * (ends[dense] + ends[dense - 1] + 1)


def _auc(scores: np.ndarray, labels: np.ndarray) -> float:
    pos = labels > 0.5
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return math.nan
    ranks = _ranks(scores)
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


class EstimateValidity:
    """Does the label-free estimate still hold? Checked on the predictions whose labels joined.

    The estimate (:func:`estimate_performance`) assumes a calibrated model: under concept drift
    it keeps reading "fine" while the model fails. So the estimate of the last ``window`` joined
    predictions is compared with their realised AUC and accuracy; ``valid`` turns False when
    either differs by more than ``tolerance`` (None until ``min_labels`` have joined). It is
    re-judged every ``every`` joined labels (default ``window / 20``), not on every label batch:
    at low rates batches are a few labels each, and each judgement ranks the whole window.

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

    def __init__(self, tolerance: float = 0.05, window: int = 2000, min_labels: int = 500,
                 every: int | None = None) -> None:
        if not 0 < tolerance < 1 or window < 1 or not 1 <= min_labels <= window:
            raise ValueError("need 0 < tolerance < 1 and 1 <= min_labels <= window")
        self.tolerance, self.window, self.min_labels = float(tolerance), int(window), int(min_labels)
        self.every = max(1, int(every if every is not None else window // 20))
        self._judged_at = 0  # self.n at the last judgement
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
        if self.valid is not None and self.n - self._judged_at < self.every:
            return
        self._judged_at = self.n
        n = min(self.n, self.window)
        s, y = self._s[:n] if self.n < self.window else self._s, self._y[:n] if self.n < self.window else self._y
        est = estimate_performance(s)
        pred = s >= 0.5
        actual = {"roc_auc": _auc(s, y), "accuracy": float((pred == (y > 0.5)).mean())}
        self.gap = {k: abs(est[k] - v) for k, v in actual.items() if v == v and est[k] == est[k]}
        self.valid = all(g <= self.tolerance for g in self.gap.values())
