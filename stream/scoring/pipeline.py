"""The scoring path for one micro-batch, as a pure function of records in, messages out.

validate -> features (per-entity state) -> one ONNX call -> predictions, dead letters,
changelog records and one columnar feature batch per partition for the monitor. No Kafka
here: :mod:`stream.scoring.worker` feeds it consumer records and sends what it returns.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from typing import Protocol

import numpy as np

from stream.domain import Domain
from stream.error_policy import ErrorPolicy, index_runs
from stream.errors import ValidationError
from stream.messages import DeadLetter, FeatureBatch, Message, Prediction, encode
from stream.metrics import Metrics
from stream.schema import DEAD_LETTER_REASONS
from stream.scoring.canary import Canary
from stream.scoring.model import Model, servable
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
    # the predictions' rows, for versions scored beside the champion (stream.scoring.shadow):
    # event ids, champion scores, model inputs (feature definition order), Kafka timestamps
    event_ids: list[str] = field(default_factory=list)
    scores: np.ndarray | None = None
    inputs: np.ndarray | None = None
    ingest_ms: list[int] = field(default_factory=list)


@dataclass
class BatchOutput:
    partitions: dict[int, PartitionOutput]
    valid: int = 0
    dead_lettered: int = 0
    scored: int = 0  # rows the model scored (valid or not)
    invalid_scores: int = 0
    model: Model | None = None  # the version that scored the batch


def dead_letter(record: Record, reason: str, message: str, error_class: str | None = None) -> Message:
    """The original bytes (a tombstone stays one), with headers saying why and where from
    (mlstream's replace a producer's of the same name: :class:`stream.messages.DeadLetter`)."""
    return DeadLetter(key=record.key, value=record.value, reason=reason, message=message,
                      source_topic=record.topic, source_partition=record.partition,
                      source_offset=record.offset, headers=list(record.headers or ()),
                      timestamp_ms=record.timestamp, error_class=error_class).to_message()


@dataclass
class _Part:
    """One partition's valid events while a batch is being scored."""

    partition: int
    records: Sequence[Record]
    valid: np.ndarray  # positions in ``records``
    cols: dict[str, np.ndarray]
    keys: list[str]
    rows: np.ndarray  # entity state rows, parallel to ``valid``
    snapshot: np.ndarray  # those rows' state before this batch
    failed: dict[int, Exception] = field(default_factory=dict)  # position in valid -> why
    keep: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    X: np.ndarray | None = None


