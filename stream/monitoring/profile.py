"""Reference profile of the training data, the baseline every drift test compares against.

The profile is small, fixed-size and JSON-serialisable, so it lives inside the
model card. Per numeric feature it keeps quantile bin edges with the reference
counts and bin means (histograms, KS, PSI, Wasserstein), mean and standard
deviation (scale for effect sizes) and a seeded subsample (evidence). Per
categorical feature it keeps the frequent categories with their counts (rare
ones are pooled into one "other" bucket). For all features it keeps the
missing-value count, and for numeric ones the pairwise correlation matrix of
their normal scores (multivariate test). Given the rows' event times, it also keeps
each feature's counts per hour of the day (UTC): the daily cycle of the training
data, which the monitor then expects from its first row instead of learning it
from a day of live traffic (see :mod:`stream.monitoring.seasonal`).

The pieces live in their own modules: per-feature summaries in
:mod:`stream.monitoring.profile_features`, normal scores, correlations and
serial-dependence factors in :mod:`stream.monitoring.profile_scores`, the padded
arrays the monitor computes with in :mod:`stream.monitoring.profile_arrays`; every
public name stays importable from here.

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

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from stream.errors import ProfileError
from stream.monitoring.profile_arrays import ReferenceArrays, reference_arrays
from stream.monitoring.profile_features import (
    CATEGORICAL,
    NUMERIC,
    CategoricalReference,
    NumericReference,
    bin_codes,
    categorical_reference,
    category_codes,
    floats,
    infer_kind,
    numeric_reference,
)
from stream.monitoring.profile_features import is_missing as is_missing  # importable from here, as before
from stream.monitoring.profile_scores import DISPERSION_BLOCKS as DISPERSION_BLOCKS  # likewise
from stream.monitoring.profile_scores import bin_normal_scores, dispersion_for, pairwise_correlation

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

PROFILE_VERSION = 1
CORRELATION_METHOD = "bin_normal_scores"
HOURS = 24
# below this many rows a profile's own sampling noise (a share read from 20 rows is off by ~0.1)
# can read as drift and small changes go unseen: said where a profile is used (replay, the monitor)
MIN_RELIABLE_ROWS = 1_000


def hourly_counts(columns: Mapping[str, Sequence[Any] | np.ndarray], numeric: Mapping[str, NumericReference],
                  categorical: Mapping[str, CategoricalReference],
                  event_ts: Sequence[float | None] | np.ndarray) -> dict[str, list[list[int]]]:
    """Per feature, its counts per hour of the day (UTC) in the profile's own bins or categories,
    missing last; rows without an event time count in no hour.

    >>> num = {"x": NumericReference(4, 0, 0.5, 0.5, [0.5], [2, 2], [0.0, 1.0], [])}
    >>> rows = hourly_counts({"x": [0.0, 1.0, np.nan, 1.0]}, num, {}, [0.0, 3_600.0, 3_700.0, None])
    >>> rows["x"][:2]
    [[1, 0, 0], [0, 1, 1]]
    """
    ts = np.asarray(event_ts, dtype=float) if isinstance(event_ts, np.ndarray) else \
        floats([np.nan if t is None else t for t in event_ts])
    known = np.isfinite(ts)
    hour = np.minimum(np.where(known, ts, 0.0) % 86_400.0 // 3_600.0, 23).astype(np.int64)  # see _hour_of_day
    out: dict[str, list[list[int]]] = {}
    for name, ref in numeric.items():
        code = bin_codes(floats(columns[name]), np.asarray(ref.edges, dtype=float))
        out[name] = _by_hour(hour[known], code[known], len(ref.edges) + 2)
    for name, cref in categorical.items():
        code = category_codes(columns[name], cref.categories)
        out[name] = _by_hour(hour[known], code[known], len(cref.categories) + 2)
    return out


def _by_hour(hour: np.ndarray, code: np.ndarray, slots: int) -> list[list[int]]:
    counts = np.bincount(hour * slots + code, minlength=HOURS * slots).reshape(HOURS, slots)
    return [[int(v) for v in row] for row in counts]


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

    def small_warning(self) -> str | None:
        """What to tell a user whose profile has fewer than ``MIN_RELIABLE_ROWS`` rows, else None."""
        if self.n_rows >= MIN_RELIABLE_ROWS:
            return None
        return (f"the reference has {self.n_rows:,} rows, fewer than {MIN_RELIABLE_ROWS:,}: its own sampling noise "
                "can read as drift and small changes go unseen")
    # per feature, 24 rows (hour of day, UTC) of counts: bins then missing (numeric), categories,
    # "other", then missing (categorical); None without event times
    hourly: dict[str, list[list[int]]] | None = None

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
        event_ts: Sequence[float | None] | np.ndarray | None = None,
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
        event_ts
            The rows' event times (epoch seconds; NaN or None where unknown): counts per hour
            of the day are kept too (:attr:`hourly`).
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
            kind = (kinds or {}).get(name) or infer_kind(name, values)
            if kind not in (NUMERIC, CATEGORICAL):
                raise ProfileError(f"feature {name!r}: unknown kind {kind!r}")
            features[name] = kind
            if kind == NUMERIC:
                numeric[name] = numeric_reference(name, values, n_bins, sample_size, rng)
            else:
                categorical[name] = categorical_reference(name, values, max_categories, min_category_share)
        names = list(numeric)
        if names:
            scores = []
            for k in names:
                x = floats(columns[k])
                bins = np.searchsorted(np.asarray(numeric[k].edges), x, side="right")
                scores.append(np.where(np.isfinite(x), bin_normal_scores(numeric[k].counts)[bins], np.nan))
            r, n = pairwise_correlation(np.column_stack(scores))
        else:
            r, n = np.zeros((0, 0)), np.zeros((0, 0))
        n_rows = int(lengths.pop())
        hourly = None
        if event_ts is not None:
            if len(event_ts) != n_rows:
                raise ProfileError(f"{len(event_ts)} event times for {n_rows} rows")
            hourly = hourly_counts(columns, numeric, categorical, event_ts)
        return cls(
            features=features,
            numeric=numeric,
            categorical=categorical,
            correlation=[[float(v) for v in row] for row in r],
            correlation_n=[[int(v) for v in row] for row in n],
            n_rows=n_rows,
            hourly=hourly,
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
        out = {
            "version": PROFILE_VERSION,
            "n_rows": self.n_rows,
            "features": feats,
            "correlation": {"features": self.numeric_names, "r": self.correlation, "n": self.correlation_n,
                            "method": self.correlation_method},
        }
        if self.hourly is not None:
            out["hourly"] = {name: self.hourly[name] for name in self.features if name in self.hourly}
        return out

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
            self.n_rows, correlation_method=self.correlation_method,
            hourly=None if self.hourly is None else {n: self.hourly[n] for n in keep if n in self.hourly})

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
            hourly = d.get("hourly")
            if hourly is not None:  # 24 rows per known feature, each as wide as its bins or categories
                widths = {**{n: len(r.edges) + 2 for n, r in numeric.items()},
                          **{n: len(r.categories) + 2 for n, r in categorical.items()}}
                if not isinstance(hourly, dict) or set(hourly) - set(features) or any(
                        len(rows) != HOURS or any(len(row) != widths[n] for row in rows) for n, rows in hourly.items()):
                    raise ProfileError("hourly counts: expected 24 rows per known feature, one count per bin "
                                       "or category, then missing")
            return cls(features, numeric, categorical, corr["r"], corr["n"], int(d["n_rows"]),
                       correlation_method=corr.get("method", "pearson"), hourly=hourly)
        except (KeyError, TypeError, AttributeError) as exc:
            raise ProfileError(f"malformed profile: {exc!r}") from exc
