"""``mlstream bench``: the full pipeline against two ceilings, on the same events, in one run.

One process tree on one broker (``--broker kafka|embedded``; by default Apache Kafka when Java
and its jars are there): the parent pre-loads N events, then child processes
drain them, each with a fresh consumer group:

- ``broker``: the broker's own limit, raw bytes consumed and produced in whole batches, no parsing;
- ``json``: the classic ceiling, a raw aiokafka consume -> JSON parse -> produce loop;
- ``pipeline``: the scorer with every stage on (validation, stateful features with the
  changelog, ONNX, predictions and feature batches);
- ``all``: scorer and monitor in one process, as ``worker --role all`` runs them;
- ``monitor``: a monitor alone, draining the feature batches the pipeline wrote (rows per second of its processing);
- ``exactly_once`` (Apache Kafka only): the pipeline with ``processing_guarantee=exactly_once``,
  each commit interval's outputs and offsets in one transaction: the cost of the guarantee.

Before the measured runs the broker is warmed up (two broker-limit drains and a pipeline drain,
unmeasured: Apache Kafka's JVM compiles its hot paths in its first minutes; a precaution, harmless
on the embedded broker). Rates run from the first record fetched to the last one acknowledged, so
group joins are not counted; the scorer's start-up (group join -> first prediction) is measured on the way. Then a
``fixed`` child drains with one-event batches and with 1,000-event batches: the difference is
the fixed cost of a micro-batch; beside it, the Kafka client's own floor (the leanest fetch ->
produce loop, the same difference: :func:`stream.tools.bench_profile.client_floor`). Low-rate
CPU and latency against the broker floor are in
:mod:`stream.tools.bench_low_rate`.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import resource
import statistics
import subprocess
import sys
import time
import uuid
from typing import Any

import orjson
from aiokafka.partitioner import DefaultPartitioner

from stream.config import Settings
from stream.examples.simulate import PaymentSimulator
from stream.kafka import ensure_topics, make_consumer, make_producer, send_messages, send_records, start_client
from stream.messages import Message
from stream.tools import bench_bursty
from stream.tools.bench_profile import client_floor, profile_shares
from stream.tools.bench_ratios import counter_total, median_of, paired_ratios, print_table
from stream.tools.kafka_server import broker_name, open_broker

KINDS = ("broker", "json", "pipeline", "bursty", "all", "monitor", "exactly_once")
MONITOR_SHARE = 0.9  # the monitor's merger holds the last rows for its idle timeout: rate over 90%
FIXED_EVENTS = {1: 1_000, 1_000: 20_000}  # batch size -> events drained at that size
# drained once each before the measured runs (a precaution): six broker-limit drains in a row on a
# fresh Apache Kafka ran 122k, 160k, 195k, 183k, 152k, 207k events/s, six pipeline drains 57k then 64-71k
WARM_UP = ("broker", "broker", "pipeline")


def bench_settings(bootstrap: str, run: str, partitions: int, events_topic: str = "bench.events",
                   **scoring: Any) -> Settings:
    return Settings(
        app_id=f"bench-{run}", kafka={"bootstrap_servers": bootstrap},
        topics={"events": events_topic, "predictions": f"bench.{run}.predictions",
                "dead_letter": f"bench.{run}.dlq", "features": f"bench.{run}.features",
                "changelog": f"bench.{run}.changelog", "labels": f"bench.{run}.labels",
                "drift": f"bench.{run}.drift", "retrain": f"bench.{run}.retrain",
                "partitions": partitions},
        scoring=scoring, metrics_port=0,
    )


async def preload(settings: Settings, n: int, seed: int = 1, bursts: bench_bursty.Bursts | None = None) -> None:
    producer = make_producer(settings)
    await start_client(producer, settings.kafka.bootstrap_servers)
    parts = sorted(await producer.partitions_for(settings.topics.events))
    partitioner = DefaultPartitioner()  # the partition a keyed send would choose
    sim = PaymentSimulator(seed=seed)
    for lo in range(0, n, 10_000):  # in chunks: memory stays flat whatever n is
        by_part: dict[int, list[Message]] = {p: [] for p in parts}
        items = sim.events(min(10_000, n - lo), start=lo)
        for item in bursts.apply(items) if bursts is not None else items:
            by_part[partitioner(item.key, parts, parts)].append(Message(item.key, item.value))
        futures = []
        for p, msgs in by_part.items():
            futures += await send_messages(producer, settings.topics.events, p, msgs)
        await asyncio.gather(*futures)
    await producer.stop()


# -- child processes -------------------------------------------------------------------------
async def raw_loop(settings: Settings, n: int | None, *, parse: bool,
                   stop: asyncio.Event | None = None) -> dict[str, Any]:
    """Consume -> (JSON parse and re-encode, or nothing) -> produce in batches -> commit."""
    # the broker limit reads the decoder's own records (the leanest there is); the JSON loop is
    # aiokafka's plain loop, as a user writes it
    consumer = make_consumer(settings, settings.topics.events, group_id=f"{settings.app_id}-raw", raw=not parse)
    producer = make_producer(settings)
    await start_client(consumer, settings.kafka.bootstrap_servers)
    await start_client(producer, settings.kafka.bootstrap_servers)
    loads, dumps, out_topic = orjson.loads, orjson.dumps, settings.topics.predictions
    done, first = 0, None
    try:
        while (n is None or done < n) and not (stop is not None and stop.is_set()):
            batches = await consumer.getmany(timeout_ms=20, max_records=settings.scoring.max_batch_size)
            if not batches:
                continue
            first = first or time.perf_counter()
            futures = []
            for tp, records in batches.items():
                values = [dumps(loads(r.value)) for r in records] if parse else [r.value for r in records]
                futures += await send_records(producer, out_topic, tp.partition, [r.key for r in records], values)
                done += len(records)
            await asyncio.gather(*futures)
            await consumer.commit()
        elapsed = time.perf_counter() - (first or time.perf_counter())
    finally:
        await consumer.stop()
        await producer.stop()
    return {"events": done, "elapsed_s": elapsed}


def _scoring_worker(settings: Settings) -> Any:
    from stream.domain import load_domain
    from stream.metrics import Metrics
    from stream.scoring.worker import ScoringWorker

    worker = ScoringWorker(settings, load_domain(settings.domain), Metrics.create())
    joined: list[float] = []
    on_assigned = worker.on_assigned

    async def timed(assigned: Any) -> None:  # the group join ends when partitions arrive
        joined.append(time.perf_counter())
        await on_assigned(assigned)

    worker.on_assigned = timed  # type: ignore[method-assign]
    worker.joined_at = joined  # type: ignore[attr-defined]
    return worker


async def _drain(settings: Settings, n: int, *, with_monitor: bool) -> dict[str, Any]:
    from stream.app import in_own_thread

    worker = _scoring_worker(settings)
    stop = asyncio.Event()
    tasks = [asyncio.create_task(worker.run(stop))]
    rows = lambda: 0.0
    if with_monitor and settings.monitor.isolation == "process":  # as run_worker places it
        from stream.stage_process import run_in_process

        tasks.append(asyncio.create_task(run_in_process(settings, worker.metrics, stop,
                                                        interval_s=settings.monitor.relay_interval_s)))
    elif with_monitor:
        from stream.monitoring.worker import MonitorWorker

        tasks.append(asyncio.create_task(in_own_thread("monitor", MonitorWorker(settings, worker.metrics).run, stop)))
    if with_monitor:
        rows = lambda: worker.metrics.registry.get_sample_value("mlstream_monitor_rows_total") or 0.0
    first, first_wall = None, 0.0
    while worker.processed < n and not any(t.done() for t in tasks):
        if first is None and worker.processed:
            first, first_wall = time.perf_counter(), time.time()
        await asyncio.sleep(0.001)  # polling a counter in-process; resolution 1 ms
    await worker.flush()  # every output acknowledged: the same end point as the ceilings'
    elapsed = time.perf_counter() - (first or time.perf_counter())
    result: dict[str, Any] = {
        "events": worker.processed, "elapsed_s": elapsed,
        "startup_s": (first - worker.joined_at[0]) if first and worker.joined_at else None,
        "spawn_to_first_s": first_wall - float(os.environ.get("BENCH_SPAWNED_AT", first_wall))}
    if with_monitor:  # the monitor may trail the scorer: wait (bounded) for its rows
        deadline = time.monotonic() + 60
        while rows() < MONITOR_SHARE * n and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        result["monitor_rows"] = rows()
    stop.set()
    await asyncio.gather(*tasks)
    return result


async def _monitor(settings: Settings, n: int) -> dict[str, Any]:
    """A monitor alone on the pipeline's feature batches: rows per second of its processing
    (decoding, event-time merge, tests, label join; its ``monitor`` stage time) until 90 % of
    the rows are counted. Not from the group join: it fetches whole feature batches and may count
    every row in the step its assignment callback runs in, so no start observable from outside
    comes before the first row (that version read 0 rows/s).

    Also rows per CPU second of the whole process (fetching and decoding included) from the first
    rows counted: wall time swings with the broker and the machine (126,000-233,000 rows/s in
    runs minutes apart), CPU time far less."""
    from stream.metrics import Metrics
    from stream.monitoring.worker import MonitorWorker

    metrics = Metrics.create()
    # the one counter's own sample, not the registry's: polled every 5 ms, collecting every metric
    # (get_sample_value) took ~7 % of this process's CPU, counted against the monitor
    rows = lambda: counter_total(metrics.monitor_rows)
    stop = asyncio.Event()
    task = asyncio.create_task(MonitorWorker(settings, metrics).run(stop))
    deadline = time.monotonic() + 120
    first: tuple[float, float] | None = None  # (rows, process CPU) when rows were first counted
    while rows() < MONITOR_SHARE * n and not task.done() and time.monotonic() < deadline:
        if first is None and rows():
            first = (rows(), time.process_time())
        await asyncio.sleep(0.005)  # polling in-process
    busy = metrics.registry.get_sample_value("mlstream_stage_duration_seconds_sum", {"stage": "monitor"}) or 0.0
    cpu_rate = None
    if first is not None and time.process_time() > first[1]:
        cpu_rate = (rows() - first[0]) / (time.process_time() - first[1])
    stop.set()
    await task
    return {"events": int(rows()), "elapsed_s": busy, "rows_per_cpu_s": cpu_rate}


async def _fixed(settings: Settings, n: int) -> dict[str, Any]:
    """CPU per batch with one-event batches and per event with 1,000-event batches."""
    out: dict[str, Any] = {}
    # CPU time, not wall time: waiting on the broker is not a cost of the batch
    profile = cProfile.Profile(time.process_time) if os.environ.get("BENCH_PROFILE") else None
    for size, count in FIXED_EVENTS.items():
        count = min(count, n // 4)  # both drains start from the first event
        s = settings.model_copy(update={
            "app_id": f"{settings.app_id}-b{size}",
            "scoring": settings.scoring.model_copy(update={"max_batch_size": size})})
        worker = _scoring_worker(s)
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run(stop))
        deadline = time.monotonic() + 120
        while worker.processed == 0 and not task.done() and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        cpu0, done0 = time.process_time(), worker.processed
        while worker.processed < done0 + count and not task.done() and time.monotonic() < deadline:
            await asyncio.sleep(0.005)  # polling a counter in-process
        cpu, done = time.process_time() - cpu0, worker.processed - done0
        out[f"cpu_us_per_event_batch_{size}"] = cpu / max(done, 1) * 1e6
        if profile is not None and size == 1:  # profiled apart: the profiler's own cost is not counted
            done0 = worker.processed
            profile.enable()
            while worker.processed < done0 + count and not task.done() and time.monotonic() < deadline:
                await asyncio.sleep(0.005)
            profile.disable()
            out["profiled_batches"] = worker.processed - done0
        stop.set()
        await task
    out["fixed_cost_us_per_batch"] = out["cpu_us_per_event_batch_1"] - out["cpu_us_per_event_batch_1000"]
    out["client_floor_us_per_batch"] = await client_floor(settings, min(FIXED_EVENTS[1], n // 4))
    if profile is not None:
        profile.dump_stats(os.environ["BENCH_PROFILE"])
    return out


def peak_rss_mb() -> float:
    """This process's own peak RSS (VmHWM; getrusage's maxrss survives exec from the parent)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


