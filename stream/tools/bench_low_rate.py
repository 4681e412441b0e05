"""The low-rate half of ``mlstream bench``: CPU per event at a fixed 500 events/s and end-to-end
latency at 500 and 2,000 events/s (events sent one by one, evenly spaced), each against its own
reference measured in the same run.

- broker floor: no processor, a consumer reads the events topic and takes receive time minus
  the record's timestamp (the produce -> consume round trip any processor pays);
- raw loop: the JSON consume -> parse -> produce loop, for its CPU at the same rate;
- ``mlstream worker --role scorer`` and ``--role all`` as real processes: latency is the
  prediction's ``scored_ts_ms`` minus the event's Kafka timestamp, CPU is the process's own
  (``/proc/<pid>/stat``) over the produce window, after ``WARMUP_S`` unmeasured seconds at the
  first rate. ``--role all`` is fed once its monitor
  process has tested the probe's rows (its start-up, imports and group join, is not a cost per
  event: counted in, it had added ~600 µs per event at 500 events/s).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable
from typing import Any

import numpy as np
import orjson
from aiokafka import TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from stream.config import Settings
from stream.examples.simulate import PaymentSimulator
from stream.kafka import ensure_topics, make_consumer, start_client
from stream.tools.broker import free_port

LOW_RATE = 500
RATES = (LOW_RATE, 2_000)
SECONDS = 6.0  # per rate phase
PROBE = 10  # events that prove a processor is up before a phase starts
WARMUP_S = 2.0  # seconds at the first rate before anything is measured
# events leave one by one, evenly spaced, as many independent producers send them (sent in 50
# groups a second, every processor's fetches came back with a whole group: 10 events at 500/s)
CHUNK = 1


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its live descendants (a monitor process beside the
    scorer counts), all threads: ``/proc/<pid>/stat`` fields 14 and 15."""
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as fh:
                    todo += [int(c) for c in fh.read().split()]
        except (FileNotFoundError, ProcessLookupError):  # exited meanwhile
            continue
    return total


def percentiles(values: list[float]) -> dict[str, float]:
    """p50/p95/p99 in ms, rounded to 0.1.

    >>> percentiles([float(i) for i in range(101)])
    {'p50': 50.0, 'p95': 95.0, 'p99': 99.0, 'events': 101}
    """
    if not values:
        return {"p50": 0.0, "p95": 0.0, "p99": 0.0, "events": 0}
    a = np.asarray(values, dtype=np.float64)
    return {**{f"p{q}": round(float(np.percentile(a, q)), 1) for q in (50, 95, 99)}, "events": len(values)}


async def _assigned_consumer(settings: Settings, topic: str, *, from_end: bool) -> Any:
    consumer = make_consumer(settings, group_id=None, fetch_max_wait_ms=settings.kafka.fetch_max_wait_ms)
    await start_client(consumer, settings.kafka.bootstrap_servers)
    tps = [TopicPartition(topic, p) for p in range(settings.topics.partitions)]
    consumer.assign(tps)
    await (consumer.seek_to_end(*tps) if from_end else consumer.seek_to_beginning(*tps))
    for tp in tps:
        await consumer.position(tp)  # resolved now, not at the first fetch
    return consumer


