"""Reference profile of the training data, the baseline every drift test compares against.

The profile is small, fixed-size and JSON-serialisable, so it lives inside the
model card. Per numeric feature it keeps quantile bin edges with the reference
counts and bin means (histograms, KS, PSI, Wasserstein), mean and standard
deviation (scale for effect sizes) and a seeded subsample (evidence). Per
categorical feature it keeps the frequent categories with their counts (rare
ones are pooled into one "other" bucket). For all features it keeps the
missing-value count, and for numeric ones the pairwise correlation matrix of
their normal scores (multivariate test).

Examples
--------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> prof = ReferenceProfile.from_columns(
...     {"x": rng.normal(size=1000), "c": rng.choice(["a", "b"], size=1000).tolist()})
>>> prof.features
{'x': 'numeric', 'c': 'categorical'}
>>> len(prof.numeric["x"].edges), prof.categorical["c"].categories
(19, ['b', 'a'])
>>> ReferenceProfile.from_dict(prof.to_dict()).to_dict() == prof.to_dict()
True
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from numbers import Number
from typing import Any

import numpy as np
from scipy import special

from stream.errors import ProfileError

__all__ = [
    "CategoricalReference",
    "NumericReference",
    "ProfileError",
    "ReferenceArrays",
    "ReferenceProfile",
    "bin_normal_scores",
    "dispersion_for",
    "reference_arrays",
]

NUMERIC = "numeric"
CATEGORICAL = "categorical"
PROFILE_VERSION = 1
CORRELATION_METHOD = "bin_normal_scores"


@dataclass(frozen=True)
class NumericReference:
    """Reference summary of one numeric feature."""

    n: int  # non-missing values
    n_missing: int
    mean: float
    std: float
    edges: list[float]  # sorted, unique; bin j holds [edges[j-1], edges[j])
    counts: list[int]  # len(edges) + 1
    bin_means: list[float]  # len(edges) + 1
    sample: list[float] = field(default_factory=list)  # seeded subsample, for evidence
    dispersion: list[list[float]] = field(default_factory=list)  # [[block, phi], ...], see _dispersion


@dataclass(frozen=True)
class CategoricalReference:
    """Reference summary of one categorical feature."""

    n: int
    n_missing: int
    categories: list[str]  # frequent categories, most frequent first
    counts: list[int]  # per category
    other_count: int  # reference rows of rare categories pooled into "other"
    dispersion: list[list[float]] = field(default_factory=list)


def is_missing(value: Any) -> bool:
    """``None`` and float NaN are missing values."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def _infer_kind(name: str, values: Sequence[Any] | np.ndarray) -> str:
    if isinstance(values, np.ndarray) and values.dtype.kind in "biuf":
        return NUMERIC
    if isinstance(values, np.ndarray) and values.dtype.kind in "US":
        return CATEGORICAL
    kinds = set()
    for v in values:
        if is_missing(v):
            continue
        if isinstance(v, str):
            kinds.add(CATEGORICAL)
        elif isinstance(v, Number | np.number):
            kinds.add(NUMERIC)
        else:
            raise ProfileError(f"feature {name!r}: unsupported value type {type(v).__name__}")
    if len(kinds) > 1:
        raise ProfileError(f"feature {name!r} mixes numbers and strings")
    return kinds.pop() if kinds else NUMERIC


