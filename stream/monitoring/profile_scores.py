"""Statistics a profile keeps beside its histograms: normal scores, correlations, serial dependence.

:func:`bin_normal_scores` gives each reference bin the normal score of its mid-rank (the
multivariate test correlates these); :func:`pairwise_correlation` is their
pairwise-complete correlation matrix; :func:`dispersion_factors` measures how much more
block statistics vary in the reference order than for independent rows, and
:func:`dispersion_for` reads those factors for a window length.

>>> bin_normal_scores([1, 2, 1]).round(3).tolist()
[-1.15, 0.0, 1.15]
>>> dispersion_for([[500.0, 1.2, 1.5], [2000.0, 2.0, 3.0]], 1000)
(1.2, 1.5)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import special

__all__ = ["DISPERSION_BLOCKS", "bin_normal_scores", "dispersion_factors", "dispersion_for", "pairwise_correlation"]

DISPERSION_BLOCKS = (500, 2000, 8000)


def dispersion_factors(codes: np.ndarray, n_codes: int, scores: np.ndarray | None = None,
                min_blocks: int = 5) -> list[list[float]]:
    """Serial-dependence factors of a feature in its reference order, per block length.

    Rows of a stream are not independent when features are rolling aggregates or
    slowly moving: statistics of consecutive blocks of ``B`` rows then vary more
    than for ``B`` independent rows. Returns ``[[B, phi_bins, phi_location], ...]``:
    ``phi_bins`` is the variance ratio of the blocks' bin (or category, or missing)
    proportions against a multinomial sample, averaged over bins; ``phi_location``
    that of the blocks' mean normal score (numeric features; else ``phi_bins``).
    Both lie in [1, 50]; independent rows give about 1. The monitor then counts
    ``n / phi`` effective rows in a window of ``n`` (see :func:`dispersion_for`
    and :func:`stream.monitoring.drift_stats.numeric_window_stats`).
    """
    out: list[list[float]] = []
    for block in DISPERSION_BLOCKS:
        nb = codes.size // block
        if nb < min_blocks:
            break
        idx = np.repeat(np.arange(nb), block) * n_codes + codes[: nb * block]
        prop = np.bincount(idx, minlength=nb * n_codes).reshape(nb, n_codes) / block
        p = prop.mean(axis=0)
        ok = (p > 0) & (p < 1)
        phi = float(np.mean(prop[:, ok].var(axis=0, ddof=1) / (p[ok] * (1 - p[ok]) / block))) if ok.any() else 1.0
        phi_loc = phi
        if scores is not None and scores[: nb * block].var() > 0:
            means = scores[: nb * block].reshape(nb, block).mean(axis=1)
            phi_loc = float(means.var(ddof=1) / (scores[: nb * block].var() / block))
        out.append([float(block), float(np.clip(phi, 1.0, 50.0)), float(np.clip(phi_loc, 1.0, 50.0))])
    return out


def bin_normal_scores(counts: Sequence[int] | np.ndarray) -> np.ndarray:
    """Normal score of each reference bin: ``Phi^-1`` of the bin's mid-rank.

    The multivariate test correlates these scores rather than raw values: a
    rank (Gaussian copula) correlation that heavy tails cannot dominate, so
    the Fisher-z null distribution holds on short windows too.
    """
    c = np.asarray(counts, dtype=float)
    n = c.sum()
    if n == 0:
        return np.zeros(c.size)
    mid = np.clip((np.cumsum(c) - c / 2) / n, 0.5 / n, 1 - 0.5 / n)
    return np.asarray(special.ndtri(mid))


def pairwise_correlation(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pairwise-complete Pearson correlation and pair counts of the columns of ``matrix``."""
    mask = ~np.isnan(matrix)
    z = np.where(mask, matrix, 0.0)
    m = mask.astype(float)
    n = m.T @ m
    s = z.T @ m  # s[i, j] = sum of x_i over rows where i and j are present
    q = (z * z).T @ m
    p = z.T @ z
    nn = np.maximum(n, 1.0)
    cov = p / nn - (s / nn) * (s.T / nn)
    var_i = q / nn - (s / nn) ** 2
    var_j = var_i.T
    den = np.sqrt(np.maximum(var_i * var_j, 0.0))
    r = np.where((den > 1e-12) & (n > 2), cov / np.where(den > 0, den, 1.0), 0.0)
    np.fill_diagonal(r, 1.0)
    return np.clip(r, -1.0, 1.0), n


def dispersion_for(dispersion: list[list[float]], window: int) -> tuple[float, float]:
    """``(phi_bins, phi_location)`` for a window: the largest measured on blocks up to its length.

    Positive serial dependence inflates variances more the longer the block, so
    the maximum over the shorter blocks (fewer blocks, noisier estimates, on the
    long ones) errs on the safe side. The shortest block's factors serve shorter
    windows; ``(1.0, 1.0)`` if nothing was measured.
    """
    usable = [e for e in dispersion if e[0] <= window] or dispersion[:1]
    if not usable:
        return 1.0, 1.0
    return max(float(e[1]) for e in usable), max(float(e[-1]) for e in usable)