CHILDREN = {
    "broker": lambda s, n: raw_loop(s, n, parse=False),
    "json": lambda s, n: raw_loop(s, n, parse=True),
    "pipeline": lambda s, n: _drain(s, n, with_monitor=False),
    "all": lambda s, n: _drain(s, n, with_monitor=True),
    "monitor": _monitor,
    "fixed": _fixed,
}


def child_main(argv: list[str]) -> int:
    from stream.app import run as run_loop
    from stream.app import tune_gc

    role, bootstrap, run, partitions, n = argv[0], argv[1], argv[2], int(argv[3]), int(argv[4])
    settings = bench_settings(bootstrap, run, partitions)
    if role == "exactly_once":  # the same pipeline, its outputs and offsets in transactions
        role, settings = "pipeline", settings.model_copy(update={"processing_guarantee": "exactly_once"})
    if role == "bursty":  # the same pipeline on bursty traffic
        role, settings = "pipeline", bench_settings(bootstrap, run, partitions, events_topic=bench_bursty.TOPIC)
    if role == "monitor":  # as a monitor process runs (stream.app.tune_gc)
        tune_gc(settings.gc_young_threshold)
    result = run_loop(CHILDREN[role](settings, n))
    result["peak_rss_mb"] = peak_rss_mb()
    print(json.dumps(result), flush=True)
    return 0


