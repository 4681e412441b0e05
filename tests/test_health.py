"""Health endpoints as an orchestrator sees them: /healthz alive, /ready 503 until the worker
has its model and partitions, then 200; unknown paths 404; a port in use is one line, exit 2."""

from __future__ import annotations

import asyncio
import json
import socket
import urllib.error
import urllib.request

from stream.kafka import ensure_topics
from stream.tools.tally import wait_until

from tests.test_cli import mlstream


def get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


async def test_ready_flips_when_partitions_are_assigned(make_settings, start_worker):
    settings = make_settings()
    await ensure_topics(settings)
    statuses: list[int] = []
    worker = start_worker(settings, roles=("scorer", "monitor"))
    assert await wait_until(lambda: worker.metrics_port is not None or worker.task.done(), 30)
    assert not worker.task.done()
    port = worker.metrics_port

    async def probe() -> int:
        status, _ = await asyncio.to_thread(get, port, "/ready")
        statuses.append(status)
        return status

    first = await probe()
    for _ in range(600):  # bounded: at most 600 probes, 50 ms apart
        if await probe() == 200:
            break
        await asyncio.sleep(0.05)
    assert statuses[-1] == 200, f"never ready: {statuses[-5:]}"
    assert first == 503  # the port listens before the group join (seconds), so a probe sees it
    status, body = await asyncio.to_thread(get, port, "/ready")
    doc = json.loads(body)
    assert doc["status"] == "ready" and set(doc["roles"]) == {"scorer", "monitor"}
    assert "state restored" in doc["roles"]["scorer"]
    assert (await asyncio.to_thread(get, port, "/healthz"))[0] == 200
    assert (await asyncio.to_thread(get, port, "/nope"))[0] == 404
    status, body = await asyncio.to_thread(get, port, "/metrics")
    assert status == 200 and b"mlstream_events_consumed_total" in body


async def test_not_ready_until_a_role_says_so():
    """The endpoints without a broker: alive at once, ready only when every role is."""
    from stream.http import serve
    from stream.metrics import Metrics

    m = Metrics.create()
    m.health.register("scorer")
    m.health.register("monitor")
    server = serve(m.registry, m.health, "127.0.0.1", 0)
    try:
        port = server.server_port
        assert (await asyncio.to_thread(get, port, "/healthz"))[0] == 200
        status, body = await asyncio.to_thread(get, port, "/ready")
        assert status == 503 and json.loads(body)["roles"] == {"scorer": "starting", "monitor": "starting"}
        m.health.set("scorer", True, "ok")
        assert (await asyncio.to_thread(get, port, "/ready"))[0] == 503  # the monitor is not
        m.health.set("monitor", True, "ok")
        assert (await asyncio.to_thread(get, port, "/ready"))[0] == 200
    finally:
        server.shutdown()
        server.server_close()


def test_metrics_port_in_use_is_one_line_exit_2(broker):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = mlstream("worker", env={"MLSTREAM_KAFKA__BOOTSTRAP_SERVERS": broker.bootstrap,
                                         "MLSTREAM_METRICS_PORT": str(port)}, timeout=60)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert f"metrics port 127.0.0.1:{port} is in use" in result.stderr
    assert "MLSTREAM_METRICS_PORT" in result.stderr
