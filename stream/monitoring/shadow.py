"""The live comparison: shadow predictions joined with their delayed labels, champion against
the shadow (or, after a promotion, the new champion against the previous one) on the same
labelled events, and a verdict once enough of them are in.

Every shadow prediction carries the champion's score of the same feature row, so a joined
label pairs the two by construction (same event id, same inputs). A comparison is keyed by
(model, role, compared version, champion version); it keeps at most the configured number of
labelled events (``trainer.shadow_labels`` for a shadow, ``trainer.guard_labels`` for the
previous champion), then publishes one :class:`stream.messages.ShadowVerdict` from the pure
:func:`stream.monitoring.comparison.live_verdict` and forgets it. Pending shadow predictions
wait in a bounded :class:`stream.monitoring.labels.LabelJoiner`; comparisons and finished keys
are bounded too.

Examples
--------
>>> import numpy as np
>>> from stream.config import Settings
>>> from stream.metrics import Metrics
>>> c = ShadowComparator(Settings(trainer={"shadow_labels": 4, "bootstrap": 100}), Metrics.create(),
...                      task_of=lambda name, version: "classification")
>>> preds = [ShadowPrediction(event_id=f"e{i}", entity_id="c", score=0.2, model="fraud", model_version="2",
...                           role="shadow", champion_version="1", champion_score=0.3, ingest_ts_ms=0,
...                           scored_ts_ms=0) for i in range(5)]
>>> c.add(preds, now=0.0)
>>> c.add_labels(["e0", "e1", "e2", "e3"], np.array([0.0, 0.0, 0.0, 0.0]), now=1.0)
>>> [(v.verdict, v.labelled, v.metrics["difference"]["mean"]) for v in c.take()]
[('promote', 4, -0.133531)]
"""

from __future__ import annotations

import logging
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from stream.config import Settings
from stream.messages import ShadowPrediction, ShadowVerdict
from stream.metrics import Metrics
from stream.monitoring.comparison import live_verdict, row_losses
from stream.monitoring.labels import LabelJoiner

log = logging.getLogger(__name__)

MAX_COMPARISONS = 16  # open comparisons kept (the oldest dropped first)
MAX_DONE = 1_000  # finished comparisons remembered, so late rows do not start them again
# labels kept while no comparison runs, for a shadow whose first predictions reach the monitor
# after their labels (labels faster than the shadow topic); whole batches, so keeping is O(1)
IDLE_LABELS = 100_000

Key = tuple[str, str, str, str]  # model, role, compared version, champion version


@dataclass
class _Pairs:
    """Labelled events of one comparison: label, champion score, compared version's score."""

    need: int
    y: list[float] = field(default_factory=list)
    champion: list[float] = field(default_factory=list)
    other: list[float] = field(default_factory=list)


