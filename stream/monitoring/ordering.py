"""Merging partitions in event-time order before the monitor's windows see them.

Each partition holds a subset of entities. If one partition runs ahead (a backlog drained
unevenly, a rebalance), windows filled from it alone are a biased sample and look like drift.
So rows wait here until every active partition has caught up to their time: the watermark is
the lowest latest event time over the partitions, as in a stream join, and rows at or below it
are released, whatever message they came in. Partitions idle for ``idle_s`` stop holding the
others back; ``max_rows`` bounds what waits. A message's offset is released for commit only
once all its rows are out.
"""

from __future__ import annotations

import collections
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class _Held:
    ts: np.ndarray
    columns: Mapping[str, Any]  # numpy arrays or lists, one value per row
    meta: Any
    offset: int
    pos: int = 0


def _slice(columns: Mapping[str, Any], lo: int, hi: int, rows: int) -> dict[str, Any]:
    if lo == 0 and hi == rows:  # released whole (the common case): its columns as they came, uncopied
        return dict(columns)
    return {k: v[lo:hi] for k, v in columns.items()}


class PartitionMerger:
    """Releases rows in event-time order across partitions.

    Examples
    --------
    >>> m = PartitionMerger(idle_s=5.0)
    >>> m.track("p1", now=0.0)
    >>> m.add("p0", offset=0, ts=np.array([1.0, 5.0]), columns={"x": [10, 50]}, meta="m", now=0.0)
    >>> m.release(now=0.0)    # nothing from p1 yet: everything waits
    ([], {})
    >>> m.add("p1", offset=0, ts=np.array([2.0, 3.0]), columns={"x": [20, 30]}, meta="m", now=0.1)
    >>> out, commit = m.release(now=0.2)
    >>> sorted(c["x"] for _, c, _ in out), commit   # p0's t=5 waits for p1 to pass 5
    ([[10], [20, 30]], {'p1': 1})
    >>> out, commit = m.release(now=9.0)                    # p1 idle: it holds nothing back
    >>> [c["x"] for _, c, _ in out], commit
    ([[50]], {'p0': 1})
    """

    def __init__(self, idle_s: float = 2.0, max_rows: int = 200_000):
        self.idle_s = idle_s
        self.max_rows = max_rows
        self._held: dict[Hashable, collections.deque[_Held]] = {}
        self._latest: dict[Hashable, float] = {}
        self._last_add: dict[Hashable, float] = {}
        self._next: dict[Hashable, int] = {}  # per partition, the offset after the last message added
        self.rows = 0

    def track(self, part: Hashable, now: float) -> None:
        """A newly assigned partition holds the others back from now on, even before its first
        rows (else whatever arrives first would run ahead), until it is idle ``idle_s``."""
        self._held.setdefault(part, collections.deque())
        self._last_add.setdefault(part, now)

    def forget(self, part: Hashable) -> None:
        """A revoked partition: its held rows go back to Kafka (they were never committed)."""
        held = self._held.pop(part, None)
        self.rows -= sum(len(h.ts) - h.pos for h in held or ())
        self._latest.pop(part, None)
        self._last_add.pop(part, None)
        self._next.pop(part, None)

    def next_offset(self, part: Hashable) -> int | None:
        """The offset after the last message of ``part`` added (None: none since it was tracked)."""
        return self._next.get(part)

    def forget_all(self) -> None:
        for part in list(self._held):
            self.forget(part)

    def add(self, part: Hashable, *, offset: int, ts: np.ndarray, columns: Mapping[str, Any],
            meta: Any, now: float) -> None:
        ts = np.asarray(ts, dtype=np.float64)
        self._held.setdefault(part, collections.deque()).append(_Held(ts, columns, meta, offset))
        if len(ts):
            self._latest[part] = max(float(ts.max()), self._latest.get(part, float("-inf")))
        self._last_add[part] = now
        self._next[part] = offset + 1
        self.rows += len(ts)

    def release(self, now: float) -> tuple[list[tuple[np.ndarray, dict[str, Any], Any]], dict[Hashable, int]]:
        """Released ``(ts, columns, meta)`` slices (each in arrival order within its partition)
        and, per partition, the offset to commit."""
        active = [p for p in self._last_add if now - self._last_add[p] < self.idle_s]
        # a partition tracked but not heard from yet holds everything back
        watermark = min((self._latest.get(p, float("-inf")) for p in active), default=float("inf"))
        out: list[tuple[np.ndarray, dict[str, Any], Any]] = []
        commit: dict[Hashable, int] = {}
        for part, held in self._held.items():
            while held:
                h = held[0]
                rest = h.ts[h.pos:]
                above = np.flatnonzero(rest > watermark)
                k = len(rest) if len(above) == 0 else int(above[0])  # the prefix at or below it
                forced = self.rows > self.max_rows  # bounded: release whatever is oldest
                if forced:
                    k = len(rest)
                if k:
                    out.append((rest[:k], _slice(h.columns, h.pos, h.pos + k, len(h.ts)), h.meta))
                    h.pos += k
                    self.rows -= k
                if h.pos < len(h.ts):
                    break
                held.popleft()
                commit[part] = h.offset + 1
        return out, commit
