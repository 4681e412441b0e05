"""Feature definitions: one declaration computes features for training (offline) and scoring (online).

Features are computed on column batches with numpy. Per-entity rolling features read and
write a float64 state matrix (one row per entity); the caller owns where that matrix lives
(:class:`stream.scoring.state.EntityState` keeps it durable online, a plain in-memory one serves
training). Rolling windows are exponentially decayed (time constant = window length), so an
entity's state is a fixed number of floats however many events it has; a window of
:data:`CUMULATIVE` (infinite) never decays: the entity's lifetime count and mean.

The model's input columns come in this order: numeric, one-hot, category index, rolling.
A model trained elsewhere with its own column order says so in its card (``features``), and
the scorer reorders to it (see ``mlstream models add --feature-order``).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from itertools import repeat
from typing import Any, Literal

import numpy as np

from stream.errors import DomainError
from stream.rolling import rolling_features

Columns = Mapping[str, np.ndarray]
"""Event fields as columns: numbers as float64 arrays (NaN = missing), strings as object arrays."""

CUMULATIVE = math.inf
"""A :class:`Rolling` window that never decays: ``windows={"all": CUMULATIVE}`` gives the
entity's lifetime event count and the mean of all its values."""


@dataclass(frozen=True)
class Numeric:
    """A stateless numeric feature computed from event columns, e.g. ``np.log1p(c["amount"])``."""

    name: str
    fn: Callable[[Columns], np.ndarray]


@dataclass(frozen=True)
class OneHot:
    """One column per known category of ``field`` (``field=value``); others are all zero.

    The raw category is also monitored for drift (unseen categories, mix changes).
    """

    field: str
    categories: tuple[str, ...]

    @property
    def columns(self) -> list[str]:
        return [f"{self.field}={c}" for c in self.categories]


@dataclass(frozen=True)
class CategoryIndex:
    """One column holding an index for the category in ``field``, for models that take categories
    as integers (tree ensembles) rather than one-hot columns.

    ``encoding="ordinal"``: the position in ``categories``; any other value gets
    ``len(categories)``. ``encoding="hashed"``: a stable hash (CRC-32, the same in every process)
    modulo ``buckets``, no list needed. A missing value is -1. The drift monitor watches the raw
    field as a category (new values, mix changes), never the index as a number.

    Examples
    --------
    >>> cols = {"channel": np.array(["web", "pos", "fax", None], dtype=object)}
    >>> CategoryIndex("channel", ("web", "pos", "app")).compute(cols).tolist()
    [0.0, 1.0, 3.0, -1.0]
    >>> CategoryIndex("channel", encoding="hashed", buckets=8).compute(cols).tolist()
    [1.0, 4.0, 0.0, -1.0]
    """

    field: str
    categories: tuple[str, ...] = ()
    encoding: Literal["ordinal", "hashed"] = "ordinal"
    buckets: int = 1024

    def __post_init__(self) -> None:
        if self.encoding not in ("ordinal", "hashed"):
            raise DomainError(f"{self.field}: encoding must be 'ordinal' or 'hashed', not {self.encoding!r}")
        if self.encoding == "ordinal" and not self.categories:
            raise DomainError(f"{self.field}: an ordinal index needs its categories")
        if self.buckets < 1:
            raise DomainError(f"{self.field}: buckets must be >= 1")

    @property
    def column(self) -> str:
        return f"{self.field}_index"

    def compute(self, cols: Columns) -> np.ndarray:
        values = cols[self.field]
        uniq, inverse = np.unique(np.asarray(values, dtype=object).astype(str), return_inverse=True)
        if self.encoding == "ordinal":
            known = {c: float(i) for i, c in enumerate(self.categories)}
            codes = np.array([known.get(u, float(len(self.categories))) for u in uniq])
        else:
            codes = np.array([float(zlib.crc32(u.encode()) % self.buckets) for u in uniq])
        out = codes[inverse] if len(uniq) else np.empty(0)
        missing = np.fromiter((v is None or v != v for v in values), bool, len(values))
        return np.where(missing, -1.0, out)


