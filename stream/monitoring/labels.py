"""Delayed labels joined to predictions by event id, in bounded memory.

The label join (:class:`LabelJoiner`) lives here; what the joined labels feed is in
:mod:`stream.monitoring.concept_drift` (rolling performance, concept drift,
:func:`holdout_reference`) and :mod:`stream.monitoring.performance_estimate` (the
label-free estimate and its validity). Their names are re-exported from here.

:class:`LabelJoiner` keeps bounded state (time-to-live and a maximum number of pending
predictions) and counters for matched, late (prediction already expired), unmatched (a
label whose prediction never came within the time-to-live) and expired events; a label
that arrives before its prediction waits for it.

Examples
--------
>>> import numpy as np
>>> j = LabelJoiner(ttl_s=60.0, max_pending=1000)
>>> _ = j.add_predictions(["a", "b", "c"], np.array([0.9, 0.2, 0.7]), ts=0.0)
>>> s, y = j.add_labels(["a", "c", "zz"], np.array([1.0, 0.0, 1.0]), ts=5.0)
>>> s.tolist(), y.tolist(), j.counters()
([0.9, 0.7], [1.0, 0.0], {'matched': 2, 'late': 0, 'unmatched': 0, 'expired': 0, 'evicted': 0, 'pending': 1, 'waiting_labels': 1})
>>> j.add_predictions(["zz"], np.array([0.4]), ts=6.0)   # its label was waiting
(array([0.4]), array([1.]))
>>> estimate_performance(j.pending_scores(), threshold=0.5)["accuracy"]  # "b" (0.2) still unlabelled
0.8
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from collections.abc import Sequence
from typing import Any

import numpy as np

from stream.monitoring.concept_drift import PerformanceMonitor, change_point, holdout_miss_rate, holdout_reference
from stream.monitoring.performance_estimate import EstimateValidity, _auc, estimate_performance

__all__ = ["EstimateValidity", "LabelJoiner", "PerformanceMonitor", "estimate_performance", "holdout_miss_rate",
           "holdout_reference"]
__all__ += ["_auc", "change_point"]  # re-exported for callers that import them from here


class _Recent:
    """Ids forgotten lately, in two generations of at most ``size`` each: the last ``size`` to
    ``2 * size`` are known, at the cost of a set insertion each, with no order kept per id."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.new: set[str] = set()
        self.old: set[str] = set()

    def update(self, ids: Sequence[str]) -> None:
        self.new.update(ids[-self.size:])
        if len(self.new) >= self.size:
            self.old, self.new = self.new, set()

    def __contains__(self, event_id: object) -> bool:
        return event_id in self.new or event_id in self.old

    def __len__(self) -> int:
        return len(self.new) + len(self.old)


