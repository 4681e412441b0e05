"""A different domain (sensor readings, a regression model) end to end, set up only through the
public API and settings."""

from __future__ import annotations

import asyncio
import time

import orjson

from stream import ModelStore, TrainingData, train
from stream.kafka import ensure_topics, make_producer, start_client
from tests.helpers import read_topic
from tests.sensor_domain import DOMAIN, readings


async def test_sensor_domain_runs_end_to_end(make_settings, start_worker, tmp_path):
    store = ModelStore(tmp_path / "store")
    events, power = readings(3_000, seed=1)
    card = train(DOMAIN, TrainingData(events, power), store, name="power", seed=0, warmup=100)
    assert card["task"] == "regression" and card["training"]["metrics"]["mae"] < 5

    settings = make_settings(domain="tests.sensor_domain:DOMAIN", model_name="power",
                             model_store=tmp_path / "store")
    await ensure_topics(settings)
    worker = start_worker(settings, roles=("scorer", "monitor"))

    live, _ = readings(500, seed=2)
    live.append({**live[0], "reading_id": "bad", "load_pct": 140.0})  # out of range
    producer = make_producer(settings)
    await start_client(producer, settings.kafka.bootstrap_servers)
    for e in live:
        await producer.send(settings.topics.events, orjson.dumps(e), key=e["sensor_id"].encode())
    await producer.stop()

    deadline = time.monotonic() + 60
    predictions: list = []
    while len(predictions) < 500 and time.monotonic() < deadline:
        predictions = await read_topic(settings, settings.topics.predictions)
        await asyncio.sleep(0.2)  # re-read until the condition holds or the deadline passes
    got = {orjson.loads(r.value)["event_id"]: orjson.loads(r.value) for r in predictions}
    assert set(got) == {e["reading_id"] for e in live[:-1]}
    sample = got["r2-0"]
    assert sample["model"] == "power" and sample["model_version"] == "1"
    assert 10 < sample["score"] < 120  # a power in kW, not a probability
    dead = await read_topic(settings, settings.topics.dead_letter)
    assert [dict(r.headers)["mlstream.error.reason"] for r in dead] == [b"out_of_range"]

    # the score histogram's buckets are the reference scores' quantile edges (kW), not probabilities
    reg = worker.metrics.registry
    buckets = sorted(float(s.labels["le"]) for f in reg.collect() if f.name == "mlstream_score"
                     for s in f.samples if s.name == "mlstream_score_bucket" and s.labels["le"] != "+Inf")
    assert len(buckets) >= 5 and buckets[0] > 1.0 and buckets[-1] < 500, buckets
    assert reg.get_sample_value("mlstream_score_count", {"model": "power"}) == 500
    below = reg.get_sample_value("mlstream_score_bucket", {"model": "power", "le": str(buckets[len(buckets) // 2])})
    assert 100 < below < 400  # the middle edge splits the live scores roughly in half
