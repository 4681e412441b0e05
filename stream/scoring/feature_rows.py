"""The monitor's rows of a micro-batch, kept as arrays until the commit writes them.

A low-rate scorer runs many small micro-batches per commit interval; building and encoding a
:class:`~stream.messages.data.FeatureBatch` for each partition of each of them cost about a
sixth of a 10-event batch's CPU. The commit merges a partition's consecutive parts of one
model version instead (:func:`encode_batches`), so the monitor also decodes fewer, larger
batches. A merged batch holds at most ``max_rows`` rows (the largest micro-batch: the message
size stays what a single batch's was); a part already that large is written as it is.

Examples
--------
>>> import numpy as np
>>> from stream.messages import FeatureBatch, decode
>>> def part(ids, version="1"):
...     n = len(ids)
...     return FeatureRows(model="fraud", model_version=version, event_ids=ids, ingest_ts_ms=list(range(n)),
...                        event_ts=np.arange(n, dtype=float), scores=np.full(n, 0.5),
...                        columns={"amount": np.ones(n), "country": np.array(["DE"] * n, dtype=object)},
...                        inputs=np.zeros((n, 2), np.float32))
>>> raws = encode_batches(3, [part(["a", "b"]), part(["c"]), part(["d", "e"]), part(["f"], "2")], max_rows=3)
>>> for b in (decode(r, FeatureBatch) for r in raws):
...     print(b.partition, b.model_version, b.event_ids, b.columns["country"], b.inputs.shape)
3 1 ['a', 'b', 'c'] ['DE', 'DE', 'DE'] [3, 2]
3 1 ['d', 'e'] ['DE', 'DE'] [2, 2]
3 2 ['f'] ['DE'] [1, 2]
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import chain
from typing import Any

import numpy as np

from stream.messages import CategoryCodes, FeatureBatch, encode

__all__ = ["FeatureRows", "encode_batches"]


@dataclass
class FeatureRows:
    """One partition's monitored rows of one micro-batch (the fields of a FeatureBatch, as the
    scorer has them: numeric columns as float arrays, categorical ones as object arrays)."""

    model: str
    model_version: str
    event_ids: list[str]
    ingest_ts_ms: list[int]
    event_ts: np.ndarray
    scores: np.ndarray
    columns: dict[str, Any]
    inputs: np.ndarray | None
    entity_ids: list[str] | None = None

    def same_batch(self, other: FeatureRows) -> bool:
        """Can the two share one FeatureBatch (same model version, same columns)?"""
        return (self.model == other.model and self.model_version == other.model_version
                and (self.inputs is None) == (other.inputs is None) and self.columns.keys() == other.columns.keys()
                and (self.entity_ids is None) == (other.entity_ids is None))


def encode_batches(partition: int, parts: list[FeatureRows], max_rows: int) -> list[bytes]:
    """The FeatureBatch messages of one partition's parts, in order: consecutive parts of one
    model version merged up to ``max_rows`` rows."""
    out: list[bytes] = []
    group: list[FeatureRows] = []
    rows = 0
    for part in parts:
        n = len(part.event_ids)
        if group and (rows + n > max_rows or not part.same_batch(group[0])):
            out.append(_encode(partition, group))
            group, rows = [], 0
        group.append(part)
        rows += n
    if group:
        out.append(_encode(partition, group))
    return out


def _encode(partition: int, group: list[FeatureRows]) -> bytes:
    first = group[0]
    if len(group) == 1:
        merged = first
    else:
        merged = FeatureRows(
            model=first.model, model_version=first.model_version,
            event_ids=list(chain.from_iterable(g.event_ids for g in group)),
            ingest_ts_ms=list(chain.from_iterable(g.ingest_ts_ms for g in group)),
            event_ts=np.concatenate([g.event_ts for g in group]),
            scores=np.concatenate([g.scores for g in group]),
            columns={c: _concat([g.columns[c] for g in group]) for c in first.columns},
            inputs=None if first.inputs is None else np.concatenate([g.inputs for g in group]),
            entity_ids=None if first.entity_ids is None else list(chain.from_iterable(g.entity_ids or () for g in group)))
    return encode(FeatureBatch.from_arrays(
        partition=partition, model=merged.model, model_version=merged.model_version, event_ids=merged.event_ids,
        ingest_ts_ms=np.asarray(merged.ingest_ts_ms), event_ts=merged.event_ts, scores=merged.scores,
        columns=merged.columns, inputs=merged.inputs, entity_ids=merged.entity_ids))


def _concat(pieces: list[Any]) -> Any:
    """Arrays stay arrays (float columns are written by orjson as they are), coded categories
    coded; anything else a list."""
    if all(isinstance(p, np.ndarray) for p in pieces):
        return np.concatenate(pieces)
    if all(isinstance(p, CategoryCodes) for p in pieces):
        return CategoryCodes.concat(pieces)
    return list(chain.from_iterable(p.tolist() if isinstance(p, CategoryCodes) else p for p in pieces))
