"""The drift monitor's score channels and what the reference says of each.

Every test reads window means of per-row *scores* (see :mod:`stream.monitoring.drift`): per numeric
feature its ``k`` bin indicators ("props"), ``k - 1`` cumulative ones ("cum"), the reference
mid-rank ("u"), its spread and the missing indicator; per categorical feature its ``kc`` category
indicators ("cprops") and the missing one ("cmiss"); per numeric pair the linearised correlation
("psi"). :func:`reference_channels` lays them out in that order and gives each its reference mean
``theta``, per-row variance ``g0`` and reference size ``m``.

Examples
--------
>>> from stream.monitoring.profile import ReferenceProfile, reference_arrays
>>> rng = np.random.default_rng(0)
>>> ref = reference_arrays(ReferenceProfile.from_columns({"x": rng.normal(size=5_000),
...                                                       "c": rng.choice(["a", "b"], 5_000).tolist()}))
>>> ch = reference_channels(ref, 1, 1, np.zeros((1, 1)), (np.zeros(0, int), np.zeros(0, int)))
>>> {key: s.stop - s.start for key, s in ch.sl.items()} == {"props": ref.k, "cum": ref.k - 1, "u": 1,
...     "spread": 1, "miss": 1, "cprops": ref.kc, "cmiss": 1, "psi": 0}
True
>>> round(float(ch.theta[ch.sl["u"]][0]), 3), round(float(ch.g0[ch.sl["u"]][0]), 3)   # a mid-rank: 1/2, 1/12
(0.5, 0.083)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stream.monitoring import drift_stats as ds
from stream.monitoring.profile_arrays import ReferenceArrays

__all__ = ["ReferenceChannels", "reference_channels"]

CHANNELS = ("props", "cum", "u", "spread", "miss", "cprops", "cmiss", "psi")


@dataclass
class ReferenceChannels:
    """Score channels in order (``sl``: each kind's slice), their owners (feature index; the
    numeric pairs' joint state last) and their reference figures."""

    ref_num: np.ndarray  # [numeric feature, bin + missing] reference counts
    ref_cat: np.ndarray  # [categorical feature, category + missing] reference counts
    uref: np.ndarray  # [numeric feature, bin] mid-rank of each bin in the reference
    sl: dict[str, slice]
    owner: np.ndarray
    indicator: np.ndarray  # shares: their variance follows their level
    theta: np.ndarray
    g0: np.ndarray
    m: np.ndarray


def reference_channels(r: ReferenceArrays, fn: int, fc: int, rho: np.ndarray,
                       pairs: tuple[np.ndarray, np.ndarray]) -> ReferenceChannels:
    """Reference mean ``theta``, per-row variance ``g0`` and size ``m`` of every score channel of
    ``fn`` numeric and ``fc`` categorical features (:func:`stream.monitoring.profile.reference_arrays`),
    the numeric ``pairs`` correlated as ``rho`` says."""
    k, kc = r.k, r.kc
    ref_num = np.concatenate([r.num_counts, r.num_missing[:, None]], axis=1)
    ref_cat = np.concatenate([r.cat_counts, r.cat_missing[:, None]], axis=1)
    p = r.num_counts / np.maximum(r.num_counts.sum(axis=1, keepdims=True), 1.0)
    uref = np.cumsum(p, axis=1) - p / 2
    theta, m = ds.channel_means(ref_num[None].astype(float), ref_cat[None].astype(float), None, uref, rho, pairs)
    theta, m = np.nan_to_num(theta[0]), m[0].copy()
    npairs = pairs[0].size
    sizes = [fn * k, fn * (k - 1), fn, fn, fn, fc * kc, fc, npairs]
    edges = np.cumsum([0] + sizes)
    sl = {key: slice(int(a), int(z)) for key, a, z in zip(CHANNELS, edges[:-1], edges[1:], strict=True)}
    owner = np.concatenate([np.repeat(np.arange(fn), k), np.repeat(np.arange(fn), k - 1), np.arange(fn),
                            np.arange(fn), np.arange(fn), fn + np.repeat(np.arange(fc), kc), fn + np.arange(fc),
                            np.full(npairs, fn + fc)])
    indicator = np.zeros(theta.size, dtype=bool)
    for key in ("props", "miss", "cprops", "cmiss"):
        indicator[sl[key]] = True
    m[sl["psi"]] = r.corr_n[pairs] if npairs else m[sl["psi"]]
    m = np.maximum(m, 1.0)
    floor = 0.5 / m  # a share never seen in the reference: as if half a row had it
    pp = np.clip(theta, floor, 1 - floor)
    g0 = pp * (1 - pp)
    ju = sl["u"]
    # a constant reference feature has no spread: floor it as a share seen in half a row
    g0[ju] = np.maximum((p * (uref - 0.5) ** 2).sum(axis=1), 0.25 / m[ju])
    js = sl["spread"]
    g0[js] = np.maximum((p * (ds.spread_score(uref) - theta[js][:, None]) ** 2).sum(axis=1), 0.25 / m[js])
    if npairs:
        g0[sl["psi"]] = (1 - rho[pairs] ** 2) ** 2
    theta[sl["psi"]] = 0.0
    return ReferenceChannels(ref_num, ref_cat, uref, sl, owner.astype(np.int64), indicator, theta,
                             np.maximum(g0, 1e-9), m)  # a perfect reference correlation has no spread
