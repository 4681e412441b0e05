"""Log set-up for every mlstream process: human lines by default, JSON lines for log shippers.

``MLSTREAM_LOG_FORMAT=json`` gives one JSON object per line with ``ts``, ``level``, ``logger``,
``message`` (and ``exc`` when there is a traceback), so Loki, Elasticsearch or Cloud Logging
index the fields without a parsing rule.
"""

from __future__ import annotations

import logging
import time

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


def configure_logging(level: str = "INFO", fmt: str = "text") -> None:
    """Root handler on stderr in the chosen format (replaces any earlier set-up)."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
