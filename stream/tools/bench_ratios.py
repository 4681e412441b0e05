"""How ``mlstream bench`` turns its drains into figures: medians over the runs, ratios paired
within each run, a counter read cheaply enough to poll, and the table it prints."""

from __future__ import annotations

import pstats
import statistics
from typing import Any

__all__ = ["counter_total", "median_of", "paired_ratios", "print_table"]


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


def print_table(result: dict[str, Any], profile: str | None = None) -> None:
    """``mlstream bench``'s result as the table it prints (``--json`` prints ``result`` itself)."""
    print(f"broker limit (raw bytes in -> out, batched):   {result['broker_limit_events_per_s']:>8} events/s")
    print(f"JSON loop (consume -> parse -> produce):       {result['ceiling_events_per_s']:>8} events/s")
    print(f"pipeline (all stages):                         {result['pipeline_events_per_s']:>8} events/s")
    print(f"pipeline on bursty traffic (20 % in runs):    {result['pipeline_bursty_events_per_s']:>8} events/s "
          f"({result['bursty_vs_demo_traffic']} of the demo's traffic)")
    print(f"pipeline + monitor in one process (role all):  {result['pipeline_monitored_events_per_s']:>8} events/s "
          f"(monitoring cost {result['monitoring_cost']:.1%})")
    if result["exactly_once_cost"] is not None:
        print(f"pipeline, exactly-once (transactions):         {result['pipeline_exactly_once_events_per_s']:>8} "
              f"events/s (cost of the guarantee {result['exactly_once_cost']:.1%})")
    print(f"monitor alone:                                 {result['monitor_rows_per_s']:>8} rows/s of processing, "
          f"{result['monitor_rows_per_cpu_s']} rows per CPU second of its process")
    print(f"pipeline/broker limit {result['ratio_broker_limit']} (goal >= 0.5), pipeline/JSON loop {result['ratio']} "
          f"(goal >= 0.8); per run {result['ratios_per_run']}")
    print(f"fixed cost of a micro-batch: {result['fixed_cost_us_per_batch']} µs CPU "
          f"({result['cpu_us_per_event_batch_1']} µs for a 1-event batch, "
          f"{result['cpu_us_per_event_batch_1000']} µs/event at 1,000); the Kafka client's own floor "
          f"{result['client_floor_us_per_batch']} µs (fetch + produce, nothing else)")
    cpu = result["cpu_us_per_event_at_500"]
    print(f"CPU at {result['low_rate']} events/s, µs/event: " + ", ".join(f"{k} {v}" for k, v in cpu.items()))
    for rate, by in result["latency_ms"].items():
        print(f"latency at {rate} events/s, p50/p99 ms: " + ", ".join(f"{k} {v['p50']}/{v['p99']}" for k, v in by.items()))
    print(f"p99 vs broker floor: {result['p99_vs_floor_at_2000']}x at 2000/s (goal <= 2), "
          f"{result['p99_vs_floor_at_500']}x at 500/s (goal <= 2)")
    print(f"start-up: group join -> first prediction {result['startup_s']['join_to_first_prediction']} s "
          f"(with monitor {result['startup_s']['join_to_first_prediction_with_monitor']} s)")
    print(f"peak RSS: {result['peak_rss_mb']} MB; bench took {result['bench_seconds']} s")
    if profile:
        print(f"\nwhere a one-event batch's CPU goes (% of its profiled CPU; cProfile in {profile}):")
        for part, pct in result["fixed_cost_profile_pct"].items():
            print(f"  {pct:5.1f}%  {part}")
        pstats.Stats(profile).sort_stats("tottime").print_stats(20)
