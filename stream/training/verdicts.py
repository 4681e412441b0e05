"""The trainer acts on the monitor's live verdicts, as the owner of the registry.

A shadow ``promote`` verdict makes the shadow champion (the previous one retired, which opens
the guard after the promotion); ``reject`` rejects it. A guard ``rollback`` verdict serves the
previous champion again (``ModelStore.rollback``: the bad one rejected); ``keep`` closes the
guard. Each action becomes a model-update message (decision ``promote``, ``reject``,
``rollback`` or ``keep``) with the live numbers and reasons. A verdict the registry has moved
past (a repeat after a restart, a shadow promoted or rejected meanwhile, another champion
serving) changes nothing and is answered with None. Pure of Kafka.

A shadow or a guard can wait for ever: too few labels come, or the monitor dropped the live
comparison (too many open at once). :func:`decide_overdue` decides them without a verdict
after ``trainer.verdict_timeout_s``: the shadow is rejected (it never showed it is at least as
good), the guard is closed (the new champion was not shown worse).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from stream.errors import ModelLoadError
from stream.messages import ModelUpdate, ShadowVerdict
from stream.registry import ModelStore

log = logging.getLogger(__name__)


def act_on_verdict(store: ModelStore, verdict: ShadowVerdict) -> ModelUpdate | None:
    """Apply ``verdict`` to the store; the decision to publish, or None when it is stale."""
    name, version, champion = verdict.model, verdict.model_version, verdict.champion_version
    try:
        current = store.current_version(name)
    except ModelLoadError as exc:
        log.error("verdict %s not applied: %s", verdict.verdict_id, exc)
        return None
    reason = "; ".join(verdict.reasons)
    fields: dict[str, Any] = dict(request_id=verdict.verdict_id, model=name, champion_version=champion,
                  challenger_version=version, reasons=list(verdict.reasons), metrics=verdict.metrics,
                  primary_metric=verdict.primary_metric, examples=verdict.labelled)
    if current != champion:
        log.info("verdict %s is stale: version %s serves now", verdict.verdict_id, current)
        return None
    if verdict.role == "shadow":
        if store.state(name, version) != "shadow":
            log.info("verdict %s is stale: version %s is %s", verdict.verdict_id, version,
                     store.state(name, version))
            return None
        if verdict.verdict == "promote":
            store.promote(name, version, reason=f"live shadow comparison: {reason}")
            card, _ = store.load(name, version)
            return _update(fields, "promote", promoted=True, model_version=version,
                           previous_version=champion, sha256=card.sha256)
        store.set_state(name, version, "rejected", f"live shadow comparison: {reason}")
        return _update(fields, "reject", model_version=champion)
    if store.guarded_version(name) != version:
        log.info("verdict %s is stale: the guard on version %s is closed", verdict.verdict_id, champion)
        return None
    if verdict.verdict == "rollback":
        back = store.rollback(name, reason=f"guard after promotion: {reason}")
        return _update(fields, "rollback", model_version=back, previous_version=champion)
    store.close_guard(name)
    return _update(fields, "keep", model_version=champion, previous_version=version)


def _update(fields: dict[str, Any], decision: str, **more: Any) -> ModelUpdate:
    return ModelUpdate(**{**fields, **more}, decision=decision, reason="; ".join(fields["reasons"]),
                       decided_at=time.time())


def decide_overdue(store: ModelStore, name: str, timeout_s: float, now: float) -> list[ModelUpdate]:
    """Reject shadows and close a guard that waited longer than ``timeout_s`` for a verdict.

    >>> import tempfile, pathlib
    >>> from stream.registry import ModelStore
    >>> store = ModelStore(pathlib.Path(tempfile.mkdtemp()))
    >>> decide_overdue(store, "fraud", 3_600.0, now=1e10)   # nothing registered: nothing due
    []
    """
    if timeout_s <= 0:
        return []
    try:
        current = store.current_version(name)
    except ModelLoadError:
        return []
    history = store.history(name)
    since: dict[tuple[str, str], float] = {}  # (version, state) -> when it last entered its state
    for step in history:
        since[(step["version"], step["to"])] = float(step["at"])
    updates: list[ModelUpdate] = []
    limit = f"no live verdict within {timeout_s:.0f}s"
    for version in store.versions(name):
        if store.state(name, version) != "shadow" or now - since.get((version, "shadow"), now) < timeout_s:
            continue
        store.set_state(name, version, "rejected", f"{limit}: never shown at least as good as {current}")
        why = {"reasons": [limit], "request_id": f"{name}:shadow-timeout:{version}"}
        updates.append(_update(why, "reject", model=name, model_version=current,
                               champion_version=current, challenger_version=version))
    guarded = store.guarded_version(name)
    if guarded is not None and now - since.get((current, "champion"), now) >= timeout_s:
        store.close_guard(name)
        why = {"reasons": [limit], "request_id": f"{name}:guard-timeout:{guarded}"}
        updates.append(_update(why, "keep", model=name, model_version=current,
                               champion_version=current, challenger_version=guarded,
                               previous_version=guarded))
    return updates
