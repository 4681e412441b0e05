"""The shipped concept-drift scenario in ``make bench-drift``: the shipped fraud model scores the
payments simulator, whose fraud changes signature at ``drift_at`` (only labels show it), and the
performance monitor a worker builds from the model card reads the labels in arrival order.

Per seed: labelled events from the onset to the ``concept_drift`` event, with the pooled error
rate alone and with the positives' miss rate beside it; and the openings on the stationary
stream (``scenario="none"``, cold start included), which are all false.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

import numpy as np

from stream.monitoring.labels import PerformanceMonitor, holdout_miss_rate, holdout_reference

__all__ = ["TARGET", "format_concept", "run", "shipped_model_scores"]

MODEL = Path(__file__).resolve().parents[2] / "models" / "fraud" / "1"
TARGET = 3_000  # labelled events from the onset (issue 10)
CHANNELS = {"error rate": False, "error rate + miss rate": True}


def shipped_model_scores(scenario: str, seed: int, n: int,
                         drift_at: int = 0) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """The shipped fraud model's card, scores and labels on ``n`` events of the payments simulator."""
    import onnxruntime as ort
    import orjson

    from stream.examples.payments import DOMAIN
    from stream.examples.simulate import PaymentSimulator

    card = json.loads((MODEL / "card.json").read_text())
    sess = ort.InferenceSession((MODEL / "model.onnx").read_bytes(), providers=["CPUExecutionProvider"])
    items = list(PaymentSimulator(seed=seed, scenario=scenario, drift_at=drift_at).events(n))
    x = DOMAIN.offline_features([orjson.loads(i.value) for i in items]).astype(np.float32)
    return card, sess.run([card["output"]], {"features": x})[0][:, 1], np.array([i.label for i in items], float)


def _openings(card: dict[str, Any], scores: np.ndarray, labels: np.ndarray, misses: bool) -> list[int]:
    assert holdout_reference(card) is not None and holdout_miss_rate(card) is not None, \
        "the shipped card has holdout metrics"
    pm = PerformanceMonitor.from_card(card, misses=misses)
    out: list[int] = []
    for a in range(0, scores.size, 200):  # labels arrive in small batches
        out += [e.index for e in pm.update(scores[a : a + 200], labels[a : a + 200]) if e.kind == "concept_drift"]
    return out


def run(seeds: int = 8, seed: int = 0, drift_at: int = 16_000, after: int = 8_000,
        stationary_events: int = 100_000) -> dict[str, Any]:
    """Delays per seed and channel set, and false openings on stationary streams of as many seeds."""
    delays: dict[str, list[int | None]] = {name: [] for name in CHANNELS}
    false_openings: dict[str, int] = dict.fromkeys(CHANNELS, 0)
    for s in range(seed, seed + seeds):
        card, scores, labels = shipped_model_scores("concept_drift", s, drift_at + after, drift_at)
        for name, misses in CHANNELS.items():
            hits = [i - drift_at for i in _openings(card, scores, labels, misses)]
            false_openings[name] += sum(h < 0 for h in hits)
            delays[name].append(next((h for h in hits if h >= 0), None))
        card, scores, labels = shipped_model_scores("none", s, stationary_events, 0)
        for name, misses in CHANNELS.items():
            false_openings[name] += len(_openings(card, scores, labels, misses))
    rows = {}
    for name, ds in delays.items():
        found = [d if d is not None else after for d in ds]
        rows[name] = {"delays": ds, "median": statistics.median(found), "max": max(found),
                      "detected": sum(d is not None for d in ds), "false_openings": false_openings[name]}
    return {"seeds": seeds, "drift_at": drift_at, "stationary_events_per_seed": stationary_events, "rows": rows,
            "within_target": all(d is not None and d <= TARGET for d in delays["error rate + miss rate"])}


def format_concept(res: dict[str, Any]) -> str:
    lines = [f"shipped concept-drift scenario ({res['seeds']} seeds, onset at event {res['drift_at']:,}): "
             f"labelled events to detection; false openings on {res['seeds']} x "
             f"{res['stationary_events_per_seed']:,} stationary labelled events"]
    for name, r in res["rows"].items():
        lines.append(f"  {name:<24} detected {r['detected']}/{res['seeds']}  median {r['median']:g}  "
                     f"max {r['max']:g}  false openings {r['false_openings']}")
    return "\n".join(lines)