@dataclass(frozen=True)
class Rolling:
    """Per-entity rolling aggregates of a numeric ``field``.

    For each window: decayed event count and mean of the field, the current event included
    (``include_current=False``: prior events only, the leakage-safe form: a label that depends
    on this event cannot leak into its own features; mean 0 without prior events). A window of
    :data:`CUMULATIVE` never decays. Then seconds since the entity's previous event (capped at
    ``max_gap_s``; an entity's first event gets ``first_gap``, by default ``max_gap_s``), and the
    z-score of the value against the entity's history before it: ``zscore_spread="recent"``
    weighs about the last ``zscore_span`` events (exponentially), ``"all"`` every event equally
    (plain running mean and population spread); 0 until ``min_history`` events, clipped to
    ±``zscore_clip`` (``None``: not clipped).

    Examples
    --------
    >>> fs = FeatureSet(time_field="ts", rolling=(Rolling("x", {"1h": 3_600.0, "all": CUMULATIVE},
    ...     include_current=False, first_gap=-1.0, zscore_spread="all", min_history=2, zscore_clip=None),))
    >>> fs.columns
    ['x_count_1h', 'x_mean_1h', 'x_count_all', 'x_mean_all', 'x_secs_since_last', 'x_zscore']
    >>> cols = {"x": np.array([10.0, 20.0, 30.0, 60.0]), "ts": np.array([0.0, 3_600.0, 7_200.0, 7_200.0])}
    >>> for row in fs.compute_offline(cols, ["u"] * 4).astype(float).round(3).tolist():
    ...     print(row)
    [0.0, 0.0, 0.0, 0.0, -1.0, 0.0]
    [0.368, 10.0, 1.0, 10.0, 3600.0, 0.0]
    [0.503, 17.311, 2.0, 15.0, 3600.0, 3.0]
    [1.503, 25.752, 3.0, 20.0, 0.0, 4.899]
    """

    field: str
    windows: Mapping[str, float]  # label -> seconds, e.g. {"1h": 3600}; CUMULATIVE never decays
    since_last: bool = True
    zscore: bool = True
    max_gap_s: float = 30 * 86_400.0
    min_history: int = 5
    zscore_span: int = 10
    include_current: bool = True
    first_gap: float | None = None  # secs_since_last of an entity's first event (None: max_gap_s)
    zscore_spread: Literal["recent", "all"] = "recent"
    zscore_clip: float | None = 50.0

    def __post_init__(self) -> None:
        if self.zscore_spread not in ("recent", "all"):
            raise DomainError(f"{self.field}: zscore_spread must be 'recent' or 'all', not {self.zscore_spread!r}")
        if any(not (w > 0) for w in self.windows.values()):
            raise DomainError(f"{self.field}: window lengths must be positive seconds (or CUMULATIVE)")
        if not self.max_gap_s > 0:  # NaN too: every gap is clipped to it
            raise DomainError(f"{self.field}: max_gap_s must be positive seconds, not {self.max_gap_s!r}")

    @property
    def columns(self) -> list[str]:
        cols: list[str] = []
        for label in self.windows:
            cols += [f"{self.field}_count_{label}", f"{self.field}_mean_{label}"]
        if self.since_last:
            cols.append(f"{self.field}_secs_since_last")
        if self.zscore:
            cols.append(f"{self.field}_zscore")
        return cols

    @property
    def state_width(self) -> int:
        # last_ts, n, EW mean, EW variance, then (decayed count, decayed sum) per window
        return 4 + 2 * len(self.windows)

    # derived once: a micro-batch of a few events must not rebuild them (see stream.rolling)
    @cached_property
    def _taus(self) -> np.ndarray:
        return np.array(list(self.windows.values()), dtype=np.float64)

    @cached_property
    def _width(self) -> int:
        return len(self.columns)


