"""docker-compose.yml, checked without a Docker engine: it is valid against the Compose
specification's JSON schema, every file it mounts or builds from exists, the configs it
mounts pass promtool and amtool, and the workers' environment makes valid settings.

``tests/data/compose-spec.json`` is the Compose specification schema as vendored by the
``docker-compose`` 1.29.2 wheel on PyPI (``compose/config/compose_spec.json``), unmodified.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from stream.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = json.loads((Path(__file__).parent / "data" / "compose-spec.json").read_text())


def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def interpolate(value: str, env: dict[str, str] | None = None) -> str:
    """Compose's ``${VAR:-default}`` with the variables unset (what a fresh clone gets)."""
    env = env or {}
    return re.sub(r"\$\{(\w+)(?::?-([^}]*))?\}", lambda m: env.get(m[1], m[2] or ""), value)


def bind_mounts() -> list[tuple[str, str, str]]:
    """(service, host path, container path) of every bind mount."""
    out = []
    for name, svc in compose()["services"].items():
        for vol in svc.get("volumes", []):
            host, container = vol.split(":")[:2]
            if host.startswith(("./", "/")):
                out.append((name, host, container))
    return out


def test_valid_against_the_compose_spec():
    validator = jsonschema.Draft201909Validator(SCHEMA)
    errors = [f"{'/'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(compose())]
    assert errors == []


def test_the_stack_has_every_part():
    services = compose()["services"]
    assert {"kafka", "kafka-init", "worker", "simulator", "prometheus", "alertmanager", "grafana"} <= set(services)
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft
    assert "replicas" in services["worker"]["deploy"] and "container_name" not in services["worker"]
    assert services["worker"]["command"] == ["mlstream", "worker"]
    # the trainer closes the loop; its promotions reach the scorers over the compacted models
    # topic, not through a shared volume (each worker's store is a cache)
    assert services["trainer"]["command"] == ["mlstream", "trainer"]
    assert not set(services["trainer"].get("volumes", [])) & set(services["worker"].get("volumes", []))
    assert "one mlstream.models --config cleanup.policy=compact" in " ".join(services["kafka-init"]["command"])


def test_kafka_init_creates_every_topic_with_its_partitions_and_policy():
    """What ``ensure_topics`` creates for a worker, kafka-init creates in the stack."""
    from stream.config import Settings
    from stream.kafka import all_topics, topic_configs

    script = " ".join(compose()["services"]["kafka-init"]["command"])
    settings = Settings()
    for topic, partitions in all_topics(settings).items():
        line = next((ln for ln in script.splitlines() if re.search(rf"(^|[\s\"]){re.escape(topic)}(\s|$|;)", ln)), None)
        assert line is not None, f"kafka-init does not create {topic}"
        assert ("one " in line or "one()" in line) == (partitions == 1), (topic, line)
        for key, value in topic_configs(settings, topic).items():
            assert f"{key}={value}" in line, (topic, line)


def test_kafka_is_the_version_the_tests_run_on_with_its_data_on_the_volume():
    pinned = re.search(r"<kafka.version>([^<]+)</kafka.version>", (ROOT / "ops/kafka/pom.xml").read_text())[1]
    services = compose()["services"]
    for name in ("kafka", "kafka-init"):
        assert services[name]["image"] == f"apache/kafka:{pinned}", name
    kafka = services["kafka"]
    log_dirs = kafka["environment"]["KAFKA_LOG_DIRS"]
    volumes = {v.split(":")[1]: v.split(":")[0] for v in kafka["volumes"]}
    assert volumes.get(log_dirs) in compose()["volumes"], f"{log_dirs} is not on a named volume"


def test_every_mounted_or_built_file_exists():
    mounts = bind_mounts()
    assert mounts
    for service, host, _ in mounts:
        assert (ROOT / host).exists(), f"{service} mounts {host}, which does not exist"
    for name, secret in compose()["secrets"].items():
        assert (ROOT / interpolate(secret["file"])).is_file(), name
    for svc in compose()["services"].values():
        if "build" in svc:
            assert (ROOT / svc["build"] / "Dockerfile").is_file()
    dockerfile = (ROOT / "Dockerfile").read_text()
    for src in re.findall(r"^COPY (.+) \S+$", dockerfile, re.M):
        for path in src.split():
            assert (ROOT / path).exists(), f"Dockerfile copies {path}, which does not exist"


def _host_path(container_path: str, service: str) -> Path:
    for svc, host, container in bind_mounts():
        if svc == service and (container_path == container or container_path.startswith(container + "/")):
            return ROOT / host / container_path[len(container):].lstrip("/")
    raise AssertionError(f"{container_path} is not mounted into {service}")


def _binary(name: str) -> str:
    exe = shutil.which(name)
    assert exe, f"{name} is missing: run scripts/install-system-deps.sh"
    return exe


def test_the_mounted_prometheus_config_and_rules_pass_promtool():
    svc = compose()["services"]["prometheus"]
    flag = next(a for a in svc["command"] if a.startswith("--config.file="))
    config = _host_path(flag.split("=", 1)[1], "prometheus")
    res = subprocess.run([_binary("promtool"), "check", "config", config.name], cwd=config.parent,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "rules found" in res.stdout  # the rule file was found next to it and checked


def test_the_mounted_alertmanager_config_passes_amtool():
    svc = compose()["services"]["alertmanager"]
    flag = next(a for a in svc["command"] if a.startswith("--config.file="))
    config = _host_path(flag.split("=", 1)[1], "alertmanager")
    res = subprocess.run([_binary("amtool"), "check-config", str(config)], capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    # the secret file it reads is the compose secret
    secret_path = yaml.safe_load(config.read_text())["global"]["slack_api_url_file"]
    assert secret_path == "/run/secrets/" + svc["secrets"][0]


def test_grafana_gets_the_provisioning_and_the_dashboards():
    prov = _host_path("/etc/grafana/provisioning", "grafana")
    assert (prov / "datasources" / "prometheus.yml").is_file()
    dashboards = yaml.safe_load((prov / "dashboards" / "mlstream.yml").read_text())
    folder = _host_path(dashboards["providers"][0]["options"]["path"], "grafana")
    assert sorted(p.name for p in folder.glob("*.json")) == ["alerts.json", "drift.json", "model.json", "pipeline.json"]
    ds = yaml.safe_load((prov / "datasources" / "prometheus.yml").read_text())["datasources"][0]
    assert ds["url"] == "http://prometheus:9090"


@pytest.mark.parametrize("service", ["worker", "trainer", "simulator"])
def test_the_commands_and_environment_are_valid_for_mlstream(service, monkeypatch):
    from stream.config_load import load_settings

    svc = compose()["services"][service]
    args = build_parser().parse_args(svc["command"][1:])
    assert args.command in {"worker", "trainer", "simulate"}
    for key, value in svc["environment"].items():
        monkeypatch.setenv(key, interpolate(str(value)))
    s = load_settings()
    assert s.kafka.bootstrap_servers == "kafka:9092" and s.metrics_port == 9108
    from stream.alerts import Notifier
    from stream.metrics import Metrics

    assert Notifier(s.alerts, Metrics.create()).channels == []  # unset URLs mean "off"


def test_prometheus_scrapes_every_worker_replica():
    config = yaml.safe_load((ROOT / "ops" / "prometheus" / "prometheus.yml").read_text())
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "mlstream")
    assert job["dns_sd_configs"][0]["names"] == ["worker"]
    assert job["dns_sd_configs"][0]["port"] == int(compose()["services"]["worker"]["expose"][0])


def test_every_server_has_a_healthcheck():
    """Every long-running service that serves a port is probed; the workers on /ready."""
    services = compose()["services"]
    for name in ("kafka", "worker", "prometheus", "alertmanager", "grafana"):
        assert "healthcheck" in services[name], name
    assert "/ready" in " ".join(services["worker"]["healthcheck"]["test"])


def test_each_drift_reaches_slack_once():
    """Alertmanager routes drift to Slack, so the workers must not send drift directly too."""
    env = compose()["x-mlstream"]["environment"]
    assert env["MLSTREAM_ALERTS__SEND_DRIFT"] == "false"
    rules = (ROOT / "ops" / "prometheus" / "rules.yml").read_text()
    assert "MlstreamFeatureDrift" in rules


def test_images_are_pinned_and_mlstream_does_not_run_as_root():
    for name, svc in compose()["services"].items():
        image = svc.get("image", "")
        if "build" not in svc and image:
            assert ":" in image and not image.endswith(":latest"), f"{name} uses an unpinned image {image}"
    dockerfile = (ROOT / "Dockerfile").read_text().splitlines()
    base = next(line for line in dockerfile if line.startswith("FROM "))
    assert re.match(r"FROM python:3\.\d+-slim$", base), base
    users = [line.split()[1] for line in dockerfile if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0"), users
