"""The loop closes: a retraining request gets one answer, a checked challenger is promoted,
and a repeat of the request is not answered twice."""

from __future__ import annotations

import asyncio

import pytest

from stream.kafka import ensure_topics, make_producer, start_client
from stream.messages import DriftEvent, ModelUpdate, decode, encode
from stream.monitoring.retrain import RetrainPolicy
from stream.registry import ModelStore
from stream.training.trainer import run_trainer
from tests.helpers import read_topic

pytestmark = pytest.mark.parametrize("broker_kind", ["kafka"])


async def test_a_retraining_request_is_answered_once_with_a_promoted_challenger(make_settings, model_store):
    settings = make_settings(trainer={"data": "simulated:concept_drift", "events": 16_000})
    await ensure_topics(settings)
    stop = asyncio.Event()
    trainer = asyncio.create_task(run_trainer(settings, stop))
    try:
        drift = DriftEvent(index=1, kind="data_drift", features=["log_amount"], evidence=[],
                           model="fraud", model_version="1", detected_at=7_200.0)
        first = RetrainPolicy(3_600).request(drift, now=7_200.0)
        other = RetrainPolicy(3_600).request(drift, now=99_000.0)
        assert first is not None and other is not None
        producer = make_producer(settings)
        await start_client(producer, settings.kafka.bootstrap_servers)
        for request in (first, first, other):  # the repeat must not be answered
            await producer.send_and_wait(settings.topics.retrain, encode(request),
                                         key=request.request_id.encode())
        await producer.stop()

        updates: list = []

        async def two_answers() -> bool:
            updates[:] = [decode(r.value, ModelUpdate)
                          for r in await read_topic(settings, settings.topics.model_updates)]
            return len(updates) >= 2

        deadline = asyncio.get_running_loop().time() + 120
        while not await two_answers() and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.5)  # re-reading the topic until the answers are there
        assert [u.request_id for u in updates] == [first.request_id, other.request_id]
        answer = updates[0]
        assert answer.promoted is True and answer.decision == "promote", answer.reason
        assert answer.champion_version == "1" and answer.challenger_version == "2"
        assert answer.model == "fraud" and answer.model_version == "2"
        assert answer.metrics["challenger"]["log_loss"] <= answer.metrics["champion"]["log_loss"]
        assert ModelStore(model_store).current_version("fraud") in ("2", "3")
    finally:
        stop.set()
        await asyncio.wait_for(trainer, 60)


async def test_a_failing_or_malformed_request_is_answered_as_failed_and_the_trainer_goes_on(make_settings):
    import uuid

    # the domain's feature function raises on some training events: training fails
    settings = make_settings(domain="tests.poison_domain:DOMAIN", trainer={"events": 2_000, "warmup": 0},
                             topics={"model_updates": f"updates-{uuid.uuid4().hex[:8]}"})
    await ensure_topics(settings)
    stop = asyncio.Event()
    trainer = asyncio.create_task(run_trainer(settings, stop))
    try:
        drift = DriftEvent(index=1, kind="data_drift", features=["log_amount"], evidence=[],
                           model="fraud", model_version="1", detected_at=7_200.0)
        request = RetrainPolicy(3_600).request(drift, now=7_200.0)
        assert request is not None
        producer = make_producer(settings)
        await start_client(producer, settings.kafka.bootstrap_servers)
        for value in (b"\x00 not a request", encode(request)):
            await producer.send_and_wait(settings.topics.retrain, value)
        await producer.stop()

        updates: list = []
        deadline = asyncio.get_running_loop().time() + 120
        while len(updates) < 2 and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.5)  # re-reading the topic until the answers are there
            updates[:] = [decode(r.value, ModelUpdate)
                          for r in await read_topic(settings, settings.topics.model_updates)]
        malformed, failed = updates
        assert malformed.request_id is None and malformed.decision == "failed" and not malformed.promoted
        assert malformed.reason.startswith("malformed request: MessageError"), malformed.reason
        assert failed.request_id == request.request_id and failed.decision == "failed"
        assert failed.reason.startswith("failed: PoisonError: cannot featurize"), failed.reason
        assert not trainer.done()
    finally:
        stop.set()
        await asyncio.wait_for(trainer, 60)
