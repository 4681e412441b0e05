"""Direct notifications: drift events, retraining requests and model promotions to Slack
(Block Kit, through slack_sdk's webhook client) and to a generic JSON webhook.

The stream never waits on Slack: ``submit_*`` only puts the alert on a bounded queue (a full
queue drops it and counts ``dropped``), and one background task delivers. Delivery retries a
429 after its Retry-After, backs off exponentially on 5xx, timeouts and connection errors (at
most ``max_retries`` times), and gives up at once on any other 4xx (``invalid_payload``,
``no_service``, ``channel_is_archived``...). Repeats are suppressed per (model, subject, kind)
for ``cooldown_s``; the subject is the feature for drift and retraining and the version for a
promotion. Every outcome is counted in ``mlstream_alert_deliveries_total{channel,outcome}``.
What an alert says (Slack blocks, webhook JSON, de-duplication keys) is :mod:`stream.alert_format`.

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
from typing import TYPE_CHECKING, Any

import msgspec

from stream.alert_format import (  # re-exported: the formatting used to live here
    MAX_FEATURES_SHOWN,
    Alert,
    dedup_keys,
    slack_message,
    webhook_body,
)
from stream.config import AlertSettings
from stream.errors import AlertError
from stream.messages import DriftEvent, ModelUpdate, RetrainRequest, to_dict
from stream.metrics import ALERT_OUTCOMES, Metrics

if TYPE_CHECKING:  # aiohttp and slack_sdk load (~0.2 s) only when a channel is configured: see start()
    import aiohttp

__all__ = ["MAX_FEATURES_SHOWN", "OUTCOMES", "Alert", "AlertError", "Attempt", "Notifier", "dedup_keys",
           "parse_retry_after", "slack_message", "webhook_body"]

log = logging.getLogger(__name__)

OUTCOMES = ALERT_OUTCOMES
_SLACK_ERROR = re.compile(r"^[a-z_]{1,64}$")  # Slack's error bodies are short codes


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


def _fields_of(message: msgspec.Struct | Mapping[str, Any]) -> dict[str, Any]:
    return to_dict(message) if isinstance(message, msgspec.Struct) else dict(message)


# -- channels -----------------------------------------------------------------------------


class _SlackChannel:
    name = "slack"

    def __init__(self, url: str, session: aiohttp.ClientSession, logger: logging.Logger):
        from slack_sdk.webhook.async_client import AsyncWebhookClient

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
        import aiohttp

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
        import aiohttp  # loaded by start(), before any channel sends

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
