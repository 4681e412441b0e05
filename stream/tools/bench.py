"""``mlstream bench``: the full pipeline against a raw aiokafka ceiling, on the same events.

One process tree on one broker (``--broker kafka|embedded``; by default Apache Kafka when Java
and its jars are there): the parent pre-loads N events, then child processes
drain them, each with a fresh consumer group: (1) the ceiling, a raw consume -> JSON parse ->
produce loop; (2) the pipeline with every stage on (validation, stateful features with the
changelog, ONNX, predictions and feature batches); (3) the same with a monitor worker running
beside it. Rates are measured from the first record fetched to the last one acknowledged, so
group joins are not counted. Then latency is measured at half the measured capacity.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import time
import uuid
from typing import Any

import numpy as np
import orjson
from aiokafka.partitioner import DefaultPartitioner

from stream.tools.kafka_server import broker_name, open_broker
from stream.config import Settings
from stream.kafka import ensure_topics, make_consumer, make_producer, send_messages, start_client
from stream.messages import Message
from stream.examples.simulate import PaymentSimulator


def _settings(bootstrap: str, run: str, partitions: int, events_topic: str = "bench.events") -> Settings:
    return Settings(
        app_id=f"bench-{run}", kafka={"bootstrap_servers": bootstrap},
        topics={"events": events_topic, "predictions": f"bench.{run}.predictions",
                "dead_letter": f"bench.{run}.dlq", "features": f"bench.{run}.features",
                "changelog": f"bench.{run}.changelog", "labels": f"bench.{run}.labels",
                "drift": f"bench.{run}.drift", "retrain": f"bench.{run}.retrain",
                "partitions": partitions},
        metrics_port=0,
    )


async def preload(settings: Settings, n: int, seed: int = 1) -> None:
    producer = make_producer(settings)
    await start_client(producer, settings.kafka.bootstrap_servers)
    parts = sorted(await producer.partitions_for(settings.topics.events))
    partitioner = DefaultPartitioner()  # the partition a keyed send would choose
    sim = PaymentSimulator(seed=seed)
    for lo in range(0, n, 10_000):  # in chunks: memory stays flat whatever n is
        by_part: dict[int, list[Message]] = {p: [] for p in parts}
        for item in sim.events(min(10_000, n - lo), start=lo):
            by_part[partitioner(item.key, parts, parts)].append(Message(item.key, item.value))
        futures = []
        for p, msgs in by_part.items():
            futures += await send_messages(producer, settings.topics.events, p, msgs)
        await asyncio.gather(*futures)
    await producer.stop()


# -- child processes -------------------------------------------------------------------------
async def _ceiling(settings: Settings, n: int) -> dict[str, Any]:
    consumer = make_consumer(settings, settings.topics.events, group_id=f"{settings.app_id}-ceiling")
    producer = make_producer(settings)
    await start_client(consumer, settings.kafka.bootstrap_servers)
    await start_client(producer, settings.kafka.bootstrap_servers)
    done, first = 0, None
    try:
        while done < n:
            batches = await consumer.getmany(timeout_ms=20, max_records=settings.scoring.max_batch_size)
            if not batches:
                continue
            first = first or time.perf_counter()
            futures = []
            for tp, records in batches.items():
                out = [Message(r.key, orjson.dumps(orjson.loads(r.value))) for r in records]
                futures += await send_messages(producer, settings.topics.predictions, tp.partition, out)
                done += len(records)
            await asyncio.gather(*futures)
            await consumer.commit()
        elapsed = time.perf_counter() - (first or time.perf_counter())
    finally:
        await consumer.stop()
        await producer.stop()
    return {"events": done, "elapsed_s": elapsed}


async def _pipeline(settings: Settings, n: int) -> dict[str, Any]:
    from stream.domain import load_domain
    from stream.metrics import Metrics
    from stream.scoring.worker import ScoringWorker

    worker = ScoringWorker(settings, load_domain(settings.domain), Metrics.create())
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    first = None
    while worker.processed < n and not task.done():
        if first is None and worker.processed:
            first = time.perf_counter()
        await asyncio.sleep(0.002)  # polling a counter in-process; resolution 2 ms
    # every output acknowledged: the same end point as the ceiling's
    await worker.flush()
    elapsed = time.perf_counter() - (first or time.perf_counter())
    stop.set()
    await task
    return {"events": worker.processed, "elapsed_s": elapsed}


async def _monitor(settings: Settings, n: int) -> dict[str, Any]:
    """A monitor worker beside the pipeline: runs until it has tested ``n`` rows."""
    from stream.metrics import Metrics
    from stream.monitoring.worker import MonitorWorker

    metrics = Metrics.create()
    rows = lambda: metrics.registry.get_sample_value("mlstream_monitor_rows_total") or 0  # noqa: E731
    stop = asyncio.Event()
    task = asyncio.create_task(MonitorWorker(settings, metrics).run(stop))
    first, deadline = None, time.monotonic() + 600
    while rows() < n and not task.done() and time.monotonic() < deadline:
        if first is None and rows():
            first = time.perf_counter()
        await asyncio.sleep(0.01)  # polling a counter in-process
    elapsed = time.perf_counter() - (first or time.perf_counter())
    stop.set()
    await task
    return {"events": int(rows()), "elapsed_s": elapsed}


def peak_rss_mb() -> float:
    """This process's own peak RSS (VmHWM; getrusage's maxrss survives exec from the parent)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child_main(argv: list[str]) -> int:
    role, bootstrap, run, partitions, n = argv[0], argv[1], argv[2], int(argv[3]), int(argv[4])
    settings = _settings(bootstrap, run, partitions)
    fn = {"ceiling": _ceiling, "pipeline": _pipeline, "monitor": _monitor}[role]
    result = asyncio.run(fn(settings, n))
    result["peak_rss_mb"] = peak_rss_mb()
    print(json.dumps(result), flush=True)
    return 0


