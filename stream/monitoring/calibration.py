"""Calibration of drift-test thresholds for a target expected run length.

The monitor runs a fixed set of tests: per window length ``w`` (checked every
``step_w`` rows) and per feature, a KS and a chi-square test on the binned
distribution and a Mann-Whitney location test (numeric) or a chi-square test
(categorical), plus a missing-rate test; and, for the numeric features, one
Fisher-z test per pair of features.

The false-alarm budget is one alarm per ``expected_run_length`` rows, for all
tests together. It is split equally over the windows, then equally over the
*families* (one per feature plus one for the multivariate test), then equally
over the tests of a family. A test of window ``w`` runs once every ``step_w``
rows, so its per-check level is::

    alpha = step_w / (expected_run_length * n_windows * n_families * n_tests_in_family)

By the union bound the expected number of false alarms per row is then at most
``1 / expected_run_length`` (Bonferroni; overlapping windows are positively
correlated, so the real rate is lower). The critical values come from the exact
large-sample null distributions of each statistic: Kolmogorov for ``sqrt(n_e) D``
(conservative on binned data, where D can only be smaller), chi-square with the
table's degrees of freedom, and the standard normal for the z tests (missing
rate, Mann-Whitney with tie correction, Fisher z).
These distributions assume independent rows. Rolling-aggregate features are
serially dependent; the profile measures that dependence on the reference in
its own order (``dispersion``, see :func:`stream.monitoring.profile_scores.dispersion_factors`) and the
monitor scales its statistics to the effective number of rows before comparing
them with these critical values.
:func:`simulate_reference` draws streams from a profile so the resulting false
alarm rate can be checked by simulation (``tests/test_drift.py``; the bench
``stream/bench_drift.py`` reports the same check on its stationary streams).

Examples
--------
>>> from stream.monitoring.profile import ReferenceProfile
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> prof = ReferenceProfile.from_columns({"x": rng.normal(size=2000)})
>>> cal = calibrate(prof, windows=(500, 2000), steps=(100, 400), expected_run_length=10_000_000)
>>> [f"{a:.2e}" for a in cal.alpha_feature["x"]]
['1.25e-06', '5.00e-06']
>>> round(float(cal.ks_crit[0, 0]), 3)
2.673
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import special

from stream.monitoring.drift_settings import DriftSettings
from stream.monitoring.profile import NUMERIC, ReferenceProfile

__all__ = ["Calibration", "DriftSettings", "calibrate", "simulate_reference"]

TESTS_NUMERIC = ("ks", "mannwhitney", "chi2", "missing")
TESTS_CATEGORICAL = ("chi2", "missing")


@dataclass(frozen=True)
class Calibration:
    """Per-check significance levels and critical values.

    Attributes
    ----------
    alpha_feature
        Feature name to per-check level of each of its tests, one per window.
    alpha_pair
        Per-check level of each pairwise correlation test, one per window.
    ks_crit
        ``[window, numeric feature]`` critical value of ``sqrt(n_e) * D``.
    chi2_crit
        ``[window, feature, dof]`` critical chi-square value (numeric features
        first, then categorical ones), ``inf`` at dof 0.
    z_crit
        ``[window, feature]`` two-sided critical |z| of the missing-rate and
        Mann-Whitney tests.
    corr_crit
        ``[window]`` two-sided critical |z| of the correlation tests.
    """

    alpha_feature: dict[str, list[float]]
    alpha_pair: list[float]
    ks_crit: np.ndarray
    chi2_crit: np.ndarray
    z_crit: np.ndarray
    corr_crit: np.ndarray


def calibrate(
    profile: ReferenceProfile,
    *,
    windows: Sequence[int],
    steps: Sequence[int],
    expected_run_length: float,
    multivariate: bool = True,
    max_dof: int | None = None,
) -> Calibration:
    """Compute critical values for every test (see module docstring)."""
    if expected_run_length <= 1:
        raise ValueError("expected_run_length must be > 1")
    num = profile.numeric_names
    cat = profile.categorical_names
    n_pairs = len(num) * (len(num) - 1) // 2 if multivariate else 0
    n_families = len(num) + len(cat) + (1 if n_pairs else 0)
    n_win = len(windows)
    if max_dof is None:
        sizes = [len(profile.numeric[k].counts) for k in num] + [len(profile.categorical[k].counts) + 1 for k in cat]
        max_dof = max(sizes + [2])
    dofs = np.arange(max_dof + 1)
    alpha_feature: dict[str, list[float]] = {}
    for name in num + cat:
        k = len(TESTS_NUMERIC if profile.features[name] == NUMERIC else TESTS_CATEGORICAL)
        alpha_feature[name] = [s / (expected_run_length * n_win * max(n_families, 1) * k) for s in steps]
    alpha_pair = [s / (expected_run_length * n_win * max(n_families, 1) * max(n_pairs, 1)) for s in steps]
    names = num + cat
    # scipy.stats' kstwobign.isf and chi2.isf are these special functions (scipy.stats loads in ~1 s)
    ks_crit = np.array([[special.kolmogi(alpha_feature[f][w]) for f in num] for w in range(n_win)])
    ks_crit = ks_crit.reshape(n_win, len(num))
    chi2_crit = np.full((n_win, len(names), max_dof + 1), np.inf)
    z_crit = np.zeros((n_win, len(names)))
    for w in range(n_win):
        for j, f in enumerate(names):
            a = alpha_feature[f][w]
            chi2_crit[w, j, 1:] = special.chdtri(dofs[1:], a)
            z_crit[w, j] = -special.ndtri(a / 2.0)
    corr_crit = np.array([-special.ndtri(a / 2.0) for a in alpha_pair])
    return Calibration(alpha_feature, alpha_pair, ks_crit, chi2_crit, z_crit, corr_crit)


def simulate_reference(profile: ReferenceProfile, n: int, seed: int = 0) -> dict[str, np.ndarray | list[str | None]]:
    """Draw ``n`` rows from the reference profile (the null hypothesis of every test).

    Numeric values are drawn bin by bin with the reference proportions, then
    uniformly within the bin (outer bins symmetric around their reference mean;
    a bin holding a single value, as in discrete features, gives that value),
    with the numeric features coupled through a Gaussian copula with the
    reference correlation. Categorical values follow the reference frequencies
    (the pooled rare ones as ``"__other__"``); missing values follow the
    reference missing rate.

    Examples
    --------
    >>> from stream.monitoring.profile import ReferenceProfile
    >>> rng = np.random.default_rng(1)
    >>> prof = ReferenceProfile.from_columns({"x": rng.normal(size=500), "c": ["a", "b"] * 250})
    >>> sim = simulate_reference(prof, 4, seed=0)
    >>> len(sim["x"]), sorted(set(sim["c"]))
    (4, ['a', 'b'])
    """
    rng = np.random.default_rng(seed)
    num = profile.numeric_names
    out: dict[str, np.ndarray | list[str | None]] = {}
    if num:
        corr = np.asarray(profile.correlation, dtype=float)
        # nearest positive semi-definite matrix so the Cholesky-free draw works
        vals, vecs = np.linalg.eigh(corr)
        root = vecs * np.sqrt(np.clip(vals, 0.0, None))
        u = special.ndtr(rng.standard_normal((n, len(num))) @ root.T)
        for j, name in enumerate(num):
            ref = profile.numeric[name]
            counts = np.asarray(ref.counts, dtype=float)
            if counts.sum() == 0:
                out[name] = np.full(n, np.nan)
                continue
            cum = np.concatenate([[0.0], np.cumsum(counts) / counts.sum()])
            b = np.clip(np.searchsorted(cum, u[:, j], side="right") - 1, 0, counts.size - 1)
            pos = (u[:, j] - cum[b]) / np.maximum(cum[b + 1] - cum[b], 1e-300)
            edges = np.asarray(ref.edges, dtype=float)
            means = np.asarray(ref.bin_means, dtype=float)
            if edges.size:
                lo = np.concatenate([[2 * means[0] - edges[0]], edges])
                hi = np.concatenate([edges, [2 * means[-1] - edges[-1]]])
            else:
                lo = hi = means
            x = lo[b] + np.clip(pos, 0.0, 1.0) * (hi[b] - lo[b])
            x = np.minimum(x, np.nextafter(np.maximum(hi[b], lo[b]), -np.inf))  # stay inside [lo, hi)
            x = np.where(means[b] == lo[b], means[b], x)  # a bin whose mean is its lower edge is one value
            miss = rng.random(n) < ref.n_missing / max(ref.n + ref.n_missing, 1)
            x[miss] = np.nan
            out[name] = x
    for name in profile.categorical_names:
        cref = profile.categorical[name]
        labels = list(cref.categories) + ["__other__"]
        p = np.asarray(list(cref.counts) + [cref.other_count], dtype=float)
        idx = rng.choice(len(labels), size=n, p=p / p.sum()) if p.sum() > 0 else np.zeros(n, int)
        miss = rng.random(n) < cref.n_missing / max(cref.n + cref.n_missing, 1)
        out[name] = [None if m else labels[i] for i, m in zip(idx, miss, strict=True)]
    return {k: out[k] for k in profile.features}
