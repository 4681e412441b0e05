"""Paired drains of ``mlstream bench``'s children, this tree against another, on Apache Kafka.

Usage::

    git archive <commit> | (mkdir -p /tmp/base && tar -x -C /tmp/base)
    .venv/bin/python scripts/ab_pipeline.py /tmp/base 8 [pipeline,all,...]

Pre-loads 100,000 events once; per round, each tree (alternating which goes first) drains them
with each named child (default ``pipeline``) on topics of its own; prints each drain's events per
second, then per child the medians and the paired ratios this tree / base, and with both
``pipeline`` and ``all`` each tree's ``all / pipeline`` per round (one minus it is the monitoring
cost; what ``scripts/ab_role_all.py`` printed before it was folded in here). Each child runs in its
tree's directory (the current directory comes first on ``sys.path``: a ``PYTHONPATH`` alone would
run this tree twice). Pairs, because two runs minutes apart swing by 20 % on a small machine.
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
from stream.tools.bench import bench_settings, preload
from stream.tools.kafka_server import open_broker

EVENTS, PARTITIONS = 100_000, 4


def drain(tree: str, kind: str, boot: str, run: str) -> float:
    p = subprocess.run([sys.executable, "-m", "stream.tools.bench", kind, boot, run, str(PARTITIONS), str(EVENTS)],
                       capture_output=True, cwd=tree, timeout=600, check=True,
                       env={**os.environ, "MLSTREAM_LOG_LEVEL": "WARNING", "PYTHONPATH": tree})
    d = json.loads(p.stdout.decode().strip().splitlines()[-1])
    return float(d["events"] / d["elapsed_s"])


def main(base: str, rounds: int, kinds: list[str]) -> None:
    trees = {"base": os.path.abspath(base), "this": os.getcwd()}
    res: dict[tuple[str, str], list[float]] = {(k, t): [] for k in kinds for t in trees}
    with open_broker("kafka") as broker:
        boot = broker.bootstrap
        asyncio.run(ensure_topics(bench_settings(boot, "base", PARTITIONS)))
        asyncio.run(preload(bench_settings(boot, "base", PARTITIONS), EVENTS))
        for r in range(rounds):
            for kind in kinds:
                for tree in ("base", "this") if r % 2 == 0 else ("this", "base"):
                    run = f"ab{kind}{uuid.uuid4().hex[:4]}"
                    asyncio.run(ensure_topics(bench_settings(boot, run, PARTITIONS)))
                    res[(kind, tree)].append(drain(trees[tree], kind, boot, run))
                    print(r, kind, tree, round(res[(kind, tree)][-1]), flush=True)
    for kind in kinds:
        ratios = [a / b for a, b in zip(res[(kind, "this")], res[(kind, "base")], strict=True)]
        print(kind, "median events/s base", round(statistics.median(res[(kind, "base")])),
              "this", round(statistics.median(res[(kind, "this")])),
              "| this/base per round", [round(x, 2) for x in ratios], "median", round(statistics.median(ratios), 3))
    if {"pipeline", "all"} <= set(kinds):
        for tree in trees:
            shares = [a / p for a, p in zip(res[("all", tree)], res[("pipeline", tree)], strict=True)]
            print(tree, "all/pipeline per round", [round(x, 3) for x in shares],
                  "median", round(statistics.median(shares), 3))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 8,
         sys.argv[3].split(",") if len(sys.argv) > 3 else ["pipeline"])
