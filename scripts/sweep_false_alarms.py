"""Seeded sweep of false drift openings on realistic stationary traffic (README, "Drift detection").

Usage::

    .venv/bin/python scripts/sweep_false_alarms.py scenarios 0 30   # the 5 scenarios x seeds 0-29, 200,000 events
    .venv/bin/python scripts/sweep_false_alarms.py random 1 60      # 60 mixed streams, process parameters drawn
                                                                     # at random from seed 1
    ... --no-entities                                                # without the pipeline's entity ids

Each stream is stationary (every opening is false) and its reference an i.i.d. sample of the same
process with event times, as `mlstream replay --reference ... --time-field ts --entity-field entity`
would give. Prints the streams with an opening (row, features, test, score) and a total line.
"""
from __future__ import annotations

import sys
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np

from stream.examples.traffic import FEATURES, generate
from stream.monitoring.drift import DriftMonitor
from stream.monitoring.profile import ReferenceProfile
from stream.tools.bench_realistic import REF_ROWS

SCENARIOS = ("seasonal", "autocorrelated", "bursty", "heavy_tailed", "mixed")
EVENTS = 200_000


def run(task: tuple[str, str, int, dict[str, Any], bool]) -> tuple[str, list[tuple[Any, ...]]]:
    label, scenario, seed, process, entities = task
    cols = generate(scenario, EVENTS, seed=seed, **process)
    ref = generate(scenario, REF_ROWS, seed=seed + 10_000, iid=True, **process)
    mon = DriftMonitor(ReferenceProfile.from_columns({k: ref[k] for k in FEATURES}, FEATURES, seed=0,
                                                     event_ts=ref["ts"]))
    events = []
    for a in range(0, EVENTS, 10_000):
        events += mon.update_batch({k: cols[k][a : a + 10_000] for k in FEATURES}, ts=cols["ts"][a : a + 10_000],
                                   entities=cols["entity"][a : a + 10_000] if entities else None)
    return label, [(e.index, e.features, e.evidence[0].get("test"), e.evidence[0].get("score"))
                   for e in events if e.kind != "drift_resolved"]


def tasks(mode: str, lo: int, hi: int, entities: bool) -> list[tuple[str, str, int, dict[str, Any], bool]]:
    if mode == "scenarios":
        return [(f"{sc} {s}", sc, s, {}, entities) for s in range(lo, hi) for sc in SCENARIOS]
    rng = np.random.default_rng(lo)  # random: seed lo, hi streams
    out = []
    for i in range(hi):
        process = dict(events_per_day=int(rng.integers(10_000, 100_000)), phi=float(rng.uniform(0.8, 0.95)),
                       season_sd=float(rng.uniform(0.3, 0.7)), burst_share=float(rng.uniform(0.1, 0.3)),
                       n_entities=int(rng.integers(10, 80)), entity_sd=float(rng.uniform(0.3, 0.8)),
                       population_seed=int(rng.integers(0, 1000)))
        seed = int(rng.integers(0, 10**6))
        out.append((f"random {i} seed={seed} {process}", "mixed", seed, process, entities))
    return out


def main(argv: list[str]) -> int:
    entities = "--no-entities" not in argv
    args = [a for a in argv if a != "--no-entities"]
    todo = tasks(args[0], int(args[1]), int(args[2]), entities)
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