@dataclass(frozen=True)
class FeatureSet:
    """The feature definition of a domain; ``columns`` is the model's input order."""

    time_field: str
    numeric: tuple[Numeric, ...] = ()
    one_hot: tuple[OneHot, ...] = ()
    rolling: tuple[Rolling, ...] = ()
    indexed: tuple[CategoryIndex, ...] = ()  # columns after the one-hot ones, before the rolling ones
    _offsets: tuple[int, ...] = field(init=False, repr=False, compare=False)
    _columns: tuple[str, ...] = field(init=False, repr=False, compare=False)
    _one_hot_index: tuple[dict[Any, int], ...] = field(init=False, repr=False, compare=False)
    _one_hot_rows: tuple[np.ndarray, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        names = [n.name for n in self.numeric]
        for oh in self.one_hot:
            names += oh.columns
        names += [ix.column for ix in self.indexed]
        for spec in self.rolling:
            names += spec.columns
        if len(set(names)) != len(names):
            raise DomainError("feature names must be unique")
        offsets, at = [], 0
        for spec in self.rolling:
            offsets.append(at)
            at += spec.state_width
        object.__setattr__(self, "_offsets", tuple(offsets))
        # derived once, not per micro-batch
        object.__setattr__(self, "_columns", tuple(names))
        object.__setattr__(self, "_one_hot_index",
                           tuple({c: i for i, c in enumerate(oh.categories)} for oh in self.one_hot))
        # row i: category i's one-hot row; the last row (all zeros): an unknown category
        object.__setattr__(self, "_one_hot_rows",
                           tuple(np.eye(len(oh.categories) + 1, len(oh.categories), dtype=np.float32)
                                 for oh in self.one_hot))

    @property
    def columns(self) -> list[str]:
        return list(self._columns)

    @property
    def state_width(self) -> int:
        return sum(s.state_width for s in self.rolling)

    @property
    def monitored(self) -> dict[str, str]:
        """Columns watched for drift: numeric features and the raw categories (one-hot or indexed)."""
        kinds = {n.name: "numeric" for n in self.numeric}
        kinds.update({s.field: "categorical" for s in self.one_hot})
        kinds.update({s.field: "categorical" for s in self.indexed})
        for spec in self.rolling:
            kinds.update({c: "numeric" for c in spec.columns})
        return kinds

    def new_state(self, rows: int = 0) -> np.ndarray:
        return np.zeros((rows, self.state_width), dtype=np.float64)

    def compute(self, cols: Columns, entity_rows: np.ndarray, state: np.ndarray,
                codes: dict[str, np.ndarray] | None = None) -> np.ndarray:
        """Features for a batch as a float32 matrix ``[n, len(columns)]``.

        ``entity_rows[i]`` is the row of ``state`` that holds event i's entity; ``state`` is
        updated in place, in event order within each entity. ``codes``, when given, receives
        each one-hot and ordinal field's positions in its categories (unknown: their count;
        missing, ordinal: -1), which the drift monitor's feature batch packs.
        """
        n = len(entity_rows)
        out = np.empty((n, len(self._columns)), dtype=np.float32)
        at = 0
        for spec in self.numeric:
            out[:, at] = np.asarray(spec.fn(cols), dtype=np.float64)
            at += 1
        for oh, index, table in zip(self.one_hot, self._one_hot_index, self._one_hot_rows):
            # one dict look-up per value, one gather of the rows: not one comparison per category
            width = len(oh.categories)
            hot = np.fromiter(map(index.get, cols[oh.field], repeat(width)), dtype=np.int64, count=n)
            out[:, at : at + width] = table[hot]
            at += width
            if codes is not None:
                codes[oh.field] = hot
        for ix in self.indexed:
            out[:, at] = ix.compute(cols)
            if codes is not None and ix.encoding == "ordinal":
                codes[ix.field] = out[:, at].astype(np.int64)
            at += 1
        if self.rolling:
            ts = np.asarray(cols[self.time_field], dtype=np.float64)
            for roll, offset in zip(self.rolling, self._offsets):
                width = roll._width
                values = np.asarray(cols[roll.field], dtype=np.float64)
                out[:, at : at + width] = rolling_features(roll, values, ts, entity_rows, state, offset)
                at += width
        return out

    def compute_offline(self, cols: Columns, entity_keys: Sequence[Any] | np.ndarray) -> np.ndarray:
        """Training-side entry point: the same :meth:`compute` on a fresh in-memory state."""
        index: dict[Any, int] = {}
        rows = np.fromiter((index.setdefault(k, len(index)) for k in entity_keys), np.int64,
                           count=len(entity_keys))
        return self.compute(cols, rows, self.new_state(len(index)))


def to_columns(events: Sequence[Mapping[str, Any]], kinds: Mapping[str, str]) -> dict[str, np.ndarray]:
    """Turn parsed events into columns; ``kinds`` maps field name to schema kind."""
    cols: dict[str, np.ndarray] = {}
    for name, kind in kinds.items():
        if kind in ("number", "integer", "timestamp"):
            cols[name] = np.array([_num(e.get(name)) for e in events], dtype=np.float64)
        else:
            cols[name] = np.array([e.get(name) for e in events], dtype=object)
    return cols


def _num(v: Any) -> float:
    return float("nan") if v is None else float(v)
