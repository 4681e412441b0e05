"""The trainer closes the loop: a retraining request in, a challenger fitted on the stream's own
labelled examples, judged against the champion, and a decision out.

It is a faust app (an agent on the retrain topic and a changelog-backed table of requests and
their state), because this is control-plane traffic, a few messages a day, where faust's
per-event cost does not matter and its durable tables do the de-duplication for us. Training
runs in a thread so the agent keeps heart-beating. Every decision (promote, shadow, reject,
wait) is published on the model-updates topic, counted in the trainer's metrics and sent to
Slack; a decision that changes the store (promote, shadow, reject) is published on the model
feed (:mod:`stream.model_feed`). A request that waits for labels is retried every
``retry_interval_s`` until it gets a verdict or ``max_wait_s`` passes.
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
import msgspec
import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from stream.alerts import Notifier
from stream.config import Settings
from stream.domain import Domain, load_domain
from stream.error_policy import ErrorPolicy
from stream.errors import StreamError
from stream.feed_publish import FEED_ATTEMPTS, FeedMoved, publish
from stream.http import Health, serve
from stream.kafka import ensure_topics
from stream.messages import ModelUpdate, RetrainRequest, ShadowVerdict, decode, encode
from stream.metrics import ALERT_CHANNELS, ALERT_OUTCOMES, LATENCY_BUCKETS, Metrics
from stream.registry import ModelStore
from stream.scoring.feed import FeedReader
from stream.training.challenge import apply_decision, challenge, examples_from_file
from stream.training.labelled import LabelledExamples, read_examples
from stream.training.verdicts import act_on_verdict, decide_overdue

log = logging.getLogger(__name__)
DECISIONS = ("promote", "shadow", "reject", "wait", "expired", "failed", "rollback", "keep")
REQUEST_OUTCOMES = ("answered", "duplicate", "malformed")
FINAL = ("promote", "shadow", "reject", "expired", "failed")


class TrainerMetrics:
    """The trainer's Prometheus metrics (``docs/metrics.md``, trainer section)."""

    def __init__(self, registry: CollectorRegistry | None = None):
        r = self.registry = registry if registry is not None else CollectorRegistry()
        self.requests = Counter("mlstream_trainer_requests", "Retraining requests received, by outcome.",
                                ["outcome"], registry=r)
        self.decisions = Counter("mlstream_trainer_decisions", "Decisions published, by model and decision.",
                                 ["model", "decision"], registry=r)
        self.training_rows = Gauge("mlstream_trainer_training_rows",
                                   "Labelled rows the latest challenger was trained on.", ["model"], registry=r)
        self.holdout_loss = Gauge("mlstream_trainer_holdout_loss",
                                  "Primary loss on the latest holdout (log loss or MAE), champion and challenger.",
                                  ["model", "role"], registry=r)
        self.waiting = Gauge("mlstream_trainer_waiting_requests", "Requests waiting for more labels.",
                             registry=r)
        self.duration = Histogram("mlstream_trainer_duration_seconds",
                                  "Time to answer a request (read examples, fit, judge).",
                                  buckets=LATENCY_BUCKETS + (60.0, 120.0, 300.0), registry=r)
        # the notifier counts deliveries here, as the workers do
        self.alert_deliveries = Counter("mlstream_alert_deliveries", "Alert deliveries by channel and outcome.",
                                        ["channel", "outcome"], registry=r)
        for outcome in REQUEST_OUTCOMES:
            self.requests.labels(outcome)
        for channel in ALERT_CHANNELS:
            for outcome in ALERT_OUTCOMES:
                self.alert_deliveries.labels(channel, outcome)

    def record(self, update: ModelUpdate) -> None:
        model = str(update.model)
        self.decisions.labels(model, update.decision).inc()
        rows = update.training_window.get("rows")
        if rows and update.challenger_version:
            self.training_rows.labels(model).set(rows)
        if update.primary_metric and "difference" in update.metrics:
            for role in ("champion", "challenger"):  # live verdicts: mlstream_live_labelled_loss
                value = update.metrics.get(role, {}).get(update.primary_metric)
                if value is not None:
                    self.holdout_loss.labels(model, role).set(value)


