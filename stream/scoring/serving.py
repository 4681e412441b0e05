"""Which model version a scorer serves, and the versions it scores beside it.

The store's current version is swapped in when it loads and passes the checks (a version
refused is tried again only when the store changes); a served version whose scores turn
invalid on more than the configured share of a window is swapped back to the previous one.
The shadow (and its canary share of entities) follows the store too. The scoring worker calls
:meth:`ModelServing.refresh` on its model-check cadence and :meth:`ModelServing.watch` after
every micro-batch.
"""

from __future__ import annotations

import asyncio
import logging

from stream.alerts import Notifier
from stream.config import Settings
from stream.errors import ModelLoadError
from stream.metrics import Metrics
from stream.registry import ModelStore
from stream.scoring.batch_output import BatchOutput
from stream.scoring.canary import Canary
from stream.scoring.guard import ModelGuard
from stream.scoring.model import Model, load_model
from stream.scoring.pipeline import BatchScorer
from stream.scoring.shadow import ShadowScorer

log = logging.getLogger(__name__)


class ModelServing:
    def __init__(self, settings: Settings, columns: list[str], metrics: Metrics, notifier: Notifier):
        self.settings = settings
        self.columns = columns
        self.metrics = metrics
        self.notifier = notifier
        self.store = ModelStore(settings.model_store)
        # a share of entities served by the challenger while it is in shadow (0: none)
        self.canary = Canary(settings.scoring.canary_share, metrics)
        self.guard = ModelGuard(self.store, settings.model_name,
                                max_invalid_share=settings.scoring.max_invalid_score_share,
                                window=settings.scoring.invalid_score_window)
        # versions scored beside the champion, never served (shadow, previous champion)
        self.shadows = ShadowScorer(self.store, settings, columns, metrics)

    def load(self) -> Model:
        """The store's current version, to serve first (a ModelLoadError stops the worker)."""
        model = load_model(self.store, self.settings.model_name, self.columns)
        self.announce(model, "load_ok")
        return model

    def announce(self, model: Model, outcome: str) -> None:
        self.metrics.model_info.clear()
        self.metrics.model_info.labels(model.name, model.version, model.card.sha256).set(1)
        self.metrics.model_loads.labels(outcome).inc()
        log.info("serving model %s version %s (%s)", model.name, model.version, outcome)

    async def refresh(self, scorer: BatchScorer, lock: asyncio.Lock) -> None:
        """Serve the store's current version if it passes the checks. A version refused is
        counted and logged once, and tried again only when the store changes."""
        name = self.settings.model_name
        await self.shadows.refresh(scorer.model.version)
        self.canary.follow(self.shadows.models.get("shadow"))
        try:
            current = self.store.current_version(name)
        except ModelLoadError:
            return
        if current == scorer.model.version or self.guard.is_refused(current):
            return
        state = self.guard.store_state(current)
        try:
            model = await asyncio.to_thread(load_model, self.store, name, self.columns, current)
        except ModelLoadError as exc:
            self.guard.refuse(current, state)
            self.metrics.model_loads.labels("swap_failed").inc()
            log.error("keeping model version %s, refusing version %s until the store changes: %s",
                      scorer.model.version, current, exc)
            return
        async with lock:  # between micro-batches: no event is scored half by one, half by the other
            self.guard.swapped(scorer.model, model)
            scorer.swap_model(model)
        self.announce(model, "swap_ok")
        await self.shadows.refresh(model.version)  # a promotion: the previous champion guards it

    def watch(self, scorer: BatchScorer, out: BatchOutput) -> None:
        """Swap a model back when its scores are invalid on more than the configured share
        of a window of scored events (each of them was dead-lettered as invalid_score)."""
        rollback = self.guard.watch(scorer.model, out.scored, out.invalid_scores)
        if rollback is None:
            return
        bad = rollback.bad
        self.notifier.submit_rollback({"model": bad.name, "model_version": bad.version,
                                       "previous_version": rollback.to.version if rollback.to else None,
                                       "reason": rollback.reason})
        if rollback.to is None:
            log.error("model %s version %s: %s; no previous version to go back to, its invalid "
                      "scores keep going to the dead-letter topic", bad.name, bad.version, rollback.reason)
            return
        scorer.swap_model(rollback.to)
        self.announce(rollback.to, "rolled_back")
        log.error("model %s version %s rolled back to version %s: %s", bad.name, bad.version,
                  rollback.to.version, rollback.reason)
