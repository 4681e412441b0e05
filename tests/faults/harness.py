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
from stream.messages import REASON_HEADER
from tests.helpers import read_topic

ROOT = Path(__file__).resolve().parents[2]


def sequenced(n: int, seed: int, *, huge_every: int = 0) -> list[tuple[bytes, bytes, str]]:
    """``n`` payments as (key, value, event id), ids ``<user>~<seq>`` numbered per user; with
    ``huge_every``, every such event pays 900,000 (valid, but never seen in training)."""
    seq: Counter[str] = Counter()
    out = []
    for i, item in enumerate(PaymentSimulator(seed=seed, n_users=200).events(n)):
        event = orjson.loads(item.value)
        user = event["user_id"]
        event["event_id"] = f"{user}~{seq[user]}"
        if huge_every and i % huge_every == 0:
            event["amount"] = 900_000.0
        seq[user] += 1
        out.append((user.encode(), orjson.dumps(event), event["event_id"]))
    return out


@dataclass
class Produced:
    """What the cluster acknowledged: good event ids, and crafted poison records by content."""

    ids: set[str] = field(default_factory=set)
    poison: Counter[bytes] = field(default_factory=Counter)
    failed: int = 0  # sends the cluster never acknowledged (during a broker outage)
    last_send: float = 0.0


async def produce_at(settings: Settings, events: list[tuple[bytes, bytes, str]], rate: float,
                     produced: Produced, *, stop: asyncio.Event | None = None,
                     poison: dict[int, list[bytes]] | None = None, idempotent: bool = True) -> None:
    """Send ``events`` in order at ``rate``/s (until ``stop``), with ``poison[i]`` before event
    ``i``, through an idempotent producer whose requests outlive a broker restart (the embedded
    broker has no idempotent producers: ``idempotent=False``); record what was acknowledged in
    ``produced``."""
    producer = make_producer(settings, enable_idempotence=idempotent, request_timeout_ms=90_000)
    await start_client(producer, settings.kafka.bootstrap_servers)
    pending: set[asyncio.Future[Any]] = set()

    def done(event_id: str | None, value: bytes, fut: asyncio.Future[Any]) -> None:
        pending.discard(fut)
        if fut.cancelled() or fut.exception() is not None:
            produced.failed += 1
        elif event_id is None:
            produced.poison[value] += 1
        else:
            produced.ids.add(event_id)

    async def send(key: bytes | None, value: bytes, event_id: str | None) -> None:
        fut = await producer.send(settings.topics.events, value, key=key)
        pending.add(fut)
        fut.add_done_callback(lambda f: done(event_id, value, f))

    began = time.monotonic()
    try:
        for i, (key, value, event_id) in enumerate(events):
            if stop is not None and stop.is_set():
                break
            for raw in (poison or {}).get(i, []):
                await send(b"poison", raw, None)
            await send(key, value, event_id)
            ahead = (i + 1) / rate - (time.monotonic() - began)
            if ahead > 0:
                await asyncio.sleep(ahead)  # pacing to the rate, not synchronisation
        produced.last_send = time.monotonic()
        if pending:
            await asyncio.wait(pending, timeout=120)
    finally:
        await producer.stop()


def worker_env(settings: Settings, model_store: Path, **extra: str) -> dict[str, str]:
    t = settings.topics
    env = {**os.environ, "MLSTREAM_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
           "MLSTREAM_APP_ID": settings.app_id, "MLSTREAM_METRICS_PORT": "0",
           "MLSTREAM_MODEL_STORE": str(model_store), "MLSTREAM_SHUTDOWN_GRACE_S": "10",
           "MLSTREAM_SCORING__COMMIT_INTERVAL_MS": str(settings.scoring.commit_interval_ms),
           "MLSTREAM_LOG_LEVEL": "WARNING"}
    for name in ("events", "labels", "predictions", "dead_letter", "features", "drift", "retrain",
                 "changelog", "model_updates", "labelled_examples", "models", "shadow_predictions",
                 "shadow_verdicts"):
        env[f"MLSTREAM_TOPICS__{name.upper()}"] = getattr(t, name)
    env.update(extra)
    return env


