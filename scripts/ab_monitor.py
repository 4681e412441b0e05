"""Paired runs of ``mlstream bench``'s monitor child, this tree against another, on Apache Kafka.

Usage::

    git archive <commit> | (mkdir -p /tmp/base && tar -x -C /tmp/base)
    .venv/bin/python scripts/ab_monitor.py /tmp/base 4

Pre-loads 100,000 events once; per round, each tree (alternating which goes first) drains them
through a fresh pipeline (its feature batches on topics of its own) and its monitor child reads
them; prints each run's rows per CPU second and per wall second, then per tree the medians. Pairs,
because two runs minutes apart swing by 20 % on a small machine.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import uuid

sys.path.insert(0, os.getcwd())

from stream.kafka import ensure_topics
from stream.tools.bench import bench_settings, preload, run_child
from stream.tools.kafka_server import open_broker

EVENTS, PARTITIONS = 100_000, 4


def monitor_run(tree: str, bootstrap: str) -> tuple[float, float]:
    """A pipeline drain by this tree, then ``tree``'s monitor child on its feature batches."""
    run = f"pipeline{uuid.uuid4().hex[:6]}"
    asyncio.run(ensure_topics(bench_settings(bootstrap, run, PARTITIONS)))
    run_child("pipeline", bootstrap, run, PARTITIONS, EVENTS)
    out = subprocess.run([sys.executable, "-m", "stream.tools.bench", "monitor", bootstrap, run, str(PARTITIONS),
                          str(EVENTS)], capture_output=True, cwd=tree, timeout=600, check=True,
                         env={**os.environ, "MLSTREAM_LOG_LEVEL": "WARNING", "PYTHONPATH": tree})
    r = json.loads([line for line in out.stdout.decode().splitlines() if line.startswith("{")][-1])
    return float(r["rows_per_cpu_s"]), r["events"] / r["elapsed_s"]


def main(base: str, rounds: int) -> None:
    trees = {"base": os.path.abspath(base), "this": os.getcwd()}
    got: dict[str, list[tuple[float, float]]] = {name: [] for name in trees}
    with open_broker("kafka") as broker:
        asyncio.run(ensure_topics(bench_settings(broker.bootstrap, "base", PARTITIONS)))
        asyncio.run(preload(bench_settings(broker.bootstrap, "base", PARTITIONS), EVENTS))
        for i in range(rounds):
            for name in (("base", "this") if i % 2 == 0 else ("this", "base")):
                got[name].append(monitor_run(trees[name], broker.bootstrap))
                print(name, *(round(v) for v in got[name][-1]), flush=True)
    for name, runs in got.items():
        print(f"{name}: rows per CPU second {[round(c) for c, _ in runs]} median {statistics.median(c for c, _ in runs):,.0f}"
              f" | per wall second {[round(w) for _, w in runs]} median {statistics.median(w for _, w in runs):,.0f}")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 4)
