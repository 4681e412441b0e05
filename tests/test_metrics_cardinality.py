"""Labels stay bounded: 100,000 distinct entities through the scorer add no series."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import orjson
from prometheus_client import CollectorRegistry

from stream.examples.payments import DOMAIN
from stream.metrics import SCORE_BUCKETS, Metrics
from stream.scoring.pipeline import BatchScorer
from stream.registry import ModelStore
from stream.scoring.model import load_model
from stream.examples.simulate import PaymentSimulator
from stream.scoring.state import EntityStore

ROOT = Path(__file__).resolve().parent.parent
PARTITIONS = 4


@dataclass
class Rec:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: int
    headers: list[tuple[str, bytes]] = field(default_factory=list)


def series(registry: CollectorRegistry) -> set[tuple[str, tuple[tuple[str, str], ...]]]:
    return {(s.name, tuple(sorted(s.labels.items()))) for fam in registry.collect() for s in fam.samples}


def test_100k_distinct_entities_do_not_grow_the_series_count():
    metrics = Metrics.create()
    model = load_model(ModelStore(ROOT / "models"), "fraud", DOMAIN.features.columns)
    scorer = BatchScorer(DOMAIN, model, metrics, emit_features=False)
    stores = {p: EntityStore(DOMAIN.features.state_width) for p in range(PARTITIONS)}
    entity, sim = DOMAIN.schema.entity_field, PaymentSimulator(seed=1, invalid_rate=0.01)
    n, batch, offset = 100_000, 2_000, 0
    after_first: set[tuple[str, tuple[tuple[str, str], ...]]] = set()
    events = sim.events(n)
    for b in range(n // batch):
        by_part: dict[int, list[Rec]] = {p: [] for p in range(PARTITIONS)}
        for i, item in enumerate(events.__next__() for _ in range(batch)):
            value = item.value
            if item.event_id is not None:  # a fresh entity id for every event
                doc = orjson.loads(value)
                doc[entity] = f"entity-{b * batch + i}"
                value = orjson.dumps(doc)
            p = (b * batch + i) % PARTITIONS
            by_part[p].append(Rec("events", p, offset, item.key, value, 1_750_000_000_000))
            offset += 1
        scorer.process(by_part, stores)
        if b == 0:
            after_first = series(metrics.registry)
    assert sum(len(s) for s in stores.values()) > 95_000  # the entities really were distinct
    final = series(metrics.registry)
    assert len(final) == len(after_first), sorted(final - after_first)[:20]
    assert metrics.registry.get_sample_value("mlstream_events_valid_total") > 95_000


def test_observe_scores_equals_one_observe_per_score():
    from prometheus_client import Histogram

    values = np.concatenate([np.random.default_rng(0).random(1_000), np.array(SCORE_BUCKETS)])
    bulk = Metrics.create()
    bulk.observe_scores("fraud", values)
    ref = CollectorRegistry()
    h = Histogram("mlstream_score", "", ["model"], buckets=SCORE_BUCKETS, registry=ref)
    for v in values:
        h.labels("fraud").observe(v)
    for le in [str(b) for b in SCORE_BUCKETS[:-1]] + ["1.0", "+Inf"]:
        labels = {"model": "fraud", "le": le}
        assert bulk.registry.get_sample_value("mlstream_score_bucket", labels) == \
            ref.get_sample_value("mlstream_score_bucket", labels), le
    assert np.isclose(bulk.registry.get_sample_value("mlstream_score_sum", {"model": "fraud"}),
                      ref.get_sample_value("mlstream_score_sum", {"model": "fraud"}))
