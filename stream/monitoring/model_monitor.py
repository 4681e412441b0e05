"""One model version's monitor, pure (no Kafka): drift tests on released feature rows,
performance on joined labels, the label-free estimate, and the event times that date a drift's
onset. Also the helpers the monitor worker uses to merge released rows and read labels.

>>> merge_slices([(np.array([2.0]), {"a": np.array([20])}), (np.array([1.0]), {"a": np.array([10])})])
{'a': array([10, 20])}
>>> merge_slices([(np.array([2.0, 4.0]), {"c": ["x", "z"], "id": ["1", "3"]}),
...               (np.array([3.0]), {"c": ["y"], "id": ["2"]})], skip=("id",))
{'c': ['x', 'y', 'z']}
"""

from __future__ import annotations

from itertools import chain
from typing import Any

import numpy as np

from stream.config import Settings
from stream.messages import SCORE_COLUMN, CategoryCodes, Label, decode
from stream.monitoring.drift import DriftMonitor
from stream.monitoring.labels import (
    EstimateValidity,
    PerformanceMonitor,
    estimate_performance,
)
from stream.monitoring.profile import ReferenceProfile

EVENT_IDS = "__event_ids"  # rides along with the monitored columns through the merger
EVENT_TS = "__event_ts"  # event times, for the monitor's daily profile
ENTITY_IDS = "__entity_ids"  # entity per row (None if the scorer sent none), for the entity cap


class ModelMonitor:
    """Drift tests and performance for one model version (pure, no Kafka)."""

    ONSET_ROWS = 100_000  # event times kept to date a data drift's onset (a release can be large)

    def __init__(self, card: dict[str, Any], settings: Settings):
        self.name, self.version = str(card["name"]), str(card["version"])
        self.task = str(card.get("task", "classification"))
        self.threshold = float(card.get("threshold", 0.5))
        self.profile = ReferenceProfile.from_dict(card["reference_profile"])
        self.kinds = dict(self.profile.features)
        m, p = settings.monitor, settings.monitor.performance
        self.drift = DriftMonitor(self.profile, m.drift_settings(), model_name=self.name, model_version=self.version)
        # the reference error rate is the model card's holdout, not the first live labels
        self.performance = PerformanceMonitor.from_card(card, p, expected_run_length=m.expected_run_length)
        self.estimate_validity = EstimateValidity(p.estimate_tolerance, p.estimate_window,
                                                  min(p.estimate_min_labels, p.estimate_window))
        self.warmup_left = m.warmup_rows
        # event times of the rows tested, to date a data drift's onset
        self.row_times = RecentTimes(self.ONSET_ROWS)
        self._estimate_rows = p.estimate_rows
        self._recent = np.full(p.estimate_rows, np.nan)
        self._recent_at = 0

    def on_features(self, cols: dict[str, Any], ts: np.ndarray | None = None,
                    entities: list[Any] | None = None) -> list[Any]:
        scores = np.asarray(cols[SCORE_COLUMN])
        rows = self._estimate_rows
        idx = (self._recent_at + np.arange(len(scores))) % rows
        self._recent[idx[-rows:]] = scores[-rows:]
        self._recent_at += len(scores)
        n = len(scores)
        if self.warmup_left >= n:
            self.warmup_left -= n
            return []
        if self.warmup_left:
            cols = {k: v[self.warmup_left:] for k, v in cols.items()}
            ts = None if ts is None else ts[self.warmup_left:]
            entities = None if entities is None else entities[self.warmup_left:]
            self.warmup_left = 0
        events = self.drift.update_batch(cols, ts=ts, entities=entities)
        # once tested: rows refused (a ValueError) must not move the onset dates of the rows after them
        self.row_times.add(ts if ts is not None else np.full(len(cols[SCORE_COLUMN]), np.nan))
        return events

    def on_labels(self, scores: np.ndarray, labels: np.ndarray,
                  event_ts: np.ndarray | None = None) -> list[Any]:
        if not len(scores):
            return []
        if self.task == "classification":
            self.estimate_validity.update(scores, labels)
        return self.performance.update(scores, labels, event_ts)

    def onset_event_ts(self, drift: dict[str, Any]) -> float | None:
        """Event time the drift is in force from (the trainer's "onset" window starts there).

        Concept drift: the change point the performance monitor found in the loss
        (``change_event_ts`` in its evidence). Other drift: the start of the largest window that fired."""
        evidence = drift.get("evidence", [])
        windows = [int(e["window"]) for e in evidence if e.get("window")]
        index = drift.get("index")
        if not windows or not isinstance(index, int):
            return None
        if drift.get("kind") == "concept_drift":
            changes = [float(e["change_event_ts"]) for e in evidence if e.get("change_event_ts") is not None]
            return min(changes) if changes else None
        return self.row_times.at(max(0, index + 1 - max(windows)))  # index is the window's last row

    def estimated_performance(self) -> dict[str, float]:
        if self.task != "classification":
            return {}
        recent = self._recent[~np.isnan(self._recent)]
        return estimate_performance(recent, self.threshold) if len(recent) else {}


