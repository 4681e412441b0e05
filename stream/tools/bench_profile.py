"""Where a micro-batch's CPU goes: a cProfile (CPU-time timer) summed into named parts.

Each function's own time goes to the part its file belongs to. C functions that say what they
are (numpy, orjson, onnxruntime, sockets, epoll) are their own parts; generic built-ins
(``len``, ``isinstance``, ``dict.get``) are charged to their callers' parts.
"""

from __future__ import annotations

import pstats
from collections import Counter
from typing import Any

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
