"""Pure drift statistics: PSI, Kolmogorov-Smirnov, chi-square, Wasserstein, Jensen-Shannon.

Every function here is a pure function of its arguments (no state, no I/O), so
``tests/test_drift_stats.py`` checks each one against scipy on the same samples.

Two flavours are provided:

* *sample* statistics on raw values (``ks_2samp``, ``wasserstein``), used for
  evidence and as the ground truth in tests;
* *binned* statistics on histogram counts, vectorised over a leading axis
  (features), which is what :class:`stream.monitoring.drift.DriftMonitor` evaluates on its
  fixed-size window histograms.

Examples
--------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> a, b = rng.normal(size=500), rng.normal(0.5, 1.0, size=500)
>>> d, p = ks_2samp(a, b)
>>> round(d, 3), p < 1e-6
(0.214, True)
>>> round(float(psi(np.array([50, 50]), np.array([80, 20]))), 4)
0.4159
"""

from __future__ import annotations

import math

import numpy as np
from scipy import special

__all__ = [
    "binned_ks",
    "binned_mannwhitney",
    "binned_wasserstein",
    "categorical_window_stats",
    "channel_means",
    "chi2_homogeneity",
    "chi2_pvalue",
    "correlation_from_sums",
    "fisher_z",
    "js_distance",
    "ks_2samp",
    "ks_pvalue",
    "missing_stats",
    "numeric_window_stats",
    "p_value",
    "psi",
    "spread_score",
    "two_proportion_z",
    "wasserstein",
]

_EPS = 1e-4


def _proportions(counts: np.ndarray) -> np.ndarray:
    counts = np.asarray(counts, dtype=float)
    total = counts.sum(axis=-1, keepdims=True)
    return counts / np.where(total > 0, total, 1.0)


def psi(expected: np.ndarray, actual: np.ndarray, eps: float = _EPS) -> np.ndarray:
    """Population stability index between two histograms (last axis = bins).

    ``PSI = sum((q - p) * ln(q / p))`` with both proportions clipped below at
    ``eps``; it equals ``KL(p||q) + KL(q||p)`` on the clipped proportions.

    Parameters
    ----------
    expected, actual
        Counts or proportions on the same bins; leading axes broadcast.
    eps
        Floor for empty bins.

    Examples
    --------
    >>> round(float(psi(np.array([10, 10, 80]), np.array([20, 10, 70]))), 4)
    0.0827
    """
    p = np.clip(_proportions(expected), eps, None)
    q = np.clip(_proportions(actual), eps, None)
    return np.sum((q - p) * np.log(q / p), axis=-1)


def js_distance(p_counts: np.ndarray, q_counts: np.ndarray, base: float = 2.0) -> np.ndarray:
    """Jensen-Shannon distance (square root of the divergence), as scipy defines it.

    Examples
    --------
    >>> round(float(js_distance(np.array([5, 3, 2]), np.array([3, 3, 4]))), 4)
    0.2067
    """
    p = _proportions(p_counts)
    q = _proportions(q_counts)
    m = 0.5 * (p + q)
    div = 0.5 * (special.rel_entr(p, m).sum(axis=-1) + special.rel_entr(q, m).sum(axis=-1))
    return np.sqrt(np.maximum(div, 0.0) / math.log(base))


