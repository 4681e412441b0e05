"""How hard a consumer's fetches wait at the broker: long-polls changed on a started consumer,
and :class:`FetchPacing`, which lets the broker gather events that arrive one by one into larger
micro-batches at low rates."""

from __future__ import annotations

import time
from typing import Any

from aiokafka import AIOKafkaConsumer

__all__ = ["FetchPacing", "set_fetch_wait"]


def _fetch_settings(consumer: AIOKafkaConsumer) -> Any:
    """A started consumer's fetcher, whose ``_fetch_min_bytes`` and ``_fetch_max_wait_ms`` aiokafka
    0.14 (the version pinned) reads at every fetch request; None if another version has no such."""
    fetcher = getattr(consumer, "_fetcher", None)
    ok = all(hasattr(fetcher, a) for a in ("_fetch_min_bytes", "_fetch_max_wait_ms"))
    return fetcher if ok else None


def set_fetch_wait(consumer: AIOKafkaConsumer, wait_ms: int) -> None:
    """Change a started consumer's fetch long-poll (``fetch_max_wait_ms``)."""
    fetcher = _fetch_settings(consumer)
    if fetcher is not None:
        fetcher._fetch_max_wait_ms = wait_ms


class FetchPacing:
    """Larger micro-batches when events arrive one by one at a few hundred per second.

    A fetch that asks for one byte is answered as soon as one event is there: with events spread
    evenly at a few hundred per second, each micro-batch holds one or two and pays the whole
    per-batch cost (about 1 ms of CPU, its fetch round trip included). Then fetches ask the broker
    to hold them until ``min_bytes`` wait or ``linger_ms`` pass: the wait costs nothing here and
    no event waits longer than ``linger_ms`` more. Lingering pays only while polls keep coming
    about every ``linger_ms``: events that arrive in bursts with gaps in between (polls far
    apart) would only make the broker answer empty fetches through the gaps, and a poll with
    nothing means the stream is at rest. Then fetches go back to being answered at once.
    Kafka's ``fetch.min.bytes``/``fetch.max.wait.ms`` trade, switched by the traffic.

    >>> class Fetcher:
    ...     _fetch_min_bytes, _fetch_max_wait_ms = 1, 50
    >>> class Consumer:
    ...     _fetcher = Fetcher()
    >>> f = Consumer._fetcher
    >>> pacing = FetchPacing(Consumer(), linger_ms=5)
    >>> for i in range(10):   # one event every 2 ms: linger
    ...     pacing.observe(1, now=i * 0.002)
    >>> f._fetch_min_bytes, f._fetch_max_wait_ms
    (1048576, 5)
    >>> pacing.observe(10, now=0.040)   # ten events after a 22 ms gap: bursts, answered at once
    >>> f._fetch_min_bytes, f._fetch_max_wait_ms
    (1, 50)
    >>> pacing.observe(10, now=0.060)   # the same again: a burst's events come in one fetch anyway
    >>> f._fetch_min_bytes
    1
    """

    __slots__ = ("_fetcher", "_last", "_lingering", "_rate", "_rest", "min_bytes", "window")

    def __init__(self, consumer: AIOKafkaConsumer, *, linger_ms: int, min_bytes: int = 1024 * 1024):
        fetcher = _fetch_settings(consumer)
        # a consumer configured to batch at the broker already (fetch_min_bytes > 1) is left as set
        self._fetcher = fetcher if fetcher is not None and linger_ms > 0 and fetcher._fetch_min_bytes == 1 else None
        self._rest = (1, fetcher._fetch_max_wait_ms) if self._fetcher is not None else (1, 0)
        self._lingering = False
        self._last: float | None = None  # when the last poll with events returned
        self._rate = 0.0  # events per second, smoothed over polls
        self.window, self.min_bytes = linger_ms / 1000.0, min_bytes

    def observe(self, records: int, now: float | None = None) -> None:
        """After each poll: the ``records`` it returned."""
        if self._fetcher is None:
            return
        now = time.monotonic() if now is None else now
        last, self._last = self._last, (now if records else None)
        if not records or last is None:  # at rest, or the first events after it
            self._set(False)
            return
        gap = max(now - last, 1e-4)
        self._rate += 0.2 * (records / gap - self._rate)
        if self._lingering:  # polls about every window: the events are spread out, lingering gathers them
            self._set(gap <= 3.0 * self.window)
        else:  # one or two events a poll, with more than one due in a window
            self._set(records <= 2 and self._rate * self.window >= 1.5)

    def _set(self, linger: bool) -> None:
        if linger is not self._lingering:
            assert self._fetcher is not None
            self._lingering = linger
            self._fetcher._fetch_min_bytes, self._fetcher._fetch_max_wait_ms = (
                (self.min_bytes, round(self.window * 1000)) if linger else self._rest)
