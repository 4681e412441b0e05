"""Where a micro-batch's CPU goes: a cProfile (CPU-time timer) summed into named parts, and the
Kafka client's own floor.

Each function's own time goes to the part its file belongs to. C functions that say what they
are (numpy, orjson, onnxruntime, sockets, epoll) are their own parts; generic built-ins
(``len``, ``isinstance``, ``dict.get``) are charged to their callers' parts.
"""

from __future__ import annotations

import asyncio
import pstats
import time
from collections import Counter
from typing import Any

from stream.config import Settings
from stream.kafka import make_consumer, make_producer, send_records, start_client

# (substring of the file or C function name, part), first match wins
PARTS = (
    ("prometheus_client", "metrics and stage timers"),
    ("stream/metrics.py", "metrics and stage timers"),
    ("aiokafka/producer", "aiokafka send_batch + sender task"),
    ("aiokafka/consumer", "aiokafka getmany + fetcher"),
    ("aiokafka/protocol", "aiokafka protocol encode/decode + connection"),
    ("aiokafka/record", "aiokafka protocol encode/decode + connection"),
    ("aiokafka/conn", "aiokafka protocol encode/decode + connection"),
    ("aiokafka/client", "aiokafka protocol encode/decode + connection"),
    ("aiokafka", "aiokafka other"),
    ("socket", "socket I/O"),
    ("uvloop", "event loop, futures, gather"),
    ("asyncio", "event loop, futures, gather"),
    ("selectors", "event loop, futures, gather"),
    ("epoll", "event loop, futures, gather"),
    ("stream/schema.py", "validation"),
    ("stream/features.py", "features + entity state"),
    ("stream/rolling.py", "features + entity state"),
    ("stream/scoring/state.py", "features + entity state"),
    ("onnxruntime", "ONNX predict"),
    ("stream/scoring/model.py", "ONNX predict"),
    ("orjson", "orjson"),
    ("numpy", "numpy small-array overheads"),
    ("stream/scoring/pipeline.py", "pipeline glue (predictions, feature batch)"),
    ("stream/domain.py", "pipeline glue (predictions, feature batch)"),
    ("stream/scoring/worker.py", "worker loop + commit"),
    ("stream/kafka.py", "worker loop + commit"),
)


def part_of(filename: str, name: str) -> str | None:
    """The part a profiled function belongs to; None for a generic built-in.

    >>> part_of("~", "<built-in method numpy.asarray>"), part_of("~", "<built-in method builtins.len>")
    ('numpy small-array overheads', None)
    >>> part_of("/x/site-packages/aiokafka/consumer/consumer.py", "getmany")
    'aiokafka getmany + fetcher'
    """
    where = name if filename == "~" else filename
    for needle, part in PARTS:
        if needle in where:
            return part
    return None if filename == "~" else "other"


def where_it_went(path: str, batches: int) -> dict[str, float]:
    """CPU µs per batch by part, largest first, with the total under ``"total"``."""
    stats: dict[Any, Any] = pstats.Stats(path).stats  # type: ignore[attr-defined]
    parts: Counter[str] = Counter()
    for (filename, _, name), (_, _, own, _, callers) in stats.items():
        part = part_of(filename, name)
        if part is not None:
            parts[part] += own
            continue
        weights = {key: (v[3] if isinstance(v, tuple) else v) for key, v in callers.items()}
        total = sum(weights.values())
        for (cfile, _, cname), w in weights.items():  # a generic built-in: its callers pay
            parts[part_of(cfile, cname) or "other"] += own * (w / total if total else 1 / len(weights))
        if not weights:
            parts["other"] += own
    out = {k: round(v / batches * 1e6, 1) for k, v in parts.most_common()}
    out["total"] = round(sum(parts.values()) / batches * 1e6, 1)
    return out


async def client_floor(settings: Settings, events: int, deadline_s: float = 120.0) -> float:
    """The Kafka client's own fixed cost of a micro-batch, in CPU µs: the leanest loop there is
    (fetch, produce the records unparsed, no wait per batch, no commit) with one-record fetches,
    less its per-event CPU with 1,000-record ones. Every aiokafka processor pays it per batch;
    what a micro-batch costs above it is the processor's own."""
    per_event = {}
    for size, n in ((1, events), (1_000, 20 * events)):
        consumer = make_consumer(settings, settings.topics.events, group_id=f"{settings.app_id}-floor{size}",
                                 raw=True)
        producer = make_producer(settings)
        await start_client(consumer, settings.kafka.bootstrap_servers)
        await start_client(producer, settings.kafka.bootstrap_servers)
        try:
            done, cpu0, futures, end = 0, 0.0, [], time.monotonic() + deadline_s
            while done < n and time.monotonic() < end:
                batches = await consumer.getmany(timeout_ms=20, max_records=size)
                if batches and not cpu0:  # from the first records: the group join is not a batch's cost
                    cpu0 = time.process_time()
                for tp, records in batches.items():
                    futures += await send_records(producer, settings.topics.predictions, tp.partition,
                                                  [r.key for r in records], [r.value for r in records])
                    done += len(records)
                if len(futures) >= 100:  # acknowledgements awaited now and then, as a commit would
                    await asyncio.gather(*futures)
                    futures = []
            await asyncio.gather(*futures)
            per_event[size] = (time.process_time() - cpu0) / max(done, 1) * 1e6
        finally:
            await consumer.stop()
            await producer.stop()
    return per_event[1] - per_event[1_000]


def profile_shares(path: str, batches: int) -> dict[str, float]:
    """Each part's share of a profiled one-event batch, in %: the profiler slows every call,
    so shares are what a profile tells reliably, not absolute times."""
    parts = where_it_went(path, max(batches, 1))
    total = parts.pop("total") or 1.0
    return {k: round(100 * v / total, 1) for k, v in parts.items()}
