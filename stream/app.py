"""Runs mlstream workers in one process: scorer, monitor, or both, plus the /metrics endpoint."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable, Sequence


from stream.config import Settings
from stream.domain import load_domain
from stream.http import serve
from stream.kafka import ensure_topics
from stream.metrics import Metrics

log = logging.getLogger(__name__)
ROLES = ("scorer", "monitor")


async def run_worker(settings: Settings, roles: Sequence[str] = ROLES, *,
                     stop: asyncio.Event | None = None, metrics: Metrics | None = None,
                     create_topics: bool = True, handle_signals: bool = True,
                     on_metrics_port: Callable[[int], None] | None = None) -> None:
    """Run until ``stop`` is set or SIGINT/SIGTERM; any stage failing stops the others."""
    stop = stop or asyncio.Event()
    metrics = metrics or Metrics.create()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM) if handle_signals else ():
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # not the main thread
            pass
    server = serve(metrics.registry, metrics.health, settings.metrics_host, settings.metrics_port)
    log.info("metrics on http://%s:%s/metrics (health: /healthz, /ready)", settings.metrics_host,
             server.server_port)
    if on_metrics_port is not None:
        on_metrics_port(server.server_port)
    try:
        if create_topics:
            await ensure_topics(settings)
        stages = []
        if "scorer" in roles:
            from stream.scoring.worker import ScoringWorker

            metrics.health.register("scorer")
            stages.append(ScoringWorker(settings, load_domain(settings.domain), metrics).run(stop))
        if "monitor" in roles and settings.monitor.enabled:
            from stream.monitoring.worker import MonitorWorker

            metrics.health.register("monitor")
            stages.append(MonitorWorker(settings, metrics).run(stop))
        tasks = [asyncio.ensure_future(s) for s in stages]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                task.result()  # re-raise the failing stage's error
        finally:
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        server.shutdown()
        server.server_close()
