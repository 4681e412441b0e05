"""The demo's retraining-loop timeline, read back from the topics: onset, detection, request,
the trainer's decisions (rows trained on, holdout result), promotion, and labelled AUC and log
loss before, during and after. Event positions are simulator indices (event ids ``e<seed>-<i>``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from stream.config import Settings
from stream.errors import MessageError
from stream.examples.simulate import SECONDS_PER_EVENT, START_TS
from stream.messages import DriftEvent, LabelledExample, ModelUpdate, RetrainRequest, decode
from stream.monitoring.labels import _auc


async def _read(settings: Settings, topic: str, kind: type[Any]) -> list[Any]:
    from stream.tools.tally import read_all

    out = []
    for rec in await read_all(settings, topic):
        try:
            out.append(decode(rec.value, kind))
        except MessageError:
            continue
    return out


def _index(event_id: str) -> int:
    return int(event_id.rsplit("-", 1)[1])


def _event_of(ts: float | None) -> int | None:
    return None if ts is None else round((ts - START_TS) / SECONDS_PER_EVENT)


def _perf(rows: list[LabelledExample]) -> dict[str, float | int]:
    if not rows:
        return {"labelled": 0}
    s = np.clip(np.array([r.score or 0.0 for r in rows]), 1e-7, 1 - 1e-7)
    y = np.array([r.label for r in rows])
    return {"labelled": len(rows), "auc": round(_auc(s, y), 4),
            "log_loss": round(float(-np.mean(y * np.log(s) + (1 - y) * np.log(1 - s))), 4)}


async def final_decision(settings: Settings, timeout_s: float,
                         after: ModelUpdate | None = None) -> ModelUpdate | None:
    """The trainer's first verdict (not a wait) on the model-updates topic, or the first one
    after ``after`` (a shadow's live verdict), within ``timeout_s``."""
    import asyncio
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        updates = await _read(settings, settings.topics.model_updates, ModelUpdate)
        if after is not None:
            updates = [u for u in updates if (u.decided_at or 0) > (after.decided_at or 0)]
        for u in updates:
            if u.decision not in ("wait",):
                return u
        await asyncio.sleep(2.0)  # re-reading a control topic a few messages long
    return None


async def loop_timeline(settings: Settings, drift_at: int, warmup: int) -> dict[str, Any]:
    t = settings.topics
    drift = [d for d in await _read(settings, t.drift, DriftEvent) if d.kind != "drift_resolved"]
    requests = await _read(settings, t.retrain, RetrainRequest)
    updates = await _read(settings, t.model_updates, ModelUpdate)
    examples = await _read(settings, t.labelled_examples, LabelledExample)
    out: dict[str, Any] = {"onset_event": drift_at}
    by_time = sorted(examples, key=lambda e: e.labelled_at)
    if drift:
        first = drift[0]
        labelled = [_index(e.event_id) for e in by_time if e.labelled_at <= first.detected_at]
        newest = max(labelled) if labelled else None
        out["detection"] = {"kind": first.kind, "features": first.features,
                            "newest_labelled_event": newest,
                            "events_after_onset": None if newest is None else newest - drift_at}
        if first.kind == "concept_drift":
            # the monitor's own count: its drift index is the labelled event (of that version, in
            # join order) that fired; the wall-clock reading above takes the whole label batch
            joined = sorted((e for e in examples if e.model_version == first.model_version),
                            key=lambda e: (e.labelled_at, _index(e.event_id)))[: first.index + 1]
            out["detection"]["labelled_events_after_onset"] = sum(_index(e.event_id) >= drift_at for e in joined)
    if requests:
        r = requests[0]
        out["request"] = {"id": r.request_id[:12], "reason": r.reason,
                          "onset_dated_at_event": _event_of(r.onset_event_ts)}
    out["decisions"] = []
    for u in updates:
        tw, hw = u.training_window, u.holdout_window
        d = u.metrics.get("difference", {})
        out["decisions"].append({
            "decision": u.decision, "challenger": u.challenger_version,
            "rows_trained_on": tw.get("rows", 0),
            "trained_on_events": [_event_of(x) for x in tw.get("event_ts", [])],
            "holdout_rows": hw.get("rows", 0),
            # a holdout comparison (trainer) or a live one on labelled events (shadow, guard)
            "compared_on": "holdout" if tw else f"{u.examples} live labelled events",
            "holdout" if tw else "live": {role: {k: v for k, v in u.metrics.get(role, {}).items()
                                                 if k in ("log_loss", "auc", "mae")}
                                          for role in ("champion", "challenger", "shadow", "previous")
                                          if role in u.metrics} if d else None,
            "log_loss_diff_ci": [d.get("ci_low"), d.get("ci_high")] if d else None,
            "reasons": u.reasons})
    promoted = next((u for u in updates if u.promoted), None)
    first_new = None
    if promoted is not None:
        scored_new = [_index(e.event_id) for e in examples if e.model_version == promoted.model_version]
        first_new = min(scored_new) if scored_new else None
        out["promotion"] = {"version": promoted.model_version, "first_event_scored": first_new}
    old = [e for e in examples if promoted is None or e.model_version != promoted.model_version]
    out["labelled"] = {
        "before": _perf([e for e in old if warmup <= _index(e.event_id) < drift_at]),
        "during": _perf([e for e in old if _index(e.event_id) >= drift_at]),
        "after": _perf([e for e in examples if promoted is not None and e.model_version == promoted.model_version]),
    }
    return out
