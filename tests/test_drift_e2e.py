"""Drift on Apache Kafka: an injected shift gives a drift event and one retraining
request that match their JSON Schemas; a stationary run of the same length gives none."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from stream.examples.simulate import WARMUP_EVENTS, PaymentSimulator
from stream.messages import to_dict
from stream.tools.tally import Tally, follow, wait_until
from stream.tools.traffic import produce

ON_KAFKA = pytest.mark.parametrize("broker_kind", ["kafka"])

SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"
EVENTS = 20_000


def _schema(name: str) -> dict:
    return json.loads((SCHEMAS / name).read_text())


async def _run(make_settings, start_worker, scenario: str) -> Tally:
    """Run EVENTS simulated payments and wait until the monitor has tested every one."""
    import asyncio

    from stream.kafka import ensure_topics

    settings = make_settings(monitor={"warmup_rows": WARMUP_EVENTS})
    await ensure_topics(settings)
    worker = start_worker(settings)
    tally, stop = Tally(), asyncio.Event()
    follower = asyncio.create_task(follow(settings, tally, stop))
    try:
        # the monitor learns the stream's dependence from its first few thousand rows: the change comes after
        sim = PaymentSimulator(seed=21, scenario=scenario, drift_at=WARMUP_EVENTS + 6_000)
        await produce(settings, sim, EVENTS, rate=0)
        assert await wait_until(lambda: tally.predictions >= EVENTS, 120)
        rows = lambda: worker.metrics.registry.get_sample_value("mlstream_monitor_rows_total") or 0  # noqa: E731
        assert await wait_until(lambda: rows() >= EVENTS, 60)
        if scenario != "none":  # drift messages are published right after the monitor's round
            await wait_until(lambda: tally.retrain_requests > 0, 10)
        else:
            # a stationary run: give a wrongly published event the time to arrive
            await wait_until(lambda: tally.drift_events > 0, 2)
        return tally
    finally:
        stop.set()
        follower.cancel()


@ON_KAFKA
@pytest.mark.parametrize("scenario", ["mean_shift", "new_category"])
async def test_injected_drift_gives_a_drift_event_and_one_retrain_request(make_settings, start_worker, scenario):
    tally = await _run(make_settings, start_worker, scenario)
    assert tally.drift_events >= 1
    assert tally.malformed == 0
    drifted = {f for d in tally.drift if d.kind != "drift_resolved" for f in d.features}
    expected = {"mean_shift": "log_amount", "new_category": "merchant_category"}[scenario]
    assert expected in drifted
    for d in tally.drift:
        jsonschema.validate(to_dict(d), _schema("drift-event.schema.json"))
    assert tally.retrain_requests == 1  # cooldown: one drift, one request
    request = tally.retrain[0]
    jsonschema.validate(to_dict(request), _schema("retrain-request.schema.json"))
    assert request.model == "fraud" and request.model_version == "1"
    assert request.evidence
    assert {d.model for d in tally.drift} == {"fraud"} and {d.model_version for d in tally.drift} == {"1"}


@ON_KAFKA
async def test_a_stationary_run_of_the_same_length_gives_no_drift(make_settings, start_worker):
    tally = await _run(make_settings, start_worker, "none")
    assert tally.drift == [] and tally.retrain_requests == 0


def test_the_score_can_also_be_watched_by_a_river_detector(model_store):
    """MLSTREAM_MONITOR__SCORE_DETECTOR runs river's PageHinkley on the score beside the tests."""
    import json

    import numpy as np

    from stream.config import Settings
    from stream.monitoring.worker import ModelMonitor

    card = json.loads((model_store / "fraud" / "1" / "card.json").read_text())
    settings = Settings(model_store=model_store, monitor={"score_detector": "page_hinkley"})
    mon = ModelMonitor(card, settings)
    rng = np.random.default_rng(0)
    names = [n for n in mon.kinds if n != "score"]
    ref = {n: (np.full(4_000, np.nan) if mon.kinds[n] == "numeric" else [None] * 4_000) for n in names}
    events = mon.on_features({**ref, "score": np.r_[rng.uniform(0, 0.05, 2_000), rng.uniform(0.6, 1, 2_000)]})
    assert any(e.kind == "score_drift" and ev["test"] == "page_hinkley" for e in events for ev in e.evidence)
