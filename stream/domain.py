"""A domain is what a user brings: an event schema, a feature definition and a label spec.

Point ``MLSTREAM_DOMAIN`` at ``package.module:NAME`` to use your own; see README
"Bring your own domain and model" and ``stream/examples/payments.py`` for an example.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from stream.errors import DomainError
from stream.features import FeatureSet, to_columns
from stream.schema import Schema


@dataclass(frozen=True)
class Fitted:
    """A trained model as the scorer loads it: ONNX bytes whose one input is the float32
    feature matrix, the name of the output to read, and a short description for the card."""

    onnx: bytes
    output: str
    estimator: str


# (domain, X, y, seed) -> Fitted; see stream.training.train.default_fit
FitHook = Callable[["Domain", np.ndarray, np.ndarray, int], Fitted]


@dataclass(frozen=True)
class Domain:
    """Schema + features + label. ``task`` decides how scores and labels are compared.

    ``fit`` is the model family the trainer retrains: a function ``(domain, X, y, seed) ->``
    :class:`Fitted`. Default (None): scaled logistic regression (classification) or ridge
    (regression), exported with skl2onnx.
    """

    name: str
    schema: Schema
    features: FeatureSet
    task: Literal["classification", "regression"] = "classification"
    label_field: str = "label"
    # Operating threshold for binary classifiers (precision/recall, alerts).
    threshold: float = 0.5
    fit: FitHook | None = None
    # (name, kind, column of X) per monitored column, derived once rather than per batch
    _monitored: tuple[tuple[str, str, int], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        index = {c: i for i, c in enumerate(self.features.columns)}
        object.__setattr__(self, "_monitored", tuple(
            (name, kind, index.get(name, -1)) for name, kind in self.features.monitored.items()))
        fields = set(self.schema.field_names())
        if self.features.time_field not in fields:
            raise DomainError(f"feature time field {self.features.time_field!r} not in schema")
        fs = self.features
        for used in (*(s.field for s in fs.one_hot), *(s.field for s in fs.indexed), *(s.field for s in fs.rolling)):
            if used not in fields:
                raise DomainError(f"feature field {used!r} not in schema {self.schema.name!r}")

    def columns(self, events: list[dict[str, Any]]) -> dict[str, np.ndarray]:
        return to_columns(events, {f.name: f.kind for f in self.schema.fields})

    def event_times(self, cols: dict[str, Any]) -> np.ndarray | None:
        """The rows' event times (epoch seconds) from the time field, when the columns hold it: a
        reference profile built with them carries the data's daily cycle."""
        times = cols.get(self.features.time_field)
        return None if times is None else np.asarray(times, dtype=np.float64)

    def offline_features(self, events: list[dict[str, Any]]) -> np.ndarray:
        """Training-side features, from the same code the scorer runs."""
        cols = self.columns(events)
        return self.features.compute_offline(cols, cols[self.schema.entity_field])

    def monitored_columns(self, cols: dict[str, np.ndarray], X: np.ndarray) -> dict[str, Any]:
        """The columns the drift monitor watches for one batch (score added by the caller)."""
        out: dict[str, Any] = {}
        for name, kind, at in self._monitored:
            # a contiguous copy: columns of X are strided views
            out[name] = np.ascontiguousarray(X[:, at], dtype=np.float64) if kind == "numeric" else cols[name]
        return out


def load_domain(path: str) -> Domain:
    """Import ``module:ATTR`` and check it is a :class:`Domain`."""
    module_name, sep, attr = path.partition(":")
    if not sep:
        raise DomainError(f"domain {path!r} must look like 'package.module:NAME'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise DomainError(f"cannot import domain module {module_name!r}: {exc}") from None
    domain = getattr(module, attr, None)
    if not isinstance(domain, Domain):
        raise DomainError(f"{path!r} is not a stream.domain.Domain")
    return domain
