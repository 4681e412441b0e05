"""The drift monitor's row ingestion: rows (one, or many as columns) into whole blocks.

Numeric values go in as floats (``None`` and infinities as NaN: missing), categories as their
reference slot codes (a value that cannot be a key as "other"); rows gather in a buffer of
``block_size`` rows, and every whole block goes on to ``DriftMonitor._process``. One row at a
time and columns give the same blocks, so the same events.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from itertools import repeat
from operator import itemgetter
from typing import Any

import numpy as np

from stream.messages.columns import CategoryCodes
from stream.monitoring.drift_event import DriftEvent
from stream.monitoring.drift_sequential import SequentialDetectors
from stream.monitoring.profile import is_missing
from stream.monitoring.profile_features import floats, to_float

__all__ = ["RowIngest", "comoments"]


def comoments(z: np.ndarray, missing: np.ndarray) -> np.ndarray:
    """Per block ``[n, row, feature]``: pairwise-complete rows, sums, sums of squares and cross
    products of the normal scores ``z`` (0 where missing), as ``[n, 4, feature, feature]``.

    Every sum adds a block's rows in order (einsum, not BLAS: tiny products, and BLAS threads stall
    on a busy machine), so any batching gives the same bits. Without a missing value the first three
    need no products: a row count, and the column sums repeated (``x * 1.0`` is ``x``).

    >>> z = np.array([[[1.0, 2.0], [3.0, 0.0]]])
    >>> comoments(z, np.array([[[False, False], [False, True]]]))[0, :, 0].tolist()
    [[2.0, 1.0], [4.0, 1.0], [10.0, 1.0], [10.0, 2.0]]
    >>> z = np.random.default_rng(0).normal(size=(3, 100, 4))   # no missing value: the same bits
    >>> fast, ones = comoments(z, np.zeros(z.shape, bool)), np.ones(z.shape)
    >>> [bool((fast[:, q] == np.einsum("nbi,nbj->nij", x, ones)).all()) for q, x in ((1, z), (2, z * z))]
    [True, True]
    """
    nb, b, fn = z.shape
    out = np.empty((nb, 4, fn, fn))
    if missing.any():
        pr = (~missing).astype(float)
        for q, (x, y) in enumerate(((pr, pr), (z, pr), (z * z, pr))):
            out[:, q] = np.einsum("nbi,nbj->nij", x, y)
    else:
        out[:, 0] = float(b)
        out[:, 1] = z.sum(axis=1)[:, :, None]
        out[:, 2] = (z * z).sum(axis=1)[:, :, None]
    out[:, 3] = np.einsum("nbi,nbj->nij", z, z)
    return out


class RowIngest(SequentialDetectors):
    """``update`` / ``update_batch`` of a drift monitor: rows into block-sized buffers."""

    def _code(self, j: int, v: Any) -> int:
        if is_missing(v):
            return self._kc
        key = v if isinstance(v, str) else str(v)
        return self._cat_maps[j].get(key, self._cat_other[j])

    def update(self, row: Mapping[str, float | int | str | None], ts: float | None = None,
               entity: Hashable | None = None) -> list[DriftEvent]:
        """Add one row (``ts``: its event time in seconds, for the daily profile; ``entity``: its
        entity id, for the cap on one entity's weight in category shares); return the events that fired."""
        i = self._buf_len
        for j, name in enumerate(self._num):
            v = row.get(name)
            x = np.nan if v is None else to_float(v)
            self._buf_num[i, j] = x if math.isfinite(x) else np.nan  # an infinity is missing, as packed
        # a row past its entity's cap keeps its code, shifted past the slots (taken apart in _process)
        shift = 0
        if entity is not None and self.entity_cap is not None:
            self._entities_given = True
            shift = 0 if self.entity_cap.counted([entity])[0] else self._kc + 1
        codes = np.array([self._code(j, row.get(name)) for j, name in enumerate(self._cat)], dtype=np.int64)
        if self.entity_runs is not None:
            self.entity_runs.add(None if entity is None else [entity], codes[None])
        if entity is None and self.run_cap is not None:
            codes[self.run_cap.capped_cells(codes[None])[0]] += self._kc + 1
        self._buf_cat[i] = codes + shift
        t = np.nan if ts is None else to_float(ts)
        self._buf_ts[i] = t if math.isfinite(t) else np.nan
        self._buf_len += 1
        self.rows_seen += 1
        if self._buf_len < self.settings.block_size:
            return []
        self._buf_len = 0
        return self._process(self._buf_num, self._buf_cat, self._buf_ts, self.rows_seen - self.settings.block_size)

    def update_batch(self, columns: Mapping[str, np.ndarray | list[Any] | CategoryCodes], ts: np.ndarray | None = None,
                     entities: Sequence[Hashable | None] | None = None) -> list[DriftEvent]:
        """Add many rows given as columns (``ts``: event times in seconds; ``entities``: entity ids;
        a categorical column as values or :class:`CategoryCodes`); same events as :meth:`update`."""
        n = len(next(iter(columns.values()))) if columns else 0
        # every column (and the times) the same length: a longer one was cut to the first's
        lengths = {len(c) for c in columns.values()} | ({len(ts)} if ts is not None else set())
        if len(lengths) > 1:
            raise ValueError(f"columns {'and times ' if ts is not None else ''}of different lengths "
                             f"{sorted(lengths)}: one value per row")
        if n == 0:
            return []
        num = np.empty((n, len(self._num)))
        for j, name in enumerate(self._num):
            col = columns.get(name)
            num[:, j] = np.nan if col is None else floats(col)
        infinite = np.isinf(num)
        if infinite.any():  # a missing value, as a packed column reads it (the sums would hold it for good)
            num[infinite] = np.nan
        cat = np.empty((n, len(self._cat)), dtype=np.int64)
        for j, name in enumerate(self._cat):
            col = columns.get(name)
            if col is None:
                cat[:, j] = self._kc
                continue
            if isinstance(col, CategoryCodes):  # each distinct value looked up once, as _code does
                table = np.fromiter((self._code(j, v) for v in col.values), np.int64, len(col.values))
                cat[:, j] = table[col.codes]
                continue
            # fast path: dict look-up; anything not found (unseen, NaN, non-str) takes the slow path
            items = col.tolist() if isinstance(col, np.ndarray) else col  # a list iterates faster
            slots = self._cat_maps[j]
            try:  # every value a known category (the usual batch): one C-level look-up
                found = itemgetter(*items)(slots) if n > 1 else (slots[items[0]],)  # one key: no tuple
                codes = np.fromiter(found, np.int64, n)
            except (KeyError, TypeError):
                try:
                    codes = np.fromiter(map(slots.get, items, repeat(-1)), np.int64, n)
                except TypeError:  # an unhashable value (a JSON object): "other", as update() files it
                    codes = np.fromiter((self._code(j, v) for v in items), np.int64, n)
            for i in np.flatnonzero(codes < 0):
                codes[i] = self._code(j, col[i])
            cat[:, j] = codes
        if entities is not None and len(entities) != n:
            raise ValueError(f"{len(entities)} entity ids for {n} rows")
        if self.entity_runs is not None:
            self.entity_runs.add(entities, cat)
        if entities is not None and self.entity_cap is not None and len(self._cat):
            self._entities_given = True
            cat[~self.entity_cap.counted(entities)] += self._kc + 1  # shifted past the slots (see _process)
        elif entities is None and self.run_cap is not None and len(self._cat):
            cat[self.run_cap.capped_cells(cat)] += self._kc + 1
        t = np.full(n, np.nan) if ts is None else floats(ts)
        endless = np.isinf(t)
        if endless.any():  # an infinite time is no time (as NaN, not an hour)
            t[endless] = np.nan
        return self._ingest(num, cat, t)

    def _ingest(self, num: np.ndarray, cat: np.ndarray, ts: np.ndarray) -> list[DriftEvent]:
        b, n, pos, events = self.settings.block_size, num.shape[0], 0, []
        if self._buf_len:
            take = min(b - self._buf_len, n)
            sl = slice(self._buf_len, self._buf_len + take)
            self._buf_num[sl], self._buf_cat[sl], self._buf_ts[sl] = num[:take], cat[:take], ts[:take]
            self._buf_len += take
            pos = take
            if self._buf_len == b:
                self._buf_len = 0
                events += self._process(self._buf_num, self._buf_cat, self._buf_ts, self.rows_seen + pos - b)
        full = (n - pos) // b * b
        if full:
            sl = slice(pos, pos + full)
            events += self._process(num[sl], cat[sl], ts[sl], self.rows_seen + pos)
            pos += full
        rest = n - pos
        if rest:
            self._buf_num[:rest], self._buf_cat[:rest], self._buf_ts[:rest] = num[pos:], cat[pos:], ts[pos:]
            self._buf_len = rest
        self.rows_seen += n
        return events

