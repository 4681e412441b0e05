"""The Alertmanager config passes ``amtool check-config``, and a real Alertmanager (Debian
package ``prometheus-alertmanager``) delivers a firing alert to the local Slack stand-in,
routed and inhibited as configured. Missing binaries fail the test: ``make test`` installs them.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.slack_standin import SlackStandIn
from tests.helpers import stop_process

CONFIG = Path(__file__).resolve().parent.parent / "ops" / "alertmanager" / "alertmanager.yml"


def binary(*names: str) -> str:
    for name in names:
        if exe := shutil.which(name):
            return exe
    raise AssertionError(f"{names[0]} is missing: run scripts/install-system-deps.sh")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(predicate: Any, timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if result := predicate():
                return result
        except OSError:
            pass  # not listening yet
        time.sleep(0.1)  # polling an external process's HTTP API; the condition decides
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


def api(base: str, path: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method="GET" if body is None else "POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        text = resp.read()
    return json.loads(text) if text else None


def test_config_passes_amtool():
    res = subprocess.run([binary("amtool"), "check-config", str(CONFIG)], capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    cfg = yaml.safe_load(CONFIG.read_text())  # the URL comes from a file, never inline
    assert "slack_api_url" not in cfg["global"] and cfg["global"]["slack_api_url_file"]
    for receiver in cfg["receivers"]:
        assert all("api_url" not in c for c in receiver.get("slack_configs", []))
    assert "hooks.slack.com" not in CONFIG.read_text()


@pytest.fixture()
def alertmanager(tmp_path: Path) -> Iterator[tuple[str, SlackStandIn]]:
    """The committed config with the secret file pointing at the stand-in, and short waits."""
    with SlackStandIn() as slack:
        secret = tmp_path / "slack_webhook_url"
        secret.write_text(slack.url("/services/TAM/BAM/secret"))
        cfg = yaml.safe_load(CONFIG.read_text())
        cfg["global"]["slack_api_url_file"] = str(secret)
        for route in [cfg["route"], *cfg["route"].get("routes", [])]:
            route["group_wait"] = "1s"
        path = tmp_path / "alertmanager.yml"
        path.write_text(yaml.safe_dump(cfg))
        port = free_port()
        proc = subprocess.Popen(
            [binary("prometheus-alertmanager", "alertmanager"), f"--config.file={path}",
             f"--storage.path={tmp_path / 'data'}", f"--web.listen-address=127.0.0.1:{port}",
             "--cluster.listen-address=", "--log.level=warn"],
            stdout=subprocess.DEVNULL, stderr=(tmp_path / "am.log").open("wb"))
        base = f"http://127.0.0.1:{port}"
        try:
            wait_for(lambda: proc.poll() is None and api(base, "/api/v2/status"), 30, "Alertmanager")
            yield base, slack
        finally:
            stop_process(proc)


def alert(name: str, severity: str, **labels: str) -> dict[str, Any]:
    now = datetime.now(timezone.utc)
    return {"labels": {"alertname": name, "severity": severity, **labels},
            "annotations": {"summary": f"{name} summary", "description": f"{name} description"},
            "startsAt": now.isoformat(), "endsAt": (now + timedelta(minutes=10)).isoformat()}


def test_a_firing_alert_reaches_slack(alertmanager):
    base, slack = alertmanager
    api(base, "/api/v2/alerts", [alert("MlstreamFeatureDrift", "warning", model="fraud",
                                       version="1", feature="amount_zscore")])
    [req] = slack.wait_for(1, timeout_s=30)
    assert req.path == "/services/TAM/BAM/secret"
    attachment = req.json()["attachments"][0]
    assert req.json()["channel"] == "#mlstream-alerts"
    assert attachment["title"] == ":warning: FIRING: MlstreamFeatureDrift"
    assert "MlstreamFeatureDrift summary" in attachment["text"]


def test_pipeline_down_inhibits_worker_alerts(alertmanager):
    base, slack = alertmanager
    api(base, "/api/v2/alerts", [alert("MlstreamPipelineDown", "critical"),
                                 alert("MlstreamWorkerDown", "critical", instance="w1:9108")])

    def inhibited() -> bool:
        alerts = {a["labels"]["alertname"]: a for a in api(base, "/api/v2/alerts")}
        return (len(alerts) == 2
                and bool(alerts["MlstreamWorkerDown"]["status"]["inhibitedBy"])
                and not alerts["MlstreamPipelineDown"]["status"]["inhibitedBy"])

    wait_for(inhibited, 30, "the inhibition")
    [req] = slack.wait_for(1, timeout_s=30)
    assert req.json()["attachments"][0]["title"] == ":rotating_light: FIRING: MlstreamPipelineDown"