def ks_2samp(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Two-sample Kolmogorov-Smirnov statistic and asymptotic two-sided p-value.

    The p-value uses the same distribution as ``scipy.stats.ks_2samp(...,
    method="asymp")``: the one-sample distribution at ``n = round(m n / (m + n))``.
    """
    a = np.sort(np.asarray(a, dtype=float))
    b = np.sort(np.asarray(b, dtype=float))
    both = np.concatenate([a, b])
    cdf_a = np.searchsorted(a, both, side="right") / a.size
    cdf_b = np.searchsorted(b, both, side="right") / b.size
    d = float(np.max(np.abs(cdf_a - cdf_b)))
    return d, ks_pvalue(d, a.size, b.size)


def ks_pvalue(d: float, n1: int, n2: int) -> float:
    """Asymptotic two-sided p-value of a two-sample KS statistic ``d``."""
    from scipy import stats  # here: the exact finite-n distribution (scipy.stats loads in ~1 s) is for reports

    en = n1 * n2 / (n1 + n2)
    return float(np.clip(stats.kstwo.sf(d, np.round(en)), 0.0, 1.0))


def binned_ks(counts_a: np.ndarray, counts_b: np.ndarray) -> np.ndarray:
    """KS statistic between two histograms on the same ordered bins.

    Equals the raw-sample KS statistic evaluated only at the bin edges, so it
    is a lower bound of (and a conservative stand-in for) the exact statistic.
    """
    ca = np.cumsum(_proportions(counts_a), axis=-1)
    cb = np.cumsum(_proportions(counts_b), axis=-1)
    return np.max(np.abs(ca - cb), axis=-1)


def binned_mannwhitney(counts_a: np.ndarray, counts_b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mann-Whitney U test between two histograms on the same ordered bins.

    Values in one bin are ties. Returns the z statistic (normal approximation
    with tie correction, no continuity correction, positive when ``a`` tends to
    be larger) and the common-language effect ``P(A > B) + P(A = B) / 2``.
    Equals ``scipy.stats.mannwhitneyu(a, b, method="asymptotic",
    use_continuity=False)`` on the samples of bin indices.
    """
    a = np.asarray(counts_a, dtype=float)
    b = np.asarray(counts_b, dtype=float)
    na, nb = a.sum(axis=-1), b.sum(axis=-1)
    below_b = np.cumsum(b, axis=-1) - b
    u = np.sum(a * (below_b + 0.5 * b), axis=-1)
    n = na + nb
    t = a + b
    tie = np.sum(t**3 - t, axis=-1) / np.maximum(n * (n - 1), 1.0)
    var = na * nb / 12.0 * ((n + 1) - tie)
    z = np.where(var > 0, (u - na * nb / 2.0) / np.sqrt(np.where(var > 0, var, 1.0)), 0.0)
    return z, u / np.maximum(na * nb, 1.0)


def chi2_homogeneity(counts_a: np.ndarray, counts_b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pearson chi-square of the 2 x k contingency table (no continuity correction).

    Columns empty in both rows are dropped (they count neither in the statistic
    nor in the degrees of freedom), matching ``scipy.stats.chi2_contingency``
    on the table without those columns.

    Returns
    -------
    statistic, dof
        Arrays over the leading axes.
    """
    a = np.asarray(counts_a, dtype=float)
    b = np.asarray(counts_b, dtype=float)
    na = a.sum(axis=-1, keepdims=True)
    nb = b.sum(axis=-1, keepdims=True)
    t = a + b
    used = t > 0
    num = (nb * a - na * b) ** 2
    den = t * na * nb
    ok = used & (den > 0)
    stat = np.sum(np.where(ok, num / np.where(ok, den, 1.0), 0.0), axis=-1)
    dof = np.maximum(used.sum(axis=-1) - 1, 0)
    return stat, dof


def chi2_pvalue(statistic: float, dof: int) -> float:
    """Upper-tail p-value of a chi-square statistic."""
    if dof <= 0:
        return 1.0
    # scipy.stats.chi2.sf's own function, without loading scipy.stats (a negative statistic: 1, as there)
    return float(special.chdtrc(dof, max(statistic, 0.0)))


def wasserstein(u: np.ndarray, v: np.ndarray) -> float:
    """First Wasserstein distance between two samples (as ``scipy.stats.wasserstein_distance``)."""
    u = np.asarray(u, dtype=float)
    v = np.asarray(v, dtype=float)
    w = binned_wasserstein(u, np.ones_like(u), v, np.ones_like(v))
    return float(w)


def binned_wasserstein(
    points_a: np.ndarray, weights_a: np.ndarray, points_b: np.ndarray, weights_b: np.ndarray
) -> np.ndarray:
    """First Wasserstein distance between two weighted point sets, vectorised.

    Parameters
    ----------
    points_a, weights_a, points_b, weights_b
        Arrays whose last axis holds support points and non-negative weights;
        leading axes broadcast (one distance per leading index).
    """
    pa = np.asarray(points_a, dtype=float)
    pb = np.asarray(points_b, dtype=float)
    wa = _proportions(weights_a)
    wb = _proportions(weights_b)
    points = np.concatenate([pa, pb], axis=-1)
    signed = np.concatenate([wa, -wb], axis=-1)
    order = np.argsort(points, axis=-1, kind="stable")
    sp = np.take_along_axis(points, order, axis=-1)
    cum = np.cumsum(np.take_along_axis(signed, order, axis=-1), axis=-1)
    return np.sum(np.abs(cum[..., :-1]) * np.diff(sp, axis=-1), axis=-1)


def two_proportion_z(k1: np.ndarray, n1: np.ndarray, k2: np.ndarray, n2: np.ndarray) -> np.ndarray:
    """Pooled two-proportion z statistic (0 where both samples are empty or constant).

    Examples
    --------
    >>> round(float(two_proportion_z(30, 100, 10, 100)), 3)
    3.536
    """
    k1, n1, k2, n2 = (np.asarray(x, dtype=float) for x in (k1, n1, k2, n2))
    pooled = (k1 + k2) / np.maximum(n1 + n2, 1.0)
    var = pooled * (1.0 - pooled) * (1.0 / np.maximum(n1, 1.0) + 1.0 / np.maximum(n2, 1.0))
    diff = k1 / np.maximum(n1, 1.0) - k2 / np.maximum(n2, 1.0)
    return np.where(var > 0, diff / np.sqrt(np.where(var > 0, var, 1.0)), 0.0)


def fisher_z(r_a: np.ndarray, n_a: np.ndarray, r_b: np.ndarray, n_b: np.ndarray) -> np.ndarray:
    """z statistic for the difference of two Pearson correlations (Fisher transform)."""
    r_a = np.clip(np.asarray(r_a, dtype=float), -0.999999, 0.999999)
    r_b = np.clip(np.asarray(r_b, dtype=float), -0.999999, 0.999999)
    na, nb = np.asarray(n_a, float), np.asarray(n_b, float)
    se = np.sqrt(1.0 / np.maximum(na - 3.0, 1.0) + 1.0 / np.maximum(nb - 3.0, 1.0))
    return (np.arctanh(r_a) - np.arctanh(r_b)) / se


def numeric_window_stats(
    counts: np.ndarray, sums: np.ndarray, missing: np.ndarray, ref_counts: np.ndarray, ref_missing: np.ndarray,
    ref_bin_means: np.ndarray, ref_std: np.ndarray, dispersion: np.ndarray | float = 1.0, *,
    effects: bool = True,
) -> dict[str, np.ndarray]:
    """All statistics of numeric windows against their reference, one row per feature.

    ``counts``/``sums`` are ``[feature, bin]`` window counts and value sums in the
    reference bins, ``missing`` the window missing counts. Returns the binned KS
    statistic ``d`` and its scaled form ``ks = sqrt(n_e) d``, the chi-square
    statistic with its ``dof``, the Mann-Whitney |z| (``mannwhitney``) and ``auc``,
    and the missing-rate ``missing`` (|z|) and
    ``missing_change``; with ``effects`` also ``psi`` and the Wasserstein distance
    of the bin means normalised by ``ref_std`` (``wasserstein``). ``dispersion``
    (``[feature, (phi_bins, phi_location)]``) corrects for serially dependent rows:
    the missing-rate test counts ``n / phi_bins`` effective rows, KS and
    Mann-Whitney ``n / phi_location``, chi-square ``n / max(phi_bins,
    phi_location)`` (its smooth, location-like components inflate the most);
    z-like statistics are divided by the square root.
    """
    c = counts.astype(float)
    ref_n = ref_counts.sum(axis=-1)
    n = c.sum(axis=-1)
    d = binned_ks(ref_counts, c)
    chi2, dof = chi2_homogeneity(c, ref_counts)
    mw, auc = binned_mannwhitney(c, ref_counts)
    phi_bins, phi_loc = _phis(dispersion, c.shape[0])
    root = np.sqrt(phi_loc)
    out = {"d": d, "ks": d * np.sqrt(n * ref_n / np.maximum(n + ref_n, 1.0)) / root, "chi2": chi2 / np.maximum(phi_bins, phi_loc),
           "dof": dof, "mannwhitney": np.abs(mw) / root, "auc": auc, "n": n, "n_ref": ref_n}
    out.update(missing_stats(missing, n, ref_missing, ref_n))
    out["missing"] = out["missing"] / np.sqrt(phi_bins)
    if effects:
        means = np.where(c > 0, sums / np.maximum(c, 1.0), ref_bin_means)
        out["psi"] = psi(ref_counts, c)
        out["wasserstein"] = binned_wasserstein(ref_bin_means, ref_counts, means, c) / ref_std
    return out


def categorical_window_stats(
    counts: np.ndarray, missing: np.ndarray, ref_counts: np.ndarray, ref_missing: np.ndarray,
    dispersion: np.ndarray | float = 1.0, *, effects: bool = True,
) -> dict[str, np.ndarray]:
    """Chi-square and missing-rate statistics of categorical windows; with ``effects``
    also the Jensen-Shannon distance and PSI."""
    c = counts.astype(float)
    ref_n = ref_counts.sum(axis=-1)
    n = c.sum(axis=-1)
    chi2, dof = chi2_homogeneity(c, ref_counts)
    phi_bins, _ = _phis(dispersion, c.shape[0])
    out = {"chi2": chi2 / phi_bins, "dof": dof, "n": n, "n_ref": ref_n}
    out.update(missing_stats(missing, n, ref_missing, ref_n))
    out["missing"] = out["missing"] / np.sqrt(phi_bins)
    if effects:
        out["jensen_shannon"] = js_distance(ref_counts, c)
        out["psi"] = psi(ref_counts, c)
    return out


def _phis(dispersion: np.ndarray | float, n_features: int) -> tuple[np.ndarray, np.ndarray]:
    d = np.broadcast_to(np.asarray(dispersion, dtype=float).reshape(-1, 2) if np.ndim(dispersion) else
                        np.full((1, 2), float(dispersion)), (n_features, 2))
    return d[:, 0], d[:, 1]


def missing_stats(
    missing: np.ndarray, present: np.ndarray, ref_missing: np.ndarray, ref_present: np.ndarray
) -> dict[str, np.ndarray]:
    """Two-proportion |z| and absolute change of the missing rate (window vs reference)."""
    n_w = missing + present
    n_r = ref_missing + ref_present
    z = np.abs(two_proportion_z(missing, n_w, ref_missing, n_r))
    change = np.abs(missing / np.maximum(n_w, 1.0) - ref_missing / np.maximum(n_r, 1.0))
    return {"missing": z, "missing_change": change, "n_rows": n_w, "n_rows_ref": n_r}


def correlation_from_sums(n: np.ndarray, sx: np.ndarray, qx: np.ndarray, pxy: np.ndarray) -> np.ndarray:
    """Pairwise-complete Pearson correlations from cross-product sums.

    ``n[i, j]`` counts rows where both i and j are present, ``sx[i, j]`` sums x_i
    over them, ``qx[i, j]`` sums x_i squared, ``pxy[i, j]`` sums x_i x_j (leading axes broadcast).
    """
    nn = np.maximum(n, 1.0)
    cov = pxy / nn - (sx / nn) * (np.swapaxes(sx, -1, -2) / nn)
    var = qx / nn - (sx / nn) ** 2
    den = np.sqrt(np.maximum(var * np.swapaxes(var, -1, -2), 0.0))
    r = np.where((den > 1e-12) & (n > 2), cov / np.where(den > 0, den, 1.0), 0.0)
    return np.clip(r, -1.0, 1.0)


def p_value(test: str, statistic: float, n: float, n_ref: float, aux: float | None = None) -> float:
    """p-value of a monitor test from its statistic (``aux``: chi-square ``dof``).

    ``"ks"`` (scaled two-sample KS, Kolmogorov), ``"chi2"`` (upper tail), anything else a two-sided
    standard normal |z| (missing rate, Mann-Whitney, correlation).
    """
    if test == "ks":  # statistic: sqrt(n_e) D, against the Kolmogorov distribution as calibrated
        return float(special.kolmogorov(statistic))  # scipy.stats.kstwobign.sf
    if test == "chi2":
        return chi2_pvalue(statistic, int(aux or 0))
    return float(2.0 * special.ndtr(-abs(statistic)))


def spread_score(u: np.ndarray) -> np.ndarray:
    """The spread score of reference mid-ranks ``u``: Klotz's squared normal score
    ``ndtri(u)^2``, the most efficient rank score for a change of scale (1 under the reference,
    whatever the feature's distribution). On 20 quantile bins a variance x2 moves its mean by
    0.48 sd per row against 0.36 for ``|u - 1/2|`` (Ansari-Bradley), which in turn sees a
    flatter shape at the same variance better (0.20 against 0.07 sd); shape is left to the
    window tests. ``u`` is clipped to keep an empty bin's score finite.

    >>> spread_score(np.array([0.5, 0.8413447, 0.0])).round(2).tolist()
    [0.0, 1.0, 13.83]
    """
    return special.ndtri(np.clip(u, 1e-4, 1.0 - 1e-4)) ** 2


def channel_means(num: np.ndarray, cat: np.ndarray, corr: np.ndarray | None, uref: np.ndarray, rho: np.ndarray,
                  pairs: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Window (or block) means of every per-row score the tests use, and their weights.

    ``num``: ``[..., numeric feature, bin + missing]`` counts; ``cat``: ``[..., categorical
    feature, slot + missing]`` counts; ``corr``: ``[..., 4, f, f]`` pairwise-complete sums
    (rows, sum, sum of squares, cross products) of the bins' normal scores, or None.
    The scores, in this order along the last axis: numeric bin indicators, cumulative bin
    indicators (all but the last bin), mid-rank ``u`` (``uref`` per bin), spread
    (:func:`spread_score` of ``u``: a change of scale at the same location), missing indicator;
    categorical slot indicators, missing indicator; per pair ``psi = zx zy - rho (zx^2 + zy^2) / 2``
    (the linearised correlation). Empty groups give NaN means with weight 0.

    Examples
    --------
    >>> num = np.array([[[3, 1, 0]]])        # one window, one numeric feature: 2 bins + missing
    >>> cat = np.zeros((1, 0, 2))
    >>> m, w = channel_means(num, cat, None, np.array([[0.25, 0.75]]), np.zeros((1, 1)), (np.array([], int),) * 2)
    >>> m.round(3).tolist(), w.tolist()
    ([[0.75, 0.25, 0.75, 0.375, 0.455, 0.0]], [[4.0, 4.0, 4.0, 4.0, 4.0, 4.0]])
    """
    k = num.shape[-1] - 1
    lead = num.shape[:-2]
    with np.errstate(invalid="ignore", divide="ignore"):
        present = num[..., :k].sum(axis=-1).astype(float)
        props = num[..., :k] / present[..., None]
        cum = np.cumsum(props, axis=-1)[..., : k - 1]
        u = (props * uref).sum(axis=-1)
        spread = (props * spread_score(uref)).sum(axis=-1)
        rows = present + num[..., k]
        miss = num[..., k] / rows
        kc = cat.shape[-1] - 1
        cpresent = cat[..., :kc].sum(axis=-1).astype(float)
        cprops = cat[..., :kc] / cpresent[..., None]
        crows = cpresent + cat[..., kc]
        cmiss = cat[..., kc] / crows
        iu, ju = pairs
        if corr is not None and iu.size:
            n_ = corr[..., 0, iu, ju]
            psi = (corr[..., 3, iu, ju] - rho[iu, ju] / 2 * (corr[..., 2, iu, ju] + corr[..., 2, ju, iu])) / n_
        else:
            n_ = psi = np.zeros(lead + (iu.size,))
    means = np.concatenate([props.reshape(lead + (-1,)), cum.reshape(lead + (-1,)), u, spread, miss,
                            cprops.reshape(lead + (-1,)), cmiss, psi], axis=-1)
    # np.repeat, not broadcast_to + reshape: the same values at a fraction of the call's cost
    weights = np.concatenate([np.repeat(present, k, axis=-1), np.repeat(present, k - 1, axis=-1), present, present, rows,
                              np.repeat(cpresent, kc, axis=-1), crows, np.asarray(n_, float)], axis=-1)
    return means, weights
