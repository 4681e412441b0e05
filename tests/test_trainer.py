"""The trainer learns from the labelled-examples topic: a request without enough labels waits
and is decided later, a challenger not shown better is rejected with its reason, a repeat is
not answered twice, and every decision is on the model-updates topic and in the metrics."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import numpy as np
import orjson
import pytest

from stream.examples.payments import DOMAIN
from stream.examples.simulate import WARMUP_EVENTS, PaymentSimulator
from stream.kafka import ensure_topics, make_producer, send_messages, start_client
from stream.messages import DriftEvent, Message, ModelUpdate, RetrainRequest, decode, encode
from stream.monitoring.examples import ScoredRows, labelled_example
from stream.monitoring.retrain import RetrainPolicy
from stream.registry import ModelStore
from stream.tools.tally import wait_until
from stream.training.trainer import TrainerMetrics
from stream.training.trainer_app import run_trainer
from tests.helpers import read_topic


def labelled_examples(n: int, start: int, seed: int = 5) -> list[Message]:
    """Examples as the monitor writes them: features after a warm-up, the shipped model's version."""
    sim = PaymentSimulator(seed=seed)
    items = list(sim.events(WARMUP_EVENTS + start + n))
    events = [orjson.loads(i.value) for i in items]
    X = DOMAIN.offline_features(events)[WARMUP_EVENTS + start:]
    events = events[WARMUP_EVENTS + start:]
    labels = [i.label for i in items[WARMUP_EVENTS + start:]]
    cols = DOMAIN.columns(events)
    rows = ScoredRows("fraud", "1", [e["event_id"] for e in events], X,
                      np.array([e["ts"] for e in events]),
                      {c: list(cols[c]) for c, k in DOMAIN.features.monitored.items() if k == "categorical"})
    return [Message(None, encode(labelled_example((rows, i), 0.5, float(labels[i]), 0.0))) for i in range(n)]


async def send(settings, topic: str, messages: list[Message]) -> None:
    producer = make_producer(settings)
    await start_client(producer, settings.kafka.bootstrap_servers)
    try:
        for lo in range(0, len(messages), 2_000):
            await asyncio.gather(*await send_messages(producer, topic, 0, messages[lo:lo + 2_000]))
    finally:
        await producer.stop()


def retrain_request() -> RetrainRequest:
    """The request a drift of ``log_amount`` on version 1 makes."""
    drift = DriftEvent(index=1, kind="data_drift", features=["log_amount"], evidence=[], model="fraud",
                       model_version="1", detected_at=7_200.0)
    request = RetrainPolicy(3_600).request(drift, now=7_200.0)
    assert request is not None
    return request


async def updates(settings) -> list[dict]:
    return [orjson.loads(r.value) for r in await read_topic(settings, settings.topics.model_updates)]


