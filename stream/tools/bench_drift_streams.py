"""The i.i.d. streams of ``mlstream bench-drift``: seeded, with known change points.

Data streams have three features: ``x`` (numeric, N(0, 1), 2 % missing), ``y``
(numeric, correlated 0.6 with ``x``) and ``c`` (categorical, 4 categories).
The reference profile is built from 20,000 seeded rows of the pre-change
distribution.

Examples
--------
>>> spec = STREAMS["mean+1.0sd"]
>>> cols, change, kind = make_stream("mean+1.0sd", spec, seed=0, n=None)
>>> change, kind, len(cols["x"])
(10000, 'data', 20000)
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import special

__all__ = ["CHANGE", "LENGTH", "REF_ROWS", "STREAMS", "make_stream", "reference_rows"]

CATS = np.array(["a", "b", "c", "d"], dtype=object)
P_CATS = [0.4, 0.3, 0.2, 0.1]
REF_ROWS = 20_000
CHANGE = 10_000
LENGTH = 20_000

# name -> (kind, parameters after the change); stationary streams use "stationary"
STREAMS: dict[str, dict[str, Any]] = {
    "mean+0.25sd": {"kind": "data", "after": {"shift": 0.25}, "target": None},
    "mean+0.5sd": {"kind": "data", "after": {"shift": 0.5}, "target": 2000},
    "mean+1.0sd": {"kind": "data", "after": {"shift": 1.0}, "target": 2000},
    "variance x2": {"kind": "data", "after": {"scale": 2**0.5}, "target": 2000},
    "shape: uniform": {"kind": "data", "after": {"shape": "uniform"}, "target": 2000},
    "shape: skewed": {"kind": "data", "after": {"shape": "skewed"}, "target": 2000},
    "shape: bimodal PSI 0.06": {"kind": "data", "after": {"shape": "bimodal"}, "target": 5000},
    "ramp 0->1sd/5k": {"kind": "data", "after": {"ramp": 5000}, "target": 3000},
    "category mix": {"kind": "data", "after": {"p_cats": [0.25, 0.25, 0.25, 0.25]}, "target": 2000},
    "new category 5%": {"kind": "data", "after": {"new_cat": 0.05}, "target": 2000},
    "missing 2%->20%": {"kind": "data", "after": {"missing": 0.2}, "target": 2000},
    "correlation 0.6->0": {"kind": "data", "after": {"corr": 0.0}, "target": None},
    "errors 10%->15%": {"kind": "labels", "after": 0.15, "target": None},
    "errors 10%->30%": {"kind": "labels", "after": 0.30, "target": 1000},
    "stationary normal": {"kind": "stationary", "base": "normal"},
    "stationary lognormal": {"kind": "stationary", "base": "lognormal"},
    "stationary poisson": {"kind": "stationary", "base": "poisson"},
    "stationary student-t3": {"kind": "stationary", "base": "t3"},
    "stationary normal #2": {"kind": "stationary", "base": "normal"},
    "stationary labels": {"kind": "stationary_labels"},
}


def _shape(z: np.ndarray, shape: str) -> np.ndarray:
    """Monotone map of N(0, 1) values to another shape with mean 0 and variance 1.

    Monotone, so the rank correlation with ``y`` is kept: only the marginal
    distribution of ``x`` changes. ``uniform``: PSI 0.16, W1 0.15; ``skewed``
    (standardised lognormal, sigma 0.5): PSI 0.47, W1 0.24; ``bimodal``
    (0.5 N(-0.8, 0.6^2) + 0.5 N(0.8, 0.6^2)): PSI 0.06, W1 0.10, below or near the
    default effect-size thresholds on purpose (target 5,000 rows, the issue's for a shape change).
    """
    u = special.ndtr(z)
    if shape == "uniform":
        return np.sqrt(3.0) * (2.0 * u - 1.0)
    if shape == "skewed":
        m, v = np.exp(0.125), (np.exp(0.25) - 1.0) * np.exp(0.25)
        return (np.exp(0.5 * z) - m) / np.sqrt(v)
    grid = np.linspace(-5.0, 5.0, 20_001)
    cdf = 0.5 * special.ndtr((grid + 0.8) / 0.6) + 0.5 * special.ndtr((grid - 0.8) / 0.6)
    return np.interp(u, cdf, grid)


def _data(rng: np.random.Generator, n: int, *, base: str = "normal", shift: float = 0.0, scale: float = 1.0,
          shape: str | None = None, ramp: int = 0, p_cats: list[float] | None = None, new_cat: float = 0.0,
          missing: float = 0.02, corr: float = 0.6) -> dict[str, Any]:
    z = rng.normal(size=(n, 2))
    if base == "lognormal":
        x = rng.lognormal(size=n)
    elif base == "poisson":
        x = rng.poisson(3.0, size=n).astype(float)
    elif base == "t3":
        x = rng.standard_t(3, size=n)
    elif shape:
        x = _shape(z[:, 0], shape)
    else:
        x = z[:, 0].copy()
    x = shift + scale * x
    if ramp:
        x += np.minimum(np.arange(n) / ramp, 1.0)
    y = corr * z[:, 0] + np.sqrt(1 - corr**2) * z[:, 1]
    x[rng.random(n) < missing] = np.nan
    c = rng.choice(CATS, p=p_cats or P_CATS, size=n)
    c[rng.random(n) < new_cat] = "new"
    return {"x": x, "y": y, "c": c.tolist()}


def make_stream(name: str, spec: dict[str, Any], seed: int, n: int | None) -> tuple[dict[str, Any], int | None, str]:
    """Columns (or ``{"errors": ...}`` for label streams), change index and kind of a named stream."""
    rng = np.random.default_rng([seed, sum(map(ord, name))])
    kind = spec["kind"]
    if kind == "data":
        before, after = _data(rng, CHANGE), _data(rng, LENGTH - CHANGE, **spec["after"])
        cols = {k: np.concatenate([before[k], after[k]]) if k != "c" else before[k] + after[k] for k in before}
        return cols, CHANGE, kind
    if kind == "labels":
        half = 5000
        err = np.concatenate([rng.random(half) < 0.1, rng.random(half) < spec["after"]])
        return {"errors": err.astype(float)}, half, kind
    if kind == "stationary_labels":
        return {"errors": (rng.random(n or 200_000) < 0.1).astype(float)}, None, kind
    return _data(rng, n or 200_000, base=spec["base"]), None, kind


def reference_rows(name: str, spec: dict[str, Any], seed: int) -> dict[str, Any]:
    """The reference (pre-change) rows of a named stream."""
    rng = np.random.default_rng([seed, sum(map(ord, name)), 1])
    return _data(rng, REF_ROWS, base=spec.get("base", "normal"))
