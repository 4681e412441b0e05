"""Seeded sweep of the entity-balanced category share test (README, "Entity-balanced category shares").

Usage::

    .venv/bin/python scripts/sweep_entity_shares.py stationary 0 8          # bursty + mixed, 200,000 events
    .venv/bin/python scripts/sweep_entity_shares.py stationary 0 8 skewed   # 10 heavy entities, 30 % of traffic
    .venv/bin/python scripts/sweep_entity_shares.py category_share 0 8      # the drift inside mixed traffic
    .venv/bin/python scripts/sweep_entity_shares.py category_share 0 8 none # the same without entity ids
    .venv/bin/python scripts/sweep_entity_shares.py random 1 12             # 12 random process parameters:
                                                                           # stationary, then the drift

Prints per stream: drift openings, % of events with some feature in drift, the delay after the
change (drifts) and the first openings (row, features, test).
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

from stream.examples.traffic import generate, random_process
from stream.tools.bench_realistic import AFTER, CHANGE, DRIFT_FEATURE, REF_ROWS, _open_share, replay_events

PROCESSES: dict[str, dict[str, Any]] = {"default": {}, "none": {},
                                        "skewed": {"population_seed": 3, "n_entities": 10, "burst_share": 0.3}}


def run(scenario: str, seed: int, drift: str | None, n: int, entities: bool, **process: Any) -> tuple[Any, ...]:
    cols = generate(scenario, n, seed=seed, drift=drift, drift_at=CHANGE if drift else None, **process)
    ref = generate(scenario, REF_ROWS, seed=seed + 10_000, iid=True, **process)
    events = replay_events(cols, ref, n, entities)
    before, _, openings = _open_share(events, n, DRIFT_FEATURE.get(drift or ""))
    delay = next((o - CHANGE for o in openings if o >= CHANGE), None) if drift else None
    first = [(e.index, e.features, e.evidence[0].get("test")) for e in events if e.kind != "drift_resolved"][:3]
    return len(openings), round(100 * before, 2), delay, first


def random_streams(seed: int, count: int) -> None:
    """``count`` mixed streams with the generator's parameters drawn at random (README)."""
    rng = np.random.default_rng(seed)
    for i in range(count):
        process = random_process(rng)
        s = int(rng.integers(0, 10**6))
        stationary = run("mixed", s, None, 200_000, True, **process)
        drift = run("mixed", s, "category_share", CHANGE + AFTER, True, **process)
        print(i, process, "stationary", stationary[:2], stationary[3][:2], "| category share delay", drift[2],
              "openings", drift[0], flush=True)


def main(argv: list[str]) -> int:
    mode, lo, hi = argv[0], int(argv[1]), int(argv[2])
    if mode == "random":
        random_streams(lo, hi)
        return 0
    variant = argv[3] if len(argv) > 3 else "default"
    process, entities = PROCESSES[variant], variant != "none"
    for seed in range(lo, hi):
        if mode == "stationary":
            for scenario in ("bursty", "mixed"):
                print(scenario, seed, run(scenario, seed, None, 200_000, entities, **process), flush=True)
        else:
            print(mode, seed, run("mixed", seed, mode, CHANGE + AFTER, entities, **process), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
