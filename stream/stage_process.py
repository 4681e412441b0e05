"""Runs the monitor stage of ``worker --role all`` in a child process of its own.

Threads share one interpreter lock: a monitor thread decoding a big feature batch or running a
drift test held the scorer's loop for tens of milliseconds (p99 4x at 2,000 events/s) and took
a third of its throughput. A process shares neither the loop nor the lock. What the process
reports stays where operators look for it: its metrics and its readiness are relayed into the
parent's registry and ``/ready`` (:class:`MetricsRelay`), so one port still shows the worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import signal
import threading
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection
from typing import Any

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.registry import Collector

from stream.config import Settings
from stream.cpu_priority import CpuPriority
from stream.errors import StreamError
from stream.metrics import Metrics

log = logging.getLogger(__name__)

# (family name, type, documentation, [(sample name, labels, value)])
Snapshot = list[tuple[str, str, str, list[tuple[str, dict[str, str], float]]]]


def snapshot(metrics: Metrics) -> tuple[Snapshot, dict[str, str], bool]:
    """Every family of a registry as plain tuples (picklable), with the role's readiness."""
    fams: Snapshot = [(f.name, f.type, f.documentation, [(s.name, dict(s.labels), s.value) for s in f.samples])
                      for f in metrics.registry.collect()]
    ready, roles = metrics.health.ready()
    return fams, roles, ready


class MetricsRelay(Collector):
    """Applies a child's metric snapshots to the parent's own metric objects.

    Counters and histograms move by the child's increase since its previous snapshot, gauges
    take its value, families the parent does not have (the drift collector's gauges) are served
    as the child last reported them. The parent's registry then answers ``/metrics`` and
    ``get_sample_value`` for both processes.

    >>> parent, child = Metrics.create(), Metrics.create()
    >>> relay = MetricsRelay(parent, "monitor")
    >>> child.monitor_rows.inc(5); relay.apply(*snapshot(child))
    >>> child.monitor_rows.inc(2); relay.apply(*snapshot(child))
    >>> parent.registry.get_sample_value("mlstream_monitor_rows_total")
    7.0
    """

    def __init__(self, metrics: Metrics, role: str):
        self.metrics, self.role = metrics, role
        self._own: dict[str, Any] = {m._name: m for m in vars(metrics).values()
                                     if isinstance(m, (Counter, Gauge, Histogram))}
        self._last: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        self._foreign: list[Any] = []
        self._lock = threading.Lock()
        metrics.registry.register(self)

    def collect(self) -> Iterator[Any]:
        with self._lock:
            yield from self._foreign

    def apply(self, fams: Snapshot, roles: dict[str, str], ready: bool) -> None:
        from prometheus_client.metrics_core import Metric

        foreign = []
        for name, kind, doc, samples in fams:
            own = self._own.get(name)
            if own is None:
                fam = Metric(name, doc, kind)
                for sample_name, labels, value in samples:
                    fam.add_sample(sample_name, labels, value)
                foreign.append(fam)
            elif kind == "gauge":
                for _, labels, value in samples:
                    (own.labels(**labels) if labels else own).set(value)
            elif kind == "counter":
                for sample_name, labels, value in samples:
                    if sample_name.endswith("_total"):
                        self._add(own, labels, self._delta(sample_name, labels, value))
            elif kind == "histogram":
                self._histogram(own, samples)
        with self._lock:
            self._foreign = foreign
        if self.role in roles:  # the child runs this one role: its readiness is the role's
            self.metrics.health.set(self.role, ready, roles[self.role])

    def _delta(self, name: str, labels: dict[str, str], value: float) -> float:
        key = (name, tuple(sorted(labels.items())))
        before = self._last.get(key, 0.0)
        self._last[key] = value
        return value - before if value >= before else value  # a restarted child counts from 0

    @staticmethod
    def _add(own: Any, labels: dict[str, str], delta: float) -> None:
        if delta > 0:
            (own.labels(**labels) if labels else own).inc(delta)

    def _histogram(self, own: Any, samples: list[tuple[str, dict[str, str], float]]) -> None:
        series: dict[tuple[tuple[str, str], ...], dict[str, Any]] = {}
        for sample_name, labels, value in samples:
            base = tuple(sorted((k, v) for k, v in labels.items() if k != "le"))
            s = series.setdefault(base, {"buckets": []})
            if sample_name.endswith("_bucket"):
                s["buckets"].append(self._delta(sample_name, labels, value))  # cumulative, in order
            elif sample_name.endswith("_sum"):
                s["sum"] = self._delta(sample_name, labels, value)
        for base, s in series.items():
            child = own.labels(**dict(base)) if base else own
            below = 0.0
            for bucket, cumulative in zip(child._buckets, s["buckets"]):
                if cumulative - below > 0:
                    bucket.inc(cumulative - below)
                below = cumulative
            if s.get("sum"):
                child._sum.inc(s["sum"])


def _child_main(settings: Settings, conn: Connection, interval_s: float, create_topics: bool) -> None:
    """The child: a monitor worker on its own loop, sending snapshots until it stops."""
    from stream.app import run, tune_gc
    from stream.logs import configure_logging

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop (SIGTERM)
    configure_logging(settings.log_level, settings.log_format)
    if settings.monitor.nice:  # the scorer beside it gets the CPU first
        with contextlib.suppress(OSError):  # raising one's own niceness is always allowed; be sure
            os.nice(settings.monitor.nice)
    # before any thread starts (they inherit it) and before the imports (a second of CPU)
    priority = CpuPriority(settings.monitor.idle_max_behind_s)
    if settings.monitor.idle_priority and not priority.start():
        log.info("idle CPU priority not available here: the monitor process runs at nice %d", settings.monitor.nice)
    tune_gc(settings.gc_young_threshold)
    run(_child_run(settings, conn, interval_s, create_topics, priority))


