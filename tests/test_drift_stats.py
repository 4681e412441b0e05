"""Every pure statistic of stream.monitoring.drift_stats against scipy on the same samples."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import special, stats
from scipy.spatial.distance import jensenshannon

from stream.monitoring import drift_stats as ds


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(42)


def test_psi_is_symmetrised_kl(rng: np.random.Generator) -> None:
    p = rng.integers(1, 100, size=12).astype(float)
    q = rng.integers(1, 100, size=12).astype(float)
    pp, qq = p / p.sum(), q / q.sum()
    expected = special.rel_entr(qq, pp).sum() + special.rel_entr(pp, qq).sum()
    assert ds.psi(p, q) == pytest.approx(expected, rel=1e-12)
    assert ds.psi(p, p) == pytest.approx(0.0, abs=1e-15)


def test_psi_vectorised_and_empty_bins() -> None:
    ref = np.array([[10.0, 0.0, 90.0], [50.0, 50.0, 0.0]])
    cur = np.array([[20.0, 5.0, 75.0], [50.0, 50.0, 0.0]])
    out = ds.psi(ref, cur)
    assert out.shape == (2,)
    assert np.isfinite(out).all() and out[0] > 0 and out[1] == pytest.approx(0.0)


@pytest.mark.parametrize("n1,n2,shift", [(200, 300, 0.0), (500, 500, 0.3), (1000, 80, 1.0), (50, 5000, 0.1)])
def test_ks_2samp_matches_scipy(rng: np.random.Generator, n1: int, n2: int, shift: float) -> None:
    a, b = rng.normal(size=n1), rng.normal(shift, 1.0, size=n2)
    d, p = ds.ks_2samp(a, b)
    ref = stats.ks_2samp(a, b, method="asymp")
    assert d == pytest.approx(ref.statistic, abs=1e-12)
    assert p == pytest.approx(ref.pvalue, rel=1e-9, abs=1e-300)


def test_ks_2samp_with_ties_matches_scipy(rng: np.random.Generator) -> None:
    a, b = rng.integers(0, 5, size=400).astype(float), rng.integers(0, 6, size=300).astype(float)
    assert ds.ks_2samp(a, b)[0] == pytest.approx(stats.ks_2samp(a, b).statistic, abs=1e-12)


def test_binned_ks_is_ks_at_the_edges(rng: np.random.Generator) -> None:
    a, b = rng.normal(size=3000), rng.normal(0.2, 1.3, size=2000)
    edges = np.quantile(a, np.linspace(0, 1, 21)[1:-1])
    ca = np.bincount(np.searchsorted(edges, a, side="right"), minlength=20)
    cb = np.bincount(np.searchsorted(edges, b, side="right"), minlength=20)
    at_edges = np.max(np.abs(np.searchsorted(np.sort(a), edges, side="left") / a.size
                             - np.searchsorted(np.sort(b), edges, side="left") / b.size))
    assert ds.binned_ks(ca, cb) == pytest.approx(at_edges, abs=1e-12)
    assert ds.binned_ks(ca, cb) <= stats.ks_2samp(a, b).statistic + 1e-12


def test_chi2_homogeneity_matches_scipy(rng: np.random.Generator) -> None:
    a = rng.integers(0, 50, size=8).astype(float)
    b = rng.integers(0, 80, size=8).astype(float)
    a[3] = b[3] = 0.0  # a column empty in both rows is dropped
    stat, dof = ds.chi2_homogeneity(a, b)
    keep = (a + b) > 0
    ref = stats.chi2_contingency(np.vstack([a[keep], b[keep]]), correction=False)
    assert stat == pytest.approx(ref.statistic, rel=1e-12)
    assert dof == ref.dof
    assert ds.chi2_pvalue(float(stat), int(dof)) == pytest.approx(ref.pvalue, rel=1e-9)


def test_chi2_homogeneity_vectorised(rng: np.random.Generator) -> None:
    a = rng.integers(1, 50, size=(4, 6)).astype(float)
    b = rng.integers(1, 50, size=(4, 6)).astype(float)
    stat, dof = ds.chi2_homogeneity(a, b)
    for i in range(4):
        assert stat[i] == pytest.approx(stats.chi2_contingency(np.vstack([a[i], b[i]]), correction=False).statistic)
    assert (dof == 5).all()


def test_wasserstein_matches_scipy(rng: np.random.Generator) -> None:
    u, v = rng.normal(size=700), rng.exponential(size=300)
    assert ds.wasserstein(u, v) == pytest.approx(stats.wasserstein_distance(u, v), rel=1e-10)


def test_binned_wasserstein_matches_scipy_weighted(rng: np.random.Generator) -> None:
    pa, pb = np.sort(rng.normal(size=20)), np.sort(rng.normal(0.5, 2.0, size=20))
    wa, wb = rng.integers(0, 30, size=20).astype(float), rng.integers(1, 30, size=20).astype(float)
    got = ds.binned_wasserstein(pa, wa, pb, wb)
    assert got == pytest.approx(stats.wasserstein_distance(pa, pb, wa, wb), rel=1e-10)
    both = ds.binned_wasserstein(np.vstack([pa, pb]), np.vstack([wa, wb]), np.vstack([pb, pa]), np.vstack([wb, wa]))
    assert both == pytest.approx([got, got], rel=1e-10)


@pytest.mark.parametrize("base", [2.0, np.e])
def test_js_distance_matches_scipy(rng: np.random.Generator, base: float) -> None:
    p = rng.integers(0, 40, size=7).astype(float)
    q = rng.integers(1, 40, size=7).astype(float)
    assert ds.js_distance(p, q, base=base) == pytest.approx(jensenshannon(p, q, base=base), rel=1e-10)
    assert ds.js_distance(p, p) == pytest.approx(0.0, abs=1e-7)


def test_two_proportion_z_squared_is_2x2_chi2() -> None:
    z = ds.two_proportion_z(37, 400, 120, 3000)
    ref = stats.chi2_contingency(np.array([[37, 363], [120, 2880]]), correction=False).statistic
    assert float(z) ** 2 == pytest.approx(ref, rel=1e-10)
    assert float(ds.two_proportion_z(0, 100, 0, 100)) == 0.0


def test_fisher_z_matches_textbook() -> None:
    got = ds.fisher_z(0.5, 1003, 0.3, 2003)
    expected = (np.arctanh(0.5) - np.arctanh(0.3)) / np.sqrt(1 / 1000 + 1 / 2000)
    assert float(got) == pytest.approx(expected)


def test_correlation_from_sums_matches_numpy(rng: np.random.Generator) -> None:
    x = rng.normal(size=(500, 3))
    x[:, 2] += 0.7 * x[:, 0]
    m = np.ones_like(x)
    n, sx, qx, p = m.T @ m, x.T @ m, (x * x).T @ m, x.T @ x
    r = ds.correlation_from_sums(n, sx, qx, p)
    assert r == pytest.approx(np.corrcoef(x, rowvar=False), abs=1e-10)


def test_correlation_from_sums_pairwise_complete(rng: np.random.Generator) -> None:
    x = rng.normal(size=(400, 2))
    x[:, 1] += x[:, 0]
    x[rng.random(400) < 0.2, 1] = np.nan
    mask = ~np.isnan(x)
    z = np.where(mask, x, 0.0)
    m = mask.astype(float)
    r = ds.correlation_from_sums(m.T @ m, z.T @ m, (z * z).T @ m, z.T @ z)
    ok = mask.all(axis=1)
    assert r[0, 1] == pytest.approx(stats.pearsonr(x[ok, 0], x[ok, 1]).statistic, abs=1e-10)


def test_window_stats_shapes(rng: np.random.Generator) -> None:
    ref = rng.integers(50, 100, size=(3, 5)).astype(float)
    cur = rng.integers(50, 100, size=(3, 5))
    st = ds.numeric_window_stats(cur, cur * 1.0, np.array([1, 2, 3]), ref, np.zeros(3), np.tile(np.arange(5.0), (3, 1)),
                                 np.ones(3))
    assert {"ks", "d", "chi2", "dof", "psi", "wasserstein", "missing", "missing_change"} <= set(st)
    assert all(v.shape == (3,) for v in st.values())
    cst = ds.categorical_window_stats(cur, np.zeros(3), ref, np.zeros(3), effects=False)
    assert "jensen_shannon" not in cst and cst["chi2"].shape == (3,)


def test_binned_mannwhitney_matches_scipy(rng: np.random.Generator) -> None:
    a = rng.integers(0, 12, size=700)
    b = np.clip(rng.integers(0, 12, size=900) + 1, 0, 11)
    ca, cb = np.bincount(a, minlength=12), np.bincount(b, minlength=12)
    z, auc = ds.binned_mannwhitney(ca, cb)
    ref = stats.mannwhitneyu(a, b, method="asymptotic", use_continuity=False)
    assert auc * a.size * b.size == pytest.approx(ref.statistic)
    assert 2 * stats.norm.sf(abs(z)) == pytest.approx(ref.pvalue, rel=1e-9)
    assert z < 0  # a tends to be smaller


def test_cold_start_level_rarely_reads_independent_rows_as_dependent() -> None:
    """Before its longer scales fill, the tracker also reads dependence from the shortest scale's
    batch means around the reference (bursts as long as a batch). On independent rows that reading
    must rarely pass its margin: it turns off the block CUSUM. The margin once took the untrimmed
    mean's noise for the trimmed mean's (sqrt(2) for 1.78 per sqrt(n)): 0.1 % of channels here."""
    from stream.monitoring.dependence import DependenceTracker

    rng = np.random.default_rng(11)
    channels, blocks = 4_000, 64  # 32 batches of 2 blocks at the shortest scale: 6,400 rows
    tr = DependenceTracker(channels, block_rows=100, scales=(2, 8, 32), history=128, min_batches=16)
    g0 = np.full(channels, 1.0 / 12.0)  # a mid-rank's variance
    means = 0.5 + rng.normal(size=(blocks, channels)) * np.sqrt(g0 / 100)
    tr.add_many(means, np.full((blocks, channels), 100.0), np.zeros((blocks, channels), bool),
                np.full(blocks, -1))
    lr, _ = tr.estimate(np.full(channels, 0.5), g0, np.full(channels, 20_000.0))
    est, _ = tr._scale_estimate(0)
    from_differences = np.maximum(g0, est * tr._inflate[tr._scale_df(0)])
    assert float(np.mean(lr > from_differences * (1 + 1e-9))) < 0.0005


def _design_effects(means: np.ndarray, g0: float) -> np.ndarray:
    """Each channel's long-run variance over ``g0`` from 100-row block means ``[block, channel]``."""
    from stream.monitoring.dependence import DependenceTracker

    blocks, channels = means.shape
    tr = DependenceTracker(channels, block_rows=100, scales=(2, 8, 32), history=128, min_batches=16)
    tr.add_many(means, np.full(means.shape, 100.0), np.zeros(means.shape, bool), np.full(blocks, -1))
    lr, _ = tr.estimate(np.full(channels, 0.5), np.full(channels, g0), np.full(channels, 20_000.0))
    return lr / g0


