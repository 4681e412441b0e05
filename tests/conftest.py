"""Shared fixtures: real brokers on free loopback ports, one of each kind per test session.

Tests run on the embedded broker unless they ask for Apache Kafka, per test or per module:
``pytest.mark.parametrize("broker_kind", ["kafka"])`` (or ``["embedded", "kafka"]`` for both).
Apache Kafka starts only if a test asks for it; ``make kafka`` fetches its jars."""

from __future__ import annotations

import asyncio
import shutil
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from stream.tools.broker import EmbeddedBroker
from stream.tools.kafka_server import KafkaServer
from stream.config import Settings
from stream.kafka import ensure_topics

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def broker() -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker() as b:
        yield b


@pytest.fixture(scope="session")
def kafka() -> Iterator[KafkaServer]:
    """Apache Kafka 4 (KRaft, one combined node); its start-up time is in ``kafka.startup_s``."""
    with KafkaServer() as k:
        yield k


@pytest.fixture()
def broker_kind() -> str:
    return "embedded"


@pytest.fixture()
def bootstrap(request: pytest.FixtureRequest, broker_kind: str) -> str:
    """The bootstrap servers of the broker this test runs on (see ``broker_kind``)."""
    if broker_kind not in ("embedded", "kafka"):
        raise ValueError(f"broker_kind must be embedded or kafka, not {broker_kind!r}")
    return request.getfixturevalue("broker" if broker_kind == "embedded" else "kafka").bootstrap


@pytest.fixture()
def model_store(tmp_path: Path) -> Path:
    """A private copy of the shipped model store (tests may promote or break models)."""
    dest = tmp_path / "models"
    shutil.copytree(ROOT / "models", dest)
    return dest


@pytest.fixture()
def make_settings(bootstrap: str, model_store: Path) -> Callable[..., Settings]:
    """Settings with topics and groups of their own, so tests never see each other's data."""
    run = uuid.uuid4().hex[:8]

    def make(**overrides: Any) -> Settings:
        topics = {name: f"t{run}.{name}" for name in
                  ("events", "labels", "predictions", "dead_letter", "features", "drift", "retrain", "changelog",
                   "model_updates", "labelled_examples", "models", "shadow_predictions", "shadow_verdicts")}
        topics.update(overrides.pop("topics", {}))
        base: dict[str, Any] = dict(
            app_id=f"test-{run}", kafka={"bootstrap_servers": bootstrap},
            topics=topics, model_store=model_store, metrics_port=0,
        )
        base.update(overrides)
        return Settings(**base)

    return make


@pytest.fixture()
async def settings(make_settings: Callable[..., Settings]) -> Settings:
    s = make_settings()
    await ensure_topics(s)
    return s


class RunningWorker:
    def __init__(self, task: asyncio.Task[None], stop: asyncio.Event, metrics: Any):
        self.task, self.stop, self.metrics = task, stop, metrics
        self.metrics_port: int | None = None  # the worker's /metrics port, once it listens

    async def close(self) -> None:
        self.stop.set()
        await asyncio.wait_for(self.task, 30)


@pytest.fixture()
async def start_worker() -> AsyncIterator[Callable[..., RunningWorker]]:
    """Run worker stages in this event loop; stopped at the end of the test."""
    from stream.app import run_worker
    from stream.metrics import Metrics

    running: list[RunningWorker] = []

    def start(settings: Settings, roles: tuple[str, ...] = ("scorer", "monitor")) -> RunningWorker:
        stop = asyncio.Event()
        metrics = Metrics.create()

        def on_metrics_port(port: int) -> None:  # runs inside the task, after ``w`` is bound
            w.metrics_port = port

        task = asyncio.ensure_future(run_worker(settings, roles, stop=stop, metrics=metrics,
                                                create_topics=False, handle_signals=False,
                                                on_metrics_port=on_metrics_port))
        w = RunningWorker(task, stop, metrics)
        running.append(w)
        return w

    yield start
    for w in running:
        if not w.task.done():
            await w.close()
