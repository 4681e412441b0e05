"""The trainer as a service: a faust app (an agent on the retrain topic, a changelog-backed
table of requests and their state, timers that retry waiting requests, decide overdue verdicts
and publish again a decision whose publish failed) around :class:`~stream.training.trainer.Trainer`,
with its /metrics, /healthz and /ready (``mlstream trainer``).

faust, because this is control-plane traffic, a few messages a day, where faust's per-event
cost does not matter and its durable tables do the de-duplication for us.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import faust
import orjson

from stream.alerts import Notifier
from stream.config import Settings
from stream.error_policy import ErrorPolicy
from stream.errors import StreamError
from stream.http import Health, serve
from stream.kafka import ensure_topics
from stream.messages import ModelUpdate, RetrainRequest, ShadowVerdict, decode, encode
from stream.training.trainer import Trainer, TrainerMetrics

log = logging.getLogger(__name__)


def build_trainer(settings: Settings, trainer: Trainer) -> faust.App:
    """The faust app; ``await app.start()`` / ``await app.stop()`` run it in the current loop."""
    t = settings.topics
    app = faust.App(
        f"{settings.app_id}-trainer",
        broker=[f"kafka://{s.strip()}" for s in settings.kafka.bootstrap_servers.split(",")],
        broker_credentials=_credentials(settings),
        store="memory://",
        # faust writes a version marker into its data dir: keep it out of the working directory
        datadir=str(Path(tempfile.gettempdir()) / f"{settings.app_id}-trainer-data"),
        web_enabled=False,  # no listener at all: nothing to bind to 0.0.0.0
        topic_partitions=1,
        topic_replication_factor=settings.topics.replication_factor,
        consumer_auto_offset_reset="earliest",
        stream_recovery_delay=0.0,
        table_standby_replicas=0,
        broker_heartbeat_interval=1.0,
        broker_session_timeout=settings.kafka.session_timeout_ms / 1000,
    )
    # waiting requests come back through a topic of the trainer's own: a faust table changes
    # only inside stream iteration
    retry_topic = retry_topic_name(settings)
    requests = app.topic(t.retrain, retry_topic, value_serializer="raw", partitions=1)
    retries = app.topic(retry_topic, value_serializer="raw", partitions=1, internal=True)
    updates = app.topic(t.model_updates, value_serializer="raw", partitions=1)
    verdicts = app.topic(t.shadow_verdicts, value_serializer="raw", partitions=1)
    # request id -> {"state": decision, "request": ..., "first_seen": ...} (JSON)
    answered = app.Table("answered-requests", default=str, partitions=1)

    async def settle(request: RetrainRequest, first_seen: float) -> None:
        rid = request.request_id
        update = await trainer.answer(request, first_seen)
        answered[rid] = orjson.dumps({"state": update.decision, "request": orjson.Fragment(encode(request)),
                                      "first_seen": first_seen}).decode()
        await updates.send(key=rid.encode(), value=encode(update))
        trainer.metrics.waiting.set(sum(1 for v in answered.values() if _state(v) == "wait"))

    @app.agent(requests)
    async def answer(stream: faust.StreamT[bytes]) -> None:
        async for value in stream:
            retry = value.startswith(RETRY_PREFIX)
            raw = value[len(RETRY_PREFIX):] if retry else value
            parsed, exc = trainer.policy.call("trainer", "a retraining request", _parse, raw, retry)
            if parsed is None:  # answered, so whoever sent it is not left waiting
                trainer.metrics.requests.labels("malformed").inc()
                await updates.send(key=None, value=encode(ModelUpdate(
                    model=settings.model_name, decision="failed", decided_at=time.time(),
                    reason=f"malformed request: {trainer.policy.describe(exc or ValueError())}")))
                continue
            request, first_seen = parsed
            request_id = request.request_id
            state = _state(answered[request_id])
            if retry:
                if state == "wait":
                    await settle(request, first_seen)
                continue
            if state is not None:  # a repeat: same drift, already answered or waiting
                trainer.metrics.requests.labels("duplicate").inc()
                continue
            trainer.metrics.requests.labels("answered").inc()
            await settle(request, time.time())

    @app.agent(verdicts)
    async def act(stream: faust.StreamT[bytes]) -> None:
        async for value in stream:  # the monitor's live verdicts: this trainer owns the registry
            verdict, _ = trainer.policy.call("trainer", "a shadow verdict", decode, value, ShadowVerdict)
            update = None
            if verdict is not None:
                update, _ = await trainer.policy.call_async("trainer", f"verdict {verdict.verdict_id}",
                                                            trainer.verdict, verdict)
            if update is not None:
                await updates.send(key=str(update.request_id).encode(), value=encode(update))

    async def send_overdue() -> None:
        for update in await trainer.overdue():
            await updates.send(key=str(update.request_id).encode(), value=encode(update))

    async def send_retries() -> None:
        waiting = [(rid, v) for rid, v in list(answered.items()) if _state(v) == "wait"]
        for rid, value in waiting[: settings.trainer.max_waiting]:
            entry = orjson.loads(value)
            await retries.send(key=rid.encode(), value=RETRY_PREFIX + orjson.dumps(
                {"request": entry["request"], "first_seen": entry["first_seen"]}))

    # through the error policy: a timer whose body raised (a send failing while a broker is
    # down) would crash the whole faust app (mode crashes a service on its task's exception)
    @app.timer(settings.trainer.retry_interval_s)
    async def decide_overdue_verdicts() -> None:
        await trainer.policy.call_async("trainer", "overdue verdicts", send_overdue)

    @app.timer(settings.trainer.retry_interval_s)
    async def retry_waiting() -> None:
        await trainer.policy.call_async("trainer", "retrying waiting requests", send_retries)

    @app.timer(settings.trainer.retry_interval_s)
    async def publish_again() -> None:  # a decision whose publish failed: the scorers must hear of it
        await trainer.policy.call_async("trainer", "publishing again", trainer.republish)

    return app


RETRY_PREFIX = b"retry:"  # a waiting request coming back: the stored request and when it came


def _parse(raw: bytes, retry: bool) -> tuple[RetrainRequest, float]:
    if not retry:
        return decode(raw, RetrainRequest), time.time()
    entry = orjson.loads(raw)
    return decode(orjson.dumps(entry["request"]), RetrainRequest), float(entry["first_seen"])


def retry_topic_name(settings: Settings) -> str:
    return f"{settings.app_id}-trainer-retries"


def _state(value: str) -> str | None:
    try:
        return str(orjson.loads(value)["state"]) if value else None
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return None


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


async def until_stopped_or_crashed(app: faust.App, stop: asyncio.Event, policy: ErrorPolicy,
                                   poll_s: float = 1.0) -> None:
    """Return on ``stop``; raise :class:`StreamError` (one secret-free line) if ``app`` crashed.

    mode crashes a whole faust app when one of its tasks raises, and a crashed app answers no
    request: the trainer must stop (and stop saying /ready), not idle until SIGTERM.
    """
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), poll_s)
        if app.crashed and not stop.is_set():
            reason = app.crash_reason
            raise StreamError("the trainer's stream app crashed: "
                              + (policy.describe(reason) if reason else "no reason given"))


async def run_trainer(settings: Settings, stop: asyncio.Event, *,
                      metrics: TrainerMetrics | None = None) -> None:
    """Run the trainer (and its /metrics, /healthz, /ready on ``metrics_port``) until ``stop``."""
    metrics = metrics or TrainerMetrics()
    health = Health()
    health.register("trainer")
    server = serve(metrics.registry, health, settings.metrics_host, settings.metrics_port)
    log.info("trainer metrics on http://%s:%s/metrics (health: /healthz, /ready)", settings.metrics_host,
             server.server_port)
    try:
        await ensure_topics(settings, extra={retry_topic_name(settings): 1})
        notifier = Notifier(settings.alerts, metrics)  # type: ignore[arg-type]  # counts alert_deliveries
        trainer = Trainer(settings, metrics, notifier)
        app = build_trainer(settings, trainer)
        await notifier.start()
        await app.start()
        try:
            # scorers with empty local stores get the champion; a trainer whose store missed
            # publishes made while it was down takes them first
            async with trainer._lock:
                if await trainer.sync() and trainer.unpublished():  # else behind the feed, or on it already
                    await trainer.publish("trainer started")
            health.set("trainer", True, f"answering requests on {settings.topics.retrain}")
            await until_stopped_or_crashed(app, stop, trainer.policy)
        finally:
            health.set("trainer", False, "stopping")
            try:  # a broker that stopped answering must not hold the process past its grace
                await asyncio.wait_for(app.stop(), settings.shutdown_grace_s / 2)
            except TimeoutError:
                log.error("the trainer's Kafka clients did not close within %.0fs; leaving them",
                          settings.shutdown_grace_s / 2)
            finally:
                await notifier.stop()
                if trainer.feed is not None:
                    await trainer.feed.close()
    finally:
        server.shutdown()
        server.server_close()
