"""Promotion with evidence: champion and challenger on the same time-ordered holdout.

The decision compares per-row losses (log loss for classifiers, absolute error for regression)
with a paired bootstrap: both models are scored on the same rows, so the row-to-row variation
they share cancels and a small true difference is visible on a few thousand rows. A challenger
is promoted only when the upper bound of the confidence interval of ``challenger - champion``
lies below the tolerated margin, and it passes the guardrails (calibration error, scoring
latency). Too few holdout rows (or positives) means "wait": not enough labels yet to decide.

Examples
--------
>>> rng = np.random.default_rng(0)
>>> good = rng.beta(0.5, 4.0, 4000)                  # calibrated: rows are positive with it
>>> y = (rng.random(4000) < good).astype(float)
>>> bad = 0.5 * good + 0.05                          # same ranking, probabilities off
>>> policy = PromotionPolicy(min_holdout=1000, min_positives=50)
>>> d = decide(policy, "classification", y, champion=bad, challenger=good)
>>> d.outcome, d.reasons[0]
('promote', 'log loss 0.2612 vs champion 0.2806, diff -0.0194 [-0.0242, -0.0141] at 95%')
>>> decide(policy, "classification", y, champion=good, challenger=bad).outcome
'reject'
>>> decide(policy, "classification", y[:500], champion=bad[:500], challenger=good[:500]).outcome
'wait'
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# the paired arithmetic is shared with the monitor's live comparison (re-exported here)
from stream.monitoring.comparison import EPS, paired_bootstrap, row_losses

__all__ = ["EPS", "Decision", "PromotionPolicy", "decide", "paired_bootstrap", "row_losses", "shortfall", "summary"]


@dataclass(frozen=True)
class PromotionPolicy:
    """How much evidence a promotion needs (see ``TrainerSettings`` for the documented defaults)."""

    min_holdout: int = 2_000
    min_positives: int = 30
    confidence: float = 0.95
    bootstrap: int = 1_000
    # promote when the CI's upper bound of (challenger - champion) loss < tolerance * champion loss
    tolerance: float = 0.0
    # guardrails: calibration error (ECE, classifiers) and scoring latency
    max_calibration_error: float = 0.05
    max_latency_ratio: float = 3.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.min_holdout < 1 or self.bootstrap < 100 or not 0.5 < self.confidence < 1:
            raise ValueError("min_holdout >= 1, bootstrap >= 100 and 0.5 < confidence < 1 are required")


@dataclass(frozen=True)
class Decision:
    outcome: str  # "promote", "reject" or "wait"
    reasons: list[str]
    # {"holdout", "champion", "challenger", "difference", "latency_ms_per_1k"}: numbers by role
    metrics: dict[str, dict[str, float | None]] = field(default_factory=dict)
    primary_metric: str | None = None


def calibration_error(y: np.ndarray, score: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error: |mean score - positive rate| over equal-count bins, weighted.

    >>> calibration_error(np.array([0, 0, 1, 1.]), np.array([0.1, 0.1, 0.9, 0.9]), bins=2)
    0.1
    """
    order = np.argsort(score, kind="stable")
    err = 0.0
    for chunk in np.array_split(order, min(bins, len(order))):
        if len(chunk):
            err += len(chunk) * abs(float(np.mean(score[chunk])) - float(np.mean(y[chunk])))
    return round(err / max(len(order), 1), 6)


def summary(task: str, y: np.ndarray, score: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """The holdout metrics every decision reports."""
    out: dict[str, float] = {"rows": len(y)}
    losses = row_losses(task, y, score)
    if task == "classification":
        from stream.monitoring.labels import _auc

        out.update(log_loss=round(float(losses.mean()), 6), auc=round(_auc(score, y), 6),
                   positives=int((y > 0.5).sum()), calibration_error=calibration_error(y, score),
                   error_rate=round(float(np.mean((score >= threshold) != (y > 0.5))), 6))
    else:
        out.update(mae=round(float(losses.mean()), 6),
                   rmse=round(float(np.sqrt(np.mean((y - score) ** 2))), 6))
    return out


def shortfall(policy: PromotionPolicy, task: str, y: np.ndarray) -> list[str]:
    """Why a holdout is too small to decide on (empty when it is big enough)."""
    short = []
    if len(y) < policy.min_holdout:
        short.append(f"holdout has {len(y)} labelled rows, {policy.min_holdout} needed")
    positives = int((np.asarray(y) > 0.5).sum())
    if task == "classification" and positives < policy.min_positives:
        short.append(f"holdout has {positives} positives, {policy.min_positives} needed")
    return short


def decide(policy: PromotionPolicy, task: str, y: np.ndarray, *, champion: np.ndarray,
           challenger: np.ndarray, latency_ms: tuple[float, float] | None = None,
           threshold: float = 0.5) -> Decision:
    """Promote, reject or wait, with reasons; ``latency_ms`` is (champion, challenger) per 1,000 rows."""
    y = np.asarray(y, dtype=np.float64)
    metrics: dict[str, dict[str, float | None]] = {"holdout": {"rows": len(y)}}
    if task == "classification":
        metrics["holdout"]["positives"] = int((y > 0.5).sum())
    short = shortfall(policy, task, y)
    if short:
        return Decision("wait", short, metrics)
    champ, chall = summary(task, y, champion, threshold), summary(task, y, challenger, threshold)
    metrics["champion"], metrics["challenger"] = dict(champ), dict(chall)
    diff = row_losses(task, y, challenger) - row_losses(task, y, champion)
    mean, lo, hi = paired_bootstrap(diff, n=policy.bootstrap, confidence=policy.confidence,
                                    seed=policy.seed)
    metric = "log_loss" if task == "classification" else "mae"
    label = metric.replace("_", " ")
    margin = policy.tolerance * float(metrics["champion"][metric] or 0.0)
    metrics["difference"] = {"mean": round(mean, 6), "ci_low": round(lo, 6),
                             "ci_high": round(hi, 6), "confidence": policy.confidence,
                             "margin": round(margin, 6)}
    headline = (f"{label} {metrics['challenger'][metric]:.4f} vs champion "
                f"{metrics['champion'][metric]:.4f}, diff {mean:+.4f} "
                f"[{lo:+.4f}, {hi:+.4f}] at {policy.confidence:.0%}")
    reasons = [headline]
    ok = hi < margin
    if not ok:
        reasons.append(f"not shown better: the interval's upper bound {hi:+.4f} is not below {margin:+.4f}")
    if task == "classification":
        ece = chall["calibration_error"]
        if ece > policy.max_calibration_error:
            ok = False
            reasons.append(f"calibration error {ece:.4f} above {policy.max_calibration_error}")
    if latency_ms is not None:
        metrics["latency_ms_per_1k"] = {"champion": round(latency_ms[0], 3),
                                        "challenger": round(latency_ms[1], 3)}
        if latency_ms[1] > policy.max_latency_ratio * max(latency_ms[0], 0.05):
            ok = False
            reasons.append(f"scoring latency {latency_ms[1]:.2f} ms per 1k rows is over "
                           f"{policy.max_latency_ratio}x the champion's {latency_ms[0]:.2f}")
    return Decision("promote" if ok else "reject", reasons, metrics, metric)
