"""Direct notifications: drift events, retraining requests and model promotions to Slack
(Block Kit, through slack_sdk's webhook client) and to a generic JSON webhook.

The stream never waits on Slack: ``submit_*`` only puts the alert on a bounded queue (a full
queue drops it and counts ``dropped``), and one background task delivers. Delivery retries a
429 after its Retry-After, backs off exponentially on 5xx, timeouts and connection errors (at
most ``max_retries`` times), and gives up at once on any other 4xx (``invalid_payload``,
``no_service``, ``channel_is_archived``...). Repeats are suppressed per (model, subject, kind)
for ``cooldown_s``; the subject is the feature for drift and retraining and the version for a
promotion. Every outcome is counted in ``mlstream_alert_deliveries_total{channel,outcome}``.

Webhook URLs are secrets. They never appear in our logs, errors or metrics, and slack_sdk,
which logs the URL at DEBUG, gets a logger of its own that is quiet below WARNING and redacts
the URL from whatever it does log.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import math
import random
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp
import msgspec
import orjson
from slack_sdk.webhook.async_client import AsyncWebhookClient

from stream.config import AlertSettings
from stream.errors import AlertError
from stream.messages import DriftEvent, ModelUpdate, RetrainRequest, to_dict
from stream.metrics import ALERT_OUTCOMES, Metrics

log = logging.getLogger(__name__)

OUTCOMES = ALERT_OUTCOMES
MAX_FEATURES_SHOWN = 10
_SLACK_ERROR = re.compile(r"^[a-z_]{1,64}$")  # Slack's error bodies are short codes


@dataclass(frozen=True)
class Alert:
    """One notification as queued: what happened (``type``) and its payload."""

    type: str  # "drift", "retrain", "promotion" or "rollback"
    payload: Mapping[str, Any]  # the message's fields: ``model``, ``model_version``, ...


@dataclass(frozen=True)
class Attempt:
    """What one HTTP attempt returned: a status (None on timeout or connection error)."""

    status: int | None
    body: str = ""
    retry_after_s: float | None = None
    error: str = ""  # exception class name only: exception texts may carry the URL


class _Redact(logging.Filter):
    """Replaces secrets in a record's message and arguments (defence in depth)."""

    def __init__(self, secrets: Iterable[str]):
        super().__init__()
        self.secrets = [s for s in secrets if s]

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if any(s in text for s in self.secrets):
            for s in self.secrets:
                text = text.replace(s, "<redacted>")
            record.msg, record.args = text, None
        return True


def _quiet_logger(secrets: Iterable[str]) -> logging.Logger:
    """slack_sdk logs ``url`` whenever its logger's own level is <= DEBUG (NOTSET included)."""
    logger = logging.getLogger("stream.alerts.slack_sdk")
    logger.setLevel(logging.WARNING)
    for f in list(logger.filters):
        if isinstance(f, _Redact):
            logger.removeFilter(f)
    logger.addFilter(_Redact(secrets))
    return logger


