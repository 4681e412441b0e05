"""The broker misbehaves: it comes back without its topics, or stops answering. A worker
recreates the topics it created, or stops with one line; SIGTERM always stops it in time."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

import pytest

from stream.errors import BrokerError
from stream.examples.simulate import PaymentSimulator
from stream.kafka import ensure_topics
from stream.metrics import Metrics
from stream.tools.broker import EmbeddedBroker, free_port
from stream.tools.tally import wait_until
from stream.tools.traffic import produce
from tests.helpers import stop_process
from tests.test_cli import ROOT


def _start(settings, *, create_topics: bool):
    from stream.app import run_worker

    stop, metrics = asyncio.Event(), Metrics.create()
    task = asyncio.ensure_future(run_worker(settings, ("scorer", "monitor"), stop=stop, metrics=metrics,
                                            create_topics=create_topics, handle_signals=False))
    return task, stop, metrics


def _predicted(metrics) -> float:
    return metrics.registry.get_sample_value("mlstream_predictions_total", {"model": "fraud", "version": "1"}) or 0


async def test_topics_lost_in_a_broker_restart_are_recreated_by_the_worker_that_created_them(make_settings):
    port = free_port()
    settings = make_settings(kafka={"bootstrap_servers": f"127.0.0.1:{port}", "topic_check_interval_s": 1,
                                    "request_deadline_s": 5})
    sim = PaymentSimulator(seed=71)
    broker = EmbeddedBroker(port=port).start()
    task, stop, metrics = _start(settings, create_topics=True)
    try:
        assert await wait_until(lambda: metrics.registry.get_sample_value(
            "mlstream_worker_info", {"role": "scorer"}) == 1, 30)
        await produce(settings, sim, 300, rate=0)
        assert await wait_until(lambda: _predicted(metrics) == 300, 30)
        broker.stop()
        broker = EmbeddedBroker(port=port).start()  # in-memory storage: no topics any more

        from stream.kafka import missing_topics

        missing: list = [None]

        async def recreated() -> bool:
            missing[:] = await missing_topics(settings)
            return not missing

        deadline = time.monotonic() + 60
        while not await recreated() and time.monotonic() < deadline:
            await asyncio.sleep(0.5)  # polling the cluster's topic list
        assert missing == []
        assert not task.done()  # neither crashed nor stopped: no livelock either
        # what was produced to the recreated topics is scored (the worker started over on them)
        await produce(settings, sim, 200, rate=0, start=300)
        assert await wait_until(lambda: _predicted(metrics) == 500, 60), _predicted(metrics)
        began = time.monotonic()
        stop.set()
        await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), settings.shutdown_grace_s + 2)
        assert time.monotonic() - began <= settings.shutdown_grace_s + 2
        assert task.exception() is None
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), 30)
        broker.stop()


async def test_a_worker_that_does_not_create_topics_stops_with_one_line_when_they_disappear(make_settings):
    port = free_port()
    settings = make_settings(kafka={"bootstrap_servers": f"127.0.0.1:{port}", "topic_check_interval_s": 1,
                                    "request_deadline_s": 5})
    broker = EmbeddedBroker(port=port).start()
    try:
        await ensure_topics(settings)
        task, stop, metrics = _start(settings, create_topics=False)
        assert await wait_until(lambda: metrics.registry.get_sample_value(
            "mlstream_worker_info", {"role": "scorer"}) == 1, 30)
        broker.stop()
        broker = EmbeddedBroker(port=port).start()
        with pytest.raises(BrokerError, match="no longer exist on the cluster and this worker does not create topics"):
            await asyncio.wait_for(task, 60)
    finally:
        broker.stop()


def test_sigterm_stops_a_worker_within_the_grace_period_even_when_the_broker_hangs(model_store, tmp_path):
    broker = EmbeddedBroker().start()
    assert broker.process is not None
    env = {**os.environ, "MLSTREAM_KAFKA__BOOTSTRAP_SERVERS": broker.bootstrap, "MLSTREAM_METRICS_PORT": "0",
           "MLSTREAM_MODEL_STORE": str(model_store), "MLSTREAM_SHUTDOWN_GRACE_S": "4",
           "MLSTREAM_APP_ID": f"sigterm-{os.getpid()}"}
    log = tmp_path / "worker.log"
    worker = subprocess.Popen([sys.executable, "-m", "stream.cli", "worker"], cwd=ROOT, env=env,
                              stderr=log.open("w"), start_new_session=True)
    frozen = False
    try:
        deadline = time.monotonic() + 60
        ready = False
        while time.monotonic() < deadline and not ready:
            ready = "partitions assigned" in log.read_text()
            time.sleep(0.2)  # polling the worker's log for readiness
        assert ready, log.read_text()
        traffic = subprocess.Popen([sys.executable, "-m", "stream.cli", "simulate", "--rate", "2000",
                                    "--events", "1000000"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL, start_new_session=True)
        time.sleep(2.0)  # traffic flowing: the worker has outputs and commits in flight
        os.kill(broker.process.pid, signal.SIGSTOP)  # every Kafka call now hangs
        frozen = True
        time.sleep(1.0)  # let the worker get stuck waiting for acknowledgements
        began = time.monotonic()
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=30)
        took = time.monotonic() - began
        print(f"stopped {took:.2f}s after SIGTERM, rc {worker.returncode}")
        assert took <= 4 + 1.5, took
    finally:
        if frozen:
            os.kill(broker.process.pid, signal.SIGCONT)
        if worker.poll() is None:
            stop_process(worker)
        if "traffic" in locals():
            stop_process(traffic)
        broker.stop()


def test_sigterm_stops_the_trainer_within_the_grace_period_even_when_the_broker_hangs(model_store, tmp_path):
    import urllib.error
    import urllib.request

    from stream.tools.broker import free_port

    broker = EmbeddedBroker().start()
    assert broker.process is not None
    port = free_port()
    env = {**os.environ, "MLSTREAM_KAFKA__BOOTSTRAP_SERVERS": broker.bootstrap, "MLSTREAM_METRICS_PORT": str(port),
           "MLSTREAM_MODEL_STORE": str(model_store), "MLSTREAM_SHUTDOWN_GRACE_S": "6",
           "MLSTREAM_APP_ID": f"sigterm-trainer-{os.getpid()}"}
    log = tmp_path / "trainer.log"
    trainer = subprocess.Popen([sys.executable, "-m", "stream.cli", "trainer"], cwd=ROOT, env=env,
                               stderr=log.open("w"), start_new_session=True)

    def ready() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=2) as reply:
                return reply.status == 200
        except (urllib.error.URLError, OSError):
            return False

    frozen = False
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not ready() and trainer.poll() is None:
            time.sleep(0.2)  # polling /ready
        assert ready(), log.read_text()[-3000:]
        os.kill(broker.process.pid, signal.SIGSTOP)  # every Kafka call now hangs
        frozen = True
        began = time.monotonic()
        trainer.send_signal(signal.SIGTERM)
        trainer.wait(timeout=30)
        took = time.monotonic() - began
        print(f"trainer stopped {took:.2f}s after SIGTERM, rc {trainer.returncode}")
        assert took <= 6 + 1.5, took
        assert "Traceback" not in log.read_text(), log.read_text()[-3000:]
    finally:
        if frozen:
            os.kill(broker.process.pid, signal.SIGCONT)
        if trainer.poll() is None:
            stop_process(trainer)
        broker.stop()


def test_a_monitor_process_whose_worker_died_stops_within_the_grace_period(make_settings):
    """The worker SIGKILLed (nobody will terminate its monitor process) while the broker stops
    answering: the orphan notices its parent is gone and exits within the grace period."""
    import multiprocessing

    from stream.stage_process import _child_main

    broker = EmbeddedBroker().start()
    assert broker.process is not None
    settings = make_settings(kafka={"bootstrap_servers": broker.bootstrap, "request_deadline_s": 5},
                             shutdown_grace_s=4)
    asyncio.run(ensure_topics(settings))
    ctx = multiprocessing.get_context("spawn")
    receiver, sender = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child_main, args=(settings, sender, 0.2, False), daemon=True)
    proc.start()
    sender.close()
    try:
        assert receiver.poll(60), "the monitor process sent no snapshot"
        receiver.recv()
        os.kill(broker.process.pid, signal.SIGSTOP)  # every Kafka call now hangs
        receiver.close()  # the parent is gone
        began = time.monotonic()
        proc.join(settings.shutdown_grace_s + 15)
        assert not proc.is_alive(), "the orphaned monitor process is still running"
        assert time.monotonic() - began <= settings.shutdown_grace_s + 15
    finally:
        if proc.is_alive():
            proc.kill()
        os.kill(broker.process.pid, signal.SIGCONT)
        broker.stop()