class ShadowComparator:
    """Joins shadow predictions with labels and decides, per comparison.

    ``task_of(model, version)`` names the task of a version ("classification" or
    "regression"; None when the version cannot be read: its rows are not compared)."""

    def __init__(self, settings: Settings, metrics: Metrics,
                 task_of: Callable[[str, str], str | None]):
        t = settings.trainer
        self.settings = settings
        self.metrics = metrics
        self.task_of = task_of
        # a shadow nobody configured a count for (set by hand with shadow_labels 0) gets min_holdout
        self.need = {"shadow": t.shadow_labels or t.min_holdout, "previous": t.guard_labels}
        self.tolerance = {"shadow": t.shadow_tolerance, "previous": t.guard_tolerance}
        self.joiner = LabelJoiner(ttl_s=settings.monitor.label_ttl_s,
                                  max_pending=settings.monitor.max_pending_labels)
        self.open: OrderedDict[Key, _Pairs] = OrderedDict()
        self.done: OrderedDict[Key, None] = OrderedDict()
        self.out: list[ShadowVerdict] = []
        self._idle: deque[tuple[Sequence[str], np.ndarray, float]] = deque()  # (ids, labels, now)
        self._idle_n = 0

    def add(self, predictions: Sequence[ShadowPrediction], now: float) -> None:
        """Register shadow predictions (rows of finished comparisons are ignored)."""
        ids: list[str] = []
        scores: list[float] = []
        tags: list[Any] = []
        for p in predictions:
            key = (p.model, p.role, p.model_version, p.champion_version)
            if key in self.done or not self.need.get(p.role):
                continue
            ids.append(p.event_id)
            scores.append(p.score)
            tags.append((key, p.champion_score))
        if ids:
            self._replay_idle()
            joined: list[Any] = []
            other, y = self.joiner.add_predictions(ids, np.asarray(scores), now, tags=tags, joined=joined)
            self._pair(other, y, joined, now)

    def add_labels(self, event_ids: Sequence[str], labels: np.ndarray, now: float) -> None:
        """Join labels. While no comparison runs, the newest ``IDLE_LABELS`` (within the label
        time-to-live) are only kept, as they came, for the first shadow predictions to meet."""
        if not len(self.joiner) and not self.open:
            self._idle.append((event_ids, labels, now))
            self._idle_n += len(event_ids)
            ttl = self.settings.monitor.label_ttl_s
            while self._idle and (self._idle_n > IDLE_LABELS or self._idle[0][2] < now - ttl):
                self._idle_n -= len(self._idle.popleft()[0])
            return
        joined: list[Any] = []
        other, y = self.joiner.add_labels(event_ids, labels, now, joined=joined)
        self._pair(other, y, joined, now)
        self.joiner.expire(now)

    def _replay_idle(self) -> None:
        """A comparison starts: the labels kept meanwhile wait in the joiner for their predictions."""
        while self._idle:
            ids, labels, at = self._idle.popleft()
            self.joiner.add_labels(ids, labels, at)
        self._idle_n = 0

    def take(self) -> list[ShadowVerdict]:
        """The verdicts reached since the last call."""
        out, self.out = self.out, []
        return out

    def _pair(self, other: np.ndarray, y: np.ndarray, tags: list[Any], now: float) -> None:
        touched: set[Key] = set()
        for (key, champion_score), score, label in zip(tags, other.tolist(), y.tolist()):
            if key in self.done:
                continue
            pairs = self.open.get(key)
            if pairs is None:
                pairs = self.open[key] = _Pairs(need=self.need[key[1]])
                while len(self.open) > MAX_COMPARISONS:
                    dropped, _ = self.open.popitem(last=False)
                    log.warning("live comparison %s dropped: too many open at once", ":".join(dropped))
            if len(pairs.y) < pairs.need:
                pairs.y.append(label)
                pairs.champion.append(champion_score)
                pairs.other.append(score)
                touched.add(key)
        for key in touched:
            self._update(key, now)

    def _update(self, key: Key, now: float) -> None:
        model, role, version, champion = key
        pairs = self.open[key]
        task = self.task_of(model, version)
        if task is None:
            return
        y, champ, other = (np.asarray(v, dtype=np.float64) for v in (pairs.y, pairs.champion, pairs.other))
        self.metrics.shadow_labelled.labels(model, version, role).set(len(y))
        self.metrics.live_loss.labels(model, champion, "champion").set(float(row_losses(task, y, champ).mean()))
        self.metrics.live_loss.labels(model, version, role).set(float(row_losses(task, y, other).mean()))
        if len(y) < pairs.need:
            return
        t = self.settings.trainer
        v = live_verdict(task, y, champion=champ, other=other, role=role, tolerance=self.tolerance[role],
                         confidence=t.confidence, bootstrap=t.bootstrap, seed=t.seed)
        del self.open[key]
        self.done[key] = None
        while len(self.done) > MAX_DONE:
            self.done.popitem(last=False)
        self.metrics.shadow_verdicts.labels(model, role, v.outcome).inc()
        log.info("live comparison of %s version %s (%s) with champion %s: %s (%s)", model, version, role,
                 champion, v.outcome, "; ".join(v.reasons))
        self.out.append(ShadowVerdict(
            verdict_id=":".join(key), model=model, role=role,  # type: ignore[arg-type]
            model_version=version, champion_version=champion, verdict=v.outcome,  # type: ignore[arg-type]
            labelled=len(y), reasons=v.reasons, metrics=v.metrics, primary_metric=v.primary_metric,
            decided_at=now))
