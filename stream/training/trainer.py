"""The trainer closes the loop: a retraining request in, a challenger fitted on the stream's own
labelled examples, judged against the champion, and a decision out.

:class:`Trainer` makes the decisions (training runs in a thread, so the service keeps
heart-beating); :mod:`stream.training.trainer_app` runs it as a service. Every decision (promote,
shadow, reject, wait) is published on the model-updates topic, counted in the trainer's metrics
and sent to Slack; a decision that changes the store (promote, shadow, reject) is published on
the model feed (:mod:`stream.model_feed`), and published again every ``retry_interval_s`` while
that fails. A request that waits for labels is retried every ``retry_interval_s`` until it gets
a verdict or ``max_wait_s`` passes.
"""

from __future__ import annotations

import asyncio
import logging
import time

import msgspec
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from stream.alerts import Notifier
from stream.config import Settings
from stream.domain import Domain, load_domain
from stream.error_policy import ErrorPolicy
from stream.errors import StreamError
from stream.feed_publish import FEED_ATTEMPTS, FeedMoved, publish
from stream.messages import ModelUpdate, RetrainRequest, ShadowVerdict
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
        self.unpublished = Gauge("mlstream_trainer_unpublished_changes",
                                 "1 while the registry holds a change the model feed lacks (its publish failed; "
                                 "published again every retry interval).", ["model"], registry=r)
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
    """Answers requests; the faust app only feeds it (:func:`stream.training.trainer_app.build_trainer`)."""

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
        self._publish_failures = 0  # publishes failed in a row (their log is bounded)
        self._owed: str | None = None  # the reason of a change not yet published, for its retry

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
        hear of them. A failure is logged (bounded) and :meth:`republish` tries again every
        ``retry_interval_s``: the decision stands. True if another publisher published first
        (:class:`FeedMoved`): nothing was sent, and the caller decides again on the registry the
        next sync gives."""
        if self.settings.model_feed.mode != "feed":
            return False
        name, published = self.settings.model_name, False
        try:
            await publish(self.settings, self.store, name, what)
            published, self._owed, self._publish_failures = True, None, 0
        except FeedMoved as exc:
            log.warning("%s: %s", what, exc)
            return True
        except StreamError as exc:
            self._owed, self._publish_failures = self._owed or what, self._publish_failures + 1
            if self._publish_failures in (1, 10, 100) or self._publish_failures % 1_000 == 0:
                log.error("%s: not published to %s (%s; %d in a row); scorers keep their model until it is: "
                          "tried again every %gs", what, self.settings.topics.models, exc,
                          self._publish_failures, self.settings.trainer.retry_interval_s)
        finally:  # whatever the failure: the alert must see it
            self.metrics.unpublished.labels(name).set(0 if published else 1)
        return False

    async def republish(self) -> bool:
        """A change of the registry whose publish failed (a broker refusing or away), published
        again under its first reason, so that a decision reaches the scorers without an
        operator: True if published. As at start, newer states of another publisher are taken
        first (then nothing is owed). Nothing owed here: no read of the feed."""
        name = self.settings.model_name
        if self.feed is None or not (self.store.feed_mark(name)[1] or not self.feed.states_seen):
            self.metrics.unpublished.labels(name).set(0)
            return False
        async with self._lock:
            if not (await self.sync() and self.unpublished()):
                if not self.store.feed_mark(name)[1]:
                    self.metrics.unpublished.labels(name).set(0)
                return False
            await self.publish(f"{self._owed or 'a change the model feed lacked'} (published again)")
            return not self.store.feed_mark(name)[1]

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
