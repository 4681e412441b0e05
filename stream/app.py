"""Runs mlstream workers in one process: scorer, monitor, or both, plus the /metrics endpoint.

With both roles the monitor runs in a process of its own (``monitor.isolation = "process"``,
see :mod:`stream.stage_process`) or on a thread with its own event loop (``"thread"``), so the
scorer's loop never waits behind a drift test or a feature-batch decode (``--role all`` used to
halve the scorer's throughput and multiply its p50 latency at low rates by sharing one loop).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import gc
import logging
import os
import signal
import sys
import threading
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, TypeVar

from stream.config import Settings
from stream.domain import load_domain
from stream.http import serve
from stream.kafka import ensure_topics, wait_for_broker
from stream.metrics import Metrics

log = logging.getLogger(__name__)
ROLES = ("scorer", "monitor")
T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` on uvloop's event loop when uvloop is installed, else on the standard one.

    A micro-batch is several loop iterations and a score of callbacks (fetch, produce request
    and response, futures); on uvloop a one-event batch took 10-20% less CPU in ``mlstream
    bench``'s fixed-cost drain.

    >>> async def answer() -> int:
    ...     return 42
    >>> run(answer())
    42
    """
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


def tune_gc(young_threshold: int) -> None:
    """Fewer cyclic garbage collections in a long-running monitor process: a young collection
    every ``young_threshold`` allocations (0: Python's default), and the objects alive at start-up
    frozen out of every collection. Reference cycles are rare on the data path; their memory
    waits at most one young period.

    >>> import gc
    >>> before = gc.get_threshold()
    >>> tune_gc(50_000); gc.get_threshold()[0]
    50000
    >>> gc.unfreeze(); gc.set_threshold(*before)
    """
    if young_threshold > 0:
        gc.freeze()
        gc.set_threshold(young_threshold, 20, 100)


def freeze_startup() -> None:
    """Objects alive once a scorer has started (modules, clients, the model) moved out of every
    cyclic collection: a full collection of a started scorer walked ~70,000 of them, a pause of
    ~25 ms in the middle of scoring; frozen, it takes well under a millisecond. For a process
    that runs one worker: what is frozen is never collected."""
    gc.collect()
    gc.freeze()


async def run_worker(settings: Settings, roles: Sequence[str] = ROLES, *,
                     stop: asyncio.Event | None = None, metrics: Metrics | None = None,
                     create_topics: bool = True, handle_signals: bool = True,
                     on_metrics_port: Callable[[int], None] | None = None,
                     freeze: bool = False) -> None:
    """Run until ``stop`` is set or SIGINT/SIGTERM; any stage failing stops the others.
    ``freeze``: :func:`freeze_startup` once the scorer is built (a worker process of its own).

    Once stopping, the stages get ``shutdown_grace_s`` to commit and close; whatever they
    still wait on then (a broker that stopped answering) is cancelled. With ``handle_signals``
    a watchdog also ends the process if even that does not return in time."""
    stop = stop or asyncio.Event()
    metrics = metrics or Metrics.create()
    loop = asyncio.get_running_loop()
    grace = settings.shutdown_grace_s
    for sig in (signal.SIGINT, signal.SIGTERM) if handle_signals else ():
        try:
            loop.add_signal_handler(sig, stop_within, stop, grace)
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
            from stream.scoring.feed import start_feed
            from stream.scoring.worker import ScoringWorker

            feed = await start_feed(settings, metrics, stop)  # caught up, or the champion waited for
            if stop.is_set() and feed is not None:
                await feed.close()
                return
            try:
                scorer = ScoringWorker(settings, load_domain(settings.domain), metrics,
                                       create_topics=create_topics, feed=feed)
            except BaseException:
                if feed is not None:
                    await feed.close()
                raise
            if freeze:
                freeze_startup()
            tasks.append(asyncio.ensure_future(scorer.run(stop)))
        if "monitor" in roles and settings.monitor.enabled:
            from stream.monitoring.worker import MonitorWorker

            # alone, the monitor owns the main loop; beside a scorer, a process or a loop of its own
            if not tasks:
                stage = MonitorWorker(settings, metrics, create_topics=create_topics).run(stop)
            elif settings.monitor.isolation == "process":
                from stream.stage_process import run_in_process

                stage = run_in_process(settings, metrics, stop, interval_s=settings.monitor.relay_interval_s,
                                       stop_timeout_s=grace / 2, create_topics=create_topics)
            else:
                stage = in_own_thread("mlstream-monitor",
                                      MonitorWorker(settings, metrics, create_topics=create_topics).run, stop)
            tasks.append(asyncio.ensure_future(stage))
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


def stop_within(stop: asyncio.Event, grace_s: float) -> None:
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


async def in_own_thread(name: str, work: Callable[[asyncio.Event], Awaitable[None]],
                        stop: asyncio.Event) -> None:
    """Run ``work(its_stop)`` on a new event loop in a new thread; return when it returns.

    ``stop`` (an event of the caller's loop) is relayed to the thread's loop; an error in the
    thread is raised here, so a failing stage stops the others as it would in one loop.

    >>> async def main():
    ...     stop, seen = asyncio.Event(), []
    ...     async def work(own_stop):
    ...         seen.append(threading.current_thread().name)
    ...         await own_stop.wait()
    ...     task = asyncio.ensure_future(in_own_thread("t1", work, stop))
    ...     await asyncio.sleep(0.05)
    ...     stop.set()
    ...     await asyncio.wait_for(task, 5)
    ...     return seen
    >>> asyncio.run(main())
    ['t1']
    """
    done: concurrent.futures.Future[None] = concurrent.futures.Future()
    stopping = threading.Event()
    own: dict[str, object] = {}

    async def body() -> None:
        own_stop = asyncio.Event()
        own["loop"], own["stop"] = asyncio.get_running_loop(), own_stop
        if stopping.is_set():  # stopped before this loop existed
            own_stop.set()
        await work(own_stop)

    def main() -> None:
        try:
            run(body())
        except BaseException as exc:  # handed to the caller's loop, raised there
            done.set_exception(exc)
        else:
            done.set_result(None)

    threading.Thread(target=main, name=name, daemon=True).start()
    finished: asyncio.Future[Any] = asyncio.wrap_future(done)
    stopped: asyncio.Future[Any] = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({finished, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
        stopping.set()
        loop, own_stop = own.get("loop"), own.get("stop")
        if isinstance(loop, asyncio.AbstractEventLoop) and isinstance(own_stop, asyncio.Event):
            with contextlib.suppress(RuntimeError):  # that loop already closed: the work is over
                loop.call_soon_threadsafe(own_stop.set)
        await asyncio.shield(finished)
