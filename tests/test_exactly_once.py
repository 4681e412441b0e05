"""Exactly-once on Apache Kafka: a scorer SIGKILLed ten times under load, restarted each time,
gives every event exactly one committed prediction, and every score equals the offline one (the
entity state saw each event once); so do rebalances, a frozen scorer and a transaction still
committing when its partitions move. Figures are printed (``pytest -s``)."""

from __future__ import annotations

import asyncio
import collections
import json
import os
import signal
import subprocess
import sys
import time
from typing import Any

import numpy as np
import orjson
import pytest

from stream.config import Settings
from stream.examples.payments import DOMAIN
from stream.examples.simulate import PaymentSimulator
from stream.kafka import ensure_topics, make_producer
from stream.registry import ModelStore
from stream.scoring.model import load_model
from stream.scoring.restore import restore_state
from stream.scoring.state import encode_state
from stream.scoring.transactions import transactional_id
from stream.tools.tally import wait_until
from tests.helpers import read_topic
from tests.load import Seen, Sent, follow_outputs, send_steadily

pytestmark = [pytest.mark.timeout(900), pytest.mark.parametrize("broker_kind", ["kafka"])]
KILLS = 10
EVENTS = 12_000
RATE = 300  # events/s, 40 s of load: most kills happen under it


def worker_env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLSTREAM_")}
    env.update({
        "MLSTREAM_APP_ID": settings.app_id,
        "MLSTREAM_PROCESSING_GUARANTEE": settings.processing_guarantee,
        "MLSTREAM_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "MLSTREAM_KAFKA__SESSION_TIMEOUT_MS": str(settings.kafka.session_timeout_ms),
        "MLSTREAM_KAFKA__HEARTBEAT_INTERVAL_MS": str(settings.kafka.heartbeat_interval_ms),
        "MLSTREAM_SCORING__TRANSACTION_TIMEOUT_MS": str(settings.scoring.transaction_timeout_ms),
        "MLSTREAM_MODEL_STORE": str(settings.model_store),
        "MLSTREAM_METRICS_PORT": "0",
        "MLSTREAM_MONITOR__ENABLED": "false",
    })
    for name, value in settings.topics.model_dump().items():
        env[f"MLSTREAM_TOPICS__{name.upper()}"] = str(value)
    return env


def start_scorer(settings: Settings, log_path) -> subprocess.Popen[bytes]:
    out = open(log_path, "ab")
    return subprocess.Popen([sys.executable, "-m", "stream.cli", "worker", "--role", "scorer"],
                            env=worker_env(settings), stdin=subprocess.DEVNULL, stdout=out,
                            stderr=out, start_new_session=True)