async def test_too_few_labels_wait_then_a_challenger_not_shown_better_is_rejected(make_settings, model_store):
    settings = make_settings(trainer={"min_holdout": 2_000, "holdout_rows": 2_500, "min_train_rows": 2_000,
                                      "retry_interval_s": 1.0, "bootstrap": 300})
    await ensure_topics(settings)
    await send(settings, settings.topics.labelled_examples, labelled_examples(1_500, 0))
    metrics = TrainerMetrics()
    stop = asyncio.Event()
    trainer = asyncio.create_task(run_trainer(settings, stop, metrics=metrics))
    try:
        request = retrain_request()
        await send(settings, settings.topics.retrain, [Message(request.request_id.encode(), encode(request))] * 2)
        got: list[dict] = []

        async def decided(n: int) -> bool:
            got[:] = await updates(settings)
            return len(got) >= n

        assert await wait_until(lambda: metrics.decisions.labels("fraud", "wait")._value.get() >= 1, 120)
        assert await decided(1)
        wait = got[0]
        assert wait["decision"] == "wait" and wait["challenger_version"] is None
        assert any("labelled rows" in r and "needed" in r for r in wait["reasons"]), wait["reasons"]
        # the labels come in; the waiting request is retried and decided
        await send(settings, settings.topics.labelled_examples, labelled_examples(6_000, 1_500))
        assert await wait_until(lambda: metrics.decisions.labels("fraud", "reject")._value.get() >= 1, 180)
        assert await decided(2)
        verdict = got[-1]
        assert verdict["request_id"] == request.request_id and verdict["decision"] == "reject"
        assert verdict["promoted"] is False and verdict["challenger_version"] == "2"
        assert verdict["training_window"]["rows"] >= 2_000 and verdict["holdout_window"]["rows"] == 2_500
        # the holdout is newer than every training row (time-ordered, unseen in training)
        assert verdict["training_window"]["event_ts"][1] < verdict["holdout_window"]["event_ts"][0]
        assert verdict["reasons"][0].startswith("log loss ")
        assert any("not shown better" in r or "calibration" in r for r in verdict["reasons"][1:]), verdict["reasons"]
        diff = verdict["metrics"]["difference"]
        assert diff["ci_low"] <= diff["mean"] <= diff["ci_high"]
        store = ModelStore(model_store)
        assert store.state("fraud", "2") == "rejected" and store.current_version("fraud") == "1"
        card, _ = store.load("fraud", "2")
        lineage = card.data["lineage"]
        assert lineage["parent_version"] == "1" and lineage["request_id"] == request.request_id
        assert lineage["training_window"]["offsets"]["0"][0] >= 0 and lineage["mlstream_version"]
        assert metrics.requests.labels("duplicate")._value.get() == 1
        assert metrics.registry.get_sample_value("mlstream_trainer_training_rows", {"model": "fraud"}) >= 2_000
    finally:
        stop.set()
        await asyncio.wait_for(trainer, 60)


async def test_an_operators_promotion_while_a_challenger_trains_is_kept(make_settings, model_store, tmp_path):
    """An operator promotes version 5 by hand (another store, published to the model feed) while
    the trainer fits a challenger against version 1: the decision is made on the registry as it
    is then, so the feed still names 5, and the challenger is rejected, judged against 1 only.
    Before, the trainer published its own states over the operator's, and 1 served again."""
    import json
    import shutil

    from stream.messages import ModelStates
    from stream.feed_publish import publish
    from stream.model_feed import states_key
    from tests import operator_domain

    settings = make_settings(domain="tests.operator_domain:DOMAIN",
                             trainer={"min_holdout": 2_000, "holdout_rows": 2_500, "min_train_rows": 2_000,
                                      "bootstrap": 300})
    await ensure_topics(settings)
    await send(settings, settings.topics.labelled_examples, labelled_examples(6_000, 0))
    # the operator's store: the shipped one and a version 5 (version 1's files, renamed), promoted
    op_store = ModelStore(shutil.copytree(model_store, tmp_path / "operator"))
    shutil.copytree(op_store.root / "fraud" / "1", op_store.root / "fraud" / "5")
    card = json.loads((op_store.root / "fraud" / "5" / "card.json").read_text())
    (op_store.root / "fraud" / "5" / "card.json").write_text(json.dumps({**card, "version": "5"}))
    op_store.promote("fraud", "5", reason="by hand")
    operator_domain.DURING_TRAINING.append(
        lambda: asyncio.run(publish(settings, op_store, "fraud", "promote 5 by hand")))
    metrics = TrainerMetrics()
    stop = asyncio.Event()
    trainer = asyncio.create_task(run_trainer(settings, stop, metrics=metrics))
    try:
        request = retrain_request()
        await send(settings, settings.topics.retrain, [Message(request.request_id.encode(), encode(request))])
        assert await wait_until(lambda: metrics.decisions.labels("fraud", "reject")._value.get() >= 1
                                or trainer.done(), 180)
        assert not trainer.done(), trainer.exception()
        assert not operator_domain.DURING_TRAINING  # the operator acted during the fit
        decided = (await updates(settings))[-1]
        assert decided["decision"] == "reject" and decided["champion_version"] == "1"
        records = await read_topic(settings, settings.topics.models)
        states = [decode(r.value, ModelStates) for r in records if r.key == states_key("fraud")]
        assert states[-1].champion == "5" and states[-1].states.get("2") == "rejected", states[-1]
        assert ModelStore(model_store).current_version("fraud") == "5"
    finally:
        operator_domain.DURING_TRAINING.clear()
        stop.set()
        await asyncio.wait_for(trainer, 60)


