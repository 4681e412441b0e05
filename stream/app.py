"""Runs mlstream workers in one process: scorer, monitor, or both, plus the /metrics endpoint."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any

from stream.config import Settings
from stream.domain import load_domain
from stream.http import serve
from stream.kafka import ensure_topics, wait_for_broker
from stream.metrics import Metrics

log = logging.getLogger(__name__)
ROLES = ("scorer", "monitor")


async def run_worker(settings: Settings, roles: Sequence[str] = ROLES, *,
                     stop: asyncio.Event | None = None, metrics: Metrics | None = None,
                     create_topics: bool = True, handle_signals: bool = True,
                     on_metrics_port: Callable[[int], None] | None = None) -> None:
    """Run until ``stop`` is set or SIGINT/SIGTERM; any stage failing stops the others.

    Once stopping, the stages get ``shutdown_grace_s`` to commit and close; whatever they
    still wait on then (a broker that stopped answering) is cancelled. With ``handle_signals``
    a watchdog also ends the process if even that does not return in time."""
    stop = stop or asyncio.Event()
    metrics = metrics or Metrics.create()
    loop = asyncio.get_running_loop()
    grace = settings.shutdown_grace_s
    for sig in (signal.SIGINT, signal.SIGTERM) if handle_signals else ():
        try:
            loop.add_signal_handler(sig, _on_signal, stop, grace)
        except (NotImplementedError, RuntimeError):  # not the main thread
            pass
    server = serve(metrics.registry, metrics.health, settings.metrics_host, settings.metrics_port)
    log.info("metrics on http://%s:%s/metrics (health: /healthz, /ready)", settings.metrics_host,
             server.server_port)
    if on_metrics_port is not None:
        on_metrics_port(server.server_port)
    tasks: list[asyncio.Future[None]] = []
    try:
        for role in roles:  # not ready while waiting for the broker
            if role == "scorer" or (role == "monitor" and settings.monitor.enabled):
                metrics.health.register(role)
        await wait_for_broker(settings, stop)
        if stop.is_set():
            return
        if create_topics:
            await ensure_topics(settings)
        if "scorer" in roles:
            from stream.scoring.worker import ScoringWorker

            tasks.append(asyncio.ensure_future(ScoringWorker(
                settings, load_domain(settings.domain), metrics, create_topics=create_topics).run(stop)))
        if "monitor" in roles and settings.monitor.enabled:
            from stream.monitoring.worker import MonitorWorker

            tasks.append(asyncio.ensure_future(
                MonitorWorker(settings, metrics, create_topics=create_topics).run(stop)))
        stopping: asyncio.Future[Any] = asyncio.ensure_future(stop.wait())
        waiting: list[asyncio.Future[Any]] = [*tasks, stopping]
        try:
            done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
        for task in done:
            if task is not stopping:
                task.result()  # re-raise the failing stage's error
    finally:
        stop.set()
        await _wind_down(tasks, grace)
        server.shutdown()
        server.server_close()


async def _wind_down(tasks: list[asyncio.Future[None]], grace_s: float) -> None:
    """Let the stages finish (commit, close) within most of the grace period, then cancel."""
    if not tasks:
        return
    _, pending = await asyncio.wait(tasks, timeout=max(grace_s - 2.0, grace_s / 2))
    if pending:
        log.error("%d stage(s) still busy %.0fs after stop (a broker not answering?); cancelling",
                  len(pending), grace_s)
        for task in pending:
            task.cancel()
        await asyncio.wait(pending, timeout=1.0)
    for task in tasks:
        if task.done() and not task.cancelled():
            task.exception()  # retrieved: reported by the caller or logged by the stage


def _on_signal(stop: asyncio.Event, grace_s: float) -> None:
    """First signal: stop. A watchdog thread ends the process if it is still alive after the
    grace period (an event loop blocked in a call that never returns)."""
    if stop.is_set():
        return
    stop.set()
    log.info("stopping (at most %ss)", f"{grace_s:g}")
    timer = threading.Timer(grace_s, _give_up, args=(grace_s,))
    timer.daemon = True
    timer.start()


def _give_up(grace_s: float) -> None:
    print(f"mlstream: error: not stopped {grace_s:g}s after the signal (MLSTREAM_SHUTDOWN_GRACE_S); "
          "exiting now", file=sys.stderr, flush=True)
    os._exit(3)
