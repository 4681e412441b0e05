"""The monitor's process relays its metrics and readiness into the worker's one registry."""

from __future__ import annotations

from prometheus_client.core import GaugeMetricFamily

from stream.metrics import Metrics
from stream.stage_process import MetricsRelay, snapshot


class _Drift:
    def collect(self):
        fam = GaugeMetricFamily("mlstream_drift_statistic", "x", labels=["feature"])
        fam.add_metric(["amount"], 3.5)
        yield fam


def test_counters_gauges_histograms_foreign_families_and_readiness_reach_the_parent():
    parent, child = Metrics.create(), Metrics.create()
    child.registry.register(_Drift())
    child.health.register("monitor")
    relay = MetricsRelay(parent, "monitor")
    parent.health.register("monitor")

    child.drift_events.labels("data_drift").inc(2)
    child.worker_info.labels("monitor").set(1)
    for v in (0.003, 0.2, 7.0):
        child.stage_latency.labels("monitor").observe(v)
    relay.apply(*snapshot(child))
    child.drift_events.labels("data_drift").inc(1)
    child.health.set("monitor", True, "4 partitions assigned")
    relay.apply(*snapshot(child))
    relay.apply(*snapshot(child))  # an unchanged snapshot adds nothing

    got = parent.registry.get_sample_value
    assert got("mlstream_drift_events_total", {"kind": "data_drift"}) == 3
    assert got("mlstream_worker_info", {"role": "monitor"}) == 1
    assert got("mlstream_stage_duration_seconds_count", {"stage": "monitor"}) == 3
    assert got("mlstream_stage_duration_seconds_bucket", {"stage": "monitor", "le": "0.25"}) == 2
    assert abs(got("mlstream_stage_duration_seconds_sum", {"stage": "monitor"}) - 7.203) < 1e-9
    assert got("mlstream_drift_statistic", {"feature": "amount"}) == 3.5
    assert parent.health.ready() == (True, {"monitor": "4 partitions assigned"})


def test_a_restarted_child_counts_from_zero_again():
    parent = Metrics.create()
    relay = MetricsRelay(parent, "monitor")
    first = Metrics.create()
    first.monitor_rows.inc(100)
    relay.apply(*snapshot(first))
    second = Metrics.create()  # a new process: its counters start at 0
    second.monitor_rows.inc(30)
    relay.apply(*snapshot(second))
    assert parent.registry.get_sample_value("mlstream_monitor_rows_total") == 130


def test_a_snapshot_that_cannot_be_applied_does_not_stop_the_reader(caplog):
    import multiprocessing
    import threading

    from stream.stage_process import drain

    parent, child = Metrics.create(), Metrics.create()
    relay = MetricsRelay(parent, "monitor")
    receiver, sender = multiprocessing.Pipe(duplex=False)
    reader = threading.Thread(target=drain, args=(receiver, relay))
    reader.start()
    sender.send(("not", "a snapshot"))  # apply() raises on it
    child.monitor_rows.inc(42)
    sender.send(snapshot(child))
    sender.close()
    reader.join(10)
    assert not reader.is_alive()
    assert parent.registry.get_sample_value("mlstream_monitor_rows_total") == 42
    assert "was not applied" in caplog.text


async def test_the_monitor_process_beside_a_scorer_yields_the_cpu_to_it_and_stops_when_told():
    import asyncio
    import multiprocessing
    import os
    import time

    from stream.config import Settings
    from stream.stage_process import run_in_process

    def niceness(pid: int) -> int:
        with open(f"/proc/{pid}/stat") as fh:
            return int(fh.read().rsplit(")", 1)[1].split()[16])  # field 19 of proc(5)

    # no broker: the child waits for one, which is enough to see how it runs
    settings = Settings(kafka={"bootstrap_servers": "127.0.0.1:9", "connect_timeout_s": 120})
    stop = asyncio.Event()
    task = asyncio.create_task(run_in_process(settings, Metrics.create(), stop, interval_s=0.2))
    deadline, seen = time.monotonic() + 60, None
    while seen is None and time.monotonic() < deadline:
        children = [p for p in multiprocessing.active_children() if p.name == "mlstream-monitor"]
        if (children and children[0].pid and niceness(children[0].pid) == niceness(os.getpid()) + 10
                and os.sched_getscheduler(children[0].pid) == os.SCHED_IDLE):
            seen = children[0]
        else:
            await asyncio.sleep(0.05)  # polling the child's state
    assert seen is not None, "no monitor process at niceness +10 and idle scheduling (Linux SCHED_IDLE)"
    assert niceness(os.getpid()) != niceness(seen.pid)  # this process (the scorer's) keeps its own
    assert os.sched_getscheduler(0) == os.SCHED_OTHER
    stop.set()
    await asyncio.wait_for(task, 60)
    assert not seen.is_alive()
