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
