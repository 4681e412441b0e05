"""Load for the broker fault tests: a producer that keeps sending through an outage and
remembers what the cluster acknowledged, and a follower that times every prediction."""

from __future__ import annotations

import asyncio
import collections
import itertools
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiokafka import TopicPartition

from stream.config import Settings
from stream.examples.simulate import PaymentSimulator
from stream.kafka import make_consumer, make_producer, start_client


@dataclass
class Sent:
    acked_ids: set[str] = field(default_factory=set)
    acked_invalid: collections.Counter[bytes] = field(default_factory=collections.Counter)
    failed: int = 0
    attempted: int = 0


async def send_steadily(settings: Settings, sim: PaymentSimulator, n: int, rate: float,
                        sent: Sent) -> None:
    """Send events ``0..n-1`` at ``rate``/s with an idempotent producer whose requests outlive
    a broker restart (so a retry after a crash does not duplicate an event)."""
    producer = make_producer(settings, enable_idempotence=True, request_timeout_ms=90_000)
    await start_client(producer, settings.kafka.bootstrap_servers)
    pending: set[asyncio.Future[Any]] = set()

    def done(item: Any, fut: asyncio.Future[Any]) -> None:
        pending.discard(fut)
        if fut.cancelled() or fut.exception() is not None:
            sent.failed += 1
        elif item.event_id is None:
            sent.acked_invalid[item.value] += 1
        else:
            sent.acked_ids.add(item.event_id)

    began, chunk = time.monotonic(), max(1, int(rate // 50))
    try:
        for start in range(0, n, chunk):
            for item in sim.events(min(chunk, n - start), start=start):
                fut = await producer.send(settings.topics.events, item.value, key=item.key)
                pending.add(fut)
                fut.add_done_callback(lambda f, item=item: done(item, f))
                sent.attempted += 1
            ahead = (start + chunk) / rate - (time.monotonic() - began)
            if ahead > 0:
                await asyncio.sleep(ahead)  # pacing to the rate, not synchronisation
        if pending:
            await asyncio.wait(pending, timeout=120)
    finally:
        await producer.stop()


@dataclass
class Seen:
    ids: collections.Counter[str] = field(default_factory=collections.Counter)
    first_at: dict[str, float] = field(default_factory=dict)  # event id -> when first seen
    dead: collections.Counter[bytes] = field(default_factory=collections.Counter)
    arrivals: list[tuple[float, int]] = field(default_factory=list)  # (monotonic, new records)

    def gap_after(self, t0: float) -> float:
        """Longest time without a new output, from ``t0`` on (0 if none after it)."""
        times = [t0] + [t for t, _ in self.arrivals if t > t0]
        return max((b - a for a, b in itertools.pairwise(times)), default=0.0)

    def first_of(self, ids: list[str]) -> float | None:
        """When the first prediction of any of ``ids`` was seen (None: not yet)."""
        return min((self.first_at[i] for i in ids if i in self.first_at), default=None)

    def accounts_for(self, sent: Sent) -> bool:
        return sent.acked_ids <= self.ids.keys() and not (sent.acked_invalid - self.dead)

    def summary(self, sent: Sent) -> dict[str, int]:
        return {"sent": len(sent.acked_ids) + sum(sent.acked_invalid.values()),
                "send_failed": sent.failed,
                "lost": len(sent.acked_ids - self.ids.keys()) + sum((sent.acked_invalid - self.dead).values()),
                "duplicated": sum(c - 1 for c in self.ids.values() if c > 1)}


async def follow_outputs(settings: Settings, seen: Seen, stop: asyncio.Event) -> None:
    """Read predictions and dead letters from the beginning until ``stop``; the consumer
    reconnects by itself through a broker outage."""
    t = settings.topics
    consumer = make_consumer(settings, group_id=None, fetch_max_wait_ms=50)
    await start_client(consumer, settings.kafka.bootstrap_servers)
    try:
        tps = [TopicPartition(topic, p) for topic in (t.predictions, t.dead_letter)
               for p in range(t.partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=100, max_records=10_000)
            n = 0
            for tp, records in batches.items():
                n += len(records)
                if tp.topic == t.predictions:
                    now = time.monotonic()
                    for r in records:
                        event_id = orjson.loads(r.value)["event_id"]
                        seen.ids[event_id] += 1
                        seen.first_at.setdefault(event_id, now)
                else:
                    seen.dead.update(r.value for r in records)
            if n:
                seen.arrivals.append((time.monotonic(), n))
    finally:
        await consumer.stop()
