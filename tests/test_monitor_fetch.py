"""The monitor fetches at most ``monitor.max_partition_fetch_bytes`` per partition, so a backlog
is decoded and tested a few MiB per poll; a feature batch larger than the limit still arrives
whole (Kafka returns the first batch of a fetch whatever its size), so nothing is skipped."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

from stream.config import Settings
from stream.kafka import ensure_topics, make_producer, send_records, start_client
from tests.conftest import RunningWorker
from tests.test_monitor_input import feature_batches


async def test_feature_batches_larger_than_the_fetch_limit_are_all_monitored(
        make_settings: Callable[..., Settings], model_store: Path, start_worker: Callable[..., RunningWorker]) -> None:
    limit = 64 * 1024
    settings = make_settings(monitor={"max_partition_fetch_bytes": limit})
    await ensure_topics(settings)
    batches, _ = feature_batches(model_store, 1_000)  # 2 batches of 500 rows (seeded: built once)
    values = batches * 3  # each several times the limit
    assert min(map(len, values)) > 2 * limit
    producer = make_producer(settings)
    await start_client(producer, settings.kafka.bootstrap_servers)
    try:
        await asyncio.gather(*await send_records(producer, settings.topics.features, 0,
                                                 [None] * len(values), values))
    finally:
        await producer.stop()

    worker = start_worker(settings, roles=("monitor",))
    rows = lambda: worker.metrics.registry.get_sample_value("mlstream_monitor_rows_total") or 0
    deadline = time.monotonic() + 60
    while rows() < 3_000 and time.monotonic() < deadline and not worker.task.done():
        await asyncio.sleep(0.05)  # polling a metric in-process
    assert rows() == 3_000
    errors = worker.metrics.registry.get_sample_value(
        "mlstream_processing_errors_total", {"stage": "monitor"})
    assert not errors
