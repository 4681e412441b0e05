"""The demo: a local broker (Apache Kafka when Java is there, else the embedded one), worker
processes and simulated traffic with drift, all on loopback.

``mlstream demo`` runs until Ctrl-C with a live progress line; ``--events N`` runs N events,
waits until every one is accounted for (a prediction or a dead letter) and prints a summary.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from stream.config import Settings
from stream.examples.simulate import WARMUP_EVENTS, PaymentSimulator
from stream.kafka import ensure_topics
from stream.tools.broker import free_port
from stream.tools.kafka_server import broker_name, open_broker
from stream.tools.tally import Tally, follow, wait_until
from stream.tools.traffic import produce

VERDICT_WAIT_S = 120.0  # how long the demo waits for the trainer's answer after the traffic


@dataclass(frozen=True)
class DemoOptions:
    events: int | None = None
    rate: float = 2_000.0
    scenario: str = "mean_shift"
    drift_at: int | None = None
    invalid_rate: float = 0.01
    seed: int = 42
    workers: int = 1
    partitions: int = 4
    timeout_s: float = 300.0
    model_store: Path = Path("models")
    json_output: bool = False
    trainer: bool = True
    # a passing challenger first shadows the champion on this many live labelled events (0: promote at once)
    shadow_labels: int = 1_000
    broker: str = "auto"  # kafka | embedded | auto (Apache Kafka when Java and its jars are there)


def worker_env(settings: Settings, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "MLSTREAM_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "MLSTREAM_MODEL_STORE": str(settings.model_store),
        "MLSTREAM_TOPICS__PARTITIONS": str(settings.topics.partitions),
        "MLSTREAM_MONITOR__WARMUP_ROWS": str(settings.monitor.warmup_rows),
        "MLSTREAM_MONITOR__RETRAIN_COOLDOWN_S": str(settings.monitor.retrain_cooldown_s),
        "MLSTREAM_TRAINER__SHADOW_LABELS": str(settings.trainer.shadow_labels),
    })
    env.update(extra or {})
    return env


def start_worker(settings: Settings, metrics_port: int, roles: str = "all",
                 log_file: Path | None = None, command: str = "worker",
                 extra_env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    env = worker_env(settings, {"MLSTREAM_METRICS_PORT": str(metrics_port), **(extra_env or {})})
    out = open(log_file, "wb") if log_file else subprocess.DEVNULL
    args = ["worker", "--role", roles] if command == "worker" else [command]
    return subprocess.Popen([sys.executable, "-m", "stream.cli", *args],
                            env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                            start_new_session=True)  # stopped by us, after the traffic, before the broker


def stop_processes(procs: list[subprocess.Popen[bytes]], timeout_s: float = 15.0) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def summary(tally: Tally, events: int, elapsed_s: float, first_prediction_s: float | None) -> dict[str, Any]:
    lat = np.asarray(tally.latencies_ms) if tally.latencies_ms else np.zeros(1)
    return {
        "events": events,
        "predictions": tally.predictions,
        "dead_lettered": tally.dead_lettered,
        "duplicate_predictions": tally.duplicate_predictions,
        "drift_events": tally.drift_events,
        "retrain_requests": tally.retrain_requests,
        "drifted_features": sorted({f for d in tally.drift for f in d.features}),
        "model_versions": dict(sorted(tally.model_versions.items())),
        "dead_letter_reasons": dict(sorted(tally.dead_reasons.items())),
        "elapsed_s": round(elapsed_s, 3),
        "events_per_s": round(events / elapsed_s, 1) if elapsed_s > 0 else None,
        # after start-up: from the first prediction to the last event accounted for
        "steady_events_per_s": round(events / (elapsed_s - first_prediction_s), 1)
        if first_prediction_s and elapsed_s > first_prediction_s else None,
        "first_prediction_s": round(first_prediction_s, 3) if first_prediction_s else None,
        "latency_ms": {q: round(float(np.percentile(lat, p)), 1)
                       for q, p in (("p50", 50), ("p95", 95), ("p99", 99))},
    }


async def run_demo(opts: DemoOptions, workdir: Path) -> dict[str, Any] | None:
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # the summary says what went wrong
    began, began_wall = time.monotonic(), time.time()
    workdir.mkdir(parents=True, exist_ok=True)
    with open_broker(opts.broker) as broker:
        # timings start once the broker is up (its own start-up is reported apart)
        broker_startup_s = time.monotonic() - began
        began, began_wall = time.monotonic(), time.time()
        # the loop may promote a challenger: work on a copy, never on the shipped store
        store = workdir / "models"
        shutil.rmtree(store, ignore_errors=True)
        shutil.copytree(opts.model_store, store)
        settings = Settings(
            kafka={"bootstrap_servers": broker.bootstrap},
            model_store=store,
            topics={"partitions": opts.partitions},
            monitor={"warmup_rows": WARMUP_EVENTS, "retrain_cooldown_s": 3_600.0},
            trainer={"shadow_labels": opts.shadow_labels},
        )
        await ensure_topics(settings)
        ports = [free_port() for _ in range(opts.workers)]
        procs = [start_worker(settings, port, log_file=workdir / f"worker-{i}.log")
                 for i, port in enumerate(ports)]
        if opts.trainer:
            # the trainer learns only from the stream's labelled examples: no oracle
            procs.append(start_worker(settings, 0, log_file=workdir / "trainer.log", command="trainer",
                                      extra_env={"MLSTREAM_TRAINER__RETRY_INTERVAL_S": "5"}))
        stop = asyncio.Event()
        tally = Tally()
        follower = asyncio.create_task(follow(settings, tally, stop, track_ids=opts.events is not None))
        n = opts.events
        drift_at = opts.drift_at if opts.drift_at is not None else (
            max(WARMUP_EVENTS, n // 2) if n else 20_000)
        sim = PaymentSimulator(seed=opts.seed, scenario=opts.scenario, drift_at=drift_at,
                               invalid_rate=opts.invalid_rate)
        if not opts.json_output:
            print(f"broker {broker_name(broker)} {broker.bootstrap} (up in {broker_startup_s:.1f} s) "
                  f"| workers {len(procs)} (metrics on "
                  + ", ".join(f"http://127.0.0.1:{p}/metrics" for p in ports)
                  + f") | scenario {opts.scenario} from event {drift_at} | logs in {workdir}",
                  flush=True)
        sent = [0]

        async def traffic() -> None:
            # a few events first, the rest once the workers have joined their group and
            # answer: the latencies then describe the pipeline, not the start-up
            probe = 10 if n is None else min(10, n)
            await produce(settings, sim, probe, rate=0)
            sent[0] = probe
            if not await wait_until(lambda: tally.predictions > 0 or any(p.poll() is not None for p in procs), 120):
                raise RuntimeError(f"no prediction within 120 s; see {workdir}")
            await produce(settings, sim, None if n is None else n - probe, rate=opts.rate, stop=stop,
                          start=probe, on_progress=lambda k: sent.__setitem__(0, probe + k))

        producer = asyncio.create_task(traffic())
        progress = None if opts.json_output else asyncio.create_task(_progress(tally, sent, began, procs))
        quit_ = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):  # Ctrl-C: stop workers, then the broker
            loop.add_signal_handler(sig, quit_.set)
        try:
            await asyncio.wait([producer, asyncio.ensure_future(quit_.wait())],
                               return_when=asyncio.FIRST_COMPLETED)
            if quit_.is_set():
                if not opts.json_output:
                    print("\nstopping: workers, then the broker", flush=True)
                return None
            producer.result()  # re-raise a producer failure
            assert n is not None  # without an event count the traffic runs until Ctrl-C (returned above)
            ok = await wait_until(lambda: tally.accounted >= n or any(p.poll() is not None for p in procs),
                                  opts.timeout_s)
            dead = [p for p in procs if p.poll() is not None]
            if dead:
                raise RuntimeError(f"a worker exited with code {dead[0].returncode}; see {workdir}")
            if not ok:
                raise RuntimeError(f"only {tally.accounted} of {n} events accounted for after "
                                   f"{opts.timeout_s:.0f}s; see {workdir}")
            if opts.scenario != "none":  # drift messages trail the last predictions
                await wait_until(lambda: tally.retrain_requests > 0, 10.0)
            first = tally.first_prediction_at - began_wall if tally.first_prediction_at else None
            result = {"broker": broker_name(broker), "broker_startup_s": round(broker_startup_s, 1),
                      **summary(tally, n, time.monotonic() - began, first)}
            if opts.trainer and opts.scenario != "none" and tally.retrain_requests:
                from stream.tools.timeline import final_decision, loop_timeline

                # the trainer answers after the traffic: wait for its verdict; a shadow is judged
                # on as many events again (live labels), and a promoted model on as many more
                verdict = await final_decision(settings, timeout_s=min(opts.timeout_s, VERDICT_WAIT_S))
                sent_n = n
                if verdict is not None and verdict.decision == "shadow":
                    await produce(settings, sim, n, rate=opts.rate, stop=stop, start=sent_n)
                    sent_n += n
                    await wait_until(lambda: tally.accounted >= sent_n, opts.timeout_s)
                    verdict = await final_decision(settings, timeout_s=min(opts.timeout_s, VERDICT_WAIT_S),
                                                   after=verdict)
                if verdict is not None and verdict.promoted:
                    await produce(settings, sim, n, rate=opts.rate, stop=stop, start=sent_n)
                    sent_n += n
                    await wait_until(lambda: tally.accounted >= sent_n, opts.timeout_s)
                result.update(events=sent_n, predictions=tally.predictions,
                              dead_lettered=tally.dead_lettered,
                              duplicate_predictions=tally.duplicate_predictions,
                              model_versions=dict(sorted(tally.model_versions.items())))
                await asyncio.sleep(3.0)  # the last labels' examples trail the predictions
                result["timeline"] = await loop_timeline(settings, drift_at, WARMUP_EVENTS)
            return result
        finally:
            stop.set()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
            for task in (producer, follower, progress):
                if task is not None:
                    task.cancel()
            await asyncio.gather(*(t for t in (producer, follower, progress) if t), return_exceptions=True)
            stop_processes(procs)


async def _progress(tally: Tally, sent: list[int], began: float, procs: list[Any]) -> None:
    last, last_t = 0, time.monotonic()
    while True:
        await asyncio.sleep(1.0)  # a display refresh interval
        now = time.monotonic()
        rate = (tally.accounted - last) / (now - last_t)
        last, last_t = tally.accounted, now
        alive = sum(p.poll() is None for p in procs)
        print(f"\r[{now - began:6.1f}s] sent {sent[0]:>8} | {rate:8.0f} ev/s | predictions "
              f"{tally.predictions:>8} | dead-lettered {tally.dead_lettered:>6} | drift events "
              f"{tally.drift_events:>3} | retrain requests {tally.retrain_requests:>3} | model versions "
              f"{','.join(sorted(tally.model_versions)) or '-'} | processes {alive}",
              end="", flush=True)


def print_summary(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(result, sort_keys=True))
        return
    print()
    for key, value in result.items():
        if key != "timeline":
            print(f"{key:>22}: {value}")
    timeline = result.get("timeline")
    if timeline:
        print("\nretraining loop (the trainer learned only from the stream):")
        for key, value in timeline.items():
            for item in value if key == "decisions" else [value]:
                print(f"{key:>22}: {json.dumps(item)}")