class RecentTimes:
    """The last ``size`` event times, by the count of rows added (a drift event's index).

    >>> t = RecentTimes(3); t.add(np.array([1.0, 2.0, 3.0, 4.0])); t.at(2), t.at(0), t.at(9)
    (3.0, 2.0, 4.0)
    """

    def __init__(self, size: int):
        self._ts = np.full(size, np.nan)
        self._n = 0

    def add(self, ts: np.ndarray) -> None:
        ts = np.asarray(ts, dtype=np.float64)
        kept = ts[-len(self._ts):]
        idx = (self._n + len(ts) - len(kept) + np.arange(len(kept))) % len(self._ts)
        self._ts[idx] = kept
        self._n += len(ts)

    @property
    def n(self) -> int:
        return self._n

    def at(self, i: int) -> float | None:
        """The time of the ``i``-th row ever added, or the oldest kept if it is gone."""
        if self._n == 0:
            return None
        i = min(max(i, self._n - len(self._ts), 0), self._n - 1)
        value = self._ts[i % len(self._ts)]
        return float(value) if value == value else None


def merge_slices(slices: list[tuple[np.ndarray, dict[str, Any]]], skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """Released rows of several partitions as one set of columns, in event-time order (columns
    named in ``skip`` left out)."""
    if len(slices) == 1:
        return {k: v for k, v in slices[0][1].items() if k not in skip}
    order = np.argsort(np.concatenate([ts for ts, _ in slices]), kind="stable")
    merged: dict[str, Any] = {}
    for name in slices[0][1]:
        if name in skip:
            continue
        parts = [c[name] for _, c in slices]
        if isinstance(parts[0], np.ndarray):
            merged[name] = np.concatenate(parts)[order]
        elif all(isinstance(p, CategoryCodes) for p in parts):
            merged[name] = CategoryCodes.concat(parts)[order]
        else:  # strings: reordered as an object array (a third of the time of a list comprehension)
            flat = np.empty(len(order), dtype=object)
            flat[:] = list(chain.from_iterable(p.tolist() if isinstance(p, CategoryCodes) else p for p in parts))
            merged[name] = flat[order].tolist()
    return merged


def merge_and_test(mon: ModelMonitor, slices: list[tuple[np.ndarray, dict[str, Any]]]) -> tuple[int, list[Any]]:
    # (the event ids are not tested: the label join took them as the batches were decoded)
    cols = merge_slices(slices, skip=(EVENT_IDS,))
    ts = cols.pop(EVENT_TS, None)
    entities = cols.pop(ENTITY_IDS, None)
    if entities is not None and entities.count(None) == len(entities):
        entities = None  # scorers from before entity ids: no cap, and no entity-balanced test
    n = sum(len(times) for times, _ in slices)
    return n, mon.on_features(cols, None if ts is None else np.asarray(ts, dtype=np.float64), entities)


def parse_label(rec: Any, binary: bool = False) -> tuple[str, float]:
    """``(event id, label)`` of a label record; ValueError for a label no monitor can use (not
    finite, or not 0 or 1 for a classifier: ``binary``).

    >>> class Rec: value = b'{"event_id": "e1", "label": 2}'
    >>> parse_label(Rec())
    ('e1', 2.0)
    >>> parse_label(Rec(), binary=True)
    Traceback (most recent call last):
    ...
    ValueError: label 2.0 of event 'e1' is not 0 or 1 (false or true): the model is a classifier
    """
    label = decode(rec.value, Label)
    value = float(label.label)
    if not np.isfinite(value):
        raise ValueError(f"label {value} is not finite")
    if binary and value != 0.0 and value != 1.0:
        raise ValueError(f"label {value} of event {label.event_id!r:.80} is not 0 or 1 (false or true): "
                         "the model is a classifier")
    return label.event_id, value