def test_the_longest_scale_counts_only_where_it_clearly_exceeds_the_shorter_ones() -> None:
    """After 100,000 rows the 3,200-row scale has 30 differences. Taken at its upper bound like
    the shorter scales, its noise alone put a design effect of 20 at 38 on a tenth of the channels
    (a 0.5 sd shift in mixed traffic then took 11,199 rows); dependence that only it sees still counts."""
    rng = np.random.default_rng(3)
    blocks, channels, g0 = 1_000, 2_000, 1.0 / 12.0
    # dependence shorter than a block: D = 20 at every scale
    d = _design_effects(0.5 + rng.normal(size=(blocks, channels)) * np.sqrt(20 * g0 / 100), g0)
    assert np.quantile(d, 0.9) < 33 and np.mean(d < 18) < 0.03
    # D = 5 within blocks plus a level held 3,200 rows worth 15 more: only the longest scale sees it
    level = np.repeat(rng.normal(size=(blocks // 32 + 1, channels)), 32, axis=0)[:blocks]
    d = _design_effects(0.5 + rng.normal(size=(blocks, channels)) * np.sqrt(5 * g0 / 100)
                        + level * np.sqrt(15 * g0 / 3200), g0)
    assert np.median(d) > 18


def test_a_channel_frozen_past_its_history_keeps_its_design_effect() -> None:
    """A drift open longer than the shortest scale's history (25,600 rows) left its channels no
    differences there: the design effect fell from 20 to 1 (correlations of AR(1) features, once
    the drift ended, opened false drifts at a 500-row window). Frozen, the channel keeps the
    estimate it had; thawed, each scale it lost counts as it was until it has its batches again."""
    from stream.monitoring.dependence import DependenceTracker

    rng = np.random.default_rng(5)
    channels, g0 = 200, 1.0 / 12.0
    tr = DependenceTracker(channels, block_rows=100, scales=(2, 8, 32), history=128, min_batches=16)
    ref, m = np.full(channels, 0.5), np.full(channels, 20_000.0)

    def feed(blocks: int, frozen: bool) -> None:
        means = 0.5 + rng.normal(size=(blocks, channels)) * np.sqrt(20 * g0 / 100)  # D = 20
        tr.add_many(means, np.full(means.shape, 100.0), np.full(means.shape, frozen), np.full(blocks, -1))

    feed(150, False)  # 15,000 rows: the shortest scale alone has its batches
    before, _ = tr.estimate(ref, np.full(channels, g0), m)
    assert np.median(before / g0) > 15
    feed(400, True)  # 40,000 rows in drift
    held, _ = tr.estimate(ref, np.full(channels, g0), m, hold=np.ones(channels, bool))
    assert np.array_equal(held, before)
    feed(20, False)  # the drift over: 2,000 rows, too few batches for any scale
    thawed, _ = tr.estimate(ref, np.full(channels, g0), m)
    assert np.median(thawed / g0) > 15
