"""Logging for mlstream processes: one format, and repeated identical warnings and errors
rate-limited, so a broker outage gives a few lines a minute, not hundreds a second."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any


class RepeatFilter(logging.Filter):
    """Lets the first of identical WARNING+ records through, then one every ``interval_s``
    saying how many were held back meanwhile. Identical: same logger, level and message.

    Parameters
    ----------
    interval_s
        At most one line per identical message per this many seconds (0: no limit).
    max_keys
        Distinct messages remembered (oldest forgotten first): bounded memory.

    Examples
    --------
    >>> now = [0.0]
    >>> f = RepeatFilter(interval_s=10, clock=lambda: now[0])
    >>> def rec(msg):
    ...     return logging.LogRecord("aiokafka", logging.ERROR, "", 0, msg, None, None)
    >>> shown = []
    >>> for t in range(25):  # one identical error a second for 25 s
    ...     now[0] = float(t)
    ...     r = rec("commit failed: %s")
    ...     r.args = ("NotCoordinator",)
    ...     if f.filter(r):
    ...         shown.append((t, r.getMessage()))
    >>> shown
    [(0, 'commit failed: NotCoordinator'), (10, 'commit failed: NotCoordinator [repeated 9 more times in 10s]'), (20, 'commit failed: NotCoordinator [repeated 9 more times in 10s]')]
    >>> f.filter(rec("another error"))  # a different message is not held back
    True
    """

    def __init__(self, interval_s: float = 30.0, *, max_keys: int = 1_000,
                 clock: Callable[[], float] = time.monotonic):
        super().__init__()
        self.interval_s = interval_s
        self.max_keys = max_keys
        self.clock = clock
        self._seen: dict[tuple[str, int, str], list[float]] = {}  # key -> [last shown, held back]

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING or self.interval_s <= 0:
            return True
        message = record.getMessage()
        key = (record.name, record.levelno, message)
        now = self.clock()
        state = self._seen.get(key)
        if state is None:
            self._seen[key] = [now, 0]
            while len(self._seen) > self.max_keys:
                self._seen.pop(next(iter(self._seen)))
            return True
        last, held = state
        if now - last < self.interval_s:
            state[1] = held + 1
            return False
        if held:
            record.msg = f"{message} [repeated {int(held)} more times in {now - last:.0f}s]"
            record.args = None
        state[0], state[1] = now, 0
        return True


def configure_logging(settings: Any) -> None:
    """Root logging for a command: level, format, and the repeat filter on every handler."""
    logging.basicConfig(level=settings.log_level,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        for f in list(handler.filters):
            if isinstance(f, RepeatFilter):
                handler.removeFilter(f)
        handler.addFilter(RepeatFilter(settings.errors.log_repeat_interval_s))
