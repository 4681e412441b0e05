"""Every process's HTTP port: ``/metrics`` for Prometheus, ``/healthz`` and ``/ready`` for
orchestrators (Kubernetes probes, compose healthchecks).

``/healthz`` answers 200 while the process serves HTTP at all (liveness). ``/ready`` answers
200 only when every role of the process says it is ready: a scorer once its model is loaded,
its partitions are assigned and their entity state is restored; a monitor once it has its
partitions; a trainer once it has joined its group. During a rebalance a scorer is not ready.
Anything else is 404, so a mistyped probe path fails loudly instead of reading metrics as "ok".
"""

from __future__ import annotations

import errno
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from stream.errors import ConfigError

log = logging.getLogger(__name__)


class Health:
    """Per-role readiness, set by the workers, read by ``/ready``. Thread-safe.

    >>> h = Health()
    >>> h.register("scorer"); h.ready()
    (False, {'scorer': 'starting'})
    >>> h.set("scorer", True, "3 partitions, state restored"); h.ready()
    (True, {'scorer': '3 partitions, state restored'})
    >>> Health().ready()  # nothing registered yet: not ready
    (False, {})
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._roles: dict[str, tuple[bool, str]] = {}

    def register(self, role: str) -> None:
        with self._lock:
            self._roles.setdefault(role, (False, "starting"))

    def set(self, role: str, ready: bool, detail: str = "") -> None:
        with self._lock:
            self._roles[role] = (ready, detail or ("ready" if ready else "not ready"))

    def ready(self) -> tuple[bool, dict[str, str]]:
        with self._lock:
            roles = dict(self._roles)
        return bool(roles) and all(ok for ok, _ in roles.values()), {r: d for r, (_, d) in roles.items()}


def serve(registry: CollectorRegistry, health: Health, host: str, port: int) -> ThreadingHTTPServer:
    """Start the listener in a daemon thread. A port in use is a one-line :class:`ConfigError`
    naming the setting; port 0 picks a free one (read ``server.server_port``)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._reply(200, generate_latest(registry), CONTENT_TYPE_LATEST)
            elif path == "/healthz":
                self._reply(200, b'{"status":"alive"}', "application/json")
            elif path == "/ready":
                ok, roles = health.ready()
                body = orjson.dumps({"status": "ready" if ok else "not ready", "roles": roles})
                self._reply(200 if ok else 503, body, "application/json")
            else:
                self._reply(404, b"not found: try /metrics, /healthz or /ready\n", "text/plain")

        def _reply(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # scrapes are not news
            pass

    try:
        server = ThreadingHTTPServer((host, port), Handler)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(f"metrics port {host}:{port} is in use (set MLSTREAM_METRICS_PORT, "
                              "or 0 for any free port)") from None
        raise ConfigError(f"cannot listen on {host}:{port} (MLSTREAM_METRICS_HOST/PORT): "
                          f"{exc.strerror}") from None
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="mlstream-http", daemon=True).start()
    return server
