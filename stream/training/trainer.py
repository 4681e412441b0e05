"""The trainer closes the loop: a retraining request in, a checked challenger, maybe a promotion.

It is a faust app (an agent on the retrain topic and a changelog-backed table of requests
already answered), because this is control-plane traffic, a few messages a day, where faust's
per-event cost does not matter and its durable tables do the de-duplication for us. Training runs
in a thread so the agent keeps heart-beating. A promotion flips the model store's ``CURRENT``,
which every scorer picks up between two batches.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

import faust
import orjson

from stream.config import Settings
from stream.domain import Domain, load_domain
from stream.error_policy import ErrorPolicy
from stream.messages import ModelUpdate, RetrainRequest, decode, encode
from stream.metrics import Metrics
from stream.registry import ModelStore
from stream.scoring.model import load_model
from stream.training.train import TrainingData, holdout_metrics, read_jsonl, train

log = logging.getLogger(__name__)


def training_data(settings: Settings, domain: Domain) -> TrainingData:
    source = settings.trainer.data
    if source.startswith("simulated:"):
        from stream.examples.simulate import PaymentSimulator

        scenario = source.split(":", 1)[1]
        # the world as it is now: the scenario's change already in force from the first event
        sim = PaymentSimulator(seed=1_000, scenario=scenario, drift_at=0)
        events, labels = [], []
        for item in sim.events(settings.trainer.events):
            events.append(orjson.loads(item.value))
            labels.append(float(item.label or 0))
        import numpy as np

        return TrainingData(events, np.asarray(labels))
    return read_jsonl(Path(source), domain)


def challenge(settings: Settings, request: RetrainRequest) -> ModelUpdate:
    """Train a challenger for a request, compare it with the champion on the same recent
    holdout, promote it if it is at least as good. Returns the model-update message."""
    domain = load_domain(settings.domain)
    store = ModelStore(settings.model_store)
    name = settings.model_name
    champion = load_model(store, name, domain.features.columns)
    data = training_data(settings, domain)
    warmup = settings.trainer.warmup
    card = train(domain, data, store, name=name, warmup=warmup, promote=False)
    challenger = load_model(store, name, domain.features.columns, card["version"])  # checks it
    ours = holdout_metrics(domain, challenger.predict, data, warmup=warmup)
    theirs = holdout_metrics(domain, champion.predict, data, warmup=warmup)
    tol = settings.trainer.tolerance
    if domain.task == "classification":
        # log loss, a proper scoring rule: it sees a champion whose ranking still holds but whose
        # probabilities no longer do (what a shift does first, and what CBPE relies on)
        better = ours["log_loss"] <= theirs["log_loss"] * (1 + tol)
        why = (f"holdout log loss {ours['log_loss']:.4f} vs champion {theirs['log_loss']:.4f} "
               f"(AUC {ours['auc']:.4f} vs {theirs['auc']:.4f})")
    else:
        better = ours["mae"] <= theirs["mae"] * (1 + tol)
        why = f"holdout MAE {ours['mae']:.4f} vs champion {theirs['mae']:.4f}"
    if better:
        store.promote(name, card["version"])
    log.info("challenger %s version %s %s: %s", name, card["version"],
             "promoted" if better else "rejected", why)
    metrics: dict[str, dict[str, float | None]] = {"challenger": {k: v for k, v in ours.items()},
                                                   "champion": {k: v for k, v in theirs.items()}}
    return ModelUpdate(
        request_id=request.request_id, model=name,
        model_version=card["version"] if better else champion.version,
        decision="promote" if better else "reject", promoted=better, reason=why, reasons=[why],
        champion_version=champion.version, challenger_version=card["version"],
        previous_version=champion.version, metrics=metrics,
        decided_at=time.time(),
    )


def build_trainer(settings: Settings) -> faust.App:
    """The faust app; ``await app.start()`` / ``await app.stop()`` run it in the current loop."""
    t = settings.topics
    app = faust.App(
        f"{settings.app_id}-trainer",
        broker=[f"kafka://{s.strip()}" for s in settings.kafka.bootstrap_servers.split(",")],
        broker_credentials=_credentials(settings),
        store="memory://",
        web_enabled=False,  # no listener at all: nothing to bind to 0.0.0.0
        topic_partitions=1,
        topic_replication_factor=settings.topics.replication_factor,
        consumer_auto_offset_reset="earliest",
        stream_recovery_delay=0.0,
        table_standby_replicas=0,
        broker_heartbeat_interval=1.0,
        broker_session_timeout=settings.kafka.session_timeout_ms / 1000,
    )
    requests = app.topic(t.retrain, value_serializer="raw", partitions=1)
    updates = app.topic(t.model_updates, value_serializer="raw", partitions=1)
    answered = app.Table("answered-requests", default=str, partitions=1)

    policy = ErrorPolicy.from_settings(settings, Metrics.create())

    @app.agent(requests)
    async def answer(stream: faust.StreamT[bytes]) -> None:
        async for value in stream:
            request, exc = policy.call("trainer", "a retraining request", decode, value, RetrainRequest)
            if request is None:  # answered, so whoever sent it is not left waiting
                await updates.send(key=None, value=encode(ModelUpdate(
                    model=settings.model_name, decision="failed", decided_at=time.time(),
                    reason=f"malformed request: {policy.describe(exc or ValueError())}")))
                continue
            request_id = request.request_id
            if answered[request_id]:
                continue  # a repeat: same drift, already answered
            result, exc = await policy.call_async("trainer", f"request {request_id}",
                                                  asyncio.to_thread, challenge, settings, request)
            update = result if result is not None else ModelUpdate(
                request_id=request_id, model=settings.model_name, model_version=request.model_version,
                decision="failed", reason=f"failed: {policy.describe(exc or ValueError())}",
                decided_at=time.time())
            answered[request_id] = "promoted" if update.promoted else "rejected"
            await updates.send(key=request_id.encode(), value=encode(update))

    return app


def _credentials(settings: Settings) -> Any:
    k = settings.kafka
    if k.security_protocol == "PLAINTEXT":
        return None
    ssl_context = None
    if k.security_protocol in ("SSL", "SASL_SSL"):
        from stream.kafka import client_options

        ssl_context = client_options(k)["ssl_context"]
    if k.security_protocol.startswith("SASL"):
        return faust.SASLCredentials(
            username=k.sasl_username, password=k.sasl_password.get_secret_value() if k.sasl_password else None,
            mechanism=k.sasl_mechanism or "PLAIN", ssl_context=ssl_context)
    return faust.SSLCredentials(ssl_context)


async def run_trainer(settings: Settings, stop: asyncio.Event) -> None:
    app = build_trainer(settings)
    await app.start()
    try:
        await stop.wait()
    finally:
        await app.stop()
