"""Raw events (as on the events topic) to the rows a report reads: the domain's features, the
model's score and the label, computed with the code the scorer runs.

A recording of the events topic is what a user has at hand; ``mlstream report --events
events.jsonl --model-card <store>/<name>/<version>/card.json`` turns it into monitored rows here
(the ONNX file beside the card, checked against its sha256), then reports on them like on the
feature batches of a deployment. Events that fail the schema are counted and left out, as the
scorer dead-letters them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import orjson

from stream.domain import Domain
from stream.errors import ReplayError, ValidationError
from stream.messages import SCORE_COLUMN
from stream.registry import ModelStore


def looks_raw(first_row: dict[str, Any], domain: Domain) -> bool:
    """A row holding the schema's id, entity and time fields is a raw event, not a feature row."""
    s = domain.schema
    return all(f in first_row for f in (s.id_field, s.entity_field, s.time_field))


def first_row(path: str) -> dict[str, Any]:
    with open(path, "rb") as fh:
        for line in fh:
            if line.strip():
                try:
                    row = orjson.loads(line)
                except orjson.JSONDecodeError as exc:
                    raise ReplayError(f"{path}:1: invalid JSON: {exc}") from None
                return row if isinstance(row, dict) else {}
    return {}


def rows_from_events(path: str, card_path: str, domain: Domain, *,
                     warmup: int = 0) -> tuple[dict[str, Any], np.ndarray | None, int, list[Any]]:
    """Monitored columns with the score, labels (when the events carry the domain's label field),
    how many events failed the schema, and each row's entity (the pipeline's message key)."""
    from stream.training.register import _check_input, _session, score_batch

    card_file = Path(card_path)
    folder = card_file.parent
    card, blob = ModelStore(folder.parent.parent).load(folder.parent.name, folder.name)
    columns = domain.features.columns
    if sorted(card.features) != sorted(columns):
        raise ReplayError(f"{card_path}: the card's features are not domain {domain.name!r}'s "
                          "(set MLSTREAM_DOMAIN or --domain)")
    events, labels, invalid = [], [], 0
    with open(path, "rb") as fh:
        for line in fh:
            if not line.strip():
                continue
            try:
                event = orjson.loads(line)
                if not isinstance(event, dict):
                    raise ValidationError("not_object", "not an object")
                label = event.pop(domain.label_field, None)
                domain.schema.validate(event)
            except (orjson.JSONDecodeError, ValidationError):
                invalid += 1
                continue
            events.append(event)
            labels.append(np.nan if label is None else float(label))
    if len(events) <= warmup:
        raise ReplayError(f"{path}: {len(events)} valid events, not more than --warmup {warmup}")
    X = domain.offline_features(events)[warmup:]
    session = _session(blob, card_file)
    input_name = _check_input(session, len(columns), None, card_file)
    X_model = np.ascontiguousarray(X[:, [columns.index(c) for c in card.features]])
    monitored = domain.monitored_columns(domain.columns(events[warmup:]), X)
    monitored[SCORE_COLUMN] = score_batch(session, input_name, card.output, card.task, X_model, card_file)
    y = np.asarray(labels[warmup:])
    entities = [str(e[domain.schema.entity_field]) for e in events[warmup:]]
    return monitored, (None if np.isnan(y).all() else y), invalid, entities