@dataclass
class Workers:
    """Worker processes, started, killed and stopped like an orchestrator would."""

    env: dict[str, str]
    logs: Path
    role: str = "scorer"
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    started: int = 0

    def start(self, **extra_env: str) -> subprocess.Popen[bytes]:
        self.started += 1
        log = (self.logs / f"worker-{self.started}.log").open("wb")
        proc = subprocess.Popen([sys.executable, "-m", "stream.cli", "worker", "--role", self.role],
                                cwd=ROOT, env={**self.env, **extra_env}, stdout=log, stderr=log,
                                start_new_session=True)
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

    def log_text(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.logs.glob("worker-*.log")))

    def close(self) -> None:
        for p in self.live():
            p.kill()
            p.wait(10)


@dataclass
class Verdict:
    sent: int  # events (and poison records) the cluster acknowledged
    predicted: int  # distinct event ids with a prediction
    dead_lettered: int  # distinct event ids and poison records on the dead-letter topic
    lost: int
    duplicates: int
    out_of_order: int  # first deliveries of a key arriving after a later sequence number
    reasons: Counter[str] = field(default_factory=Counter)  # dead letters by reason
    misfiled_poison: int = 0  # crafted records missing from the DLQ or with another reason
    bad_scores: int = 0  # predictions whose score is not a finite probability
    parity_entities: int | None = None  # entities with a score != the offline one (None: not checked)
    committed_ok: bool | None = None  # committed offset == log end on every partition
    committed_off: str = ""  # the partitions where it is not: "p<n> committed/end"

    def row(self, name: str, extra: str = "") -> str:
        ok = "n/a" if self.committed_ok is None else ("yes" if self.committed_ok else f"NO ({self.committed_off})")
        parity = "n/a" if self.parity_entities is None else str(self.parity_entities)
        return (f"| {name} | {self.sent} | {self.predicted} | {self.dead_lettered} | {self.lost} | "
                f"{self.duplicates} | {self.out_of_order} | {parity} | {ok} | {extra} |")


HEADER = ("| scenario | acknowledged | predicted | dead-lettered | lost | duplicates | out of order | "
          "entities online != offline | committed = end | notes |\n|---|---|---|---|---|---|---|---|---|---|")


def _event_id(value: bytes | None) -> str | None:
    try:
        return str(orjson.loads(value or b"")["event_id"])
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return None


async def outputs(settings: Settings) -> tuple[list[Any], list[Any]]:
    return (await read_topic(settings, settings.topics.predictions),
            await read_topic(settings, settings.topics.dead_letter))


