"""Versions scored beside the champion and never served: a ``shadow`` waiting for promotion,
and after a promotion the ``previous`` champion, guarding it.

Which versions those are is the model store's business (``ModelStore.shadow_version``,
``ModelStore.guarded_version``); a scorer loads them from its local store with the checks of
any load (:func:`stream.scoring.model.load_model`). Each scores the very feature rows the
champion scored in the same micro-batch, after the champion, and its scores go to the shadow
topic with the champion's score of the same row, never to ``predictions``. Whatever a shadow
does (raise, score NaN, be refused at load) never touches the champion's outputs: its rows
are counted and dropped, and a version whose scores are invalid on more than
``max_invalid_score_share`` of a window is dropped until the store changes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import numpy as np
from aiokafka import AIOKafkaProducer

from stream.config import Settings
from stream.errors import ModelLoadError
from stream.kafka import send_records
from stream.messages import ShadowPrediction, encode
from stream.metrics import Metrics
from stream.registry import ModelStore
from stream.scoring.batch_output import BatchOutput
from stream.scoring.guard import ModelGuard
from stream.scoring.model import Model, load_model, servable

log = logging.getLogger(__name__)

ROLES = ("shadow", "previous")


class ShadowScorer:
    """The non-serving versions of one scorer and what they scored.

    Parameters
    ----------
    store, settings
        The scorer's local model store; ``settings.trainer.guard_labels`` > 0 turns the guard
        (scoring the ``previous`` champion) on, ``settings.scoring`` bounds invalid scores.
    columns
        The feature definition's columns (a loaded version must take them, in any order).
    """

    def __init__(self, store: ModelStore, settings: Settings, columns: list[str], metrics: Metrics):
        self.store = store
        self.name = settings.model_name
        self.columns = columns
        self.metrics = metrics
        self.topic = settings.topics.shadow_predictions
        self.score_previous = settings.trainer.guard_labels > 0
        self.max_invalid_share = settings.scoring.max_invalid_score_share
        self.window = settings.scoring.invalid_score_window
        self.models: dict[str, Model] = {}  # role -> the version scored in it
        self._counts: dict[str, list[int]] = {}  # role -> [scored, invalid] in the current window
        self._refusals = ModelGuard(store, self.name, max_invalid_share=self.max_invalid_share,
                                    window=self.window)  # versions refused until the store changes

    def wanted(self, champion: str) -> dict[str, str]:
        """Role -> version the store wants scored beside ``champion`` now."""
        out: dict[str, str] = {}
        shadow = self.store.shadow_version(self.name)
        if shadow is not None and shadow != champion:
            out["shadow"] = shadow
        if self.score_previous:
            previous = self.store.guarded_version(self.name)
            if previous is not None and previous != champion:
                out["previous"] = previous
        return out

    async def refresh(self, champion: str) -> None:
        """Follow the store: load what became shadow or previous, drop what no longer is."""
        try:
            wanted = self.wanted(champion)
        except ModelLoadError as exc:  # a registry being rewritten: next time
            log.warning("shadow versions not read: %s", exc)
            return
        for role, model in list(self.models.items()):
            if wanted.get(role) != model.version:
                del self.models[role]
                self._counts.pop(role, None)
                log.info("stopped scoring model %s version %s as %s", self.name, model.version, role)
        for role, version in wanted.items():
            if role in self.models or self._refusals.is_refused(version):
                continue
            state = self._refusals.store_state(version)
            try:
                model = await asyncio.to_thread(load_model, self.store, self.name, self.columns, version)
            except ModelLoadError as exc:
                self._refusals.refuse(version, state)
                log.error("not scoring model %s version %s as %s until the store changes: %s",
                          self.name, version, role, exc)
                continue
            self.models[role] = model
            self._counts[role] = [0, 0]
            log.info("scoring model %s version %s as %s beside the champion", self.name, version, role)

    def score(self, out: BatchOutput) -> dict[int, tuple[list[bytes], list[bytes]]]:
        """Shadow predictions of one batch: partition -> (keys, values), on the rows the
        champion scored validly."""
        sent: dict[int, tuple[list[bytes], list[bytes]]] = {}
        champion = out.model
        scored_ms = int(time.time() * 1000)
        if not self.models or champion is None:
            return sent
        for role, model in list(self.models.items()):
            if model.version == champion.version:
                continue
            scored = invalid = 0
            for p, po in out.partitions.items():
                if po.inputs is None or po.scores is None or not len(po.event_ids):
                    continue
                n = len(po.event_ids)
                try:
                    s = model.predict(po.inputs)
                    if len(s) != n:
                        raise ValueError(f"{len(s)} scores for {n} rows")
                except Exception as exc:  # onnxruntime's own errors: the shadow alone pays
                    log.warning("model %s version %s (%s) failed on a batch: %s", self.name, model.version,
                                role, str(exc)[:200])
                    self._count(model, role, "failed", n)
                    scored, invalid = scored + n, invalid + n
                    continue
                ok = servable(model.card.task, s)
                bad = int(n - ok.sum())
                scored, invalid = scored + n, invalid + bad
                self._count(model, role, "invalid", bad)
                self._count(model, role, "scored", n - bad)
                keys, values = sent.setdefault(p, ([], []))
                sl, cl = s.tolist(), po.scores.tolist()
                for i in np.flatnonzero(ok).tolist():
                    keys.append(po.prediction_keys[i])
                    values.append(encode(ShadowPrediction(
                        event_id=po.event_ids[i], entity_id=po.prediction_keys[i].decode(), score=sl[i],
                        model=self.name, model_version=model.version, role=role,  # type: ignore[arg-type]
                        champion_version=champion.version, champion_score=cl[i],
                        ingest_ts_ms=po.ingest_ms[i], scored_ts_ms=scored_ms)))
            self._watch(role, model, scored, invalid)
        return sent

    async def send(self, producer: AIOKafkaProducer, out: BatchOutput) -> list[asyncio.Future[Any]]:
        """Score and send one batch's shadow predictions (same partitions as the events)."""
        futures: list[asyncio.Future[Any]] = []
        for p, (keys, values) in self.score(out).items():
            if values:
                futures += await send_records(producer, self.topic, p, keys, values)
        return futures

    def _count(self, model: Model, role: str, outcome: str, n: int) -> None:
        if n:
            self.metrics.shadow_predictions.labels(self.name, model.version, role, outcome).inc(n)

    def _watch(self, role: str, model: Model, scored: int, invalid: int) -> None:
        """Drop a version whose scores are invalid on too many events (until the store changes)."""
        counts = self._counts.setdefault(role, [0, 0])
        counts[0] += scored
        counts[1] += invalid
        if counts[1] > self.max_invalid_share * max(counts[0], self.window):
            log.error("model %s version %s (%s): %d of %d scores invalid or failed; not scoring it "
                      "until the store changes", self.name, model.version, role, counts[1], counts[0])
            self._refusals.refuse(model.version)
            self.models.pop(role, None)
            self._counts.pop(role, None)
        elif counts[0] >= self.window:
            counts[0] = counts[1] = 0