class Follower:
    """Counts records on the predictions topic; keeps the latency of mlstream predictions."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.count = 0
        self.latencies_ms: list[float] = []
        self.stop = asyncio.Event()

    async def run(self) -> None:
        consumer = await _assigned_consumer(self.settings, self.settings.topics.predictions, from_end=False)
        try:
            while not self.stop.is_set():
                for records in (await consumer.getmany(timeout_ms=50, max_records=10_000)).values():
                    self.count += len(records)
                    for rec in records:
                        p = orjson.loads(rec.value)
                        if "scored_ts_ms" in p and len(self.latencies_ms) < 1_000_000:
                            self.latencies_ms.append(p["scored_ts_ms"] - p["ingest_ts_ms"])
        finally:
            await consumer.stop()

    async def wait_for(self, count: int, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while self.count < count and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        return self.count >= count


def _settings(bootstrap: str, partitions: int, name: str) -> Settings:
    from stream.tools.bench import bench_settings

    run = f"{name}{uuid.uuid4().hex[:6]}"
    return bench_settings(bootstrap, run, partitions, events_topic=f"bench.{run}.events")


async def _produce(settings: Settings, n: int, rate: float, start: int) -> None:
    from stream.tools.traffic import produce

    await produce(settings, PaymentSimulator(seed=3), n, rate=rate, start=start, chunk=CHUNK)


def _spawn(argv: list[str], settings: Settings, metrics_port: int = 0, **extra: Any) -> subprocess.Popen[bytes]:
    env = {**os.environ, "MLSTREAM_LOG_LEVEL": "WARNING", "MLSTREAM_APP_ID": settings.app_id,
           "MLSTREAM_METRICS_PORT": str(metrics_port),
           "MLSTREAM_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers}
    env.update({f"MLSTREAM_TOPICS__{k.upper()}": str(v) for k, v in settings.topics.model_dump().items()})
    return subprocess.Popen([sys.executable, *argv], env=env, stderr=subprocess.DEVNULL, **extra)


async def _floor(settings: Settings, rate: float) -> dict[str, float]:
    """Broker floor: a bare consumer in its own process, fed at ``rate``."""
    await ensure_topics(settings)
    n = int(rate * SECONDS)
    proc = _spawn(["-m", "stream.tools.bench_low_rate", "floor", str(n)], settings, stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        ready = await asyncio.to_thread(proc.stdout.readline)
        if ready.strip() != b"ready":
            raise RuntimeError("bench floor consumer did not start")
        await _produce(settings, n, rate, 0)
        out, _ = await asyncio.to_thread(proc.communicate, timeout=60)
        return dict(orjson.loads(out.strip().splitlines()[-1]))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def monitor_rows(port: int) -> float:
    """``mlstream_monitor_rows_total`` on a worker's /metrics (0 while it does not answer)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
            text = resp.read().decode()
    except OSError:
        return 0.0
    return sum(s.value for fam in text_string_to_metric_families(text) for s in fam.samples
               if s.name == "mlstream_monitor_rows_total")


async def _phases(settings: Settings, argv: list[str], rates: tuple[float, ...],
                  monitored: bool = False) -> dict[float, dict[str, Any]]:
    """Start a processor, prove it is up (``monitored``: its monitor has tested the probe's rows, so
    the monitor process's start-up is not counted in the low-rate CPU), then feed it each rate in
    turn: CPU and latency."""
    await ensure_topics(settings)
    follower = Follower(settings)
    following = asyncio.create_task(follower.run())
    port = free_port()
    proc = _spawn(argv, settings, port, stdout=subprocess.DEVNULL)
    out: dict[float, dict[str, Any]] = {}
    try:
        await _produce(settings, PROBE, 0, 0)
        if not await follower.wait_for(PROBE, 60):
            raise RuntimeError(f"bench: {' '.join(argv[-3:])} produced nothing within 60 s")
        deadline = time.monotonic() + 60
        while monitored and await asyncio.to_thread(monitor_rows, port) < PROBE:
            if time.monotonic() > deadline:
                raise RuntimeError(f"bench: the monitor of {' '.join(argv[-3:])} tested nothing within 60 s")
            await asyncio.sleep(0.2)  # polling the worker's /metrics
        sent = PROBE
        # the first second after start-up runs slower (new connections and partitions, a cold
        # interpreter: in one run p50 12 ms then 7 ms, against 3 ms after): not a steady-state
        # latency, so the first rate runs WARMUP_S unmeasured first (start-up is measured apart)
        warmup = int(rates[0] * WARMUP_S)
        await _produce(settings, warmup, rates[0], sent)
        sent += warmup
        await follower.wait_for(sent, 60)
        for rate in rates:
            n = int(rate * SECONDS)
            follower.latencies_ms.clear()
            cpu0, t0 = cpu_seconds(proc.pid), time.perf_counter()
            await _produce(settings, n, rate, sent)
            sent += n
            await follower.wait_for(sent, 60)
            cpu, wall = cpu_seconds(proc.pid) - cpu0, time.perf_counter() - t0
            out[rate] = {"cpu_us_per_event": round(cpu / n * 1e6, 1), "cpu_core_pct": round(100 * cpu / wall, 1),
                         "latency": percentiles(follower.latencies_ms)}
    finally:
        follower.stop.set()
        await following
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(proc.wait, 30)
        except subprocess.TimeoutExpired:
            proc.kill()
    return out


