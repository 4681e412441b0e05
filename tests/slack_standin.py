"""A local HTTP server that answers like a Slack incoming webhook, for tests.

It binds 127.0.0.1 on a free port, answers each POST with the next scripted reply (then the
default, 200 ``ok``), and records every request. Replies: ``ok()``, ``rate_limited(s)``
(429 with Retry-After), ``server_error()`` (500), ``bad(code)`` (400 ``invalid_payload`` or
another Slack error code) and ``slow(s)`` (waits, then 200 ``ok``). Tests wait for requests
with :meth:`SlackStandIn.wait_for`, a condition with a timeout, never a sleep.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Reply:
    status: int = 200
    body: str = "ok"
    delay_s: float = 0.0
    headers: tuple[tuple[str, str], ...] = ()


def ok() -> Reply:
    return Reply()


def rate_limited(retry_after_s: int = 1) -> Reply:
    return Reply(429, "rate_limited", headers=(("Retry-After", str(retry_after_s)),))


def server_error() -> Reply:
    return Reply(500, "internal_error")


def bad(code: str = "invalid_payload", status: int = 400) -> Reply:
    return Reply(status, code)


def slow(delay_s: float) -> Reply:
    return Reply(delay_s=delay_s)


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.monotonic() when it arrived

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class SlackStandIn:
    """Start with ``with SlackStandIn() as slack:``; ``slack.url(path)`` is a webhook URL."""

    script: deque[Reply] = field(default_factory=deque)
    received: list[Received] = field(default_factory=list)
    max_delay_s: float = 10.0

    def __post_init__(self) -> None:
        self._cond = threading.Condition()
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(min(length, 1_000_000))
                with standin._cond:
                    reply = standin.script.popleft() if standin.script else Reply()
                    standin.received.append(Received(self.path, dict(self.headers.items()), body,
                                                     time.monotonic()))
                    standin._cond.notify_all()
                if reply.delay_s:
                    # the slow reply itself, bounded; the client is expected to give up first
                    time.sleep(min(reply.delay_s, standin.max_delay_s))
                data = reply.body.encode()
                try:
                    self.send_response(reply.status)
                    self.send_header("Content-Type", "text/html")
                    self.send_header("Content-Length", str(len(data)))
                    for k, v in reply.headers:
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client timed out and left

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass  # quiet: requests are in .received

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="slack-standin",
                                        daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def url(self, path: str = "/services/T000/B000/standin") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def queue(self, *replies: Reply) -> None:
        """Script the next replies, in order."""
        with self._cond:
            self.script.extend(replies)

    def wait_for(self, count: int, timeout_s: float = 10.0) -> list[Received]:
        """Block until at least ``count`` requests arrived; raises TimeoutError otherwise."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.received) >= count, timeout_s):
                raise TimeoutError(f"{len(self.received)} of {count} requests after {timeout_s}s")
            return list(self.received)

    def __enter__(self) -> SlackStandIn:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
