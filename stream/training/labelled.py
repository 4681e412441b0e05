"""Labelled examples from the stream, as the trainer reads them, and the training window policy.

The monitor's label join writes one record per labelled prediction to the labelled-examples
topic: the model inputs exactly as scored, the event id and time, the version that scored it,
its score and its label. The trainer reads the newest ``max_rows`` of them (the topic's
retention bounds the rest) and splits them in event-time order: the newest rows are the
holdout on which champion and challenger are compared; the rows before it train the challenger.

Examples
--------
>>> ex = LabelledExamples.from_records([
...     LabelledExample(event_id=f"e{i}", event_ts=float(i), model="m", model_version="1",
...                     inputs=[i, 1.0], categories={"c": "x"}, score=0.5, label=i % 2, labelled_at=0.0)
...     for i in range(10)], offsets=[(0, i) for i in range(10)])
>>> train, hold = choose_window(ex, WindowPolicy(holdout_rows=3, max_train_rows=4))
>>> train.tolist(), hold.tolist()
([3, 4, 5, 6], [7, 8, 9])
>>> choose_window(ex, WindowPolicy(holdout_rows=3, max_train_rows=4, start="onset"), onset_ts=5.0)[0].tolist()
[5, 6]
>>> describe_window(ex, train)["event_ts"]
[3.0, 6.0]
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from aiokafka import TopicPartition

from stream.config import Settings
from stream.errors import MessageError
from stream.kafka import make_consumer, start_client
from stream.messages import LabelledExample, decode


@dataclass(frozen=True)
class LabelledExamples:
    """Columns of labelled examples, sorted by event time."""

    event_ids: list[str]
    event_ts: np.ndarray
    X: np.ndarray  # float32 [n, features], exactly as scored
    y: np.ndarray
    scores: np.ndarray
    versions: list[str]
    categories: dict[str, np.ndarray]  # raw values of the monitored categorical fields
    offsets: np.ndarray  # [n, 2]: partition, offset of each record in the topic

    def __len__(self) -> int:
        return len(self.event_ids)

    @classmethod
    def from_records(cls, records: list[LabelledExample], offsets: list[tuple[int, int]]) -> LabelledExamples:
        order = sorted(range(len(records)), key=lambda i: (records[i].event_ts, i))
        recs = [records[i] for i in order]
        names = sorted({k for r in recs for k in r.categories})
        width = len(recs[0].inputs) if recs else 0
        if any(len(r.inputs) != width for r in recs):
            raise ValueError("labelled examples of different input widths (the features changed?)")
        return cls(
            event_ids=[r.event_id for r in recs],
            event_ts=np.array([r.event_ts for r in recs]),
            X=np.array([r.inputs for r in recs], dtype=np.float32).reshape(len(recs), width),
            y=np.array([float(r.label) for r in recs]),
            scores=np.array([np.nan if r.score is None else r.score for r in recs]),
            versions=[r.model_version for r in recs],
            categories={n: np.array([r.categories.get(n) for r in recs], dtype=object) for n in names},
            offsets=np.array([offsets[i] for i in order], dtype=np.int64).reshape(len(recs), 2),
        )


@dataclass(frozen=True)
class WindowPolicy:
    """Which labelled examples train a challenger and which judge it (see ``TrainerSettings``)."""

    holdout_rows: int = 5_000
    max_train_rows: int = 30_000
    min_train_rows: int = 1_000
    # "recent": the newest rows before the holdout; "onset": only rows from the drift onset
    # named in the request's evidence (when it names one), still at most max_train_rows
    start: Literal["recent", "onset"] = "recent"


def choose_window(ex: LabelledExamples, policy: WindowPolicy,
                  onset_ts: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the training rows and of the holdout (the newest rows, never trained on)."""
    n = len(ex)
    hold_from = max(0, n - policy.holdout_rows)
    train_from = max(0, hold_from - policy.max_train_rows)
    if policy.start == "onset" and onset_ts is not None:
        train_from = max(train_from, int(np.searchsorted(ex.event_ts, onset_ts, side="left")))
        train_from = min(train_from, hold_from)
    return np.arange(train_from, hold_from), np.arange(hold_from, n)


def describe_window(ex: LabelledExamples, idx: np.ndarray) -> dict[str, Any]:
    """Lineage of a set of rows: how many, labels, event-time range, topic offsets per partition."""
    if not len(idx):
        return {"rows": 0}
    offsets: dict[str, list[int]] = {}
    for p in np.unique(ex.offsets[idx, 0]).tolist():
        o = ex.offsets[idx][ex.offsets[idx, 0] == p, 1]
        offsets[str(p)] = [int(o.min()), int(o.max())]
    y = ex.y[idx]
    return {"rows": len(idx), "labels_positive": int((y > 0.5).sum()),
            "event_ts": [float(ex.event_ts[idx].min()), float(ex.event_ts[idx].max())],
            "offsets": offsets, "scored_by": sorted(set(ex.versions[i] for i in idx.tolist()))}


async def read_examples(settings: Settings, max_rows: int) -> LabelledExamples:
    """The newest ``max_rows`` labelled examples in the topic (read up to its high watermarks).

    Malformed records are skipped. High watermarks come from fetch responses, as in the
    scorer's state restore.
    """
    topic = settings.topics.labelled_examples
    keep: deque[tuple[LabelledExample, tuple[int, int]]] = deque(maxlen=max_rows)
    consumer = make_consumer(settings, group_id=None, fetch_max_wait_ms=50)
    await start_client(consumer, settings.kafka.bootstrap_servers)
    try:
        parts = consumer.partitions_for_topic(topic)
        if not parts:
            await consumer._client.force_metadata_update()
            parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        if tps:
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
        pending = set(tps)
        deadline = time.monotonic() + settings.trainer.read_timeout_s
        while pending and time.monotonic() < deadline:
            batches = await consumer.getmany(*pending, timeout_ms=200, max_records=50_000)
            for tp, records in batches.items():
                for rec in records:
                    try:
                        keep.append((decode(rec.value, LabelledExample), (tp.partition, rec.offset)))
                    except MessageError:
                        continue  # a malformed example is not worth failing a retraining for
            for tp in list(pending):
                hw = consumer.highwater(tp)
                if hw is not None and await consumer.position(tp) >= hw:
                    pending.discard(tp)
    finally:
        await consumer.stop()
    return LabelledExamples.from_records([r for r, _ in keep], [o for _, o in keep])
