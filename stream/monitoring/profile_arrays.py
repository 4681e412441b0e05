"""A reference profile as padded arrays, the form the drift monitor computes with.

:func:`reference_arrays` pads every numeric feature to the same number of bins and every
categorical one to the same number of category slots, so a window's statistics of all
features are one array operation (see :class:`ReferenceArrays`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from stream.monitoring.profile_scores import bin_normal_scores, dispersion_for

if TYPE_CHECKING:
    from stream.monitoring.profile import ReferenceProfile

__all__ = ["ReferenceArrays", "hourly_arrays", "reference_arrays"]


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
    for j, ref in enumerate(cat):
        ccounts[j, : len(ref.counts)] = ref.counts
        ccounts[j, len(ref.counts)] = ref.other_count
        codes.append({**{c: i for i, c in enumerate(ref.categories)}, None: kc})
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


def hourly_arrays(profile: ReferenceProfile, k: int, kc: int) -> tuple[np.ndarray, np.ndarray] | None:
    """The profile's counts per hour of the day as the monitor's padded count arrays,
    ``[24, numeric feature, k bins + missing]`` and ``[24, categorical feature, kc slots + missing]``
    (None when the profile has no event times)."""
    if profile.hourly is None or any(n not in profile.hourly for n in profile.features):
        return None
    num = np.zeros((24, len(profile.numeric_names), k + 1))
    for j, name in enumerate(profile.numeric_names):
        rows = np.asarray(profile.hourly[name], dtype=float)
        num[:, j, : rows.shape[1] - 1] = rows[:, :-1]
        num[:, j, k] = rows[:, -1]
    cat = np.zeros((24, len(profile.categorical_names), kc + 1))
    for j, name in enumerate(profile.categorical_names):
        rows = np.asarray(profile.hourly[name], dtype=float)
        cat[:, j, : rows.shape[1] - 1] = rows[:, :-1]  # categories, then "other" at its slot
        cat[:, j, kc] = rows[:, -1]
    return num, cat
