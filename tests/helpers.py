"""Small helpers for the broker tests: read a topic to its end, wait on conditions."""

from __future__ import annotations

import subprocess
from typing import Any

from aiokafka import TopicPartition

from stream.config import Settings
from stream.kafka import make_consumer, start_client
from stream.tools.tally import read_all


async def read_topic(settings: Settings, topic: str, *, max_wait_s: float = 2.0) -> list[Any]:
    """Every record currently in ``topic`` (all partitions), read up to the high watermarks."""
    return await read_all(settings, topic, max_wait_s=max_wait_s + 10)


def stop_process(proc: subprocess.Popen[bytes], timeout_s: float = 10.0) -> None:
    """Stop a server a test started: SIGTERM, then SIGKILL if it does not exit in time."""
    import subprocess

    proc.terminate()
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)



async def committed_and_end(settings: Settings, group: str, topic: str) -> dict[int, tuple[int | None, int]]:
    """Per partition of ``topic``: the group's committed offset and the log end offset (read
    from the records: the embedded broker's ListOffsets is wrong for multi-record batches)."""
    ends: dict[int, int] = {}
    for rec in await read_topic(settings, topic):
        ends[rec.partition] = max(ends.get(rec.partition, 0), rec.offset + 1)
    consumer = make_consumer(settings, group_id=group)
    await start_client(consumer, settings.kafka.bootstrap_servers)
    try:
        return {p: (await consumer.committed(TopicPartition(topic, p)), end) for p, end in sorted(ends.items())}
    finally:
        await consumer.stop()
