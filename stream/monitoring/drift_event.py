"""The record a :class:`stream.monitoring.drift.DriftMonitor` emits when a drift state opens or closes.

Also the helpers its evidence is built with: ``MULTIVARIATE``, the state name of the
numeric pairs' joint test, and :func:`finite`, which keeps evidence JSON-serialisable.

>>> DriftEvent(99, "data_drift", ("x",), model="m").to_dict()["features"]
['x']
>>> finite(float("inf")), finite(2)
(1e+308, 2.0)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["MULTIVARIATE", "DriftEvent", "finite", "nan_to_num"]

MULTIVARIATE = "__multivariate__"


@dataclass(frozen=True)
class DriftEvent:
    """A drift state opened (or closed) at row ``index``, with its evidence."""

    index: int
    kind: str
    features: tuple[str, ...]
    evidence: tuple[dict[str, Any], ...] = field(default=())
    model: str | None = None
    model_version: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable, deterministic representation; with ``detected_at`` added, the
        fields of :class:`stream.messages.DriftEvent` (the message on the drift topic)."""
        return {
            "index": self.index,
            "kind": self.kind,
            "features": list(self.features),
            "evidence": [dict(sorted(e.items())) for e in self.evidence],
            "model": self.model,
            "model_version": self.model_version,
        }


def nan_to_num(x: np.ndarray) -> np.ndarray:
    """``np.nan_to_num(x)``, but ``x`` itself when it is all finite (the usual case: one check
    instead of seven passes). Callers must not write into the result.

    >>> nan_to_num(np.array([1.0, np.nan, np.inf])).tolist()[:2], nan_to_num(np.ones(2)).tolist()
    ([1.0, 0.0], [1.0, 1.0])
    """
    return x if np.isfinite(x).all() else np.nan_to_num(x)


def finite(x: Any) -> float:
    """``x`` as a float, infinities clipped to the largest finite value (JSON has no infinity)."""
    v = float(x)
    return v if math.isfinite(v) else (1e308 if v > 0 else -1e308)
