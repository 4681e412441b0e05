"""Labelled examples: a scored event's model inputs, exactly as scored, joined with its label.

The scorer's feature batch carries the input rows (:class:`stream.messages.ModelInputs`);
the monitor's label join tags each prediction with a :class:`ScoredRows` reference and, when the
label comes, writes one labelled example per event to the labelled-examples topic, which the
trainer reads. The version in the example is the one that scored the event, so performance is
credited to it.

Examples
--------
>>> rows = ScoredRows("fraud", "3", ["e1"], np.array([[1.0, 0.0]], np.float32), np.array([60.0]),
...                   {"channel": ["web"]})
>>> ex = labelled_example((rows, 0), 0.25, 1.0, labelled_at=99.0)
>>> ex.model_version, ex.inputs, ex.categories, ex.label
('3', [1.0, 0.0], {'channel': 'web'}, 1.0)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from stream.messages import LabelledExample, ModelInputs


@dataclass(frozen=True)
class ScoredRows(Sequence[tuple["ScoredRows", int]]):
    """The rows of one feature batch, shared by the pending predictions that point into it: as a
    sequence, the tag of row ``i`` is ``(rows, i)``, made only for a prediction that joins."""

    model: str
    version: str
    event_ids: list[str]
    inputs: np.ndarray | ModelInputs  # decoded (:attr:`X`) when a label first joins a row: most never do
    event_ts: np.ndarray
    categories: dict[str, list[Any]]

    @cached_property
    def X(self) -> np.ndarray:
        """The model input rows (``ValueError`` if the batch's base64 is broken)."""
        return self.inputs if isinstance(self.inputs, np.ndarray) else self.inputs.to_array()

    def __len__(self) -> int:
        return len(self.event_ids)

    def __getitem__(self, i: int) -> tuple[ScoredRows, int]:  # type: ignore[override]
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        return self, i % len(self)


def scored_rows(model: str, version: str, kinds: dict[str, str], cols: dict[str, Any], event_ids: Any,
                ts: np.ndarray, inputs: np.ndarray | ModelInputs | None) -> ScoredRows | None:
    """Tags pointing each prediction of a feature batch at its model inputs, when it carries them."""
    if inputs is None:
        return None
    # the columns and ids are only read (not copied: a copy touches every string again)
    cats = {k: v for k, v in cols.items() if kinds.get(k) == "categorical"}
    return ScoredRows(model, version, event_ids if type(event_ids) is list else list(event_ids), inputs, ts, cats)


def labelled_example(tag: tuple[ScoredRows, int], score: float, label: float,
                     labelled_at: float) -> LabelledExample:
    rows, i = tag
    return LabelledExample(
        event_id=rows.event_ids[i], event_ts=float(rows.event_ts[i]), model=rows.model,
        model_version=rows.version,
        inputs=rows.X[i].astype(np.float64).tolist(),  # float32 -> float64 is exact
        categories={k: None if v[i] is None else str(v[i]) for k, v in rows.categories.items()},
        score=float(score), label=float(label), labelled_at=labelled_at)
