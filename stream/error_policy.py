"""What a worker loop does when processing raises: one policy, injected into every loop.

A batch that raises is split in halves until the failing records are found (``split``): the
rest are processed and committed, the failing ones are handed back to the caller (the scorer
dead-letters them with reason ``processing_error``). Every failure is counted in
``mlstream_processing_errors_total{stage}`` and logged through the policy, and the
exception's class and message travel in dead-letter headers, bounded in length and with
secrets (and credentials in URLs) removed. A poison record can therefore never stop a loop
or stall a partition: it is found, set aside and the partition moves on.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, TypeVar

import numpy as np

from stream.metrics import Metrics

log = logging.getLogger(__name__)
T = TypeVar("T")

ERROR_CLASS_HEADER = "mlstream.error.class"
_URL_CREDENTIALS = re.compile(r"(\w+://)[^/\s:@]+:[^/\s@]+@")


class ErrorPolicy:
    """Splits failing batches, counts and logs failures, describes them safely.

    Parameters
    ----------
    metrics
        Where ``processing_errors{stage}`` is counted.
    secrets
        Values never to show (passwords, webhook URLs); replaced by ``<redacted>``.
    max_message_chars
        Bound on an exception message in headers and logs.

    Examples
    --------
    >>> policy = ErrorPolicy(Metrics.create(), secrets=["hunter2"])
    >>> def score(rows):
    ...     if 3 in rows:
    ...         raise ValueError("bad row with password hunter2")
    ...     return len(rows)
    >>> ok, failed = policy.split(np.arange(8), score, stage="features")
    >>> [(rows.tolist(), n) for rows, n in ok]
    [([0, 1], 2), ([2], 1), ([4, 5, 6, 7], 4)]
    >>> {i: policy.describe(e) for i, e in failed.items()}
    {3: 'ValueError: bad row with password <redacted>'}
    >>> policy.metrics.registry.get_sample_value("mlstream_processing_errors_total", {"stage": "features"})
    1.0
    """

    def __init__(self, metrics: Metrics, *, secrets: Iterable[str] = (), max_message_chars: int = 300):
        self.metrics = metrics
        self.secrets = [s for s in secrets if s]
        self.max_message_chars = max_message_chars

    @classmethod
    def from_settings(cls, settings: Any, metrics: Metrics) -> ErrorPolicy:
        return cls(metrics, secrets=secret_values(settings),
                   max_message_chars=settings.errors.max_message_chars)

    def describe(self, exc: BaseException) -> str:
        """``Class: message``, one line, bounded, secrets and URL credentials removed."""
        return f"{type(exc).__name__}: {self.message(exc)}"

    def message(self, exc: BaseException) -> str:
        text = " ".join(str(exc).split())
        for s in self.secrets:
            text = text.replace(s, "<redacted>")
        text = _URL_CREDENTIALS.sub(r"\1<redacted>@", text)
        if len(text) > self.max_message_chars:
            text = text[: self.max_message_chars - 1] + "…"
        return text

    def headers(self, exc: BaseException) -> list[tuple[str, bytes]]:
        """Dead-letter headers naming the exception's class (the message goes in
        ``mlstream.error.message``, from :meth:`describe`)."""
        return [(ERROR_CLASS_HEADER, type(exc).__name__.encode())]

    def failed(self, stage: str, exc: BaseException, what: str, n: int = 1) -> None:
        """Count ``n`` failed items of ``stage`` and log one line (rate-limited by the logging
        filter :class:`stream.logs.RepeatFilter`)."""
        self.metrics.processing_errors.labels(stage).inc(n)
        log.warning("%s: %s failed (%s); set aside, the stream goes on", stage, what, self.describe(exc))

    def call(self, stage: str, what: str, fn: Callable[..., T], *args: Any) -> tuple[T | None, Exception | None]:
        """``(fn(*args), None)``, or ``(None, exception)`` counted and logged."""
        try:
            return fn(*args), None
        except Exception as exc:  # the policy: whatever a stage raises never stops the loop
            self.failed(stage, exc, what)
            return None, exc

    async def call_async(self, stage: str, what: str, fn: Callable[..., Awaitable[T]],
                         *args: Any) -> tuple[T | None, Exception | None]:
        """:meth:`call` for a coroutine function."""
        try:
            return await fn(*args), None
        except Exception as exc:  # see call()
            self.failed(stage, exc, what)
            return None, exc

    def split(self, items: np.ndarray, attempt: Callable[[np.ndarray], T], *,
              stage: str) -> tuple[list[tuple[np.ndarray, T]], dict[int, Exception]]:
        """Run ``attempt`` on ``items``; if it raises, bisect until each failing item is alone.

        ``attempt`` must leave no trace when it raises (the scorer restores entity state).
        Returns the runs that succeeded, in input order, with their results, and the failing
        items with their exceptions. With k failing items among n, about ``2 k log2 n`` calls.
        """
        ok: list[tuple[np.ndarray, T]] = []
        failed: dict[int, Exception] = {}
        stack: list[np.ndarray] = [np.asarray(items)]
        while stack:
            part = stack.pop()
            if len(part) == 0:
                continue
            try:
                ok.append((part, attempt(part)))
            except Exception as exc:  # see call()
                if len(part) == 1:
                    failed[int(part[0])] = exc
                else:
                    mid = len(part) // 2
                    stack += [part[mid:], part[:mid]]  # the left half is tried first
        if failed:
            first = next(iter(failed.values()))
            self.failed(stage, first, f"{len(failed)} of {len(items)} record(s)", len(failed))
        return ok, failed


def secret_values(settings: Any) -> list[str]:
    """Every secret in the settings, as plain strings (to be redacted, never shown)."""
    out = []
    for secret in (settings.kafka.sasl_password, settings.kafka.ssl_key_password,
                   settings.alerts.slack_webhook_url, settings.alerts.generic_webhook_url):
        if secret is not None and secret.get_secret_value():
            out.append(secret.get_secret_value())
    return out


def index_runs(ok: Sequence[tuple[np.ndarray, Any]]) -> np.ndarray:
    """The items of the successful runs of :meth:`ErrorPolicy.split`, concatenated."""
    return np.concatenate([rows for rows, _ in ok]) if ok else np.empty(0, dtype=np.int64)
