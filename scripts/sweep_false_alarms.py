"""Seeded sweep of false drift openings on realistic stationary traffic (README, "Drift detection").

Usage::

    .venv/bin/python scripts/sweep_false_alarms.py scenarios 0 30   # the 5 scenarios x seeds 0-29, 200,000 events
    .venv/bin/python scripts/sweep_false_alarms.py random 1 60      # 60 mixed streams, process parameters drawn
                                                                     # at random from seed 1
    ... --no-entities                                                # without the pipeline's entity ids
    ... --no-times                                                   # without event times (README, "What it
                                                                     # cannot see")

Each stream is stationary (every opening is false) and its reference an i.i.d. sample of the same
process with event times, as `mlstream replay --reference ... --time-field ts --entity-field entity`
would give. Prints the streams with an opening (row, features, test, score) and a total line.
"""
from __future__ import annotations

import sys
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np

from stream.examples.traffic import generate, random_process
from stream.tools.bench_realistic import REF_ROWS, replay_events

SCENARIOS = ("seasonal", "autocorrelated", "bursty", "heavy_tailed", "mixed")
EVENTS = 200_000


def run(task: tuple[str, str, int, dict[str, Any], bool, bool]) -> tuple[str, list[tuple[Any, ...]]]:
    label, scenario, seed, process, entities, times = task
    cols = generate(scenario, EVENTS, seed=seed, **process)
    ref = generate(scenario, REF_ROWS, seed=seed + 10_000, iid=True, **process)
    return label, [(e.index, e.features, e.evidence[0].get("test"), e.evidence[0].get("score"))
                   for e in replay_events(cols, ref, EVENTS, entities, times) if e.kind != "drift_resolved"]


def tasks(mode: str, lo: int, hi: int, entities: bool,
          times: bool = True) -> list[tuple[str, str, int, dict[str, Any], bool, bool]]:
    if mode == "scenarios":
        return [(f"{sc} {s}", sc, s, {}, entities, times) for s in range(lo, hi) for sc in SCENARIOS]
    rng = np.random.default_rng(lo)  # random: seed lo, hi streams
    out = []
    for i in range(hi):
        process = random_process(rng)
        seed = int(rng.integers(0, 10**6))
        out.append((f"random {i} seed={seed} {process}", "mixed", seed, process, entities, times))
    return out


def main(argv: list[str]) -> int:
    entities, times = "--no-entities" not in argv, "--no-times" not in argv
    args = [a for a in argv if a not in ("--no-entities", "--no-times")]
    todo = tasks(args[0], int(args[1]), int(args[2]), entities, times)
    bad = total = 0
    with ProcessPoolExecutor(2) as pool:
        for label, openings in pool.map(run, todo):
            if openings:
                bad, total = bad + 1, total + len(openings)
                print(label, openings[:3], flush=True)
    print(f"streams with an opening: {bad} of {len(todo)}; openings: {total} in {len(todo) * EVENTS:,} events")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
