"""Reads the output topics and accounts for events: what the demo, tests and bench observe."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from aiokafka import TopicPartition

from stream.config import Settings
from stream.errors import MessageError
from stream.kafka import make_consumer, read_all, start_client  # noqa: F401  (read_all: re-exported for tools and tests)
from stream.messages import DeadLetter, DriftEvent, Prediction, RetrainRequest, decode

MAX_LATENCIES = 200_000  # bounded sample of end-to-end latencies


@dataclass
class Tally:
    predictions: int = 0
    duplicate_predictions: int = 0
    dead_lettered: int = 0
    drift_events: int = 0
    retrain_requests: int = 0
    first_prediction_at: float | None = None
    latencies_ms: list[float] = field(default_factory=list)
    malformed: int = 0  # messages on these topics that are not their record type
    drift: list[DriftEvent] = field(default_factory=list)
    retrain: list[RetrainRequest] = field(default_factory=list)
    dead_reasons: dict[str, int] = field(default_factory=dict)
    model_versions: dict[str, int] = field(default_factory=dict)
    _ids: set[str] = field(default_factory=set)

    @property
    def accounted(self) -> int:
        return self.predictions + self.dead_lettered


async def follow(settings: Settings, tally: Tally, stop: asyncio.Event, *,
                 track_ids: bool = True, keep_messages: int = 1_000) -> None:
    """Count every prediction (distinct event ids), dead letter, drift event and retrain request."""
    t = settings.topics
    consumer = make_consumer(settings, group_id=None, fetch_max_wait_ms=50)
    await start_client(consumer, settings.kafka.bootstrap_servers)
    try:
        tps = []
        for topic in (t.predictions, t.dead_letter, t.drift, t.retrain):
            parts = consumer.partitions_for_topic(topic)
            if parts is None:
                await consumer._client.force_metadata_update()
                parts = consumer.partitions_for_topic(topic) or {0}
            tps += [TopicPartition(topic, p) for p in parts]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=100, max_records=20_000)
            now_ms = time.time() * 1000
            for tp, records in batches.items():
                if tp.topic == t.predictions:
                    for rec in records:
                        try:
                            p = decode(rec.value, Prediction)
                        except MessageError:
                            tally.malformed += 1
                            continue
                        if track_ids:
                            if p.event_id in tally._ids:
                                tally.duplicate_predictions += 1
                                continue
                            tally._ids.add(p.event_id)
                        tally.predictions += 1
                        v = p.model_version
                        tally.model_versions[v] = tally.model_versions.get(v, 0) + 1
                        if len(tally.latencies_ms) < MAX_LATENCIES:
                            tally.latencies_ms.append(p.scored_ts_ms - p.ingest_ts_ms)
                    if tally.first_prediction_at is None and records:
                        tally.first_prediction_at = now_ms / 1000
                elif tp.topic == t.dead_letter:
                    tally.dead_lettered += len(records)
                    for rec in records:
                        reason = DeadLetter.from_kafka(rec.key, rec.value, rec.headers).reason
                        tally.dead_reasons[reason] = tally.dead_reasons.get(reason, 0) + 1
                elif tp.topic == t.drift:
                    tally.drift_events += len(records)
                    _keep(tally, tally.drift, records, DriftEvent, keep_messages)
                else:
                    tally.retrain_requests += len(records)
                    _keep(tally, tally.retrain, records, RetrainRequest, keep_messages)
    finally:
        await consumer.stop()


def _keep(tally: Tally, kept: list[Any], records: list[Any], kind: type[Any], limit: int) -> None:
    for rec in records:
        try:
            message: Any = decode(rec.value, kind)
        except MessageError:
            tally.malformed += 1
            continue
        if len(kept) < limit:
            kept.append(message)


async def wait_until(predicate: Any, timeout_s: float, poll_s: float = 0.05) -> bool:
    """Wait for a condition with a deadline; True if it became true."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(poll_s)
    return bool(predicate())
