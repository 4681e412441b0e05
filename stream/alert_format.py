"""What an alert says: the Block Kit message for Slack, the generic webhook's JSON body, and
the (model, subject, kind) keys repeats are suppressed on. Pure functions of an :class:`Alert`;
delivery (queue, channels, retries) is :mod:`stream.alerts`."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

__all__ = ["MAX_FEATURES_SHOWN", "Alert", "dedup_keys", "slack_message", "webhook_body"]

MAX_FEATURES_SHOWN = 10


@dataclass(frozen=True)
class Alert:
    """One notification as queued: what happened (``type``) and its payload."""

    type: str  # "drift", "retrain", "promotion" or "rollback"
    payload: Mapping[str, Any]  # the message's fields: ``model``, ``model_version``, ...


def _num(value: Any) -> str:
    try:
        x = float(value)
    except (TypeError, ValueError):
        return "n/a"
    if math.isnan(x):
        return "n/a"
    return f"{x:.3g}" if abs(x) >= 1e-3 or x == 0 else f"{x:.2e}"


def _when(ts: Any) -> str:
    try:
        return datetime.fromtimestamp(float(ts), tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (TypeError, ValueError, OverflowError, OSError):
        return "n/a"


def _evidence_lines(evidence: Iterable[Mapping[str, Any]]) -> list[str]:
    """One line per feature, the strongest (statistic / threshold, either sign: a share can fall) first, at most ten."""

    def strength(e: Mapping[str, Any]) -> float:
        try:
            return abs(float(e.get("statistic")) / float(e.get("threshold")))  # type: ignore[arg-type]
        except (TypeError, ValueError, ZeroDivisionError):
            return 0.0

    ranked = sorted(evidence, key=strength, reverse=True)
    lines = [
        f"*{e.get('feature', '?')}* ({e.get('test', '?')}): statistic {_num(e.get('statistic'))} "
        f"vs threshold {_num(e.get('threshold'))}, p-value {_num(e.get('p_value'))}, "
        f"effect size {_num(e.get('effect_size'))}"
        for e in ranked[:MAX_FEATURES_SHOWN]
    ]
    if len(ranked) > MAX_FEATURES_SHOWN:
        lines.append(f"_and {len(ranked) - MAX_FEATURES_SHOWN} more_")
    return lines


def _fields(pairs: Iterable[tuple[str, Any]]) -> dict[str, Any]:
    return {"type": "section",
            "fields": [{"type": "mrkdwn", "text": f"*{k}*\n{v}"} for k, v in pairs][:10]}


def slack_message(alert: Alert) -> dict[str, Any]:
    """The Block Kit message (``text`` fallback + ``blocks``) for an alert.

    Examples
    --------
    >>> msg = slack_message(Alert("promotion", {"model": "fraud", "model_version": "2"}))
    >>> msg["text"]
    'Model fraud version 2 promoted'
    >>> [b["type"] for b in msg["blocks"]]
    ['header', 'section', 'context']
    """
    p = alert.payload
    model, version = p.get("model") or "?", p.get("model_version") or "?"
    if alert.type == "drift":
        resolved = p.get("kind") == "drift_resolved"
        title = f"{'Drift resolved' if resolved else 'Drift detected'}: {model} v{version}"
        head = [("Model", model), ("Version", version), ("Kind", p.get("kind", "?")),
                ("Detected at", _when(p.get("detected_at"))),
                ("Features", ", ".join(map(str, p.get("features", [])))[:500] or "n/a")]
        lines = _evidence_lines(p.get("evidence", []))
        context = f"stream index {p.get('index', '?')} · mlstream"
    elif alert.type == "retrain":
        title = f"Retraining requested: {model} v{version}"
        head = [("Model", model), ("Version", version), ("Reason", p.get("reason", "?")),
                ("Requested at", _when(p.get("requested_at"))),
                ("Features", ", ".join(map(str, p.get("features", [])))[:500] or "n/a")]
        lines = _evidence_lines(p.get("evidence", []))
        context = f"request {p.get('request_id', '?')} · mlstream"
    elif alert.type == "decision":
        model, version = p.get("model") or "?", p.get("challenger_version") or "-"
        title = f"Challenger {model} v{version}: {p.get('decision', '?')}"
        head = [("Model", model), ("Champion", p.get("champion_version") or "?"),
                ("Challenger", version), ("Decision", p.get("decision", "?")),
                ("Trained on", f"{p.get('training_window', {}).get('rows', 0)} labelled rows")]
        lines = [f"• {r}" for r in p.get("reasons", [])][:10]
        context = f"request {p.get('request_id', '?')} · mlstream trainer"
    elif alert.type == "rollback":
        model, version = p.get("model") or "?", p.get("model_version") or "?"
        title = f"Model {model} version {version} rolled back to {p.get('previous_version') or '?'}"
        head = [("Model", model), ("Bad version", version),
                ("Serving now", p.get("previous_version") or "n/a"), ("Reason", p.get("reason", "?"))]
        lines = []
        context = "mlstream scorer"
    else:
        title = f"Model {model} version {version} promoted"
        head = [("Model", model), ("Version", version),
                ("Previous version", p.get("previous_version") or "n/a")]
        if p.get("sha256"):
            head.append(("sha256", f"`{str(p['sha256'])[:16]}`"))
        lines = []
        context = "mlstream model registry"
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": title[:150]}},
        _fields(head),
    ]
    if lines:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(lines)[:3000]}})
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": context[:300]}]})
    return {"text": title, "blocks": blocks}


def webhook_body(alert: Alert) -> bytes:
    """The generic webhook's JSON: ``{"type", "payload"}``; NaN becomes null."""
    return orjson.dumps({"type": alert.type, "payload": alert.payload},
                        option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS, default=str)


def dedup_keys(alert: Alert) -> list[tuple[str, str, str]]:
    """The (model, subject, kind) keys an alert is de-duplicated and cooled down on.

    Examples
    --------
    >>> dedup_keys(Alert("drift", {"model": "fraud", "kind": "data_drift",
    ...                            "features": ["amount", "hour"]}))
    [('fraud', 'amount', 'data_drift'), ('fraud', 'hour', 'data_drift')]
    >>> dedup_keys(Alert("promotion", {"model": "fraud", "model_version": "3"}))
    [('fraud', '3', 'promotion')]
    """
    p = alert.payload
    model = str(p.get("model"))
    if alert.type in ("promotion", "rollback"):
        return [(model, str(p.get("model_version")), alert.type)]
    if alert.type == "decision":  # one per request and outcome: a wait, then its verdict
        return [(model, str(p.get("request_id")), f"decision:{p.get('decision')}")]
    kind = str(p.get("kind")) if alert.type == "drift" else "retrain"
    features = sorted({str(f) for f in p.get("features", [])}) or ["*"]
    return [(model, f, kind) for f in features]
