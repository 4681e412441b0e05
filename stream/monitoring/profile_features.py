"""Per-feature reference summaries of a profile: one numeric or categorical feature's training values.

:func:`numeric_reference` keeps quantile bin edges with their counts and bin means, mean,
standard deviation, a seeded subsample and serial-dependence factors;
:func:`categorical_reference` keeps the frequent categories with their counts (rare ones
pooled into "other"). :func:`infer_kind` tells the two apart when the caller does not.

>>> infer_kind("c", ["a", None, "b"]), infer_kind("x", [1, 2.5, None])
('categorical', 'numeric')
>>> categorical_reference("c", ["a", "b", "a", None], max_categories=50, min_share=0.0).categories
['a', 'b']
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from numbers import Number
from typing import Any

import numpy as np

from stream.errors import ProfileError
from stream.monitoring.profile_scores import bin_normal_scores, dispersion_factors

__all__ = [
    "CATEGORICAL",
    "NUMERIC",
    "CategoricalReference",
    "NumericReference",
    "bin_codes",
    "categorical_reference",
    "category_codes",
    "infer_kind",
    "is_missing",
    "numeric_reference",
]

NUMERIC = "numeric"
CATEGORICAL = "categorical"


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
    dispersion: list[list[float]] = field(default_factory=list)  # [[block, phi], ...], see dispersion_factors


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


def floats(values: Any) -> np.ndarray:
    """``values`` as float64, as the monitor reads numbers: a Python int past a float's range
    (10**400) reads as an infinity of its sign, which the monitor counts as missing (NumPy raised
    OverflowError, which cost the whole batch).

    >>> floats([1, 2.5, 10**400, -10**400]).tolist()
    [1.0, 2.5, inf, -inf]
    """
    try:
        return np.asarray(values, dtype=float)
    except OverflowError:
        return np.array([to_float(v) for v in values], dtype=float)


def to_float(value: Any) -> float:
    """One value as :func:`floats` reads it."""
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


def infer_kind(name: str, values: Sequence[Any] | np.ndarray) -> str:
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


def numeric_reference(
    name: str, values: Sequence[Any] | np.ndarray, n_bins: int, sample_size: int, rng: np.random.Generator
) -> NumericReference:
    try:
        x = floats(values)
    except (TypeError, ValueError) as exc:
        raise ProfileError(f"feature {name!r} is not numeric: {exc}") from exc
    present = x[np.isfinite(x)]  # an infinity is a missing value, as the monitor reads it
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
    codes = bin_codes(x, edges)
    scores = bin_normal_scores(counts)
    scale = float(np.abs(present).max())
    if scale > 1e100:  # scaled first where the squares would overflow (one 1e160 made the sd inf)
        mean, std = float((present / scale).mean() * scale), float((present / scale).std() * scale)
    else:
        mean, std = float(present.mean()), float(present.std())
    if present.size > sample_size:
        sample = np.sort(rng.choice(present, size=sample_size, replace=False))
    else:
        sample = np.sort(present)
    return NumericReference(
        n=int(present.size),
        n_missing=n_missing,
        mean=mean,
        std=std,
        edges=[float(e) for e in edges],
        counts=[int(c) for c in counts],
        bin_means=[float(m) for m in means],
        sample=[float(s) for s in sample],
        dispersion=dispersion_factors(
            codes, edges.size + 2, np.where(codes <= edges.size, scores[np.minimum(codes, edges.size)], 0.0)),
    )


def bin_codes(x: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Each value's reference bin (``len(edges) + 1`` bins), missing (NaN or an infinity) as ``len(edges) + 1``.

    >>> bin_codes(np.array([0.0, 1.0, np.nan, np.inf]), np.array([0.5])).tolist()
    [0, 1, 2, 2]
    """
    return np.where(np.isfinite(x), np.searchsorted(edges, x, side="right"), edges.size + 1)


def category_codes(values: Sequence[Any] | np.ndarray, categories: Sequence[str]) -> np.ndarray:
    """Each value's reference category slot: its index, ``len(categories)`` for any other
    ("other"), ``len(categories) + 1`` for missing.

    >>> category_codes(["b", "z", None, 3], ["a", "b", "3"]).tolist()
    [1, 3, 4, 2]
    """
    index = {c: i for i, c in enumerate(categories)}
    other = len(categories)
    return np.fromiter((other + 1 if is_missing(v) else index.get(v if isinstance(v, str) else str(v), other)
                        for v in values), np.int64)


def categorical_reference(
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
    codes = category_codes(values, [k for k, _ in keep])
    return CategoricalReference(
        n=n, n_missing=n_missing, categories=[k for k, _ in keep], counts=[c for _, c in keep], other_count=other,
        dispersion=dispersion_factors(codes, len(keep) + 2),
    )