def test_the_trainer_never_imports_the_simulator():
    code = ("import sys, stream.training.trainer, stream.training.trainer_app, stream.training.challenge; "
            "sys.exit(any(m.startswith('stream.examples.simulate') for m in sys.modules))")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


async def test_a_failing_or_malformed_request_is_answered_as_failed_and_the_trainer_goes_on(make_settings, tmp_path):
    # the bootstrap file through a domain whose feature function raises on some events
    data = tmp_path / "labelled.jsonl"
    with data.open("wb") as fh:
        for item in PaymentSimulator(seed=3).events(2_000):
            fh.write(orjson.dumps({**orjson.loads(item.value), "label": item.label}) + b"\n")
    settings = make_settings(domain="tests.poison_domain:DOMAIN", trainer={"data": str(data), "warmup": 0})
    await ensure_topics(settings)
    stop = asyncio.Event()
    trainer = asyncio.create_task(run_trainer(settings, stop))
    try:
        request = retrain_request()
        await send(settings, settings.topics.retrain, [Message(None, b"\x00 not a request"),
                                                       Message(request.request_id.encode(), encode(request))])
        got: list = []

        async def two() -> bool:
            got[:] = [decode(r.value, ModelUpdate) for r in await read_topic(settings, settings.topics.model_updates)]
            return len(got) >= 2

        deadline = asyncio.get_running_loop().time() + 120
        while not await two() and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.5)  # re-reading the topic until the answers are there
        malformed, failed = got
        assert malformed.request_id is None and malformed.decision == "failed" and not malformed.promoted
        assert malformed.reason.startswith("malformed request: MessageError"), malformed.reason
        assert failed.request_id == request.request_id and failed.decision == "failed"
        assert failed.reason.startswith("failed: PoisonError: cannot featurize"), failed.reason
        assert not trainer.done()
    finally:
        stop.set()
        await asyncio.wait_for(trainer, 60)


async def test_the_trainer_is_ready_once_it_has_published_its_registry_for_the_scorers(make_settings, tmp_path):
    """A fresh deployment: scorers with empty local stores get the trainer's champion. Restarted
    with nothing new, it publishes nothing (a start-up publish landing after an operator's
    promotion would undo it); with a change the feed missed, it publishes that."""
    import urllib.error
    import urllib.request

    from stream.messages import ModelStates
    from stream.model_feed import states_key
    from stream.tools.broker import free_port

    port = free_port()
    settings = make_settings(metrics_port=port)
    stop = asyncio.Event()

    def ready() -> int | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=2) as reply:
                return int(reply.status)
        except urllib.error.HTTPError as exc:
            return exc.code
        except OSError:
            return None

    async def states() -> list[ModelStates]:
        records = await read_topic(settings, settings.topics.models)
        return [decode(r.value, ModelStates) for r in records if r.key == states_key("fraud")]

    async def run_until_ready() -> None:
        stop.clear()
        task = asyncio.create_task(run_trainer(settings, stop))
        try:
            assert await wait_until(lambda: ready() == 200 or task.done(), 60, poll_s=0.2)
            assert not task.done(), task.exception()
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)
        assert ready() is None  # the port is closed once the trainer stopped

    await run_until_ready()
    first = await states()
    assert first and first[-1].champion == "1" and first[-1].reason == "trainer started"
    await run_until_ready()  # the feed holds its states already: nothing to say
    assert len(await states()) == len(first)
    # a change the feed missed (as a decision whose publish failed leaves the store)
    ModelStore(settings.model_store).set_state("fraud", "1", "champion", "confirmed by hand")
    await run_until_ready()
    after = await states()
    assert len(after) == len(first) + 1 and after[-1].reason == "trainer started"


