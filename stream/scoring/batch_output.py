"""What one micro-batch of the scoring path produces, partition by partition: predictions, dead
letters, the entities whose state moved (for the changelog) and the monitor's feature rows; and the
consumer-record fields it is made from."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from stream.messages import DeadLetter, Message
from stream.scoring.feature_rows import FeatureRows
from stream.scoring.model import Model

__all__ = ["BatchOutput", "PartitionOutput", "Record", "dead_letter"]


class Record(Protocol):
    """The fields of a consumer record we use (aiokafka's ConsumerRecord has them, and so have
    its decoder's own records: see :mod:`stream.kafka_records`)."""

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
    features: FeatureRows | None = None  # encoded at the commit (stream.scoring.feature_rows)
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


def dead_letter(record: Record, topic: str, partition: int, reason: str, message: str,
                error_class: str | None = None) -> Message:
    """The original bytes (a tombstone stays one), with headers saying why and where from
    (mlstream's replace a producer's of the same name: :class:`stream.messages.DeadLetter`)."""
    return DeadLetter(key=record.key, value=record.value, reason=reason, message=message,
                      source_topic=topic, source_partition=partition,
                      source_offset=record.offset, headers=list(record.headers or ()),
                      timestamp_ms=record.timestamp, error_class=error_class).to_message()
