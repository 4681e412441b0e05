"""Log set-up for every mlstream process: human lines by default, JSON lines for log shippers,
and repeated identical warnings and errors rate-limited, so a broker outage gives a few lines a
minute, not hundreds a second.

``MLSTREAM_LOG_FORMAT=json`` gives one JSON object per line with ``ts``, ``level``, ``logger``,
``message`` (and ``exc`` when there is a traceback), so Loki, Elasticsearch or Cloud Logging
index the fields without a parsing rule.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import orjson

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per record.

    >>> rec = logging.LogRecord("stream.x", logging.WARNING, __file__, 1, "lag %d", (3,), None)
    >>> rec.created = 0.0
    >>> JsonFormatter().format(rec)
    '{"ts":"1970-01-01T00:00:00.000Z","level":"WARNING","logger":"stream.x","message":"lag 3"}'
    """

    def format(self, record: logging.LogRecord) -> str:
        ms = int(record.created * 1000) % 1000
        doc = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{ms:03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(doc).decode()


def configure_logging(level: str = "INFO", fmt: str = "text", repeat_interval_s: float = 30.0) -> None:
    """Root handler on stderr in the chosen format (replaces any earlier set-up), with the
    :class:`RepeatFilter`."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    handler.addFilter(RepeatFilter(repeat_interval_s))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)


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
    >>> for t in range(25):  # one identical error a second for 25 s
    ...     now[0] = float(t)
    ...     r = rec("commit failed: %s")
    ...     r.args = ("NotCoordinator",)
    ...     if f.filter(r):
    ...         print(t, r.getMessage())
    0 commit failed: NotCoordinator
    10 commit failed: NotCoordinator [repeated 9 more times in 10s]
    20 commit failed: NotCoordinator [repeated 9 more times in 10s]
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
