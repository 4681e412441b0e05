"""The scoring path for one micro-batch, as a pure function of records in, messages out.

validate -> features (per-entity state) -> one ONNX call -> predictions, dead letters,
changelog records and one columnar feature batch per partition for the monitor. No Kafka
here: :mod:`stream.scoring.worker` feeds it consumer records and sends what it returns.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from stream.domain import Domain
from stream.messages import DeadLetter, FeatureBatch, Message, Prediction, encode
from stream.metrics import Metrics
from stream.scoring.model import Model
from stream.scoring.state import EntityStore


class Record(Protocol):
    """The fields of a consumer record we use (aiokafka's ConsumerRecord has them)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: int
    headers: Sequence[tuple[str, bytes]]


@dataclass
class PartitionOutput:
    """What one partition's share of a batch produces. Predictions are parallel key/value lists
    (the hot path avoids an object per message); ``touched`` maps each entity whose state
    changed to its state row, for the changelog the worker writes at commit time."""

    prediction_keys: list[bytes] = field(default_factory=list)
    prediction_values: list[bytes] = field(default_factory=list)
    dead_letters: list[Message] = field(default_factory=list)
    touched: dict[str, int] = field(default_factory=dict)
    features: bytes | None = None
    last_offset: int = -1


@dataclass
class BatchOutput:
    partitions: dict[int, PartitionOutput]
    valid: int = 0
    dead_lettered: int = 0


def dead_letter(record: Record, reason: str, message: str) -> Message:
    """The original bytes, with headers saying why and where from."""
    return DeadLetter(key=record.key, value=record.value or b"", reason=reason, message=message,
                      source_topic=record.topic, source_partition=record.partition,
                      source_offset=record.offset, headers=list(record.headers or ()),
                      timestamp_ms=record.timestamp).to_message()


class BatchScorer:
    """Turns one micro-batch of records (grouped by partition) into output messages."""

    def __init__(self, domain: Domain, model: Model, metrics: Metrics, *, emit_features: bool = True):
        self.domain = domain
        self.model = model
        self.metrics = metrics
        self.emit_features = emit_features
        self.schema = domain.schema
        self._dl = {r: metrics.events_dead_lettered.labels(r) for r in _reasons()}
        self._stage = {s: metrics.stage_latency.labels(s)
                       for s in ("validate", "features", "score", "serialize")}

    def swap_model(self, model: Model) -> None:
        """Atomic between batches: a batch is scored by exactly one model version."""
        self.model = model

    def process(self, batches: Mapping[int, Sequence[Record]], stores: Mapping[int, EntityStore],
                now: float | None = None) -> BatchOutput:
        now = time.time() if now is None else now
        model = self.model
        out = BatchOutput(partitions={})
        entity_field, id_field = self.schema.entity_field, self.schema.id_field
        t0 = time.perf_counter()
        staged = []
        for partition, records in batches.items():
            part = out.partitions.setdefault(partition, PartitionOutput())
            if records:
                part.last_offset = records[-1].offset
            parsed = self.schema.parse_batch([r.value or b"" for r in records])
            for i, exc in parsed.errors.items():
                part.dead_letters.append(dead_letter(records[i], exc.reason, str(exc)))
                self._dl[exc.reason].inc()
            out.dead_lettered += len(parsed.errors)
            if len(parsed.valid):
                staged.append((partition, parsed.valid, parsed.columns, records))
        t1 = time.perf_counter()
        self._stage["validate"].observe(t1 - t0)

        blocks, per_part = [], []
        for partition, valid, cols, records in staged:
            store = stores[partition]
            keys = cols[entity_field].tolist()
            rows = store.rows_for(keys)
            X = self.domain.features.compute(cols, rows, store.matrix)
            store.touch(rows, now)
            blocks.append(X)
            per_part.append((partition, valid, cols, records, X, keys, rows))
        t2 = time.perf_counter()
        self._stage["features"].observe(t2 - t1)
        if not blocks:
            return out
        scores = model.predict(np.concatenate(blocks) if len(blocks) > 1 else blocks[0])
        self.metrics.observe_scores(model.name, scores)
        t3 = time.perf_counter()
        self._stage["score"].observe(t3 - t2)

        at = 0
        scored_ms = int(now * 1000)
        name, version = model.name, model.version
        for partition, valid, cols, records, X, keys, rows in per_part:
            part = out.partitions[partition]
            n = len(valid)
            s = scores[at : at + n].tolist()
            at += n
            ingest = [records[i].timestamp for i in valid.tolist()]
            ids = cols[id_field].tolist()
            part.prediction_keys = [k.encode() for k in keys]
            part.prediction_values = [
                encode(Prediction(event_id=ids[i], entity_id=keys[i], score=s[i], model=name,
                                  model_version=version, ingest_ts_ms=ingest[i],
                                  scored_ts_ms=scored_ms))
                for i in range(n)
            ]
            part.touched = dict(zip(keys, rows.tolist()))
            if self.emit_features:
                monitored = self.domain.monitored_columns(cols, X)
                part.features = encode(FeatureBatch.from_arrays(
                    partition=partition, model=name, model_version=version, event_ids=ids,
                    ingest_ts_ms=np.asarray(ingest), event_ts=cols[self.domain.features.time_field],
                    scores=scores[at - n : at], columns=monitored,
                    inputs=X))
            self.metrics.end_to_end_latency.observe(max(0.0, now - min(ingest) / 1000.0))
            out.valid += n
        self._stage["serialize"].observe(time.perf_counter() - t3)
        self.metrics.events_valid.inc(out.valid)
        self.metrics.predictions.labels(name, version).inc(out.valid)
        return out


def _reasons() -> tuple[str, ...]:
    from stream.schema import REASONS

    return REASONS
