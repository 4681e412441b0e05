"""The command line: --help everywhere, one-line errors, the README's demo command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def mlstream(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stream.cli", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=timeout, env={**os.environ, **(env or {})})


@pytest.mark.parametrize("command", ["worker", "trainer", "simulate", "train", "demo", "bench", "replay", "bench-drift",
                                     "bench-sustained", "report", "models", "broker"])
def test_every_command_has_help(command):
    result = mlstream(command, "--help")
    assert result.returncode == 0 and "usage" in result.stdout.lower()


def test_bad_broker_address_is_one_line():
    result = mlstream("worker", env={"MLSTREAM_KAFKA__BOOTSTRAP_SERVERS": "nohostport"})
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "bad setting kafka.bootstrap_servers" in result.stderr


def test_unreachable_broker_is_one_line():
    result = mlstream("simulate", "--events", "1", env={"MLSTREAM_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:1"})
    assert result.returncode == 2 and "cannot connect to Kafka at 127.0.0.1:1" in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_model_is_one_line(tmp_path, broker):
    """Store-only mode: an empty store is an error at once (with the model feed, the worker first
    waits for the champion: tests/test_model_feed.py)."""
    result = mlstream("worker", env={"MLSTREAM_KAFKA__BOOTSTRAP_SERVERS": broker.bootstrap,
                                     "MLSTREAM_MODEL_STORE": str(tmp_path), "MLSTREAM_METRICS_PORT": "0",
                                     "MLSTREAM_MODEL_FEED__MODE": "store"}, timeout=60)
    assert result.returncode == 2 and "no model named 'fraud'" in result.stderr
    assert "Traceback" not in result.stderr


def test_secrets_do_not_show_in_setting_errors():
    result = mlstream("worker", env={"MLSTREAM_KAFKA__SASL_PASSWORD": "hunter2-secret",
                                     "MLSTREAM_KAFKA__SECURITY_PROTOCOL": "BOGUS"})
    assert result.returncode == 2 and "hunter2-secret" not in result.stderr + result.stdout


def test_demo_accounts_for_every_event(tmp_path):
    """The README's demo command, shortened: every event is a prediction or a dead letter."""
    result = mlstream("demo", "--events", "8000", "--json", "--workdir", str(tmp_path), timeout=240)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["predictions"] + summary["dead_lettered"] == summary["events"] == 8000
    assert summary["duplicate_predictions"] == 0 and summary["dead_lettered"] > 0
    for key in ("drift_events", "retrain_requests", "elapsed_s"):
        assert key in summary


def test_env_typo_is_one_line_naming_the_variable():
    result = mlstream("worker", env={"MLSTREAM_KAFKA__BOOTSTRAP_SERVER": "127.0.0.1:9092"})
    assert result.returncode == 2 and result.stderr.strip().count("\n") == 0
    assert "unknown setting MLSTREAM_KAFKA__BOOTSTRAP_SERVER" in result.stderr


def test_bad_env_value_names_the_variable():
    result = mlstream("worker", env={"MLSTREAM_SCORING__MAX_BATCH_SIZE": "0"})
    assert result.returncode == 2 and result.stderr.strip().count("\n") == 0
    assert "scoring.max_batch_size (MLSTREAM_SCORING__MAX_BATCH_SIZE)" in result.stderr


def test_nested_toml_typo_is_one_line(tmp_path):
    config = tmp_path / "mlstream.toml"
    config.write_text('[kafka]\nbootstrap_server = "127.0.0.1:9092"\n')
    result = mlstream("worker", "--config", str(config))
    assert result.returncode == 2 and result.stderr.strip().count("\n") == 0
    assert "kafka.bootstrap_server" in result.stderr and str(config) in result.stderr


def test_json_logs(tmp_path):
    """MLSTREAM_LOG_FORMAT=json: every log line a JSON object (here the worker's broker error path)."""
    result = mlstream("trainer", env={"MLSTREAM_LOG_FORMAT": "json", "MLSTREAM_LOG_LEVEL": "INFO",
                                      "MLSTREAM_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:1",
                                      "MLSTREAM_MODEL_STORE": str(tmp_path)}, timeout=60)
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("{")]
    assert lines, result.stderr[-2000:]
    for line in lines:
        doc = json.loads(line)
        assert {"ts", "level", "logger", "message"} <= doc.keys()


def test_broker_command_runs_the_embedded_broker_alone():
    """`mlstream broker` serves Kafka clients until SIGTERM, then exits 0 and frees its port."""
    import asyncio
    import socket

    from stream.config import Settings
    from stream.kafka import make_producer, start_client
    from stream.tools.broker import free_port
    from tests.helpers import stop_process

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "stream.cli", "broker", "--port", str(port)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()  # printed once the broker accepts connections
        assert f"listening on 127.0.0.1:{port}" in line, proc.stderr.read() if proc.poll() is not None else line

        async def send() -> None:
            settings = Settings(kafka={"bootstrap_servers": f"127.0.0.1:{port}"})
            producer = make_producer(settings)
            await start_client(producer, settings.kafka.bootstrap_servers)
            try:
                await producer.send_and_wait("hello", b"world")
            finally:
                await producer.stop()

        asyncio.run(send())
        proc.terminate()
        assert proc.wait(15) == 0
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
    finally:
        if proc.poll() is None:
            stop_process(proc)
