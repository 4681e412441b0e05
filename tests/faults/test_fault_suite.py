"""The fault suite (``make test-faults``): worker SIGKILLs with restarts and scaling
1 -> 2 -> 3 -> 2 -> 1 under steady traffic on the embedded broker, checked from the output
topics alone: nothing lost, duplicates bounded, no key reordered, offsets committed to the end.
Prints a matrix. Sizes scale with MLSTREAM_FAULTS_SCALE (1 = about a minute per scenario)."""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import Iterator

import pytest

from stream.kafka import ensure_topics
from tests.faults.harness import (
    HEADER,
    Workers,
    committed_equals_end,
    produce_at,
    sequenced,
    verify,
    wait_accounted,
    worker_env,
)

pytestmark = pytest.mark.faults
SCALE = float(os.environ.get("MLSTREAM_FAULTS_SCALE", "1"))
RATE = 1_000.0
ROWS: list[str] = []


@pytest.fixture(scope="module", autouse=True)
def matrix() -> Iterator[None]:
    yield
    print("\n\nFault matrix (embedded broker, rate %.0f events/s, scale %g)\n%s\n%s\n"
          % (RATE, SCALE, HEADER, "\n".join(ROWS)))


async def _run(make_settings, model_store, tmp_path, script, seed: int):
    settings = make_settings(scoring={"commit_interval_ms": 200})
    await ensure_topics(settings)
    events = sequenced(int(30_000 * SCALE), seed)
    workers = Workers(worker_env(settings, model_store), tmp_path)
    try:
        workers.start()
        traffic = asyncio.ensure_future(produce_at(settings, events, RATE))
        notes = await script(workers, traffic)
        await traffic
        if not workers.live():
            workers.start()
        await wait_accounted(settings, {e[2] for e in events}, timeout_s=120)
        for proc in workers.live():
            workers.terminate(proc)
        verdict = await verify(settings, events)
        verdict.committed_ok = await committed_equals_end(settings)
        return verdict, notes
    finally:
        workers.close()


async def test_worker_sigkill_with_restarts(make_settings, model_store, tmp_path):
    rng = random.Random(7)
    kills: list[float] = []

    async def script(workers: Workers, traffic: asyncio.Future[None]) -> str:
        while not traffic.done():
            await asyncio.sleep(rng.uniform(8, 14) * max(SCALE, 0.5))  # time between kills (start-up ~4 s)
            for proc in workers.live():
                workers.kill(proc)
                kills.append(time.monotonic())
            workers.start()
        return f"{len(kills)} SIGKILLs, each followed by a restart"

    verdict, notes = await _run(make_settings, model_store, tmp_path, script, seed=101)
    ROWS.append(verdict.row("worker SIGKILL + restart", notes))
    assert verdict.lost == 0 and verdict.out_of_order == 0
    # at-least-once: each crash repeats at most the events since the last commit
    assert verdict.duplicates <= len(kills) * RATE * 2.0, verdict


async def test_scale_1_2_3_2_1(make_settings, model_store, tmp_path):
    stops: list[float] = []

    async def script(workers: Workers, traffic: asyncio.Future[None]) -> str:
        step = 3.5 * max(SCALE, 0.5)
        for _ in range(2):  # 1 -> 2 -> 3
            await asyncio.sleep(step)  # the scaling schedule
            workers.start()
        for _ in range(2):  # 3 -> 2 -> 1
            await asyncio.sleep(step)
            stops.append(workers.terminate(workers.live()[0]))
        return f"SIGTERM stops took {', '.join(f'{s:.1f}s' for s in stops)}"

    verdict, notes = await _run(make_settings, model_store, tmp_path, script, seed=202)
    ROWS.append(verdict.row("scale 1→2→3→2→1 (SIGTERM)", notes))
    assert verdict.lost == 0 and verdict.duplicates == 0 and verdict.out_of_order == 0, verdict
    assert verdict.committed_ok
