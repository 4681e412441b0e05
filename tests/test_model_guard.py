"""At swap and at run time: a bad model never serves, a bad swap is reported once, a model
whose scores go bad is swapped back and alerted."""

from __future__ import annotations

import asyncio
import math
import time

import orjson

from stream.examples.payments import DOMAIN
from stream.examples.simulate import PaymentSimulator
from stream.kafka import make_producer, start_client
from stream.registry import ModelStore
from stream.tools.tally import wait_until
from tests.bad_models import nan_model, point_current_at, save_version
from tests.helpers import read_topic
from tests.slack_standin import SlackStandIn

WIDTH = len(DOMAIN.features.columns)


async def _produce(settings, sim: PaymentSimulator, n: int, start: int, huge_every: int = 0) -> None:
    """Simulated payments; with ``huge_every``, every such event pays 900,000 (a valid amount the
    model never saw in training)."""
    producer = make_producer(settings)
    await start_client(producer, settings.kafka.bootstrap_servers)
    try:
        futures = []
        for i, item in enumerate(sim.events(n, start=start)):
            value = item.value
            if huge_every and i % huge_every == 0:
                value = orjson.dumps({**orjson.loads(value), "amount": 900_000.0})
            futures.append(await producer.send(settings.topics.events, value, key=item.key))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def _outputs(settings, expected: int, timeout_s: float = 60.0):
    deadline = time.monotonic() + timeout_s
    while True:
        predictions = [orjson.loads(r.value) for r in await read_topic(settings, settings.topics.predictions)]
        dead = await read_topic(settings, settings.topics.dead_letter)
        if len(predictions) + len(dead) >= expected or time.monotonic() > deadline:
            return predictions, dead
        await asyncio.sleep(0.2)  # re-reading the topics; the condition is checked each round


async def test_a_bad_version_put_in_current_is_refused_once_and_retried_when_the_store_changes(
        make_settings, start_worker, model_store):
    from stream.kafka import ensure_topics

    settings = make_settings(scoring={"model_poll_interval_s": 0.1}, model_feed={"mode": "store"})
    await ensure_topics(settings)
    worker = start_worker(settings, roles=("scorer",))
    m = worker.metrics.registry.get_sample_value
    sim = PaymentSimulator(seed=41)
    await _produce(settings, sim, 500, 0)
    save_version(model_store, "2", nan_model(WIDTH), promote=False)
    point_current_at(model_store, "2")  # by hand: no promotion checks
    assert await wait_until(lambda: m("mlstream_model_loads_total", {"outcome": "swap_failed"}) == 1, 20)
    await _produce(settings, sim, 500, 500)
    # 30 polls later: still counted once, version 1 still serving
    assert not await wait_until(lambda: m("mlstream_model_loads_total", {"outcome": "swap_failed"}) > 1, 3)
    predictions, dead = await _outputs(settings, 1_000)
    assert len(predictions) == 1_000 and not dead
    assert {p["model_version"] for p in predictions} == {"1"}

    # the store changes: version 2 is rewritten with a good model, and is then picked up
    good = (model_store / "fraud" / "1" / "model.onnx").read_bytes()
    save_version(model_store, "2", good, promote=False)
    assert await wait_until(lambda: m("mlstream_model_loads_total", {"outcome": "swap_ok"}) == 1, 20)
    assert m("mlstream_model_loads_total", {"outcome": "swap_failed"}) == 1


async def test_invalid_scores_are_dead_lettered_and_the_model_is_swapped_back_and_alerted(
        make_settings, start_worker, model_store):
    from stream.kafka import ensure_topics

    with SlackStandIn() as slack:
        settings = make_settings(scoring={"model_poll_interval_s": 0.1, "invalid_score_window": 200,
                                          "max_invalid_score_share": 0.02, "max_batch_size": 100},
                                 model_feed={"mode": "store"},  # versions written into the store by hand
                                 alerts={"slack_webhook_url": slack.url()})
        await ensure_topics(settings)
        worker = start_worker(settings, roles=("scorer",))
        m = worker.metrics.registry.get_sample_value
        sim = PaymentSimulator(seed=42)
        await _produce(settings, sim, 500, 0)
        # passes every check (its reference data never reaches the amounts that break it)
        save_version(model_store, "2", nan_model(WIDTH, nan_above=12.0))
        assert ModelStore(model_store).current_version("fraud") == "2"
        assert await wait_until(lambda: m("mlstream_model_loads_total", {"outcome": "swap_ok"}) == 1, 20)
        await _produce(settings, sim, 2_000, 500, huge_every=10)  # 10% of amounts break version 2
        predictions, dead = await _outputs(settings, 2_500)

        assert len(predictions) + len(dead) == 2_500
        assert all(math.isfinite(p["score"]) and 0 <= p["score"] <= 1 for p in predictions)
        invalid = [r for r in dead if dict(r.headers)["mlstream.error.reason"] == b"invalid_score"]
        assert len(invalid) == len(dead) >= 1
        assert m("mlstream_events_dead_lettered_total", {"reason": "invalid_score"}) == len(invalid)
        assert m("mlstream_model_loads_total", {"outcome": "rolled_back"}) == 1
        last = max(predictions, key=lambda p: int(p["event_id"].rsplit("-", 1)[1]))
        assert last["model_version"] == "1"  # swapped back, and version 2 not swapped in again
        assert m("mlstream_model_loads_total", {"outcome": "swap_ok"}) == 1
        got = slack.wait_for(1, timeout_s=10)
        assert "fraud version 2 rolled back to 1" in got[0].json()["text"]
