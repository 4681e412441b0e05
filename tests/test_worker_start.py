"""A worker process at start: an absent broker is waited for with bounded backoff, then one
line and exit 2; a broker that comes up within the budget is waited for. (A busy metrics port:
tests/test_health.py.)"""

from __future__ import annotations

import asyncio
import time

import orjson

from stream.examples.simulate import PaymentSimulator
from stream.kafka import ensure_topics
from stream.tools.broker import EmbeddedBroker, free_port
from stream.tools.tally import wait_until
from stream.tools.traffic import produce
from tests.helpers import read_topic
from tests.test_cli import mlstream


def test_an_absent_broker_is_waited_for_then_one_line_and_exit_2(model_store):
    began = time.monotonic()
    result = mlstream("worker", timeout=60, env={
        "MLSTREAM_KAFKA__BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}", "MLSTREAM_METRICS_PORT": "0",
        "MLSTREAM_KAFKA__CONNECT_TIMEOUT_S": "3", "MLSTREAM_MODEL_STORE": str(model_store)})
    took = time.monotonic() - began
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert "Traceback" not in result.stderr
    assert lines[-1].startswith("mlstream: error: Kafka at 127.0.0.1:")
    assert "not reachable after" in lines[-1] and "MLSTREAM_KAFKA__CONNECT_TIMEOUT_S" in lines[-1]
    assert sum("not ready" in line for line in lines) == 1  # repeats rate-limited
    assert 3 <= took < 30


async def test_a_worker_started_before_its_broker_waits_for_it(make_settings):
    from stream.app import run_worker
    from stream.metrics import Metrics

    port = free_port()
    settings = make_settings(kafka={"bootstrap_servers": f"127.0.0.1:{port}", "connect_timeout_s": 60})
    stop = asyncio.Event()
    metrics = Metrics.create()
    task = asyncio.ensure_future(run_worker(settings, ("scorer",), stop=stop, metrics=metrics,
                                            handle_signals=False))
    try:
        await asyncio.sleep(2.0)  # the broker is late on purpose: the worker must be waiting
        assert not task.done()
        with EmbeddedBroker(port=port):
            await ensure_topics(settings)
            await produce(settings, PaymentSimulator(seed=61), 200, rate=0)
            m = metrics.registry.get_sample_value
            assert await wait_until(lambda: (m("mlstream_predictions_total", {"model": "fraud", "version": "1"}) or 0) == 200, 60)
            predictions = await read_topic(settings, settings.topics.predictions)
            assert len({orjson.loads(r.value)["event_id"] for r in predictions}) == 200
            stop.set()
            await asyncio.wait_for(task, 30)
    finally:
        stop.set()
        if not task.done():
            task.cancel()


def test_a_bad_webhook_url_is_one_line_and_nothing_else(broker, model_store):
    result = mlstream("worker", timeout=60, env={
        "MLSTREAM_KAFKA__BOOTSTRAP_SERVERS": broker.bootstrap, "MLSTREAM_METRICS_PORT": "0",
        "MLSTREAM_MODEL_STORE": str(model_store), "MLSTREAM_ALERTS__SLACK_WEBHOOK_URL": "not-a-url",
        "MLSTREAM_LOG_LEVEL": "WARNING"})
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["mlstream: error: alerts.slack_webhook_url is not an http(s) URL"]