def _child(role: str, bootstrap: str, run: str, partitions: int, n: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "stream.tools.bench", role, bootstrap, run, str(partitions),
                             str(n)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            env={**os.environ, "MLSTREAM_LOG_LEVEL": "WARNING"})


def _result(proc: subprocess.Popen[bytes], timeout: float = 600) -> dict[str, Any]:
    out, _ = proc.communicate(timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"bench child failed with code {proc.returncode}")
    return json.loads(out.decode().strip().splitlines()[-1])


async def _latency(bootstrap: str, partitions: int, rate: float, seconds: float) -> dict[str, Any]:
    """Produce at ``rate`` to a pipeline child and read end-to-end latency from its predictions."""
    from stream.tools.tally import Tally, follow, wait_until
    from stream.tools.traffic import produce

    run = f"lat{uuid.uuid4().hex[:6]}"
    settings = _settings(bootstrap, run, partitions, events_topic=f"bench.{run}.events")
    await ensure_topics(settings)
    env = {**os.environ, "MLSTREAM_LOG_LEVEL": "WARNING", "MLSTREAM_APP_ID": settings.app_id,
           "MLSTREAM_METRICS_PORT": "0", "MLSTREAM_KAFKA__BOOTSTRAP_SERVERS": bootstrap}
    env.update({f"MLSTREAM_TOPICS__{k.upper()}": str(v) for k, v in settings.topics.model_dump().items()})
    proc = subprocess.Popen([sys.executable, "-m", "stream.cli", "worker", "--role", "all"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    tally, stop = Tally(), asyncio.Event()
    follower = asyncio.create_task(follow(settings, tally, stop))
    try:
        sim = PaymentSimulator(seed=3)
        await produce(settings, sim, 10, rate=0)  # probe: wait until the worker has joined
        if not await wait_until(lambda: tally.predictions >= 10, 60):
            raise RuntimeError("latency run: the worker produced no prediction within 60 s")
        tally.latencies_ms.clear()
        n = int(rate * seconds)
        await produce(settings, sim, n, rate=rate, start=10)
        await wait_until(lambda: tally.predictions >= n + 10, 60)
        lat = np.asarray(tally.latencies_ms)
        return {"rate": round(rate), "events": int(len(lat)),
                **{q: round(float(np.percentile(lat, p)), 1) for q, p in (("p50", 50), ("p95", 95), ("p99", 99))}}
    finally:
        stop.set()
        follower.cancel()
        proc.terminate()
        proc.wait(timeout=30)


def main(args: argparse.Namespace) -> int:
    n, runs, partitions = args.events, args.runs, args.partitions
    rows: dict[str, list[dict[str, Any]]] = {"ceiling": [], "pipeline": [], "pipeline_monitored": []}
    with open_broker(getattr(args, "broker", "auto")) as broker:
        kind = broker_name(broker)
        if not args.json:
            print(f"broker: {kind} on {broker.bootstrap}", flush=True)
        base = _settings(broker.bootstrap, "base", partitions)
        asyncio.run(ensure_topics(base))
        t0 = time.perf_counter()
        asyncio.run(preload(base, n))
        if not args.json:
            print(f"pre-loaded {n} events in {time.perf_counter() - t0:.1f}s; {runs} runs", flush=True)
        for i in range(runs):
            for kind in rows:
                run = f"{kind[:4]}{i}{uuid.uuid4().hex[:4]}"
                asyncio.run(ensure_topics(_settings(broker.bootstrap, run, partitions)))
                monitor = _child("monitor", broker.bootstrap, run, partitions, n) \
                    if kind == "pipeline_monitored" else None
                role = "ceiling" if kind == "ceiling" else "pipeline"
                r = _result(_child(role, broker.bootstrap, run, partitions, n))
                if monitor is not None:
                    m = _result(monitor)
                    r["monitor_events_per_s"] = m["events"] / m["elapsed_s"] if m["elapsed_s"] else 0.0
                    r["peak_rss_mb"] = max(r["peak_rss_mb"], m["peak_rss_mb"])
                r["events_per_s"] = r["events"] / r["elapsed_s"]
                rows[kind].append(r)
                if not args.json:
                    extra = f", monitor {r['monitor_events_per_s']:.0f} rows/s" if "monitor_events_per_s" in r else ""
                    print(f"  run {i + 1} {kind:>18}: {r['events_per_s']:9.0f} events/s{extra} "
                          f"(peak RSS {r['peak_rss_mb']:.0f} MB)", flush=True)
        med = {k: statistics.median(r["events_per_s"] for r in v) for k, v in rows.items()}
        latency = asyncio.run(_latency(broker.bootstrap, partitions, med["pipeline"] / 2, 10.0))
    result = {
        "broker": kind, "events": n, "runs": runs, "partitions": partitions,
        "ceiling_events_per_s": round(med["ceiling"]),
        "pipeline_events_per_s": round(med["pipeline"]),
        "pipeline_monitored_events_per_s": round(med["pipeline_monitored"]),
        "ratio": round(med["pipeline"] / med["ceiling"], 3),
        "ratios_per_run": [round(p["events_per_s"] / c["events_per_s"], 3)
                           for p, c in zip(rows["pipeline"], rows["ceiling"])],
        "monitoring_cost": round(1 - med["pipeline_monitored"] / med["pipeline"], 3),
        "monitor_events_per_s": round(statistics.median(
            r["monitor_events_per_s"] for r in rows["pipeline_monitored"])),
        "latency_ms": latency,
        "peak_rss_mb": round(max(r["peak_rss_mb"] for v in rows.values() for r in v), 1),
    }
    if args.json:
        print(json.dumps(result, sort_keys=True))
    else:
        print(f"ceiling  (raw aiokafka consume-parse-produce): {result['ceiling_events_per_s']:>8} events/s")
        print(f"pipeline (all stages):                         {result['pipeline_events_per_s']:>8} events/s")
        print(f"pipeline with monitor worker beside it:        {result['pipeline_monitored_events_per_s']:>8} events/s")
        print(f"ratio pipeline/ceiling (median of {runs}):        {result['ratio']}  per run {result['ratios_per_run']}")
        print(f"monitoring cost:                               {result['monitoring_cost']:.1%} "
              f"(the monitor itself tested {result['monitor_events_per_s']} rows/s)")
        print(f"latency at {latency['rate']} events/s (half capacity): p50 {latency['p50']} ms, "
              f"p95 {latency['p95']} ms, p99 {latency['p99']} ms")
        print(f"peak RSS: {result['peak_rss_mb']} MB")
    return 0


if __name__ == "__main__":
    sys.exit(child_main(sys.argv[1:]))