def stop_scorers(procs: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM each one still running (woken first: it may be frozen), SIGKILL past 30 s."""
    for p in procs:
        if p.poll() is None:
            os.kill(p.pid, signal.SIGCONT)
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)


async def wind_down(load: asyncio.Task[None] | None, procs: list[subprocess.Popen[bytes]], stop: asyncio.Event,
                    follower: asyncio.Task[None]) -> None:
    """The end of a load test, whatever happened: no more sends, the scorers stopped, then the
    follower of their outputs."""
    if load is not None:
        load.cancel()
    stop_scorers(procs)
    stop.set()
    await asyncio.wait_for(asyncio.gather(follower, return_exceptions=True), 30)


async def predicted_once(settings: Settings, sent: Sent, log_tail: str = "") -> list[dict[str, Any]]:
    """The committed predictions: exactly one per acknowledged event."""
    predictions = [orjson.loads(r.value) for r in await read_topic(settings, settings.topics.predictions)]
    counts = collections.Counter(p["event_id"] for p in predictions)
    assert sum(c - 1 for c in counts.values()) == 0, ("duplicated predictions under exactly-once", log_tail)
    assert set(counts) == sent.acked_ids
    return predictions


async def test_ten_sigkills_give_no_duplicate_and_online_equals_offline(make_settings, bootstrap,
                                                                         model_store, tmp_path):
    settings = make_settings(kafka={"bootstrap_servers": bootstrap, "session_timeout_ms": 6_000,
                                    "heartbeat_interval_ms": 1_000},
                             processing_guarantee="exactly_once",
                             scoring={"transaction_timeout_ms": 5_000})
    await ensure_topics(settings)
    sim = PaymentSimulator(seed=17, n_users=80)
    sent, seen, stop = Sent(), Seen(), asyncio.Event()
    follower = asyncio.create_task(follow_outputs(settings, seen, stop))  # read_committed
    load = asyncio.create_task(send_steadily(settings, sim, EVENTS, RATE, sent))
    log_path = tmp_path / "workers.log"
    procs: list[subprocess.Popen[bytes]] = []
    began = time.monotonic()
    try:
        for _ in range(KILLS):
            before = len(seen.ids)
            proc = start_scorer(settings, log_path)
            procs.append(proc)
            # kill it once it has committed some work (or after a bounded wait)
            await wait_until(lambda b=before: len(seen.ids) >= b + 300 or proc.poll() is not None, 60)
            assert proc.poll() is None, log_path.read_text()[-3000:]
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        final = start_scorer(settings, log_path)
        procs.append(final)
        await asyncio.wait_for(load, 300)
        accounted = await wait_until(lambda: seen.accounts_for(sent), 180)
        summary = seen.summary(sent)
        summary.update(kills=KILLS, elapsed_s=round(time.monotonic() - began, 1))
        print(json.dumps(summary))
        assert accounted, (summary, log_path.read_text()[-3000:])
    finally:
        await wind_down(load, procs, stop, follower)

    predictions = await predicted_once(settings, sent)

    # online == offline: each score is what the model gives on features computed offline over
    # the same events once, in order (a replayed event would have moved its entity's state)
    events = [orjson.loads(i.value) for i in sim.events(EVENTS, start=0) if i.event_id in sent.acked_ids]
    X = DOMAIN.offline_features(events)
    offline = load_model(ModelStore(model_store), "fraud", DOMAIN.features.columns).predict(X)
    online = {p["event_id"]: p["score"] for p in predictions}
    got = np.array([online[e["event_id"]] for e in events])
    assert np.allclose(got, offline, rtol=1e-6, atol=1e-9)


async def test_state_restored_behind_a_crashed_workers_open_transaction_has_what_a_later_owner_committed(
        make_settings, bootstrap):
    """Worker A dies inside a transaction; B takes its partition over and commits; B dies too and
    C restores while A's transaction is still open. The last stable offset stops at A's open
    transaction, but B's committed state lies past it: C must wait for the broker to abort A's
    transaction and read B's state, not restore the state from before B (which replays B's
    events against old state: online != offline)."""
    settings = make_settings(processing_guarantee="exactly_once", scoring={"transaction_timeout_ms": 2_000})
    await ensure_topics(settings)
    topic, width = settings.topics.changelog, DOMAIN.features.state_width
    state = {n: np.full(width, float(n)) for n in (1, 2, 3)}
    a = make_producer(settings, transactional_id=transactional_id(settings.app_id, "a"))
    b = make_producer(settings, transactional_id=transactional_id(settings.app_id, "b"))
    await a.start()
    await b.start()
    try:
        await a.begin_transaction()
        await a.send_and_wait(topic, encode_state(state[1]), key=b"u1", partition=0)
        await a.commit_transaction()
        await a.begin_transaction()  # A "crashes" here: this transaction is never ended by A
        await a.send_and_wait(topic, encode_state(state[2]), key=b"u1", partition=0)
        await b.begin_transaction()
        await b.send_and_wait(topic, encode_state(state[3]), key=b"u1", partition=0)
        await b.send_and_wait(topic, encode_state(state[3]), key=b"u2", partition=0)
        await b.commit_transaction()

        stores = await restore_state(settings, width, [0], max_entities=100)
    finally:
        await b.stop()
        await a.stop()
    store = stores[0]
    assert sorted(store.rows) == ["u1", "u2"]
    assert store.matrix[store.rows["u1"]].tolist() == state[3].tolist()


async def test_a_restore_longer_than_the_session_timeout_goes_on_in_the_loop_without_a_rebalance(
        make_settings, bootstrap, start_worker, caplog):
    """The group's heartbeats stop during an assignment callback: a scorer whose restore waits
    there for a crashed worker's open transaction (here ~9 s, past the 6 s session timeout) lost
    its membership and made the group rebalance. Past half the session timeout the restore goes
    on in the processing loop: not ready meanwhile, then every event scored once, no rebalance."""
    import logging

    from stream.tools.traffic import produce

    caplog.set_level(logging.INFO)
    settings = make_settings(processing_guarantee="exactly_once",
                             kafka={"bootstrap_servers": bootstrap, "session_timeout_ms": 6_000, "heartbeat_interval_ms": 1_000},
                             scoring={"transaction_timeout_ms": 8_000}, monitor={"enabled": False})
    await ensure_topics(settings)
    crashed = make_producer(settings, transactional_id=transactional_id(settings.app_id, "crashed"))
    await crashed.start()
    try:
        await crashed.begin_transaction()  # never ended: the broker aborts it after 8 s
        for p in range(settings.topics.partitions):
            await crashed.send_and_wait(settings.topics.changelog, encode_state(np.zeros(DOMAIN.features.state_width)),
                                        key=b"u-crashed", partition=p)
        worker = start_worker(settings, ("scorer",))
        assert await wait_until(lambda: "goes on in the processing loop" in caplog.text, 30), caplog.text[-2000:]
        assert worker.metrics.health.ready()[0] is False  # restoring: not ready
        await produce(settings, PaymentSimulator(seed=5), 200, rate=0)
        assert await wait_until(lambda: worker.metrics.health.ready()[0], 60), caplog.text[-2000:]
        predictions: list[Any] = []
        for _ in range(30):  # bounded: the predictions, re-read until all 200 are there
            predictions = await read_topic(settings, settings.topics.predictions)
            if len(predictions) >= 200:
                break
            await asyncio.sleep(1.0)
    finally:
        await crashed.stop()
    ids = collections.Counter(orjson.loads(r.value)["event_id"] for r in predictions)
    assert len(ids) == 200 and max(ids.values()) == 1
    assert "not recognized" not in caplog.text and "re-joining" not in caplog.text.lower()


async def test_a_scorer_frozen_past_its_session_timeout_commits_nothing_its_successor_scored(
        make_settings, bootstrap, model_store, tmp_path):
    """Two exactly-once scorers; one is frozen (SIGSTOP: a VM paused, a swap storm) for three
    session timeouts inside an open transaction that outlives the pause, then resumed. The group
    gave its partitions to the other scorer, which scored their events again from the committed
    offsets. Woken, the frozen one must not commit its transaction: its outputs would duplicate
    the successor's, and its offsets would move the group's back."""
    settings = make_settings(kafka={"bootstrap_servers": bootstrap, "session_timeout_ms": 6_000,
                                    "heartbeat_interval_ms": 1_000},
                             processing_guarantee="exactly_once",
                             scoring={"transaction_timeout_ms": 60_000})  # longer than the pause
    await ensure_topics(settings)
    sim = PaymentSimulator(seed=23, n_users=80)
    n = 9_000
    sent, seen, stop = Sent(), Seen(), asyncio.Event()
    follower = asyncio.create_task(follow_outputs(settings, seen, stop))  # read_committed
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    procs = [start_scorer(settings, logs[0])]
    load: asyncio.Task[None] | None = None
    try:
        assert await wait_until(lambda: "partitions assigned" in logs[0].read_text(), 60), logs[0].read_text()
        procs.append(start_scorer(settings, logs[1]))
        assert await wait_until(lambda: "partitions assigned" in logs[1].read_text(), 60), logs[1].read_text()
        load = asyncio.create_task(send_steadily(settings, sim, n, RATE, sent))
        # both score, then the first one freezes with a transaction open (it always has one under load)
        assert await wait_until(lambda: len(seen.ids) >= 1_500, 60)
        frozen = procs[0]
        os.kill(frozen.pid, signal.SIGSTOP)
        began = time.monotonic()
        # the group gives its partitions to the other one (after one session timeout)
        assert await wait_until(lambda: logs[1].read_text().count("partitions assigned") >= 2, 60)
        frozen_s = time.monotonic() - began
        os.kill(frozen.pid, signal.SIGCONT)
        await asyncio.wait_for(load, 300)
        accounted = await wait_until(lambda: seen.accounts_for(sent), 180)
        summary = seen.summary(sent)
        summary.update(frozen_s=round(frozen_s, 1))
        print(json.dumps(summary))
        assert accounted, (summary, logs[0].read_text()[-3000:])
    finally:
        await wind_down(load, procs, stop, follower)

    await predicted_once(settings, sent, logs[0].read_text()[-3000:])


async def test_a_successor_starts_after_the_offsets_of_a_transaction_its_dropped_owner_still_commits(
        make_settings, bootstrap, start_worker, caplog):
    """A transaction commits its input offsets in two steps: ``TxnOffsetCommit`` puts them in the
    transaction, ``EndTxn`` commits it. An owner dropped between the two (frozen, then woken)
    still commits. Its successor must wait for that transaction to be decided and start at its
    offsets, not at the ones committed before: else both predict the same events (18 duplicated
    in one CI run of the frozen-scorer test above)."""
    import logging

    from aiokafka import TopicPartition

    from stream.scoring.txn_fence import fence_offset_commits
    from stream.tools.traffic import produce

    caplog.set_level(logging.INFO)
    settings = make_settings(processing_guarantee="exactly_once", kafka={"bootstrap_servers": bootstrap},
                             scoring={"transaction_timeout_ms": 60_000}, monitor={"enabled": False})
    await ensure_topics(settings)
    await produce(settings, PaymentSimulator(seed=29), 400, rate=0)
    events = await read_topic(settings, settings.topics.events)
    per_partition = collections.Counter(r.partition for r in events)
    done = {p: n // 2 for p, n in per_partition.items()}  # what the dropped owner scored
    owners = {orjson.loads(r.value)["event_id"] for r in events if r.offset < done[r.partition]}
    theirs = {orjson.loads(r.value)["event_id"] for r in events} - owners
    owner = make_producer(settings, transactional_id=transactional_id(settings.app_id, "owner"))
    fence_offset_commits(owner, lambda: None)  # an owner outside the group: no generation check
    seen, stop = Seen(), asyncio.Event()
    follower = asyncio.create_task(follow_outputs(settings, seen, stop))  # read_committed
    await owner.start()
    try:
        await owner.begin_transaction()
        await owner.send_offsets_to_transaction(
            {TopicPartition(settings.topics.events, p): n for p, n in done.items()}, f"{settings.app_id}-scorer")
        # the owner is frozen here, before EndTxn; its successor joins
        start_worker(settings, ("scorer",))
        assert await wait_until(lambda: "partitions assigned" in caplog.text
                                or "waits for an open transaction" in caplog.text, 60), caplog.text[-2000:]
        await owner.commit_transaction()  # woken, it commits
        # every event past the owner's offsets predicted (in partition order: after any of the owner's)
        assert await wait_until(lambda: theirs <= seen.ids.keys(), 60), caplog.text[-2000:]
    finally:
        await owner.stop()
        stop.set()
        await asyncio.wait_for(asyncio.gather(follower, return_exceptions=True), 30)
    predicted = seen.ids
    assert not owners & set(predicted), f"{len(owners & set(predicted))} of the owner's events predicted again"
    assert max(predicted.values()) == 1


async def test_rebalances_under_load_give_each_event_one_committed_prediction(make_settings, bootstrap, model_store,
                                                                              tmp_path):
    """Scorers stopped (SIGTERM) and started again beside each other under load: every stop and
    every start moves partitions. The old owner commits its last transaction as it gives them up;
    the coordinator writes that commit's marker a moment after ``EndTxn`` answers, and a new owner
    that read the offsets in between (aiokafka's ``OffsetFetch`` has no ``require_stable``) started
    before them and scored their events again."""
    settings = make_settings(kafka={"bootstrap_servers": bootstrap, "session_timeout_ms": 6_000,
                                    "heartbeat_interval_ms": 1_000},
                             processing_guarantee="exactly_once", scoring={"transaction_timeout_ms": 10_000})
    await ensure_topics(settings)
    sim = PaymentSimulator(seed=31, n_users=80)
    n = 12_000
    sent, seen, stop = Sent(), Seen(), asyncio.Event()
    follower = asyncio.create_task(follow_outputs(settings, seen, stop))  # read_committed
    logs = [tmp_path / f"{i}.log" for i in range(8)]
    procs = [start_scorer(settings, logs[0]), start_scorer(settings, logs[1])]
    load: asyncio.Task[None] | None = None
    try:
        for log_path in logs[:2]:
            assert await wait_until(lambda p=log_path: "partitions assigned" in p.read_text(), 60), log_path.read_text()
        load = asyncio.create_task(send_steadily(settings, sim, n, RATE, sent))
        for i in range(2, len(logs)):  # the older one stops, a new one starts: two rebalances each
            before = len(seen.ids)
            assert await wait_until(lambda b=before: len(seen.ids) >= b + 600, 60)
            oldest = procs[i - 2]
            oldest.send_signal(signal.SIGTERM)
            oldest.wait(30)
            procs.append(start_scorer(settings, logs[i]))
            assert await wait_until(lambda p=logs[i]: "partitions assigned" in p.read_text(), 60), logs[i].read_text()
        await asyncio.wait_for(load, 300)
        accounted = await wait_until(lambda: seen.accounts_for(sent), 180)
        summary = seen.summary(sent)
        print(json.dumps(summary))
        assert accounted, summary
    finally:
        await wind_down(load, procs, stop, follower)
    await predicted_once(settings, sent)