def _numeric(
    name: str, values: Sequence[Any] | np.ndarray, n_bins: int, sample_size: int, rng: np.random.Generator
) -> NumericReference:
    try:
        x = np.asarray(values, dtype=float)
    except (TypeError, ValueError) as exc:
        raise ProfileError(f"feature {name!r} is not numeric: {exc}") from exc
    present = x[~np.isnan(x)]
    n_missing = int(x.size - present.size)
    if present.size == 0:
        return NumericReference(0, n_missing, 0.0, 0.0, [], [0], [0.0], [])
    edges = np.unique(np.quantile(present, np.linspace(0.0, 1.0, n_bins + 1)[1:-1]))
    if edges.size < n_bins - 1:
        # discrete feature (tied quantiles): values below the reference minimum or
        # above its maximum get bins of their own, empty in the reference, so a
        # constant or discrete feature leaving its range is seen by the bin tests.
        # Not for continuous features: there the outer quantile bins already move,
        # and empty outer bins would make the chi-square test fire on single
        # extreme values.
        edges = np.unique(np.concatenate([[present.min()], edges, [np.nextafter(present.max(), np.inf)]]))
    bins = np.searchsorted(edges, present, side="right")
    counts = np.bincount(bins, minlength=edges.size + 1)
    sums = np.bincount(bins, weights=present, minlength=edges.size + 1)
    lo = np.concatenate([[min(edges[0], present.min())], edges])
    hi = np.concatenate([edges, [present.max()]])
    hi = np.minimum(hi, present.max())
    means = np.where(counts > 0, sums / np.maximum(counts, 1), 0.5 * (lo + hi))
    codes = np.where(np.isnan(x), edges.size + 1, np.searchsorted(edges, x, side="right"))
    scores = bin_normal_scores(counts)
    if present.size > sample_size:
        sample = np.sort(rng.choice(present, size=sample_size, replace=False))
    else:
        sample = np.sort(present)
    return NumericReference(
        n=int(present.size),
        n_missing=n_missing,
        mean=float(present.mean()),
        std=float(present.std()),
        edges=[float(e) for e in edges],
        counts=[int(c) for c in counts],
        bin_means=[float(m) for m in means],
        sample=[float(s) for s in sample],
        dispersion=_dispersion(codes, edges.size + 2, np.where(codes <= edges.size, scores[np.minimum(codes, edges.size)], 0.0)),
    )


def _categorical(
    name: str, values: Sequence[Any] | np.ndarray, max_categories: int, min_share: float
) -> CategoricalReference:
    tally: dict[str, int] = {}
    n_missing = 0
    for v in values:
        if is_missing(v):
            n_missing += 1
            continue
        key = v if isinstance(v, str) else str(v)
        tally[key] = tally.get(key, 0) + 1
    n = sum(tally.values())
    ranked = sorted(tally.items(), key=lambda kv: (-kv[1], kv[0]))
    keep = [(k, c) for k, c in ranked[:max_categories] if c >= min_share * n]
    other = n - sum(c for _, c in keep)
    index = {k: i for i, (k, _) in enumerate(keep)}
    codes = np.fromiter((len(keep) + 1 if is_missing(v) else index.get(v if isinstance(v, str) else str(v), len(keep))
                         for v in values), np.int64)
    return CategoricalReference(
        n=n, n_missing=n_missing, categories=[k for k, _ in keep], counts=[c for _, c in keep], other_count=other,
        dispersion=_dispersion(codes, len(keep) + 2),
    )


DISPERSION_BLOCKS = (500, 2000, 8000)


