"""Two models on the same labelled rows, pure: per-row losses, a paired bootstrap confidence
interval of their difference, and the live verdicts that follow from it.

The trainer's promotion on its holdout (:mod:`stream.training.promotion`) and the monitor's
live comparison of a shadow, or of the previous champion after a promotion
(:mod:`stream.monitoring.shadow`), use the same arithmetic: both models scored the same rows,
so the row-to-row variation they share cancels and a small true difference shows on a few
thousand rows.

Examples
--------
>>> rng = np.random.default_rng(0)
>>> good = rng.beta(0.5, 4.0, 3000)                  # calibrated: rows are positive with it
>>> y = (rng.random(3000) < good).astype(float)
>>> v = live_verdict("classification", y, champion=good, other=good, role="shadow", tolerance=0.02)
>>> v.outcome, v.reasons[0]
('promote', 'shadow log loss 0.2627 vs champion 0.2627 on 3000 labelled events, diff +0.0000 [+0.0000, +0.0000] at 95%')
>>> live_verdict("classification", y, champion=good, other=1 - good, role="shadow", tolerance=0.02).outcome
'reject'
>>> live_verdict("classification", y, champion=1 - good, other=good, role="previous", tolerance=0.05).outcome
'rollback'
>>> live_verdict("classification", y, champion=good, other=0.9 * good, role="previous", tolerance=0.05).outcome
'keep'
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

EPS = 1e-7
ROLES = ("shadow", "previous")
VERDICTS = {"shadow": ("promote", "reject"), "previous": ("rollback", "keep")}


def row_losses(task: str, y: np.ndarray, score: np.ndarray) -> np.ndarray:
    """Per-row log loss (classification) or absolute error (regression).

    >>> row_losses("regression", np.array([1.0, 2.0]), np.array([1.5, 1.0])).tolist()
    [0.5, 1.0]
    """
    y = np.asarray(y, dtype=np.float64)
    score = np.asarray(score, dtype=np.float64)
    if task == "classification":
        p = np.clip(score, EPS, 1 - EPS)
        return -(y * np.log(p) + (1 - y) * np.log(1 - p))
    return np.abs(y - score)


def paired_bootstrap(diff: np.ndarray, *, n: int = 1_000, confidence: float = 0.95,
                     seed: int = 0) -> tuple[float, float, float]:
    """Mean of paired differences with a percentile bootstrap confidence interval.

    >>> [round(v, 3) for v in paired_bootstrap(np.array([0.1, 0.2, 0.3, 0.2, 0.1, 0.3]), n=200)]
    [0.2, 0.133, 0.267]
    """
    diff = np.asarray(diff, dtype=np.float64)
    rng = np.random.default_rng(seed)
    means = np.empty(n)
    for start in range(0, n, 100):  # 100 resamples at a time: bounded memory on big holdouts
        k = min(100, n - start)
        idx = rng.integers(0, diff.size, (k, diff.size))
        means[start : start + k] = diff[idx].mean(axis=1)
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(means, [alpha, 1 - alpha])
    return float(diff.mean()), float(lo), float(hi)


@dataclass(frozen=True)
class LiveVerdict:
    outcome: str  # role shadow: "promote" or "reject"; role previous: "rollback" or "keep"
    reasons: list[str]
    # {"labelled", "champion", <role>, "difference"}: numbers by role
    metrics: dict[str, dict[str, float | None]] = field(default_factory=dict)
    primary_metric: str = "log_loss"


def live_verdict(task: str, y: np.ndarray, *, champion: np.ndarray, other: np.ndarray, role: str,
                 tolerance: float, confidence: float = 0.95, bootstrap: int = 1_000,
                 seed: int = 0) -> LiveVerdict:
    """Champion against ``other`` (role ``shadow`` or ``previous``) on the same labelled events.

    ``shadow``: promote when the CI's upper bound of (shadow - champion) loss is at most
    ``tolerance`` x the champion's loss (at least as good, within the tolerance), else reject.
    ``previous`` (the guard after a promotion; ``champion`` is the new one): roll back when the
    CI's lower bound of (champion - previous) is above ``tolerance`` x the previous one's loss
    (the new champion shown worse by more than the tolerance), else keep.
    """
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, not {role!r}")
    y = np.asarray(y, dtype=np.float64)
    metric = "log_loss" if task == "classification" else "mae"
    label = metric.replace("_", " ")
    l_champ, l_other = row_losses(task, y, champion), row_losses(task, y, other)
    champ_loss, other_loss = float(l_champ.mean()), float(l_other.mean())
    metrics: dict[str, dict[str, float | None]] = {
        "labelled": {"rows": len(y)}, "champion": {metric: round(champ_loss, 6)},
        role: {metric: round(other_loss, 6)}}
    if task == "classification":
        metrics["labelled"]["positives"] = int((y > 0.5).sum())
    if role == "shadow":
        diff, base = l_other - l_champ, champ_loss
    else:
        diff, base = l_champ - l_other, other_loss
    mean, lo, hi = paired_bootstrap(diff, n=bootstrap, confidence=confidence, seed=seed)
    margin = tolerance * base
    metrics["difference"] = {"mean": round(mean, 6), "ci_low": round(lo, 6), "ci_high": round(hi, 6),
                             "confidence": confidence, "margin": round(margin, 6)}
    if role == "shadow":
        headline = (f"shadow {label} {other_loss:.4f} vs champion {champ_loss:.4f} on {len(y)} "
                    f"labelled events, diff {mean:+.4f} [{lo:+.4f}, {hi:+.4f}] at {confidence:.0%}")
        ok = hi <= margin
        why = (f"at least as good: the interval's upper bound {hi:+.4f} is not above {margin:+.4f}" if ok
               else f"not shown as good: the interval's upper bound {hi:+.4f} is above {margin:+.4f}")
        outcome = "promote" if ok else "reject"
    else:
        headline = (f"champion {label} {champ_loss:.4f} vs previous {other_loss:.4f} on {len(y)} "
                    f"labelled events, diff {mean:+.4f} [{lo:+.4f}, {hi:+.4f}] at {confidence:.0%}")
        worse = lo > margin
        why = (f"worse than the previous champion: the interval's lower bound {lo:+.4f} is above {margin:+.4f}"
               if worse else f"not shown worse than the previous champion by more than {margin:+.4f}")
        outcome = "rollback" if worse else "keep"
    return LiveVerdict(outcome, [headline, why], metrics, metric)