async def low_rate(bootstrap: str, partitions: int, say: Callable[[str], None]) -> dict[str, Any]:
    latency: dict[str, dict[str, Any]] = {str(r): {} for r in RATES}
    cpu: dict[str, Any] = {}
    core: dict[str, Any] = {}
    for rate in RATES:
        latency[str(rate)]["floor"] = await _floor(_settings(bootstrap, partitions, "floor"), rate)
    raw = await _phases(_settings(bootstrap, partitions, "raw"), ["-m", "stream.tools.bench_low_rate", "raw"],
                        (LOW_RATE,))
    cpu["raw_loop"], core["raw_loop"] = raw[LOW_RATE]["cpu_us_per_event"], raw[LOW_RATE]["cpu_core_pct"]
    for role in ("scorer", "all"):
        phases = await _phases(_settings(bootstrap, partitions, role),
                               ["-m", "stream.cli", "worker", "--role", role], RATES, monitored=role == "all")
        cpu[role], core[role] = phases[LOW_RATE]["cpu_us_per_event"], phases[LOW_RATE]["cpu_core_pct"]
        for phase_rate, phase in phases.items():
            latency[str(int(phase_rate))][role] = phase["latency"]
        say(f"  {role}: " + ", ".join(f"{int(r)}/s p99 {p['latency']['p99']} ms" for r, p in phases.items()))
    hi, lo = latency[str(RATES[-1])], latency[str(LOW_RATE)]
    ratio = lambda a, b: round(a / b, 2) if b else None
    return {
        "low_rate": LOW_RATE,
        "cpu_us_per_event_at_500": cpu, "cpu_core_pct_at_500": core,
        "cpu_vs_raw_loop_at_500": ratio(cpu["scorer"], cpu["raw_loop"]),
        "latency_ms": latency,
        "p99_vs_floor_at_2000": ratio(hi["scorer"]["p99"], hi["floor"]["p99"]),
        "p99_vs_floor_at_500": ratio(lo["scorer"]["p99"], lo["floor"]["p99"]),
        "monitor_effect_on_latency": {f"{q}_at_{r}": ratio(latency[str(r)]["all"][q], latency[str(r)]["scorer"][q])
                                      for r in RATES for q in ("p50", "p99")},
    }


# -- child processes (settings from the environment, as a worker reads them) ---------------------
async def _floor_child(n: int) -> dict[str, Any]:
    from stream.config_load import load_settings

    settings = load_settings()
    consumer = await _assigned_consumer(settings, settings.topics.events, from_end=True)
    print("ready", flush=True)
    lat: list[float] = []
    try:
        deadline = time.monotonic() + 120
        while len(lat) < n and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=50, max_records=10_000)
            now_ms = time.time() * 1000
            for records in batches.values():
                lat += [now_ms - r.timestamp for r in records]
    finally:
        await consumer.stop()
    return percentiles(lat)


async def _raw_child() -> dict[str, Any]:
    from stream.config_load import load_settings
    from stream.tools.bench import raw_loop

    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    return await raw_loop(load_settings(), None, parse=True, stop=stop)


if __name__ == "__main__":
    if sys.argv[1] == "floor":
        print(orjson.dumps(asyncio.run(_floor_child(int(sys.argv[2])))).decode(), flush=True)
    else:
        asyncio.run(_raw_child())