async def _child_run(settings: Settings, conn: Connection, interval_s: float, create_topics: bool,
                     priority: CpuPriority | None = None) -> None:
    from stream.app import stop_within
    from stream.kafka import wait_for_broker
    from stream.monitoring.worker import MonitorWorker

    metrics = Metrics.create()
    metrics.health.register("monitor")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    grace = settings.shutdown_grace_s
    # SIGTERM, or the parent gone (SIGKILLed: nobody would terminate this orphan): stop, and
    # exit after the grace period even if a broker that stopped answering holds the shutdown
    loop.add_signal_handler(signal.SIGTERM, stop_within, stop, grace)
    sender = SnapshotSender(conn, on_gone=lambda: loop.call_soon_threadsafe(stop_within, stop, grace))

    monitor = MonitorWorker(settings, metrics, create_topics=create_topics)

    async def relay() -> None:
        while not stop.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), interval_s)
            sender.offer(snapshot(metrics))
            if priority is not None:  # too far behind: normal priority until it catches up
                priority.observe(monitor.input_age_s)

    relaying = asyncio.create_task(relay())
    try:
        # as run_worker does before its stages: the broker may be restarting while this
        # process starts
        await wait_for_broker(settings, stop)
        if not stop.is_set():
            await monitor.run(stop)
    finally:
        stop.set()
        await relaying
        sender.offer(snapshot(metrics))  # the final counts
        await asyncio.to_thread(sender.close, 5.0)


class SnapshotSender:
    """Sends the child's newest snapshot to the parent from a thread of its own.

    A pipe holds 64 KiB, less than two snapshots (36 kB for the demo domain): sent from the
    monitor's loop, a send waited whenever the parent's reader was one snapshot behind, and a
    reader that stopped froze the monitor for good. Here
    the loop only drops the snapshot into one slot (a newer one replaces a snapshot not yet
    sent: bounded) and goes on.

    >>> import multiprocessing
    >>> r, w = multiprocessing.Pipe(duplex=False)
    >>> s = SnapshotSender(w, on_gone=lambda: None)
    >>> for i in range(1000):   # 1,000 snapshots of 200 kB, nobody reading: no wait
    ...     s.offer(("x" * 200_000, i))
    >>> got = []
    >>> def read():
    ...     with contextlib.suppress(EOFError):
    ...         while True:
    ...             got.append(r.recv()[1])
    >>> reader = threading.Thread(target=read); reader.start()
    >>> s.close(5.0); reader.join(5.0)
    >>> got[-1], len(got) <= 3    # the newest is sent last; the ones it replaced never were
    (999, True)
    """

    def __init__(self, conn: Connection, on_gone: Callable[[], object]):
        self._conn, self._on_gone = conn, on_gone
        self._slot: Any = None
        self._closed = False
        self._cv = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="mlstream-monitor-sender", daemon=True)
        self._thread.start()

    def offer(self, snap: Any) -> None:
        with self._cv:
            self._slot = snap
            self._cv.notify()

    def _run(self) -> None:
        while True:
            with self._cv:
                while self._slot is None and not self._closed:
                    self._cv.wait()
                snap, self._slot = self._slot, None
            if snap is None:  # closed, and everything offered was sent
                return
            try:
                self._conn.send(snap)
            except (BrokenPipeError, EOFError, OSError):
                self._on_gone()
                return

    def close(self, timeout_s: float) -> None:
        """Send what is left (within ``timeout_s``), then close the pipe."""
        with self._cv:
            self._closed = True
            self._cv.notify()
        self._thread.join(timeout_s)
        self._conn.close()


def drain(receiver: Connection, relay: MetricsRelay) -> None:
    """The parent's reader: apply every snapshot until the child closes the pipe. The pipe is
    drained whatever a snapshot holds (one that cannot be applied is logged once per kind)."""
    failed: set[str] = set()
    while True:
        try:
            snap = receiver.recv()
        except (EOFError, OSError):
            return
        try:
            relay.apply(*snap)
        except Exception as exc:  # one snapshot lost, the next ones still apply
            if type(exc).__name__ not in failed:
                failed.add(type(exc).__name__)
                log.error("a metrics snapshot of the monitor process was not applied: %r", exc)


async def run_in_process(settings: Settings, metrics: Metrics, stop: asyncio.Event, *,
                         interval_s: float = 0.5, stop_timeout_s: float = 30.0, create_topics: bool = True) -> None:
    """Run the monitor in a child process until ``stop``; its failure is raised here."""
    ctx = multiprocessing.get_context("spawn")
    receiver, sender = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child_main, args=(settings, sender, interval_s, create_topics), name="mlstream-monitor",
                       daemon=True)
    proc.start()
    sender.close()
    relay = MetricsRelay(metrics, "monitor")

    reader = threading.Thread(target=drain, args=(receiver, relay), name="mlstream-monitor-relay", daemon=True)
    reader.start()
    loop = asyncio.get_running_loop()
    exited: asyncio.Future[Any] = loop.run_in_executor(None, proc.join)
    stopped: asyncio.Future[Any] = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({exited, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
        if proc.is_alive():
            proc.terminate()  # SIGTERM: the child stops its worker and sends its last counts
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(exited), stop_timeout_s)
            if proc.is_alive():
                proc.kill()
        await exited
        await asyncio.to_thread(reader.join, 5)
        receiver.close()
    if proc.exitcode not in (0, -signal.SIGTERM) and not stop.is_set():
        raise StreamError(f"the monitor process exited with code {proc.exitcode}")
