"""How ``mlstream bench`` turns its drains into figures: medians over the runs, ratios paired
within each run, and a counter read cheaply enough to poll."""

from __future__ import annotations

import statistics
from typing import Any

__all__ = ["counter_total", "median_of", "paired_ratios"]


def counter_total(counter: Any) -> float:
    """A label-less counter's value, read from its own samples (cheap enough to poll).

    >>> from prometheus_client import CollectorRegistry, Counter
    >>> c = Counter("rows", "Rows.", registry=CollectorRegistry())
    >>> c.inc(3)
    >>> counter_total(c)
    3.0
    """
    samples = [s for m in counter.collect() for s in m.samples if s.name.endswith("_total")]
    if len(samples) != 1 or samples[0].labels:
        raise ValueError(f"not a label-less counter: {counter!r}")
    return float(samples[0].value)


def paired_ratios(rows: dict[str, list[dict[str, Any]]]) -> dict[str, list[float]]:
    """Per run, the ratio of two drains of that run (minutes apart, so the machine's swing between
    runs cancels); the bench reports their median. The ratio of each drain's median over the runs
    mixed runs: one slow pipeline run read a monitoring cost of 0.46 where the runs' own were
    0.09, 0.58 and 0.06.

    >>> rows = {"pipeline": [{"events_per_s": 50.0}, {"events_per_s": 80.0}], "broker": [{"events_per_s": 100.0}] * 2,
    ...         "json": [], "all": [], "exactly_once": [], "bursty": []}
    >>> paired_ratios(rows)
    {'pipeline/broker': [0.5, 0.8]}
    """
    pairs = (("pipeline", "broker"), ("pipeline", "json"), ("all", "pipeline"), ("exactly_once", "pipeline"),
             ("bursty", "pipeline"))
    return {f"{a}/{b}": [round(x["events_per_s"] / y["events_per_s"], 3) for x, y in zip(rows[a], rows[b])]
            for a, b in pairs if rows[a] and rows[b]}


def median_of(rows: list[dict[str, Any]], key: str) -> float:
    """The median of ``key`` over the runs that report it (0 when none does).

    >>> median_of([{"s": 3.0}, {"s": None}, {"s": 1.0}, {}], "s"), median_of([], "s")
    (2.0, 0.0)
    """
    values = [r[key] for r in rows if r.get(key) is not None]
    return float(statistics.median(values)) if values else 0.0
