"""The scoring path for one micro-batch, as a pure function of records in, messages out.

validate -> features (per-entity state) -> one ONNX call -> predictions, dead letters,
changelog records and one columnar feature batch per partition for the monitor. No Kafka
here: :mod:`stream.scoring.worker` feeds it consumer records and sends what it returns.
"""

from __future__ import annotations

import logging
import math
import time
from bisect import bisect_right
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import repeat

import numpy as np

from stream.domain import Domain
from stream.error_policy import ErrorPolicy, index_runs
from stream.errors import ValidationError
from stream.messages import Prediction, encode_struct
from stream.metrics import Metrics
from stream.schema import DEAD_LETTER_REASONS
from stream.scoring.batch_output import BatchOutput, PartitionOutput, Record, dead_letter
from stream.scoring.canary import Canary
from stream.scoring.feature_rows import FeatureRows
from stream.scoring.model import Model, servable
from stream.scoring.state import EntityStore

log = logging.getLogger(__name__)


@dataclass
class _Frame:
    """A micro-batch's valid events while it is scored: every partition's in one set of columns.

    Rows run partition by partition (``spans``), each partition's in offset order. The entity
    state rows the batch touches are gathered from the partitions' stores into ``state`` (one
    row per entity) and put back after scoring, so features take one pass whatever the number
    of partitions: at a few events per partition, a pass per partition cost ~470 µs each.
    """

    records: list[Record]  # the batch's records, partition by partition
    valid: np.ndarray  # positions in ``records``
    cols: dict[str, np.ndarray]
    keys: list[str]
    spans: list[tuple[int, int, int]]  # (partition, first row, row after its last)
    store_rows: np.ndarray  # each row's entity row in its partition's store
    rows: np.ndarray  # each row's entity row in ``state``
    state: np.ndarray
    snapshot: np.ndarray  # ``state`` before this batch
    gathered: list[tuple[int, np.ndarray, int]]  # (partition, store rows, where they start in state)
    failed: dict[int, Exception] = field(default_factory=dict)  # row -> why
    keep: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    moved: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))  # state moved
    X: np.ndarray | None = None
    codes: dict[str, np.ndarray] = field(default_factory=dict)  # rows as X's: see FeatureSet.compute

    def owner(self, row: int) -> int:
        """The partition of a row."""
        return next(p for p, _, stop in self.spans if row < stop)


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
                 canary: Canary | None = None, source_topic: str = "events"):
        self.domain = domain
        self.source_topic = source_topic  # the records' topic, named in their dead letters
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
        t0 = time.perf_counter()
        records: list[Record] = []
        ends: list[tuple[int, int]] = []  # (partition, end of its records)
        for partition, recs in batches.items():
            part = out.partitions.setdefault(partition, PartitionOutput())
            if recs:
                part.last_offset = recs[-1].offset
                records.extend(recs)
                ends.append((partition, len(records)))
        frame = self._frame(records, ends, stores, out, now)
        t1 = time.perf_counter()
        self._stage["validate"].observe(t1 - t0)
        if frame is None:
            return out

        scores = self._features_and_scores(frame, model)
        for p, rows, at in frame.gathered:  # the batch's entity state back into its stores
            stores[p].matrix[rows] = frame.state[at : at + len(rows)]
        t3 = time.perf_counter()
        self._stage["score"].observe(t3 - t1)
        self._outputs(frame, scores, model, stores, out, now)
        self._stage["serialize"].observe(time.perf_counter() - t3)
        return out

    def _frame(self, records: list[Record], ends: list[tuple[int, int]], stores: Mapping[int, EntityStore],
               out: BatchOutput, now: float) -> _Frame | None:
        """Parse and validate every record at once (invalid ones dead-lettered), look up the valid
        events' entities in their partitions' stores and gather their state rows."""
        valid, cols, errors, failed = self._validate([r.value or b"" for r in records])
        valid, cols = self._time_bounds(valid, cols, errors, now)
        cuts = [end for _, end in ends]
        for i in sorted({*errors, *failed}):  # in offset order
            owner = ends[bisect_right(cuts, i)][0]
            if i in failed:
                err = failed[i]
                self._dead_letter(owner, out, records[i], "processing_error", self.policy.describe(err),
                                  type(err).__name__)
            else:
                message = "tombstone (null value)" if records[i].value is None else str(errors[i])
                self._dead_letter(owner, out, records[i], errors[i].reason, message)
        if not len(valid):
            return None
        keys = cols[self.schema.entity_field].tolist()
        # valid rows before each partition's end: valid positions are in record order
        stops = np.searchsorted(valid, [end for _, end in ends]).tolist()
        spans, gathered, blocks, store_rows, rows = [], [], [], [], []
        start = at = 0
        for (partition, _), stop in zip(ends, stops):
            if stop > start:
                store = stores[partition]
                mine = store.rows_for(keys[start:stop])
                # one state row per entity: its events of the batch apply in order to that row
                uniq, inverse = _distinct(mine)
                blocks.append(store.matrix[uniq])  # fancy indexing copies
                gathered.append((partition, uniq, at))
                store_rows.append(mine)
                rows.append(inverse.reshape(-1) + at)
                spans.append((partition, start, stop))
                at += len(uniq)
            start = stop
        state = np.concatenate(blocks)
        return _Frame(records, valid, cols, keys, spans, np.concatenate(store_rows), np.concatenate(rows),
                      state, state.copy(), gathered)

    def _outputs(self, frame: _Frame, scores: np.ndarray, model: Model, stores: Mapping[int, EntityStore],
                 out: BatchOutput, now: float) -> None:
        """Dead letters, predictions, the changelog's entities and the monitor's feature batch,
        per partition, from the frame's scores (one per row of ``frame.keep``)."""
        name, version = model.name, model.version
        records, valid, keep = frame.records, frame.valid, frame.keep
        for i, err in frame.failed.items():
            self._dead_letter(frame.owner(i), out, records[int(valid[i])], "processing_error",
                              self.policy.describe(err), type(err).__name__)
        ok = servable(model.card.task, scores)
        for j in np.flatnonzero(~ok).tolist():
            row = int(keep[j])
            self._dead_letter(frame.owner(row), out, records[int(valid[row])], "invalid_score",
                              f"model {name} version {version} scored {scores[j]!r}")
        out.invalid_scores += int((~ok).sum())
        out.scored += len(keep)
        everything = bool(ok.all())
        good = keep if everything else keep[ok]
        s = scores if everything else scores[ok]
        X = frame.X if frame.X is not None else np.empty((0, len(self.domain.features.columns)), np.float32)
        codes = frame.codes
        if not everything:
            X = X[ok]
            codes = {k: v[ok] for k, v in codes.items()}
        keys = [frame.keys[i] for i in good.tolist()]
        cols = frame.cols if len(good) == len(valid) else {k: v[good] for k, v in frame.cols.items()}
        ingest = [records[i].timestamp for i in valid[good].tolist()]
        ids = cols[self.schema.id_field].tolist()
        sl: list[float] = s.tolist()
        versions: list[str] | None = None
        canary_n = 0
        canary = self.canary.serve(keys, X, s, model) if self.canary is not None and len(good) else None
        if canary is not None:  # the champion's scores still go to the monitor (feature batch)
            assert self.canary is not None and self.canary.model is not None
            served, by_challenger = canary
            challenger = self.canary.model.version
            sl, versions = served.tolist(), [challenger if m else version for m in by_challenger.tolist()]
            canary_n = int(by_challenger.sum())
        monitored = self.domain.monitored_columns(cols, X, codes) if self.emit_features and len(good) else {}
        event_ts = cols[self.domain.features.time_field]
        scored_ms = int(now * 1000)
        moved, store_rows = frame.moved, frame.store_rows
        bounds = [b for _, a, z in frame.spans for b in (a, z)]
        kept_at, moved_at, good_at = (np.searchsorted(x, bounds).tolist() for x in (keep, moved, good))
        for k, (p, _, _) in enumerate(frame.spans):
            part = out.partitions[p]
            # state moved for every row whose features were computed (invalid scores included:
            # the event happened, the model is what is wrong)
            stores[p].touch(store_rows[moved[moved_at[2 * k] : moved_at[2 * k + 1]]], now)
            mine = keep[kept_at[2 * k] : kept_at[2 * k + 1]].tolist()
            part.touched = dict(zip([frame.keys[i] for i in mine], store_rows[mine].tolist()))
            a, z = good_at[2 * k], good_at[2 * k + 1]
            if a == z:
                continue
            part.prediction_keys = list(map(str.encode, keys[a:z]))
            vs: Iterable[str] = repeat(version) if versions is None else versions[a:z]
            enc = encode_struct  # a bound C method: no dispatch per prediction
            part.prediction_values = [
                enc(Prediction(event_id=e, entity_id=k, score=x, model=name, model_version=v, ingest_ts_ms=t,
                               scored_ts_ms=scored_ms))
                for e, k, x, v, t in zip(ids[a:z], keys[a:z], sl[a:z], vs, ingest[a:z])
            ]
            part.event_ids, part.scores, part.inputs, part.ingest_ms = ids[a:z], s[a:z], X[a:z], ingest[a:z]
            if self.emit_features:
                part.features = FeatureRows(
                    model=name, model_version=version, event_ids=part.event_ids, ingest_ts_ms=part.ingest_ms,
                    event_ts=event_ts[a:z], scores=part.scores, columns={c: v[a:z] for c, v in monitored.items()},
                    inputs=part.inputs, entity_ids=keys[a:z])
            out.valid += z - a
        if len(good):  # the batch's oldest event (once per batch: a histogram observation costs ~3 µs)
            self.metrics.end_to_end_latency.observe(max(0.0, now - min(ingest) / 1000.0))
            self.metrics.observe_scores(name, s)
        self.metrics.events_valid.inc(out.valid)
        self.metrics.predictions.labels(name, version).inc(out.valid - canary_n)
        if canary_n:
            assert self.canary is not None and self.canary.model is not None
            self.metrics.predictions.labels(name, self.canary.model.version).inc(canary_n)

    def _dead_letter(self, partition: int, out: BatchOutput, record: Record, reason: str,
                     message: str, error_class: str | None = None) -> None:
        out.partitions[partition].dead_letters.append(
            dead_letter(record, self.source_topic, partition, reason, message, error_class))
        self._dl[reason].inc()
        out.dead_lettered += 1

    def _validate(self, raws: list[bytes]) -> tuple[np.ndarray, dict[str, np.ndarray],
                                                    dict[int, ValidationError], dict[int, Exception]]:
        """The schema's verdicts on a batch: valid positions, their columns, invalid events' reasons,
        and the events whose validation raised (a bug in a schema, not a verdict: found by the
        error policy's bisection, so one such event is dead-lettered, not a crash loop)."""
        try:
            parsed = self.schema.parse_batch(raws)
            return parsed.valid, parsed.columns, dict(parsed.errors), {}
        except Exception as exc:  # see ErrorPolicy.split; said even if every part passes (a check
            # failing on large batches only would otherwise cost a bisection per batch, unseen)
            log.warning("validate: a batch raised (%s); validated in parts", self.policy.describe(exc))
        runs, failed = self.policy.split(np.arange(len(raws)), lambda part: self.schema.parse_batch(
            [raws[i] for i in part.tolist()]), stage="validate")
        errors = {int(part[i]): e for part, parsed in runs for i, e in parsed.errors.items()}
        valid = np.concatenate([part[parsed.valid] for part, parsed in runs] or [np.empty(0, np.int64)])
        kept = [parsed.columns for _, parsed in runs if len(parsed.valid)]  # (empty columns may differ in dtype)
        cols = {k: np.concatenate([c[k] for c in kept]) for k in kept[0]} if kept else {}
        return valid, cols, errors, failed

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

    def _features_and_scores(self, frame: _Frame, model: Model) -> np.ndarray:
        """Features of the whole frame, then one ONNX call; rows that raise are set aside.

        If the model raises, the rows it fails on are found, the frame's state is put back and
        the features recomputed without those rows, so a failed event never moves state.
        """
        t0 = time.perf_counter()
        self._features(frame)
        self._stage["features"].observe(time.perf_counter() - t0)
        for round_ in range(self.MAX_RESCORE_ROUNDS):
            X = frame.X
            if X is None or not len(X):
                return np.empty(0)

            def predict(idx: np.ndarray, X: np.ndarray = X) -> np.ndarray:
                return model.predict(X[idx])

            ok, failed = self.policy.split(np.arange(len(X)), predict, stage="score")
            scores = np.full(len(X), np.nan)
            for idx, sc in ok:
                scores[idx] = sc
            if not failed:
                return scores
            for j, exc in failed.items():
                frame.failed[int(frame.keep[j])] = exc
            if round_ == self.MAX_RESCORE_ROUNDS - 1:  # stop recomputing: drop the failed rows, their state stays moved
                kept = np.ones(len(X), dtype=bool)
                kept[list(failed)] = False
                frame.keep, frame.X = frame.keep[kept], X[kept]
                return scores[kept]
            frame.state[:] = frame.snapshot
            self._features(frame)
        raise AssertionError("unreachable")

    def _features(self, frame: _Frame) -> None:
        """Features of the frame's rows except ``frame.failed``, through the policy."""
        n = len(frame.valid)
        todo = np.setdiff1d(np.arange(n), np.fromiter(frame.failed, np.int64, len(frame.failed))) \
            if frame.failed else np.arange(n)
        compute, state = self.domain.features.compute, frame.state

        def attempt(idx: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
            whole = len(idx) == n
            cols = frame.cols if whole else {k: v[idx] for k, v in frame.cols.items()}
            rows = frame.rows if whole else frame.rows[idx]
            before = state[rows]  # fancy indexing copies
            codes: dict[str, np.ndarray] = {}  # the categories' codes, for the feature batch
            try:
                return compute(cols, rows, state, codes), codes
            except BaseException:
                state[rows] = before  # leave no trace: the rows are retried or set aside
                raise

        ok, failed = self.policy.split(todo, attempt, stage="features")
        frame.failed.update(failed)
        frame.keep = frame.moved = index_runs(ok)
        if len(ok) == 1:
            frame.X, frame.codes = ok[0][1]
        elif ok:
            frame.X = np.concatenate([x for _, (x, _) in ok])
            frame.codes = {k: np.concatenate([c[k] for _, (_, c) in ok]) for k in ok[0][1][1]}
        else:
            frame.X, frame.codes = None, {}


def _distinct(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``rows``' distinct values and each row's position among them (``np.unique``'s
    ``return_inverse``, in order of first appearance: a low-rate batch's few rows cost a tenth
    of ``np.unique``'s time in a dict).

    >>> [a.tolist() for a in _distinct(np.array([7, 3, 7, 5]))]
    [[7, 3, 5], [0, 1, 0, 2]]
    """
    if len(rows) > 64:
        return np.unique(rows, return_inverse=True)
    first: dict[int, int] = {}
    inverse = [first.setdefault(r, len(first)) for r in rows.tolist()]
    return np.fromiter(first, np.int64, len(first)), np.asarray(inverse, dtype=np.int64)
