"""One answer to one retraining request: a challenger fitted on labelled examples, judged
against the champion on the same newest holdout, and the decision with its evidence.

Pure of Kafka: :mod:`stream.training.trainer` reads the examples and publishes the answer.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from stream.config import Settings
from stream.domain import Domain
from stream.messages import LabelledExample, ModelUpdate, RetrainRequest
from stream.registry import ModelStore
from stream.scoring.model import Model, load_model
from stream.training.labelled import LabelledExamples, WindowPolicy, choose_window, describe_window
from stream.training.promotion import Decision, PromotionPolicy, decide, shortfall
from stream.training.train import read_jsonl, train_arrays

log = logging.getLogger(__name__)


def window_policy(settings: Settings) -> WindowPolicy:
    t = settings.trainer
    return WindowPolicy(holdout_rows=t.holdout_rows, max_train_rows=t.max_train_rows,
                        min_train_rows=t.min_train_rows, start=t.window)


def promotion_policy(settings: Settings) -> PromotionPolicy:
    t = settings.trainer
    return PromotionPolicy(min_holdout=t.min_holdout, min_positives=t.min_positives,
                           confidence=t.confidence, bootstrap=t.bootstrap, tolerance=t.tolerance,
                           max_calibration_error=t.max_calibration_error,
                           max_latency_ratio=t.max_latency_ratio, seed=t.seed)


def examples_from_file(domain: Domain, path: Path | str, warmup: int) -> LabelledExamples:
    """The bootstrap option: labelled events from a JSONL file, featurised offline, as examples."""
    data = read_jsonl(path, domain)
    X = domain.offline_features(data.events)[warmup:]
    events = data.events[warmup:]
    cols = domain.columns(events)
    cats = [n for n, k in domain.features.monitored.items() if k == "categorical"]
    records = [LabelledExample(event_id=str(e[domain.schema.id_field]), event_ts=float(e[domain.features.time_field]),
                               model="", model_version="file", inputs=X[i].tolist(), score=None,
                               label=float(data.labels[warmup + i]), labelled_at=0.0,
                               categories={c: cols[c][i] for c in cats}) for i, e in enumerate(events)]
    return LabelledExamples.from_records(records, [(0, warmup + i) for i in range(len(events))])


def _timed(model: Model, X: np.ndarray) -> tuple[np.ndarray, float]:
    """Scores and the best of three timings, in ms per 1,000 rows."""
    best, scores = float("inf"), np.empty(0)
    for _ in range(3):
        t0 = time.perf_counter()
        scores = model.predict(X)
        best = min(best, time.perf_counter() - t0)
    return scores, best * 1000 * 1000 / max(len(X), 1)


def challenge(settings: Settings, domain: Domain, store: ModelStore, request: RetrainRequest,
              examples: LabelledExamples) -> ModelUpdate:
    """Train, judge and decide; returns the model-update message (``decision`` is ``promote``,
    ``shadow``, ``reject`` or ``wait``). The challenger is in the store as a candidate when this
    returns; :func:`apply_decision` makes the decision's change (training takes a while, and the
    registry may change meanwhile)."""
    name = settings.model_name
    champion = load_model(store, name, domain.features.columns)
    update: dict[str, Any] = {
        "request_id": request.request_id, "model": name, "model_version": champion.version,
        "champion_version": champion.version, "challenger_version": None, "promoted": False,
        "examples": len(examples),
    }
    onset = request.onset_event_ts if settings.trainer.window == "onset" else None
    train_idx, hold_idx = choose_window(examples, window_policy(settings), onset)
    update["training_window"] = describe_window(examples, train_idx)
    update["holdout_window"] = describe_window(examples, hold_idx)
    y_train, y_hold = examples.y[train_idx], examples.y[hold_idx]
    policy = promotion_policy(settings)
    short = shortfall(policy, domain.task, y_hold)  # the cheap checks first: no fit without a verdict
    if len(train_idx) < settings.trainer.min_train_rows:
        since = f" since the drift onset (event time {onset:.0f})" if onset is not None else ""
        short.append(f"{len(train_idx)} labelled rows to train on{since} before the newest "
                     f"{len(hold_idx)} held out, {settings.trainer.min_train_rows} needed")
    if domain.task == "classification" and len(np.unique(y_train)) < 2:
        short.append("training rows hold one class only")
    if short:
        return _finish(update, Decision("wait", short))
    X_hold = examples.X[hold_idx]
    lineage = {"parent_version": champion.version, "request_id": request.request_id,
               "request": {"reason": request.reason, "features": request.features,
                           "evidence": request.evidence, "model_version": request.model_version,
                           "requested_at": request.requested_at, "onset_event_ts": request.onset_event_ts},
               "source": settings.trainer.data or settings.topics.labelled_examples,
               "window_policy": settings.trainer.window,
               "training_window": update["training_window"], "holdout_window": update["holdout_window"]}
    card = train_arrays(domain, examples.X[train_idx], y_train, X_hold, y_hold,
                        {**{k: v[hold_idx] for k, v in examples.categories.items()},
                         domain.features.time_field: examples.event_ts[hold_idx]}, store, name=name,
                        seed=settings.trainer.seed, lineage=lineage, promote=False)
    version = str(card["version"])
    update["challenger_version"] = version
    challenger = load_model(store, name, domain.features.columns, version)  # the scorer's own checks
    theirs, t_champ = _timed(champion, X_hold)
    ours, t_chal = _timed(challenger, X_hold)
    decision = decide(policy, domain.task, y_hold, champion=theirs,
                      challenger=ours, latency_ms=(t_champ, t_chal), threshold=domain.threshold)
    if decision.outcome == "promote":
        if settings.trainer.shadow_labels > 0:  # a shadow waits for the monitor's live comparison
            decision = Decision("shadow", decision.reasons, decision.metrics, decision.primary_metric)
        else:
            update.update(promoted=True, model_version=version, previous_version=champion.version,
                          sha256=challenger.card.sha256)
    return _finish(update, decision)


def apply_decision(store: ModelStore, update: ModelUpdate) -> ModelUpdate:
    """Make ``update``'s change to the registry: its challenger promoted, shadowing or rejected.
    A challenger judged against a champion that no longer serves (an operator promoted or rolled
    back while it trained) is rejected, with that reason, rather than put over a version it was
    never compared with; the update says so.

    >>> import shutil, tempfile
    >>> shipped = Path(__file__).resolve().parents[2] / "models"
    >>> store = ModelStore(shutil.copytree(shipped, Path(tempfile.mkdtemp()) / "models"))
    >>> _ = shutil.copytree(store.root / "fraud" / "1", store.root / "fraud" / "9")  # a challenger's files
    >>> u = ModelUpdate(request_id="r", model="fraud", model_version="9", champion_version="0",
    ...                 challenger_version="9", decision="promote", promoted=True, reasons=["better"])
    >>> out = apply_decision(store, u)   # version 1 serves, not the 0 it was compared with
    >>> out.decision, out.promoted, out.model_version, out.reasons[-1]
    ('reject', False, '1', 'version 1 serves now, not the champion 0 it was judged against')
    >>> store.state("fraud", "9"), store.current_version("fraud")
    ('rejected', '1')
    """
    name, version, reason = update.model, update.challenger_version, "; ".join(update.reasons)
    if name is None or version is None or update.decision not in ("promote", "shadow", "reject"):
        return update
    current = store.current_version(name)
    if update.decision != "reject" and current != update.champion_version:
        why = f"version {current} serves now, not the champion {update.champion_version} it was judged against"
        reasons = [*update.reasons, why]
        store.set_state(name, version, "rejected", "; ".join(reasons))
        log.warning("request %s: challenger %s not %s: %s", update.request_id, version,
                    "promoted" if update.decision == "promote" else "shadowed", why)
        return msgspec.structs.replace(update, decision="reject", promoted=False, model_version=current,
                                       previous_version=None, sha256=None, reasons=reasons,
                                       reason="; ".join(reasons))
    if update.decision == "promote":
        store.promote(name, version, reason=reason)
    else:
        store.set_state(name, version, update.decision if update.decision == "shadow" else "rejected", reason)
    return update


def _finish(update: dict[str, Any], decision: Decision) -> ModelUpdate:
    log.info("request %s: %s (%s)", update["request_id"], decision.outcome, "; ".join(decision.reasons))
    return ModelUpdate(**update, decision=decision.outcome, reasons=decision.reasons,
                       reason="; ".join(decision.reasons), metrics=decision.metrics,
                       primary_metric=decision.primary_metric, decided_at=time.time())
