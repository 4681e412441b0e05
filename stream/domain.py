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
from stream.messages.columns import CategoryCodes
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
    # categorical field -> the categories its features code it with (one-hot, ordinal index)
    _coded: dict[str, tuple[str, ...]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        index = {c: i for i, c in enumerate(self.features.columns)}
        object.__setattr__(self, "_monitored", tuple(
            (name, kind, index.get(name, -1)) for name, kind in self.features.monitored.items()))
        coded = {ix.field: ix.categories for ix in self.features.indexed if ix.encoding == "ordinal"}
        coded.update({oh.field: oh.categories for oh in self.features.one_hot})
        object.__setattr__(self, "_coded", coded)
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

    def monitored_columns(self, cols: dict[str, np.ndarray], X: np.ndarray,
                          codes: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
        """The columns the drift monitor watches for one batch (score added by the caller); a
        category the features coded (``codes``, from :meth:`FeatureSet.compute`) as
        :class:`CategoryCodes`, others as they came.

        >>> from stream.examples.payments import DOMAIN
        >>> cols = DOMAIN.columns([{"channel": c} for c in ("web", "fax", "pos", None, "fax")])
        >>> codes = {"channel": np.array([DOMAIN.features.one_hot[0].categories.index(c)
        ...                               if c in ("web", "pos") else 99 for c in cols["channel"]])}
        >>> X = np.zeros((5, len(DOMAIN.features.columns)), np.float32)
        >>> coded = DOMAIN.monitored_columns(cols, X, codes)["channel"]
        >>> coded.tolist(), coded.values[-2:]   # the unknown values of the batch, after the categories
        (['web', 'fax', 'pos', None, 'fax'], ['fax', None])
        """
        out: dict[str, Any] = {}
        for name, kind, at in self._monitored:
            if kind == "numeric":  # a contiguous copy: columns of X are strided views
                out[name] = np.ascontiguousarray(X[:, at], dtype=np.float64)
            elif codes is not None and name in codes:
                out[name] = _category_codes(codes[name], self._coded[name], cols[name])
            else:
                out[name] = cols[name]
        return out


def _category_codes(codes: np.ndarray, categories: tuple[str, ...], raw: Any) -> CategoryCodes:
    """``codes`` (positions in ``categories``; others out of range) as a column: a row out of
    range keeps its own value from ``raw``, entered once after the categories."""
    w = len(categories)
    other = np.flatnonzero((codes < 0) | (codes >= w))
    values = list(categories)
    if len(other):
        extra: dict[Any, int] = {}
        codes = codes.copy()  # the caller's, not changed
        codes[other] = [w + extra.setdefault(raw[i], len(extra)) for i in other.tolist()]
        values += list(extra)
    return CategoryCodes(codes, values)


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