def run_child(role: str, bootstrap: str, run: str, partitions: int, n: int, timeout: float = 300,
              **env: str) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, "-m", "stream.tools.bench", role, bootstrap, run, str(partitions), str(n)],
                          capture_output=True, timeout=timeout,
                          env={**os.environ, "MLSTREAM_LOG_LEVEL": "WARNING", "BENCH_SPAWNED_AT": str(time.time()),
                               **env})
    if proc.returncode != 0:
        tail = proc.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["?"]
        raise RuntimeError(f"bench child {role} failed with code {proc.returncode}: {tail[0][:300]}")
    return dict(json.loads(proc.stdout.decode().strip().splitlines()[-1]))


def main(args: argparse.Namespace) -> int:
    from stream.tools.bench_low_rate import low_rate

    n, runs, partitions = args.events, args.runs, args.partitions
    if runs < 1 or n < 4 or partitions < 1:  # ratios need a run; the fixed-cost drains a quarter of the events
        raise SystemExit(f"bench: need --runs >= 1 (got {runs}), --events >= 4 ({n}), --partitions >= 1 ({partitions})")
    say = (lambda *a: None) if args.json else (lambda *a: print(*a, flush=True))
    rows: dict[str, list[dict[str, Any]]] = {k: [] for k in KINDS}
    began = time.perf_counter()
    with open_broker(getattr(args, "broker", "auto")) as broker:
        boot = broker.bootstrap
        broker_kind = broker_name(broker)
        say(f"broker: {broker_kind} on {boot}")
        asyncio.run(ensure_topics(bench_settings(boot, "base", partitions)))
        asyncio.run(preload(bench_settings(boot, "base", partitions), n))
        bursty = bench_settings(boot, "base", partitions, events_topic=bench_bursty.TOPIC)
        asyncio.run(ensure_topics(bursty))
        asyncio.run(preload(bursty, n, bursts=bench_bursty.Bursts(seed=2)))
        say(f"pre-loaded {n} events; {runs} runs")
        for kind in WARM_UP:  # unmeasured: the broker's JVM compiles its hot paths first
            run = f"warm{uuid.uuid4().hex[:4]}"
            asyncio.run(ensure_topics(bench_settings(boot, run, partitions)))
            run_child(kind, boot, run, partitions, n)
        for i in range(runs):
            tag = f"{i}{uuid.uuid4().hex[:4]}"
            for kind in KINDS:
                if kind == "exactly_once" and broker_kind == "embedded":
                    continue  # transactions need Apache Kafka
                run = f"pipeline{tag}" if kind == "monitor" else f"{kind}{tag}"  # on the pipeline's features
                if kind != "monitor":
                    asyncio.run(ensure_topics(bench_settings(boot, run, partitions)))
                r = run_child(kind, boot, run, partitions, n)
                r["events_per_s"] = r["events"] / r["elapsed_s"] if r["elapsed_s"] else 0.0
                rows[kind].append(r)
                say(f"  run {i + 1} {kind:>8}: {r['events_per_s']:9.0f} events/s (peak RSS {r['peak_rss_mb']:.0f} MB)")
        run = f"fixed{uuid.uuid4().hex[:4]}"
        asyncio.run(ensure_topics(bench_settings(boot, run, partitions)))
        fixed = run_child("fixed", boot, run, partitions, n,
                          **({"BENCH_PROFILE": args.profile} if args.profile else {}))
        say(f"  fixed cost of a micro-batch: {fixed['fixed_cost_us_per_batch']:.0f} µs "
            f"(the Kafka client's floor {fixed['client_floor_us_per_batch']:.0f} µs)")
        low = asyncio.run(low_rate(boot, partitions, say))
    med = {k: median_of(v, "events_per_s") for k, v in rows.items()}
    per_run = paired_ratios(rows)
    ratio = {k: round(statistics.median(v), 3) for k, v in per_run.items()}
    result = {
        "broker": broker_kind, "events": n, "runs": runs, "partitions": partitions,
        "broker_limit_events_per_s": round(med["broker"]),
        "ceiling_events_per_s": round(med["json"]),  # the JSON loop
        "pipeline_events_per_s": round(med["pipeline"]),
        "pipeline_monitored_events_per_s": round(med["all"]),
        "ratio_broker_limit": ratio["pipeline/broker"],
        "ratio": ratio["pipeline/json"],
        "ratios_per_run": per_run,
        "pipeline_bursty_events_per_s": round(med["bursty"]),
        "bursty_vs_demo_traffic": ratio["bursty/pipeline"],
        "monitoring_cost": round(1 - ratio["all/pipeline"], 3),
        "pipeline_exactly_once_events_per_s": round(med["exactly_once"]) if rows["exactly_once"] else None,
        "exactly_once_cost": round(1 - ratio["exactly_once/pipeline"], 3) if rows["exactly_once"] else None,
        "monitor_rows_per_s": round(med["monitor"]),
        "monitor_rows_per_cpu_s": round(median_of(rows["monitor"], "rows_per_cpu_s")),
        "startup_s": {"join_to_first_prediction": round(median_of(rows["pipeline"], "startup_s"), 3),
                      "spawn_to_first_prediction": round(median_of(rows["pipeline"], "spawn_to_first_s"), 3),
                      "join_to_first_prediction_with_monitor": round(median_of(rows["all"], "startup_s"), 3)},
        "fixed_cost_us_per_batch": round(fixed["fixed_cost_us_per_batch"], 1),
        "client_floor_us_per_batch": round(fixed["client_floor_us_per_batch"], 1),
        "cpu_us_per_event_batch_1": round(fixed["cpu_us_per_event_batch_1"], 1),
        "cpu_us_per_event_batch_1000": round(fixed["cpu_us_per_event_batch_1000"], 1),
        **low,
        **({"fixed_cost_profile_pct": profile_shares(args.profile, fixed.get("profiled_batches", 0))} if args.profile else {}),
        "peak_rss_mb": round(max(r["peak_rss_mb"] for v in rows.values() for r in v), 1),
        "bench_seconds": round(time.perf_counter() - began),
    }
    if args.json:
        print(json.dumps(result, sort_keys=True))
        return 0
    print_table(result, args.profile)
    return 0


if __name__ == "__main__":
    sys.exit(child_main(sys.argv[1:]))
