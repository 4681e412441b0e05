"""One error policy in every worker loop: a record whose processing raises is found, dead-lettered
with the exception, and the rest of its batch is scored and committed (no restart, no stall)."""

from __future__ import annotations

import asyncio
import time

import orjson

from stream.examples.simulate import PaymentSimulator
from stream.tools.tally import wait_until
from stream.tools.traffic import produce
from tests.helpers import committed_and_end, read_topic
from tests.poison_domain import poisoned


async def _wait_outputs(settings, expected: int, timeout_s: float = 90.0):
    predictions, dead = [], []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        predictions = await read_topic(settings, settings.topics.predictions)
        dead = await read_topic(settings, settings.topics.dead_letter)
        if len(predictions) + len(dead) >= expected:
            break
        await asyncio.sleep(0.2)  # re-reading the topics; the condition is checked each round
    return predictions, dead


async def test_a_feature_function_raising_on_some_events_dead_letters_exactly_those(make_settings, start_worker):
    from stream.kafka import ensure_topics

    settings = make_settings(domain="tests.poison_domain:DOMAIN")
    await ensure_topics(settings)
    n = 6_000
    sim = PaymentSimulator(seed=21)
    items = list(sim.events(n))
    bad = {i.event_id for i in items if poisoned(i.event_id)}
    assert len(bad) == 6  # 0.1%

    worker = start_worker(settings, roles=("scorer",))
    await produce(settings, sim, n, rate=0)
    predictions, dead = await _wait_outputs(settings, n)

    ids = [orjson.loads(r.value)["event_id"] for r in predictions]
    assert len(ids) + len(dead) == n  # exactly: nothing lost, nothing twice
    assert len(set(ids)) == len(ids) == n - len(bad)
    assert {orjson.loads(r.value)["event_id"] for r in dead} == bad
    for rec in dead:
        h = dict(rec.headers)
        assert h["mlstream.error.reason"] == b"processing_error"
        assert h["mlstream.error.class"] == b"PoisonError"
        assert h["mlstream.error.message"].startswith(b"PoisonError: cannot featurize e21-")
    assert not worker.task.done()  # never stopped or restarted
    m = worker.metrics.registry.get_sample_value
    assert m("mlstream_processing_errors_total", {"stage": "features"}) == len(bad)
    assert m("mlstream_events_dead_lettered_total", {"reason": "processing_error"}) == len(bad)

    group = f"{settings.app_id}-scorer"
    positions: dict = {}

    async def all_committed() -> bool:
        positions.update(await committed_and_end(settings, group, settings.topics.events))
        return all(c == end for c, end in positions.values())

    deadline = time.monotonic() + 20
    while not await all_committed() and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    assert all(c == end for c, end in positions.values()), positions  # no stalled partition


async def _send(settings, topic: str, values: list[bytes], partition: int = 0) -> None:
    from stream.kafka import make_producer, start_client

    producer = make_producer(settings)
    await start_client(producer, settings.kafka.bootstrap_servers)
    try:
        for v in values:
            await producer.send_and_wait(topic, v, partition=partition)
    finally:
        await producer.stop()


async def test_malformed_feature_batches_and_labels_never_stop_the_monitor(settings, start_worker):
    worker = start_worker(settings, roles=("scorer", "monitor"))
    m = worker.metrics.registry.get_sample_value
    sim = PaymentSimulator(seed=31)
    await produce(settings, sim, 2_000, rate=0)
    assert await wait_until(lambda: m("mlstream_monitor_rows_total") == 2_000, 60)

    real = orjson.loads((await read_topic(settings, settings.topics.features))[0].value)
    unequal = {**real, "event_ts": real["event_ts"][:-1]}
    future = {**real, "event_ids": [f"f{i}" for i in range(len(real["event_ids"]))],
              "event_ts": [t * 1000 for t in real["event_ts"]]}  # milliseconds for seconds
    bad_batches = [b"\xff garbage", orjson.dumps({"model": "fraud"}), orjson.dumps(unequal)]
    await _send(settings, settings.topics.features, bad_batches + [orjson.dumps(future)])
    bad_labels = [b"{", orjson.dumps({"event_id": "e31-1"}), orjson.dumps({"event_id": "e31-2", "label": "yes"}),
                  b"{\"event_id\": \"e31-3\", \"label\": 1e999}",
                  # the model is a classifier: a label is 0 or 1
                  orjson.dumps({"event_id": "e31-4", "label": 2}), orjson.dumps({"event_id": "e31-5", "label": -1})]
    await _send(settings, settings.topics.labels, bad_labels)
    await produce(settings, sim, 1_000, rate=0, start=2_000)

    assert await wait_until(lambda: m("mlstream_monitor_rows_total") == 3_000, 60)
    # three undecodable batches, the future batch's rows and six bad labels
    expected = 3 + len(real["event_ids"]) + len(bad_labels)
    assert await wait_until(lambda: m("mlstream_processing_errors_total", {"stage": "monitor"}) == expected, 20)
    assert not worker.task.done()

    async def dead_letters() -> list:
        return [r for r in await read_topic(settings, settings.topics.dead_letter)
                if dict(r.headers)["mlstream.error.reason"] == b"processing_error"]

    deadline = time.monotonic() + 20
    dead = await dead_letters()
    while len(dead) < 3 + len(bad_labels) and time.monotonic() < deadline:
        await asyncio.sleep(0.2)  # re-reading the topic; the condition is checked each round
        dead = await dead_letters()
    sources = sorted(dict(r.headers)["mlstream.source.topic"].decode() for r in dead)
    assert sources == sorted([settings.topics.features] * 3 + [settings.topics.labels] * len(bad_labels))
    assert sorted(r.value for r in dead) == sorted(bad_batches + bad_labels)
    why = {r.value: dict(r.headers)["mlstream.error.message"].decode() for r in dead}
    assert "label 2.0 of event 'e31-4' is not 0 or 1" in why[bad_labels[-2]], why[bad_labels[-2]]
