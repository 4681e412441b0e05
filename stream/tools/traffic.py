"""Sends simulated traffic to a cluster at a steady rate, with labels following their events."""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable

from stream.config import Settings
from stream.examples.simulate import PaymentSimulator, label_record
from stream.kafka import make_producer, start_client


async def produce(settings: Settings, sim: PaymentSimulator, n: int | None, *, rate: float,
                  label_delay: int = 1_000, start: int = 0,
                  stop: asyncio.Event | None = None,
                  on_progress: Callable[[int], None] | None = None, chunk: int | None = None) -> int:
    """Produce ``n`` events (forever when None) at ``rate`` per second; returns how many.

    Labels go to the labels topic ``label_delay`` events after their event, keyed like it,
    so they land in the same partition number (labels arrive late, as in production). Events
    leave in groups of ``chunk`` (default: 50 groups per second); 1 spaces them evenly.
    """
    producer = make_producer(settings)
    await start_client(producer, settings.kafka.bootstrap_servers)
    t = settings.topics
    pending: collections.deque[tuple[bytes, bytes]] = collections.deque()
    sent = 0
    began = time.monotonic()
    group = max(1, int(rate // 50)) if rate > 0 else 1_000
    chunk = min(chunk or group, group)
    futures: list[asyncio.Future[object]] = []  # acknowledgements awaited once per group (bounded)
    try:
        index = start
        while n is None or sent < n:
            todo = chunk if n is None else min(chunk, n - sent)
            for item in sim.events(todo, start=index):
                futures.append(await producer.send(t.events, item.value, key=item.key))
                if item.event_id is not None and item.label is not None:
                    pending.append((item.key, label_record(item.event_id, item.label, time.time())))
                while len(pending) > label_delay:
                    key, value = pending.popleft()
                    futures.append(await producer.send(t.labels, value, key=key))
            if len(futures) >= group or (n is not None and sent + todo >= n):
                await asyncio.gather(*futures)
                futures = []
            index += todo
            sent += todo
            if on_progress:
                on_progress(sent)
            if stop is not None and stop.is_set():
                break
            if rate > 0:  # pacing to the requested rate, not synchronisation
                ahead = sent / rate - (time.monotonic() - began)
                if ahead > 0:
                    await asyncio.sleep(ahead)
        if futures:  # stopped within a group
            await asyncio.gather(*futures)
        while pending:  # the tail of the labels
            key, value = pending.popleft()
            await producer.send(t.labels, value, key=key)
        await producer.flush()
    finally:
        await producer.stop()
    return sent
