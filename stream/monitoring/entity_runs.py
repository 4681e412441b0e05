"""Runs of one entity and what they do to a category share's variance.

A heavy entity's burst is a run of consecutive rows under its id that repeat its own category:
a 150-row burst moves a 500-row window's share by 30 points at once. Kish's design effect of a
clustered sample, ``1 + (m - 1) ICC``, says how much more a share varies than independent rows
make it: ``m`` the run length as a row sees it (``sum L^2 / rows``, 20 with 15 % of the traffic
in runs of 20-200) and ``ICC`` how much more often two consecutive rows of a run share the
category than two rows drawn at random (1 for a merchant's own category, ~0 for a feature the
entity does not set). Runs, not an entity's rows per window: a big entity whose rows interleave
with everyone else's (a busy merchant, a placeholder id) makes short runs and no floor.

Both sums are taken row by row and read at block boundaries, so rows fed one by one or in
batches of any size give the same figures at every refresh of the monitor's estimates.

Examples
--------
>>> runs = EntityRuns(n_features=2, block=10)
>>> ids = ["h"] * 5 + list("abcde")          # one burst of 5, then 5 single rows
>>> codes = np.array([[0, 1], [0, 0], [0, 1], [0, 0], [0, 1]] + [[1, 0]] * 5)
>>> runs.add(ids, codes)
>>> size, icc = runs.at(10, chance=np.array([0.5, 0.5]))
>>> float(size), icc.round(2).tolist()      # (25 + 5) / 10; feature 0 always agrees, feature 1 never
(3.0, [1.0, 0.0])
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np

__all__ = ["EntityRuns"]


class EntityRuns:
    """Running sums of ``2 pos - 1`` (a run of ``L`` rows adds ``L^2``), of consecutive pairs of
    one entity and, per categorical feature, of those pairs that share its category."""

    def __init__(self, n_features: int, block: int) -> None:
        self.block = int(block)
        self._tot = np.zeros(2 + n_features)  # sum of 2 pos - 1, pairs, agreeing pairs per feature
        self._rows = 0
        self._last: Hashable | None = None  # the previous row's id and codes: runs cross calls
        self._last_codes: np.ndarray | None = None
        self._pos = 0
        self._marks: dict[int, np.ndarray] = {}  # block boundary (rows) -> sums up to it

    def add(self, entities: Sequence[Hashable | None] | None, codes: np.ndarray) -> None:
        """Rows in stream order: their ids (None or "" for none; ``entities=None``: no row has one)
        and category codes ``[row, feature]``."""
        n = len(codes)
        if n == 0:
            return
        if entities is None:  # single rows: each adds 1 and no pair
            parts = np.zeros((n, self._tot.size))
            parts[:, 0] = 1.0
            self._advance(parts)
            self._last, self._last_codes, self._pos = None, codes[-1].copy(), 1
            return
        ids = np.empty(n, dtype=object)
        ids[:] = list(entities)
        known = np.fromiter((e is not None and e != "" for e in ids), bool, n)
        same = np.zeros(n, dtype=bool)
        same[1:] = (ids[1:] == ids[:-1]) & known[1:]
        same[0] = bool(known[0]) and self._last is not None and ids[0] == self._last
        prev = np.empty_like(codes)
        prev[1:] = codes[:-1]
        prev[0] = codes[0] if self._last_codes is None else self._last_codes
        # position in its run: rows since the run's start, the first run continuing the last call's
        start = np.maximum.accumulate(np.where(same, 0, np.arange(n)))
        pos = np.arange(n) - start + 1 + np.where(same[start], self._pos, 0)
        self._advance(np.column_stack([2.0 * pos - 1.0, same, same[:, None] & (codes == prev)]))
        self._last, self._last_codes, self._pos = ids[-1] if known[-1] else None, codes[-1].copy(), int(pos[-1])

    def _advance(self, parts: np.ndarray) -> None:
        """Rows' parts of the sums: running totals, kept at every block boundary they pass."""
        n = parts.shape[0]
        cum = self._tot + np.cumsum(parts, axis=0)
        ends = np.arange(self._rows + 1, self._rows + n + 1)
        for i in np.flatnonzero(ends % self.block == 0):
            self._marks[int(ends[i])] = cum[i]
        self._tot, self._rows = cum[-1], self._rows + n

    def at(self, rows: int, chance: np.ndarray) -> tuple[float, np.ndarray]:
        """The run length as a row sees it and each feature's ICC over the first ``rows`` rows (a
        block boundary), ``chance`` the features' probability that two random rows agree (``sum
        p^2``); ``(1, 0)`` before any. Earlier marks are dropped: rows only move forward."""
        got = self._marks.get(rows)
        for k in [k for k in self._marks if k <= rows]:
            del self._marks[k]
        if got is None or rows <= 0:
            return 1.0, np.zeros(chance.shape)
        pairs = got[1]
        agree = got[2:] / pairs if pairs > 0 else np.zeros(chance.shape)
        icc = np.clip((agree - chance) / np.maximum(1.0 - chance, 1e-12), 0.0, 1.0) if pairs > 0 else agree
        return float(got[0] / rows), icc