def _dispersion(codes: np.ndarray, n_codes: int, scores: np.ndarray | None = None,
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


def _correlation(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
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


@dataclass
class ReferenceProfile:
    """Reference profile of training data (see module docstring).

    Attributes
    ----------
    features
        Feature name to ``"numeric"`` or ``"categorical"``, in insertion order.
    numeric, categorical
        Per-feature summaries.
    correlation, correlation_n
        Pairwise correlation and pair counts of the numeric features, in order.
    n_rows
        Number of reference rows.
    """

    features: dict[str, str]
    numeric: dict[str, NumericReference]
    categorical: dict[str, CategoricalReference]
    correlation: list[list[float]]
    correlation_n: list[list[int]]
    n_rows: int
    # "bin_normal_scores" (this version); profiles written before it hold Pearson
    # correlations of raw values, which the monitor cannot compare its windows to
    correlation_method: str = CORRELATION_METHOD

    @classmethod
    def from_columns(
        cls,
        columns: Mapping[str, Sequence[Any] | np.ndarray],
        kinds: Mapping[str, str] | None = None,
        *,
        seed: int = 0,
        n_bins: int = 20,
        max_categories: int = 50,
        min_category_share: float = 0.005,
        sample_size: int = 1000,
    ) -> ReferenceProfile:
        """Build a profile from equally long columns.

        Parameters
        ----------
        columns
            Feature name to values. Numeric values may hold ``None``/NaN for
            missing, categorical ones ``None``.
        kinds
            Feature name to ``"numeric"``/``"categorical"``; inferred when None
            (numbers are numeric, strings categorical).
        seed
            Seed of the evidence subsample.
        n_bins
            Quantile bins per numeric feature (fewer if values tie).
        max_categories, min_category_share
            Categories kept per categorical feature; the rest pool into "other".
        sample_size
            Size of the stored subsample per numeric feature.
        """
        if not columns:
            raise ProfileError("no columns")
        if n_bins < 2:
            raise ProfileError("n_bins must be >= 2")
        lengths = {len(v) for v in columns.values()}
        if len(lengths) != 1:
            raise ProfileError(f"columns have different lengths: {sorted(lengths)}")
        rng = np.random.default_rng(seed)
        features: dict[str, str] = {}
        numeric: dict[str, NumericReference] = {}
        categorical: dict[str, CategoricalReference] = {}
        for name, values in columns.items():
            kind = (kinds or {}).get(name) or _infer_kind(name, values)
            if kind not in (NUMERIC, CATEGORICAL):
                raise ProfileError(f"feature {name!r}: unknown kind {kind!r}")
            features[name] = kind
            if kind == NUMERIC:
                numeric[name] = _numeric(name, values, n_bins, sample_size, rng)
            else:
                categorical[name] = _categorical(name, values, max_categories, min_category_share)
        names = list(numeric)
        if names:
            scores = []
            for k in names:
                x = np.asarray(columns[k], dtype=float)
                bins = np.searchsorted(np.asarray(numeric[k].edges), x, side="right")
                scores.append(np.where(np.isnan(x), np.nan, bin_normal_scores(numeric[k].counts)[bins]))
            r, n = _correlation(np.column_stack(scores))
        else:
            r, n = np.zeros((0, 0)), np.zeros((0, 0))
        return cls(
            features=features,
            numeric=numeric,
            categorical=categorical,
            correlation=[[float(v) for v in row] for row in r],
            correlation_n=[[int(v) for v in row] for row in n],
            n_rows=int(lengths.pop()),
        )

    @property
    def numeric_names(self) -> list[str]:
        return [k for k, v in self.features.items() if v == NUMERIC]

    @property
    def categorical_names(self) -> list[str]:
        return [k for k, v in self.features.items() if v == CATEGORICAL]

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable, deterministic representation."""
        # a list, not a dict, so the feature order survives JSON dumps with sorted keys
        feats: list[dict[str, Any]] = []
        for name, kind in self.features.items():
            body = self.numeric[name].__dict__ if kind == NUMERIC else self.categorical[name].__dict__
            feats.append({"name": name, "kind": kind, **body})
        return {
            "version": PROFILE_VERSION,
            "n_rows": self.n_rows,
            "features": feats,
            "correlation": {"features": self.numeric_names, "r": self.correlation, "n": self.correlation_n,
                            "method": self.correlation_method},
        }

    def subset(self, names: Sequence[str]) -> ReferenceProfile:
        """The profile of some of its features (correlations restricted to them), in its order.

        >>> rng = np.random.default_rng(0)
        >>> p = ReferenceProfile.from_columns({"a": rng.normal(size=50), "b": rng.normal(size=50), "c": ["x"] * 50})
        >>> list(p.subset(["c", "a"]).features), len(p.subset(["c", "a"]).correlation)
        (['a', 'c'], 1)
        """
        keep = [n for n in self.features if n in set(names)]
        num = [n for n in self.numeric_names if n in keep]
        idx = [self.numeric_names.index(n) for n in num]
        return ReferenceProfile(
            {n: self.features[n] for n in keep}, {n: self.numeric[n] for n in num},
            {n: self.categorical[n] for n in keep if n in self.categorical},
            [[self.correlation[i][j] for j in idx] for i in idx], [[self.correlation_n[i][j] for j in idx] for i in idx],
            self.n_rows, correlation_method=self.correlation_method)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ReferenceProfile:
        """Inverse of :meth:`to_dict`."""
        try:
            if d.get("version") != PROFILE_VERSION:
                raise ProfileError(f"unsupported profile version {d.get('version')!r}")
            features: dict[str, str] = {}
            numeric: dict[str, NumericReference] = {}
            categorical: dict[str, CategoricalReference] = {}
            for fd in d["features"]:
                name = fd["name"]
                body = {k: v for k, v in fd.items() if k not in ("kind", "name")}
                features[name] = fd["kind"]
                if fd["kind"] == NUMERIC:
                    numeric[name] = NumericReference(**body)
                elif fd["kind"] == CATEGORICAL:
                    categorical[name] = CategoricalReference(**body)
                else:
                    raise ProfileError(f"feature {name!r}: unknown kind {fd['kind']!r}")
            corr = d["correlation"]
            if list(corr["features"]) != [k for k, v in features.items() if v == NUMERIC]:
                raise ProfileError("correlation features do not match numeric features")
            return cls(features, numeric, categorical, corr["r"], corr["n"], int(d["n_rows"]),
                       correlation_method=corr.get("method", "pearson"))
        except (KeyError, TypeError, AttributeError) as exc:
            raise ProfileError(f"malformed profile: {exc!r}") from exc


@dataclass(frozen=True)
class ReferenceArrays:
    """A profile as padded arrays, the form the monitor computes with.

    Numeric features share ``k`` bins (unused ones empty in the reference and
    so in every window); categorical features have ``kc`` slots: their
    categories, then "other" (rare in the reference, or unseen), then padding.
    ``cat_codes`` maps a category (and ``None``, to the missing code ``kc``) to
    its slot; ``cat_other`` is each feature's "other" slot.
    """

    edges: list[np.ndarray]
    k: int
    num_counts: np.ndarray
    num_bin_means: np.ndarray
    num_missing: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    num_scores: np.ndarray
    kc: int
    cat_counts: np.ndarray
    cat_missing: np.ndarray
    cat_codes: list[dict[Any, int]]
    cat_other: list[int]
    corr: np.ndarray
    corr_n: np.ndarray
    num_dispersion: list[list[list[float]]] = field(default_factory=list)
    cat_dispersion: list[list[list[float]]] = field(default_factory=list)

    def dispersion(self, windows: Sequence[int]) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Per window, ``[feature, (phi_bins, phi_location)]`` of numeric and categorical features."""
        num = [np.array([dispersion_for(d, w) for d in self.num_dispersion]).reshape(-1, 2) for w in windows]
        cat = [np.array([dispersion_for(d, w) for d in self.cat_dispersion]).reshape(-1, 2) for w in windows]
        return num, cat


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


def reference_arrays(profile: ReferenceProfile) -> ReferenceArrays:
    """Pad a profile's per-feature summaries into arrays (see :class:`ReferenceArrays`)."""
    num = [profile.numeric[n] for n in profile.numeric_names]
    cat = [profile.categorical[n] for n in profile.categorical_names]
    edges = [np.asarray(r.edges, dtype=float) for r in num]
    k = max([e.size + 1 for e in edges] + [1])
    counts, means = np.zeros((len(num), k)), np.zeros((len(num), k))
    for j, r in enumerate(num):
        counts[j, : len(r.counts)] = r.counts
        means[j, :] = r.bin_means[-1] if r.bin_means else 0.0
        means[j, : len(r.bin_means)] = r.bin_means
    scores = np.zeros((len(num), k))
    for j, r in enumerate(num):
        scores[j, : len(r.counts)] = bin_normal_scores(r.counts)
    kc = max([len(r.categories) + 1 for r in cat] + [1])
    ccounts = np.zeros((len(cat), kc))
    codes: list[dict[Any, int]] = []
    for j, r in enumerate(cat):
        ccounts[j, : len(r.counts)] = r.counts
        ccounts[j, len(r.counts)] = r.other_count
        codes.append({**{c: i for i, c in enumerate(r.categories)}, None: kc})
    return ReferenceArrays(
        edges=edges, k=k, num_counts=counts, num_bin_means=means,
        num_missing=np.array([r.n_missing for r in num], dtype=float),
        mean=np.array([r.mean for r in num]), std=np.array([r.std if r.std > 0 else 1.0 for r in num]),
        num_scores=scores,
        kc=kc, cat_counts=ccounts, cat_missing=np.array([r.n_missing for r in cat], dtype=float),
        cat_codes=codes, cat_other=[len(r.categories) for r in cat],
        corr=np.asarray(profile.correlation, dtype=float).reshape(len(num), len(num)),
        corr_n=np.asarray(profile.correlation_n, dtype=float).reshape(len(num), len(num)),
        num_dispersion=[r.dispersion for r in num], cat_dispersion=[r.dispersion for r in cat],
    )
