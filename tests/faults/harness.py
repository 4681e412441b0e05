"""The fault suite's producer, workers and verifier.

Every event carries a unique id ``<entity>~<sequence>`` (a per-entity sequence number, inside the
schema's own id field), so the verifier can count, from the output topics alone, what was lost,
duplicated or reordered per entity, whatever the faults in between.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiokafka import TopicPartition

from stream.config import Settings
from stream.examples.simulate import PaymentSimulator
from stream.kafka import make_consumer, make_producer, start_client
from tests.helpers import read_topic

ROOT = Path(__file__).resolve().parents[2]


def sequenced(n: int, seed: int) -> list[tuple[bytes, bytes, str]]:
    """``n`` payments as (key, value, event id), ids ``<user>~<seq>`` numbered per user."""
    seq: Counter[str] = Counter()
    out = []
    for item in PaymentSimulator(seed=seed, n_users=200).events(n):
        event = orjson.loads(item.value)
        user = event["user_id"]
        event["event_id"] = f"{user}~{seq[user]}"
        seq[user] += 1
        out.append((user.encode(), orjson.dumps(event), event["event_id"]))
    return out


async def produce_at(settings: Settings, events: list[tuple[bytes, bytes, str]], rate: float) -> None:
    producer = make_producer(settings)
    await start_client(producer, settings.kafka.bootstrap_servers)
    began = time.monotonic()
    try:
        for i, (key, value, _) in enumerate(events):
            await producer.send(settings.topics.events, value, key=key)
            ahead = (i + 1) / rate - (time.monotonic() - began)
            if ahead > 0:
                await asyncio.sleep(ahead)  # pacing to the rate, not synchronisation
        await producer.flush()
    finally:
        await producer.stop()


def worker_env(settings: Settings, model_store: Path) -> dict[str, str]:
    t = settings.topics
    env = {**os.environ, "MLSTREAM_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
           "MLSTREAM_APP_ID": settings.app_id, "MLSTREAM_METRICS_PORT": "0",
           "MLSTREAM_MODEL_STORE": str(model_store), "MLSTREAM_SHUTDOWN_GRACE_S": "10",
           "MLSTREAM_LOG_LEVEL": "WARNING"}
    for name in ("events", "labels", "predictions", "dead_letter", "features", "drift", "retrain",
                 "changelog", "model_updates", "labelled_examples", "models"):
        env[f"MLSTREAM_TOPICS__{name.upper()}"] = getattr(t, name)
    return env


@dataclass
class Workers:
    """Scorer worker processes, started, killed and stopped like an orchestrator would."""

    env: dict[str, str]
    logs: Path
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    started: int = 0

    def start(self) -> subprocess.Popen[bytes]:
        self.started += 1
        log = (self.logs / f"worker-{self.started}.log").open("wb")
        proc = subprocess.Popen([sys.executable, "-m", "stream.cli", "worker", "--role", "scorer"],
                                cwd=ROOT, env=self.env, stdout=log, stderr=log, start_new_session=True)
        self.procs.append(proc)
        return proc

    def live(self) -> list[subprocess.Popen[bytes]]:
        return [p for p in self.procs if p.poll() is None]

    def kill(self, proc: subprocess.Popen[bytes]) -> None:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    def terminate(self, proc: subprocess.Popen[bytes], grace_s: float = 15.0) -> float:
        began = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(grace_s)
        return time.monotonic() - began

    def close(self) -> None:
        for p in self.live():
            p.kill()
            p.wait(10)


@dataclass
class Verdict:
    sent: int
    predicted: int  # distinct event ids with a prediction
    dead_lettered: int
    lost: int
    duplicates: int
    out_of_order: int  # first deliveries of a key arriving after a later sequence number
    committed_ok: bool | None = None  # committed offset == log end on every partition

    def row(self, name: str, extra: str = "") -> str:
        ok = "n/a" if self.committed_ok is None else ("yes" if self.committed_ok else "NO")
        return (f"| {name} | {self.sent} | {self.predicted} | {self.dead_lettered} | {self.lost} | "
                f"{self.duplicates} | {self.out_of_order} | {ok} | {extra} |")


HEADER = ("| scenario | sent | predicted | dead-lettered | lost | duplicates | out of order | "
          "committed = end | notes |\n|---|---|---|---|---|---|---|---|---|")


async def outputs(settings: Settings) -> tuple[list[Any], list[Any]]:
    return (await read_topic(settings, settings.topics.predictions),
            await read_topic(settings, settings.topics.dead_letter))


async def wait_accounted(settings: Settings, ids: set[str], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        predictions, dead = await outputs(settings)
        seen = {orjson.loads(r.value)["event_id"] for r in predictions}
        seen |= {orjson.loads(r.value)["event_id"] for r in dead if r.value}
        if ids <= seen:
            return
        await asyncio.sleep(0.5)  # re-reading the output topics; checked each round


async def verify(settings: Settings, events: list[tuple[bytes, bytes, str]]) -> Verdict:
    predictions, dead = await outputs(settings)
    ids = {e[2] for e in events}
    count: Counter[str] = Counter()
    out_of_order = 0
    # per partition, in offset order: per key, the highest sequence delivered so far
    by_part: dict[int, list[Any]] = defaultdict(list)
    for rec in predictions:
        by_part[rec.partition].append(rec)
    for recs in by_part.values():
        highest: dict[str, int] = {}
        for rec in sorted(recs, key=lambda r: r.offset):
            event_id = orjson.loads(rec.value)["event_id"]
            key, _, seq = event_id.rpartition("~")
            first = count[event_id] == 0
            count[event_id] += 1
            if first and int(seq) < highest.get(key, -1):
                out_of_order += 1
            highest[key] = max(highest.get(key, -1), int(seq))
    dead_ids = {orjson.loads(r.value)["event_id"] for r in dead if r.value}
    lost = len(ids - set(count) - dead_ids)
    return Verdict(sent=len(events), predicted=len(count), dead_lettered=len(dead_ids), lost=lost,
                   duplicates=sum(count.values()) - len(count), out_of_order=out_of_order)


async def committed_equals_end(settings: Settings) -> bool:
    ends: dict[int, int] = {}
    for rec in await read_topic(settings, settings.topics.events):
        ends[rec.partition] = max(ends.get(rec.partition, 0), rec.offset + 1)
    consumer = make_consumer(settings, group_id=f"{settings.app_id}-scorer")
    await start_client(consumer, settings.kafka.bootstrap_servers)
    try:
        return all([await consumer.committed(TopicPartition(settings.topics.events, p)) == end
                    for p, end in ends.items()])
    finally:
        await consumer.stop()
