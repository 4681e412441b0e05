"""``mlstream bench-sustained``: a long run at a fixed rate on Apache Kafka, sampled over time.

It starts the broker, ``--workers`` ``mlstream worker --role all`` processes (``--demo``: with the
demo's drift, invalid events and trainer), produces simulated payments at ``--rate`` for
``--minutes`` or ``--events``, and every ``--sample-s`` records a row: produced/s (this process's
sends), scored/s (growth of the scorer group's committed offsets on the events topic: predictions
and dead letters), lag (log end minus committed, summed over partitions), p50/p99 of
``scored_ts_ms - ingest_ts_ms`` of the interval's predictions (a follower reads them all), and RSS
and CPU of the workers with their children (the monitor process). Verdict: scored/s >= 0.98 x rate
in every interval after the first; lag bounded over the last half (under 2 s of traffic, or
growing by under 0.5% of the rate per second); worker RSS growth from minute 2 to the end.
Every process it starts is stopped by PID, at the end or on Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import time
from pathlib import Path
from typing import Any

import numpy as np
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from stream.config import Settings
from stream.errors import MessageError
from stream.examples.simulate import SECONDS_PER_EVENT, START_TS, WARMUP_EVENTS, PaymentSimulator
from stream.kafka import client_options, ensure_topics, make_consumer, start_client
from stream.messages import Prediction, decode
from stream.tools.bench_low_rate import cpu_seconds
from stream.tools.broker import free_port
from stream.tools.demo import start_worker, stop_processes
from stream.tools.kafka_server import KafkaServer, broker_name, open_broker
from stream.tools.tally import wait_until
from stream.tools.traffic import produce

PROBE = 10  # events that prove the workers answer before the timed traffic starts
MAX_LATENCIES = 300_000  # per interval (bounded memory at any rate)
DEMO_TRAFFIC: dict[str, Any] = {"seed": 42, "scenario": "mean_shift", "drift_at": 20_000, "invalid_rate": 0.01}
CALL_TIMEOUT_S, FIRST_PREDICTION_S, DRAIN_S = 10.0, 120.0, 60.0  # an offsets query; waits after start and traffic


def descendants(pid: int) -> dict[int, str]:
    """``pid`` and every live process below it, with its start time (tells a PID from its reuse)."""
    found, todo = {}, [pid]
    while todo:
        p = todo.pop()
        with contextlib.suppress(OSError, IndexError), open(f"/proc/{p}/stat") as fh:
            found[p] = fh.read().rsplit(")", 1)[1].split()[19]
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as fh:
                    todo += [int(c) for c in fh.read().split()]
    return found


def rss_mb(*pids: int | None) -> float:
    """VmRSS of processes and their descendants, in MB (0 for those gone)."""
    kb = 0
    for p in (q for pid in pids if pid for q in descendants(pid)):
        with contextlib.suppress(OSError), open(f"/proc/{p}/status") as fh:
            kb += next((int(line.split()[1]) for line in fh if line.startswith("VmRSS:")), 0)
    return round(kb / 1024, 1)


def check_event_time(events: int, max_future_s: float) -> None:
    """Refuse a run whose simulated event times (``SECONDS_PER_EVENT`` apart from ``START_TS``)
    would pass the scorer's and the monitor's future-time bound before its end.

    >>> check_event_time(10_000_000, 86_400.0)
    >>> check_event_time(10**9, 86_400.0)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ValueError: 1000000000 events would run the simulated clock past now + scoring.max_future_s (86400 s): ...
    """
    fit = int((time.time() + max_future_s - START_TS) / SECONDS_PER_EVENT) - PROBE
    if events > fit:
        raise ValueError(f"{events} events would run the simulated clock past now + scoring.max_future_s "
                         f"({max_future_s:g} s): at most {fit} fit")


class Follower:
    """Reads every prediction: a count, and the end-to-end latencies of the current interval."""

    def __init__(self) -> None:
        self.predictions, self.latencies_ms = 0, list[int]()

    async def run(self, settings: Settings, stop: asyncio.Event) -> None:
        consumer = make_consumer(settings, group_id=None, fetch_max_wait_ms=100)
        await start_client(consumer, settings.kafka.bootstrap_servers)
        try:
            consumer.assign([TopicPartition(settings.topics.predictions, p) for p in range(settings.topics.partitions)])
            while not stop.is_set():
                for records in (await consumer.getmany(timeout_ms=200, max_records=20_000)).values():
                    for rec in records:
                        with contextlib.suppress(MessageError):
                            p = decode(rec.value, Prediction)
                            self.predictions += 1
                            if len(self.latencies_ms) < MAX_LATENCIES:
                                self.latencies_ms.append(p.scored_ts_ms - p.ingest_ts_ms)
        finally:
            await consumer.stop()


async def scorer_offsets(settings: Settings, consumer: Any, admin: AIOKafkaAdminClient) -> tuple[int, int]:
    """(log end, committed offset of the scorer group), summed over the events partitions."""
    tps = [TopicPartition(settings.topics.events, p) for p in range(settings.topics.partitions)]
    # committed first: log ends only grow, so end - committed is never below 0 by the reading order
    done = await asyncio.wait_for(admin.list_consumer_group_offsets(f"{settings.app_id}-scorer"), CALL_TIMEOUT_S)
    ends = await asyncio.wait_for(consumer.end_offsets(tps), CALL_TIMEOUT_S)
    return sum(ends.values()), sum(max(0, done[tp].offset) for tp in tps if tp in done)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    quit_, loop = asyncio.Event(), asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):  # Ctrl-C: report what was measured, stop everything
        loop.add_signal_handler(sig, quit_.set)
    rate, sample_s, workdir = float(args.rate), float(args.sample_s), Path(args.workdir)
    minutes = args.minutes if args.minutes is not None else (30.0 if args.events is None else args.events / rate / 60 * 1.1 + 1)
    target = int(rate * minutes * 60) if args.events is None else args.events
    check_event_time(target, Settings().scoring.max_future_s)  # before anything starts
    workdir.mkdir(parents=True, exist_ok=True)
    began = time.monotonic()
    with open_broker(args.broker) as broker:
        startup_s = time.monotonic() - began
        shutil.rmtree(workdir / "models", ignore_errors=True)
        shutil.copytree(args.store, workdir / "models")  # a trainer may promote: never the shipped store
        settings = Settings(kafka={"bootstrap_servers": broker.bootstrap}, model_store=workdir / "models",
                            topics={"partitions": args.partitions}, trainer={"shadow_labels": 1_000},
                            monitor={"warmup_rows": WARMUP_EVENTS, "retrain_cooldown_s": 3_600.0})
        await ensure_topics(settings)
        workers = [start_worker(settings, free_port(), log_file=workdir / f"worker-{i}.log")
                   for i in range(args.workers)]
        procs = workers + ([start_worker(settings, 0, log_file=workdir / "trainer.log", command="trainer",
                                         extra_env={"MLSTREAM_TRAINER__RETRY_INTERVAL_S": "5"})]
                           if args.demo else [])  # as `make demo`: the trainer answers drift's retraining requests
        sim = PaymentSimulator(**DEMO_TRAFFIC) if args.demo else PaymentSimulator()
        stop, follower, sent, launched = asyncio.Event(), Follower(), [0], time.monotonic()
        tasks: list[asyncio.Future[Any]] = [asyncio.ensure_future(follower.run(settings, stop)),
                                            asyncio.ensure_future(quit_.wait())]
        consumer, admin = make_consumer(settings, group_id=None), AIOKafkaAdminClient(**client_options(settings.kafka))
        children: dict[int, str] = {}  # the workers' children seen: PID -> start time
        try:
            for client in (consumer, admin):
                await start_client(client, settings.kafka.bootstrap_servers)
            await produce(settings, sim, PROBE, rate=0)
            if not await wait_until(lambda: follower.predictions > 0 or quit_.is_set()
                                    or any(p.poll() is not None for p in procs), FIRST_PREDICTION_S):
                raise RuntimeError(f"no prediction within {FIRST_PREDICTION_S:.0f} s; see {workdir}")
            first_prediction_s = round(time.monotonic() - launched, 2) if follower.predictions else None
            deadline = (t0 := time.monotonic()) + minutes * 60
            producer = asyncio.create_task(produce(settings, sim, target, rate=rate, stop=stop, start=PROBE,
                                                   on_progress=lambda k: sent.__setitem__(0, k)))
            tasks.append(producer)
            rows: list[dict[str, Any]] = []
            follower.latencies_ms = []
            last: dict[str, Any] = {"t": t0, "sent": 0, "cpu": {p.pid: cpu_seconds(p.pid) for p in workers},
                                    "done": (await scorer_offsets(settings, consumer, admin))[1], "pred": follower.predictions}
            while True:
                due = min(t0 + (len(rows) + 1) * sample_s, deadline)
                await asyncio.wait([producer, tasks[1]], timeout=max(0.0, due - time.monotonic()),
                                   return_when=asyncio.FIRST_COMPLETED)
                now = time.monotonic()
                if any(p.poll() is not None for p in procs):
                    raise RuntimeError(f"a worker exited; see {workdir}")
                if quit_.is_set() or (now < due and now - last["t"] < sample_s / 4):
                    break  # Ctrl-C, or traffic ended just after a row: no whole interval to measure
                children.update({k: v for p in procs for k, v in descendants(p.pid).items() if k != p.pid})
                end, done = await scorer_offsets(settings, consumer, admin)
                lat, follower.latencies_ms = np.asarray(follower.latencies_ms or [0]), []
                dt = now - last["t"]
                cpu = {p.pid: cpu_seconds(p.pid) for p in workers}
                rows.append({
                    "minute": round((now - t0) / 60, 2), "produced": sent[0], "lag": end - done,
                    "produced_per_s": round((sent[0] - last["sent"]) / dt, 1),
                    "scored_per_s": round((done - last["done"]) / dt, 1),
                    "predictions_per_s": round((follower.predictions - last["pred"]) / dt, 1),
                    "p50_ms": round(float(np.percentile(lat, 50)), 1), "p99_ms": round(float(np.percentile(lat, 99)), 1),
                    "worker_rss_mb": rss_mb(*(p.pid for p in workers)),
                    "worker_cpu_pct": round(100 * sum(cpu[k] - last["cpu"].get(k, 0.0) for k in cpu) / dt, 1),
                    "broker_rss_mb": rss_mb(*[n.pid for n in broker.nodes] if isinstance(broker, KafkaServer)
                                            else [broker.process.pid if broker.process else None]),
                    "broker_disk_mb": round(sum(f.stat().st_size for f in broker.data_dir.rglob("*") if f.is_file())
                                            / 2**20, 1) if isinstance(broker, KafkaServer) else None,
                    **({"trainer_rss_mb": rss_mb(procs[-1].pid)} if args.demo else {})})
                last = {"t": now, "sent": sent[0], "done": done, "cpu": cpu, "pred": follower.predictions}
                if not args.json:
                    print(format_row(rows[-1], ""), flush=True)
                if producer.done() or quit_.is_set() or now >= deadline:
                    break
            stop.set()  # the producer stops after its current chunk
            await asyncio.wait([producer], timeout=CALL_TIMEOUT_S)
            if producer.done() and not producer.cancelled():
                producer.result()  # a producer failure surfaces here
            duration_s, drain_began = time.monotonic() - t0, time.monotonic()  # then until all is committed
            while not quit_.is_set() and (o := await scorer_offsets(settings, consumer, admin))[1] < o[0] \
                    and time.monotonic() - drain_began < DRAIN_S:
                await asyncio.sleep(0.5)  # polling committed offsets: nothing to wait on instead
            drained = not quit_.is_set() and o[1] >= o[0]
            return {"broker": broker_name(broker), "broker_startup_s": round(startup_s, 1), "rate": rate,
                    "sample_s": sample_s, "workers": args.workers, "partitions": args.partitions, "demo": args.demo,
                    "first_prediction_s": first_prediction_s, "events_produced": sent[0] + PROBE,
                    "duration_s": round(duration_s, 1), "interrupted": quit_.is_set(),
                    "drain_s": round(time.monotonic() - drain_began, 1) if drained else None,
                    "rows": rows, "verdict": verdict(rows, rate), "workdir": str(workdir)}
        finally:
            stop.set()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(consumer.stop(), admin.close(), return_exceptions=True), CALL_TIMEOUT_S)
            stop_processes(procs)
            for pid, born in children.items():  # one its worker left behind: same PID and start time
                if descendants(pid).get(pid) == born:
                    with contextlib.suppress(OSError):
                        os.kill(pid, signal.SIGKILL)


def verdict(rows: list[dict[str, Any]], rate: float) -> dict[str, Any]:
    """Did the run hold the rate, keep lag bounded, and how did the workers' RSS grow?

    >>> rows = [{"minute": m, "scored_per_s": 1990.0, "lag": 300, "worker_rss_mb": 200.0 + m} for m in (1, 2, 3, 4)]
    >>> v = verdict(rows, 2000.0)
    >>> v["throughput_held"], v["lag_bounded"], v["rss_growth_mb"], v["rss_growth_pct"]
    (True, True, 2.0, 1.0)
    """
    if not rows:
        return {"throughput_held": False, "lag_bounded": False, "ok": False}
    later, half = rows[1:] or rows, rows[len(rows) // 2:]
    slope = float(np.polyfit([r["minute"] * 60 for r in half], [r["lag"] for r in half], 1)[0]) if len(half) > 1 else 0.0
    max_lag = max(r["lag"] for r in half)
    base = next((r for r in rows[:-1] if r["minute"] >= 2), later[0])
    growth = rows[-1]["worker_rss_mb"] - base["worker_rss_mb"]
    v = {"throughput_held": all(r["scored_per_s"] >= 0.98 * rate for r in later),
         "min_scored_per_s": min(r["scored_per_s"] for r in later),
         "lag_bounded": max_lag <= 2 * rate or slope <= 0.005 * rate,
         "max_lag_last_half": max_lag, "lag_slope_per_s": round(slope, 2),
         "rss_from_minute": base["minute"], "rss_growth_mb": round(growth, 1),
         "rss_growth_pct": round(100 * growth / base["worker_rss_mb"], 1) if base["worker_rss_mb"] else None}
    v["ok"] = v["throughput_held"] and v["lag_bounded"]
    return v


COLUMNS = (("minute", 7), ("produced", 10), ("produced_per_s", 11), ("scored_per_s", 10), ("lag", 7),
           ("p50_ms", 7), ("p99_ms", 8), ("worker_rss_mb", 11), ("worker_cpu_pct", 10), ("broker_rss_mb", 11))
HEADER = " ".join(f"{h:>{w}}" for h, (_, w) in zip(("minute", "produced", "produced/s", "scored/s", "lag", "p50 ms",
                  "p99 ms", "worker MB", "worker %", "broker MB"), COLUMNS, strict=True))


def format_row(row: dict[str, Any], mark: str) -> str:
    return " ".join(f"{row[k]:>{w}}" for k, w in COLUMNS) + (f"  <- {mark}" if mark else "")


def report(res: dict[str, Any]) -> str:
    rows, v = res["rows"], res["verdict"]
    marks = {0: "start", len(rows) // 2: "middle", len(rows) - 1: "end"} if rows else {}
    lines = [f"\n{res['broker']} (up in {res['broker_startup_s']} s), {res['workers']} worker(s), {res['partitions']} "
             f"partitions, {res['rate']:g} events/s, first prediction {res['first_prediction_s']} s after the workers "
             f"started{', interrupted' if res['interrupted'] else ''}", HEADER,
             *(format_row(r, marks.get(i, "")) for i, r in enumerate(rows))]
    if rows:
        lines.append(
            f"verdict: throughput {'held' if v['throughput_held'] else 'did NOT hold'} {res['rate']:g}/s "
            f"(lowest after the first interval {v['min_scored_per_s']:g}/s) | lag "
            f"{'bounded' if v['lag_bounded'] else 'GROWING'} (max {v['max_lag_last_half']} in the last half, "
            f"slope {v['lag_slope_per_s']:+g}/s) | worker RSS {v['rss_growth_mb']:+g} MB "
            f"({v['rss_growth_pct'] or 0:+g}%) from minute {v['rss_from_minute']:g} to the end | drained "
            + ("-" if res["interrupted"] else f"in {res['drain_s']} s" if res["drain_s"] is not None else "NOT in 60 s"))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``mlstream bench-sustained``; exit code 0 when the rate held with bounded lag."""
    p = argparse.ArgumentParser(prog="mlstream bench-sustained", description=__doc__.split("\n\n")[0])
    p.add_argument("--rate", type=float, default=2_000.0, help="events per second (default 2000)")
    p.add_argument("--minutes", type=float, default=None, help="default 30; with --events: their time plus 10%%")
    p.add_argument("--events", type=int, default=None, help="stop after this many events (e.g. 10000000)")
    p.add_argument("--sample-s", type=float, default=60.0, help="seconds per row (default 60)")
    p.add_argument("--workers", type=int, default=1, help="`mlstream worker --role all` processes")
    p.add_argument("--partitions", type=int, default=4)
    p.add_argument("--broker", choices=("kafka", "embedded"), default="kafka")
    p.add_argument("--demo", action="store_true", help="as `make demo`: drift at event 20,000, 1%% invalid, trainer")
    p.add_argument("--store", default="models", help="model store (copied into the workdir)")
    p.add_argument("--workdir", default=".mlstream/bench-sustained", help="worker logs and the models copy")
    p.add_argument("--json", action="store_true", help="print one JSON object (rows and verdict)")
    args = p.parse_args(argv)
    if min(args.rate, args.sample_s, args.workers, *(x for x in (args.minutes, args.events) if x is not None)) <= 0:
        raise ValueError("--rate, --sample-s, --minutes, --events and --workers must be positive")
    if not args.json:
        print(HEADER, flush=True)
    res = asyncio.run(run(args))
    print(json.dumps(res, sort_keys=True) if args.json else report(res))
    return 0 if res["verdict"]["ok"] else 1
