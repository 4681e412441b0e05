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

from collections import OrderedDict, deque
from collections.abc import Sequence
from typing import Any

import numpy as np

from stream.monitoring.concept_drift import PerformanceMonitor, change_point, holdout_miss_rate, holdout_reference
from stream.monitoring.performance_estimate import EstimateValidity, _auc, estimate_performance

__all__ = ["EstimateValidity", "LabelJoiner", "PerformanceMonitor", "estimate_performance", "holdout_miss_rate",
           "holdout_reference"]
__all__ += ["_auc", "change_point"]  # re-exported for callers that import them from here


class LabelJoiner:
    """Join delayed labels to predictions by event id, in bounded memory.

    Parameters
    ----------
    ttl_s
        A prediction waits at most this many seconds for its label.
    max_pending
        At most this many predictions wait; the oldest is evicted beyond it.
        The ids of expired/evicted predictions are remembered (as many again)
        to tell a late label from an unmatched one.
    """

    def __init__(self, ttl_s: float, max_pending: int = 100_000) -> None:
        if ttl_s <= 0 or max_pending < 1:
            raise ValueError("ttl_s must be > 0 and max_pending >= 1")
        self.ttl_s, self.max_pending = float(ttl_s), int(max_pending)
        self._pending: OrderedDict[str, tuple[float, float, Any]] = OrderedDict()
        # seconds from prediction to label of the joins since the caller last cleared it
        self.delays: deque[float] = deque(maxlen=100_000)
        self._gone: OrderedDict[str, None] = OrderedDict()
        # labels that came before their prediction (a lagging scorer): they wait, bounded too
        self._early: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self.matched = self.late = self.unmatched = self.expired = self.evicted = 0
        self.predictions = 0  # registered, for coverage (labelled / scored)

    def __len__(self) -> int:
        return len(self._pending)

    def _forget(self, event_id: str) -> None:
        self._gone[event_id] = None
        if len(self._gone) > self.max_pending:
            self._gone.popitem(last=False)

    def add_predictions(
        self, event_ids: Sequence[str], scores: np.ndarray | Sequence[float], ts: float,
        tags: Sequence[Any] | None = None, joined: list[Any] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Register predictions made at time ``ts`` (seconds); return the ``(scores, labels)``
        of those whose label was already waiting.

        ``tags`` (one per prediction, e.g. the model version and inputs behind it) ride along
        with the prediction; the tags of the predictions joined now are appended to ``joined``,
        in the order of the returned arrays."""
        self.expire(ts)
        self.predictions += len(event_ids)
        got_s, got_y = [], []
        tag_list = list(tags) if tags is not None else None
        for i, (eid, score) in enumerate(zip(event_ids, np.asarray(scores, dtype=float).tolist(), strict=True)):
            tag = tag_list[i] if tag_list is not None else None
            early = self._early.pop(eid, None) if self._early else None
            if early is not None:
                got_s.append(score)
                got_y.append(early[0])
                if joined is not None:
                    joined.append(tag)
                self.delays.append(0.0)  # the label was there first
                continue
            self._pending[eid] = (score, float(ts), tag)
            self._pending.move_to_end(eid)
        self.matched += len(got_s)
        while len(self._pending) > self.max_pending:
            eid, _ = self._pending.popitem(last=False)
            self.evicted += 1
            self._forget(eid)
        return np.asarray(got_s, dtype=float), np.asarray(got_y, dtype=float)

    def add_labels(
        self, event_ids: Sequence[str], labels: np.ndarray | Sequence[float], ts: float,
        joined: list[Any] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Join labels arriving at time ``ts``; return the matched ``(scores, labels)`` (and
        append their predictions' tags to ``joined``)."""
        self.expire(ts)
        scores, truth = [], []
        for eid, label in zip(event_ids, np.asarray(labels, dtype=float).tolist(), strict=True):
            hit = self._pending.pop(eid, None)
            if hit is not None:
                scores.append(hit[0])
                truth.append(label)
                self.delays.append(max(0.0, ts - hit[1]))
                if joined is not None:
                    joined.append(hit[2])
            elif eid in self._gone:
                self.late += 1
            else:  # no prediction yet: wait for it (unmatched if it never comes)
                self._early[eid] = (label, float(ts))
                self._early.move_to_end(eid)
                if len(self._early) > self.max_pending:
                    self._early.popitem(last=False)
                    self.unmatched += 1
        self.matched += len(scores)
        return np.asarray(scores, dtype=float), np.asarray(truth, dtype=float)

    def expire(self, now: float) -> int:
        """Drop predictions older than the time-to-live; return how many. Labels that waited
        as long for a prediction are counted unmatched."""
        limit, n = now - self.ttl_s, 0
        while self._early and next(iter(self._early.values()))[1] < limit:
            self._early.popitem(last=False)
            self.unmatched += 1
        while self._pending:
            eid, (_, t, _) = next(iter(self._pending.items()))
            if t >= limit:
                break
            self._pending.popitem(last=False)
            self._forget(eid)
            n += 1
        self.expired += n
        return n

    def pending_scores(self) -> np.ndarray:
        """Scores of the predictions still waiting for a label (for :func:`estimate_performance`)."""
        return np.fromiter((p[0] for p in self._pending.values()), float, len(self._pending))

    def counters(self) -> dict[str, int]:
        return {"matched": self.matched, "late": self.late, "unmatched": self.unmatched,
                "expired": self.expired, "evicted": self.evicted, "pending": len(self._pending),
                "waiting_labels": len(self._early)}

