"""Broker faults on Apache Kafka, under load: a broker SIGKILLed and restarted on its data,
a 3-node KRaft cluster (replication factor 3, min.insync.replicas 2) losing a node, and an
exactly-once worker's group and transaction coordinators' nodes dying (one coming back between).
Every acknowledged event must come out as a prediction or a dead letter; figures are printed
(``pytest -s``)."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from stream.errors import BrokerError
from stream.examples.simulate import PaymentSimulator
from stream.kafka import client_options, ensure_topics, missing_topics
from stream.scoring.transactions import transactional_id
from stream.tools.kafka_server import KafkaServer
from stream.tools.tally import wait_until
from tests.load import Seen, Sent, follow_outputs, send_steadily

pytestmark = pytest.mark.timeout(600)
RATE = 400  # events/s: steady load a 2-core machine sustains beside a JVM or three
EVENTS = 12_000  # 30 s of load
KILL_AFTER = 2_000  # predictions seen before the fault
FENCING_S = 6.0  # a dead node is fenced after broker.session.timeout.ms (4 s)


async def _run_with_fault(make_settings, start_worker, server: KafkaServer, fault, events: int = EVENTS,
                          **settings_kw):
    """Load + worker + follower on ``server``; ``fault(settings, sent, seen)`` runs once
    KILL_AFTER predictions are out and returns its figures; returns them with the accounting."""
    settings = make_settings(kafka={"bootstrap_servers": server.bootstrap}, **settings_kw)
    await ensure_topics(settings)
    worker = start_worker(settings, roles=("scorer",))
    sent, seen, stop = Sent(), Seen(), asyncio.Event()
    follower = asyncio.create_task(follow_outputs(settings, seen, stop))
    sim = PaymentSimulator(seed=31, invalid_rate=0.01)
    load = asyncio.create_task(send_steadily(settings, sim, events, RATE, sent))
    try:
        assert await wait_until(lambda: len(seen.ids) >= KILL_AFTER, 90), "no predictions before the fault"
        t_fault = time.monotonic()
        figures = await fault(settings, sent, seen)
        await asyncio.wait_for(load, 60 + events / RATE)
        accounted = await wait_until(lambda: seen.accounts_for(sent), 120)
        figures["longest_output_gap_s"] = round(seen.gap_after(t_fault), 1)
        figures.update(seen.summary(sent))
        figures["worker_alive"] = not worker.task.done()
        print(json.dumps(figures))
        assert accounted, figures
        return figures
    finally:
        load.cancel()
        if not worker.task.done():
            await worker.close()
        stop.set()
        await asyncio.wait_for(asyncio.gather(follower, return_exceptions=True), 30)


async def _replication(settings) -> dict:
    """What the cluster says of the events topic: replicas and ISR per partition, min ISR."""
    admin = AIOKafkaAdminClient(**client_options(settings.kafka))
    await admin.start()
    try:
        topic = settings.topics.events
        parts = (await admin.describe_topics([topic]))[0]["partitions"]
        [resp] = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
        entries = resp.to_object()["resources"][0]["config_entries"]
        min_isr = next(e["config_value"] for e in entries if e["config_names"] == "min.insync.replicas")
        return {"replicas": sorted({len(p["replicas"]) for p in parts}),
                "isr": sorted({len(p["isr"]) for p in parts}), "min_insync_replicas": int(min_isr)}
    finally:
        await admin.close()


async def _topic_checks(settings, for_s: float) -> dict[str, list]:
    """Run the worker's topic check back to back for ``for_s`` seconds; what it answered."""
    answers: dict[str, list] = {"ok": [], "broker_error": [], "other": []}
    until = time.monotonic() + for_s
    while time.monotonic() < until:
        try:
            answers["ok"].append(await missing_topics(settings))
        except BrokerError as exc:
            answers["broker_error"].append(str(exc))
        except Exception as exc:  # what the test looks for: any other error escaping
            answers["other"].append(repr(exc))
    return answers