class LabelJoiner:
    """Join delayed labels to predictions by event id, in bounded memory.

    Parameters
    ----------
    ttl_s
        A prediction waits at most this many seconds for its label.
    max_pending
        At most this many predictions wait; the oldest is evicted beyond it.
        The ids of expired/evicted predictions are remembered (as many again, up to twice)
        to tell a late label from an unmatched one.

    Pending predictions live in numpy rings indexed by a serial number, in arrival order, and
    an id -> serial dict: no Python object per prediction but its id, so registering a batch
    is a few C-level calls and the garbage collector has nothing to walk (with a tuple per
    prediction and Python's default collector settings, the collector took ~30 % of the
    monitor's time offline). A serial is pending exactly when it is ``alive``, which is exactly
    when the dict maps its id to it.
    """

    def __init__(self, ttl_s: float, max_pending: int = 100_000) -> None:
        if ttl_s <= 0 or max_pending < 1:
            raise ValueError("ttl_s must be > 0 and max_pending >= 1")
        self.ttl_s, self.max_pending = float(ttl_s), int(max_pending)
        self._index: dict[str, int] = {}  # event id -> serial of its pending prediction
        self._cap = 0  # ring size, grown as predictions wait, up to twice max_pending
        self._score = self._ts = np.empty(0)
        self._alive = np.zeros(0, dtype=bool)
        self._row = np.zeros(0, dtype=np.int64)  # index into the tags the prediction came with
        self._ids: list[Any] = []
        self._tags: list[Any] = []
        self._head = self._next = 0  # serials [head, next) may be pending
        self._last_ts = -math.inf  # times only move forward, so expiry is a search
        # seconds from prediction to label of the joins since the caller last cleared it
        self.delays: deque[float] = deque(maxlen=100_000)
        self._gone = _Recent(self.max_pending)
        # labels that came before their prediction (a lagging scorer): they wait, bounded too
        self._early: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self.matched = self.late = self.unmatched = self.expired = self.evicted = 0
        self.predictions = 0  # registered, for coverage (labelled / scored)

    def __len__(self) -> int:
        return len(self._index)

    def _spans(self, lo: int, hi: int) -> list[tuple[int, int, int]]:
        """Serials ``[lo, hi)`` as ring slices ``(slot_lo, slot_hi, serial_lo)``."""
        out = []
        while lo < hi:
            a = lo % self._cap
            b = min(self._cap, a + hi - lo)
            out.append((a, b, lo))
            lo += b - a
        return out

    def _make_room(self, ids: list[str], superseded: int) -> None:
        """Room for ``ids`` (``superseded`` of them already pending): beyond ``max_pending``
        the oldest pending are evicted; a ring whose slots were taken by matched predictions is
        compacted (the pending keep their order, under new serials) or grown. It holds up to
        twice ``max_pending`` slots, so compacting is rare."""
        m = len(ids)
        if len(self._index) - superseded + m > self.max_pending:  # near the bound: count exactly
            excess = len(self._index) - superseded + len(set(ids)) - self.max_pending
            if excess > 0:
                self.evicted += self._drop(self._after_pending(excess))
        if self._next + m - self._head > self._cap:
            want = min(2 * self.max_pending, max(1024, 2 * (len(self._index) + m)))
            self._relayout(max(want, self._cap))

    def _after_pending(self, k: int) -> int:
        """The serial just after the ``k``-th oldest pending prediction."""
        at = self._head
        while at < self._next:
            end = min(self._next, at + max(4096, k))
            for a, b, lo in self._spans(at, end):
                alive = np.flatnonzero(self._alive[a:b])
                if k <= len(alive):
                    return lo + int(alive[k - 1]) + 1
                k -= len(alive)
            at = end
        return self._next

    def _pending_slots(self, lo: int, hi: int) -> np.ndarray:
        """Ring slots of the pending predictions among serials ``[lo, hi)``, in serial order."""
        return np.concatenate([np.flatnonzero(self._alive[a:b]) + a for a, b, _ in self._spans(lo, hi)]
                              or [np.zeros(0, dtype=np.int64)])

    def _relayout(self, cap: int) -> None:
        slots = self._pending_slots(self._head, self._next)
        k = len(slots)
        # every serial still pending (as while the ring grows before labels come): they keep their
        # numbers, so the index stands, and ids and tags move in slices, not one by one
        kept = k == self._next - self._head
        if kept:
            ids, tags = [], []
            for a, b, _ in self._spans(self._head, self._next):
                ids += self._ids[a:b]
                tags += self._tags[a:b]
        else:
            at = slots.tolist()
            ids, tags = [self._ids[i] for i in at], [self._tags[i] for i in at]
        score, ts, row = self._score[slots], self._ts[slots], self._row[slots]
        self._cap, self._head = cap, self._next - k
        self._score, self._ts = np.empty(cap), np.empty(cap)
        self._alive, self._row = np.zeros(cap, dtype=bool), np.zeros(cap, dtype=np.int64)
        self._ids, self._tags = [None] * cap, [None] * cap
        for c, d, lo in self._spans(self._head, self._next):
            j = lo - self._head
            self._score[c:d], self._ts[c:d], self._row[c:d] = score[j:j + d - c], ts[j:j + d - c], row[j:j + d - c]
            self._ids[c:d], self._tags[c:d] = ids[j:j + d - c], tags[j:j + d - c]
            self._alive[c:d] = True
        if not kept:
            self._index.update(zip(ids, range(self._head, self._next)))

    def _drop(self, hi: int) -> int:
        """Forget serials ``[head, hi)``; return how many of them were pending."""
        ids = [self._ids[i] for i in self._pending_slots(self._head, hi).tolist()]
        deque(map(self._index.pop, ids), maxlen=0)  # alive <=> indexed
        self._gone.update(ids)
        for a, b, _ in self._spans(self._head, hi):
            self._alive[a:b] = False
            self._ids[a:b] = [None] * (b - a)  # the ids and tags are not kept alive
            self._tags[a:b] = [None] * (b - a)
        self._head = max(self._head, hi)
        return len(ids)

    def add_predictions(
        self, event_ids: Sequence[str], scores: np.ndarray | Sequence[float], ts: float,
        tags: Sequence[Any] | None = None, joined: list[Any] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Register predictions made at time ``ts`` (seconds); return the ``(scores, labels)``
        of those whose label was already waiting.

        ``tags`` (one per prediction, e.g. the model version and inputs behind it) ride along
        with the prediction, read only for those that join: the tags of the predictions joined
        now are appended to ``joined``, in the order of the returned arrays."""
        self.expire(ts)
        # read only (the ring stores slices): a list is not copied, its strings not touched again
        ids = event_ids if type(event_ids) is list else list(event_ids)
        values = np.asarray(scores, dtype=float).reshape(-1)
        if len(values) != len(ids):
            raise ValueError(f"{len(ids)} event ids but {len(values)} scores")
        self.predictions += len(ids)
        rows = np.arange(len(ids))
        got_s: list[float] = []
        got_y: list[float] = []
        hits = self._early.keys() & ids if self._early else ()
        if hits:  # labels that were there first: joined now, not pending
            keep = np.ones(len(ids), dtype=bool)
            for i, eid in enumerate(ids):
                early = self._early.pop(eid, None) if eid in hits else None
                if early is not None:
                    keep[i] = False
                    got_s.append(float(values[i]))
                    got_y.append(early[0])
                    if joined is not None:
                        joined.append(tags[i] if tags is not None else None)
                    self.delays.append(0.0)  # the label was there first
            rows = rows[keep]
            ids = [ids[i] for i in rows.tolist()]
            values = values[rows]
        self.matched += len(got_s)
        self._pend(ids, values, max(float(ts), self._last_ts), rows, tags)
        return np.asarray(got_s, dtype=float), np.asarray(got_y, dtype=float)

    def _pend(self, ids: list[str], values: np.ndarray, ts: float, rows: np.ndarray, tags: Any) -> None:
        self._last_ts = ts
        if len(ids) > self.max_pending:  # more than fit: the oldest are evicted at once
            cut = len(ids) - self.max_pending
            self.evicted += cut
            self._gone.update(ids[:cut])
            gone = [s for s in map(self._index.pop, ids[:cut], [None] * cut) if s is not None]
            self._alive[np.asarray(gone, dtype=np.int64) % max(self._cap, 1)] = False
            ids, values, rows = ids[cut:], values[cut:], rows[cut:]
        superseded = ([] if self._index.keys().isdisjoint(ids)  # the rule, in C
                      else [s for s in map(self._index.get, ids) if s is not None])
        if superseded:  # a prediction scored again (redelivered): the newest waits
            self._alive[np.asarray(superseded) % self._cap] = False
        m = len(ids)
        replaced = len(set(superseded))
        self._make_room(ids, replaced)
        size = len(self._index)
        self._index.update(zip(ids, range(self._next, self._next + m)))
        for a, b, lo in self._spans(self._next, self._next + m):
            k = lo - self._next
            self._score[a:b] = values[k:k + b - a]
            self._ts[a:b] = ts
            self._alive[a:b] = True
            self._row[a:b] = rows[k:k + b - a]
            self._ids[a:b] = ids[k:k + b - a]
            self._tags[a:b] = [tags] * (b - a)
        if len(self._index) - size != m - replaced:  # an id twice in one batch: the last waits
            for k, eid in enumerate(ids):
                if self._index[eid] != self._next + k:
                    self._alive[(self._next + k) % self._cap] = False
        self._next += m

    def add_labels(
        self, event_ids: Sequence[str], labels: np.ndarray | Sequence[float], ts: float,
        joined: list[Any] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Join labels arriving at time ``ts``; return the matched ``(scores, labels)`` (and
        append their predictions' tags to ``joined``)."""
        self.expire(ts)
        serials: list[int] = []
        truth: list[float] = []
        for eid, label in zip(event_ids, np.asarray(labels, dtype=float).tolist(), strict=True):
            hit = self._index.pop(eid, None)
            if hit is not None:
                serials.append(hit)
                truth.append(label)
            elif eid in self._gone:
                self.late += 1
            else:  # no prediction yet: wait for it (unmatched if it never comes)
                self._early[eid] = (label, float(ts))
                self._early.move_to_end(eid)
                if len(self._early) > self.max_pending:
                    self._early.popitem(last=False)
                    self.unmatched += 1
        slots = np.asarray(serials, dtype=np.int64) % max(self._cap, 1)
        self._alive[slots] = False
        self.delays.extend(np.maximum(0.0, ts - self._ts[slots]).tolist())
        for slot, row in zip(slots.tolist(), self._row[slots].tolist()):
            tag, self._tags[slot], self._ids[slot] = self._tags[slot], None, None  # not kept alive
            if joined is not None:
                joined.append(tag[row] if tag is not None else None)
        self.matched += len(serials)
        return self._score[slots].astype(float), np.asarray(truth, dtype=float)

    def expire(self, now: float) -> int:
        """Drop predictions older than the time-to-live; return how many. Labels that waited
        as long for a prediction are counted unmatched."""
        limit = now - self.ttl_s
        while self._early and next(iter(self._early.values()))[1] < limit:
            self._early.popitem(last=False)
            self.unmatched += 1
        end = self._head
        for a, b, lo in self._spans(self._head, self._next):  # times rise with the serial
            k = int(np.searchsorted(self._ts[a:b], limit, side="left"))
            end = lo + k
            if k < b - a:
                break
        n = self._drop(end) if end > self._head else 0
        self.expired += n
        return n

    def pending_scores(self) -> np.ndarray:
        """Scores of the predictions still waiting for a label (for :func:`estimate_performance`)."""
        return self._score[self._alive]

    def counters(self) -> dict[str, int]:
        return {"matched": self.matched, "late": self.late, "unmatched": self.unmatched,
                "expired": self.expired, "evicted": self.evicted, "pending": len(self._index),
                "waiting_labels": len(self._early)}