class Trainer:
    """Answers requests; the faust app only feeds it (see :func:`build_trainer`)."""

    def __init__(self, settings: Settings, metrics: TrainerMetrics, notifier: Notifier):
        self.settings = settings
        # whatever a request makes training raise is answered "failed"; the trainer goes on
        self.policy = ErrorPolicy.from_settings(settings, Metrics.create())
        self.metrics = metrics
        self.notifier = notifier
        self.domain: Domain = load_domain(settings.domain)
        self.store = ModelStore(settings.model_store)
        self._lock = asyncio.Lock()  # one request at a time: each may promote
        # the feed read before each decision: another publisher's newer states (an operator's
        # `mlstream models promote` from another machine) are the ones the decision changes
        self.feed = FeedReader(settings, Metrics.create(), self.store) if settings.model_feed.mode == "feed" else None
        self._sync_failures = 0

    async def sync(self) -> bool:
        """Take the newest states published by others (see FeedReader.catch_up); False if the
        feed could not be read to its end (the decision goes on the trainer's store, logged)."""
        if self.feed is None:
            return True
        # the first read goes through the whole topic; a timeout keeps the position for the next
        s = self.settings
        timeout_s = s.kafka.request_deadline_s if self.feed.consumer is not None else s.model_feed.start_timeout_s
        why = await self.feed.try_catch_up(timeout_s, s.kafka.request_deadline_s)
        if not why:
            self._sync_failures = 0
            return True
        self._sync_failures += 1
        if self._sync_failures in (1, 10, 100) or self._sync_failures % 1_000 == 0:  # bounded log
            log.warning("model feed %s not read before a decision (%s; %d in a row): deciding on the "
                        "trainer's store", s.topics.models, why, self._sync_failures)
        return False

    def unpublished(self) -> bool:
        """After a :meth:`sync`: does the feed lack this store's states (a change whose publish
        failed, or a feed with none yet)? A trainer that restarts with nothing new publishes
        nothing: a publish re-sends the whole states, and one that lands after an operator's
        change would undo it."""
        if self.feed is None:
            return False
        return self.store.feed_mark(self.settings.model_name)[1] or not self.feed.states_seen

    async def examples(self) -> LabelledExamples:
        t = self.settings.trainer
        if t.data:  # the bootstrap option: a file of labelled events
            return await asyncio.to_thread(examples_from_file, self.domain, t.data, t.warmup)
        return await read_examples(self.settings, t.max_rows)

    async def _challenge(self, request: RetrainRequest) -> ModelUpdate:
        examples = await self.examples()
        return await asyncio.to_thread(challenge, self.settings, self.domain, self.store, request, examples)

    async def publish(self, what: str) -> bool:
        """The store's new states (and servable versions) to the model feed, where the scorers
        hear of them. A failure is logged: the decision stands, `mlstream models publish` resends.
        True if another publisher published first (:class:`FeedMoved`): nothing was sent, and
        the caller decides again on the registry the next sync gives."""
        if self.settings.model_feed.mode != "feed":
            return False
        try:
            await publish(self.settings, self.store, self.settings.model_name, what)
        except FeedMoved as exc:
            log.warning("%s: %s", what, exc)
            return True
        except StreamError as exc:
            log.error("%s: not published to %s (%s); scorers keep their model until "
                      "`mlstream models publish` succeeds", what, self.settings.topics.models, exc)
        return False

    async def answer(self, request: RetrainRequest, first_seen: float) -> ModelUpdate:
        """The decision for a request (published by the caller)."""
        async with self._lock:
            await self.sync()
            t0 = time.perf_counter()
            result, exc = await self.policy.call_async(
                "trainer", f"request {request.request_id}", self._challenge, request)
            if result is None:
                why = f"failed: {self.policy.describe(exc or ValueError())}"
                update = ModelUpdate(request_id=request.request_id, model=self.settings.model_name,
                                     model_version=request.model_version, decision="failed",
                                     reasons=[why], reason=why, decided_at=time.time())
            else:
                update = result
            if update.decision == "wait" and time.time() - first_seen > self.settings.trainer.max_wait_s:
                update.decision = "expired"
                update.reasons = [*update.reasons, "gave up waiting for labels after "
                                  f"{self.settings.trainer.max_wait_s:.0f}s"]
                update.reason = "; ".join(update.reasons)
            # the decision changes the registry as it is now: an operator's promotion or rollback
            # published while the challenger trained (or while this one published) is kept
            decided = bool(update.challenger_version) and update.decision in ("promote", "shadow", "reject")
            for attempt in range(FEED_ATTEMPTS if decided else 0):
                if not await self.sync() and attempt:  # the refused attempt is still in the store
                    update = _failed(update, "failed: the model feed could not be read again")
                    break
                applied, exc = await self.policy.call_async(
                    "trainer", f"request {request.request_id}", asyncio.to_thread, apply_decision, self.store, update)
                if applied is None:
                    update = _failed(update, f"failed: {self.policy.describe(exc or ValueError())}")
                    break
                if not await self.publish(f"{applied.decision} {applied.challenger_version} "
                                          f"(request {request.request_id})"):
                    update = applied
                    break
            else:
                if decided:
                    update = _failed(update, f"failed: other publishers published first, {FEED_ATTEMPTS} times")
            self.metrics.duration.observe(time.perf_counter() - t0)
            self.metrics.record(update)
            self.notifier.submit_decision(update)
            return update

    async def verdict(self, verdict: ShadowVerdict) -> ModelUpdate | None:
        """Act on the monitor's live verdict (promote, reject, rollback, keep); the decision
        to publish, or None when the registry has moved past it."""
        async with self._lock:
            await self.sync()
            update, exc = await self.policy.call_async(
                "trainer", f"verdict {verdict.verdict_id}", asyncio.to_thread, act_on_verdict,
                self.store, verdict)
            if update is None:
                if exc is not None:
                    why = f"failed: {self.policy.describe(exc)}"
                    update = ModelUpdate(request_id=verdict.verdict_id, model=verdict.model,
                                         model_version=verdict.champion_version, decision="failed",
                                         challenger_version=verdict.model_version,
                                         reasons=[why], reason=why, decided_at=time.time())
                else:
                    return None
            if update.decision in ("promote", "reject", "rollback", "keep"):
                await self.publish(f"live verdict {update.decision} on {verdict.model_version} "
                                   f"({verdict.verdict_id})")
            self.metrics.record(update)
            self.notifier.submit_decision(update)
            if update.decision == "rollback":
                self.notifier.submit_rollback({"model": update.model, "model_version": update.previous_version,
                                               "previous_version": update.model_version,
                                               "reason": update.reason})
            log.log(logging.WARNING if update.decision in ("rollback", "failed") else logging.INFO,
                    "verdict %s: %s (%s)", verdict.verdict_id, update.decision, update.reason)
            return update


    async def overdue(self) -> list[ModelUpdate]:
        """Decide the shadows and the guard that waited too long for a live verdict."""
        async with self._lock:
            await self.sync()
            updates, _ = await self.policy.call_async(
                "trainer", "overdue verdicts", asyncio.to_thread, decide_overdue, self.store,
                self.settings.model_name, self.settings.trainer.verdict_timeout_s, time.time())
            for update in updates or []:
                self.metrics.record(update)
                self.notifier.submit_decision(update)
                log.warning("%s version %s: %s (%s)", update.model, update.challenger_version,
                            update.decision, update.reason)
            if updates:
                await self.publish(f"overdue verdicts: {', '.join(u.decision for u in updates)}")
            return updates or []


def _failed(update: ModelUpdate, why: str) -> ModelUpdate:
    """``update``'s decision not made: the champion it was judged against stays."""
    return msgspec.structs.replace(update, decision="failed", promoted=False,
                                   model_version=update.champion_version or update.model_version,
                                   previous_version=None, sha256=None, reasons=[*update.reasons, why], reason=why)


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