async def test_a_broker_killed_and_restarted_on_its_data_loses_no_event(make_settings, start_worker, tmp_path):
    server = await asyncio.to_thread(KafkaServer(data_dir=tmp_path / "kafka").start)

    async def kill_and_restart(settings, sent: Sent, seen: Seen) -> dict:
        # events sent from now on; on a slow machine the producer may already be done, and then
        # the events not yet scored are what must come out after the restart
        after_kill = [f"e31-{i}" for i in range(sent.attempted, EVENTS)] or \
            [f"e31-{i}" for i in range(EVENTS) if f"e31-{i}" not in seen.ids]
        t_kill = time.monotonic()
        server.kill()
        restart_s = await asyncio.to_thread(server.restart)
        t_ready = time.monotonic()
        assert await wait_until(lambda: seen.first_of(after_kill) is not None, 60), "no resume"
        return {"fault": "broker SIGKILL + restart", "format_s": round(server.format_s or 0, 1),
                "startup_s": round(server.startup_s or 0, 1),
                "restart_s": round(restart_s, 1), "down_s": round(t_ready - t_kill, 1),
                "resume_after_ready_s": round(seen.first_of(after_kill) - t_ready, 1)}

    try:
        figures = await _run_with_fault(make_settings, start_worker, server, kill_and_restart)
    finally:
        await asyncio.to_thread(server.stop)
    assert figures["lost"] == 0 and figures["send_failed"] == 0, figures
    assert figures["resume_after_ready_s"] <= 30, figures
    assert figures["worker_alive"], figures


async def test_a_three_node_cluster_losing_a_node_under_load_loses_no_event(make_settings, start_worker, tmp_path):
    cluster = await asyncio.to_thread(KafkaServer(nodes=3, data_dir=tmp_path / "kafka").start)

    async def kill_one(settings, sent: Sent, seen: Seen) -> dict:
        replication = await _replication(settings)
        assert replication == {"replicas": [3], "isr": [3], "min_insync_replicas": 2}, replication
        pid = cluster.kill(0)
        # until the cluster fences the dead node its metadata still lists it, and an admin client
        # may ask it: the worker's periodic topic check must read that as "broker busy", not die
        answers = await _topic_checks(settings, FENCING_S)
        assert answers["other"] == [], answers
        assert await wait_until(lambda: len(seen.ids) >= KILL_AFTER + 2 * RATE, 60), "no progress"
        return {"fault": f"1 of 3 nodes SIGKILLed (pid {pid})", "format_s": round(cluster.format_s or 0, 1),
                "startup_s": round(cluster.startup_s or 0, 1),
                "topic_checks": {k: len(v) for k, v in answers.items()}}

    try:
        figures = await _run_with_fault(make_settings, start_worker, cluster, kill_one,
                                        topics={"replication_factor": 3})
    finally:
        await asyncio.to_thread(cluster.stop)
    assert figures["lost"] == 0 and figures["send_failed"] == 0, figures
    # the pause is the dead node's fencing (broker.session.timeout.ms 4 s), the elections that
    # follow and the clients finding the new leaders and group coordinator; nothing waits longer
    assert figures["longest_output_gap_s"] <= 20, figures
    assert figures["worker_alive"], figures


async def _coordinator(settings, key: str, kind: int) -> int:
    """The node id coordinating a group (``kind`` 0) or a transactional id (1)."""
    admin = AIOKafkaAdminClient(**client_options(settings.kafka))
    await admin.start()
    try:
        return await admin.find_coordinator(key, kind)
    finally:
        await admin.close()


async def test_exactly_once_survives_its_coordinators_node_dying_coming_back_and_another_dying(
        make_settings, start_worker, tmp_path):
    cluster = await asyncio.to_thread(KafkaServer(nodes=3, data_dir=tmp_path / "kafka").start)

    async def progress(seen: Seen, what: str) -> float:
        t, n = time.monotonic(), len(seen.ids)
        assert await wait_until(lambda: len(seen.ids) >= n + 2 * RATE, 60), f"no progress after {what}"
        return round(time.monotonic() - t, 1)

    async def faults(settings, sent: Sent, seen: Seen) -> dict:
        group = await _coordinator(settings, f"{settings.app_id}-scorer", 0)
        txn = await _coordinator(settings, transactional_id(settings.app_id), 1)
        first = group - 1  # node ids are 1-3, in the cluster's order
        cluster.kill(first)
        out = {"group_coordinator": group, "txn_coordinator": txn,
               "progress_after_first_kill_s": await progress(seen, "the group coordinator's node died")}
        out["restart_s"] = round(await asyncio.to_thread(cluster.restart, first), 1)
        out["progress_after_restart_s"] = await progress(seen, "it came back")
        second = txn - 1 if txn != group else (first + 1) % 3  # then the transactions' node, if another
        cluster.kill(second)
        out["progress_after_second_kill_s"] = await progress(seen, "a second node died")
        return out

    try:
        figures = await _run_with_fault(make_settings, start_worker, cluster, faults, events=24_000,
                                        topics={"replication_factor": 3}, processing_guarantee="exactly_once")
    finally:
        await asyncio.to_thread(cluster.stop)
    assert figures["lost"] == 0 and figures["send_failed"] == 0, figures
    assert figures["duplicated"] == 0, figures  # read_committed: aborted outputs are never seen
    assert figures["worker_alive"], figures

