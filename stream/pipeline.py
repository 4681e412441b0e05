"""The scoring path for one micro-batch, as a pure function of records in, messages out.

validate -> features (per-entity state) -> one ONNX call -> predictions, dead letters,
changelog records and one columnar feature batch per partition for the monitor. No Kafka
here: :mod:`stream.worker` feeds it consumer records and sends what it returns.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import orjson

from stream.domain import Domain
from stream.errors import ValidationError
from stream.metrics import Metrics
from stream.scoring import Model
from stream.state import EntityStore, encode_state

Headers = list[tuple[str, bytes]]


class Record(Protocol):
    """The fields of a consumer record we use (aiokafka's ConsumerRecord has them)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: int
    headers: Sequence[tuple[str, bytes]]


@dataclass(frozen=True)
class Message:
    key: bytes | None
    value: bytes
    headers: Headers | None = None
    timestamp_ms: int | None = None


@dataclass
class PartitionOutput:
    predictions: list[Message] = field(default_factory=list)
    dead_letters: list[Message] = field(default_factory=list)
    changelog: list[Message] = field(default_factory=list)
    features: Message | None = None
    last_offset: int = -1


@dataclass
class BatchOutput:
    partitions: dict[int, PartitionOutput]
    valid: int = 0
    dead_lettered: int = 0
    max_event_ts_ms: int = 0

    @property
    def predictions(self) -> int:
        return self.valid


def dead_letter(record: Record, reason: str, message: str) -> Message:
    """The original bytes, with headers saying why and where from."""
    headers = [
        ("mlstream.error.reason", reason.encode()),
        ("mlstream.error.message", message[:1_000].encode(errors="replace")),
        ("mlstream.source.topic", record.topic.encode()),
        ("mlstream.source.partition", str(record.partition).encode()),
        ("mlstream.source.offset", str(record.offset).encode()),
    ]
    return Message(record.key, record.value or b"", headers + list(record.headers or ()),
                   record.timestamp)


def encode_feature_batch(partition: int, model: Model, ids: list[str], ingest_ms: np.ndarray,
                         monitored: Mapping[str, Any], scores: np.ndarray) -> bytes:
    """The monitor's input: one JSON object of columns per partition and batch.

    Schema: ``schemas/feature-batch.schema.json``. Numeric columns use null for missing.
    """
    columns = {k: (np.where(np.isnan(v), None, v).tolist() if isinstance(v, np.ndarray)
                   and v.dtype.kind == "f" else list(v)) for k, v in monitored.items()}
    return orjson.dumps({
        "partition": partition, "model": model.name, "model_version": model.version,
        "event_ids": ids, "ingest_ts_ms": ingest_ms.tolist(), "scores": scores.tolist(),
        "columns": columns,
    })


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
        t0 = time.perf_counter()
        parsed: dict[int, tuple[list[dict[str, Any]], list[Record]]] = {}
        for partition, records in batches.items():
            part = out.partitions.setdefault(partition, PartitionOutput())
            events, kept = [], []
            parse = self.schema.parse
            for rec in records:
                try:
                    events.append(parse(rec.value or b""))
                    kept.append(rec)
                except ValidationError as exc:
                    part.dead_letters.append(dead_letter(rec, exc.reason, str(exc)))
                    self._dl[exc.reason].inc()
            if records:
                part.last_offset = records[-1].offset
            out.dead_lettered += len(records) - len(kept)
            parsed[partition] = (events, kept)
        t1 = time.perf_counter()
        self._stage["validate"].observe(t1 - t0)

        entity_field, id_field = self.schema.entity_field, self.schema.id_field
        blocks, per_part = [], []
        for partition, (events, kept) in parsed.items():
            if not events:
                continue
            store = stores[partition]
            cols = self.domain.columns(events)
            keys = cols[entity_field].tolist()
            rows = store.rows_for(keys)
            X = self.domain.features.compute(cols, rows, store.matrix)
            store.touch(rows, now)
            blocks.append(X)
            per_part.append((partition, events, kept, cols, X, keys, rows))
        t2 = time.perf_counter()
        self._stage["features"].observe(t2 - t1)
        if not blocks:
            return out
        scores = model.predict(np.concatenate(blocks) if len(blocks) > 1 else blocks[0])
        t3 = time.perf_counter()
        self._stage["score"].observe(t3 - t2)

        at = 0
        scored_ms = int(now * 1000)
        name, version = model.name, model.version
        for partition, events, kept, cols, X, keys, rows in per_part:
            part = out.partitions[partition]
            n = len(events)
            s = scores[at : at + n]
            at += n
            ingest = np.fromiter((r.timestamp for r in kept), dtype=np.int64, count=n)
            ids = [e[id_field] for e in events]
            for i in range(n):
                part.predictions.append(Message(keys[i].encode(), orjson.dumps({
                    "event_id": ids[i], "entity_id": keys[i], "score": float(s[i]),
                    "model": name, "model_version": version,
                    "ingest_ts_ms": int(ingest[i]), "scored_ts_ms": scored_ms,
                })))
            # last state per touched entity: the changelog only needs the latest value
            store = stores[partition]
            for key, row in dict(zip(keys, rows.tolist())).items():
                part.changelog.append(Message(key.encode(), encode_state(store.matrix[row])))
            if self.emit_features:
                monitored = self.domain.monitored_columns(cols, X)
                part.features = Message(None, encode_feature_batch(partition, model, ids, ingest,
                                                                   monitored, s))
            out.max_event_ts_ms = max(out.max_event_ts_ms, int(ingest.max()))
            self.metrics.end_to_end_latency.observe(max(0.0, now - float(ingest.min()) / 1000.0))
            out.valid += n
        self._stage["serialize"].observe(time.perf_counter() - t3)
        self.metrics.events_valid.inc(out.valid)
        self.metrics.predictions.labels(name, version).inc(out.valid)
        return out


def _reasons() -> tuple[str, ...]:
    from stream.schema import REASONS

    return REASONS