async def wait_accounted(settings: Settings, produced: Produced, timeout_s: float,
                         workers: Workers | None = None, restarts: int = 0) -> float | None:
    """Wait until every acknowledged event is predicted or dead-lettered; seconds it took after
    the last send (None: not within ``timeout_s``, or every worker exited). A worker that exited
    is started again at most ``restarts`` times, as a supervisor would (a worker stops on a
    broker failure that outlasts its retries, so that a restart processes its records again)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if workers is not None and not workers.live():
            if restarts <= 0:
                break
            restarts -= 1
            workers.start()
        predictions, dead = await outputs(settings)
        seen = {_event_id(r.value) for r in predictions} | {_event_id(r.value) for r in dead}
        if produced.ids <= seen and len(dead) >= sum(produced.poison.values()):
            return time.monotonic() - produced.last_send
        await asyncio.sleep(0.5)  # re-reading the output topics; checked each round
    return None


async def verify(settings: Settings, events: list[tuple[bytes, bytes, str]], produced: Produced,
                 *, expected_poison: dict[bytes, str] | None = None,
                 parity_store: Path | None = None) -> Verdict:
    """Account for every acknowledged record from the output topics alone; with
    ``parity_store``, also recompute features offline over the acknowledged events in order
    and compare each entity's online scores with the store's version 1 model."""
    predictions, dead = await outputs(settings)
    count: Counter[str] = Counter()
    out_of_order = bad_scores = 0
    scores: dict[str, list[float]] = defaultdict(list)
    by_part: dict[int, list[Any]] = defaultdict(list)  # per partition, in offset order
    for rec in predictions:
        by_part[rec.partition].append(rec)
    for recs in by_part.values():
        highest: dict[str, int] = {}  # per key, the highest sequence delivered so far
        for rec in sorted(recs, key=lambda r: r.offset):
            p = orjson.loads(rec.value)
            event_id, score = p["event_id"], p["score"]
            if not (isinstance(score, float) and 0.0 <= score <= 1.0):
                bad_scores += 1
            scores[event_id].append(score)
            key, _, seq = event_id.rpartition("~")
            first = count[event_id] == 0
            count[event_id] += 1
            if first and int(seq) < highest.get(key, -1):
                out_of_order += 1
            highest[key] = max(highest.get(key, -1), int(seq))
    reasons: Counter[str] = Counter()
    dead_ids: set[str] = set()
    poison_seen: Counter[tuple[bytes, str]] = Counter()
    for rec in dead:
        reason = dict(rec.headers).get(REASON_HEADER, b"").decode()
        reasons[reason] += 1
        event_id = _event_id(rec.value)
        if event_id is not None and event_id in produced.ids:
            dead_ids.add(event_id)
        else:
            poison_seen[(rec.value or b"", reason)] += 1
    misfiled = sum(n - poison_seen[(raw, (expected_poison or {}).get(raw, "?"))]
                   for raw, n in produced.poison.items())
    verdict = Verdict(sent=len(produced.ids) + sum(produced.poison.values()), predicted=len(count),
                      dead_lettered=len(dead_ids) + sum(poison_seen.values()),
                      lost=len(produced.ids - set(count) - dead_ids),
                      duplicates=sum(count.values()) - len(count), out_of_order=out_of_order,
                      reasons=reasons, misfiled_poison=max(misfiled, 0), bad_scores=bad_scores)
    if parity_store is not None:
        verdict.parity_entities = _parity(events, produced.ids - dead_ids, scores, parity_store)
    return verdict


def _parity(events: list[tuple[bytes, bytes, str]], scored: set[str], scores: dict[str, list[float]],
            store: Path) -> int:
    """Entities with an event none of whose online scores equals the offline score."""
    from stream.examples.payments import DOMAIN
    from stream.registry import ModelStore
    from stream.scoring.model import load_model

    rows = [orjson.loads(value) for _, value, event_id in events if event_id in scored]
    offline = load_model(ModelStore(store), "fraud", DOMAIN.features.columns, "1").predict(
        DOMAIN.offline_features(rows))
    return len({row["user_id"] for row, want in zip(rows, offline, strict=True)
                if not any(abs(got - want) <= 1e-6 * max(1.0, abs(want)) for got in scores[row["event_id"]])})


async def committed_equals_end(settings: Settings) -> tuple[bool, str]:
    """Is the group's committed offset the log end on every partition? With the partitions that
    differ (``p<n> committed/end``) when not. A broker loading the group answers "none" for a
    moment (aiokafka reads COORDINATOR_LOAD_IN_PROGRESS so): asked again, for up to 20 s."""
    ends: dict[int, int] = {}
    for rec in await read_topic(settings, settings.topics.events):
        ends[rec.partition] = max(ends.get(rec.partition, 0), rec.offset + 1)
    consumer = make_consumer(settings, group_id=f"{settings.app_id}-scorer")
    await start_client(consumer, settings.kafka.bootstrap_servers)
    try:
        committed: dict[int, int | None] = {}
        for p in ends:
            committed[p] = await consumer.committed(TopicPartition(settings.topics.events, p))
            for _ in range(40):  # bounded: 20 s
                if committed[p] is not None:
                    break
                await asyncio.sleep(0.5)  # the group loading; asked again
                committed[p] = await consumer.committed(TopicPartition(settings.topics.events, p))
        off = [f"p{p} {committed[p]}/{end}" for p, end in sorted(ends.items()) if committed[p] != end]
        return not off, ", ".join(off)
    finally:
        await consumer.stop()