async def test_a_trainer_whose_stream_app_crashed_stops_with_the_reason_without_secrets(make_settings):
    """mode crashes a whole faust app when one of its tasks raises: the trainer must not idle on."""
    import faust

    from stream.error_policy import ErrorPolicy
    from stream.errors import StreamError
    from stream.metrics import Metrics
    from stream.training.trainer_app import until_stopped_or_crashed

    settings = make_settings(kafka={"sasl_password": "hunter2-secret"})
    policy = ErrorPolicy.from_settings(settings, Metrics.create())
    app = faust.App("crash-probe", broker="kafka://127.0.0.1:1", web_enabled=False)
    stop = asyncio.Event()
    watch = asyncio.create_task(until_stopped_or_crashed(app, stop, policy, poll_s=0.05))
    assert not await wait_until(watch.done, 0.3)  # running, not crashed: it waits
    await app.crash(RuntimeError("send failed: sasl password hunter2-secret refused"))
    assert await wait_until(watch.done, 5)
    err = watch.exception()
    assert isinstance(err, StreamError) and "the trainer's stream app crashed: RuntimeError" in str(err)
    assert "hunter2-secret" not in str(err)
    # a stop is a stop, crashed or not
    stop.set()
    assert await until_stopped_or_crashed(app, stop, policy) is None


@pytest.mark.parametrize("broker_kind", ["kafka"])
async def test_a_publish_the_broker_refused_reaches_the_feed_without_an_operator(make_settings, broker_kind):
    """The broker refuses the trainer's publish (its models topic takes no record that large): the
    registry keeps the change, ``mlstream_trainer_unpublished_changes`` says so, and once the
    broker accepts again the trainer publishes it by itself within its retry interval. Before,
    the change waited for an operator's ``mlstream models publish`` (or a restart)."""
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    from stream.kafka import topic_configs
    from stream.messages import ModelStates
    from stream.model_feed import states_key

    settings = make_settings(trainer={"retry_interval_s": 0.5})
    await ensure_topics(settings)
    models = settings.topics.models

    async def set_topic(**extra: str) -> None:  # AlterConfigs replaces every dynamic config
        admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka.bootstrap_servers)
        await admin.start()
        try:
            await admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, models,
                                                      configs={**topic_configs(settings, models), **extra})])
        finally:
            await admin.close()

    committed = settings.model_copy(update={"processing_guarantee": "exactly_once"})  # read_committed

    async def states() -> list[ModelStates]:
        return [decode(r.value, ModelStates) for r in await read_topic(committed, models) if r.key == states_key("fraud")]

    await set_topic(**{"max.message.bytes": "1000"})
    metrics = TrainerMetrics()
    unpublished = lambda: metrics.registry.get_sample_value("mlstream_trainer_unpublished_changes", {"model": "fraud"})
    stop = asyncio.Event()
    task = asyncio.create_task(run_trainer(settings, stop, metrics=metrics))
    try:
        # the start-up publish (the champion, for scorers with empty stores) refused
        assert await wait_until(lambda: unpublished() == 1 or task.done(), 60)
        assert not task.done(), task.exception()
        assert await states() == []
        await set_topic()  # the broker's default limit again
        assert await wait_until(lambda: unpublished() == 0 or task.done(), 60)
        assert not task.done(), task.exception()
        got = await states()
        assert [(s.champion, s.reason) for s in got] == [("1", "trainer started (published again)")]
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)