def _check_url(value: str, setting: str) -> str:
    if not re.match(r"^https?://[^/\s]+", value):
        raise AlertError(f"alerts.{setting} is not an http(s) URL")
    return value


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date).

    Examples
    --------
    >>> parse_retry_after("3"), parse_retry_after(None), parse_retry_after("soon")
    (3.0, None, None)
    >>> parse_retry_after("Thu, 01 Jan 1970 00:01:00 GMT", now=30.0)
    30.0
    """
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None
    return max(0.0, when - (time.time() if now is None else now))


# -- formatting ---------------------------------------------------------------------------


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
    """One line per feature, the strongest (statistic / threshold) first, at most ten."""

    def strength(e: Mapping[str, Any]) -> float:
        try:
            return float(e.get("statistic")) / float(e.get("threshold"))  # type: ignore[arg-type]
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


def _fields_of(message: msgspec.Struct | Mapping[str, Any]) -> dict[str, Any]:
    return to_dict(message) if isinstance(message, msgspec.Struct) else dict(message)


# -- channels -----------------------------------------------------------------------------


class _SlackChannel:
    name = "slack"

    def __init__(self, url: str, session: aiohttp.ClientSession, logger: logging.Logger):
        self._client = AsyncWebhookClient(url, session=session, logger=logger, retry_handlers=[])

    def __repr__(self) -> str:
        return "_SlackChannel(<redacted>)"

    async def send(self, alert: Alert) -> Attempt:
        msg = slack_message(alert)
        resp = await self._client.send(text=msg["text"], blocks=msg["blocks"])
        return Attempt(resp.status_code, resp.body or "",
                       parse_retry_after((resp.headers or {}).get("Retry-After")))


class _WebhookChannel:
    name = "webhook"

    def __init__(self, url: str, session: aiohttp.ClientSession):
        self._url, self._session = url, session

    def __repr__(self) -> str:
        return "_WebhookChannel(<redacted>)"

    async def send(self, alert: Alert) -> Attempt:
        async with self._session.post(self._url, data=webhook_body(alert),
                                      headers={"Content-Type": "application/json"}) as resp:
            body = (await resp.content.read(1_000)).decode(errors="replace")
            return Attempt(resp.status, body, parse_retry_after(resp.headers.get("Retry-After")))


# -- the notifier -------------------------------------------------------------------------


class Notifier:
    """Queues alerts without blocking and delivers them in the background.

    Parameters
    ----------
    settings
        ``Settings.alerts``: webhook URLs (either may be unset), queue size, cooldown, retries.
    metrics
        Where ``alert_deliveries{channel,outcome}`` is counted.
    clock
        Monotonic seconds, for the cooldown (injected in tests).

    Examples
    --------
    >>> from stream.config import AlertSettings
    >>> n = Notifier(AlertSettings(), Metrics.create())
    >>> n.channels, n.submit_promotion({"model": "fraud", "model_version": "2"})
    ([], False)
    """

    def __init__(self, settings: AlertSettings, metrics: Metrics, *,
                 clock: Callable[[], float] = time.monotonic):
        self.settings = settings
        self.metrics = metrics
        self.clock = clock
        self._urls: dict[str, str] = {}
        for channel, setting, secret in (("slack", "slack_webhook_url", settings.slack_webhook_url),
                                         ("webhook", "generic_webhook_url", settings.generic_webhook_url)):
            url = secret.get_secret_value().strip() if secret is not None else ""
            if url:  # empty means off (docker-compose passes unset variables as "")
                self._urls[channel] = _check_url(url, setting)
        self.channels = sorted(self._urls)
        self._queue: asyncio.Queue[Alert] = asyncio.Queue(maxsize=settings.queue_size)
        self._last: dict[tuple[str, str, str], float] = {}
        self._not_before: dict[str, float] = {}  # channel -> monotonic time a 429 asked to wait for
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._senders: list[_SlackChannel | _WebhookChannel] = []
        self._counters = {(c, o): metrics.alert_deliveries.labels(c, o)
                          for c in self.channels for o in OUTCOMES}

    def __repr__(self) -> str:
        return f"Notifier(channels={self.channels})"

    # -- submitting (never blocks) ---------------------------------------------------------
    def submit_drift(self, drift: DriftEvent | Mapping[str, Any]) -> bool:
        """Queue a drift event (:class:`stream.messages.DriftEvent` or its fields).

        Not sent when ``alerts.send_drift`` is off: Alertmanager routes drift instead (one path)."""
        if not self.settings.send_drift:
            return False
        return self._submit(Alert("drift", _fields_of(drift)))

    def submit_retrain(self, request: RetrainRequest | Mapping[str, Any]) -> bool:
        """Queue a retraining request (:class:`stream.messages.RetrainRequest` or its fields)."""
        return self._submit(Alert("retrain", _fields_of(request)))

    def submit_promotion(self, update: ModelUpdate | Mapping[str, Any]) -> bool:
        """Queue a promotion (:class:`stream.messages.ModelUpdate` or its fields: ``model``,
        ``model_version``, ``previous_version``?, ``sha256``?)."""
        return self._submit(Alert("promotion", _fields_of(update)))

    def submit_decision(self, update: ModelUpdate | Mapping[str, Any]) -> bool:
        """Queue a trainer's decision (promote, shadow, reject, wait: the model-update message)."""
        return self._submit(Alert("decision", _fields_of(update)))
    def submit_rollback(self, info: Mapping[str, Any]) -> bool:
        """Queue a rollback: ``{"model", "model_version", "previous_version", "reason"}``."""
        return self._submit(Alert("rollback", dict(info)))

    def _count(self, outcome: str, channels: Iterable[str] | None = None) -> None:
        for c in self.channels if channels is None else channels:
            self._counters[(c, outcome)].inc()

    def _submit(self, alert: Alert) -> bool:
        if not self.channels:
            return False
        now = self.clock()
        keys = dedup_keys(alert)
        cooldown = self.settings.cooldown_s
        if all(now - self._last.get(k, -math.inf) < cooldown for k in keys):
            self._count("suppressed")
            return False
        try:
            self._queue.put_nowait(alert)
        except asyncio.QueueFull:
            self._count("dropped")
            log.warning("alert queue full (%d): dropped a %s alert", self._queue.maxsize, alert.type)
            return False
        for k in keys:
            self._last[k] = now
        if len(self._last) > 10 * self.settings.queue_size:  # bounded: forget expired keys
            self._last = {k: t for k, t in self._last.items() if now - t < cooldown}
        return True

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        """Open the HTTP session and start the delivery task (idempotent)."""
        if self._task is not None or not self.channels:
            return
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.settings.timeout_s))
        logger = _quiet_logger(self._urls.values())
        for name in self.channels:
            url = self._urls[name]
            self._senders.append(_SlackChannel(url, self._session, logger) if name == "slack"
                                 else _WebhookChannel(url, self._session))
        self._task = asyncio.create_task(self._run(), name="mlstream-alerts")

    async def stop(self, timeout_s: float | None = None) -> None:
        """Deliver what is queued for up to ``timeout_s`` (default ``drain_timeout_s``), then
        drop the rest (counted) and close the session."""
        deadline = self.settings.drain_timeout_s if timeout_s is None else timeout_s
        if self._task is not None:
            try:
                await asyncio.wait_for(self._queue.join(), deadline)
            except TimeoutError:
                pass
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        left = 0
        while not self._queue.empty():
            self._queue.get_nowait()
            self._queue.task_done()
            left += 1
        for _ in range(left):
            self._count("dropped")
        if left:
            log.warning("alerts: %d undelivered alert(s) dropped at shutdown", left)
        if self._session is not None:
            await self._session.close()
            self._session = None
        self._senders = []

    async def _run(self) -> None:
        while True:
            alert = await self._queue.get()
            try:
                await asyncio.gather(*(self._deliver(ch, alert) for ch in self._senders))
            finally:
                self._queue.task_done()

    async def _deliver(self, channel: _SlackChannel | _WebhookChannel, alert: Alert) -> str:
        """Deliver to one channel with bounded retries; returns and counts the outcome."""
        s = self.settings
        attempt = 0
        while True:
            # a 429's Retry-After holds for every alert to that channel, not just its own retries
            hold = self._not_before.get(channel.name, 0.0) - time.monotonic()
            if hold > 0:
                await asyncio.sleep(min(hold, s.max_backoff_s))  # the channel's rate limit
            try:
                result = await channel.send(alert)
            except asyncio.CancelledError:
                raise
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                result = Attempt(None, error=type(exc).__name__)
            status = result.status
            if status is not None and 200 <= status < 300:
                outcome = "sent"
                break
            if status is not None and 400 <= status < 500 and status != 429:
                code = result.body.strip()
                log.error("%s alert rejected by %s: HTTP %d %s", alert.type, channel.name, status,
                          code if _SLACK_ERROR.match(code) else "")
                outcome = "rejected"
                break
            if status == 429 and result.retry_after_s is not None:
                wait = result.retry_after_s
                self._not_before[channel.name] = time.monotonic() + min(wait, s.max_backoff_s)
                if wait > s.max_backoff_s:
                    log.error("%s alert to %s given up: rate limited for %.0fs", alert.type,
                              channel.name, wait)
                    outcome = "rate_limited"
                    break
            else:
                wait = min(s.max_backoff_s, s.backoff_base_s * 2**attempt) * random.uniform(0.5, 1.0)
            if attempt >= s.max_retries:
                log.error("%s alert to %s failed after %d attempt(s): %s", alert.type,
                          channel.name, attempt + 1, status if status is not None else result.error)
                outcome = "rate_limited" if status == 429 else "failed"
                break
            attempt += 1
            self._count("retried", [channel.name])
            log.info("%s alert to %s: %s, retry %d in %.2fs", alert.type, channel.name,
                     status if status is not None else result.error, attempt, wait)
            await asyncio.sleep(wait)  # backoff, not synchronisation
        self._count(outcome, [channel.name])
        return outcome