class BatchScorer:
    """Turns one micro-batch of records (grouped by partition) into output messages.

    Records whose features or score raise are found by the injected
    :class:`stream.error_policy.ErrorPolicy` and dead-lettered as ``processing_error``
    without moving entity state; non-finite or out-of-range scores are dead-lettered as
    ``invalid_score``; event times beyond ``max_future_s`` as ``out_of_range``.
    """

    MAX_RESCORE_ROUNDS = 3  # rounds of "drop the rows the model fails on, recompute features"

    def __init__(self, domain: Domain, model: Model, metrics: Metrics, *, emit_features: bool = True,
                 policy: ErrorPolicy | None = None, max_future_s: float = math.inf,
                 canary: Canary | None = None):
        self.domain = domain
        self.canary = canary  # a share of entities served by the challenger in shadow
        self.model = model
        self.metrics = metrics
        self.emit_features = emit_features
        self.policy = policy or ErrorPolicy(metrics)
        self.max_future_s = max_future_s
        self._now = 0.0
        self.schema = domain.schema
        self._dl = {r: metrics.events_dead_lettered.labels(r) for r in DEAD_LETTER_REASONS}
        self._stage = {s: metrics.stage_latency.labels(s)
                       for s in ("validate", "features", "score", "serialize")}

    def swap_model(self, model: Model) -> None:
        """Atomic between batches: a batch is scored by exactly one model version."""
        self.model = model

    def process(self, batches: Mapping[int, Sequence[Record]], stores: Mapping[int, EntityStore],
                now: float | None = None) -> BatchOutput:
        now = time.time() if now is None else now
        self._now = now
        model = self.model
        out = BatchOutput(partitions={}, model=model)
        entity_field, id_field = self.schema.entity_field, self.schema.id_field
        t0 = time.perf_counter()
        parts: list[_Part] = []
        for partition, records in batches.items():
            part = out.partitions.setdefault(partition, PartitionOutput())
            if records:
                part.last_offset = records[-1].offset
            parsed = self.schema.parse_batch([r.value or b"" for r in records])
            errors = dict(parsed.errors)
            valid, cols = self._time_bounds(parsed.valid, parsed.columns, errors, now)
            for i in sorted(errors):
                exc = errors[i]
                message = "tombstone (null value)" if records[i].value is None else str(exc)
                self._dead_letter(part, out, records[i], exc.reason, message)
            if len(valid):
                store = stores[partition]
                keys = cols[entity_field].tolist()
                rows = store.rows_for(keys)
                parts.append(_Part(partition, records, valid, cols, keys, rows, store.matrix[rows].copy()))
        t1 = time.perf_counter()
        self._stage["validate"].observe(t1 - t0)
        if not parts:
            return out

        scores = self._features_and_scores(parts, stores, model)
        t3 = time.perf_counter()
        self._stage["score"].observe(t3 - t1)

        scored_ms = int(now * 1000)
        name, version = model.name, model.version
        at = canary_n = 0
        for p in parts:
            part = out.partitions[p.partition]
            for i, err in p.failed.items():
                self._dead_letter(part, out, p.records[int(p.valid[i])], "processing_error",
                                  self.policy.describe(err), type(err).__name__)
            n_kept = len(p.keep)
            s_all = scores[at : at + n_kept]
            at += n_kept
            keys_kept = [p.keys[i] for i in p.keep.tolist()]
            # state moved for every row whose features were computed (invalid scores included:
            # the event happened, the model is what is wrong)
            part.touched = dict(zip(keys_kept, p.rows[p.keep].tolist()))
            ok = servable(model.card.task, s_all)
            for j in np.flatnonzero(~ok).tolist():
                self._dead_letter(part, out, p.records[int(p.valid[p.keep[j]])], "invalid_score",
                                  f"model {name} version {version} scored {s_all[j]!r}")
            out.invalid_scores += int((~ok).sum())
            out.scored += n_kept
            if not ok.any():
                continue
            good = p.keep[ok] if not ok.all() else p.keep
            s = s_all[ok] if not ok.all() else s_all
            sl = s.tolist()
            n = len(good)
            cols = p.cols if n == len(p.valid) else {k: v[good] for k, v in p.cols.items()}
            rec_index = p.valid[good].tolist()
            ingest = [p.records[i].timestamp for i in rec_index]
            ids = cols[id_field].tolist()
            keys = [p.keys[i] for i in good.tolist()]
            part.prediction_keys = [k.encode() for k in keys]
            assert p.X is not None
            X = p.X if n == n_kept else p.X[ok]
            canary = self.canary.serve(keys, X, s, model) if self.canary is not None else None
            versions: Iterable[str] = repeat(version)
            if canary is not None:  # the champion's scores still go to the monitor (feature batch)
                assert self.canary is not None and self.canary.model is not None
                served, by_challenger = canary
                challenger = self.canary.model.version
                sl, versions = served.tolist(), [challenger if m else version for m in by_challenger.tolist()]
                canary_n += int(by_challenger.sum())
            part.prediction_values = [
                encode(Prediction(event_id=ids[i], entity_id=keys[i], score=sl[i], model=name,
                                  model_version=v, ingest_ts_ms=ingest[i], scored_ts_ms=scored_ms))
                for i, v in zip(range(n), versions)
            ]
            part.event_ids, part.scores, part.inputs, part.ingest_ms = ids, s, X, ingest
            if self.emit_features:
                monitored = self.domain.monitored_columns(cols, X)
                part.features = encode(FeatureBatch.from_arrays(
                    partition=p.partition, model=name, model_version=version, event_ids=ids,
                    ingest_ts_ms=np.asarray(ingest), event_ts=cols[self.domain.features.time_field],
                    scores=s, columns=monitored, inputs=X))
            self.metrics.observe_scores(name, s)
            self.metrics.end_to_end_latency.observe(max(0.0, now - min(ingest) / 1000.0))
            out.valid += n
        self._stage["serialize"].observe(time.perf_counter() - t3)
        self.metrics.events_valid.inc(out.valid)
        self.metrics.predictions.labels(name, version).inc(out.valid - canary_n)
        if canary_n:
            assert self.canary is not None and self.canary.model is not None
            self.metrics.predictions.labels(name, self.canary.model.version).inc(canary_n)
        return out

    def _dead_letter(self, part: PartitionOutput, out: BatchOutput, record: Record, reason: str,
                     message: str, error_class: str | None = None) -> None:
        part.dead_letters.append(dead_letter(record, reason, message, error_class))
        self._dl[reason].inc()
        out.dead_lettered += 1

    def _time_bounds(self, valid: np.ndarray, cols: dict[str, np.ndarray],
                     errors: dict[int, ValidationError], now: float) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Move events timed beyond ``now + max_future_s`` to ``errors`` (out_of_range)."""
        if not len(valid) or math.isinf(self.max_future_s):
            return valid, cols
        ts = np.asarray(cols[self.domain.features.time_field], dtype=np.float64)
        limit = now + self.max_future_s
        late = ts > limit
        if not late.any():
            return valid, cols
        for i in np.flatnonzero(late).tolist():
            t = float(ts[i])
            hint = (" (milliseconds? event times are seconds since the epoch)"
                    if t / 1000.0 <= limit else "")
            errors[int(valid[i])] = ValidationError(
                "out_of_range", f"event time {t:.6g} is more than {self.max_future_s:g}s in the future{hint}")
        keep = ~late
        return valid[keep], {k: v[keep] for k, v in cols.items()}

    def _features_and_scores(self, parts: list[_Part], stores: Mapping[int, EntityStore],
                             model: Model) -> np.ndarray:
        """Features of every partition, then one ONNX call; rows that raise are set aside.

        If the model raises, the rows it fails on are found, the partitions' state is put back
        and their features recomputed without those rows, so a failed event never moves state.
        """
        t0 = time.perf_counter()
        for p in parts:
            self._features(p, stores[p.partition])
        self._stage["features"].observe(time.perf_counter() - t0)
        for round_ in range(self.MAX_RESCORE_ROUNDS):
            X = np.concatenate([p.X for p in parts if p.X is not None and len(p.X)]) \
                if any(p.X is not None and len(p.X) for p in parts) else np.empty((0, 0), np.float32)
            if not len(X):
                return np.empty(0)
            def predict(idx: np.ndarray, X: np.ndarray = X) -> np.ndarray:
                return model.predict(X[idx])

            ok, failed = self.policy.split(np.arange(len(X)), predict, stage="score")
            scores = np.full(len(X), np.nan)
            for idx, s in ok:
                scores[idx] = s
            if not failed:
                return scores
            last = round_ == self.MAX_RESCORE_ROUNDS - 1
            at = 0
            for p in parts:
                n = len(p.keep)
                mine = [i - at for i in failed if at <= i < at + n]
                for j in mine:
                    p.failed[int(p.keep[j])] = failed[at + j]
                at += n
                if not mine:
                    continue
                if last:  # stop recomputing: drop the failed rows, their state stays moved
                    keep = np.ones(n, dtype=bool)
                    keep[mine] = False
                    p.keep = p.keep[keep]
                    p.X = p.X[keep] if p.X is not None else None
                    continue
                store = stores[p.partition]
                store.matrix[p.rows] = p.snapshot
                self._features(p, store)
            if last:
                return np.delete(scores, list(failed))
        raise AssertionError("unreachable")

    def _features(self, p: _Part, store: EntityStore) -> None:
        """Features of the partition's valid rows except ``p.failed``, through the policy."""
        todo = np.setdiff1d(np.arange(len(p.valid)), np.fromiter(p.failed, np.int64, len(p.failed)))
        compute = self.domain.features.compute

        def attempt(idx: np.ndarray) -> np.ndarray:
            whole = len(idx) == len(p.valid)
            cols = p.cols if whole else {k: v[idx] for k, v in p.cols.items()}
            rows = p.rows if whole else p.rows[idx]
            before = store.matrix[rows]  # fancy indexing copies
            try:
                return compute(cols, rows, store.matrix)
            except BaseException:
                store.matrix[rows] = before  # leave no trace: the rows are retried or set aside
                raise

        ok, failed = self.policy.split(todo, attempt, stage="features")
        p.failed.update(failed)
        p.keep = index_runs(ok)
        p.X = np.concatenate([x for _, x in ok]) if len(ok) > 1 else (ok[0][1] if ok else None)
        if ok:
            store.touch(p.rows[p.keep], self._now)
