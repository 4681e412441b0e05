"""Labelled examples: a scored event's model inputs, exactly as scored, joined with its label.

The scorer's feature batch carries the input rows (:func:`stream.scoring.pipeline.encode_inputs`);
the monitor's label join tags each prediction with a :class:`ScoredRows` reference and, when the
label comes, writes one labelled example per event to the labelled-examples topic, which the
trainer reads. The version in the example is the one that scored the event, so performance is
credited to it.

Examples
--------
>>> rows = ScoredRows("fraud", "3", ["e1"], np.array([[1.0, 0.0]], np.float32), np.array([60.0]),
...                   {"channel": ["web"]})
>>> rec = decode_example(encode_example((rows, 0), 0.25, 1.0, labelled_at=99.0))
>>> rec["model_version"], rec["inputs"], rec["categories"], rec["label"]
('3', [1.0, 0.0], {'channel': 'web'}, 1.0)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class ScoredRows:
    """The rows of one feature batch, shared by the pending predictions that point into it."""

    model: str
    version: str
    event_ids: list[str]
    X: np.ndarray
    event_ts: np.ndarray
    categories: dict[str, list[Any]]


def encode_example(tag: tuple[ScoredRows, int], score: float, label: float, labelled_at: float) -> bytes:
    rows, i = tag
    return orjson.dumps({
        "schema_version": SCHEMA_VERSION, "event_id": rows.event_ids[i], "event_ts": float(rows.event_ts[i]),
        "model": rows.model, "model_version": rows.version,
        "inputs": rows.X[i].astype(np.float64).tolist(),  # float32 -> float64 is exact
        "categories": {k: v[i] for k, v in rows.categories.items()},
        "score": float(score), "label": float(label), "labelled_at": labelled_at,
    })


def decode_example(value: bytes) -> dict[str, Any]:
    rec = orjson.loads(value)
    if not isinstance(rec, dict) or not isinstance(rec.get("inputs"), list):
        raise ValueError("not a labelled example")
    for key in ("event_id", "event_ts", "model_version", "label", "score"):
        if key not in rec:
            raise KeyError(key)
    return rec
