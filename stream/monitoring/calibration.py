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
from scipy import special, stats

from stream.monitoring.profile import NUMERIC, ReferenceProfile

__all__ = ["Calibration", "DriftSettings", "calibrate", "simulate_reference"]

@dataclass(frozen=True)
class DriftSettings:
    """Settings of :class:`stream.monitoring.drift.DriftMonitor`; all plain values with defaults.

    Parameters
    ----------
    expected_run_length
        Target mean number of rows between false alarms, all tests together.
    block_size
        Rows per block; checks happen at block ends, so detection delays are
        rounded up to it.
    windows
        Sliding window lengths (multiples of ``block_size``), short ones for
        sharp changes, long ones for slight ones.
    checks_per_window
        Each window is tested every ``window / checks_per_window`` rows.
    wasserstein_threshold, psi_threshold, js_threshold, missing_threshold, correlation_threshold
        Enter levels of the effect sizes. Each test is gated by its own: KS and
        Mann-Whitney by the Wasserstein distance (normalised by the reference
        standard deviation), numeric chi-square by PSI, categorical chi-square
        by the Jensen-Shannon distance, the missing-rate test by the absolute
        change of the rate, the correlation test by the change of the correlation.
    leave_p
        A drift closes when every test of ``resolve_window`` has a p-value (on the same
        dependence-corrected scale as the enter tests) above this ...
    resolve_window, resolve_patience
        ... in window ``resolve_window`` for ``resolve_patience`` checks in a row.
    multivariate, multivariate_min_window
        Run the pairwise correlation test over the numeric features, in the
        windows at least this long.
    dependence_scales, dependence_history, dependence_min_batches, dependence_confidence
        The stream's own dependence (:class:`stream.monitoring.dependence.DependenceTracker`):
        batch lengths in blocks, batch means kept per scale, batches a scale needs before
        it counts (the monitor is warming up until the shortest has them), and the quantile
        of the long-run variance's sampling distribution used as its upper bound.
    refresh_blocks
        The dependence, slow and seasonal estimates are refreshed every this many blocks
        (between refreshes the checks of many blocks are computed at once).
    min_effective_rows
        A score is tested in a window only when the window holds at least this many
        effectively independent rows (rows / design effect): a 500-row window filled by
        two bursts of one entity is not a sample of the traffic.
    cusum, cusum_blocks, cusum_k, cusum_clip, cusum_min_shift
        Two-sided CUSUM (:mod:`stream.monitoring.cusum`) on batch means of ``cusum_blocks``
        blocks of each feature's mid-rank, category shares and missing rates, standardised with
        the measured variances and clipped at +-``cusum_clip`` (one burst moves it a bounded step);
        reference value ``cusum_k`` (sd of a batch mean); an alarm also
        needs the run's mean shift to reach ``cusum_min_shift`` score sd. Windows and CUSUM
        share the false-alarm budget half and half.
    seasonal, seasonal_min_rows, seasonal_memory_rows, seasonal_alpha
        Learn a daily profile from event times (:class:`stream.monitoring.dependence.SeasonalProfile`):
        rows every hour of the day needs before it is used, rows of memory per hour, and
        the level at which hours must differ for the profile to be taken out.
    summary_window, summary_quantiles, summary_top_categories
        Rolling summary statistics (:func:`stream.monitoring.drift_view.summary`): rows,
        quantiles of numeric features, categories shown.
    score_feature
        Name of the model score column; its drift is reported as ``score_drift``.
    score_detector
        ``None``, ``"page_hinkley"`` or ``"adwin"``: also run this river detector
        (default parameters) on the score, row by row. Off by default because
        its false-alarm rate is not calibrated.
    emit_resolved
        Emit ``drift_resolved`` events when a drift closes.
    """

    expected_run_length: int = 10_000_000
    block_size: int = 100
    windows: tuple[int, ...] = (500, 2000, 8000, 32000)
    checks_per_window: int = 5
    wasserstein_threshold: float = 0.1
    psi_threshold: float = 0.1
    js_threshold: float = 0.1
    missing_threshold: float = 0.05
    correlation_threshold: float = 0.2
    leave_p: float = 0.01
    resolve_window: int = 2000
    resolve_patience: int = 3
    multivariate: bool = True
    multivariate_min_window: int = 0
    dependence_scales: tuple[int, ...] = (2, 8, 32)
    dependence_history: int = 128
    dependence_min_batches: int = 16
    dependence_confidence: float = 0.25
    min_effective_rows: int = 200
    refresh_blocks: int = 64
    cusum: bool = True
    cusum_blocks: int = 8
    cusum_k: float = 1.0
    cusum_clip: float = 3.0
    cusum_min_shift: float = 0.1
    seasonal: bool = True
    seasonal_min_rows: int = 2000
    seasonal_memory_rows: int = 5_000_000
    seasonal_alpha: float = 0.01
    summary_window: int = 8000
    summary_quantiles: tuple[float, ...] = (0.05, 0.5, 0.95)
    summary_top_categories: int = 5
    score_feature: str = "score"
    score_detector: str | None = None
    emit_resolved: bool = True

    def steps(self) -> tuple[int, ...]:
        """Rows between two checks of each window (a multiple of ``block_size``)."""
        b = self.block_size
        return tuple(max(b, (w // self.checks_per_window) // b * b) for w in self.windows)

    def validate(self) -> None:
        if self.expected_run_length <= 1:
            raise ValueError("expected_run_length must be > 1")
        if self.block_size < 1 or not self.windows:
            raise ValueError("block_size must be >= 1 and windows non-empty")
        if any(w % self.block_size or w <= 0 for w in self.windows):
            raise ValueError("every window must be a positive multiple of block_size")
        if list(self.windows) != sorted(set(self.windows)):
            raise ValueError("windows must be strictly increasing")
        if self.resolve_window not in self.windows:
            raise ValueError("resolve_window must be one of windows")
        if not 0 < self.leave_p < 1 or self.resolve_patience < 1 or self.checks_per_window < 1:
            raise ValueError("need 0 < leave_p < 1, resolve_patience >= 1, checks_per_window >= 1")
        if self.score_detector not in (None, "page_hinkley", "adwin"):
            raise ValueError(f"unknown score_detector {self.score_detector!r}")
        if not self.dependence_scales or min(self.dependence_scales) < 1 or not 0 < self.dependence_confidence < 1:
            raise ValueError("dependence_scales must be >= 1 and 0 < dependence_confidence < 1")
        if not 4 <= self.dependence_min_batches <= self.dependence_history:
            raise ValueError("need 4 <= dependence_min_batches <= dependence_history")
        if self.cusum_blocks < 1 or self.cusum_k <= 0 or self.cusum_min_shift < 0:
            raise ValueError("need cusum_blocks >= 1, cusum_k > 0, cusum_min_shift >= 0")
        if self.refresh_blocks < 1 or self.min_effective_rows < 1:
            raise ValueError("refresh_blocks and min_effective_rows must be >= 1")
        if self.summary_window < self.block_size or not all(0 < q < 1 for q in self.summary_quantiles):
            raise ValueError("summary_window must be >= block_size and quantiles in (0, 1)")


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
    ks_crit = np.array([[stats.kstwobign.isf(alpha_feature[f][w]) for f in num] for w in range(n_win)])
    ks_crit = ks_crit.reshape(n_win, len(num))
    chi2_crit = np.full((n_win, len(names), max_dof + 1), np.inf)
    z_crit = np.zeros((n_win, len(names)))
    for w in range(n_win):
        for j, f in enumerate(names):
            a = alpha_feature[f][w]
            chi2_crit[w, j, 1:] = stats.chi2.isf(a, dofs[1:])
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
