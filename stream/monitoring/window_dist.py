"""How a window statistic is referred to its distribution when few effective rows stand behind
its variance (:mod:`stream.monitoring.drift_windows`): as the normal or chi-square value of the
same p-value under a t or F law, with the Satterthwaite correction, a small cell's limit, and a
rare share's skew.

>>> round(float(z_equivalent(np.array(2.0), np.array(1e7))), 3)
2.0
>>> float(chi2_equivalent(np.array(0.0), np.array(3), np.array(100.0)))
0.0
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import special

__all__ = ["binomial_skew", "cell_df", "chi2_equivalent", "in_one_call", "satterthwaite", "skewed_z", "where_kept",
           "z_equivalent"]


def chi2_equivalent(x2: np.ndarray, dof: np.ndarray, df: np.ndarray, dof_eff: Any = None) -> np.ndarray:
    """A studentised chi-square with ``df`` effective rows behind its variances, as the chi-square
    value of the same p-value: ``X2 / dof_eff`` is referred to F(dof_eff, df) (``dof_eff``: the
    Satterthwaite degrees of freedom, default ``dof``)."""
    dof = np.maximum(dof, 1)
    de = dof if dof_eff is None else np.maximum(dof_eff, 1e-3)
    with np.errstate(all="ignore"):
        p = special.fdtrc(de, df, x2 / de)
        return np.where(p < 1.0, special.chdtri(dof, np.maximum(p, 1e-300)), 0.0)


def satterthwaite(lam: np.ndarray, dof: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Second-order Rao-Scott for ``dof`` eigenvalues, one ``lam`` and the others 1: the scale
    ``mean (1 + a^2)`` to divide X2 by and the degrees of freedom ``dof / (1 + a^2)``.

    >>> [round(float(v), 2) for v in satterthwaite(np.array(4.6), np.array(19))]
    [1.73, 13.04]
    """
    q = np.maximum(dof, 1)
    mean = (lam + q - 1) / q
    a2 = ((lam - mean) ** 2 + (q - 1) * (1 - mean) ** 2) / q / mean**2
    return mean * (1 + a2), q / (1 + a2)


def cell_df(neff: np.ndarray, present: np.ndarray, p: np.ndarray, design: np.ndarray, used: np.ndarray) -> np.ndarray:
    """Degrees of freedom behind a chi-square: the effective rows, but at most twice the smallest
    bin's effective expected count (a bin filled by two bursts is far from normal)."""
    cell = np.where(used & (p > 0), present[..., None] * p / np.maximum(design, 1.0), np.inf).min(axis=-1)
    return np.minimum(neff, 2.0 * cell)


def z_equivalent(t: np.ndarray, df: np.ndarray) -> np.ndarray:
    """|t| with ``df`` effective rows as the |z| of the same two-sided p-value, the p-value floored
    at 1e-300 as the chi-square's (:func:`chi2_equivalent`): past it the tail underflowed to 0 and
    the statistic read 1e308, which the drift report drew as a line off every scale (its path
    unreadable by the browser).

    >>> [round(float(z), 1) for z in z_equivalent(np.array([3.0, 1e6, np.nan]), np.array([1e7, 1e7, 9.0]))]
    [3.0, 37.0, 0.0]
    """
    with np.errstate(all="ignore"):
        z = -special.ndtri(np.maximum(special.stdtr(np.clip(df, 1.0, 1e7), -np.abs(t)), 1e-300))
    return np.where(z == z, z, 0.0)



def where_kept(keep: np.ndarray, f: Any, *args: Any) -> np.ndarray:
    """``np.where(keep, f(*args), 0.0)`` with ``f`` evaluated only where kept: the special functions
    cost per element, and thin windows (most short ones on dependent traffic) discard theirs.

    >>> where_kept(np.array([True, False]), np.negative, np.array([1.0, 2.0])).tolist()
    [-1.0, 0.0]
    """
    out = np.zeros(keep.shape)
    if keep.any():
        out[keep] = f(*((a if a.shape == keep.shape else np.broadcast_to(a, keep.shape))[keep] for a in args))
    return out


