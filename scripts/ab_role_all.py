"""Paired drains of ``--role all`` against the scorer alone, this tree against another, on Apache Kafka.

Usage::

    git archive <commit> | (mkdir -p /tmp/base && tar -x -C /tmp/base)
    .venv/bin/python scripts/ab_role_all.py /tmp/base 6

Pre-loads 100,000 events once, then per round drains them with ``mlstream bench``'s ``pipeline``
and ``all`` children from each tree (the base's through ``PYTHONPATH``), alternating which tree goes
first; prints each round's rates and, per tree, ``all / pipeline`` per round and its median (the
monitoring cost is one minus it). Pairs, because two runs minutes apart swing by 20 % on a small machine.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import uuid

from stream.kafka import ensure_topics
from stream.tools.bench import bench_settings, preload
from stream.tools.kafka_server import open_broker

N = 100_000


def main(base: str, rounds: int) -> None:
    res: dict[str, list[float]] = {f"{t}-{k}": [] for t in ("base", "new") for k in ("pipeline", "all")}
    with open_broker("kafka") as broker:
        boot = broker.bootstrap
        asyncio.run(ensure_topics(bench_settings(boot, "base", 4)))
        asyncio.run(preload(bench_settings(boot, "base", 4), N))
        for r in range(rounds):
            for tree in ("base", "new") if r % 2 == 0 else ("new", "base"):
                for kind in ("pipeline", "all"):
                    run = f"{kind}{uuid.uuid4().hex[:4]}"
                    asyncio.run(ensure_topics(bench_settings(boot, run, 4)))
                    env = {**os.environ, "MLSTREAM_LOG_LEVEL": "WARNING"}
                    if tree == "base":
                        env["PYTHONPATH"] = base
                    # in the tree's own directory: the current one comes first on sys.path, and a
                    # PYTHONPATH alone ran this tree in both columns
                    p = subprocess.run([sys.executable, "-m", "stream.tools.bench", kind, boot, run, "4", str(N)],
                                       capture_output=True, env=env, timeout=300, check=True,
                                       cwd=base if tree == "base" else None)
                    d = json.loads(p.stdout.decode().strip().splitlines()[-1])
                    res[f"{tree}-{kind}"].append(d["events"] / d["elapsed_s"])
            print(r, {k: round(v[-1]) for k, v in res.items()}, flush=True)
    for t in ("base", "new"):
        ratios = [a / p for a, p in zip(res[f"{t}-all"], res[f"{t}-pipeline"], strict=True)]
        print(t, "all/pipeline per round", [round(x, 3) for x in ratios], "median", round(statistics.median(ratios), 3))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 6)