def in_one_call(out: dict[str, Any], queue: list[tuple[str, str, np.ndarray, tuple[np.ndarray, ...]]],
                 f: Any) -> None:
    """``out[group][test] = where_kept(keep, f, *args)`` for every queued ``(group, test, keep, args)``
    (each ``[check point, n]``), by one call of ``f`` on them side by side (elementwise: the same values).

    >>> out = {"a": {}, "b": {}}
    >>> in_one_call(out, [("a", "x", np.array([[True]]), (np.array([[1.0]]),)),
    ...                    ("b", "y", np.array([[True, False]]), (np.array([2.0, 3.0]),))], np.negative)
    >>> out["a"]["x"].tolist(), out["b"]["y"].tolist()
    ([[-1.0]], [[-2.0, 0.0]])
    """
    if not queue:
        return
    keep = np.concatenate([q[2] for q in queue], axis=-1)
    args = [np.concatenate([a if a.shape == q[2].shape else np.broadcast_to(a, q[2].shape)
                            for q in queue for a in (q[3][i],)], axis=-1) for i in range(len(queue[0][3]))]
    res = where_kept(keep, f, *args)
    widths = [q[2].shape[-1] for q in queue]
    for (group, test, *_), end, width in zip(queue, np.cumsum(widths).tolist(), widths, strict=True):
        out[group][test] = res[..., end - width : end]


def binomial_skew(share: np.ndarray, expected: np.ndarray, n_eff: np.ndarray) -> np.ndarray:
    """How far a share's normal z overstates (< 1) or understates (> 1) its binomial z, for a
    window share ``share`` of ``n_eff`` effective rows against ``expected``: multiply a z by it.

    A rare share is skewed: its upper tail is heavier than the normal's at the levels the monitor
    tests (a missing rate expected at 7.7 % read 74 of 500 rows as 5.9 sd, p 2e-9, where the exact
    binomial p is 7e-8, 5.3 sd), its lower tail lighter. The signed root of the likelihood ratio,
    ``sqrt(2 n KL(share || expected))``, is the binomial z to within a few % that far out, never
    underflows, and grows with the share; against the normal z it gives the factor (1 where the
    normal z is within 1: the ratio is unstable there and the difference nil).

    >>> r = binomial_skew(np.array([74 / 500, 0.03]), np.array([0.0773, 0.0773]), np.array([500.0, 500.0]))
    >>> [round(float(v), 2) for v in r]
    [0.9, 1.13]
    """
    p = np.clip(expected, 1e-12, 1 - 1e-12)
    n = np.maximum(n_eff, 1e-9)
    q = np.clip(share, 0.0, 1.0)
    zn = (q - p) * np.sqrt(n / (p * (1 - p)))
    kl = special.xlogy(q, q / p) + special.xlogy(1 - q, (1 - q) / (1 - p))
    zb = np.sign(q - p) * np.sqrt(2.0 * n * np.maximum(kl, 0.0))
    with np.errstate(all="ignore"):
        ratio = zb / zn
    return np.where((np.abs(zn) > 1.0) & np.isfinite(ratio) & (ratio > 0), ratio, 1.0)


def skewed_z(t: np.ndarray, skew: np.ndarray) -> np.ndarray:
    """The normal z of a statistic ``t`` (in sd) whose law has skewness ``skew``: referred to a
    standardised gamma of that skewness (shape ``4 / skew^2``, Wilson-Hilferty's cube root), on
    the long tail's side only; the short side keeps ``t`` (a test never gets keener).

    A window's x|y correlation on bursty traffic is such a statistic: inside a burst of one
    entity the two features follow its own levels, not each other, so a window holding more
    bursts than usual reads a lower correlation, and its lower tail is long (skewness -0.6 over
    4,000-row windows of a stationary stream; 0.05 % quantile at -3.8 sd where the normal's is
    -3.3). At the 5 sd the tests ask, a skewness of -0.2 is worth 0.6 sd.

    >>> [round(float(v), 2) for v in skewed_z(np.array([-5.16, 5.16, -5.16]), np.array([-0.2, -0.2, 0.0]))]
    [-4.5, 5.16, -5.16]
    """
    g = np.abs(skew)
    k = 4.0 / np.maximum(g, 1e-6) ** 2
    v = 1.0 / (9.0 * k)
    z = (np.cbrt(1.0 + np.abs(t) / np.sqrt(k)) - (1.0 - v)) / np.sqrt(v)
    long = (g > 1e-3) & (np.sign(t) == np.sign(skew)) & (np.abs(t) > 1.0)
    return np.where(long, np.sign(t) * np.minimum(z, np.abs(t)), t)
